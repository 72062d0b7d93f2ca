"""The daemon's side of the helper socket: a `PageSource` that asks the helper.

Requests from several poller threads share one socket; a reader thread hands each
response to the thread waiting for its id. A caller waits at most its timeout, so a
helper stuck on a hung drive delays only the requests for that drive; the late answer
is dropped when it comes. When the socket was given as a path (the helper runs as its
own unit) the client reconnects on the next request after the helper restarted.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import socket
import threading
from dataclasses import dataclass, field

from nodeslo.nvme.helper import (
    MAX_RESPONSE,
    MAX_TIMEOUT_MS,
    Response,
    pack_request,
    unpack_response,
)
from nodeslo.nvme.requests import (
    CommandTimeout,
    PageRequest,
    Refused,
    SourceError,
    Unsupported,
)


class HelperGone(SourceError):
    """The helper's socket is closed (the helper exited) or cannot be reached."""


@dataclass
class _Waiter:
    done: threading.Event = field(default_factory=threading.Event)
    response: Response | None = None
    error: SourceError | None = None


class HelperClient:
    def __init__(self, sock: socket.socket | None = None, path: str | None = None) -> None:
        if (sock is None) == (path is None):
            raise ValueError("give the helper's socket or its path")
        self.path = path
        self._sock: socket.socket | None = None
        self._ids = itertools.count(1)
        self._waiters: dict[int, _Waiter] = {}
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._closed = False
        if sock is not None:
            self._attach(sock)

    def _attach(self, sock: socket.socket) -> None:
        self._sock = sock
        threading.Thread(
            target=self._read, args=(sock,), name="nvme-helper-client", daemon=True
        ).start()

    def _connected(self) -> socket.socket:
        with self._lock:
            if self._sock is not None:
                return self._sock
            if self.path is None or self._closed:
                raise HelperGone("the NVMe helper has exited")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                sock.connect(self.path)
            except OSError as exc:
                sock.close()
                raise HelperGone(f"NVMe helper at {self.path}: {exc.strerror}") from None
            self._attach(sock)
            return sock

    def _read(self, sock: socket.socket) -> None:
        reason = "the NVMe helper closed its socket"
        while True:
            try:
                message = sock.recv(MAX_RESPONSE + 1)
            except OSError as exc:
                reason = f"NVMe helper socket: {exc.strerror}"
                break
            if not message:
                break
            try:
                response = unpack_response(message)
            except SourceError:
                continue  # a malformed answer cannot be matched to a request
            with self._lock:
                waiter = self._waiters.pop(response.request_id, None)
            if waiter is not None:
                waiter.response = response
                waiter.done.set()
        with self._lock:
            if self._sock is sock:
                self._sock = None
            waiters, self._waiters = self._waiters, {}
        sock.close()
        for waiter in waiters.values():
            waiter.error = HelperGone(reason)
            waiter.done.set()

    def fetch(self, request: PageRequest, timeout: float) -> bytes:
        sock = self._connected()
        request_id = next(self._ids) & 0xFFFFFFFF
        timeout_ms = min(max(1, int(timeout * 1000)), MAX_TIMEOUT_MS)
        message = pack_request(request_id, request, timeout_ms)
        waiter = _Waiter()
        with self._lock:
            self._waiters[request_id] = waiter
        try:
            with self._send_lock:
                sock.send(message)
        except OSError as exc:
            with self._lock:
                self._waiters.pop(request_id, None)
            raise HelperGone(f"NVMe helper socket: {exc.strerror}") from None
        # The helper applies the same timeout to the command; a little slack lets its
        # ETIMEDOUT answer arrive before this wait gives up.
        if not waiter.done.wait(timeout + 0.5):
            with self._lock:
                self._waiters.pop(request_id, None)
            raise CommandTimeout(f"{request.describe()}: no answer within {timeout:g}s")
        if waiter.error is not None:
            raise waiter.error
        assert waiter.response is not None
        return _result(request, waiter.response)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed by the helper
                sock.shutdown(socket.SHUT_RDWR)


def _result(request: PageRequest, response: Response) -> bytes:
    if response.error == 0:
        return response.data
    reason = response.data.decode("utf-8", "replace") or os.strerror(response.error)
    status = response.nvme_status
    if response.error == errno.EOPNOTSUPP:
        raise Unsupported(reason, status)
    if response.error == errno.ETIMEDOUT:
        raise CommandTimeout(reason)
    if response.error == errno.EPERM:
        raise Refused(f"helper refused: {reason}")
    if response.error == errno.EBUSY:
        raise CommandTimeout(reason)
    raise SourceError(reason, status)
