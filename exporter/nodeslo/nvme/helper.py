"""The privileged NVMe helper: the only code that holds CAP_SYS_ADMIN.

It answers whitelisted page requests (Get Log Page 02h/C0h, Identify CNS 01h/17h) for
controllers that exist under sysfs, and nothing else, over a SOCK_SEQPACKET Unix socket
(message boundaries kept, so one recv is one request). Two ways to run it:

- forked: `nodeslo serve` started as root forks it over a socketpair before anything
  else runs, then drops its own privileges (`--run-as-user`); the helper exits when the
  daemon's end of the socket closes.
- its own unit: `nodeslo nvme-helper --socket PATH` listens on a Unix socket; the
  daemon connects with `--collector.nvme.helper-socket PATH`.

Wire format, little-endian, fixed sizes:
  request  (28 bytes): u32 id, u8 opcode, u8 LID/CNS, u8 UUID index, u8 0,
                       16 bytes controller name (ASCII, NUL padded), u32 timeout ms
  response (16 bytes + data): u32 id, i32 errno (0 = ok), u16 NVMe status, u16 0,
                       u32 data length, then the page (at most 4096 bytes), or
                       on an error the reason as UTF-8 text (at most 256 bytes)

Each controller has at most one command in flight: a request for a controller whose
previous command has not returned is answered EBUSY at once, so a hung drive holds
one thread, not one per poll. At most MAX_IN_FLIGHT commands (and so threads) run per
connection, counting those still sending their answer; an answer the peer does not
take within SEND_TIMEOUT_SECONDS is dropped (the client times out), so a peer that
stops reading holds at most that many threads. Refused requests are logged at most
once per REFUSED_LOG_SECONDS, with a count.

The forked helper is a small supervisor (root, CAP_SYS_ADMIN only) that forks the
process answering requests and, if that one dies (a crash, a kill), forks a new one on
the same socket after a backoff, reaping each; the daemon reaps the supervisor.
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
from dataclasses import dataclass

from nodeslo import privileges
from nodeslo.log import OnceLog
from nodeslo.nvme.direct import DirectSource
from nodeslo.nvme.requests import (
    MAX_DATA,
    CommandTimeout,
    PageRequest,
    Refused,
    SourceError,
    Unsupported,
    command_for,
)

log = logging.getLogger("nodeslo.nvme.helper")

REQUEST = struct.Struct("<IBBBB16sI")
RESPONSE = struct.Struct("<IiHHI")
MAX_RESPONSE = RESPONSE.size + MAX_DATA
# The longest a command may run; a client asking for more gets this.
MAX_TIMEOUT_MS = 120_000
MAX_CONNECTIONS = 8
MAX_IN_FLIGHT = 64
MAX_REASON = 256
SEND_TIMEOUT_SECONDS = 5.0
REFUSED_LOG_SECONDS = 60.0
# The forked worker is restarted after this, doubling up to the maximum.
RESTART_BACKOFF = (0.5, 30.0)
DEFAULT_SOCKET = "/run/nodeslo/nvme-helper.sock"
# What the helper keeps: Get Log Page needs CAP_SYS_ADMIN; /dev/nvmeN is root's 0600
# and the helper stays uid 0 to open it, so no DAC override is needed either.
HELPER_CAPABILITIES = frozenset({privileges.CAP_SYS_ADMIN})


@dataclass(frozen=True)
class Response:
    request_id: int
    error: int  # errno, 0 when the command completed
    nvme_status: int
    data: bytes


def pack_request(request_id: int, request: PageRequest, timeout_ms: int) -> bytes:
    name = request.controller.encode("ascii", "replace")
    if len(name) > 16:
        raise Refused(f"{request.controller[:40]!r}: not an NVMe controller name")
    return REQUEST.pack(
        request_id, request.opcode, request.code, request.uuid_index, 0, name, timeout_ms
    )


def unpack_request(message: bytes) -> tuple[int, PageRequest, int]:
    """(id, request, timeout ms); Refused for a message of the wrong size or name."""
    if len(message) != REQUEST.size:
        raise Refused(f"request of {len(message)} bytes, expected {REQUEST.size}")
    request_id, opcode, code, uuid_index, _, raw_name, timeout_ms = REQUEST.unpack(message)
    name = raw_name.rstrip(b"\x00")
    try:
        controller = name.decode("ascii")
    except UnicodeDecodeError:
        raise Refused(f"request {request_id}: controller name is not ASCII") from None
    return request_id, PageRequest(controller, opcode, code, uuid_index), timeout_ms


def pack_response(response: Response) -> bytes:
    return (
        RESPONSE.pack(
            response.request_id, response.error, response.nvme_status, 0, len(response.data)
        )
        + response.data
    )


def unpack_response(message: bytes) -> Response:
    if len(message) < RESPONSE.size or len(message) > MAX_RESPONSE:
        raise SourceError(f"helper answered {len(message)} bytes: not a response")
    request_id, error, status, _, length = RESPONSE.unpack_from(message)
    data = message[RESPONSE.size :]
    if len(data) != length:
        raise SourceError(f"helper response {request_id}: {len(data)} data bytes, said {length}")
    return Response(request_id, error, status, data)


class HelperServer:
    """Answers requests on connected sockets; one thread per command in flight."""

    def __init__(self, source: DirectSource) -> None:
        self.source = source
        self._busy: set[str] = set()  # controllers with a command in flight
        self._threads = 0  # command threads alive, answering included
        self._lock = threading.Lock()
        self._errors = OnceLog(log)
        self._refused = 0
        self._refused_logged = 0.0
        self.refused = 0  # for tests: requests refused in all

    def _log_refused(self, exc: Exception) -> None:
        """One line per REFUSED_LOG_SECONDS at most, however fast a peer sends junk."""
        with self._lock:
            self.refused += 1
            self._refused += 1
            now = time.monotonic()
            if now - self._refused_logged < REFUSED_LOG_SECONDS:
                return
            count, self._refused, self._refused_logged = self._refused, 0, now
        log.warning("refused request", extra={"fields": {"err": str(exc), "count": count}})

    def serve(self, sock: socket.socket) -> None:
        """Answer requests until the peer closes its end."""
        send_lock = threading.Lock()
        while True:
            try:
                message = sock.recv(REQUEST.size + 1)
            except OSError as exc:
                log.info("helper connection closed", extra={"fields": {"err": str(exc)}})
                return
            if not message:
                return
            try:
                request_id, request, timeout_ms = unpack_request(message)
                command_for(request)
            except Refused as exc:
                self._log_refused(exc)
                request_id = REQUEST.unpack(message)[0] if len(message) == REQUEST.size else 0
                self._reply(sock, send_lock, _failure(request_id, errno.EPERM, exc))
                continue
            with self._lock:
                # One command per controller, and a bound on all of them: names are only
                # checked against sysfs in the command's thread.
                busy = request.controller in self._busy or self._threads >= MAX_IN_FLIGHT
                if not busy:
                    self._busy.add(request.controller)
                    self._threads += 1
            if busy:
                busy_error = SourceError(f"{request.controller}: a command is still in flight")
                self._reply(sock, send_lock, _failure(request_id, errno.EBUSY, busy_error))
                continue
            timeout_ms = min(max(timeout_ms, 1), MAX_TIMEOUT_MS)
            threading.Thread(
                target=self._run,
                args=(sock, send_lock, request_id, request, timeout_ms),
                name=f"nvme-helper-{request.controller}",
                daemon=True,
            ).start()

    def _run(
        self,
        sock: socket.socket,
        send_lock: threading.Lock,
        request_id: int,
        request: PageRequest,
        timeout_ms: int,
    ) -> None:
        try:
            try:
                response = self._execute(request_id, request, timeout_ms)
            finally:
                with self._lock:
                    self._busy.discard(request.controller)
            self._reply(sock, send_lock, response)
        finally:
            with self._lock:
                self._threads -= 1

    def _execute(self, request_id: int, request: PageRequest, timeout_ms: int) -> Response:
        try:
            data = self.source.fetch(request, timeout_ms / 1000)
        except Unsupported as exc:
            return _failure(request_id, errno.EOPNOTSUPP, exc)
        except CommandTimeout as exc:
            return _failure(request_id, errno.ETIMEDOUT, exc)
        except Refused as exc:
            self._log_refused(exc)
            return _failure(request_id, errno.EPERM, exc)
        except SourceError as exc:
            return _failure(request_id, errno.EIO, exc)
        return Response(request_id, 0, 0, data)

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


def _failure(request_id: int, error: int, exc: SourceError) -> Response:
    reason = str(exc).encode("utf-8", "replace")[:MAX_REASON]
    return Response(request_id, error, exc.nvme_status, reason)


def fork_helper(sysfs: str, dev_dir: str = "/dev") -> socket.socket:
    """Fork the privileged helper; return the daemon's end of the socketpair.

    Called as root before any thread exists. The child keeps only CAP_SYS_ADMIN, closes
    every other file descriptor, supervises the process that answers requests (see the
    module docstring), and exits when the daemon's end closes. A thread of the daemon
    reaps it.
    """
    parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid:
        child_end.close()
        log.debug("nvme helper started", extra={"fields": {"pid": pid}})
        threading.Thread(target=_reap, args=(pid,), name="nvme-helper-reaper", daemon=True).start()
        return parent_end
    status = 1
    try:
        parent_end.close()
        _become_helper(child_end)
        status = _supervise(child_end, sysfs, dev_dir)
    except BaseException:
        log.exception("nvme helper failed")
    finally:
        os._exit(status)


def _become_helper(channel: socket.socket) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the daemon: it exits on EOF
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    privileges.set_parent_death_signal(signal.SIGTERM)
    os.closerange(3, channel.fileno())
    os.closerange(channel.fileno() + 1, privileges.max_fd())
    privileges.limit_capabilities(HELPER_CAPABILITIES)


def _supervise(channel: socket.socket, sysfs: str, dev_dir: str) -> int:
    """Run the serving process, again after each death; 0 once the daemon is gone."""
    backoff = RESTART_BACKOFF[0]
    while True:
        worker = os.fork()
        if worker == 0:
            code = 1
            try:
                privileges.set_parent_death_signal(signal.SIGTERM)
                HelperServer(DirectSource(sysfs, dev_dir)).serve(channel)
                code = 0
            except BaseException:
                log.exception("nvme helper failed")
            finally:
                os._exit(code)
        started = time.monotonic()
        _, wait_status = os.waitpid(worker, 0)
        code = os.waitstatus_to_exitcode(wait_status)
        if code == 0:
            return 0  # the daemon closed its end
        log.warning("nvme helper died, restarting it", extra={"fields": {"exit": code}})
        if time.monotonic() - started > RESTART_BACKOFF[1]:
            backoff = RESTART_BACKOFF[0]  # it had run well: a new incident
        time.sleep(backoff)
        backoff = min(backoff * 2, RESTART_BACKOFF[1])


def _reap(pid: int) -> None:
    try:
        _, wait_status = os.waitpid(pid, 0)
    except ChildProcessError:
        return
    code = os.waitstatus_to_exitcode(wait_status)
    if code != 0:
        log.error(
            "nvme helper exited: no SMART pages until the daemon restarts",
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


def serve_socket(listener: socket.socket, server: HelperServer, allowed_uids: set[int]) -> None:
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

        threading.Thread(target=handle, name="nvme-helper-conn", daemon=True).start()
