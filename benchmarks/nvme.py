"""NVMe: decode time per controller, and the poller's CPU cost for 16 controllers.

    .venv/bin/python benchmarks/nvme.py [--iterations 20000] [--rounds 200]

Baseline for ratios: the bare `struct.unpack` of the same 512-byte page with the
precompiled layout struct (what reading the bytes costs before any field is named or
converted). The poller runs on the seed-spec NVMe fixture (16 controllers): through
the replay files, through the helper's socket protocol (a socketpair to an in-process
helper whose device is in memory), and on an in-memory source; its CPU per round is
also given as a share of one core at the default 60 s interval.

The scrape of the collector (16 controllers, replayed) is timed with the serial it
re-reads per controller to catch a swapped drive, against the same collector with that
check skipped (baseline, same run); its exposition's bytes with the `model` and `serial`
labels every per-drive series carries, against the same text with them stripped.
"""

from __future__ import annotations

import argparse
import logging
import re
import resource
import socket
import tempfile
import threading
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from _common import machine  # also puts tests/ on sys.path
from fixtures import nvme as fx
from fixtures.make_fixtures import variant
from fixtures.tree import Tree
from nodeslo.collectors.base import CollectorContext
from nodeslo.collectors.nvme import NvmeCollector
from nodeslo.log import OnceLog
from nodeslo.nvme import helper, ocp, smart
from nodeslo.nvme.client import HelperClient
from nodeslo.nvme.poller import Poller
from nodeslo.nvme.replay import ReplaySource
from nodeslo.nvme.requests import PageRequest
from nodeslo.paths import Roots

DEFAULT_INTERVAL = 60.0


def per_call(fn, arg: bytes, iterations: int) -> float:  # type: ignore[no-untyped-def]
    """Best of 5 runs, seconds per call."""
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(iterations):
            fn(arg)
        best = min(best, (time.perf_counter() - start) / iterations)
    return best


class InMemory(ReplaySource):
    """The replay files read once into memory: the poller without file I/O."""

    def __init__(self, directory: str) -> None:
        super().__init__(directory)
        self.cache: dict[PageRequest, bytes] = {}

    def fetch(self, request: PageRequest, timeout: float) -> bytes:
        page = self.cache.get(request)
        if page is None:
            page = self.cache[request] = super().fetch(request, timeout)
        return page


def cpu_now() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def poller_cost(tree: Path, source, rounds: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(CPU seconds per round, wall seconds per round) over `rounds` full rounds."""
    poller = Poller(
        str(tree / "sys"),
        source,
        interval=DEFAULT_INTERVAL,
        timeout=10.0,
        errors=OnceLog(logging.getLogger("bench")),
    )
    poller.poll_round(wait=30)  # warm: identify pages and the C0h verdicts are cached
    cpu, wall = cpu_now(), time.perf_counter()
    for _ in range(rounds):
        poller.poll_round(wait=30)
    cpu, wall = cpu_now() - cpu, time.perf_counter() - wall
    up = sum(1 for s in poller.snapshot(poller.controllers()) if s.up)
    assert up == 16, f"only {up} controllers read"
    return cpu / rounds, wall / rounds


IDENTITY = re.compile(r',model="[^"]*",serial="[^"]*"')


def scrape_cost(tree: Path, scrapes: int) -> None:
    options = argparse.Namespace(
        nvme_replay_dir=str(tree / fx.REPLAY_DIR), nvme_poll_interval=3600.0
    )
    ctx = CollectorContext(
        roots=Roots.under(str(tree)), options=options, errors=OnceLog(logging.getLogger("b"))
    )
    collector = NvmeCollector(ctx)
    collector.start()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    try:
        text = generate_latest(registry).decode()
        check = collector._same_drive
        best = {True: float("inf"), False: float("inf")}
        for _ in range(5):  # alternated, so that load from elsewhere hits both alike
            for checking in (True, False):
                collector._same_drive = check if checking else lambda snap: True  # type: ignore[method-assign]
                start = time.perf_counter()
                for _ in range(scrapes):
                    generate_latest(registry)
                took = (time.perf_counter() - start) / scrapes
                best[checking] = min(best[checking], took)
        with_check, without = best[True], best[False]
    finally:
        collector.close()
    stripped = IDENTITY.sub("", text)
    series = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
    print(f"collector scrape, 16 controllers, best of 5 x {scrapes} (baseline: no serial check)")
    print(
        f"  with serial check {with_check * 1e3:6.2f} ms   without {without * 1e3:6.2f} ms   "
        f"x{with_check / without:.2f}"
    )
    print(
        f"  exposition {len(text)} bytes, {series} series; without model/serial labels "
        f"{len(stripped)} bytes: x{len(text) / len(stripped):.2f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--scrapes", type=int, default=200)
    args = parser.parse_args()
    spec = variant("seed-spec")
    tree = Path(tempfile.mkdtemp(prefix="nodeslo-bench-nvme-"))
    fx.write(Tree(tree), spec)
    replay = tree / fx.REPLAY_DIR
    smart_page = (replay / "nvme0" / "log-02.bin").read_bytes()
    ocp_page = (replay / "nvme0" / "log-c0.bin").read_bytes()

    print(f"machine: {machine()}")
    bare_smart = per_call(smart.LAYOUT.struct.unpack, smart_page, args.iterations)
    bare_ocp = per_call(ocp.LAYOUT.struct.unpack, ocp_page, args.iterations)
    dec_smart = per_call(smart.decode, smart_page, args.iterations)
    dec_ocp = per_call(ocp.decode, ocp_page, args.iterations)
    bare = bare_smart + bare_ocp
    print(f"decode, best of 5 x {args.iterations} (baseline: bare struct.unpack of the page)")
    rows = (
        ("SMART 02h", dec_smart, bare_smart),
        ("OCP C0h", dec_ocp, bare_ocp),
        ("per controller", dec_smart + dec_ocp, bare),
    )
    for label, took, base in rows:
        print(
            f"  {label:15} {took * 1e6:7.2f} us  "
            f"(bare unpack {base * 1e6:5.2f} us, x{took / base:.1f})"
        )
    print(
        f"poller, 16 controllers, {args.rounds} rounds "
        f"(baseline: 16 x bare unpack of 02h + C0h = {16 * bare * 1e6:.1f} us)"
    )
    sources = {"in-memory source": InMemory(str(replay)), "replay files": ReplaySource(str(replay))}
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server = helper.HelperServer(InMemory(str(replay)))  # type: ignore[arg-type]
    threading.Thread(target=server.serve, args=(theirs,), daemon=True).start()
    sources["helper socket"] = HelperClient(sock=ours)
    for name, source in sources.items():
        cpu, wall = poller_cost(tree, source, args.rounds)
        share = cpu / DEFAULT_INTERVAL
        print(
            f"  {name:17} CPU {cpu * 1e3:6.2f} ms/round  wall {wall * 1e3:6.2f} ms  "
            f"x{cpu / (16 * bare):.0f} baseline  at 60s: {share * 100:.4f} % of a core"
        )
    sources["helper socket"].close()
    scrape_cost(tree, args.scrapes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
