"""nodeslo.inbox in this process (pytest runs tests on the main thread): commands
posted by threads, and signals taken by a thread other than the main one, wake the
main thread's wait. tests/test_daemon.py sends the daemon's own threads SIGTERM and
SIGHUP."""

from __future__ import annotations

import os
import resource
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


def test_a_socket_numbered_past_select_s_limit_still_waits() -> None:
    """select() refuses descriptors from 1024 on (the full suite's process reached them
    and failed every test above); a daemon holding a large host's files open can too."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1100 + 16
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.fail(f"the hard limit on open files ({hard}) is below {wanted}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    filler: list[int] = []
    box: Inbox[str] = Inbox({signal.SIGHUP: "reload"})
    try:
        while not filler or filler[-1] < 1100:
            filler.append(os.open(os.devnull, os.O_RDONLY))
        box.open()
        threading.Timer(0.1, box.post, args=("loaded",)).start()
        assert box.wait(10) == ["loaded"]
    finally:
        box.close()
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
