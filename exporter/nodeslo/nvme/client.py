"""The daemon's side of the NVMe helper socket: a `PageSource` that asks the helper.

The shared helper channel (`nodeslo.privsep.client`) matches answers to callers; a
caller waits at most its timeout, so a helper stuck on a hung drive delays only the
requests for that drive. When the socket was given as a path (the helper runs as its
own unit) the client reconnects on the next request after the helper restarted.
"""

from __future__ import annotations

import errno
import os
import socket

from nodeslo.nvme.helper import pack_request
from nodeslo.nvme.requests import (
    MAX_DATA,
    CommandTimeout,
    PageRequest,
    Refused,
    SourceError,
    Unsupported,
)
from nodeslo.privsep.client import ChannelGone, ChannelTimeout, HelperChannel
from nodeslo.privsep.server import Response


class HelperGone(SourceError):
    """The helper's socket is closed (the helper exited) or cannot be reached."""


class HelperClient:
    def __init__(self, sock: socket.socket | None = None, path: str | None = None) -> None:
        self._channel = HelperChannel("NVMe", MAX_DATA, sock=sock, path=path)
        self.path = path

    def fetch(self, request: PageRequest, timeout: float) -> bytes:
        def pack(request_id: int, timeout_ms: int) -> bytes:
            return pack_request(request_id, request, timeout_ms)

        try:
            response = self._channel.call(pack, timeout)
        except ChannelGone as exc:
            raise HelperGone(str(exc)) from None
        except ChannelTimeout as exc:
            raise CommandTimeout(f"{request.describe()}: {exc}") from None
        return _result(response)

    def close(self) -> None:
        self._channel.close()


def _result(response: Response) -> bytes:
    if response.error == 0:
        return response.data
    reason = response.data.decode("utf-8", "replace") or os.strerror(response.error)
    status = response.status
    if response.error == errno.EOPNOTSUPP:
        raise Unsupported(reason, status)
    if response.error == errno.ETIMEDOUT:
        raise CommandTimeout(reason)
    if response.error == errno.EPERM:
        raise Refused(f"helper refused: {reason}")
    if response.error == errno.EBUSY:
        raise CommandTimeout(reason)
    raise SourceError(reason, status)
