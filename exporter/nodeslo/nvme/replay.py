"""Pages from files instead of the device: `--collector.nvme.replay-dir DIR`.

DIR/<controller>/log-02.bin, log-c0.bin, identify-ctrl.bin and identify-uuid.bin, as
`nodeslo nvme dump` writes them. A missing file is a page the controller does not
implement, which is how a dump records a drive without OCP support; a missing
controller directory is a failed read (nothing captured yet), retried next round.
A dump stages a controller in a hidden directory and renames it into place when
complete; hidden directories are not controllers.
"""

from __future__ import annotations

import os

from nodeslo.nvme import identify, ocp, smart
from nodeslo.nvme.ioctl import OPCODE_GET_LOG_PAGE, OPCODE_IDENTIFY
from nodeslo.nvme.requests import (
    ALLOWED,
    PageRequest,
    SourceError,
    Unsupported,
    command_for,
)
from nodeslo.readers import ReadError, read_all

FILES: dict[tuple[int, int], str] = {
    (OPCODE_GET_LOG_PAGE, smart.LID): "log-02.bin",
    (OPCODE_GET_LOG_PAGE, ocp.LID): "log-c0.bin",
    (OPCODE_IDENTIFY, identify.CNS_CONTROLLER): "identify-ctrl.bin",
    (OPCODE_IDENTIFY, identify.CNS_UUID_LIST): "identify-uuid.bin",
}
assert FILES.keys() == ALLOWED.keys()
STAGING_PREFIX = ".partial-"


def file_name(request: PageRequest) -> str:
    return FILES[(request.opcode, request.code)]


class ReplaySource:
    def __init__(self, directory: str) -> None:
        self.directory = directory

    def controllers(self) -> list[str]:
        """Controllers that have a directory in the replay."""
        try:
            names = os.listdir(self.directory)
        except OSError:
            return []
        return sorted(
            n
            for n in names
            if not n.startswith(".") and os.path.isdir(os.path.join(self.directory, n))
        )

    def fetch(self, request: PageRequest, timeout: float) -> bytes:
        command_for(request)  # the same whitelist as the device path
        directory = os.path.join(self.directory, request.controller)
        if not os.path.isdir(directory):
            raise SourceError(f"{request.controller}: no replay directory {directory}")
        path = os.path.join(directory, file_name(request))
        try:
            data = read_all(path)
        except ReadError as exc:
            raise SourceError(str(exc)) from None
        if data is None:
            raise Unsupported(f"{request.describe()}: {path}: no such file")
        return data

    def close(self) -> None:
        pass
