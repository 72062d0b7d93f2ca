"""Probe processes under the daemon: restart with backoff, watchdog, settings, the real daemon."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.core import Metric

from nodeslo.cli import build_parser
from nodeslo.collectors.base import CollectorContext
from nodeslo.probes.collector import ProbesCollector, probe_collectors
from nodeslo.probes.settings import storage_settings, wakeup_settings
from nodeslo.probes.supervisor import Backoff, ProbeProcess
from nodeslo.profile import load_profile
from support import daemon as d
from support.exposition import samples, value


def scrape(collector: ProbesCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    families: list[Metric] = list(collector.collect())
    for family in families:
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def up(collector: ProbesCollector, probe: str = "wakeup") -> float:
    return scrape(collector)[("nodeslo_probe_up", (("probe", probe),))]


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def serve_options(*flags: str) -> argparse.Namespace:
    return build_parser().parse_args(["serve", *flags])


def wakeup_collector(*flags: str, backoff: Backoff | None = None) -> ProbesCollector:
    ctx = CollectorContext(options=serve_options("--no-probe.storage", *flags))
    return ProbesCollector(ctx, backoff=backoff)


# --- flags over profile -----------------------------------------------------------------


def test_without_flags_the_profile_decides() -> None:
    profile = load_profile()
    s = storage_settings(profile, serve_options())
    assert s.enabled and s.targets == ("/var/lib/nodeslo",) and s.rate == 10
    assert s.thresholds == (5e-05, 0.0001)
    w = wakeup_settings(profile, serve_options())
    assert (w.enabled, w.engine, w.interval_seconds, w.policy) == (True, "auto", 0.01, "other")
    assert w.thresholds == (5e-05,)


def test_each_operation_is_overdue_past_the_largest_slo_threshold_that_judges_it(
    tmp_path: Path,
) -> None:
    shipped = storage_settings(load_profile(), serve_options())
    assert shipped.overdue == (
        ("/var/lib/nodeslo", "write_sync", 1e-4),
        ("/var/lib/nodeslo", "read", 5e-5),
    )
    site = tmp_path / "site.yaml"
    site.write_text(
        "extends: process-management\nprofile: site\n"
        "slos:\n"
        "  storage-read-latency: null\n"
        "  state-write-lax:\n"
        "    description: x\n    objective: 99.9%\n    probe: storage\n"
        "    sli: {latency: {histogram: nodeslo_probe_io_latency_seconds,"
        " matchers: {op: write_sync}, threshold: 1ms, by: [target]}}\n"
        "  archive-only:\n"
        "    description: x\n    objective: 99%\n    probe: storage\n"
        "    sli: {latency: {histogram: nodeslo_probe_io_latency_seconds,"
        " matchers: {target: /srv/archive}, threshold: 5ms, by: [target]}}\n"
        "probes:\n  storage: {targets: [/var/lib/nodeslo, /srv/archive]}\n"
    )
    settings = storage_settings(load_profile(str(site)), serve_options())
    assert settings.overdue == (
        ("/var/lib/nodeslo", "write_sync", 1e-3),  # the larger of 100 µs and 1 ms
        ("/srv/archive", "write_sync", 5e-3),
        ("/srv/archive", "read", 5e-3),
    )  # no SLO judges /var/lib/nodeslo's reads: the probe's default applies


def test_flags_override_the_profile_key_by_key(tmp_path: Path) -> None:
    profile = load_profile()
    options = serve_options(
        f"--probe.storage.target={tmp_path}/a",
        f"--probe.storage.target={tmp_path}/b",
        "--probe.storage.rate=2.5",
        "--probe.wakeup.engine=python",
        "--probe.wakeup.interval=1ms",
        "--probe.wakeup.policy=fifo",
    )
    s = storage_settings(profile, options)
    assert s.targets == (f"{tmp_path}/a", f"{tmp_path}/b") and s.rate == 2.5
    assert s.file_size == profile.probes.storage.file_size_bytes  # not a flag: profile
    w = wakeup_settings(profile, options)
    assert (w.engine, w.interval_seconds, w.policy) == ("python", 0.001, "fifo")


def test_switches_beat_the_profile_both_ways(tmp_path: Path) -> None:
    off = tmp_path / "off.yaml"
    off.write_text(
        "extends: process-management\nprofile: probes-off\n"
        "slos:\n  storage-write-latency: null\n  storage-read-latency: null\n"
        "  scheduler-wakeup-latency: null\n"
        "probes:\n  storage: {targets: null}\n  wakeup: {enabled: false}\n"
    )
    profile = load_profile(str(off))
    assert not storage_settings(profile, serve_options()).enabled  # no target: off
    assert not wakeup_settings(profile, serve_options()).enabled
    on = serve_options("--probe.wakeup", f"--probe.storage.target={tmp_path}")
    assert wakeup_settings(profile, on).enabled and storage_settings(profile, on).enabled
    shipped = load_profile()
    assert not storage_settings(shipped, serve_options("--no-probe.storage")).enabled
    assert not wakeup_settings(shipped, serve_options("--no-probe.wakeup")).enabled
    (only,) = probe_collectors(CollectorContext(options=serve_options("--no-probe.storage")))
    assert isinstance(only, ProbesCollector) and list(only.probes) == ["wakeup"]
    both_off = serve_options("--no-probe.storage", "--no-probe.wakeup")
    assert probe_collectors(CollectorContext(options=both_off)) == []


@pytest.mark.parametrize(
    "flag",
    [
        "--probe.storage.rate=0",
        "--probe.storage.rate=5000",
        "--probe.wakeup.interval=10us",
        "--probe.wakeup.interval=5s",
        "--probe.wakeup.engine=perl",
        "--probe.wakeup.policy=rr",
    ],
)
def test_bad_probe_flags_exit_2_before_anything_starts(flag: str) -> None:
    result = d.run_cli("serve", flag, timeout=60)
    assert result.returncode == 2
    assert flag.split("=", maxsplit=1)[0] in result.stderr


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("storage: {targets: [relative/dir]}", "must be an absolute path"),
        ("storage: {rate: 5000}", "at most 1000"),
        ("storage: {file_size: 1000}", "multiple of 4KiB"),
        ("wakeup: {interval: 5s}", "between 100us and 1s"),
        ("wakeup: {engine: perl}", "must be one of"),
    ],
)
def test_bad_probe_profile_keys_name_the_key(tmp_path: Path, section: str, message: str) -> None:
    from nodeslo.profile import ProfileError

    path = tmp_path / "p.yaml"
    path.write_text(f"extends: process-management\nprofile: p\nprobes:\n  {section}\n")
    with pytest.raises(ProfileError, match=message) as info:
        load_profile(str(path))
    assert "probes." in str(info.value) and "p.yaml:4:" in str(info.value)


# --- supervision ----------------------------------------------------------------------


def test_a_crashed_probe_process_is_restarted_with_backoff_and_visible() -> None:
    collector = wakeup_collector(
        "--probe.wakeup.engine=python",
        "--probe.wakeup.interval=1ms",
        backoff=Backoff(initial=1.0, maximum=2.0),
    )
    collector.start()
    try:
        process = collector.probes["wakeup"]._process
        assert process is not None
        key = (
            "nodeslo_probe_wakeup_latency_seconds_count",
            (("engine", "python"), ("policy", "other")),
        )
        wait_for(lambda: up(collector) == 1 and scrape(collector).get(key, 0) > 0)
        counted = scrape(collector)[key]
        first = process.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: up(collector) == 0 and process.restarts == 1, timeout=5)
        got = scrape(collector)
        assert got[("nodeslo_probe_restarts_total", (("probe", "wakeup"),))] == 1
        assert "killed by signal 9" in process.last_exit
        killed_at = time.monotonic()
        wait_for(lambda: up(collector) == 1)
        assert time.monotonic() - killed_at >= 0.9  # waited out the backoff
        assert process.pid not in (None, first)
        # the histogram kept its counts across the restart
        assert scrape(collector)[key] >= counted
    finally:
        collector.close()
    assert process.pid is None


def test_a_silent_probe_process_is_killed_and_restarted(tmp_path: Path) -> None:
    # A child that never reports (hung, stopped): the watchdog kills and restarts it.
    script = tmp_path / "silent.py"
    script.write_text("import time\ntime.sleep(60)\n")
    messages: list[dict[str, object]] = []
    process = ProbeProcess(
        "silent",
        [sys.executable, str(script)],
        messages.append,
        report_timeout=0.5,
        backoff=Backoff(initial=0.1, maximum=0.1),
    )
    process.start()
    try:
        wait_for(lambda: process.restarts >= 2, timeout=10)
        assert "no report" in process.last_exit
        assert not process.reporting()
    finally:
        process.stop()
    assert process.pid is None


def test_the_probe_hears_of_each_ended_process_but_not_of_a_replacement(
    tmp_path: Path,
) -> None:
    script = tmp_path / "beat.py"
    script.write_text(
        'import sys, time\nwhile True:\n    sys.stdout.write(\'{"t": "beat"}\\n\')\n'
        "    sys.stdout.flush(); time.sleep(0.05)\n"
    )
    ended: list[str] = []
    process = ProbeProcess(
        "beat",
        [sys.executable, str(script)],
        lambda m: None,
        report_timeout=5,
        backoff=Backoff(initial=0.1, maximum=0.1),
        on_exit=ended.append,
    )
    process.start()
    try:
        wait_for(process.reporting)
        process.replace([sys.executable, str(script)])
        wait_for(lambda: process.reporting() and process.pid is not None)
        time.sleep(0.3)
        assert ended == []  # a replacement is no gap
        pid = process.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: len(ended) == 1)
        assert ended == ["killed by signal 9"]
    finally:
        process.stop()
    assert len(ended) == 1  # stopping is no gap either


def test_a_slow_start_gets_the_start_timeout_then_the_report_timeout(tmp_path: Path) -> None:
    script = tmp_path / "slow.py"
    script.write_text(
        "import sys, time\ntime.sleep(1.2)\n"  # an interpreter slow to start
        'sys.stdout.write(\'{"t": "beat"}\\n\'); sys.stdout.flush()\ntime.sleep(60)\n'
    )
    process = ProbeProcess(
        "slow",
        [sys.executable, str(script)],
        lambda m: None,
        report_timeout=0.5,
        start_timeout=3.0,
        backoff=Backoff(initial=30, maximum=30),
    )
    process.start()
    try:
        wait_for(process.reporting, timeout=5)  # not killed at 0.5 s
        assert process.restarts == 0
        wait_for(lambda: process.restarts == 1, timeout=5)  # then silent: 0.5 s applies
        assert process.last_exit == "no report for 0.5s"
    finally:
        process.stop()


def test_garbage_on_the_pipe_is_logged_not_fatal(tmp_path: Path) -> None:
    script = tmp_path / "chatty.py"
    script.write_text(
        "import sys, time\n"
        'sys.stdout.write(\'not json\\n[1,2]\\n{"t": "beat"}\\n\'); sys.stdout.flush()\n'
        "time.sleep(60)\n"
    )
    messages: list[dict[str, object]] = []
    process = ProbeProcess(
        "chatty", [sys.executable, str(script)], messages.append, report_timeout=30
    )
    process.start()
    try:
        wait_for(process.reporting)
        assert messages == [{"t": "beat"}]
        assert process.restarts == 0
    finally:
        process.stop()


def test_stop_is_quick_and_leaves_no_process_behind() -> None:
    collector = wakeup_collector("--probe.wakeup.engine=auto")
    collector.start()
    process = collector.probes["wakeup"]._process
    assert process is not None
    wait_for(lambda: up(collector) == 1)
    pid = process.pid
    start = time.monotonic()
    collector.close()
    assert time.monotonic() - start < 1.0
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    # and no cyclictest of ours survives its parent
    time.sleep(0.2)
    survivors = subprocess.run(
        ["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False
    )
    assert survivors.stdout.strip() == ""


def test_a_probe_process_ignores_group_signals_but_dies_with_the_daemon(tmp_path: Path) -> None:
    # systemd and `timeout` SIGTERM the whole group; only the daemon stops a probe.
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time, json\n"
            "from nodeslo.probes import wakeup\n"
            "c = wakeup.Config('python', 1_000_000, 'other', (1e-06, 2e-06))\n"
            "p = subprocess.Popen([sys.executable, '-m', 'nodeslo.probes.wakeup', c.to_json()],"
            " stdout=subprocess.PIPE)\n"
            "p.stdout.readline(); print(p.pid, flush=True); time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        os.kill(child, signal.SIGTERM)
        time.sleep(0.3)
        os.kill(child, 0)  # still alive
        parent.kill()
        parent.wait()
        wait_for(lambda: not Path(f"/proc/{child}").exists() or _zombie(child), timeout=5)
    finally:
        parent.kill()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except OSError:
        return True


def test_a_stopped_storage_probe_is_replaced_and_its_gap_counted_bad(tmp_path: Path) -> None:
    """SIGSTOP: silent, killed at the report timeout, restarted; meanwhile every intended
    operation is a missed, bad event and the stall grows; then it measures again."""
    ctx = CollectorContext(
        options=serve_options(
            "--no-probe.wakeup", f"--probe.storage.target={tmp_path}", "--probe.storage.rate=50"
        )
    )
    collector = ProbesCollector(ctx, backoff=Backoff(initial=1.0, maximum=1.0))
    probe = collector.probes["storage"]
    probe.report_timeout = 2.0
    collector.start()
    target = str(tmp_path)

    def got(name: str, **labels: str) -> float:
        want = tuple(sorted({"target": target, **labels}.items()))
        return scrape(collector).get((name, want), 0.0)

    try:
        wait_for(lambda: up(collector, "storage") == 1)
        assert probe._process is not None
        pid = probe._process.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        wait_for(lambda: probe.restarts == 1, timeout=10)
        stalled = got("nodeslo_probe_io_stalled_seconds", op="read")
        assert stalled >= 2.0  # since the last report before the stop
        assert up(collector, "storage") == 0
        wait_for(lambda: up(collector, "storage") == 1, timeout=10)
        missed = got("nodeslo_probe_io_missed_total", op="read", reason="probe_down")
        # From the last report to the new schedule: >= the 2 s timeout + 1 s backoff at 50/s
        assert 140 <= missed <= 260, missed
        assert got("nodeslo_probe_io_stalled_seconds", op="read") < 1.5
        count = got("nodeslo_probe_io_latency_seconds_count", op="read")
        good = got("nodeslo_probe_io_latency_seconds_bucket", op="read", le="5e-05")
        assert count - good >= missed  # every missed one is a bad event of the SLI
    finally:
        collector.close()
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# --- the real daemon --------------------------------------------------------------------


def test_serve_exports_real_probe_histograms(tmp_path: Path, promtool: str) -> None:
    target = tmp_path / "state"
    flags = (
        f"--probe.storage.target={target}",
        "--probe.storage.rate=50",
        "--probe.wakeup.engine=python",
        "--probe.wakeup.interval=1ms",
        "--collector.disable-defaults",
    )
    with d.running(None, *flags) as daemon:
        wanted = (
            ("nodeslo_probe_io_latency_seconds_count", ("op", "write_sync")),
            ("nodeslo_probe_io_latency_seconds_count", ("op", "read")),
            ("nodeslo_probe_wakeup_latency_seconds_count", ("engine", "python")),
        )

        def ready() -> bool:
            got = samples(daemon.scrape())
            counts = {(n, kv): v for (n, labels), v in got.items() for kv in labels}
            return all(counts.get(w, 0) > 0 for w in wanted)

        wait_for(ready, timeout=30)
        text = daemon.scrape()
        start = time.monotonic()
        code = daemon.stop()
        stop_seconds = time.monotonic() - start
    assert code == 0 and stop_seconds < 2.0
    assert value(text, "nodeslo_probe_up", probe="storage") == 1
    assert value(text, "nodeslo_probe_up", probe="wakeup") == 1
    assert value(text, "nodeslo_collector_success", collector="probes") == 1
    assert value(text, "nodeslo_probe_io_errors_total", op="write_sync", target=str(target)) == 0
    assert value(text, "nodeslo_probe_storage_target_info", target=str(target), kind="file") == 1
    for le in ("5e-05", "0.0001", "1e-06", "134.217728", "+Inf"):
        assert f'le="{le}"' in text
    assert 'le="2.5e-05"' not in text  # not a threshold of the shipped profile
    # every sample counted once, in cumulative buckets
    count = value(text, "nodeslo_probe_io_latency_seconds_count", op="read")
    assert value(text, "nodeslo_probe_io_latency_seconds_bucket", op="read", le="+Inf") == count
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert sorted(os.listdir(target)) == ["nodeslo-probe"]


def test_sighup_reapplies_probe_targets_from_the_profile(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    profile = tmp_path / "site.yaml"

    def write(target: Path) -> None:
        profile.write_text(
            "extends: process-management\nprofile: site\n"
            "slos:\n  scheduler-wakeup-latency: null\n"
            f"probes:\n  storage: {{targets: [{target}], rate: 50}}\n  wakeup: {{enabled: false}}\n"
        )

    write(first)
    with d.running(None, f"--profile={profile}", "--collector.disable-defaults") as daemon:
        wait_for(lambda: f'target="{first}"' in daemon.scrape())
        write(second)
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_log("profile reloaded")

        def moved() -> bool:
            text = daemon.scrape()
            return f'target="{second}"' in text and f'target="{first}"' not in text

        wait_for(moved)
        text = daemon.scrape()
        assert "nodeslo_probe_wakeup_latency_seconds" not in text
        assert value(text, "nodeslo_probe_restarts_total", probe="storage") == 0
