"""The main thread's inbox: signals and worker threads hand it commands through one
socket, so a signal wakes it whichever thread the kernel delivered the signal to.

CPython runs a signal's Python handler on the main thread, and only once that thread
runs bytecode again. A main thread asleep in a lock (`queue.get()`) is woken only by a
signal the kernel gives to it; a process-directed signal goes to another thread when
the main thread already has one pending or is stopped (SIGTERM right after SIGCONT),
and a daemon so parked never stopped. With `signal.set_wakeup_fd`, the C-level handler
writes the signal's number to this socket from whatever thread took it, and the main
thread waits on the socket instead of a lock (with poll: select refuses a descriptor
numbered 1024 or more, which a daemon holding a large host's files open can reach);
threads post with a zero byte."""

from __future__ import annotations

import contextlib
import queue
import select
import signal
import socket
from types import FrameType
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_POSTED = 0  # no signal has number 0


def _ignore(signum: int, frame: FrameType | None) -> None:
    """The command is the byte on the socket; a handler must exist so the signal
    neither kills the process (SIGTERM's default) nor is dropped before the byte is
    written (SIG_IGN)."""


class Inbox(Generic[T]):
    """Commands for the main thread: `signals` maps a signal to the command it stands
    for; `post()` adds one from any thread. Open it on the main thread, then `wait()`."""

    def __init__(self, signals: dict[int, T]) -> None:
        self._signals = signals
        self._posted: queue.SimpleQueue[T] = queue.SimpleQueue()
        self._reader: socket.socket | None = None
        self._writer: socket.socket | None = None
        self._poll = select.poll()
        self._previous_fd = -1
        self._previous: dict[int, Any] = {}  # signal.signal's handlers

    def open(self) -> None:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._poll.register(self._reader, select.POLLIN)
        # The socket first: a signal between the two lines takes its default action
        # (as a moment before), never the handler without its byte.
        self._previous_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        self._previous = {signum: signal.signal(signum, _ignore) for signum in self._signals}

    def close(self) -> None:
        """The signals' previous handlers back (once the daemon is done: a second
        SIGTERM during its shutdown is one more command nobody reads)."""
        if self._reader is None or self._writer is None:
            return
        signal.set_wakeup_fd(self._previous_fd)
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._poll.unregister(self._reader)
        self._reader.close()
        self._writer.close()
        self._reader = self._writer = None

    def post(self, command: T) -> None:
        """From any thread: queued first, then the byte that wakes the main thread."""
        self._posted.put(command)
        if self._writer is not None:
            # A full buffer already holds a byte that will wake it.
            with contextlib.suppress(BlockingIOError, OSError):
                self._writer.send(bytes([_POSTED]))

    def wait(self, timeout: float | None) -> list[T]:
        """The commands that arrived, in order; [] after `timeout` seconds (None: wait
        until one comes)."""
        assert self._reader is not None, "open() the inbox first"
        if not self._poll.poll(None if timeout is None else timeout * 1000):
            return []
        try:
            data = self._reader.recv(4096)
        except BlockingIOError:
            return []
        commands: list[T] = []
        for byte in data:
            if byte == _POSTED:
                commands += self._drain()
            elif byte in self._signals:
                commands.append(self._signals[byte])
        return commands

    def _drain(self) -> list[T]:
        drained: list[T] = []
        with contextlib.suppress(queue.Empty):
            while True:
                drained.append(self._posted.get_nowait())
        return drained
