"""The daemon as a user runs it: endpoints, signals, systemd notify, bad start-up input."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from nodeslo.collectors import COLLECTORS
from support import daemon as d
from support.exposition import samples, value


def test_endpoints(seed_tree: Path) -> None:
    with d.running(seed_tree) as daemon:
        status, body = daemon.get("/metrics")
        assert status == 200
        assert value(body, "nodeslo_collector_success", collector="diskstats") == 1
        assert value(body, "nodeslo_collector_success", collector="scheduler") == 1
        status, page = daemon.get("/")
        assert status == 200
        assert "/metrics" in page and "diskstats" in page and "process-management" in page
        assert daemon.get("/-/healthy")[0] == 200
        assert daemon.get("/-/ready")[0] == 200
        assert daemon.get("/nope")[0] == 404


def test_post_is_not_allowed(seed_tree: Path) -> None:
    import urllib.error
    import urllib.request

    with d.running(seed_tree) as daemon:
        request = urllib.request.Request(daemon.url + "/metrics", data=b"x", method="POST")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=10)
        assert info.value.code == 405


def test_gzip_when_asked(seed_tree: Path) -> None:
    import gzip
    import urllib.request

    with d.running(seed_tree) as daemon:
        request = urllib.request.Request(
            daemon.url + "/metrics", headers={"Accept-Encoding": "gzip"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.headers["Content-Encoding"] == "gzip"
            text = gzip.decompress(response.read()).decode()
    assert "nodeslo_disk_reads_completed_total" in text


def test_openmetrics_when_asked(seed_tree: Path) -> None:
    with d.running(seed_tree) as daemon:
        status, body = daemon.get(
            "/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"}
        )
    assert status == 200
    assert body.rstrip().endswith("# EOF")


def test_sigterm_exits_cleanly_within_two_seconds(seed_tree: Path) -> None:
    with d.running(seed_tree) as daemon:
        daemon.scrape()
        start = time.monotonic()
        code = daemon.stop(signal.SIGTERM, timeout=5)
        elapsed = time.monotonic() - start
    assert code == 0
    assert elapsed < 2.0, elapsed


def _to_another_thread(daemon: d.Daemon, sig: int) -> int:
    """kill() with a thread's id: the kernel delivers the signal to that thread, as it
    does a process-directed one when the main thread has a signal pending already or
    is stopped (SIGTERM right after SIGCONT). Python runs the handler on the main
    thread only when that thread next runs bytecode. The thread's id."""
    pid = daemon.proc.pid
    for tid in sorted(int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid):
        with contextlib.suppress(ProcessLookupError):  # a thread that just ended
            os.kill(tid, sig)
            return tid
    raise AssertionError(f"the daemon (pid {pid}) has no thread besides the main one")


def test_sigterm_taken_by_another_thread_stops_the_daemon(seed_tree: Path) -> None:
    """Before nodeslo.inbox, the main thread slept in a queue's lock through it and the
    daemon never stopped (systemd SIGKILLs it 90 s later)."""
    with d.running(seed_tree) as daemon:
        daemon.scrape()
        _to_another_thread(daemon, signal.SIGTERM)
        assert daemon.proc.wait(timeout=30) == 0
        daemon.wait_log("shutting down")


def test_sighup_taken_by_another_thread_reloads(seed_tree: Path, tmp_path: Path) -> None:
    profile = tmp_path / "site.yaml"
    profile.write_text("extends: process-management\nprofile: site-a\n")
    with d.running(seed_tree, f"--profile={profile}") as daemon:
        profile.write_text("extends: process-management\nprofile: site-b\n")
        _to_another_thread(daemon, signal.SIGHUP)
        daemon.wait_log("profile reloaded", timeout=30)
        assert value(daemon.scrape(), "nodeslo_profile_info", profile="site-b") == 1


def test_sighup_reloads_a_good_profile_and_keeps_the_old_on_a_bad_one(
    seed_tree: Path, tmp_path: Path
) -> None:
    profile = tmp_path / "site.yaml"
    profile.write_text("extends: process-management\nprofile: site-a\n")
    with d.running(seed_tree, f"--profile={profile}") as daemon:
        before = daemon.scrape()
        assert value(before, "nodeslo_profile_info", profile="site-a") == 1

        profile.write_text("extends: process-management\nprofile: site-b\n")
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_log("profile reloaded")
        after = daemon.scrape()
        assert value(after, "nodeslo_profile_info", profile="site-b") == 1
        assert value(after, "nodeslo_profile_last_reload_successful") == 1

        profile.write_text("extends: process-management\nprofile: site-c\nslos: [\n")
        daemon.proc.send_signal(signal.SIGHUP)
        line = daemon.wait_log("profile reload failed")
        assert str(profile) in line
        kept = daemon.scrape()
        assert value(kept, "nodeslo_profile_info", profile="site-b") == 1
        assert value(kept, "nodeslo_profile_last_reload_successful") == 0


def test_sd_notify_ready_watchdog_stopping(seed_tree: Path, tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(10)
    messages: list[str] = []

    def receive() -> None:
        while True:
            try:
                messages.append(sock.recv(4096).decode())
            except OSError:
                return

    thread = threading.Thread(target=receive, daemon=True)
    thread.start()
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"}
    with d.running(seed_tree, env=env) as daemon:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and messages.count("WATCHDOG=1") < 2:
            time.sleep(0.05)
        daemon.stop()
    time.sleep(0.2)
    sock.close()
    assert messages[0] == "READY=1"
    assert messages.count("WATCHDOG=1") >= 2
    assert messages[-1] == "STOPPING=1"


def test_port_in_use_is_one_clear_line_and_exit_1(seed_tree: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = d.run_cli(
            "serve",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--path.procfs={seed_tree}/proc",
            f"--path.sysfs={seed_tree}/sys",
        )
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert f"cannot listen on 127.0.0.1:{port}: address already in use" in lines[0]


@pytest.mark.parametrize(
    ("flags", "complaint"),
    [
        (["--web.listen-address=nohost"], "not a listen address"),
        (["--web.listen-address=:99999"], "not a listen address"),
        (["--web.telemetry-path=metrics"], "absolute path"),
        (["--log.level=loud"], "invalid choice"),
        (["--collector.diskstats.device-exclude=("], "invalid regular expression"),
        (["--no-such-flag"], "unrecognized arguments"),
        (["--collector.nosuch"], "unrecognized arguments"),
    ],
)
def test_bad_flags_print_usage_and_exit_2(flags: list[str], complaint: str) -> None:
    result = d.run_cli("serve", *flags)
    assert result.returncode == 2
    assert "usage:" in result.stderr
    assert complaint in result.stderr


def test_bad_profile_at_start_names_file_key_line_and_exits_2(tmp_path: Path) -> None:
    profile = tmp_path / "bad.yaml"
    profile.write_text("profile: x\nslos:\n  fast:\n    objective: 120%\n    sli: {}\n")
    result = d.run_cli("serve", f"--profile={profile}", "--web.listen-address=127.0.0.1:0")
    assert result.returncode == 2
    assert f"{profile}:4: slos.fast.objective" in result.stderr


def test_json_logs(seed_tree: Path) -> None:
    with d.running(seed_tree, "--log.format=json") as daemon:
        pass
    # The listening line was consumed to find the port; every other line is JSON too.
    for line in daemon.log:
        if line.startswith("{"):
            record = json.loads(line)
            assert {"ts", "level", "msg"} <= set(record)


def test_disabling_a_collector(seed_tree: Path) -> None:
    with d.running(seed_tree, "--no-collector.diskstats") as daemon:
        text = daemon.scrape()
    collectors = {
        dict(ls)["collector"] for n, ls in samples(text) if n == "nodeslo_collector_success"
    }
    defaults = {name for name, cls in COLLECTORS.items() if cls.default_enabled}
    assert collectors == defaults - {"diskstats"}
    assert "scheduler" in collectors
    assert not any(n.startswith("nodeslo_disk_") for n, _ in samples(text))


def test_disable_defaults_keeps_only_explicit(seed_tree: Path) -> None:
    with d.running(seed_tree, "--collector.disable-defaults", "--collector.scheduler") as daemon:
        text = daemon.scrape()
    collectors = {
        dict(ls)["collector"] for n, ls in samples(text) if n == "nodeslo_collector_success"
    }
    assert collectors == {"scheduler"}
