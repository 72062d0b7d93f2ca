"""Run a probe in its own process, read its reports, restart it with backoff when it dies.

A probe process (`python -m nodeslo.probes.wakeup ...`) writes JSON lines (see
`protocol`); a supervisor thread in the daemon reads them and hands each message to
the probe's merge callback. The scrape never waits on any of this: it reads what the
callbacks merged.

A child that exits, crashes, or stays silent longer than `report_timeout` (hung,
SIGSTOPped; before its first report: `start_timeout`, for an interpreter that starts
slowly on a loaded host) is killed and started again after a backoff that doubles from `initial`
to `maximum` and resets once a child has run for `stable_after` seconds. Each such
restart is counted, and `on_exit` hears of it (the storage probe accounts the
operations nobody runs until the next child starts); `replace()` (a profile reload
changed the settings) starts the new child at once and is neither.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from nodeslo import fdwait
from nodeslo.log import OnceLog
from nodeslo.probes.protocol import LineBuffer, LineTooLong, Message, decode

log = logging.getLogger("nodeslo.probe")

MIN_WAIT_SECONDS = 0.05
KILL_WAIT_SECONDS = 0.5


@dataclass(frozen=True)
class Backoff:
    initial: float = 1.0
    maximum: float = 60.0
    stable_after: float = 60.0

    def next(self, current: float | None) -> float:
        return self.initial if current is None else min(self.maximum, current * 2)


class ProbeProcess:
    def __init__(
        self,
        name: str,
        command: Sequence[str],
        on_message: Callable[[Message], None],
        *,
        report_timeout: float,
        backoff: Backoff | None = None,
        errors: OnceLog | None = None,
        on_exit: Callable[[str], None] | None = None,
        start_timeout: float | None = None,
    ) -> None:
        self.name = name
        self._command = list(command)
        self._on_message = on_message
        self._on_exit = on_exit
        self._report_timeout = report_timeout
        self._start_timeout = max(report_timeout, start_timeout or 0.0)
        self._backoff = backoff or Backoff()
        self._errors = errors or OnceLog(log)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()  # interrupts a backoff wait
        self._replace = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._last_message = 0.0
        self._thread: threading.Thread | None = None
        self.restarts = 0
        self.last_exit: str = ""

    # --- control (daemon thread) ----------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._supervise, name=f"probe-{self.name}")
        self._thread.daemon = True
        self._thread.start()

    def replace(self, command: Sequence[str]) -> None:
        """Run `command` from now on: the current child is stopped, the new one started."""
        with self._lock:
            self._command = list(command)
            self._replace = True
            proc = self._proc
        self._wake.set()
        if proc is not None:
            _terminate(proc)

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        self._wake.set()
        with self._lock:
            proc = self._proc
        if proc is not None:
            _terminate(proc)
        if self._thread is not None:
            self._thread.join(timeout)

    def reporting(self) -> bool:
        """True while a child runs and its last report is at most report_timeout old."""
        with self._lock:
            proc = self._proc
            fresh = time.monotonic() - self._last_message <= self._report_timeout
        return proc is not None and proc.poll() is None and self._last_message > 0 and fresh

    @property
    def pid(self) -> int | None:
        with self._lock:
            return None if self._proc is None else self._proc.pid

    # --- supervisor thread ----------------------------------------------------------

    def _supervise(self) -> None:
        delay: float | None = None
        while not self._stop.is_set():
            with self._lock:
                command = list(self._command)
                self._replace = False
            started = time.monotonic()
            reason = self._run_once(command)
            if self._stop.is_set():
                break
            with self._lock:
                replaced = self._replace
            if replaced:
                delay = None
                continue
            if time.monotonic() - started >= self._backoff.stable_after:
                delay = None
            delay = self._backoff.next(delay)
            with self._lock:
                self.restarts += 1
                self.last_exit = reason
            if self._on_exit is not None:
                self._on_exit(reason)
            log.warning(
                "probe process stopped, restarting",
                extra={"fields": {"probe": self.name, "reason": reason, "backoff": delay}},
            )
            self._wake.clear()
            self._wake.wait(delay)

    def _run_once(self, command: list[str]) -> str:
        try:
            proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, close_fds=True
            )
        except OSError as exc:
            return f"cannot start {command[0]}: {exc.strerror or exc}"
        with self._lock:
            self._proc = proc
            self._last_message = 0.0
        try:
            reason = self._pump(proc, time.monotonic())
        finally:
            _terminate(proc)
            assert proc.stdout is not None
            proc.stdout.close()
            with self._lock:
                self._proc = None
        code = proc.returncode
        if reason == "exited":
            reason = f"exited with status {code}" if code >= 0 else f"killed by signal {-code}"
        return reason

    def _pump(self, proc: subprocess.Popen[bytes], started: float) -> str:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        lines = LineBuffer()
        while True:
            if self._stop.is_set():
                return "stopped"
            with self._lock:
                if self._replace:
                    return "replaced"
                last = self._last_message
            timeout = self._report_timeout if last else self._start_timeout
            left = (last or started) + timeout - time.monotonic()
            if left < 0:
                return f"no report for {timeout:g}s"
            # Sleep until a report or the watchdog deadline, not on a short poll: each
            # wake-up costs CPU. stop() and replace() kill the child, which ends the wait.
            ready = fdwait.readable([fd], max(MIN_WAIT_SECONDS, left))
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                return "exited"
            try:
                complete = lines.feed(chunk)
            except LineTooLong:
                return "report line too long"
            for line in complete:
                self._deliver(line)

    def _deliver(self, line: bytes) -> None:
        try:
            message = decode(line)
            self._on_message(message)
        except Exception as exc:  # a bad report must not stop the supervisor
            self._errors.warn(
                f"probe:{self.name}:message", "bad probe report", probe=self.name, err=str(exc)
            )
            return
        with self._lock:
            self._last_message = time.monotonic()


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL: probe processes ignore SIGTERM (systemd and `timeout` signal the whole
    group; only the daemon decides when a probe stops) and hold nothing to clean up."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    # Still there: in uninterruptible sleep (D state), nothing more can be done now.
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(KILL_WAIT_SECONDS)
