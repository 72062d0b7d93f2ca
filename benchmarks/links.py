"""Scrape cost of the pcie, network and inventory collectors on the seed-spec fixture
(256 CPUs; 16 NVMe drives behind 16 root ports, 4 NICs behind 2 more, 2 RoCE ports,
24 DIMMs), against the collectors that were there before them, in the same run.

    .venv/bin/python benchmarks/links.py [--rounds 15] [--scrapes 10] [--cpus 256]

For each collector, in this process: files opened, directories listed and series per
scrape (counted by wrapping the `os` module the readers use), and the median time of one
collection. The new collectors cache what does not change (which functions are watched,
their labels and ports; interface identities; topology, cache sizes, DIMMs and drive
identities); "uncached" is the same collector with the benchmark-only option
cache_static=False, which works all of that out on every scrape; "whole-aer" is pcie
parsing every line of every AER file, as it did before it read only the TOTAL_ERR_* line
(per-type counts are behind --collector.pcie.aer-types). All variants alternate
within each round so that noise from other processes hits them alike; figures are
medians over rounds. Baselines: the existing collectors, each and all together (the
nvme collector is left out: its scrape reads a poller's cache), and the uncached
variant of each new collector.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable, Iterator

from _common import fixture_tree, machine
from nodeslo import readers
from nodeslo.collectors.base import Collector, CollectorContext
from nodeslo.collectors.registry import COLLECTORS
from nodeslo.links import pci
from nodeslo.paths import Roots
from support.syscalls import CountingOs  # on sys.path through _common

NEW = ("pcie", "network", "inventory")
EXISTING = (
    "diskstats",
    "scheduler",
    "cpuidle",
    "cpufreq",
    "thermal",
    "power",
    "edac",
    "numa",
    "resctrl",
    "redundancy",
    "firmware",
    "tuning",
)


def make(name: str, roots: Roots, cached: bool = True) -> Collector:
    return COLLECTORS[name](
        CollectorContext(roots=roots, options=argparse.Namespace(cache_static=cached))
    )


def collect(collector: Collector) -> int:
    return sum(len(family.samples) for family in collector.collect())


def count(collector: Collector) -> tuple[int, int, int]:
    """(files opened, directories listed, series) of one scrape."""
    counting = CountingOs()
    saved = readers.os
    readers.os = counting  # type: ignore[assignment]
    try:
        series = collect(collector)
    finally:
        readers.os = saved
    return counting.files, counting.listed, series


@contextlib.contextmanager
def variant_of(key: tuple[str, str]) -> Iterator[None]:
    """The baseline "whole-aer": the total from a parse of every line."""
    if key[1] != "whole-aer":
        yield
        return
    saved = pci.parse_aer_total
    pci.parse_aer_total = lambda text: pci.parse_aer(text)[0]
    try:
        yield
    finally:
        pci.parse_aer_total = saved


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
    variants: dict[tuple[str, str], Collector] = {}
    for name in EXISTING:
        variants[(name, "cached")] = make(name, roots)
    for name in NEW:
        variants[(name, "cached")] = make(name, roots)
        variants[(name, "uncached")] = make(name, roots, cached=False)
    variants[("pcie", "whole-aer")] = make("pcie", roots)
    for collector in variants.values():
        collect(collector)  # the first scrape builds the caches
    counts = {key: count(c) for key, c in variants.items()}
    times: dict[tuple[str, str], list[float]] = {key: [] for key in variants}
    for _ in range(args.rounds):
        for key, collector in variants.items():
            with variant_of(key):
                times[key].append(timed(lambda c=collector: collect(c), args.scrapes))
    ms = {key: statistics.median(t) * 1e3 for key, t in times.items()}
    existing = sum(ms[(n, "cached")] for n in EXISTING)
    existing_series = sum(counts[(n, "cached")][2] for n in EXISTING)

    print(f"machine: {machine()}")
    print(
        f"fixture: seed-spec ({args.cpus or 256} CPUs), {args.rounds} rounds x "
        f"{args.scrapes} scrapes per variant, medians"
    )
    print(
        f"  {'collector':<10} {'variant':<9} {'files':>6} {'dirs':>5} {'series':>6} "
        f"{'ms/scrape':>10} {'vs uncached':>12} {'vs existing':>12}"
    )
    for name in (*EXISTING, *NEW):
        for variant in ("cached", "uncached", "whole-aer"):
            key = (name, variant)
            if key not in variants:
                continue
            files, dirs, series = counts[key]
            uncached = ms.get((name, "uncached"))
            ratio = f"{ms[key] / uncached:.2f}x" if uncached else "-"
            print(
                f"  {name:<10} {variant:<9} {files:>6} {dirs:>5} {series:>6} "
                f"{ms[key]:>10.2f} {ratio:>12} {ms[key] / existing:>11.3f}x"
            )
    whole = ms[("pcie", "whole-aer")]
    print(
        f"  pcie reading only the AER totals: {ms[('pcie', 'cached')]:.2f} ms = "
        f"{ms[('pcie', 'cached')] / whole:.2f}x whole-aer ({whole:.2f} ms, baseline)"
    )
    new = sum(ms[(n, "cached")] for n in NEW)
    new_series = sum(counts[(n, "cached")][2] for n in NEW)
    print(f"  existing collectors together: {existing:.2f} ms, {existing_series} series (baseline)")
    print(
        f"  pcie + network + inventory:   {new:.2f} ms = {new / existing:.3f}x the existing, "
        f"{new_series} series = {new_series / existing_series:.2f}x"
    )
    print(f"  finished {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
