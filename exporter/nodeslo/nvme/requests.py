"""What may be asked of a controller: the whitelist, and the errors every page source raises.

The daemon, the privileged helper and the replay source share one vocabulary: a
`PageRequest` names a controller and an (opcode, LID/CNS) pair. Only four pairs exist,
each with a fixed data length, so a request can never choose how much the helper
reads or returns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from nodeslo.nvme import identify, ocp, smart
from nodeslo.nvme.ioctl import (
    OPCODE_GET_LOG_PAGE,
    OPCODE_IDENTIFY,
    AdminCommand,
    get_log_page,
)
from nodeslo.nvme.ioctl import identify as identify_command

# (opcode, LID or CNS) -> data length in bytes.
ALLOWED: dict[tuple[int, int], int] = {
    (OPCODE_GET_LOG_PAGE, smart.LID): smart.SIZE,
    (OPCODE_GET_LOG_PAGE, ocp.LID): ocp.SIZE,
    (OPCODE_IDENTIFY, identify.CNS_CONTROLLER): identify.SIZE,
    (OPCODE_IDENTIFY, identify.CNS_UUID_LIST): identify.SIZE,
}
MAX_DATA = max(ALLOWED.values())
# nvme0 ... nvme65535: the names the kernel gives controller character devices.
CONTROLLER_NAME = re.compile(r"^nvme[0-9]{1,5}$")


class SourceError(Exception):
    """A page could not be read; the message names the controller and the command."""

    def __init__(self, message: str, nvme_status: int = 0) -> None:
        super().__init__(message)
        # The controller's completion status when it answered with an error, else 0.
        self.nvme_status = nvme_status


class Unsupported(SourceError):
    """The controller does not implement this page (or the replay has no file for it)."""


class CommandTimeout(SourceError):
    """No answer within the command timeout."""


class Refused(SourceError):
    """The request is outside the whitelist, or names no existing controller."""


@dataclass(frozen=True)
class PageRequest:
    controller: str
    opcode: int
    code: int  # LID for Get Log Page, CNS for Identify
    uuid_index: int = 0

    def describe(self) -> str:
        kind = "Get Log Page" if self.opcode == OPCODE_GET_LOG_PAGE else "Identify CNS"
        if (self.opcode, self.code) not in ALLOWED:
            kind = f"opcode {self.opcode:#04x} code"
        return f"{self.controller}: {kind} {self.code:02X}h"


def smart_log(controller: str) -> PageRequest:
    return PageRequest(controller, OPCODE_GET_LOG_PAGE, smart.LID)


def ocp_log(controller: str, uuid_index: int = 0) -> PageRequest:
    return PageRequest(controller, OPCODE_GET_LOG_PAGE, ocp.LID, uuid_index)


def identify_controller(controller: str) -> PageRequest:
    return PageRequest(controller, OPCODE_IDENTIFY, identify.CNS_CONTROLLER)


def identify_uuid_list(controller: str) -> PageRequest:
    return PageRequest(controller, OPCODE_IDENTIFY, identify.CNS_UUID_LIST)


def command_for(request: PageRequest) -> AdminCommand:
    """The admin command for a whitelisted request; Refused for anything else."""
    if not CONTROLLER_NAME.match(request.controller):
        raise Refused(f"{request.controller[:40]!r}: not an NVMe controller name")
    length = ALLOWED.get((request.opcode, request.code))
    if length is None:
        raise Refused(f"{request.describe()}: not on the whitelist")
    if not 0 <= request.uuid_index <= 0x7F:
        raise Refused(f"{request.describe()}: UUID index {request.uuid_index} out of range")
    if request.opcode == OPCODE_GET_LOG_PAGE:
        return get_log_page(request.code, length, request.uuid_index)
    if request.uuid_index:
        raise Refused(f"{request.describe()}: Identify takes no UUID index")
    return identify_command(request.code, length)


class PageSource(Protocol):
    """Where pages come from: the device via the helper, the device directly, a replay."""

    def fetch(self, request: PageRequest, timeout: float) -> bytes:
        """The page's bytes; Unsupported, CommandTimeout, Refused or SourceError."""
        ...

    def close(self) -> None: ...
