"""A fault-injection shim loaded into a daemon under test (PYTHONPATH=tests/support/shim).

It slows the storage probe's I/O the way a failing drive or an overloaded array would:
`os.pwrite`, `os.preadv`, `os.write` and `os.fdatasync` on files under
$NODESLO_SHIM_IO_PREFIX wait for what $NODESLO_SHIM_IO_DELAY_FILE says before the real
call: a number of microseconds (0, empty or missing: no delay), or `hang`: the call
blocks, as on a suspended device-mapper table, until the file says otherwise. The wait
is inside the probe's timed region, as real device latency would be. A background
thread re-reads the file every 100 ms, so a scenario changes the delay while the daemon
runs and the timed path pays nothing for it. Nothing here is part of nodeslo; it exists
only in the test tree.
"""

from __future__ import annotations

import os
import threading
import time

_DELAY_FILE = os.environ.get("NODESLO_SHIM_IO_DELAY_FILE", "")
_PREFIX = os.environ.get("NODESLO_SHIM_IO_PREFIX", "")
_HANG = float("inf")
_SPIN = 0.002  # the last stretch of a delay is spun: sleep's timer slack would blur it

if _DELAY_FILE and _PREFIX:
    _state = {"delay": 0.0}

    def _read() -> float:
        try:
            with open(_DELAY_FILE) as handle:
                text = handle.read().strip()
        except OSError:
            return 0.0
        if text == "hang":
            return _HANG
        try:
            return float(text or 0) / 1e6
        except ValueError:
            return 0.0

    def _watch() -> None:
        while True:
            _state["delay"] = _read()
            time.sleep(0.1)

    threading.Thread(target=_watch, name="io-delay-shim", daemon=True).start()

    def _targeted(fd: int) -> bool:
        try:
            return os.readlink(f"/proc/self/fd/{fd}").startswith(_PREFIX)
        except OSError:
            return False

    def _wait(delay: float) -> None:
        if delay == _HANG:
            while _state["delay"] == _HANG:  # blocked until the scenario releases it
                time.sleep(0.05)
            return
        end = time.perf_counter() + delay
        if delay > _SPIN:
            time.sleep(delay - _SPIN)  # long delays sleep: a spin would hold a CPU
        while time.perf_counter() < end:
            pass

    def _slowed(real):  # type: ignore[no-untyped-def]
        def call(fd, *args):  # type: ignore[no-untyped-def]
            delay = _state["delay"]
            if delay > 0 and _targeted(fd):
                _wait(delay)
            return real(fd, *args)

        return call

    for _name in ("pwrite", "preadv", "write", "fdatasync"):
        setattr(os, _name, _slowed(getattr(os, _name)))
