"""The daemon's side of the IPMI helper socket: a `Transport` that asks the helper."""

from __future__ import annotations

import errno
import os
import socket

from nodeslo.ipmi.helper import pack_request
from nodeslo.ipmi.requests import (
    MAX_RESPONSE,
    IpmiError,
    NoDevice,
    Refused,
    Request,
    Timeout,
)
from nodeslo.privsep.client import ChannelGone, ChannelTimeout, HelperChannel


class HelperGone(IpmiError):
    """The helper's socket is closed (the helper exited) or cannot be reached."""


class HelperTransport:
    def __init__(self, sock: socket.socket | None = None, path: str | None = None) -> None:
        self._channel = HelperChannel("IPMI", MAX_RESPONSE, sock=sock, path=path)
        self.path = path

    def call(self, request: Request, timeout: float) -> bytes:
        def pack(request_id: int, timeout_ms: int) -> bytes:
            return pack_request(request_id, request, timeout_ms)

        try:
            response = self._channel.call(pack, timeout)
        except ChannelGone as exc:
            raise HelperGone(str(exc)) from None
        except ChannelTimeout as exc:
            raise Timeout(f"{request.describe()}: {exc}") from None
        if response.error == 0:
            return response.data
        reason = response.data.decode("utf-8", "replace") or os.strerror(response.error)
        if response.error in (errno.ETIMEDOUT, errno.EBUSY):
            raise Timeout(reason)
        if response.error == errno.EPERM:
            raise Refused(f"helper refused: {reason}")
        if response.error == errno.ENODEV:
            raise NoDevice(reason)
        raise IpmiError(reason)

    def close(self) -> None:
        self._channel.close()
