"""nodeslo.inbox in this process (pytest runs tests on the main thread): commands
posted by threads, and signals taken by a thread other than the main one, wake the
main thread's wait. tests/test_daemon.py sends the daemon's own threads SIGTERM and
SIGHUP."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator

import pytest

from nodeslo.inbox import Inbox


@pytest.fixture
def inbox() -> Iterator[Inbox[str]]:
    box: Inbox[str] = Inbox({signal.SIGHUP: "reload", signal.SIGUSR2: "stop"})
    before = signal.getsignal(signal.SIGHUP)
    box.open()
    try:
        yield box
    finally:
        box.close()
    assert signal.getsignal(signal.SIGHUP) == before, "close() left the handler installed"


def test_nothing_arrives_within_the_timeout(inbox: Inbox[str]) -> None:
    assert inbox.wait(0.05) == []


def test_a_post_from_a_thread_wakes_the_wait(inbox: Inbox[str]) -> None:
    threading.Timer(0.1, inbox.post, args=("loaded",)).start()
    assert inbox.wait(10) == ["loaded"]


def test_a_signal_taken_by_another_thread_wakes_the_wait(inbox: Inbox[str]) -> None:
    """The case a lock-based wait slept through: the signal delivered to a thread that
    is not the main one."""
    parked = threading.Event()
    release = threading.Event()

    def park() -> None:
        parked.set()
        release.wait(10)

    other = threading.Thread(target=park)
    other.start()
    try:
        parked.wait(10)
        assert other.ident is not None
        signal.pthread_kill(other.ident, signal.SIGUSR2)
        assert inbox.wait(10) == ["stop"]
    finally:
        release.set()
        other.join()


def test_signals_and_posts_keep_their_order(inbox: Inbox[str]) -> None:
    signal.raise_signal(signal.SIGHUP)
    inbox.post("loaded")
    signal.raise_signal(signal.SIGUSR2)
    got: list[str] = []
    while len(got) < 3:
        more = inbox.wait(10)
        assert more, f"only {got} arrived"
        got += more
    assert got == ["reload", "loaded", "stop"]
