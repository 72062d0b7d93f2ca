"""Idle cost of the whole of nodeslo, per process, against another version in the same run.

    git archive main exporter | tar -x -C /tmp/nodeslo-main
    .venv/bin/python benchmarks/idle_cost.py --baseline-src /tmp/nodeslo-main/exporter \\
        [--cpus 64,256] [--seconds 180] [--rounds 1] [--interval 15]

`nodeslo serve` as shipped (default collectors, default profile: storage probe at 10
operations/s per operation on a fresh directory under --dir, wake-up probe every 10 ms,
engine auto), on a seed-spec fixture tree of each CPU count, one scrape every --interval
seconds. Per round and tree the baseline version (PYTHONPATH=--baseline-src) and this
checkout run one after the other (A B, A B ...), each measured for --seconds after its
probes have reported.

Per process — daemon, storage probe, wake-up probe, cyclictest (the wake-up probe's
children), NVMe helper — it prints:

- CPU as % of one core: the sum over the process's threads of /proc/<pid>/task/*/schedstat
  (time on CPU, ns); short-lived cyclictest bursts are followed by polling the live
  children twice a second (what a burst runs after the last poll is missed: ~its exit);
- wake-ups per second: the same threads' count of times scheduled onto a CPU (the third
  schedstat field: each wake-up from a sleep, plus preemptions).

Ratios are this checkout / the baseline, medians over rounds. The machine is shared:
the load average is printed with every run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from _common import REPO, fixture_tree, machine, scrape_once
from support import daemon as d

KINDS = ("daemon", "storage", "wakeup", "cyclictest", "helper")


def kind_of(pid: int, daemon: int) -> str:
    if pid == daemon:
        return "daemon"
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    for kind in ("storage", "wakeup"):
        if f"nodeslo.probes.{kind}".encode() in cmdline:
            return kind
    if b"cyclictest" in cmdline.split(b"\0")[0]:
        return "cyclictest"
    return "helper"


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                todo += [
                    int(c)
                    for c in Path(f"/proc/{current}/task/{task}/children").read_text().split()
                ]
        except OSError:
            continue
    return out


def threads(pid: int) -> Iterator[tuple[int, int, int]]:
    """(tid, ns on CPU, times scheduled in) of each thread of pid."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return
    for tid in tids:
        try:
            cpu, _, runs = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
        except (OSError, ValueError):
            continue
        yield int(tid), int(cpu), int(runs)


class Meter:
    """Per kind: CPU ns and runs of every thread seen since start."""

    def __init__(self, daemon: int) -> None:
        self.daemon = daemon
        self.first: dict[int, tuple[int, int]] = {}
        self.last: dict[int, tuple[str, int, int]] = {}
        self.poll(initial=True)

    def poll(self, initial: bool = False) -> None:
        for pid in descendants(self.daemon):
            kind = kind_of(pid, self.daemon)
            for tid, cpu, runs in threads(pid):
                if initial:
                    self.first[tid] = (cpu, runs)
                self.last[tid] = (kind, cpu, runs)

    def totals(self, seconds: float) -> dict[str, tuple[float, float]]:
        """kind -> (% of one core, wake-ups/s)."""
        out = dict.fromkeys(KINDS, (0.0, 0.0))
        for tid, (kind, cpu, runs) in self.last.items():
            cpu0, runs0 = self.first.get(tid, (0, 0))
            pct, rate = out.get(kind, (0.0, 0.0))
            out[kind] = (pct + (cpu - cpu0) / seconds / 1e7, rate + (runs - runs0) / seconds)
        return out


@contextmanager
def version(src: Path, tree: Path, probe_dir: str) -> Iterator[d.Daemon]:
    flags = ["--probe.storage", f"--probe.storage.target={probe_dir}", "--probe.wakeup"]
    with d.running(tree, *flags, env={"PYTHONPATH": str(src)}, startup_timeout=60) as daemon:
        yield daemon


def measure(src: Path, tree: Path, args: argparse.Namespace) -> dict[str, tuple[float, float]]:
    probe_dir = tempfile.mkdtemp(prefix="nodeslo-idle-probe-", dir=args.dir)
    try:
        with version(src, tree, probe_dir) as daemon:
            url = daemon.url + "/metrics"
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:  # steady state: both probes have reported
                body = scrape_once(url)
                if b"io_latency_seconds_count" in body and b"wakeup_latency_seconds_count" in body:
                    break
                time.sleep(1)
            time.sleep(5)
            meter = Meter(daemon.proc.pid)
            start = time.monotonic()
            end, next_scrape = start + args.seconds, start
            while (now := time.monotonic()) < end:
                if now >= next_scrape:
                    scrape_once(url)
                    next_scrape += args.interval
                meter.poll()
                time.sleep(min(0.5, max(0.0, end - now)))
            meter.poll()
            return meter.totals(time.monotonic() - start)
    finally:
        shutil.rmtree(probe_dir, ignore_errors=True)


def show(label: str, result: dict[str, tuple[float, float]]) -> str:
    total = sum(v[0] for v in result.values())
    wakes = sum(v[1] for v in result.values())
    parts = "  ".join(f"{k} {result[k][0]:.3f}%/{result[k][1]:.0f}" for k in KINDS)
    return f"  {label:<9} total {total:.3f} % {wakes:6.1f} wake-ups/s | {parts}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline-src", type=Path, required=True, help="an exporter/ tree")
    parser.add_argument("--cpus", default="64,256")
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--interval", type=float, default=15.0)
    parser.add_argument("--dir", default="/var/tmp", help="where the storage probe's file goes")
    args = parser.parse_args()
    this = REPO / "exporter"
    print(f"# {machine()}")
    print("# per process: % of one core / wake-ups per second")
    for cpus in [int(c) for c in args.cpus.split(",")]:
        tree = fixture_tree("seed-spec", cpus)
        runs: dict[str, list[dict[str, tuple[float, float]]]] = {"baseline": [], "this": []}
        try:
            for _ in range(args.rounds):
                for label, src in (("baseline", args.baseline_src), ("this", this)):
                    result = measure(src, tree, args)
                    runs[label].append(result)
                    print(f"{cpus} CPUs, load {os.getloadavg()[0]:.1f}")
                    print(show(label, result), flush=True)
        finally:
            shutil.rmtree(tree, ignore_errors=True)
        med = {
            label: {k: tuple(statistics.median(r[k][i] for r in rs) for i in (0, 1)) for k in KINDS}
            for label, rs in runs.items()
        }
        base_total = sum(v[0] for v in med["baseline"].values())
        this_total = sum(v[0] for v in med["this"].values())
        base_wakes = sum(v[1] for v in med["baseline"].values())
        this_wakes = sum(v[1] for v in med["this"].values())
        print(
            f"== {cpus} CPUs, medians of {args.rounds}: total CPU {base_total:.3f} % -> "
            f"{this_total:.3f} % (x{this_total / base_total:.2f}), wake-ups/s "
            f"{base_wakes:.0f} -> {this_wakes:.0f} (x{this_wakes / base_wakes:.2f})"
        )
        for k in KINDS:
            (bc, bw), (tc, tw) = med["baseline"][k], med["this"][k]
            ratio = f"x{tc / bc:.2f}" if bc else "-"
            print(f"   {k:<10} {bc:.3f} % -> {tc:.3f} % ({ratio}), {bw:.0f} -> {tw:.0f} wake-ups/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
