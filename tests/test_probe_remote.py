"""The wake-up probe outside the daemon: `serve --probe.wakeup.socket` and `probe wakeup
--connect`. What each failure gets: a probe process that dies or hangs is a counted
restart and probe_up 0 until the relay reconnects; a reload sends the new settings
without counting a restart; a stranger is refused; a socket that cannot be created
leaves the daemon serving with the probe down; the engine in use is a metric, and only
while the probe reports."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from nodeslo.cli import build_parser
from nodeslo.collectors.base import CollectorContext
from nodeslo.probes import relay as relay_mod
from nodeslo.probes.collector import ProbesCollector
from nodeslo.probes.protocol import LineBuffer, LineTooLong, Message
from nodeslo.probes.relay import ConfigError, Relay, read_config
from nodeslo.probes.remote import RemoteProbe
from nodeslo.sdnotify import Notifier


def wait_for(condition: Callable[[], object], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def scrape(collector: ProbesCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in collector.collect()
        for s in family.samples
    }


class RelayThread:
    """A Relay in a thread, as `nodeslo probe wakeup --connect` runs it."""

    def __init__(self, path: Path, command: Callable[[str], list[str]] | None = None) -> None:
        kwargs = {"command": command} if command else {}
        self.relay = Relay(str(path), notifier=Notifier({}), **kwargs)  # type: ignore[arg-type]
        self.relay.tick = 0.2
        self.thread = threading.Thread(target=self.relay.run, daemon=True)

    def __enter__(self) -> Relay:
        self.thread.start()
        return self.relay

    def __exit__(self, *exc: object) -> None:
        self.relay.stop()
        self.thread.join(10)
        assert not self.thread.is_alive()


def fake_probe(script: str) -> Callable[[str], list[str]]:
    """A probe process that runs `script` with the configuration in `config`."""
    return lambda config: [sys.executable, "-c", f"config = {config!r}\n{script}"]


BEATING = """
import json, sys, time
hello = {"t": "hello", "engine": "python", "policy": "other", "requested": "auto"}
print(json.dumps(hello), flush=True)
while True:
    print(json.dumps({"t": "beat", "config": config}), flush=True)
    time.sleep(0.05)
"""


def remote(path: Path, messages: list[Message], **kwargs: object) -> RemoteProbe:
    probe = RemoteProbe(
        "wakeup",
        str(path),
        '{"n": 1}',
        messages.append,
        report_timeout=1.0,
        **kwargs,  # type: ignore[arg-type]
    )
    probe.start()
    return probe


def test_reports_flow_and_a_reload_sends_new_settings_without_a_restart(tmp_path: Path) -> None:
    messages: list[Message] = []
    probe = remote(tmp_path / "w.sock", messages)
    try:
        assert oct(os.stat(tmp_path / "w.sock").st_mode & 0o777) == "0o660"
        with RelayThread(tmp_path / "w.sock", fake_probe(BEATING)) as relay:
            wait_for(probe.reporting)
            assert probe.pid == os.getpid()  # the relay, a thread of this process here
            assert messages[0]["t"] == "hello"
            probe.replace('{"n": 2}')
            wait_for(lambda: messages[-1].get("config") == '{"n": 2}')
            assert probe.restarts == 0
            assert relay.sessions == 2
    finally:
        probe.stop()
    assert not (tmp_path / "w.sock").exists()


def test_a_dying_probe_is_a_restart_and_the_relay_reconnects(tmp_path: Path) -> None:
    messages: list[Message] = []
    exits: list[str] = []
    probe = remote(tmp_path / "w.sock", messages, on_exit=exits.append)
    dies = BEATING.replace("while True:", "for _ in range(5):")
    try:
        with RelayThread(tmp_path / "w.sock", fake_probe(dies)):
            wait_for(lambda: probe.restarts >= 2)
            assert probe.last_exit == "disconnected"
            # Each disconnect is told to the owner, which counts the gap as missed.
            wait_for(lambda: len(exits) >= 2)
            assert set(exits) == {"disconnected"}
    finally:
        probe.stop()


def test_a_hung_probe_is_cut_off_killed_and_replaced(tmp_path: Path) -> None:
    messages: list[Message] = []
    probe = remote(tmp_path / "w.sock", messages)
    pids: list[int] = []

    def command(config: str) -> list[str]:
        return fake_probe(BEATING.replace('"config": config', '"pid": __import__("os").getpid()'))(
            config
        )

    try:
        with RelayThread(tmp_path / "w.sock", command):
            wait_for(lambda: any("pid" in m for m in messages))
            first = next(m["pid"] for m in messages if "pid" in m)
            pids.append(first)
            os.kill(first, signal.SIGSTOP)
            wait_for(lambda: probe.restarts == 1, timeout=10)
            assert probe.last_exit == "no report for 1s"
            # The relay killed the stopped process and started another.
            wait_for(lambda: messages[-1].get("pid", first) != first, timeout=10)
            wait_for(lambda: not os.path.exists(f"/proc/{first}"), timeout=10)
            assert probe.reporting()
    finally:
        probe.stop()


def test_a_stranger_is_refused_and_not_counted(tmp_path: Path) -> None:
    messages: list[Message] = []
    probe = remote(tmp_path / "w.sock", messages, allowed_uids=frozenset({12345}))
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(str(tmp_path / "w.sock"))
            conn.settimeout(5)
            assert conn.recv(100) == b""  # closed without the configuration
        time.sleep(0.2)
        assert probe.restarts == 0 and not probe.reporting()
    finally:
        probe.stop()


def test_the_relay_copes_with_a_daemon_that_sends_nothing(tmp_path: Path) -> None:
    server, client = socket.socketpair()
    with server, client:
        with pytest.raises(ConfigError, match="within"):
            read_config(client, timeout=0.2)
        server.sendall(b"x" * (relay_mod.MAX_CONFIG_BYTES + 10))
        with pytest.raises(ConfigError, match="too long"):
            read_config(client, timeout=1)
    server, client = socket.socketpair()
    with client:
        server.close()
        with pytest.raises(ConfigError, match="closed"):
            read_config(client, timeout=1)


def test_the_relay_waits_for_a_daemon_that_is_not_there_yet(tmp_path: Path) -> None:
    relay = Relay(str(tmp_path / "absent.sock"), notifier=Notifier({}))
    relay.tick = 0.05
    started = time.monotonic()
    assert relay._connect() is None
    assert relay._connect() is None
    assert relay._retry > relay_mod.RETRY_SECONDS  # backs off
    assert time.monotonic() - started < 1


def test_line_buffer_splits_and_bounds() -> None:
    lines = LineBuffer(limit=10)
    assert lines.feed(b"a\nb") == [b"a"]
    assert lines.feed(b"c\n\n") == [b"bc", b""]
    with pytest.raises(LineTooLong):
        lines.feed(b"x" * 11)


# --- the daemon's side, with the real probe process -------------------------------------


def wakeup_collector(*flags: str) -> ProbesCollector:
    options = build_parser().parse_args(["serve", "--no-probe.storage", *flags])
    return ProbesCollector(CollectorContext(options=options))


def test_serve_with_a_socket_measures_through_the_relay(tmp_path: Path) -> None:
    path = tmp_path / "wakeup.sock"
    collector = wakeup_collector(
        f"--probe.wakeup.socket={path}",
        "--probe.wakeup.engine=python",
        "--probe.wakeup.interval=1ms",
    )
    collector.start()
    try:
        up = ("nodeslo_probe_up", (("probe", "wakeup"),))
        assert scrape(collector)[up] == 0  # nobody connected yet: down, not absent
        engine = (
            "nodeslo_probe_wakeup_engine_info",
            (("engine", "python"), ("policy", "other"), ("requested", "python")),
        )
        with RelayThread(path):
            wait_for(lambda: scrape(collector).get(up) == 1)
            wait_for(lambda: engine in scrape(collector))
            count = (
                "nodeslo_probe_wakeup_latency_seconds_count",
                (("engine", "python"), ("policy", "other")),
            )
            wait_for(lambda: scrape(collector).get(count, 0) > 100)
        # The relay is gone: down, and no engine claimed any more.
        wait_for(lambda: scrape(collector)[up] == 0, timeout=40)
        assert engine not in scrape(collector)
    finally:
        collector.close()


def test_a_socket_that_cannot_be_made_leaves_the_daemon_serving(tmp_path: Path) -> None:
    collector = wakeup_collector(f"--probe.wakeup.socket={tmp_path}/missing/dir/w.sock")
    collector.start()
    try:
        samples = scrape(collector)
        assert samples[("nodeslo_probe_up", (("probe", "wakeup"),))] == 0
    finally:
        collector.close()
