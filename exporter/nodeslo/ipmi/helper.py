"""The IPMI helper: the only process that opens /dev/ipmi0.

It forwards whitelisted read-only requests (`nodeslo.ipmi.requests.ALLOWED`) to the BMC
and refuses everything else before it reaches the device. It runs on the shared helper
framework (`nodeslo.privsep`), as NVMe's does, but as its own process and with no
capability at all: /dev/ipmi0 is root's 0600 and the kernel checks nothing else, so
uid 0 is all it needs. Two ways to run it:

- forked: `nodeslo serve` started as root forks it before dropping privileges
  (`--run-as-user`); it exits when the daemon's end of the socket closes.
- its own unit: `nodeslo bmc-helper --socket PATH`; the daemon connects with
  `--collector.bmc.helper-socket PATH`.

Wire format, little-endian, fixed sizes:
  request  (20 bytes): u32 id, u8 NetFn, u8 command, u8 LUN, u8 data length,
                       8 bytes data (zero padded), u32 timeout ms
  response: the framework's (u32 id, i32 errno, u16 0, u16 0, u32 length), then the
            BMC's answer (completion code first), or the reason of an error

The BMC answers one request at a time, so the helper runs one at a time: a second
request while one is in flight is answered EBUSY at once. The framework bounds what a
peer that stops reading can hold, rate-limits the log lines of refused requests, and
restarts a forked helper's worker that dies.
"""

from __future__ import annotations

import errno
import socket
import struct

from nodeslo.ipmi.ioctl import DeviceTransport
from nodeslo.ipmi.requests import (
    MAX_REQUEST_DATA,
    IpmiError,
    NoDevice,
    Refused,
    Request,
    Timeout,
    Transport,
    check,
)
from nodeslo.privsep import server
from nodeslo.privsep.server import Refusal, Response, failure

REQUEST = struct.Struct("<IBBBB8sI")
assert REQUEST.size == 20 and MAX_REQUEST_DATA <= 8
# In a directory of its own, root's: the helper refuses one others may write, and the
# exporter's /run/nodeslo is the nodeslo user's (as nodeslo-bmc-helper.service has it).
DEFAULT_SOCKET = "/run/nodeslo-bmc/helper.sock"
# No capability: uid 0 opens the root-only node; nothing else is privileged.
HELPER_CAPABILITIES: frozenset[int] = frozenset()
BMC_KEY = "bmc"


def pack_request(request_id: int, request: Request, timeout_ms: int) -> bytes:
    if len(request.data) > 8:
        raise Refused(f"{request.describe()}: {len(request.data)} data bytes")
    return REQUEST.pack(
        request_id,
        request.netfn,
        request.cmd,
        request.lun,
        len(request.data),
        request.data,
        timeout_ms,
    )


def unpack_request(message: bytes) -> tuple[int, Request, int]:
    """(id, request, timeout ms); Refused unless well-formed and on the whitelist."""
    if len(message) != REQUEST.size:
        raise Refused(f"request of {len(message)} bytes, expected {REQUEST.size}")
    request_id, netfn, cmd, lun, length, data, timeout_ms = REQUEST.unpack(message)
    if length > 8:
        raise Refused(f"request {request_id}: data length {length}")
    request = Request(netfn, cmd, data[:length], lun)
    check(request)
    return request_id, request, timeout_ms


class IpmiService:
    name = "ipmi"
    request_size = REQUEST.size

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    def decode(self, message: bytes) -> tuple[int, Request, int]:
        request_id = REQUEST.unpack(message)[0] if len(message) == REQUEST.size else 0
        try:
            return unpack_request(message)
        except Refused as exc:
            raise Refusal(str(exc), request_id) from None

    def key(self, request: Request) -> str:
        return BMC_KEY

    def execute(self, request_id: int, request: Request, timeout_ms: int) -> Response:
        try:
            data = self.transport.call(request, timeout_ms / 1000)
        except Timeout as exc:
            return failure(request_id, errno.ETIMEDOUT, str(exc))
        except NoDevice as exc:
            return failure(request_id, errno.ENODEV, str(exc))
        except Refused as exc:
            raise Refusal(str(exc), request_id) from None
        except IpmiError as exc:
            return failure(request_id, errno.EIO, str(exc))
        return Response(request_id, 0, 0, data)


class HelperServer(server.HelperServer[Request]):
    """The IPMI helper: the shared request loop over IPMI's whitelist and `transport`."""

    def __init__(self, transport: Transport) -> None:
        super().__init__(IpmiService(transport))


def fork_helper(sysfs: str = "/sys", dev_dir: str = "/dev") -> socket.socket:
    """Fork the IPMI helper (root, no capabilities); the daemon's end of the socketpair."""
    return server.fork_helper(
        "ipmi",
        lambda: HelperServer(DeviceTransport(sysfs=sysfs, dev_dir=dev_dir)),
        HELPER_CAPABILITIES,
        lost="no BMC readings",
    )
