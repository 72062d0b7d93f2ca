"""The daemon's side of a helper socket: send a request, wait for the answer with its id.

Requests from several threads share one socket; a reader thread hands each response
to the thread waiting for its id. A caller waits at most its timeout, so a helper
stuck on a hung device delays only the requests for that device; the late answer is
dropped when it comes. When the socket was given as a path (the helper runs as its
own unit) the channel reconnects on the next request after the helper restarted.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from nodeslo.privsep.server import MAX_TIMEOUT_MS, RESPONSE, Response, unpack_response


class ChannelGone(Exception):
    """The helper's socket is closed (the helper exited) or cannot be reached."""


class ChannelTimeout(Exception):
    """No answer within the caller's timeout."""


@dataclass
class _Waiter:
    done: threading.Event = field(default_factory=threading.Event)
    response: Response | None = None
    error: ChannelGone | None = None


class HelperChannel:
    def __init__(
        self,
        name: str,
        max_data: int,
        sock: socket.socket | None = None,
        path: str | None = None,
    ) -> None:
        if (sock is None) == (path is None):
            raise ValueError("give the helper's socket or its path")
        self.name = name  # "NVMe", "IPMI": in error messages
        self.path = path
        self._max_data = max_data
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
            target=self._read, args=(sock,), name=f"{self.name.lower()}-helper-client", daemon=True
        ).start()

    def _connected(self) -> socket.socket:
        with self._lock:
            if self._sock is not None:
                return self._sock
            if self.path is None or self._closed:
                raise ChannelGone(f"the {self.name} helper has exited")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                sock.connect(self.path)
            except OSError as exc:
                sock.close()
                raise ChannelGone(f"{self.name} helper at {self.path}: {exc.strerror}") from None
            self._attach(sock)
            return sock

    def _read(self, sock: socket.socket) -> None:
        reason = f"the {self.name} helper closed its socket"
        while True:
            try:
                message = sock.recv(RESPONSE.size + self._max_data + 1)
            except OSError as exc:
                reason = f"{self.name} helper socket: {exc.strerror}"
                break
            if not message:
                break
            try:
                response = unpack_response(message, self._max_data)
            except ValueError:
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
            waiter.error = ChannelGone(reason)
            waiter.done.set()

    def call(self, pack: Callable[[int, int], bytes], timeout: float) -> Response:
        """Send `pack(request id, timeout ms)`; the helper's response.

        ChannelGone when the helper is not there, ChannelTimeout past `timeout`.
        """
        sock = self._connected()
        request_id = next(self._ids) & 0xFFFFFFFF
        timeout_ms = min(max(1, int(timeout * 1000)), MAX_TIMEOUT_MS)
        message = pack(request_id, timeout_ms)
        waiter = _Waiter()
        with self._lock:
            self._waiters[request_id] = waiter
        try:
            with self._send_lock:
                sock.send(message)
        except OSError as exc:
            with self._lock:
                self._waiters.pop(request_id, None)
            raise ChannelGone(f"{self.name} helper socket: {exc.strerror}") from None
        # The helper applies the same timeout to the command; a little slack lets its
        # ETIMEDOUT answer arrive before this wait gives up.
        if not waiter.done.wait(timeout + 0.5):
            with self._lock:
                self._waiters.pop(request_id, None)
            raise ChannelTimeout(f"no answer within {timeout:g}s")
        if waiter.error is not None:
            raise waiter.error
        assert waiter.response is not None
        return waiter.response

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed by the helper
                sock.shutdown(socket.SHUT_RDWR)
