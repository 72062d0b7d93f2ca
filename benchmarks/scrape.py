"""Scrape latency and RSS of `nodeslo serve` on the seed-spec fixture.

    .venv/bin/python benchmarks/scrape.py [--scrapes 200] [--collectors diskstats,scheduler]

Prints p50/p99 scrape latency, CPU seconds per scrape, RSS, series and bytes per
scrape. Baseline for ratios: the bare HTTP round trip of `/-/healthy` on the same
daemon (what the HTTP server costs with no collection at all).
"""

from __future__ import annotations

import argparse
import time

from _common import fixture_tree, machine, scrape_many
from support import daemon as d  # on sys.path through _common


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--collectors", default="", help="comma list (default: the defaults)")
    parser.add_argument("--cpus", type=int, default=None)
    args = parser.parse_args()
    tree = fixture_tree("seed-spec", args.cpus)
    flags = []
    if args.collectors:
        flags = ["--collector.disable-defaults"]
        flags += [f"--collector.{c}" for c in args.collectors.split(",")]
    print(f"machine: {machine()}")
    with d.running(tree, *flags) as daemon:
        pid = daemon.proc.pid
        base = scrape_many(daemon.url + "/-/healthy", pid, args.scrapes)
        stats = scrape_many(daemon.url + "/metrics", pid, args.scrapes)
    print(
        f"fixture: seed-spec ({args.cpus or 256} CPUs), {args.scrapes} scrapes, "
        f"collectors: {args.collectors or 'defaults'}"
    )
    print(
        f"  /metrics   p50 {stats.p50 * 1e3:7.2f} ms   p99 {stats.p99 * 1e3:7.2f} ms   "
        f"cpu/scrape {stats.cpu_per_scrape * 1e3:6.2f} ms"
    )
    print(
        f"  /-/healthy p50 {base.p50 * 1e3:7.2f} ms   p99 {base.p99 * 1e3:7.2f} ms   "
        f"cpu/request {base.cpu_per_scrape * 1e3:6.2f} ms   (baseline)"
    )
    print(
        f"  ratio /metrics : /-/healthy   p50 {stats.p50 / base.p50:5.1f}x   "
        f"p99 {stats.p99 / base.p99:5.1f}x"
    )
    print(
        f"  RSS {stats.rss_bytes / 2**20:.1f} MiB   series {stats.series}   "
        f"bytes/scrape {stats.body_bytes}"
    )
    print(f"  finished {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
