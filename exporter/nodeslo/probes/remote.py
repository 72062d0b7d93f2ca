"""A probe process that the daemon does not start: it connects to the daemon's socket.

Why: the wake-up probe's accurate engine (cyclictest) needs CAP_SYS_NICE, and the
network-facing daemon must hold no capability. So under systemd the probe runs in its own
unit (`nodeslo-wakeup-probe.service`, CAP_SYS_NICE only) and in Kubernetes in its own
container; it connects here (`nodeslo probe wakeup --connect PATH`, see `relay`).

The conversation is the pipe protocol of `protocol`, over a Unix stream socket: on each
connection the daemon sends one line, the probe's configuration (JSON); the probe then
sends its reports. The daemon stays in charge of what is measured: a profile reload closes
the connection, the relay reconnects and receives the new configuration. A connection that
ends without the daemon closing it (the probe died), or that stays silent longer than the
report timeout (hung, SIGSTOPped: the daemon then closes it, the relay kills its child), is
counted as a restart, exactly like a local probe process's.

Only root and the daemon's own user may connect (SO_PEERCRED); the socket is created
with mode 0660 in a directory only that user and group can enter (systemd
RuntimeDirectory=; in Kubernetes an emptyDir shared by the two containers, the probe's
running as root with the exporter's group and CAP_SYS_NICE only).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable

from nodeslo import fdwait
from nodeslo.log import OnceLog
from nodeslo.probes.protocol import LineBuffer, LineTooLong, Message, decode

log = logging.getLogger("nodeslo.probe")

BACKLOG = 4
_UCRED = struct.Struct("3i")  # pid, uid, gid


class RemoteProbeError(OSError):
    """The probe's socket could not be set up (path too long, directory missing...)."""


def peer_credentials(conn: socket.socket) -> tuple[int, int, int]:
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return pid, uid, gid


class RemoteProbe:
    """Same face as `supervisor.ProbeProcess` (start, replace, stop, reporting, restarts,
    last_exit, pid), fed by whichever process connects to `path`."""

    def __init__(
        self,
        name: str,
        path: str,
        config: str,
        on_message: Callable[[Message], None],
        *,
        report_timeout: float,
        errors: OnceLog | None = None,
        allowed_uids: frozenset[int] | None = None,
        on_exit: Callable[[str], None] | None = None,
    ) -> None:
        self.name = name
        self.path = path
        self._config = config
        self._on_message = on_message
        self._on_exit = on_exit  # a connected probe went away (not replaced or refused)
        self._report_timeout = report_timeout
        self._errors = errors or OnceLog(log)
        self._allowed = allowed_uids if allowed_uids is not None else frozenset({0, os.geteuid()})
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._replace = False
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._peer_pid: int | None = None
        self._last_message = 0.0
        self.restarts = 0
        self.last_exit = ""

    # --- control (daemon thread) ----------------------------------------------------

    def start(self) -> None:
        self._listener = self._listen()
        self._thread = threading.Thread(target=self._serve, name=f"probe-{self.name}")
        self._thread.daemon = True
        self._thread.start()
        log.info(
            "waiting for the probe process to connect",
            extra={"fields": {"probe": self.name, "socket": self.path}},
        )

    def replace(self, config: str) -> None:
        """Send `config` from now on: the current connection is closed (not a restart)."""
        with self._lock:
            self._config = config
            self._replace = True
        self._poke()

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        self._poke()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._listener is not None:
            self._listener.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def reporting(self) -> bool:
        with self._lock:
            fresh = time.monotonic() - self._last_message <= self._report_timeout
            return self._peer_pid is not None and self._last_message > 0 and fresh

    @property
    def pid(self) -> int | None:
        with self._lock:
            return self._peer_pid

    # --- the socket -------------------------------------------------------------------

    def _listen(self) -> socket.socket:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)  # left by a daemon that was killed
            old = os.umask(0o117)
            try:
                listener.bind(self.path)
            finally:
                os.umask(old)
            listener.listen(BACKLOG)
        except OSError as exc:
            listener.close()
            raise RemoteProbeError(exc.errno, f"{self.path}: {exc.strerror or exc}") from None
        return listener

    def _poke(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    def _drain_pokes(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_r, 4096)

    def _serve(self) -> None:
        assert self._listener is not None
        pending: socket.socket | None = None
        while not self._stop.is_set():
            conn = pending or self._accept()
            pending = None
            if conn is None:
                continue
            reason, pending = self._converse(conn)
            if self._stop.is_set():
                break
            if reason in ("replaced", "refused"):
                continue
            with self._lock:
                self.restarts += 1
                self.last_exit = reason
            if self._on_exit is not None:
                self._on_exit(reason)
            log.warning(
                "probe process disconnected",
                extra={"fields": {"probe": self.name, "reason": reason}},
            )
        if pending is not None:
            pending.close()

    def _accept(self) -> socket.socket | None:
        assert self._listener is not None
        listener = self._listener.fileno()
        ready = fdwait.readable([listener, self._wake_r], None)
        if self._wake_r in ready:
            self._drain_pokes()
            with self._lock:
                self._replace = False
        if listener not in ready or self._stop.is_set():
            return None
        try:
            conn, _ = self._listener.accept()
        except OSError:
            return None
        return conn

    def _converse(self, conn: socket.socket) -> tuple[str, socket.socket | None]:
        """Talk to one probe until it goes; (why it ended, a newer connection waiting)."""
        pid, uid, _ = peer_credentials(conn)
        if uid not in self._allowed:
            self._errors.warn(
                f"probe:{self.name}:peer",
                "probe connection refused: wrong user",
                probe=self.name,
                uid=str(uid),
                pid=str(pid),
            )
            conn.close()
            return "refused", None
        with self._lock:
            config = self._config
            self._replace = False
            self._peer_pid = pid
            self._last_message = 0.0
        started = time.monotonic()
        try:
            conn.sendall(config.encode() + b"\n")
            return self._pump(conn, started)
        except OSError as exc:
            return f"connection failed: {exc.strerror or exc}", None
        finally:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
            with self._lock:
                self._peer_pid = None

    def _pump(self, conn: socket.socket, started: float) -> tuple[str, socket.socket | None]:
        assert self._listener is not None
        fd, listener = conn.fileno(), self._listener.fileno()
        lines = LineBuffer()
        while True:
            with self._lock:
                if self._replace:
                    return "replaced", None
                last = self._last_message or started
            if self._stop.is_set():
                return "stopped", None
            left = last + self._report_timeout - time.monotonic()
            if left < 0:
                return f"no report for {self._report_timeout:g}s", None
            ready = fdwait.readable([fd, listener, self._wake_r], left)
            if self._wake_r in ready:
                self._drain_pokes()
            if fd in ready:
                # First what the current probe said (its last words, or its end).
                chunk = conn.recv(65536)
                if not chunk:
                    return "disconnected", None
                try:
                    complete = lines.feed(chunk)
                except LineTooLong:
                    return "report line too long", None
                for line in complete:
                    self._deliver(line)
            if listener in ready:
                # A new probe process (the old one restarted by systemd, or a second
                # one): the newest wins.
                try:
                    newer, _ = self._listener.accept()
                except OSError:
                    continue
                return "replaced by a new connection", newer

    def _deliver(self, line: bytes) -> None:
        try:
            self._on_message(decode(line))
        except Exception as exc:  # a bad report must not stop the daemon's side
            self._errors.warn(
                f"probe:{self.name}:message", "bad probe report", probe=self.name, err=str(exc)
            )
            return
        with self._lock:
            self._last_message = time.monotonic()
