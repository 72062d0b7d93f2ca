"""Waiting for descriptors to become readable, with poll().

select() refuses descriptors at or above FD_SETSIZE (1024); a daemon holding sysfs
attribute files open between scrapes (readers.HeldFiles, thousands on a 256-CPU host)
hands out such numbers to every pipe and socket it opens afterwards.
"""

from __future__ import annotations

import math
import select
from collections.abc import Iterable
from typing import Protocol


class HasFileno(Protocol):
    def fileno(self) -> int: ...


def readable(fds: Iterable[int | HasFileno], timeout: float | None) -> list[int]:
    """The descriptors among `fds` that are readable, closed or failed (as select()
    counts them) within `timeout` seconds (None: no limit), as numbers."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    # Rounded up: a wait of 0.4 ms must not become a busy 0 ms poll.
    ms = None if timeout is None else math.ceil(max(0.0, timeout) * 1000)
    return [fd for fd, _events in poller.poll(ms)]
