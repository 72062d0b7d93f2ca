"""Scrape cost of the CPU collectors (cpuidle, cpufreq, thermal, power), with and without
the static-attribute cache, on the seed-spec fixture (256 CPUs x 4 C-states).

    .venv/bin/python benchmarks/cpu_collectors.py [--rounds 15] [--scrapes 10] [--cpus 256]
        [--variant seed-spec-amd]

For each collector, in this process: files opened, directories listed and links read
per scrape (counted by wrapping the `os` module the readers use), and the time of one
collection (`collect()` to finished metric families). "uncached" is the same collector
with the benchmark-only option cache_static=False: it rebuilds its plan (lists the
directories, reads names, latencies, labels, thresholds) on every scrape, as an
exporter without the cache would. Cached and uncached runs alternate (A B A B) within
each round so that noise from other processes on the machine hits both alike; the
figures are medians over rounds. Baseline for the ratio: the uncached variant.

On a variant without thermal_throttle (seed-spec-amd) the thermal collector computes the
frequency signal (busy core time below the profile's all-core target: /proc/stat and one
frequency file per cpufreq policy per scrape); a last table measures that against the
same collector with no target in the profile (no signal, as before issue 13).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import replace

from _common import fixture_tree, machine
from fixtures.make_fixtures import variant as fixture_variant  # on sys.path via _common
from nodeslo import hwmon, readers
from nodeslo.collectors import cpufreq
from nodeslo.collectors.base import Collector, CollectorContext
from nodeslo.collectors.cpufreq import CpufreqCollector
from nodeslo.collectors.cpuidle import CpuidleCollector
from nodeslo.collectors.power import PowerCollector
from nodeslo.collectors.thermal import ThermalCollector
from nodeslo.paths import Roots
from nodeslo.profile import Profile, load_profile
from support.syscalls import CountingOs  # on sys.path through _common

COLLECTORS: dict[str, type[Collector]] = {
    "cpuidle": CpuidleCollector,
    "cpufreq": CpufreqCollector,
    "thermal": ThermalCollector,
    "power": PowerCollector,
}


def make(
    names: list[str], roots: Roots, cached: bool, profile: Profile | None = None
) -> list[Collector]:
    options = argparse.Namespace(cache_static=cached)
    ctx = CollectorContext(roots=roots, options=options)
    if profile is not None:
        ctx.profile = lambda: profile
    return [COLLECTORS[name](ctx) for name in names]


def frequency_signal_cost(roots: Roots, rounds: int, scrapes: int) -> None:
    """The thermal collector with the frequency signal vs without a target (baseline)."""
    shipped = load_profile()
    untargeted = replace(shipped, capacity=replace(shipped.capacity, all_core_frequency_hertz=None))
    runs = {
        "signal": make(["thermal"], roots, cached=True),
        "no target": make(["thermal"], roots, cached=True, profile=untargeted),
    }
    for collectors in runs.values():
        collect(collectors)
    counts = {name: count(collectors) for name, collectors in runs.items()}
    medians: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, collectors in runs.items():
            medians[name].append(timed(lambda c=collectors: collect(c), scrapes))
    print("  frequency signal (thermal collector), baseline: no frequency target")
    base = statistics.median(medians["no target"])
    for name in ("no target", "signal"):
        files, _dirs, _links, series = counts[name]
        ms = statistics.median(medians[name])
        print(
            f"  {name:<19} {files:>6} files {series:>6} series {ms * 1e3:>10.2f} ms/scrape "
            f"{ms / base:>6.2f}x"
        )


def held_files_cost(roots: Roots, rounds: int, scrapes: int) -> None:
    """cpuidle with every C-state file held open (4,096 at most per process, half the
    8,192 open files the daemon raises its limit to) against at most 512 held, the cap
    before (baseline): the rest opened, read and closed on every scrape."""
    capped = make(["cpuidle"], roots, cached=True)
    saved = readers.MAX_HELD_FILES
    readers.MAX_HELD_FILES = readers._Budget.held + 512
    collect(capped)  # holds 512 and no more
    readers.MAX_HELD_FILES = saved
    full = make(["cpuidle"], roots, cached=True)
    collect(full)
    runs = {"held <= 512": capped, "held all": full}
    medians: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, collectors in runs.items():
            # No room left while the capped one runs: it keeps opening the rest.
            readers.MAX_HELD_FILES = readers._Budget.held if name != "held all" else saved
            medians[name].append(timed(lambda c=collectors: collect(c), scrapes))
    readers.MAX_HELD_FILES = readers._Budget.held
    counted = {name: count(collectors) for name, collectors in runs.items()}
    readers.MAX_HELD_FILES = saved
    print("  C-state files held open (cpuidle), baseline: at most 512 held (before)")
    base = statistics.median(medians["held <= 512"])
    for name, collectors in runs.items():
        files, _dirs, _links, series = counted[name]
        ms = statistics.median(medians[name])
        print(
            f"  {name:<19} {files:>6} opens {series:>6} series {ms * 1e3:>10.2f} ms/scrape "
            f"{ms / base:>6.2f}x"
        )
        for collector in collectors:
            collector.close()


def collect(collectors: list[Collector]) -> int:
    series = 0
    for collector in collectors:
        for family in collector.collect():
            series += len(family.samples)
    return series


def count(collectors: list[Collector]) -> tuple[int, int, int, int]:
    """(files opened, directories listed, links read, series) of one scrape."""
    counting = CountingOs()
    modules = (readers, hwmon, cpufreq)
    saved = [module.os for module in modules]
    for module in modules:
        module.os = counting  # type: ignore[assignment]
    try:
        series = collect(collectors)
    finally:
        for module, original in zip(modules, saved, strict=True):
            module.os = original
    return counting.files, counting.listed, counting.readlinks, series


def timed(run: Callable[[], int], scrapes: int) -> float:
    """Median seconds of one collection over `scrapes` collections."""
    samples = []
    for _ in range(scrapes):
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--scrapes", type=int, default=10, help="per round and variant")
    parser.add_argument("--cpus", type=int, default=None)
    parser.add_argument("--variant", default="seed-spec", help="fixture variant")
    args = parser.parse_args()
    tree = fixture_tree(args.variant, args.cpus)
    roots = Roots.under(str(tree))
    print(f"machine: {machine()}")
    print(
        f"fixture: {args.variant} ({args.cpus or 256} CPUs), {args.rounds} rounds x "
        f"{args.scrapes} scrapes per variant, medians; baseline: uncached"
    )
    header = (
        f"  {'collector':<9} {'variant':<9} {'files':>6} {'dirs':>5} {'links':>5} "
        f"{'series':>6} {'ms/scrape':>10} {'vs uncached':>12}"
    )
    held_files_cost(roots, args.rounds, args.scrapes)  # first: the process's budget is whole
    print(header)
    groups = [[name] for name in COLLECTORS] + [list(COLLECTORS)]
    for names in groups:
        cached = make(names, roots, cached=True)
        uncached = make(names, roots, cached=False)
        collect(cached)  # first scrape builds the plan: not what a steady scrape costs
        collect(uncached)
        counts = {"cached": count(cached), "uncached": count(uncached)}
        medians: dict[str, list[float]] = {"cached": [], "uncached": []}
        for _ in range(args.rounds):
            medians["cached"].append(timed(lambda c=cached: collect(c), args.scrapes))
            medians["uncached"].append(timed(lambda c=uncached: collect(c), args.scrapes))
        label = names[0] if len(names) == 1 else "all four"
        base = statistics.median(medians["uncached"])
        for variant in ("uncached", "cached"):
            files, dirs, links, series = counts[variant]
            ms = statistics.median(medians[variant])
            ratio = "1.00x" if variant == "uncached" else f"{ms / base:.2f}x"
            print(
                f"  {label:<9} {variant:<9} {files:>6} {dirs:>5} {links:>5} {series:>6} "
                f"{ms * 1e3:>10.2f} {ratio:>12}"
            )
    if fixture_variant(args.variant).vendor == "amd":
        frequency_signal_cost(roots, args.rounds, args.scrapes)
    print(f"  finished {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
