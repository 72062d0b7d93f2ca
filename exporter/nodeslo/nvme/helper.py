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
one thread, not one per poll; a peer that stops reading holds a bounded number of
threads, refused requests are logged at most once a minute with a count, and the forked
helper is a supervisor (root, CAP_SYS_ADMIN only) that restarts the process answering
requests if it dies. The request loop, the fork and the listening socket are the
shared helper framework's (`nodeslo.privsep`, whose docstring says how); this module is
NVMe's whitelist and wire format on it.
"""

from __future__ import annotations

import errno
import socket
import struct

from nodeslo import privileges
from nodeslo.nvme.direct import DirectSource
from nodeslo.nvme.requests import (
    MAX_DATA,
    CommandTimeout,
    PageRequest,
    PageSource,
    Refused,
    SourceError,
    Unsupported,
    command_for,
)
from nodeslo.privsep import server
from nodeslo.privsep.server import (
    MAX_CONNECTIONS,
    MAX_IN_FLIGHT,
    MAX_REASON,
    MAX_TIMEOUT_MS,
    RESPONSE,
    Refusal,
    Response,
    listen,
    pack_response,
    serve_socket,
)

__all__ = [
    "DEFAULT_SOCKET",
    "HELPER_CAPABILITIES",
    "MAX_CONNECTIONS",
    "MAX_IN_FLIGHT",
    "MAX_REASON",
    "MAX_RESPONSE",
    "MAX_TIMEOUT_MS",
    "REQUEST",
    "HelperServer",
    "NvmeService",
    "Response",
    "fork_helper",
    "listen",
    "pack_request",
    "pack_response",
    "serve_socket",
    "unpack_request",
    "unpack_response",
]

REQUEST = struct.Struct("<IBBBB16sI")
MAX_RESPONSE = RESPONSE.size + MAX_DATA
DEFAULT_SOCKET = "/run/nodeslo/nvme-helper.sock"
# What the helper keeps: Get Log Page needs CAP_SYS_ADMIN; /dev/nvmeN is root's 0600
# and the helper stays uid 0 to open it, so no DAC override is needed either.
HELPER_CAPABILITIES = frozenset({privileges.CAP_SYS_ADMIN})


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


def unpack_response(message: bytes) -> Response:
    try:
        return server.unpack_response(message, MAX_DATA)
    except ValueError as exc:
        raise SourceError(str(exc)) from None


class NvmeService:
    """Page requests for controllers that exist under sysfs, on the NVMe whitelist."""

    name = "nvme"
    request_size = REQUEST.size

    def __init__(self, source: PageSource) -> None:
        self.source = source

    def decode(self, message: bytes) -> tuple[int, PageRequest, int]:
        request_id = REQUEST.unpack(message)[0] if len(message) == REQUEST.size else 0
        try:
            request_id, request, timeout_ms = unpack_request(message)
            command_for(request)
        except Refused as exc:
            raise Refusal(str(exc), request_id) from None
        return request_id, request, timeout_ms

    def key(self, request: PageRequest) -> str:
        # Names are only checked against sysfs in the command's thread; the whitelist
        # bounds them to nvme0 ... nvme65535.
        return request.controller

    def execute(self, request_id: int, request: PageRequest, timeout_ms: int) -> Response:
        try:
            data = self.source.fetch(request, timeout_ms / 1000)
        except Unsupported as exc:
            return _failure(request_id, errno.EOPNOTSUPP, exc)
        except CommandTimeout as exc:
            return _failure(request_id, errno.ETIMEDOUT, exc)
        except Refused as exc:
            raise Refusal(str(exc), request_id) from None
        except SourceError as exc:
            return _failure(request_id, errno.EIO, exc)
        return Response(request_id, 0, 0, data)


class HelperServer(server.HelperServer[PageRequest]):
    """The NVMe helper: the shared request loop over NVMe's whitelist and `source`."""

    def __init__(self, source: PageSource) -> None:
        super().__init__(NvmeService(source))


def _failure(request_id: int, error: int, exc: SourceError) -> Response:
    return server.failure(request_id, error, str(exc), exc.nvme_status)


def fork_helper(sysfs: str, dev_dir: str = "/dev") -> socket.socket:
    """Fork the privileged NVMe helper; return the daemon's end of the socketpair.

    Called as root before the daemon drops privileges. The helper keeps only
    CAP_SYS_ADMIN, restarts its worker if it dies, and exits when the daemon's end closes.
    """
    return server.fork_helper(
        "nvme",
        lambda: HelperServer(DirectSource(sysfs, dev_dir)),
        HELPER_CAPABILITIES,
        lost="no SMART pages",
    )
