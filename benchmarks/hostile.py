"""The figures of issue 19's hostile-input audit, measured on `nodeslo serve`.

    .venv/bin/python benchmarks/hostile.py [--only accept,sighup,bomb,flood,pipeline,watchdog]
    PYTHONPATH=OTHER_CHECKOUT/exporter .venv/bin/python benchmarks/hostile.py   # another version

The second form measures another version of the daemon (e.g. the commit before the
fixes, from `git archive`) with the same harness: that is the "before" column.

- accept:   RSS after 2,000 requests with distinct long `Accept` versions; their statuses.
- sighup:   RSS after 600 SIGHUP reloads of a small profile, then after one rejected
            reload of a 50 MB profile (and how long that reload took).
- bomb:     loading a 446-byte YAML alias bomb as a profile: time, peak RSS, outcome
            (in a child process, 120 s and 6 GiB at most).
- flood:    scrapes (a new connection each, as curl) lost while 100 new keep-alive
            connections per second each make one request and stay idle, for 20 s.
- pipeline: 503s and errors among 85 scrapes while 64 clients pipeline /metrics and
            never read their responses.
- watchdog: the longest gap between sd_notify WATCHDOG=1 pings (WatchdogSec=1s) while
            the daemon reloads the 50 MB profile, and how long SIGTERM then takes; the
            same for the slowest small profile (99 aliases expanding to 200,000
            values: seconds of loading before the validator refuses it).

Everything runs on loopback against a seed-spec fixture tree, bounded in time.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from _common import fixture_tree, machine, rss_bytes
from support import daemon as d  # on sys.path through _common

MIB = 2**20
SMALL = ("--collector.disable-defaults", "--collector.scheduler")
BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)


def _get(port: int, path: str = "/metrics", headers: dict[str, str] | None = None) -> int:
    """One request on a new connection; the status, or 0 when none came."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("GET", path, headers={"Connection": "close", **(headers or {})})
        response = conn.getresponse()
        body = response.read()
        return response.status if body or path != "/metrics" else 0
    except (OSError, http.client.HTTPException):
        return 0
    finally:
        conn.close()


def accept(tree: Path) -> None:
    with d.running(tree, *SMALL) as daemon:
        for _ in range(20):
            _get(daemon.port)
        before = rss_bytes(daemon.proc.pid)
        statuses: dict[int, int] = {}
        for i in range(2000):
            version = f"1.0.{i}" + "9" * 200  # at least 1.0.0: what clients take as valid
            accept_header = f"application/openmetrics-text; version={version}"
            status = _get(daemon.port, headers={"Accept": accept_header})
            statuses[status] = statuses.get(status, 0) + 1
        after = rss_bytes(daemon.proc.pid)
        errors = sum("ERROR" in line or "level=error" in line for line in daemon.log)
    print(
        f"accept: RSS {before / MIB:.1f} -> {after / MIB:.1f} MiB after 2,000 distinct "
        f"versions; statuses {dict(sorted(statuses.items()))}; error log lines {errors}"
    )


def _profile(directory: Path) -> Path:
    path = directory / "site.yaml"
    path.write_text("extends: process-management\nprofile: site-a\n")
    return path


def _large(path: Path, size: int) -> None:
    """A valid YAML profile of about `size` bytes that the validator then refuses."""
    with open(path, "w") as handle:
        handle.write("extends: process-management\nprofile: site-a\n")
        handle.write(f'padding: "{"a" * size}"\n')


# Small, but the slowest file the loader accepts: 99 aliases expand to 200,000 values.
SLOW = (
    "extends: process-management\nprofile: site-a\n"
    f"a: &a [{', '.join(str(i) for i in range(1990))}]\n"
    f"b: [{', '.join(['*a'] * 99)}]\n"
)


def _count(daemon: d.Daemon, text: str) -> int:
    return sum(text in line for line in daemon.log)


def _wait(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def sighup(tree: Path, workdir: Path) -> None:
    profile = _profile(workdir)
    with d.running(tree, *SMALL, f"--profile={profile}") as daemon:
        before = rss_bytes(daemon.proc.pid)
        start = time.monotonic()
        for i in range(600):
            daemon.proc.send_signal(signal.SIGHUP)
            if not _wait(lambda i=i: _count(daemon, "profile reloaded") > i, 60):
                print(f"sighup: reload {i} did not finish within 60 s")
                return
        elapsed = time.monotonic() - start
        after = rss_bytes(daemon.proc.pid)
        _large(profile, 50 * MIB)
        start = time.monotonic()
        daemon.proc.send_signal(signal.SIGHUP)
        done = _wait(lambda: _count(daemon, "profile reload failed") >= 1, 300)
        took = time.monotonic() - start
        large = rss_bytes(daemon.proc.pid)
    print(
        f"sighup: RSS {before / MIB:.1f} -> {after / MIB:.1f} MiB after 600 reloads "
        f"({elapsed / 600 * 1e3:.1f} ms each)"
    )
    state = f"rejected in {took:.2f} s" if done else f"not finished after {took:.0f} s"
    print(f"sighup: RSS {large / MIB:.1f} MiB after a 50 MB reload ({state})")


def bomb(workdir: Path) -> None:
    path = workdir / "bomb.yaml"
    path.write_text(BOMB)
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))\n"
        "from nodeslo.profile import load_profile\n"
        "try:\n"
        f"    load_profile({str(path)!r})\n"
        "except BaseException as exc:\n"
        "    print(type(exc).__name__, str(exc)[:120])\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    start = time.monotonic()
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    peak = 0
    while child.poll() is None and time.monotonic() - start < 120:
        peak = max(peak, _peak_rss(child.pid))
        time.sleep(0.2)
    if child.poll() is None:
        child.kill()
        outcome = "still running after 120 s (killed)"
    else:
        out, err = child.communicate()
        lines = out.strip().splitlines() or err.strip().splitlines()[-1:]
        outcome = lines[0][:140] if lines else f"exit {child.returncode}"
        if lines and lines[-1].isdigit():
            peak = max(peak, int(lines[-1]) * 1024)
    child.wait()
    elapsed = time.monotonic() - start
    print(f"bomb: {len(BOMB)} bytes, {elapsed:.2f} s, peak RSS {peak / MIB:.0f} MiB: {outcome}")


def _peak_rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def flood(tree: Path) -> None:
    with d.running(tree, *SMALL) as daemon:
        port = daemon.port
        stop = threading.Event()
        held: list[socket.socket] = []

        def attacker() -> None:  # 100 new keep-alive connections per second
            while not stop.is_set():
                tick = time.monotonic()
                try:
                    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                    sock.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
                    sock.recv(4096)
                    held.append(sock)
                except OSError:
                    pass
                time.sleep(max(0.0, 0.01 - (time.monotonic() - tick)))

        thread = threading.Thread(target=attacker, daemon=True)
        thread.start()
        time.sleep(1.0)  # the slots fill
        statuses = []
        end = time.monotonic() + 20
        while time.monotonic() < end:
            statuses.append(_get(port))
            time.sleep(0.25)
        stop.set()
        thread.join(10)
        for sock in held:
            sock.close()
    lost = sum(s != 200 for s in statuses)
    print(f"flood: {lost} of {len(statuses)} scrapes lost under 100 keep-alive connections/s")


def pipeline(tree: Path) -> None:
    with d.running(tree) as daemon:  # every default collector: ~100 KB per response
        port = daemon.port
        sockets = []
        for _ in range(64):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 50)
            sockets.append(sock)
        time.sleep(3.0)  # every slot busy writing to a client that does not read
        statuses = []
        for _ in range(85):
            statuses.append(_get(port))
            time.sleep(0.1)
        for sock in sockets:
            sock.close()
    refused = sum(s == 503 for s in statuses)
    failed = sum(s not in (200, 503) for s in statuses)
    print(
        f"pipeline: {refused} of 85 scrapes got 503, {failed} failed otherwise, "
        "under 64 clients pipelining and never reading"
    )


def watchdog(tree: Path, workdir: Path) -> None:
    _watchdog_once(tree, workdir, lambda path: _large(path, 50 * MIB), "50 MB")
    _watchdog_once(tree, workdir, lambda path: path.write_text(SLOW), "alias-expanding")


def _watchdog_once(tree: Path, workdir: Path, write: Callable[[Path], object], label: str) -> None:
    profile = _profile(workdir)
    notify = str(workdir / f"notify-{label}.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(notify)
    sock.settimeout(0.2)
    pings: list[float] = []
    stop = threading.Event()

    def receive() -> None:
        while not stop.is_set():
            try:
                if sock.recv(4096) == b"WATCHDOG=1":
                    pings.append(time.monotonic())
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=receive, daemon=True)
    thread.start()
    env = {"NOTIFY_SOCKET": notify, "WATCHDOG_USEC": "1000000"}
    daemon = d.start(tree, *SMALL, f"--profile={profile}", env=env).wait_listening()
    try:
        time.sleep(1.5)
        write(profile)
        start = time.monotonic()
        daemon.proc.send_signal(signal.SIGHUP)
        done = _wait(lambda: _count(daemon, "profile reload") >= 1, 300)
        reload_seconds = time.monotonic() - start
        time.sleep(1.5)
        window = [start, *[p for p in pings if p >= start], time.monotonic()]
        gap = max(b - a for a, b in itertools.pairwise(window))
        daemon.proc.send_signal(signal.SIGHUP)  # the same reload, and SIGTERM during it
        time.sleep(0.2)
        start = time.monotonic()
        code = daemon.stop(signal.SIGTERM, timeout=120)
        stop_seconds = time.monotonic() - start
    finally:
        daemon.stop()
        stop.set()
        sock.close()
    state = f"{reload_seconds:.2f} s" if done else "unfinished"
    print(
        f"watchdog: {label} reload ({state}): longest gap between pings {gap:.2f} s "
        f"(pings every 0.5 s); SIGTERM during such a reload: exit {code} "
        f"after {stop_seconds:.2f} s"
    )


SECTIONS = ("accept", "sighup", "bomb", "flood", "pipeline", "watchdog")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma list of sections")
    args = parser.parse_args()
    chosen = [s for s in args.only.split(",") if s]
    import nodeslo

    print(f"machine: {machine()}")
    print(f"nodeslo from {os.path.dirname(nodeslo.__file__)}")
    tree = fixture_tree("seed-spec")
    with tempfile.TemporaryDirectory(prefix="nodeslo-hostile-") as scratch:
        workdir = Path(scratch)
        for section in chosen:
            if section == "accept":
                accept(tree)
            elif section == "sighup":
                sighup(tree, workdir)
            elif section == "bomb":
                bomb(workdir)
            elif section == "flood":
                flood(tree)
            elif section == "pipeline":
                pipeline(tree)
            elif section == "watchdog":
                watchdog(tree, workdir)
            else:
                parser.error(f"unknown section {section!r}")
    subprocess.run(["rm", "-rf", str(tree)], check=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
