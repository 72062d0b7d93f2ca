"""Scrape cost of the memory, redundancy, firmware and tuning collectors, and of one
`nodeslo check`, on the seed-spec fixture (256 CPUs, 24 DIMMs, md RAID10, ZFS).

    .venv/bin/python benchmarks/health_collectors.py [--rounds 15] [--scrapes 10] [--cpus 256]

For each collector, in this process: files opened and directories listed per scrape
(counted by wrapping the `os` module the readers use) and the median time of one
collection. edac and tuning cache what does not change (DIMM directories and labels;
which idle states are deep and which CPUs share a cpufreq policy); "uncached" is the
same collector with the benchmark-only option cache_static=False, which works that out
again on every scrape. Cached and uncached runs alternate within each round so that
noise from other processes hits both alike; figures are medians over rounds.
Baselines for the ratios: the uncached variant of the same collector; for `nodeslo
check`, the cpuidle collector's steady scrape, measured in the same run.
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import time
from collections.abc import Callable

from _common import fixture_tree, machine
from nodeslo import readers
from nodeslo.check import run
from nodeslo.cli import build_parser
from nodeslo.collectors import tuning
from nodeslo.collectors.base import Collector, CollectorContext
from nodeslo.collectors.cpuidle import CpuidleCollector
from nodeslo.collectors.edac import EdacCollector
from nodeslo.collectors.firmware import FirmwareCollector
from nodeslo.collectors.numa import NumaCollector
from nodeslo.collectors.redundancy import RedundancyCollector
from nodeslo.collectors.resctrl import ResctrlCollector
from nodeslo.collectors.tuning import TuningCollector
from nodeslo.paths import Roots
from support.syscalls import CountingOs  # on sys.path through _common

COLLECTORS: dict[str, type[Collector]] = {
    "edac": EdacCollector,
    "numa": NumaCollector,
    "resctrl": ResctrlCollector,
    "redundancy": RedundancyCollector,
    "firmware": FirmwareCollector,
    "tuning": TuningCollector,
}
CACHING = ("edac", "tuning")


def make(cls: type[Collector], roots: Roots, cached: bool) -> Collector:
    return cls(CollectorContext(roots=roots, options=argparse.Namespace(cache_static=cached)))


def collect(collector: Collector) -> int:
    return sum(len(family.samples) for family in collector.collect())


def count(collector: Collector) -> tuple[int, int, int]:
    """(files opened, directories listed, series) of one scrape."""
    counting = CountingOs()
    modules = (readers, tuning)
    saved = [module.os for module in modules]
    for module in modules:
        module.os = counting  # type: ignore[assignment]
    try:
        series = collect(collector)
    finally:
        for module, original in zip(modules, saved, strict=True):
            module.os = original
    return counting.files, counting.listed, series


def timed(call: Callable[[], object], repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--scrapes", type=int, default=10, help="per round and variant")
    parser.add_argument("--cpus", type=int, default=None)
    args = parser.parse_args()
    tree = fixture_tree("seed-spec", args.cpus)
    roots = Roots.under(str(tree))
    print(f"machine: {machine()}")
    print(
        f"fixture: seed-spec ({args.cpus or 256} CPUs), {args.rounds} rounds x "
        f"{args.scrapes} scrapes per variant, medians"
    )
    print(
        f"  {'collector':<10} {'variant':<9} {'files':>6} {'dirs':>5} {'series':>6} "
        f"{'ms/scrape':>10} {'vs uncached':>12}"
    )
    for name, cls in COLLECTORS.items():
        variants = {"cached": make(cls, roots, True)}
        if name in CACHING:
            variants["uncached"] = make(cls, roots, False)
        for collector in variants.values():
            collect(collector)  # the first scrape builds the caches
        counts = {v: count(c) for v, c in variants.items()}
        times: dict[str, list[float]] = {v: [] for v in variants}
        for _ in range(args.rounds):
            for v, collector in variants.items():
                times[v].append(timed(lambda c=collector: collect(c), args.scrapes))
        base = statistics.median(times.get("uncached", times["cached"]))
        for v in sorted(variants, reverse=True):
            files, dirs, series = counts[v]
            ms = statistics.median(times[v])
            ratio = f"{ms / base:.2f}x" if "uncached" in variants else "-"
            print(
                f"  {name:<10} {v:<9} {files:>6} {dirs:>5} {series:>6} {ms * 1e3:>10.2f} "
                f"{ratio:>12}"
            )
    # One `nodeslo check` (no NVMe source), in process, against the cpuidle collector's
    # steady scrape over the same 256 CPUs.
    cpuidle = make(CpuidleCollector, roots, True)
    collect(cpuidle)
    argv = ["check", f"--path.sysfs={tree}/sys", f"--path.procfs={tree}/proc", "--format=json"]
    check_args = build_parser().parse_args(argv)
    rounds_check, rounds_idle = [], []
    for _ in range(args.rounds):
        rounds_check.append(timed(lambda: run(check_args, io.StringIO(), io.StringIO()), 1))
        rounds_idle.append(timed(lambda: collect(cpuidle), args.scrapes))
    check_ms = statistics.median(rounds_check) * 1e3
    idle_ms = statistics.median(rounds_idle) * 1e3
    print(
        f"  nodeslo check (one run, in process): {check_ms:.1f} ms = "
        f"{check_ms / idle_ms:.1f}x a cached cpuidle scrape ({idle_ms:.2f} ms)"
    )
    print(f"  finished {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}")
    shutil.rmtree(tree)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
