"""Descriptors past FD_SETSIZE (issue 20): the daemon raises its soft RLIMIT_NOFILE so a
256-CPU host's sysfs files can stay open between scrapes, and every wait on a pipe or
socket uses poll(), which takes any descriptor number (select() refuses 1024 and up).

What each gets: a soft limit below 8,192 is raised to 8,192 or the hard limit, whichever
is lower; one already higher, or a hard limit no higher than the soft one, is left as it
is; a pipe numbered above FD_SETSIZE is waited on like any other (readable on data, on
its writer closing; not readable when quiet within the timeout).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodeslo import fdwait, privileges, readers
from support.daemon import Daemon, command
from support.exposition import value

FD_SETSIZE = 1024


def _limits_after_raise(soft: int, hard: int) -> tuple[list[int], list[int]]:
    """(before, after) of raise_open_files_limit in a child started with these limits."""
    code = (
        "import json, resource; from nodeslo import privileges; "
        "r = privileges.raise_open_files_limit(); "
        "print(json.dumps([r, resource.getrlimit(resource.RLIMIT_NOFILE)]))"
    )
    out = subprocess.run(
        ["prlimit", f"--nofile={soft}:{_limit(hard)}", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    returned, limits = json.loads(out)
    return returned, limits


def test_the_soft_limit_is_raised_within_the_hard_one() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert hard == resource.RLIM_INFINITY or hard > privileges.WANTED_OPEN_FILES, (
        "this machine's hard RLIMIT_NOFILE is too low to test raising the soft one"
    )
    # systemd's default for services: soft 1,024 under a far higher hard limit.
    assert _limits_after_raise(1024, hard) == ([1024, 8192], [8192, hard])
    # A hard limit below the wish: up to it.
    assert _limits_after_raise(1024, 3000) == ([1024, 3000], [3000, 3000])
    # Already higher (a container's 1,048,576), or no room: left alone, never lowered.
    assert _limits_after_raise(10000, hard) == ([10000, 10000], [10000, hard])
    assert _limits_after_raise(1024, 1024) == ([1024, 1024], [1024, 1024])


def test_half_the_raised_limit_holds_the_cpuidle_files_of_256_cpus() -> None:
    files_256_cpus = 256 * 12  # 4 C-states x (usage, time, disable) per CPU
    assert min(readers.MAX_HELD_FILES, privileges.WANTED_OPEN_FILES // 2) >= files_256_cpus


@pytest.fixture
def high_pipe() -> Iterator[tuple[int, int]]:
    """A pipe whose read end is numbered above FD_SETSIZE."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = FD_SETSIZE + 500
    assert hard == resource.RLIM_INFINITY or hard > wanted
    if soft != resource.RLIM_INFINITY and soft <= wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted + 1, hard))
    r, w = os.pipe()
    high = os.dup2(r, wanted)
    os.close(r)
    try:
        yield high, w
    finally:
        os.close(high)
        with contextlib.suppress(OSError):
            os.close(w)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_descriptor_past_fd_setsize_is_waited_on(high_pipe: tuple[int, int]) -> None:
    r, w = high_pipe
    assert r >= FD_SETSIZE
    import select

    with pytest.raises(ValueError):  # the premise: select() cannot
        select.select([r], [], [], 0)
    start = time.monotonic()
    assert fdwait.readable([r], 0.05) == []
    assert time.monotonic() - start >= 0.04  # it waited, not a busy return
    os.write(w, b"x")
    assert fdwait.readable([r], 1.0) == [r]
    assert os.read(r, 1) == b"x"
    os.close(w)  # the writer gone: readable, as select() counts a hang-up
    assert fdwait.readable([r], 1.0) == [r]
    assert os.read(r, 1) == b""


def test_sockets_are_taken_by_their_descriptor() -> None:
    a, b = socket.socketpair()
    with a, b:
        assert fdwait.readable([a, b.fileno()], 0) == []
        b.send(b"x")
        assert fdwait.readable([a, b.fileno()], 1.0) == [a.fileno()]
        # Less than a millisecond left is still a wait, rounded up, not an error.
        assert fdwait.readable([b], 0.0004) == []


def test_the_daemon_on_a_256_cpu_host_holds_its_cpuidle_files(seed_tree: Path) -> None:
    """Started as systemd starts services (soft limit 1,024): it raises the limit, and
    the C-state files of all 256 CPUs stay open between scrapes (before: 512 at most)."""
    # The limit in the child only (util-linux's prlimit execs it): this process may hold
    # more than 1,024 files itself.
    daemon = Daemon(
        subprocess.Popen(
            [
                "prlimit",
                f"--nofile=1024:{_limit(resource.getrlimit(resource.RLIMIT_NOFILE)[1])}",
                *command(seed_tree, "--collector.disable-defaults", "--collector.cpuidle"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
    ).wait_listening()
    try:
        first, second = daemon.scrape(), daemon.scrape()
        limits = Path(f"/proc/{daemon.proc.pid}/limits").read_text()
        held = [
            target
            for fd in os.listdir(f"/proc/{daemon.proc.pid}/fd")
            if "/cpuidle/" in (target := _target(daemon.proc.pid, fd))
        ]
    finally:
        daemon.stop()
    assert re.search(r"Max open files\s+8192\s", limits), limits
    assert len(held) == 256 * 12  # usage, time and disable of 4 states, every CPU
    assert value(second, "nodeslo_collector_success", collector="cpuidle") == 1
    assert value(second, "process_max_fds") == 8192
    assert first.count("nodeslo_cpuidle_") == second.count("nodeslo_cpuidle_")


def _limit(value: int) -> str:
    """A limit as prlimit(1) takes it."""
    return "unlimited" if value == resource.RLIM_INFINITY else str(value)


def _target(pid: int, fd: str) -> str:
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:  # closed meanwhile
        return ""
