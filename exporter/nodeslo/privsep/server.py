"""The helper's side: answer whitelisted requests, one thread per command in flight.

Response on the wire (16 bytes + data), little-endian, the same for every family:
  u32 id, i32 errno (0 = ok), u16 device status, u16 0, u32 data length, then the data,
  or on an error the reason as UTF-8 text (at most MAX_REASON bytes).

Requests with the same key (one NVMe controller, the one BMC) never run concurrently:
a request whose key is busy is answered EBUSY at once, so a hung device holds one
thread, not one per poll. At most MAX_IN_FLIGHT commands (and so threads) run per
connection, counting those still sending their answer; an answer the peer does not
take within SEND_TIMEOUT_SECONDS is dropped (the client times out), so a peer that
stops reading holds at most that many threads. Refused requests are logged at most
once per REFUSED_LOG_SECONDS, with a count.

A forked helper is a small supervisor (root, the family's capabilities only) that
forks the process answering requests and, if that one dies (a crash, a kill), forks a
new one on the same socket after a backoff, reaping each; a thread of the daemon reaps
the supervisor.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import signal
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from nodeslo import privileges
from nodeslo.log import OnceLog

log = logging.getLogger("nodeslo.privsep")

RESPONSE = struct.Struct("<IiHHI")
MAX_CONNECTIONS = 8
MAX_IN_FLIGHT = 64
MAX_REASON = 256
# The longest a command may run; a client asking for more gets this.
MAX_TIMEOUT_MS = 120_000
SEND_TIMEOUT_SECONDS = 5.0
REFUSED_LOG_SECONDS = 60.0
# A forked helper's worker is restarted after this, doubling up to the maximum.
RESTART_BACKOFF = (0.5, 30.0)

R = TypeVar("R")


class Refusal(Exception):
    """A request outside the whitelist (or malformed): answered EPERM, device untouched."""

    def __init__(self, message: str, request_id: int = 0) -> None:
        super().__init__(message)
        self.request_id = request_id


@dataclass(frozen=True)
class Response:
    request_id: int
    error: int  # errno, 0 when the command completed
    status: int  # the device's own status (NVMe status field), 0 when none
    data: bytes


def pack_response(response: Response) -> bytes:
    return (
        RESPONSE.pack(response.request_id, response.error, response.status, 0, len(response.data))
        + response.data
    )


def unpack_response(message: bytes, max_data: int) -> Response:
    """A response of at most `max_data` data bytes; ValueError for anything else."""
    if len(message) < RESPONSE.size or len(message) > RESPONSE.size + max_data:
        raise ValueError(f"helper answered {len(message)} bytes: not a response")
    request_id, error, status, _, length = RESPONSE.unpack_from(message)
    data = message[RESPONSE.size :]
    if len(data) != length:
        raise ValueError(f"helper response {request_id}: {len(data)} data bytes, said {length}")
    return Response(request_id, error, status, data)


def failure(request_id: int, error: int, reason: str, status: int = 0) -> Response:
    return Response(request_id, error, status, reason.encode("utf-8", "replace")[:MAX_REASON])


class Service(Protocol[R]):
    """One device family's whitelist and executor, as the helper runs it."""

    name: str  # "nvme", "ipmi": thread names and log lines
    request_size: int  # every request is exactly this long

    def decode(self, message: bytes) -> tuple[int, R, int]:
        """(request id, request, timeout ms); Refusal when not on the whitelist."""
        ...

    def key(self, request: R) -> str:
        """Requests with the same key never run at the same time."""
        ...

    def execute(self, request_id: int, request: R, timeout_ms: int) -> Response:
        """The device's answer, or a failure response; Refusal when the device layer
        refuses the request (answered EPERM and logged like a refused message)."""
        ...


class HelperServer(Generic[R]):
    """Answers requests on connected sockets; one thread per command in flight."""

    def __init__(self, service: Service[R]) -> None:
        self.service = service
        self._busy: set[str] = set()  # keys with a command in flight
        self._threads = 0  # command threads alive, answering included
        self._lock = threading.Lock()
        self._errors = OnceLog(log)
        self._refused = 0  # refusals since the last line about them
        self._refused_logged: float | None = None
        self.refused = 0  # requests refused in all (for tests)

    def _log_refused(self, exc: Refusal) -> None:
        """One line per REFUSED_LOG_SECONDS at most, however fast a peer sends junk."""
        with self._lock:
            self.refused += 1
            self._refused += 1
            now = time.monotonic()
            last = self._refused_logged
            if last is not None and now - last < REFUSED_LOG_SECONDS:
                return
            count, self._refused, self._refused_logged = self._refused, 0, now
        log.warning(
            "refused request",
            extra={"fields": {"helper": self.service.name, "err": str(exc), "count": count}},
        )

    def serve(self, sock: socket.socket) -> None:
        """Answer requests until the peer closes its end."""
        send_lock = threading.Lock()
        service = self.service
        while True:
            try:
                message = sock.recv(service.request_size + 1)
            except OSError as exc:
                log.info("helper connection closed", extra={"fields": {"err": str(exc)}})
                return
            if not message:
                return
            try:
                request_id, request, timeout_ms = service.decode(message)
            except Refusal as exc:
                self._log_refused(exc)
                self._reply(sock, send_lock, failure(exc.request_id, errno.EPERM, str(exc)))
                continue
            key = service.key(request)
            with self._lock:
                busy = key in self._busy or self._threads >= MAX_IN_FLIGHT
                if not busy:
                    self._busy.add(key)
                    self._threads += 1
            if busy:
                reason = f"{key}: a command is still in flight"
                self._reply(sock, send_lock, failure(request_id, errno.EBUSY, reason))
                continue
            timeout_ms = min(max(timeout_ms, 1), MAX_TIMEOUT_MS)
            threading.Thread(
                target=self._run,
                args=(sock, send_lock),
                kwargs={
                    "request_id": request_id,
                    "request": request,
                    "key": key,
                    "timeout_ms": timeout_ms,
                },
                name=f"{service.name}-helper-{key}",
                daemon=True,
            ).start()

    def _run(
        self,
        sock: socket.socket,
        send_lock: threading.Lock,
        *,
        request_id: int,
        request: R,
        key: str,
        timeout_ms: int,
    ) -> None:
        try:
            try:
                response = self.service.execute(request_id, request, timeout_ms)
            except Refusal as exc:
                self._log_refused(exc)
                response = failure(request_id, errno.EPERM, str(exc))
            except Exception as exc:  # an executor bug answers the caller instead of hanging it
                log.exception("helper command failed", extra={"fields": {"key": key}})
                response = failure(request_id, errno.EIO, f"{type(exc).__name__}: {exc}")
            finally:
                with self._lock:
                    self._busy.discard(key)
            self._reply(sock, send_lock, response)
        finally:
            with self._lock:
                self._threads -= 1

    def _reply(self, sock: socket.socket, lock: threading.Lock, response: Response) -> None:
        """Send, waiting at most SEND_TIMEOUT_SECONDS for room: a peer that stops
        reading loses its answers instead of holding a thread each."""
        message = pack_response(response)
        deadline = time.monotonic() + SEND_TIMEOUT_SECONDS
        with lock:
            poller = select.poll()
            try:
                poller.register(sock, select.POLLOUT)
            except ValueError:
                return  # closed meanwhile (the peer left and serve() returned)
            while True:
                try:
                    sock.send(message, socket.MSG_DONTWAIT)
                    return
                except BlockingIOError:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        self._errors.warn("send", "peer does not read: answer dropped")
                        return
                    poller.poll(remaining * 1000)
                except OSError:
                    return  # the peer went away; serve() sees EOF next


def fork_helper(
    name: str, make_server: Callable[[], HelperServer[R]], keep: Iterable[int], lost: str
) -> socket.socket:
    """Fork a helper process; return the daemon's end of its socketpair.

    Called as root before the daemon drops privileges. The child keeps only the
    capabilities in `keep` (none at all for an empty set), closes every other file
    descriptor, supervises the process that answers requests (see the module docstring),
    and exits when the daemon's end closes (or the daemon dies: parent-death signal).
    A thread of the daemon reaps it and says what is `lost` if it ever exits.
    """
    parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid:
        child_end.close()
        log.debug(f"{name} helper started", extra={"fields": {"pid": pid}})
        threading.Thread(
            target=_reap, args=(name, pid, lost), name=f"{name}-helper-reaper", daemon=True
        ).start()
        return parent_end
    status = 1
    try:
        parent_end.close()
        _become_helper(child_end, keep)
        status = _supervise(name, child_end, make_server)
    except BaseException:
        log.exception(f"{name} helper failed")
    finally:
        os._exit(status)


def _become_helper(channel: socket.socket, keep: Iterable[int]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the daemon: it exits on EOF
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    privileges.set_parent_death_signal(signal.SIGTERM)
    os.closerange(3, channel.fileno())
    os.closerange(channel.fileno() + 1, privileges.max_fd())
    privileges.limit_capabilities(keep)


def _supervise(
    name: str, channel: socket.socket, make_server: Callable[[], HelperServer[R]]
) -> int:
    """Run the serving process, again after each death; 0 once the daemon is gone."""
    backoff = RESTART_BACKOFF[0]
    while True:
        worker = os.fork()
        if worker == 0:
            code = 1
            try:
                privileges.set_parent_death_signal(signal.SIGTERM)
                make_server().serve(channel)
                code = 0
            except BaseException:
                log.exception(f"{name} helper failed")
            finally:
                os._exit(code)
        started = time.monotonic()
        _, wait_status = os.waitpid(worker, 0)
        code = os.waitstatus_to_exitcode(wait_status)
        if code == 0:
            return 0  # the daemon closed its end
        log.warning(f"{name} helper died, restarting it", extra={"fields": {"exit": code}})
        if time.monotonic() - started > RESTART_BACKOFF[1]:
            backoff = RESTART_BACKOFF[0]  # it had run well: a new incident
        time.sleep(backoff)
        backoff = min(backoff * 2, RESTART_BACKOFF[1])


def _reap(name: str, pid: int, lost: str) -> None:
    try:
        _, wait_status = os.waitpid(pid, 0)
    except ChildProcessError:
        return
    code = os.waitstatus_to_exitcode(wait_status)
    if code != 0:
        log.error(
            f"{name} helper exited: {lost} until the daemon restarts",
            extra={"fields": {"exit": code}},
        )


def listen(path: str, mode: int, group: str | None) -> socket.socket:
    """A listening SOCK_SEQPACKET socket at `path` (a stale one is replaced).

    The socket is created with its final mode (umask), and only its group is changed
    afterwards, without following a symlink; its directory must be writable by its
    owner (root) only, so nobody can swap the path between bind and chown.
    """
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o755, exist_ok=True)
    info = os.stat(directory)
    if info.st_uid != os.geteuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise OSError(
            errno.EPERM,
            f"{directory}: must be owned by uid {os.geteuid()} and writable by it alone",
        )
    with contextlib.suppress(FileNotFoundError):  # a stale socket of an earlier run
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    old = os.umask(0o777 & ~mode)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    if group is not None:
        os.chown(path, -1, privileges.group_id(group), follow_symlinks=False)
    sock.listen(MAX_CONNECTIONS)
    return sock


def serve_socket(listener: socket.socket, server: HelperServer[R], allowed_uids: set[int]) -> None:
    """Accept daemon connections forever; peers outside `allowed_uids` are turned away."""
    active = threading.BoundedSemaphore(MAX_CONNECTIONS)
    while True:
        try:
            conn, _ = listener.accept()
        except OSError as exc:
            if exc.errno in (errno.EBADF, errno.EINVAL):  # the listener was closed
                return
            log.warning("accept failed", extra={"fields": {"err": str(exc)}})
            time.sleep(0.1)  # EMFILE and the like: do not spin
            continue
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, _gid = struct.unpack("3i", creds)
        if allowed_uids and uid not in allowed_uids:
            log.warning("connection refused", extra={"fields": {"pid": pid, "uid": uid}})
            conn.close()
            continue
        if not active.acquire(blocking=False):
            log.warning("too many connections", extra={"fields": {"pid": pid, "uid": uid}})
            conn.close()
            continue
        log.info("daemon connected", extra={"fields": {"pid": pid, "uid": uid}})

        def handle(conn: socket.socket = conn) -> None:
            try:
                server.serve(conn)
            finally:
                conn.close()
                active.release()

        name = f"{server.service.name}-helper-conn"
        threading.Thread(target=handle, name=name, daemon=True).start()
