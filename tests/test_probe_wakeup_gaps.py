"""The wake-up probe never goes quiet: failed, hung or killed cyclictest bursts and a probe
process that is down are missed wake-ups, counted bad in the histogram the SLO reads."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import missing
from nodeslo.collectors.base import CollectorContext
from nodeslo.probes import wakeup
from nodeslo.probes.collector import WakeupProbe
from nodeslo.probes.histogram import LatencyHistogram, latency_bounds
from nodeslo.probes.protocol import Reporter
from nodeslo.probes.settings import wakeup_settings
from support.procs import children, status
from test_probe_process import scrape, serve_options, wait_for, wakeup_collector

INTERVAL = 10_000_000  # 10 ms
BOUNDS = latency_bounds((50e-6,))
OK_JSON = {"thread": {"0": {"histogram": {"3": 1000}, "cycles": 1000, "max": 3, "avg": 3.0}}}


class Clock:
    def __init__(self, now: int = 1_000_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def messages(buffer: io.BytesIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def config(engine: str = "auto") -> wakeup.Config:
    return wakeup.Config(engine=engine, interval_ns=INTERVAL, policy="other", bounds=BOUNDS)


def test_missed_deadlines_are_observed_at_their_lateness_a_lower_bound() -> None:
    h = LatencyHistogram(BOUNDS)
    n, following = wakeup.observe_missed(h, 0, INTERVAL, 35_000_000)
    assert (n, following) == (4, 40_000_000)  # deadlines 0, 10, 20, 30 ms
    snap = h.snapshot()
    assert snap.count == 4 and snap.sum_ns == 35_000_000 + 25_000_000 + 15_000_000 + 5_000_000
    assert wakeup.observe_missed(h, following, INTERVAL, following) == (0, following)


def test_failed_bursts_and_their_backoff_are_missed_then_measuring_resumes() -> None:
    clock, out, waits = Clock(), io.BytesIO(), []
    outcomes = iter(["hang", "ok", "exit"])

    def burst(binary: str, cfg: wakeup.Config, policy: str, h: LatencyHistogram) -> None:
        outcome = next(outcomes)
        clock.now += 10 * 10**9  # each burst takes its 10 s
        if outcome == "hang":
            clock.now += int(wakeup.CYCLICTEST_HANG_SECONDS * 1e9)
            raise wakeup.CyclictestHung("no EOF by the deadline")
        if outcome == "exit":
            raise StopIteration  # ends the test's loop
        counts, sum_ns = wakeup.fold_cyclictest(OK_JSON, h.bounds_ns)
        h.add(counts, sum_ns)

    def wait(seconds: float) -> None:
        waits.append(seconds)
        clock.now += int(seconds * 1e9)

    h = LatencyHistogram(BOUNDS)
    with pytest.raises(StopIteration):
        wakeup._cyclictest_loop(
            "cyclictest", config(), "other", h, Reporter(out), clock=clock, wait=wait, burst=burst
        )
    sent = messages(out)
    missed = [m for m in sent if m["t"] == "missed"]
    # The hung burst: its deadlines from 10 ms to 20 s (exclusive); then the 1 s backoff,
    # counted when the next burst starts.
    assert [m["n"] for m in missed] == [1999, 100]
    assert all(m["reason"] == "engine_failed" for m in missed)
    assert waits == [1.0]
    hists = [m for m in sent if m["t"] == "hist"]
    # Every missed wake-up is bad against a 50 µs SLO: above the threshold's bucket.
    threshold = BOUNDS.index(50e-6)
    for hist, m in zip(hists[:2], missed, strict=True):
        counts = hist["counts"]
        assert isinstance(counts, list) and sum(counts) == m["n"]
        assert sum(counts[: threshold + 1]) == 0
    assert sum(hists[2]["counts"]) == 1000  # the good burst, as measured
    assert any("cyclictest burst failed" in str(m.get("msg")) for m in sent)


def test_an_explicit_engine_gives_up_after_repeated_failures_with_every_gap_counted() -> None:
    clock, out = Clock(), io.BytesIO()

    def burst(binary: str, cfg: wakeup.Config, policy: str, h: LatencyHistogram) -> None:
        clock.now += 10**9
        raise wakeup.CyclictestOutputError("cyclictest exited -9: ")

    def wait(seconds: float) -> None:
        clock.now += int(seconds * 1e9)

    h = LatencyHistogram(BOUNDS)
    assert wakeup._cyclictest_loop(
        "cyclictest",
        config("cyclictest"),
        "other",
        h,
        Reporter(out),
        clock=clock,
        wait=wait,
        burst=burst,
    )
    missed = sum(int(str(m["n"])) for m in messages(out) if m["t"] == "missed")
    # 3 bursts of 1 s and backoffs of 1 s and 2 s: every deadline from 10 ms to 6 s
    # (exclusive), none lost or counted twice.
    assert missed == 599


@pytest.fixture
def fake_cyclictest(tmp_path: Path):  # type: ignore[no-untyped-def]
    def make(body: str) -> str:
        script = tmp_path / "cyclictest"
        script.write_text("#!/bin/sh\n" + body + "\n")
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
        return str(script)

    return make


def test_a_hung_cyclictest_is_killed_at_its_deadline(fake_cyclictest, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pidfile = tmp_path / "pid"
    binary = fake_cyclictest(f"echo $$ > {pidfile}; exec sleep 600")
    cfg = wakeup.Config("cyclictest", 100_000_000, "other", BOUNDS, burst_seconds=0.5)
    with pytest.raises(wakeup.CyclictestHung, match="killed"):
        wakeup.run_cyclictest_burst(binary, cfg, "other", LatencyHistogram(BOUNDS), 0.5)
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped


@pytest.mark.parametrize(
    ("end", "message"),
    [("exec sleep 600", "killed"), ("kill -9 $$", "exited -9")],
    ids=["hung", "killed-by-another"],
)
def test_a_killed_burst_leaves_no_shared_memory_behind(  # type: ignore[no-untyped-def]
    fake_cyclictest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, end: str, message: str
) -> None:
    """cyclictest unlinks /dev/shm/cyclictest<pid> at exit, and cannot when SIGKILLed
    (checked with rt-tests 2.40 here): the burst's end removes it."""
    monkeypatch.setattr(wakeup, "SHM_DIR", str(tmp_path))
    binary = fake_cyclictest(f"echo stats > {tmp_path}/cyclictest$$; {end}")
    cfg = wakeup.Config("cyclictest", 100_000_000, "other", BOUNDS, burst_seconds=0.5)
    with pytest.raises(wakeup.CyclictestOutputError, match=message):
        wakeup.run_cyclictest_burst(binary, cfg, "other", LatencyHistogram(BOUNDS), 0.5)
    assert not list(tmp_path.glob("cyclictest[0-9]*"))


def test_a_burst_outliving_its_probe_leaves_no_shared_memory_behind() -> None:
    """The daemon stops a probe with SIGKILL: cyclictest gets SIGTERM (its parent-death
    signal), writes its JSON to a pipe nobody reads and must still clean up (with
    SIGPIPE at its default it died of it and left its segment: checked, rt-tests 2.40)."""
    binary = shutil.which("cyclictest")
    if binary is None:
        missing("cyclictest is not installed (Debian package rt-tests)")
    burst = (
        "from nodeslo.probes import wakeup\n"
        "from nodeslo.probes.histogram import LatencyHistogram, latency_bounds\n"
        "bounds = latency_bounds((50e-6,))\n"
        f"cfg = wakeup.Config({binary!r}, 10_000_000, 'other', bounds, burst_seconds=30)\n"
        f"wakeup.run_cyclictest_burst({binary!r}, cfg, 'other', LatencyHistogram(bounds))\n"
    )
    probe = subprocess.Popen([sys.executable, "-c", burst])
    try:
        wait_for(lambda: _child_named(probe.pid, "cyclictest") is not None, timeout=20)
        child = _child_named(probe.pid, "cyclictest")
        assert child is not None
        segment = Path(wakeup.SHM_DIR) / f"cyclictest{child}"
        wait_for(segment.exists, timeout=10)
    finally:
        probe.kill()
        probe.wait()
    wait_for(lambda: not Path(f"/proc/{child}").exists(), timeout=10)
    assert not segment.exists()


def _child_named(parent: int, name: str) -> int | None:
    for child in children(parent):
        try:
            if status(child).get("Name") == name:
                return child
        except OSError:
            continue
    return None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("echo 'bad option' >&2; exit 1", "exited 1: bad option"),
        ("kill -9 $$", "exited -9"),
        (
            'for a; do case "$a" in --json=*) out="${a#--json=}";; esac; done; '
            "echo '{not json' > \"$out\"",
            "cyclictest JSON",
        ),
    ],
)
def test_a_failing_cyclictest_burst_is_an_error_not_data(
    fake_cyclictest, body: str, message: str
) -> None:  # type: ignore[no-untyped-def]
    binary = fake_cyclictest(body)
    h = LatencyHistogram(BOUNDS)
    cfg = wakeup.Config("cyclictest", 100_000_000, "other", BOUNDS, burst_seconds=0.5)
    with pytest.raises(wakeup.CyclictestOutputError, match=message):
        wakeup.run_cyclictest_burst(binary, cfg, "other", h)
    assert h.snapshot().count == 0


def wakeup_probe(clock: Clock) -> WakeupProbe:
    ctx = CollectorContext(
        options=serve_options("--no-probe.storage", "--probe.wakeup.interval=10ms")
    )
    probe = WakeupProbe(ctx, clock=clock)
    # Not started: the tests feed the messages a process would send.
    probe.settings = wakeup_settings(ctx.profile(), ctx.options)
    probe._bounds = BOUNDS
    return probe


def series(probe: WakeupProbe) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in probe.collect():
        for s in family.samples:
            key = s.name + "".join(f",{k}={v}" for k, v in sorted(s.labels.items()) if k != "le")
            if "le" not in s.labels:
                out[key] = s.value
    return out


def test_the_daemon_counts_a_down_probe_process_as_missed_wakeups_until_the_next_hello() -> None:
    clock = Clock()
    probe = wakeup_probe(clock)
    probe._on_message(
        {"t": "hello", "engine": "cyclictest", "policy": "other", "requested": "auto"}
    )
    clock.now += 10**9
    probe._on_message({"t": "beat"})
    clock.now += 5 * 10**8
    probe._on_exit("killed by signal 9")
    clock.now += 2 * 10**9  # 2 s later a scrape: the gap so far is counted, ongoing
    got = series(probe)
    count = "nodeslo_probe_wakeup_latency_seconds_count,engine=cyclictest,policy=other"
    down = "nodeslo_probe_wakeup_missed_total,reason=probe_down"
    # The deadlines after the last report, 10 ms apart, up to the scrape (exclusive).
    assert got[down] == 249
    assert got[count] == 249
    clock.now += 10**9
    probe._on_message({"t": "hello", "engine": "python", "policy": "other", "requested": "auto"})
    clock.now += 10 * 10**9  # the new process measures: nothing more is missed
    got = series(probe)
    assert got[down] == 349 and got[count] == 349
    assert got["nodeslo_probe_wakeup_missed_total,reason=engine_failed"] == 0
    probe._on_message(
        {"t": "missed", "labels": ["cyclictest", "other"], "n": 7, "reason": "engine_failed"}
    )
    assert series(probe)["nodeslo_probe_wakeup_missed_total,reason=engine_failed"] == 7


def test_a_probe_that_never_said_hello_burns_the_engine_it_would_run() -> None:
    clock = Clock()
    probe = wakeup_probe(clock)
    probe._covered_ns = clock.now
    probe._on_exit("cannot start python: No such file")
    clock.now += 10**9
    got = series(probe)
    engine = wakeup.choose_engine("auto")
    assert got[f"nodeslo_probe_wakeup_latency_seconds_count,engine={engine},policy=other"] == 99


def test_a_killed_probe_process_burns_the_wakeup_slo_through_the_real_supervisor() -> None:
    collector = wakeup_collector("--probe.wakeup.engine=python", "--probe.wakeup.interval=1ms")
    collector.start()
    try:
        process = collector.probes["wakeup"]._process
        assert process is not None
        down = ("nodeslo_probe_wakeup_missed_total", (("reason", "probe_down"),))
        wait_for(lambda: process.pid is not None and scrape(collector).get(down) == 0)
        time.sleep(1.2)  # a first report, so the gap starts at a covered time
        first = process.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: process.restarts == 1 and process.pid not in (None, first))
        wait_for(lambda: scrape(collector)[down] > 0)
        assert scrape(collector)[down] >= 500  # the backoff alone is >= 1 s of 1 ms ticks
    finally:
        collector.close()
