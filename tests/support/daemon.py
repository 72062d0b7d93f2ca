"""Run the real `nodeslo serve` as a subprocess on a fixture tree, scrape it, stop it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Both log formats carry the bound address: logfmt `address=h:p`, json `"address": "h:p"`.
_LISTENING = re.compile(r'listening.*address"?[=:] ?"?([^\s",]+):(\d+)')


class Daemon:
    """A running `nodeslo serve`; a thread collects its log lines as they come."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.host = ""
        self.port = 0
        self.log: list[str] = []
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _read_log(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line.rstrip("\n"))

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
        request = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def scrape(self) -> str:
        status, body = self.get("/metrics")
        assert status == 200, body
        return body

    def wait_log(self, pattern: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while time.monotonic() < deadline:
            for line in list(self.log):
                if regex.search(line):
                    return line
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.02)
        raise AssertionError(f"no log line matching {pattern!r}; log:\n" + "\n".join(self.log))

    def wait_listening(self, timeout: float = 20.0) -> Daemon:
        try:
            line = self.wait_log("listening", timeout)
        except AssertionError:
            self.stop()
            raise
        match = _LISTENING.search(line)
        assert match, line
        self.host, self.port = match.group(1), int(match.group(2))
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._reader.join(timeout=2)


def command(tree: str | os.PathLike[str] | None, *flags: str) -> list[str]:
    cmd = [sys.executable, "-m", "nodeslo", "serve", "--web.listen-address=127.0.0.1:0"]
    if tree is not None:
        cmd += [
            f"--path.sysfs={tree}/sys",
            f"--path.procfs={tree}/proc",
            f"--path.rootfs={tree}",
            f"--path.udev.data={tree}/run/udev/data",
            # The active probes measure the real host, not the tree: off, so expositions
            # stay deterministic and no test writes a probe file. A later --probe.X wins.
            "--no-probe.storage",
            "--no-probe.wakeup",
        ]
    return cmd + list(flags)


@contextlib.contextmanager
def running(
    tree: str | os.PathLike[str] | None,
    *flags: str,
    env: dict[str, str] | None = None,
    startup_timeout: float = 20.0,
) -> Iterator[Daemon]:
    """Start the daemon on `tree`; yield it once it listens; SIGTERM it afterwards."""
    daemon = start(tree, *flags, env=env).wait_listening(startup_timeout)
    try:
        yield daemon
    finally:
        daemon.stop()


def start(
    tree: str | os.PathLike[str] | None, *flags: str, env: dict[str, str] | None = None
) -> Daemon:
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.Popen(
        command(tree, *flags),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
    )
    return Daemon(proc)


def run_cli(
    *args: str, timeout: float = 60.0, env: dict[str, str] | None = None, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `nodeslo ARGS` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "nodeslo", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        input=input,
    )


def parse_json_log(line: str) -> dict[str, object]:
    return dict(json.loads(line))
