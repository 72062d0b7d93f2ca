"""nodeslo against node_exporter on the same fixture, and what nodeslo costs at rest.

    .venv/bin/python benchmarks/compare_node_exporter.py [--modes compare,all,cpuidle,idle]
        [--rounds 6] [--scrapes 30] [--cpus 256] [--scaling-cpus 64,128,256,512]
        [--idle-seconds 90] [--idle-interval 15] [--plain]
        [--node-exporter /usr/bin/prometheus-node-exporter]
    .venv/bin/python benchmarks/compare_node_exporter.py --modes sizes
        [--sizes 2,16,64,256,host] [--before OTHER_CHECKOUT] [--every-collector]

Modes (each on a freshly generated seed-spec tree):

compare  nodeslo with the collectors that overlap node_exporter's (diskstats, scheduler,
         thermal, cpufreq, power, edac, numa, redundancy) against node_exporter 1.5 with
         its counterparts (diskstats, schedstat, stat, pressure, hwmon, thermal_zone,
         cpufreq, cpu, rapl, edac, meminfo_numa, mdadm, zfs), both pointed at the same
         tree with --path.sysfs/--path.procfs/--path.rootfs. Rounds alternate A B A B
         (nodeslo's scrapes, then node_exporter's) so that noise from other work on the
         machine hits both alike. Prints p50/p99 scrape latency, CPU seconds per scrape
         (utime+stime from /proc/<pid>/stat), RSS, series and bytes per scrape, the
         nodeslo : node_exporter ratio of each round and over all rounds, which
         collectors each exporter reported as failed, and what two simultaneous scrapes
         cost against one (nodeslo coalesces them into one collection). Baseline for
         the ratios: node_exporter, measured in the same run.
sizes    compare's overlapping collectors at each of --sizes: seed-spec trees scaled to
         that many CPUs (2: one socket, one core, two threads) and `host`, this
         machine's own /sys and /proc (both exporters with their default paths). With
         --before, a second nodeslo runs from OTHER_CHECKOUT/exporter (PYTHONPATH), e.g.
         a `git archive` of the commit before a change, so the rounds go A B C A B C
         (after, before, node_exporter) and both versions meet the same noise. Ends
         with one table: per size, p50 and CPU per scrape of each, and their ratios to
         node_exporter's. --every-collector: both nodeslo versions with every collector
         (the ratio to node_exporter then compares unlike work; before : after does not).
all      nodeslo with every collector on (probes off: they measure the real host).
cpuidle  the C-state collector alone on 64..512 CPUs; baseline: the smallest tree.
idle     nodeslo as shipped (default collectors, default probes; the storage probe on a
         temporary directory), scraped every --idle-interval seconds for --idle-seconds:
         CPU % of one core and RSS of the daemon process, then of the daemon with its
         children (the probe processes, with their reaped children: the cyclictest
         bursts; the NVMe helper) and their summed PSS (RSS would count the pages the
         helper, a fork, shares with the daemon twice), for each of --scaling-cpus.

Scrapes send what Prometheus 2.42 sends (OpenMetrics preferred, gzip accepted), so each
exporter answers in the format and encoding a real scrape gets (node_exporter: text
0.0.4; nodeslo: OpenMetrics); --plain sends a bare GET instead. Series are the
non-comment lines of an exposition; bytes are uncompressed (wire: as sent).

The fixture lacks two files node_exporter 1.5 insists on (cpufreq/scaling_setspeed,
nodeN/meminfo); they are added to the benchmark's tree so that its cpufreq and
meminfo_numa collectors do their full work. nodeslo reads neither.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path

from _common import (
    PROMETHEUS_HEADERS,
    ScrapeStats,
    children,
    cpu_seconds,
    cpu_with_children,
    fixture_tree,
    machine,
    rss_bytes,
    scrape_many,
    scrape_once,
    scrape_wire,
)
from support import daemon as d  # on sys.path through _common

NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
NODESLO_OVERLAP = (
    "diskstats",
    "scheduler",
    "thermal",
    "cpufreq",
    "power",
    "edac",
    "numa",
    "redundancy",
)
NODE_EXPORTER_OVERLAP = (
    "diskstats",
    "schedstat",
    "stat",
    "pressure",
    "hwmon",
    "thermal_zone",
    "cpufreq",
    "cpu",
    "rapl",
    "edac",
    "meminfo_numa",
    "mdadm",
    "zfs",
)
_SUCCESS = re.compile(
    rb'^(?:node_scrape|nodeslo)_collector_success\{collector="([^"]+)"\} (\S+)', re.M
)


def complete_for_node_exporter(tree: Path) -> None:
    """Add the files node_exporter 1.5 fails without and nodeslo never reads."""
    cpus = tree / "sys/devices/system/cpu"
    for policy in cpus.glob("cpu[0-9]*/cpufreq"):
        (policy / "scaling_setspeed").write_text("<unsupported>\n")
    for node in (tree / "sys/devices/system/node").glob("node[0-9]*"):
        n = node.name[4:]
        fields = {
            "MemTotal": 263_921_664,
            "MemFree": 240_114_212,
            "MemUsed": 23_807_452,
            "Active": 9_018_332,
            "Inactive": 6_402_100,
            "Dirty": 1_204,
            "Writeback": 0,
            "FilePages": 11_388_720,
            "Mapped": 402_116,
            "AnonPages": 4_023_312,
            "Shmem": 8_412,
            "KernelStack": 36_912,
            "PageTables": 41_228,
            "Slab": 2_108_344,
            "HugePages_Total": 0,
            "HugePages_Free": 0,
        }
        lines = [f"Node {n} {key}:{value:>16} kB" for key, value in fields.items()]
        (node / "meminfo").write_text("\n".join(lines) + "\n")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@contextlib.contextmanager
def node_exporter(
    binary: str, tree: Path | None, collectors: tuple[str, ...]
) -> Iterator[tuple[str, int]]:
    """(url, pid) of a node_exporter on `tree` (None: this host) with only `collectors`;
    stopped afterwards."""
    port = free_port()  # a race with another process is possible; the wait below says so
    cmd = [
        binary,
        f"--web.listen-address=127.0.0.1:{port}",
        "--collector.disable-defaults",
        *[f"--collector.{c}" for c in collectors],
    ]
    if tree is not None:
        cmd += [f"--path.sysfs={tree}/sys", f"--path.procfs={tree}/proc", f"--path.rootfs={tree}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                scrape_once(url)
                break
            except (urllib.error.URLError, ConnectionError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"node_exporter did not start: {' '.join(cmd)}") from None
                time.sleep(0.1)
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def nodeslo_flags(collectors: tuple[str, ...] | None) -> list[str]:
    if collectors is None:
        return []
    return ["--collector.disable-defaults", *[f"--collector.{c}" for c in collectors]]


def failed_collectors(body: bytes) -> list[str]:
    return [m.group(1).decode() for m in _SUCCESS.finditer(body) if float(m.group(2)) != 1.0]


def div(a: float, b: float) -> float:
    """A ratio; NaN when the baseline is 0 (CPU time comes in 10 ms ticks: a few quick
    scrapes may not reach one)."""
    return a / b if b else math.nan


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:7.2f}"


def row(label: str, stats: ScrapeStats) -> str:
    return (
        f"  {label:<14} p50 {ms(stats.p50)} ms  p99 {ms(stats.p99)} ms  "
        f"cpu/scrape {ms(stats.cpu_per_scrape)} ms  RSS {stats.rss_bytes / 2**20:5.1f} MiB  "
        f"series {stats.series:>5}  bytes {stats.body_bytes:>7} (wire {stats.wire_bytes})"
    )


def merged(parts: list[ScrapeStats]) -> ScrapeStats:
    return ScrapeStats(
        [x for p in parts for x in p.latencies],
        sum(p.cpu_seconds for p in parts),
        max(p.rss_bytes for p in parts),
        parts[-1].body_bytes,
        parts[-1].series,
        parts[-1].wire_bytes,
    )


def concurrent_cost(url: str, pid: int, pairs: int, headers: dict[str, str] | None) -> float:
    """CPU seconds the server spends per pair of scrapes sent at the same instant."""
    barrier = threading.Barrier(2)

    def one() -> None:
        barrier.wait()
        scrape_wire(url, headers)

    before = cpu_seconds(pid)
    for _ in range(pairs):
        threads = [threading.Thread(target=one) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return (cpu_seconds(pid) - before) / pairs


def compare(args: argparse.Namespace, headers: dict[str, str] | None) -> None:
    tree = fixture_tree("seed-spec", args.cpus)
    complete_for_node_exporter(tree)
    print(
        f"\n== compare: overlapping collectors, seed-spec ({args.cpus} CPUs), "
        f"{args.rounds} rounds x {args.scrapes} scrapes each, A B A B; baseline: node_exporter"
    )
    with (
        d.running(tree, *nodeslo_flags(NODESLO_OVERLAP)) as daemon,
        node_exporter(args.node_exporter, tree, NODE_EXPORTER_OVERLAP) as (ne_url, ne_pid),
    ):
        ns_url, ns_pid = daemon.url + "/metrics", daemon.proc.pid
        runs: dict[str, list[ScrapeStats]] = {"nodeslo": [], "node_exporter": []}
        for round_ in range(1, args.rounds + 1):
            a = scrape_many(ns_url, ns_pid, args.scrapes, headers)
            b = scrape_many(ne_url, ne_pid, args.scrapes, headers)
            runs["nodeslo"].append(a)
            runs["node_exporter"].append(b)
            print(
                f"  round {round_}: p50 {ms(a.p50)} vs {ms(b.p50)} ms = {div(a.p50, b.p50):.2f}x   "
                f"cpu/scrape {ms(a.cpu_per_scrape)} vs {ms(b.cpu_per_scrape)} ms = "
                f"{div(a.cpu_per_scrape, b.cpu_per_scrape):.2f}x"
            )
        ns, ne = merged(runs["nodeslo"]), merged(runs["node_exporter"])
        print(row("nodeslo", ns))
        print(row("node_exporter", ne))
        round_p50 = [
            div(a.p50, b.p50) for a, b in zip(runs["nodeslo"], runs["node_exporter"], strict=True)
        ]
        round_cpu = [
            div(a.cpu_per_scrape, b.cpu_per_scrape)
            for a, b in zip(runs["nodeslo"], runs["node_exporter"], strict=True)
        ]
        print(
            f"  ratio nodeslo : node_exporter  p50 {div(ns.p50, ne.p50):.2f}x (rounds "
            f"{min(round_p50):.2f}-{max(round_p50):.2f})  p99 {div(ns.p99, ne.p99):.2f}x  "
            f"cpu/scrape {div(ns.cpu_per_scrape, ne.cpu_per_scrape):.2f}x (rounds "
            f"{min(round_cpu):.2f}-{max(round_cpu):.2f})  series {div(ns.series, ne.series):.2f}x  "
            f"bytes {div(ns.body_bytes, ne.body_bytes):.2f}x  "
            f"RSS {div(ns.rss_bytes, ne.rss_bytes):.2f}x"
        )
        for name, url in (("nodeslo", ns_url), ("node_exporter", ne_url)):
            failed = failed_collectors(scrape_once(url))
            print(f"  {name} collectors failed: {', '.join(failed) or 'none'}")
        pairs = max(3, args.scrapes // 3)
        for name, url, pid, single in (
            ("nodeslo", ns_url, ns_pid, ns),
            ("node_exporter", ne_url, ne_pid, ne),
        ):
            pair = concurrent_cost(url, pid, pairs, headers)
            print(
                f"  {name}: two simultaneous scrapes cost {ms(pair)} ms CPU = "
                f"{div(pair, single.cpu_per_scrape):.2f}x one scrape ({pairs} pairs)"
            )
    shutil.rmtree(tree)


@contextlib.contextmanager
def nodeslo(
    tree: Path | None, source: str | None = None, every: bool = False
) -> Iterator[tuple[str, int]]:
    """(url, pid) of a nodeslo with the overlapping collectors (`every`: all of them) on
    `tree` (None: this host, probes off), run from `source`/exporter when given (the
    "before" version)."""
    from nodeslo.collectors import COLLECTORS

    env = {"PYTHONPATH": str(Path(source) / "exporter")} if source else None
    flags = nodeslo_flags(tuple(COLLECTORS) if every else NODESLO_OVERLAP)
    if tree is None:
        flags += ["--no-probe.storage", "--no-probe.wakeup"]
    with d.running(tree, *flags, env=env) as daemon:
        yield daemon.url + "/metrics", daemon.proc.pid


def size_label(size: str) -> str:
    return "this host" if size == "host" else f"{size} CPUs"


def sizes(args: argparse.Namespace, headers: dict[str, str] | None) -> None:
    """compare's collectors at each size, A B (C) alternating; one summary table."""
    labels = ["nodeslo", *(["before"] if args.before else []), "node_exporter"]
    print(
        f"\n== sizes: overlapping collectors at {', '.join(map(size_label, args.sizes))}; "
        f"{args.rounds} rounds x {args.scrapes} scrapes, {' '.join(labels)} alternating; "
        "baseline: node_exporter" + (f"; before: {args.before}/exporter" if args.before else "")
    )
    summary: list[tuple[str, dict[str, ScrapeStats]]] = []
    for size in args.sizes:
        tree = None if size == "host" else fixture_tree("seed-spec", int(size))
        if tree is not None:
            complete_for_node_exporter(tree)
        with contextlib.ExitStack() as stack:
            every = args.every_collector
            targets = {"nodeslo": stack.enter_context(nodeslo(tree, every=every))}
            if args.before:
                targets["before"] = stack.enter_context(nodeslo(tree, args.before, every))
            targets["node_exporter"] = stack.enter_context(
                node_exporter(args.node_exporter, tree, NODE_EXPORTER_OVERLAP)
            )
            runs: dict[str, list[ScrapeStats]] = {label: [] for label in labels}
            for _ in range(args.rounds):
                for label in labels:
                    url, pid = targets[label]
                    runs[label].append(scrape_many(url, pid, args.scrapes, headers))
            print(f"  -- {size_label(size)}")
            base = runs["node_exporter"]
            for label in labels:
                rounds_cpu = [
                    div(a.cpu_per_scrape, b.cpu_per_scrape)
                    for a, b in zip(runs[label], base, strict=True)
                ]
                print(
                    row(label, merged(runs[label]))
                    + f"  cpu rounds {min(rounds_cpu):.2f}-{max(rounds_cpu):.2f}x"
                )
            for label in labels:
                failed = failed_collectors(scrape_once(targets[label][0]))
                print(f"  {label} collectors failed: {', '.join(failed) or 'none'}")
        if tree is not None:
            shutil.rmtree(tree)
        summary.append((size, {label: merged(runs[label]) for label in labels}))
    columns = " | ".join(f"{x} p50, CPU/scrape" for x in labels)
    print(f"\n  | host | {columns} | ratios (p50, CPU) |")
    print("  |---|" + "---|" * (len(labels) + 1))
    for size, stats in summary:
        ne = stats["node_exporter"]
        cells = [f"{ms(s.p50).strip()}, {ms(s.cpu_per_scrape).strip()} ms" for s in stats.values()]
        ratios = "; ".join(
            f"{label} {div(stats[label].p50, ne.p50):.2f}x, "
            f"{div(stats[label].cpu_per_scrape, ne.cpu_per_scrape):.2f}x"
            for label in labels[:-1]
        )
        print(f"  | {size_label(size)} | {' | '.join(cells)} | {ratios} |")


def all_collectors(args: argparse.Namespace, headers: dict[str, str] | None) -> None:
    from nodeslo.collectors import COLLECTORS

    tree = fixture_tree("seed-spec", args.cpus)
    names = tuple(COLLECTORS)
    print(f"\n== all: every nodeslo collector ({','.join(names)}), seed-spec ({args.cpus} CPUs)")
    with d.running(tree, *nodeslo_flags(names)) as daemon:
        url = daemon.url + "/metrics"
        stats = scrape_many(url, daemon.proc.pid, args.scrapes * 2, headers)
        print(row("nodeslo all", stats))
        print(f"  collectors failed: {', '.join(failed_collectors(scrape_once(url))) or 'none'}")
    shutil.rmtree(tree)


def cpuidle_scaling(args: argparse.Namespace, headers: dict[str, str] | None) -> None:
    print("\n== cpuidle alone against CPU count; baseline: the smallest tree")
    base: ScrapeStats | None = None
    for cpus in args.scaling_cpus:
        tree = fixture_tree("seed-spec", cpus)
        with d.running(tree, *nodeslo_flags(("cpuidle",))) as daemon:
            stats = scrape_many(daemon.url + "/metrics", daemon.proc.pid, args.scrapes * 2, headers)
        shutil.rmtree(tree)
        base = base or stats
        print(
            row(f"{cpus} CPUs", stats)
            + f"  cpu x{div(stats.cpu_per_scrape, base.cpu_per_scrape):.2f}"
        )


def idle(args: argparse.Namespace, headers: dict[str, str] | None) -> None:
    print(
        f"\n== idle: default collectors and probes, one scrape every {args.idle_interval:g} s, "
        f"{args.idle_seconds:g} s measured per tree"
    )
    for cpus in args.scaling_cpus:
        tree = fixture_tree("seed-spec", cpus)
        probe_dir = tempfile.mkdtemp(prefix="nodeslo-bench-probe-")
        flags = ["--probe.storage", f"--probe.storage.target={probe_dir}", "--probe.wakeup"]
        with d.running(tree, *flags) as daemon:
            url, pid = daemon.url + "/metrics", daemon.proc.pid
            # Past start-up (probe file creation, first collections): steady state only.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                body = scrape_once(url, headers)
                if b"io_latency_seconds_count" in body and b"wakeup_latency_seconds_count" in body:
                    break
                time.sleep(0.5)
            time.sleep(2)
            kinds = {c: child_kind(c) for c in children(pid)}
            pids = [pid, *kinds]
            cpu0 = {p: cpu_with_children(p) for p in pids}
            start = time.monotonic()
            end, next_scrape, scrapes = start + args.idle_seconds, start, 0
            while (now := time.monotonic()) < end:
                if now >= next_scrape:
                    scrape_once(url, headers)
                    scrapes += 1
                    next_scrape += args.idle_interval
                else:
                    time.sleep(min(next_scrape, end) - now)
            elapsed = time.monotonic() - start
            cpu = {p: (cpu_with_children(p) - cpu0[p]) / elapsed for p in pids}
            rss = {p: rss_bytes(p) for p in pids}
            pss = {p: pss_bytes(p) for p in pids}
            failed = failed_collectors(scrape_once(url))
        shutil.rmtree(tree)
        shutil.rmtree(probe_dir, ignore_errors=True)
        parts = ", ".join(
            f"{kinds[p]} {cpu[p] * 100:.2f} % {rss[p] / 2**20:.1f} MiB" for p in sorted(kinds)
        )
        print(
            f"  {cpus:>3} CPUs: daemon CPU {cpu[pid] * 100:5.2f} % of one core, RSS "
            f"{rss[pid] / 2**20:5.1f} MiB | with its children CPU "
            f"{sum(cpu.values()) * 100:5.2f} %, "
            f"PSS {sum(pss.values()) / 2**20:5.1f} MiB ({parts}) | {scrapes} scrapes; "
            f"collectors failed: {', '.join(failed) or 'none'}"
        )


def child_kind(pid: int) -> str:
    """storage / wakeup (the probe processes) or helper (the NVMe helper, a fork of the
    daemon before it dropped privileges)."""
    with open(f"/proc/{pid}/cmdline", "rb") as handle:
        cmdline = handle.read()
    for kind in ("storage", "wakeup"):
        if f"nodeslo.probes.{kind}".encode() in cmdline:
            return kind
    return "helper"


def pss_bytes(pid: int) -> int:
    """Proportional set size: pages shared with the daemon (a fork) counted once overall."""
    with open(f"/proc/{pid}/smaps_rollup") as handle:
        for line in handle:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


def cpu_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def size_list(text: str) -> list[str]:
    out = [x for x in text.split(",") if x]
    for x in out:
        if x != "host" and not x.isdigit():
            raise argparse.ArgumentTypeError(f"a CPU count or 'host': {x!r}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default="compare,all,cpuidle,idle")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--scrapes", type=int, default=30, help="per round and exporter")
    parser.add_argument("--cpus", type=int, default=256)
    parser.add_argument("--scaling-cpus", type=cpu_list, default=[64, 128, 256, 512])
    parser.add_argument("--sizes", type=size_list, default=["2", "16", "64", "256", "host"])
    parser.add_argument(
        "--before", default="", help="sizes: also run nodeslo from this checkout's exporter/"
    )
    parser.add_argument(
        "--every-collector",
        action="store_true",
        help="sizes: nodeslo (and before) with every collector; node_exporter as always",
    )
    parser.add_argument("--idle-seconds", type=float, default=90.0)
    parser.add_argument("--idle-interval", type=float, default=15.0)
    parser.add_argument("--plain", action="store_true", help="bare GET: text format, no gzip")
    parser.add_argument("--node-exporter", default=NODE_EXPORTER)
    args = parser.parse_args()
    modes = args.modes.split(",")
    unknown = set(modes) - {"compare", "sizes", "all", "cpuidle", "idle"}
    if unknown:
        parser.error(f"unknown modes: {', '.join(sorted(unknown))}")
    if {"compare", "sizes"} & set(modes) and not os.access(args.node_exporter, os.X_OK):
        parser.error(f"{args.node_exporter}: not found (apt-get install prometheus-node-exporter)")
    headers = None if args.plain else PROMETHEUS_HEADERS
    print(f"machine: {machine()}")
    print(f"requests: {'bare GET' if args.plain else 'as Prometheus 2.42 sends them'}")
    runners = {
        "compare": compare,
        "sizes": sizes,
        "all": all_collectors,
        "cpuidle": cpuidle_scaling,
        "idle": idle,
    }
    for mode in modes:
        runners[mode](args, headers)
    print(f"finished {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}, machine: {machine()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
