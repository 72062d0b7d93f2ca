"""The Linux NVMe admin passthrough ioctl (include/uapi/linux/nvme_ioctl.h).

    struct nvme_passthru_cmd {          offset
        __u8  opcode;                   0
        __u8  flags;                    1
        __u16 rsvd1;                    2
        __u32 nsid;                     4
        __u32 cdw2, cdw3;               8, 12
        __u64 metadata;                 16
        __u64 addr;                     24  user buffer the controller's data lands in
        __u32 metadata_len, data_len;   32, 36
        __u32 cdw10 ... cdw15;          40 ... 60
        __u32 timeout_ms;               64  0 = the driver's admin_timeout (60 s)
        __u32 result;                   68  completion dword 0, written back
    };                                  72 bytes

NVME_IOCTL_ADMIN_CMD = _IOWR('N', 0x41, struct nvme_admin_cmd) = 0xC0484E41. The
ioctl returns 0, a positive NVMe status (the completion's status field without the
phase bit), or fails with an errno: EACCES without CAP_SYS_ADMIN (every kernel for
Get Log Page; since 6.2 some Identify CNS values are allowed without it).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import struct
from dataclasses import dataclass

PASSTHRU = struct.Struct("=BBHIIIQQIIIIIIIIII")
assert PASSTHRU.size == 72
NVME_IOCTL_ADMIN_CMD = 0xC0484E41

OPCODE_GET_LOG_PAGE = 0x02
OPCODE_IDENTIFY = 0x06
NSID_ALL = 0xFFFFFFFF
RESULT_OFFSET = 68

# Status field bits: DNR (do not retry) 14, More 13, SCT 10:8, SC 7:0.
STATUS_DNR = 0x4000
STATUS_CODE_MASK = 0x7FF
# Generic "Invalid Field in Command" and command-specific "Invalid Log Page": what a
# controller answers for a page or CNS it does not implement.
UNSUPPORTED_STATUSES = frozenset({0x002, 0x109})


class NvmeStatusError(OSError):
    """The controller completed the command with a non-zero status."""

    def __init__(self, status: int, what: str) -> None:
        self.status = status
        super().__init__(f"{what}: NVMe status {status:#06x}")

    @property
    def unsupported(self) -> bool:
        return (self.status & STATUS_CODE_MASK) in UNSUPPORTED_STATUSES


@dataclass(frozen=True)
class AdminCommand:
    opcode: int
    nsid: int
    cdw10: int
    data_len: int
    cdw11: int = 0
    cdw14: int = 0

    def describe(self) -> str:
        if self.opcode == OPCODE_GET_LOG_PAGE:
            return f"Get Log Page {self.cdw10 & 0xFF:02X}h"
        if self.opcode == OPCODE_IDENTIFY:
            return f"Identify CNS {self.cdw10 & 0xFF:02X}h"
        return f"admin opcode {self.opcode:#04x}"

    def pack(self, addr: int, timeout_ms: int) -> bytes:
        """The 72-byte nvme_passthru_cmd for a data buffer at `addr`."""
        return PASSTHRU.pack(
            self.opcode,
            0,  # flags
            0,  # rsvd1
            self.nsid,
            0,  # cdw2
            0,  # cdw3
            0,  # metadata
            addr,
            0,  # metadata_len
            self.data_len,
            self.cdw10,
            self.cdw11,
            0,  # cdw12: log page offset, lower
            0,  # cdw13: log page offset, upper
            self.cdw14,
            0,  # cdw15
            timeout_ms,
            0,  # result
        )


def get_log_page(lid: int, length: int, uuid_index: int = 0) -> AdminCommand:
    """Get Log Page for the whole controller (nsid FFFFFFFFh).

    NUMD, the dword count minus one, is split: NUMDL in cdw10 bits 31:16, NUMDU in
    cdw11 bits 15:0. RAE (cdw10 bit 15) stays 0, as nvme-cli's smart-log leaves it: the
    read re-arms the SMART asynchronous event the kernel passes on as a uevent. The
    UUID index goes in cdw14 bits 6:0.
    """
    if length <= 0 or length % 4:
        raise ValueError(f"log page length must be a positive multiple of 4, got {length}")
    if not 0 <= uuid_index <= 0x7F:
        raise ValueError(f"UUID index must be 0-127, got {uuid_index}")
    numd = length // 4 - 1
    cdw10 = (lid & 0xFF) | ((numd & 0xFFFF) << 16)
    return AdminCommand(
        OPCODE_GET_LOG_PAGE, NSID_ALL, cdw10, length, cdw11=numd >> 16, cdw14=uuid_index
    )


def identify(cns: int, length: int = 4096) -> AdminCommand:
    """Identify with the CNS in cdw10 bits 7:0; controller-wide structures take nsid 0."""
    return AdminCommand(OPCODE_IDENTIFY, 0, cns & 0xFF, length)


def submit(fd: int, command: AdminCommand, timeout_ms: int) -> bytes:
    """Run one admin command on an open /dev/nvmeN; return its data buffer.

    NvmeStatusError on a non-zero completion status; OSError (EACCES, ENODEV, EINTR,
    ...) from the ioctl itself. The driver enforces `timeout_ms`: past it the command
    is aborted (and the controller reset if the abort fails), and the ioctl returns.
    """
    buffer = ctypes.create_string_buffer(command.data_len)
    request = bytearray(command.pack(ctypes.addressof(buffer), timeout_ms))
    status = fcntl.ioctl(fd, NVME_IOCTL_ADMIN_CMD, request, True)
    if status:
        raise NvmeStatusError(status, command.describe())
    return buffer.raw


def open_controller(path: str) -> int:
    """Open a controller's character device for admin commands (read access suffices)."""
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
