"""Stand-ins for the `os` module of nodeslo.readers: inject errno values, count opens.

A fixture tree is made of regular files, which never answer EAGAIN or ENODATA, and a
test running as root reads a 0400 file anyway. Replacing `nodeslo.readers.os` lets a
test make one file fail exactly as a driver or the kernel's permission check would,
through the same classification code the daemon uses:

    monkeypatch.setattr(readers, "os", FaultyOs({"temp2_input": errno.EIO}))

`CountingOs` counts the files (and directories) a scrape touches, for tests of the
static-attribute cache and for the benchmarks.
"""

from __future__ import annotations

import errno
import os
from collections import Counter
from typing import Any

# Permission is refused at open(); a driver's EAGAIN, ENODATA or EIO comes from read().
_AT_OPEN = frozenset({errno.EACCES, errno.EPERM})


class FaultyOs:
    """`os`, except that files whose path ends with a key fail with its errno."""

    def __init__(self, faults: dict[str, int]) -> None:
        self.faults = faults
        self._failing: dict[int, int] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def _fault(self, path: str) -> int | None:
        for suffix, code in self.faults.items():
            if path.endswith(suffix):
                return code
        return None

    def open(self, path: str, flags: int, mode: int = 0o777) -> int:
        code = self._fault(path)
        if code in _AT_OPEN:
            raise OSError(code, os.strerror(code), path)
        fd = os.open(path, flags, mode)
        if code is not None:
            self._failing[fd] = code
        return fd

    def read(self, fd: int, size: int) -> bytes:
        code = self._failing.get(fd)
        if code is not None:
            raise OSError(code, os.strerror(code))
        return os.read(fd, size)

    def close(self, fd: int) -> None:
        self._failing.pop(fd, None)
        os.close(fd)

    def listdir(self, path: str) -> list[str]:
        code = self._fault(path)
        if code is not None:
            raise OSError(code, os.strerror(code), path)
        return os.listdir(path)


class CountingOs:
    """`os`, counting files opened (by base name), directories listed and links read."""

    def __init__(self) -> None:
        self.opened: Counter[str] = Counter()
        self.listed = 0
        self.readlinks = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def open(self, path: str, flags: int, mode: int = 0o777) -> int:
        self.opened[os.path.basename(path)] += 1
        return os.open(path, flags, mode)

    def listdir(self, path: str) -> list[str]:
        self.listed += 1
        return os.listdir(path)

    def readlink(self, path: str) -> str:
        self.readlinks += 1
        return os.readlink(path)

    @property
    def files(self) -> int:
        return sum(self.opened.values())

    def reset(self) -> None:
        self.opened.clear()
        self.listed = 0
        self.readlinks = 0
