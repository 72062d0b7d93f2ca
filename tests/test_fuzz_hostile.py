"""Bounded fuzzing of every file the collectors read and of the HTTP side (issue 19).

Files: on a fixture tree, every distinct kind of file the default collectors read (one
per path shape, `cpuN/cpuidle/stateK/usage` being one kind) is made malformed, huge,
out of range, vanished, a FIFO or a directory. Each scrape must answer within its
deadline with every collector that does not read that file unchanged and only the
series of those that do possibly missing; once the file is restored the exposition
must equal the baseline again: nothing a bad value did persists.

HTTP: a mix of hostile clients (slowloris, garbage, oversized heads, HTTP/0.9,
non-readers, invented Accept and Accept-Encoding values) runs while a scraper scrapes;
every scrape must be served, with a content type from the fixed set.

Every kind of file gets a 400-digit number, and a FIFO or its removal; hypothesis
adds random contents, derandomized with a bounded number of examples. About
30 s of CI time on an idle machine.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.core import Metric

from nodeslo import cli, readers
from nodeslo.daemon import Daemon
from nodeslo.profile import load_profile
from nodeslo.web.exposition import TextRenderer
from nodeslo.web.negotiate import FORMATS
from support import webserver as w
from support.exposition import VOLATILE, Sample, samples

COLLECTOR_TIMEOUT = 1.0
FUZZ = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

MUTATIONS: dict[str, Any] = {
    "huge": b"9" * 400 + b"\n",
    "past-u64": b"18446744073709551616\n",
    "negative": b"-12345\n",
    "wide-range": b"0-99999999999\n",
    "empty": b"",
    "long": b"1" * 100_000,
    "vanished": None,
    "fifo": None,
    "directory": None,
    "garbage": None,  # hypothesis' bytes
}


class _Recorder:
    """`os` for nodeslo.readers, remembering every path opened or listed."""

    def __init__(self) -> None:
        self.paths: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def open(self, path: str, flags: int, mode: int = 0o777) -> int:
        self.paths.add(path)
        return os.open(path, flags, mode)


class Bench:
    """The daemon's collectors on a tree, scraped in-process, with what they read."""

    def __init__(self, tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tree = tree
        args = cli.build_parser().parse_args(
            [
                "serve",
                f"--collector.timeout={COLLECTOR_TIMEOUT}s",
                f"--path.sysfs={tree}/sys",
                f"--path.procfs={tree}/proc",
                f"--path.rootfs={tree}",
                f"--path.udev.data={tree}/run/udev/data",
                "--no-probe.storage",
                "--no-probe.wakeup",
            ]
        )
        self.daemon = Daemon(args, load_profile())
        self.render = TextRenderer()
        self.readers: dict[str, set[str]] = {}  # path -> collectors that read it
        self.owner: dict[str, str] = {}  # metric family -> its collector
        for collector in self.daemon.collectors.collectors:
            recorder = _Recorder()
            monkeypatch.setattr(readers, "os", recorder)
            families: list[Metric] = list(collector.collect())
            monkeypatch.undo()
            for path in recorder.paths:
                self.readers.setdefault(path, set()).add(collector.name)
            for family in families:
                for sample in family.samples:
                    self.owner[sample.name] = collector.name
        self.baseline = self.scrape()[0]
        again = self.scrape()[0]
        self.volatile = {k for k in self.baseline if again.get(k) != self.baseline[k]}

    def scrape(self) -> tuple[dict[Sample, float], float]:
        start = time.monotonic()
        text = self.render(self.daemon.registry).decode()
        elapsed = time.monotonic() - start
        kept = {
            key: v
            for key, v in samples(text).items()
            if not any(p.search(key[0]) for p in VOLATILE)
        }
        return kept, elapsed

    def shapes(self) -> list[str]:
        """One path per shape (digits generalised), regular files under the tree."""
        chosen: dict[str, str] = {}
        for path in sorted(self.readers):
            if not os.path.isfile(path) or not path.startswith(str(self.tree)):
                continue
            chosen.setdefault(re.sub(r"\d+", "N", path), path)
        return sorted(chosen.values())


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    from fixtures.make_fixtures import build, variant

    tree = tmp_path_factory.mktemp("fuzz-tree")
    build(tree, variant("seed-spec", 8))  # every kind of file, fewer of each
    patch = pytest.MonkeyPatch()
    bench = Bench(tree, patch)
    yield bench
    bench.daemon.collectors.close()
    patch.undo()


def test_the_fuzz_covers_the_collectors(bench: Bench) -> None:
    covered = {c for path in bench.shapes() for c in bench.readers[path]}
    names = {c.name for c in bench.daemon.collectors.collectors}
    # Every collector that reads kernel files through readers is exercised; nvme and bmc
    # read devices through their helpers (hostile BMC answers: tests/test_bmc_hostile.py).
    assert covered >= names - {"nvme", "bmc"}, names - covered
    assert len(bench.shapes()) >= 60


def _mutate(path: str, kind: str, garbage: bytes) -> None:
    if kind in ("vanished", "fifo", "directory"):
        os.unlink(path)
        if kind == "fifo":
            os.mkfifo(path)
        elif kind == "directory":
            os.mkdir(path)
        return
    content = garbage if kind == "garbage" else MUTATIONS[kind]
    with open(path, "wb") as handle:
        handle.write(content)


def _restore(path: str, original: bytes) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)
    with open(path, "wb") as handle:
        handle.write(original)


def _check(bench: Bench, path: str, kind: str, garbage: bytes = b"") -> list[str]:
    """Mutate, scrape, restore, scrape: what went wrong (nothing, if all is well)."""
    affected = bench.readers[path]
    with open(path, "rb") as handle:
        original = handle.read()
    _mutate(path, kind, garbage)
    try:
        during, elapsed = bench.scrape()
    finally:
        _restore(path, original)
    problems = []
    where = f"{path.removeprefix(str(bench.tree))} ({kind})"
    if elapsed >= len(bench.daemon.collectors.collectors) * COLLECTOR_TIMEOUT + 5:
        problems.append(f"{where}: scrape took {elapsed:.1f}s")
    missing = {k for k in bench.baseline if k not in during and k not in bench.volatile}
    strays = sorted(k for k in missing if bench.owner.get(k[0]) not in affected)
    if strays:
        problems.append(f"{where}: cost series of other collectors: {strays[:3]}")
    for (name, labels), value in during.items():
        collector = dict(labels).get("collector")
        if name == "nodeslo_collector_success" and collector not in affected and value != 1:
            problems.append(f"{where}: {collector} failed")
    after, _ = bench.scrape()
    changed = sorted(
        k for k in bench.baseline if k not in bench.volatile and after.get(k) != bench.baseline[k]
    )
    if changed:
        problems.append(f"{where}: left a trace once restored: {changed[:3]}")
    return problems


@pytest.mark.parametrize("kinds", [("huge",), ("fifo", "vanished")])
def test_every_kind_of_file_survives_hostile_content_and_leaves_no_trace(
    bench: Bench, kinds: tuple[str, ...]
) -> None:
    # With two kinds, each file gets one of them, in turn (CI time).
    shapes = bench.shapes()
    problems = [
        p for i, path in enumerate(shapes) for p in _check(bench, path, kinds[i % len(kinds)])
    ]
    assert not problems, "\n".join(problems)


@FUZZ
@given(data=st.data(), kind=st.sampled_from(sorted(MUTATIONS)), garbage=st.binary(max_size=64))
def test_random_hostile_content_costs_only_its_own_values(
    bench: Bench, data: st.DataObject, kind: str, garbage: bytes
) -> None:
    path = data.draw(st.sampled_from(bench.shapes()), label="path")
    problems = _check(bench, path, kind, garbage)
    assert not problems, "\n".join(problems)


# --- hostile HTTP mixes --------------------------------------------------------------------

_ATTACKS = st.one_of(
    st.just(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: "),  # slowloris
    st.just(b"GET /metrics\r\n"),  # HTTP/0.9
    st.just(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 20),  # pipelined, never read
    st.just(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 70_000 + b"\r\n\r\n"),
    st.binary(min_size=1, max_size=200),  # garbage
    st.text(max_size=120).map(
        lambda t: (
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: "
            + t.encode("utf-8", "replace").replace(b"\r", b"").replace(b"\n", b"")
            + b"\r\nAccept-Encoding: "
            + t[::-1].encode("utf-8", "replace").replace(b"\r", b"").replace(b"\n", b"")
            + b"\r\n\r\n"
        )
    ),
)


@FUZZ
@given(attacks=st.lists(_ATTACKS, min_size=1, max_size=10))
def test_scrapes_are_served_through_any_mix_of_hostile_clients(attacks: list[bytes]) -> None:
    content_types = {f.content_type for f in FORMATS}
    with w.serving(max_connections=6) as server:
        port = w.port(server)
        socks = []
        try:
            for attack in attacks:
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                with contextlib.suppress(OSError):  # the server may have answered and closed
                    sock.sendall(attack)
                socks.append(sock)
            for _ in range(3):
                reply = w.get(port)
                assert reply.status == 200, reply
                assert reply.headers["Content-Type"] in content_types
                assert "nodeslo_test_up 1.0" in reply.body
        finally:
            for sock in socks:
                sock.close()
        assert w.wait_until(lambda: len(server.connections) == 0)
