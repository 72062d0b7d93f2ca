"""A fault-injection shim loaded into a daemon under test (PYTHONPATH=tests/support/shim).

It slows the storage probe's I/O the way a failing drive or an overloaded array would:
`os.pwrite`, `os.preadv`, `os.write` and `os.fdatasync` on files under
$NODESLO_SHIM_IO_PREFIX sleep for the number of microseconds written in
$NODESLO_SHIM_IO_DELAY_FILE (0, empty or missing: no delay) before the real call.
The delay is inside the probe's timed region, as real device latency would be. A
background thread re-reads the file every 100 ms, so a scenario changes the delay while
the daemon runs and the timed path pays nothing for it. Nothing here is part of
nodeslo; it exists only in the test tree.
"""

from __future__ import annotations

import os
import threading
import time

_DELAY_FILE = os.environ.get("NODESLO_SHIM_IO_DELAY_FILE", "")
_PREFIX = os.environ.get("NODESLO_SHIM_IO_PREFIX", "")

if _DELAY_FILE and _PREFIX:
    _state = {"delay": 0.0}

    def _watch() -> None:
        while True:
            try:
                with open(_DELAY_FILE) as handle:
                    _state["delay"] = float(handle.read().strip() or 0) / 1e6
            except (OSError, ValueError):
                _state["delay"] = 0.0
            time.sleep(0.1)

    threading.Thread(target=_watch, name="io-delay-shim", daemon=True).start()

    def _targeted(fd: int) -> bool:
        try:
            return os.readlink(f"/proc/self/fd/{fd}").startswith(_PREFIX)
        except OSError:
            return False

    def _slowed(real):  # type: ignore[no-untyped-def]
        def call(fd, *args):  # type: ignore[no-untyped-def]
            delay = _state["delay"]
            if delay > 0 and _targeted(fd):
                end = time.perf_counter() + delay
                while time.perf_counter() < end:  # spin: sleep's timer slack would blur it
                    pass
            return real(fd, *args)

        return call

    for _name in ("pwrite", "preadv", "write", "fdatasync"):
        setattr(os, _name, _slowed(getattr(os, _name)))
