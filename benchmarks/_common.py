"""Shared pieces of the benchmarks: fixture trees, process accounting, percentiles.

Benchmarks print figures; they are not tests and assert nothing about speed.
"""

from __future__ import annotations

import gzip
import os
import platform
import statistics
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from fixtures.make_fixtures import build, variant  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def fixture_tree(name: str = "seed-spec", cpus: int | None = None) -> Path:
    root = Path(tempfile.mkdtemp(prefix=f"nodeslo-bench-{name}-"))
    spec = variant(name, cpus)
    if cpus is not None and spec.cpus != cpus:
        # Fewer CPUs than sockets x threads (2): one socket, one NUMA node, as a small VM.
        threads = min(spec.threads_per_core, cpus)
        spec = replace(
            spec,
            sockets=1,
            numa_nodes=1,
            threads_per_core=threads,
            cores_per_socket=max(1, cpus // threads),
        )
    build(root, spec)
    return root


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_with_children(pid: int) -> float:
    """utime + stime + cutime + cstime: the process and its reaped children."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / CLK_TCK


def children(pid: int) -> list[int]:
    """The live child processes of `pid` (of any of its threads)."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


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
    wire_bytes: int = 0  # as sent: gzip-compressed when the request asked for it

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies)

    @property
    def p99(self) -> float:
        return percentile(self.latencies, 0.99)

    @property
    def cpu_per_scrape(self) -> float:
        return self.cpu_seconds / len(self.latencies)


# What Prometheus 2.42 sends with a scrape: OpenMetrics preferred, gzip accepted.
PROMETHEUS_HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
    "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "Accept-Encoding": "gzip",
}


def scrape_wire(url: str, headers: dict[str, str] | None = None) -> tuple[bytes, int]:
    """(body, bytes on the wire): the body decompressed if it came gzipped."""
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=60) as response:
        wire = bytes(response.read())
        gzipped = response.headers.get("Content-Encoding") == "gzip"
    return (gzip.decompress(wire) if gzipped else wire), len(wire)


def scrape_once(url: str, headers: dict[str, str] | None = None) -> bytes:
    return scrape_wire(url, headers)[0]


def series_count(body: bytes) -> int:
    return sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))


def scrape_many(
    url: str, pid: int, count: int, headers: dict[str, str] | None = None
) -> ScrapeStats:
    body, wire = scrape_wire(url, headers)  # warm-up: caches filled, first-scrape work excluded
    cpu_before = cpu_seconds(pid)
    latencies = []
    for _ in range(count):
        start = time.perf_counter()
        body, wire = scrape_wire(url, headers)
        latencies.append(time.perf_counter() - start)
    cpu = cpu_seconds(pid) - cpu_before
    return ScrapeStats(latencies, cpu, rss_bytes(pid), len(body), series_count(body), wire)


def machine() -> str:
    load = os.getloadavg()
    return (
        f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
