"""Pages straight from the device through the admin ioctl: what the privileged helper runs.

Before a command reaches a device, the controller must exist in sysfs and the device
node must be the character device sysfs names (`dev` = major:minor), checked on the
open file descriptor so a node swapped in between cannot redirect the command.
"""

from __future__ import annotations

import errno
import os
import stat

from nodeslo.nvme import ioctl
from nodeslo.nvme.requests import (
    CommandTimeout,
    PageRequest,
    Refused,
    SourceError,
    Unsupported,
    command_for,
)
from nodeslo.readers import ReadError, read_text


class DirectSource:
    def __init__(self, sysfs: str = "/sys", dev_dir: str = "/dev") -> None:
        self.sysfs = sysfs
        self.dev_dir = dev_dir

    def _open_checked(self, controller: str) -> int:
        class_dir = os.path.join(self.sysfs, "class", "nvme", controller)
        try:
            dev = read_text(os.path.join(class_dir, "dev"))
        except ReadError as exc:
            raise SourceError(f"{controller}: {exc}") from None
        if dev is None:
            raise Refused(f"{controller}: no such controller under {self.sysfs}/class/nvme")
        node = os.path.join(self.dev_dir, controller)
        try:
            fd = ioctl.open_controller(node)
        except OSError as exc:
            raise SourceError(f"{controller}: {node}: {os.strerror(exc.errno or 0)}") from None
        try:
            info = os.fstat(fd)
            expected = dev.strip()
            actual = f"{os.major(info.st_rdev)}:{os.minor(info.st_rdev)}"
            if not stat.S_ISCHR(info.st_mode) or actual != expected:
                raise Refused(f"{controller}: {node} is {actual}, sysfs says {expected}")
        except BaseException:
            os.close(fd)
            raise
        return fd

    def fetch(self, request: PageRequest, timeout: float) -> bytes:
        command = command_for(request)
        fd = self._open_checked(request.controller)
        try:
            return ioctl.submit(fd, command, max(1, int(timeout * 1000)))
        except ioctl.NvmeStatusError as exc:
            reason = f"{request.describe()}: NVMe status {exc.status:#06x}"
            if exc.unsupported:
                raise Unsupported(reason, exc.status) from None
            raise SourceError(reason, exc.status) from None
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            if exc.errno in (errno.ETIMEDOUT, errno.EINTR):
                raise CommandTimeout(f"{request.describe()}: {reason}") from None
            raise SourceError(f"{request.describe()}: {reason}") from None
        finally:
            os.close(fd)

    def close(self) -> None:
        pass
