"""The pipe between a probe process and the daemon: one JSON object per line.

The same lines travel over a Unix socket when the probe runs outside the daemon
(`remote`, `relay`); there the daemon first sends the probe's configuration line.

A probe process measures and sends what it measured; the daemon only merges. Each
message has a type `t`:

- `hello`  {engine, policy, requested}     the wake-up probe's effective engine and policy
- `hello`  {start_ns}                      the storage probe's schedule starts here
- `target` {target, kind, mode, device}    what a storage target turned out to be
- `hist`   {labels, counts, sum_ns}        per-bucket counts since the last `hist`
- `err`    {target, op, n, msg, reason}    n failed samples of one operation, last reason
- `status` {at_ns, targets: {target: {op: {ok, reason, done_ns, busy_ns, overdue,
  missed}}}}                               storage heartbeat: each operation's state, and
                                           the overdue / missed counts since the last one
- `beat`   {}                              "still alive", when there was nothing to send
- `warn`   {msg}                           something the operator should read once

Times (`*_ns`) are CLOCK_MONOTONIC nanoseconds, one clock for every process of a host.

Counts are deltas, so a lost daemon-side message cannot double count, and a probe
process restarting never resets the daemon's histograms.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import IO, Any

from nodeslo.probes.histogram import Snapshot

Message = dict[str, Any]

MAX_LINE_BYTES = 1 << 20


class ParentGone(Exception):
    """The daemon closed its end of the pipe: the probe process must exit."""


class Reporter:
    """Writes messages to the daemon; raises ParentGone once it has gone away."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._pending: list[str] | None = None

    def send(self, t: str, /, **fields: Any) -> None:
        line = json.dumps({"t": t, **fields}, separators=(",", ":")) + "\n"
        if self._pending is not None:
            self._pending.append(line)
        else:
            self._write(line)

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """The messages sent inside go out in one write: one system call, and one wake-up
        of the daemon's reader, per report instead of one per message."""
        self._pending = []
        try:
            yield
        finally:
            lines, self._pending = self._pending, None
            if lines:
                self._write("".join(lines))

    def _write(self, text: str) -> None:
        try:
            self._stream.write(text.encode())
            self._stream.flush()
        except (BrokenPipeError, ValueError, OSError) as exc:
            raise ParentGone(str(exc)) from None

    def histogram(self, labels: list[str], snap: Snapshot) -> bool:
        """Send a delta if anything was observed; True if sent."""
        if snap.count == 0:
            return False
        self.send("hist", labels=labels, counts=list(snap.counts), sum_ns=snap.sum_ns)
        return True


class LineTooLong(ValueError):
    """More than MAX_LINE_BYTES without a newline: not a probe talking."""


class LineBuffer:
    """Splits a byte stream into the lines that are complete so far."""

    def __init__(self, limit: int = MAX_LINE_BYTES) -> None:
        self._pending = b""
        self._limit = limit

    def feed(self, chunk: bytes) -> list[bytes]:
        self._pending += chunk
        *lines, self._pending = self._pending.split(b"\n")
        if len(self._pending) > self._limit:
            raise LineTooLong(f"{len(self._pending)} bytes without a newline")
        return lines


def decode(line: bytes) -> Message:
    """One message; ValueError for anything that is not a JSON object with a type."""
    message = json.loads(line)
    if not isinstance(message, dict) or not isinstance(message.get("t"), str):
        raise ValueError(f"not a probe message: {line[:80]!r}")
    return message
