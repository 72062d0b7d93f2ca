"""The Linux IPMI device interface (include/uapi/linux/ipmi.h, x86-64): what the helper runs.

    struct ipmi_req {                 offset
        unsigned char *addr;          0   an ipmi_system_interface_addr
        unsigned int   addr_len;      8
        long           msgid;         16  echoed in the response
        struct ipmi_msg {             24
            unsigned char  netfn;     24
            unsigned char  cmd;       25
            unsigned short data_len;  26
            unsigned char *data;      32
        } msg;
    };                                40 bytes
    struct ipmi_recv {
        int            recv_type;     0   1 = a response to one of our requests
        unsigned char *addr;          8   filled in: where it came from
        unsigned int   addr_len;      16
        long           msgid;         24
        struct ipmi_msg msg;          32  data[0] is the completion code
    };                                48 bytes
    struct ipmi_system_interface_addr { int addr_type (0Ch); short channel (0Fh, the
                                        BMC); unsigned char lun; }

IPMICTL_SEND_COMMAND = _IOR('i', 13, struct ipmi_req) = 0x8028690D queues the request;
the answer arrives later: poll() the fd, then IPMICTL_RECEIVE_MSG_TRUNC =
_IOWR('i', 11, struct ipmi_recv) = 0xC030690B takes one message (EAGAIN when none,
EMSGSIZE when the data was truncated). Responses to earlier requests that timed out,
and any other message, are skipped by their msgid and receive type.

The kernel checks only the device node's mode: whoever opens it may send any command,
power off included. That is why only the helper opens it, through the whitelist.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import itertools
import os
import select
import stat
import struct
import threading
import time

from nodeslo.ipmi.requests import (
    MAX_RESPONSE,
    IpmiError,
    NoDevice,
    Refused,
    Request,
    Timeout,
    check,
)
from nodeslo.readers import ReadError, read_text

IPMI_REQ = struct.Struct("=QI4xqBBH4xQ")
IPMI_RECV = struct.Struct("=i4xQI4xqBBH4xQ")
SYSTEM_INTERFACE_ADDR = struct.Struct("=ihBx")
assert IPMI_REQ.size == 40 and IPMI_RECV.size == 48 and SYSTEM_INTERFACE_ADDR.size == 8
IPMICTL_SEND_COMMAND = 0x8028690D
IPMICTL_RECEIVE_MSG_TRUNC = 0xC030690B
IPMI_SYSTEM_INTERFACE_ADDR_TYPE = 0x0C
IPMI_BMC_CHANNEL = 0x0F
IPMI_RESPONSE_RECV_TYPE = 1
# struct ipmi_addr: int addr_type, short channel, char data[32] (padded to 40).
ADDR_BUFFER = 40


class DeviceTransport:
    """Requests straight to /dev/ipmiN, one at a time; the device is opened once.

    Before the first command the node must be the character device sysfs names
    (`/sys/class/ipmi/ipmiN/dev`), checked on the open descriptor so a node swapped in
    between cannot redirect a command. After an error other than a timeout the device
    is reopened on the next command (the driver was reloaded, say).
    """

    def __init__(self, device: str = "ipmi0", sysfs: str = "/sys", dev_dir: str = "/dev") -> None:
        self.device = device
        self.sysfs = sysfs
        self.node = os.path.join(dev_dir, device)
        self._fd: int | None = None
        self._msgids = itertools.count(1)
        self._lock = threading.Lock()

    def _open(self) -> int:
        if self._fd is not None:
            return self._fd
        try:
            dev = read_text(os.path.join(self.sysfs, "class", "ipmi", self.device, "dev"))
        except ReadError as exc:
            raise IpmiError(f"{self.device}: {exc}") from None
        if dev is None:
            raise NoDevice(f"no {self.sysfs}/class/ipmi/{self.device}: no IPMI driver bound")
        try:
            fd = os.open(self.node, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise NoDevice(f"{self.node}: no such device node") from None
        except OSError as exc:
            raise IpmiError(f"{self.node}: {os.strerror(exc.errno or 0)}") from None
        try:
            info = os.fstat(fd)
            actual = f"{os.major(info.st_rdev)}:{os.minor(info.st_rdev)}"
            if not stat.S_ISCHR(info.st_mode) or actual != dev.strip():
                raise Refused(f"{self.node} is {actual}, sysfs says {dev.strip()}")
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return fd

    def call(self, request: Request, timeout: float) -> bytes:
        check(request)
        with self._lock:
            fd = self._open()
            try:
                return self._exchange(fd, request, timeout)
            except OSError as exc:
                self._close()
                reason = os.strerror(exc.errno) if exc.errno else str(exc)
                raise IpmiError(f"{request.describe()}: {self.node}: {reason}") from None

    def _exchange(self, fd: int, request: Request, timeout: float) -> bytes:
        msgid = next(self._msgids) & 0x7FFFFFFF
        address = ctypes.create_string_buffer(
            SYSTEM_INTERFACE_ADDR.pack(
                IPMI_SYSTEM_INTERFACE_ADDR_TYPE, IPMI_BMC_CHANNEL, request.lun
            ),
            SYSTEM_INTERFACE_ADDR.size,
        )
        data = ctypes.create_string_buffer(request.data, max(1, len(request.data)))
        fcntl.ioctl(
            fd,
            IPMICTL_SEND_COMMAND,
            IPMI_REQ.pack(
                ctypes.addressof(address),
                SYSTEM_INTERFACE_ADDR.size,
                msgid,
                request.netfn,
                request.cmd,
                len(request.data),
                ctypes.addressof(data),
            ),
        )
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Timeout(f"{request.describe()}: no answer from the BMC within {timeout:g}s")
            if not poller.poll(remaining * 1000):
                continue
            answer = _receive(fd)
            if answer is None:
                continue
            recv_type, answer_msgid, netfn, cmd, payload = answer
            if recv_type != IPMI_RESPONSE_RECV_TYPE or answer_msgid != msgid:
                continue  # an event, or the late answer to a request that timed out
            if netfn != request.netfn | 1 or cmd != request.cmd or not payload:
                raise IpmiError(
                    f"{request.describe()}: answer for NetFn {netfn:#04x} command {cmd:#04x}"
                )
            return payload

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        with self._lock:
            self._close()


def _receive(fd: int) -> tuple[int, int, int, int, bytes] | None:
    """(receive type, msgid, NetFn, command, data) of one message; None if none waits."""
    address = ctypes.create_string_buffer(ADDR_BUFFER)
    data = ctypes.create_string_buffer(MAX_RESPONSE)
    recv = bytearray(
        IPMI_RECV.pack(
            0, ctypes.addressof(address), ADDR_BUFFER, 0, 0, 0, MAX_RESPONSE, ctypes.addressof(data)
        )
    )
    try:
        fcntl.ioctl(fd, IPMICTL_RECEIVE_MSG_TRUNC, recv, True)
    except OSError as exc:
        if exc.errno == errno.EAGAIN:
            return None
        if exc.errno != errno.EMSGSIZE:  # truncated: the message is still delivered
            raise
    recv_type, _, _, msgid, netfn, cmd, length, _ = IPMI_RECV.unpack(recv)
    return recv_type, msgid, netfn, cmd, data.raw[: min(length, MAX_RESPONSE)]
