"""Shared pieces of the benchmarks: fixture trees, process accounting, percentiles.

Benchmarks print figures; they are not tests and assert nothing about speed.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from fixtures.make_fixtures import build, variant  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def fixture_tree(name: str = "seed-spec", cpus: int | None = None) -> Path:
    root = Path(tempfile.mkdtemp(prefix=f"nodeslo-bench-{name}-"))
    build(root, variant(name, cpus))
    return root


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as handle:
        return int(handle.read().split()[1]) * PAGE


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


@dataclass
class ScrapeStats:
    latencies: list[float]
    cpu_seconds: float
    rss_bytes: int
    body_bytes: int
    series: int

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies)

    @property
    def p99(self) -> float:
        return percentile(self.latencies, 0.99)

    @property
    def cpu_per_scrape(self) -> float:
        return self.cpu_seconds / len(self.latencies)


def scrape_once(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:
        return bytes(response.read())


def scrape_many(url: str, pid: int, count: int) -> ScrapeStats:
    body = scrape_once(url)  # warm-up: caches filled, first-scrape work excluded
    cpu_before = cpu_seconds(pid)
    latencies = []
    for _ in range(count):
        start = time.perf_counter()
        body = scrape_once(url)
        latencies.append(time.perf_counter() - start)
    cpu = cpu_seconds(pid) - cpu_before
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    return ScrapeStats(latencies, cpu, rss_bytes(pid), len(body), series)


def machine() -> str:
    load = os.getloadavg()
    return (
        f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
