"""The storage probe's sampler: real file systems, failures at the syscall seam, and its
schedule and accounting on a fake clock.

What each bad target gets: an error counted for every operation the probe could not
time (with a reason), the probe keeps sampling, and it recovers by itself once the
target is back — except on another file system, which it never follows. What a slow or
stuck device gets: every intended operation counted, bad as soon as it is overdue.
"""

from __future__ import annotations

import contextlib
import errno
import io
import itertools
import json
import os
import random
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from nodeslo.probes import storage
from nodeslo.probes.histogram import bound_ns, latency_bounds
from nodeslo.probes.protocol import Reporter
from nodeslo.probes.storage import (
    BLOCK,
    NS,
    PROBE_FILE,
    Lane,
    Schedule,
    SystemIO,
    Target,
)

SIZE = 64 * BLOCK
BOUNDS = latency_bounds((50e-6, 100e-6))
US = 1000
MS = 1_000_000


@dataclass
class Outcome:
    latency_ns: int | None
    error: str | None
    reason: str


def lanes_of(target: Target, rate: float = 10.0, overdue: float = 100e-6) -> dict[str, Lane]:
    schedule = Schedule(target.clock(), rate, storage.OPS, random.Random(1))
    return {
        op: Lane(target, op, schedule, bounds=BOUNDS, overdue_seconds=overdue) for op in storage.OPS
    }


def sample(lanes: dict[str, Lane]) -> dict[str, Outcome]:
    out = {}
    for op, lane in lanes.items():
        lane.run_once()
        if lane.retired:
            continue
        drained = lane.drain()
        if drained.errors:
            out[op] = Outcome(None, drained.error, lane.reason)
        else:
            out[op] = Outcome(drained.histogram.sum_ns, None, "")
    return out


def ok(results: dict[str, Outcome]) -> dict[str, int | None]:
    assert all(r.error is None for r in results.values()), results
    return {op: r.latency_ns for op, r in results.items()}


def failed(results: dict[str, Outcome]) -> dict[str, Outcome]:
    assert results and all(r.error is not None for r in results.values()), results
    return results


def close(lanes: dict[str, Lane]) -> None:
    for lane in lanes.values():
        lane.close()


class Clock:
    """A monotonic clock in ns that only moves when told to."""

    def __init__(self, start: int = 1_000 * NS) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now

    def advance(self, ns: int) -> None:
        self.now += ns


class Faulty(SystemIO):
    """Real system calls, except the ones told to fail with an errno; counts calls."""

    def __init__(self) -> None:
        self.fail: dict[str, int] = {}
        self.calls: list[str] = []

    def _maybe(self, name: str) -> None:
        self.calls.append(name)
        if name in self.fail:
            raise OSError(self.fail[name], os.strerror(self.fail[name]))

    def pwrite(self, fd, buf, offset):  # type: ignore[no-untyped-def]
        self._maybe("pwrite")
        return super().pwrite(fd, buf, offset)

    def pread(self, fd, buf, offset):  # type: ignore[no-untyped-def]
        self._maybe("pread")
        return super().pread(fd, buf, offset)

    def fdatasync(self, fd):  # type: ignore[no-untyped-def]
        self._maybe("fdatasync")
        super().fdatasync(fd)

    def drop_cache(self, fd, offset, length):  # type: ignore[no-untyped-def]
        self._maybe("drop_cache")
        super().drop_cache(fd, offset, length)

    def write(self, fd, data):  # type: ignore[no-untyped-def]
        self._maybe("write")
        return super().write(fd, data)

    def open(self, path, flags, mode=0o600):  # type: ignore[no-untyped-def]
        if flags & os.O_DIRECT:
            self._maybe("open_direct")
        self.calls.append("open")
        return super().open(path, flags, mode)

    def lstat(self, path):  # type: ignore[no-untyped-def]
        self.calls.append("lstat")
        return super().lstat(path)

    def stat(self, path):  # type: ignore[no-untyped-def]
        self.calls.append("stat")
        return super().stat(path)

    def statvfs(self, path):  # type: ignore[no-untyped-def]
        self._maybe("statvfs")
        return super().statvfs(path)


class Timed(Faulty):
    """The device's latency, on the fake clock: each pwrite/pread takes what is set; a
    `tick` callback runs every simulated second inside it (the reporting thread)."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock
        self.latency = {"pwrite": 30 * US, "pread": 20 * US}
        self.tick: list[Lane] = []

    def _take(self, name: str) -> None:
        left = self.latency[name]
        while left > 0:
            step = min(left, NS - self.clock.now % NS)
            self.clock.advance(step)
            left -= step
            if self.clock.now % NS == 0:
                for lane in self.tick:
                    lane.account(self.clock.now)

    def pwrite(self, fd, buf, offset):  # type: ignore[no-untyped-def]
        n = super().pwrite(fd, buf, offset)
        self._take("pwrite")
        return n

    def pread(self, fd, buf, offset):  # type: ignore[no-untyped-def]
        n = super().pread(fd, buf, offset)
        self._take("pread")
        return n


def run_for(lane: Lane, clock: Clock, seconds: float, seam: Timed) -> None:
    """The lane's own loop on the fake clock for `seconds`, reports ticking each second."""
    stop = threading.Event()
    end = clock.now + round(seconds * NS)
    seam.tick = [lane]

    def sleep(duration: float) -> None:
        target = clock.now + round(duration * NS)
        while clock.now < target:  # the reports tick while the lane sleeps too
            step = min(target - clock.now, NS - clock.now % NS)
            clock.advance(step)
            if clock.now % NS == 0:
                lane.account(clock.now)
        if clock.now >= end:
            stop.set()

    lane.run(stop, sleep=sleep)


# --- the target: creation, validation, recovery --------------------------------------------


def test_creates_the_directory_and_a_private_preallocated_probe_file(tmp_path: Path) -> None:
    target = Target(str(tmp_path / "state"), SIZE)
    lanes = lanes_of(target)
    latencies = ok(sample(lanes))
    assert set(latencies) == {"write_sync", "read"}
    assert all(ns is not None and ns > 0 for ns in latencies.values())
    directory = tmp_path / "state"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    probe = directory / PROBE_FILE
    st = probe.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()
    assert st.st_size == SIZE
    assert st.st_blocks * 512 >= SIZE  # allocated and written, not sparse
    assert sorted(os.listdir(directory)) == [PROBE_FILE]
    assert (target.kind, target.mode) == ("file", "direct")
    assert target.dev == directory.stat().st_dev
    close(lanes)


def test_a_sample_writes_at_most_one_4k_block_and_nothing_else(tmp_path: Path) -> None:
    lanes = lanes_of(Target(str(tmp_path), SIZE))
    ok(sample(lanes))
    probe = tmp_path / PROBE_FILE
    for _ in range(20):
        before = probe.read_bytes()
        ok(sample(lanes))
        after = probe.read_bytes()
        changed = {
            i // BLOCK
            for i in range(0, SIZE, BLOCK)
            if before[i : i + BLOCK] != after[i : i + BLOCK]
        }
        assert len(changed) <= 1
        assert len(after) == SIZE
    assert sorted(os.listdir(tmp_path)) == [PROBE_FILE]
    close(lanes)


def test_latency_is_the_clock_around_the_system_call(tmp_path: Path) -> None:
    clock = Clock()
    seam = Timed(clock)
    seam.latency = {"pwrite": 30 * US, "pread": 45 * US}
    lanes = lanes_of(Target(str(tmp_path), SIZE, io=seam, clock=clock))
    assert ok(sample(lanes)) == {"write_sync": 30 * US, "read": 45 * US}
    close(lanes)


def test_between_checks_a_sample_is_one_system_call(tmp_path: Path) -> None:
    """The target is re-validated once per CHECK_SECONDS, not on every operation."""
    clock = Clock()
    seam = Timed(clock)
    lanes = lanes_of(Target(str(tmp_path), SIZE, io=seam, clock=clock))
    ok(sample(lanes))
    seam.calls.clear()
    for _ in range(9):  # 0.9 s at 10/s
        clock.advance(100 * MS)
        ok(sample(lanes))
    assert seam.calls == ["pwrite", "pread"] * 9
    clock.advance(200 * MS)
    ok(sample(lanes))  # a second later: checked again, one stat + one lstat per target
    assert seam.calls[18:] == ["stat", "lstat", "pwrite", "pread"]
    close(lanes)


def test_missing_parent_is_an_error_and_nothing_is_created(tmp_path: Path) -> None:
    path = tmp_path / "volume" / "state"
    lanes = lanes_of(Target(str(path), SIZE))
    errors = failed(sample(lanes))
    assert set(errors) == {"write_sync", "read"}
    assert "parent" in str(errors["read"].error) and errors["read"].reason == "missing"
    assert not (tmp_path / "volume").exists()
    (tmp_path / "volume").mkdir()  # the volume is mounted: recovers by itself
    ok(sample(lanes))
    close(lanes)


def test_a_target_that_disappears_counts_errors_then_recovers(tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    clock = Clock()
    lanes = lanes_of(Target(str(volume / "state"), SIZE, clock=clock, io=Timed(clock)))
    ok(sample(lanes))
    shutil.rmtree(volume)
    clock.advance(2 * NS)
    # The open descriptors would still "work" on the unlinked file: the probe notices.
    failed(sample(lanes))
    failed(sample(lanes))
    volume.mkdir()  # the same file system: the directory may be made again
    ok(sample(lanes))
    assert (volume / "state" / PROBE_FILE).stat().st_size == SIZE
    close(lanes)


def test_a_probe_file_replaced_underneath_is_reopened(tmp_path: Path) -> None:
    clock = Clock()
    lanes = lanes_of(Target(str(tmp_path), SIZE, clock=clock, io=Timed(clock)))
    ok(sample(lanes))
    (tmp_path / PROBE_FILE).unlink()
    clock.advance(2 * NS)
    ok(sample(lanes))  # recreated and reopened, not the unlinked inode
    assert (tmp_path / PROBE_FILE).stat().st_size == SIZE
    for lane in lanes.values():
        assert lane._fd is not None
        assert os.fstat(lane._fd).st_nlink == 1  # holds the file in place, not a ghost
    close(lanes)


def test_a_planted_symlink_is_never_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious" * 1000)
    state = tmp_path / "state"
    state.mkdir()
    (state / PROBE_FILE).symlink_to(victim)
    errors = failed(sample(lanes_of(Target(str(state), SIZE))))
    assert "left alone" in str(errors["write_sync"].error)
    assert errors["write_sync"].reason == "foreign_file"
    assert victim.read_bytes() == b"precious" * 1000


def test_a_file_owned_by_someone_else_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / PROBE_FILE).write_bytes(b"\0" * SIZE)
    target = Target(str(tmp_path), SIZE, uid=os.geteuid() + 1)
    assert "left alone" in str(failed(sample(lanes_of(target)))["read"].error)


def test_a_regular_file_as_target_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_bytes(b"x")
    errors = failed(sample(lanes_of(Target(str(path), SIZE))))
    assert "not a directory or block device" in str(errors["read"].error)
    assert path.read_bytes() == b"x"


def test_a_changed_file_size_rebuilds_the_probe_file(tmp_path: Path) -> None:
    close_all = lanes_of(Target(str(tmp_path), SIZE))
    ok(sample(close_all))
    close(close_all)
    lanes = lanes_of(Target(str(tmp_path), 2 * SIZE))
    ok(sample(lanes))
    assert (tmp_path / PROBE_FILE).stat().st_size == 2 * SIZE
    assert sorted(os.listdir(tmp_path)) == [PROBE_FILE]
    close(lanes)


@pytest.mark.parametrize(
    ("call", "code", "reason"),
    [
        ("pwrite", errno.ENOSPC, "no_space"),
        ("pwrite", errno.EROFS, "read_only"),
        ("pwrite", errno.EIO, "io_error"),
    ],
)
def test_a_failing_write_is_counted_and_the_probe_goes_on(
    tmp_path: Path, call: str, code: int, reason: str
) -> None:
    seam = Faulty()
    lanes = lanes_of(Target(str(tmp_path), SIZE, io=seam))
    ok(sample(lanes))
    seam.fail[call] = code
    results = sample(lanes)
    assert results["write_sync"].error is not None
    assert errno.errorcode[code] in results["write_sync"].error
    assert results["write_sync"].error.startswith("write_sync: ")
    assert results["write_sync"].reason == reason
    assert results["read"].error is None  # reads go on when writes fail
    del seam.fail[call]
    ok(sample(lanes))
    close(lanes)


def test_a_failing_read_is_counted(tmp_path: Path) -> None:
    seam = Faulty()
    lanes = lanes_of(Target(str(tmp_path), SIZE, io=seam))
    seam.fail["pread"] = errno.EIO
    results = sample(lanes)
    assert results["write_sync"].error is None and "EIO" in str(results["read"].error)
    del seam.fail["pread"]
    ok(sample(lanes))
    close(lanes)


def test_o_direct_refused_falls_back_to_fdatasync_and_dropping_the_cache(tmp_path: Path) -> None:
    seam = Faulty()
    seam.fail["open_direct"] = errno.EINVAL
    target = Target(str(tmp_path), SIZE, io=seam)
    lanes = lanes_of(target)
    ok(sample(lanes))
    assert target.mode == "buffered"
    # the sync is inside the timed section; the cache drop precedes the timed read
    calls = [c for c in seam.calls if c in ("pwrite", "fdatasync", "drop_cache", "pread")]
    assert calls[-4:] == ["pwrite", "fdatasync", "drop_cache", "pread"]
    close(lanes)


def test_a_directory_it_may_not_create_says_what_to_do(tmp_path: Path) -> None:
    class NoMkdir(SystemIO):
        def mkdir(self, path: str, mode: int) -> None:
            raise PermissionError(errno.EACCES, "Permission denied", path)

    errors = failed(sample(lanes_of(Target(str(tmp_path / "state"), SIZE, io=NoMkdir()))))
    assert "--probe.storage.target" in str(errors["write_sync"].error)
    assert "EACCES" in str(errors["read"].error) and errors["read"].reason == "permission"


# --- a full volume: never filled, never rewritten in a loop ---------------------------------


class Statvfs(Timed):
    """A file system of `total` bytes with `free` available, as statvfs tells it."""

    def __init__(self, clock: Clock, total: int, free: int) -> None:
        super().__init__(clock)
        self.total, self.free = total, free

    def statvfs(self, path):  # type: ignore[no-untyped-def]
        self.calls.append("statvfs")
        real = os.statvfs(path)
        frsize = real.f_frsize
        values = list(real)
        values[2] = self.total // frsize  # f_blocks
        values[4] = self.free // frsize  # f_bavail
        return os.statvfs_result(values)


def test_a_full_volume_gets_no_probe_file_and_not_a_single_write(tmp_path: Path) -> None:
    clock = Clock()
    seam = Statvfs(clock, total=100 * SIZE, free=SIZE + SIZE // 2)  # room for 1.5 files
    lanes = lanes_of(Target(str(tmp_path), SIZE, io=seam, clock=clock))
    for _ in range(50):
        errors = failed(sample(lanes))
        clock.advance(100 * MS)
    assert errors["write_sync"].reason == "no_space"
    assert "must leave" in str(errors["write_sync"].error)
    assert "write" not in seam.calls and "open" not in seam.calls  # nothing written, ever
    assert os.listdir(tmp_path) == []
    seam.free = 3 * SIZE  # space freed: the file fits with its own size again to spare
    ok(sample(lanes))
    assert (tmp_path / PROBE_FILE).stat().st_size == SIZE
    close(lanes)


def test_headroom_is_one_percent_of_the_volume_when_that_is_more(tmp_path: Path) -> None:
    clock = Clock()
    total = 1000 * SIZE  # 1 % = 10 files' worth
    seam = Statvfs(clock, total=total, free=SIZE + 9 * SIZE)
    lanes = lanes_of(Target(str(tmp_path), SIZE, io=seam, clock=clock))
    assert failed(sample(lanes))["read"].reason == "no_space"
    seam.free = SIZE + 10 * SIZE
    ok(sample(lanes))
    close(lanes)


def test_a_fill_that_runs_out_of_space_is_not_retried_for_a_minute(tmp_path: Path) -> None:
    clock = Clock()
    seam = Statvfs(clock, total=100 * SIZE, free=10 * SIZE)  # statvfs said yes, yet ENOSPC
    seam.fail["write"] = errno.ENOSPC
    lanes = lanes_of(Target(str(tmp_path), SIZE, io=seam, clock=clock))
    errors = failed(sample(lanes))
    assert errors["write_sync"].reason == "no_space"
    assert seam.calls.count("write") == 1
    assert os.listdir(tmp_path) == []  # the half-written temporary file is gone
    for _ in range(590):  # 59 s of attempts at 10/s: no new write
        clock.advance(100 * MS)
        failed(sample(lanes))
    assert seam.calls.count("write") == 1
    assert "retried every 60s" in str(failed(sample(lanes))["read"].error)
    del seam.fail["write"]
    clock.advance(2 * NS)
    ok(sample(lanes))  # a minute later: one more attempt, which succeeds
    close(lanes)


# --- another file system: never followed ------------------------------------------------------


STAT_FIELDS = (
    *("st_mode", "st_ino", "st_dev", "st_nlink", "st_uid", "st_gid", "st_size"),
    *("st_atime", "st_mtime", "st_ctime"),  # the integer seconds of the tuple form
    *("st_atime", "st_mtime", "st_ctime", "st_atime_ns", "st_mtime_ns", "st_ctime_ns"),
    *("st_blksize", "st_blocks", "st_rdev"),
)


class Moved(Timed):
    """stat/lstat/fstat report another st_dev for paths under `prefix` once `moved`."""

    def __init__(self, clock: Clock, prefix: str) -> None:
        super().__init__(clock)
        self.prefix, self.moved = prefix, False

    def _shift(self, st: os.stat_result) -> os.stat_result:
        if not self.moved:
            return st
        values = [getattr(st, name) for name in STAT_FIELDS]
        values[2] = st.st_dev + 1  # st_dev
        return os.stat_result(values[:10], dict(zip(STAT_FIELDS[10:], values[10:], strict=True)))

    def stat(self, path):  # type: ignore[no-untyped-def]
        st = super().stat(path)
        return self._shift(st) if path.startswith(self.prefix) else st

    def lstat(self, path):  # type: ignore[no-untyped-def]
        st = super().lstat(path)
        return self._shift(st) if path.startswith(self.prefix) else st

    def fstat(self, fd):  # type: ignore[no-untyped-def]
        return self._shift(super().fstat(fd))


def test_a_target_now_on_another_file_system_is_refused_and_its_files_closed(
    tmp_path: Path,
) -> None:
    clock = Clock()
    seam = Moved(clock, str(tmp_path / "state"))
    target = Target(str(tmp_path / "state"), SIZE, io=seam, clock=clock)
    lanes = lanes_of(target)
    ok(sample(lanes))
    pinned = target.dev
    seam.moved = True
    clock.advance(2 * NS)
    errors = failed(sample(lanes))
    for outcome in errors.values():
        assert outcome.reason == "other_file_system"
        assert "not followed" in str(outcome.error)
    assert all(lane._fd is None for lane in lanes.values())  # nothing held on the old one
    assert target.dev == pinned  # what it measures does not change
    seam.calls.clear()
    for _ in range(20):
        clock.advance(100 * MS)
        failed(sample(lanes))
    assert "open" not in seam.calls and "pwrite" not in seam.calls
    seam.moved = False  # the volume is back: measured again
    clock.advance(2 * NS)
    ok(sample(lanes))
    close(lanes)


def test_a_missing_target_whose_parent_is_on_another_file_system_is_not_recreated(
    tmp_path: Path,
) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    clock = Clock()
    seam = Moved(clock, str(volume))
    lanes = lanes_of(Target(str(volume / "state"), SIZE, io=seam, clock=clock))
    ok(sample(lanes))
    shutil.rmtree(volume / "state")
    seam.moved = True  # the mount is gone: the parent is the root file system's directory
    clock.advance(2 * NS)
    errors = failed(sample(lanes))
    assert errors["write_sync"].reason == "other_file_system"
    assert "is missing and its parent is on" in str(errors["write_sync"].error)
    assert not (volume / "state").exists()  # nothing written on the wrong file system
    close(lanes)


# --- real file systems ------------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "nodeslo-test", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount(path: Path, option: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{option}", str(path)], check=True)


def test_a_full_file_system_is_counted_then_recovers(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "mnt", "512k") as mnt:
        filler = mnt / "filler"
        with contextlib.suppress(OSError), filler.open("wb") as f:
            f.write(b"\0" * (1 << 20))  # ENOSPC part way: the file system is full
        lanes = lanes_of(Target(str(mnt / "state"), 32 * BLOCK))
        errors = failed(sample(lanes))
        assert "ENOSPC" in str(errors["write_sync"].error)
        assert errors["write_sync"].reason == "no_space"
        assert os.listdir(mnt / "state") == []  # not even a half file
        failed(sample(lanes))
        filler.unlink()
        ok(sample(lanes))
        close(lanes)


def test_a_file_system_turned_read_only_fails_writes_and_keeps_reading(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "mnt", "1m") as mnt:
        clock = Clock()
        lanes = lanes_of(Target(str(mnt), 16 * BLOCK, io=Timed(clock), clock=clock))
        ok(sample(lanes))
        close(lanes)  # the kernel refuses a read-only remount while a writer is open
        remount(mnt, "ro")
        results = sample(lanes)
        assert "EROFS" in str(results["write_sync"].error)
        assert results["write_sync"].reason == "read_only"
        assert results["read"].error is None
        remount(mnt, "rw")
        clock.advance(2 * NS)
        ok(sample(lanes))
        close(lanes)


def test_an_unmounted_volume_is_not_recreated_on_the_root_file_system(tmp_path: Path) -> None:
    """The issue's audit: umount the volume, and the probe wrote 64 MiB to / instead."""
    mnt = tmp_path / "mnt"
    with tmpfs(mnt, "2m"):
        clock = Clock()
        target = Target(str(mnt / "state"), 32 * BLOCK, io=Timed(clock), clock=clock)
        lanes = lanes_of(target)
        ok(sample(lanes))
        device = target.device
        close(lanes)  # (the kernel refuses to unmount while the probe holds files open)
        subprocess.run(["umount", str(mnt)], check=True)
        clock.advance(2 * NS)
        for _ in range(5):
            errors = failed(sample(lanes))
            clock.advance(100 * MS)
        assert errors["read"].reason == "other_file_system"
        assert os.listdir(mnt) == []  # nothing created on the file system beneath
        assert target.device == device
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m", "nodeslo-test", str(mnt)], check=True
        )
        # Mounted again: measured again if it is the same device (a block device, or a
        # tmpfs whose anonymous device number recurred), refused otherwise.
        clock.advance(2 * NS)
        outcome = sample(lanes)
        if mnt.stat().st_dev == target.dev:
            ok(outcome)
        else:
            assert failed(outcome)["read"].reason == "other_file_system"
            assert os.listdir(mnt) == []
        close(lanes)


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[str]:
    backing = tmp_path / "disk.img"
    backing.write_bytes(os.urandom(1 << 20))
    if shutil.which("losetup") is None:
        pytest.skip("losetup is not installed")
    result = subprocess.run(
        ["losetup", "--find", "--show", str(backing)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        pytest.skip(f"no loop device here: {result.stderr.strip()}")
    device = result.stdout.strip()
    try:
        yield device
    finally:
        subprocess.run(["losetup", "--detach", device], check=False)


def test_a_block_device_is_only_ever_read(loop_device: str, tmp_path: Path) -> None:
    before = (tmp_path / "disk.img").read_bytes()
    target = Target(loop_device, SIZE)
    lanes = lanes_of(target)
    for _ in range(5):
        assert set(ok(sample(lanes))) == {"read"}
    assert lanes["write_sync"].retired
    assert target.kind == "block" and target.device == os.path.basename(loop_device)
    assert (tmp_path / "disk.img").read_bytes() == before
    close(lanes)


def test_a_vanished_block_device_is_not_replaced_by_a_directory(tmp_path: Path) -> None:
    node = tmp_path / "dev"
    target = Target(str(node), SIZE)
    target.kind, target.dev = "block", 1  # as if it had been a device that was hot-removed
    results = sample(lanes_of(target))
    assert results["read"].reason == "missing"
    assert not node.exists()


# --- the schedule ---------------------------------------------------------------------------


def test_the_schedule_keeps_the_rate_alternates_and_stays_half_a_period_apart() -> None:
    schedule = Schedule(0, 10.0, storage.OPS, random.Random(7))
    writes = [schedule.next("write_sync") for _ in range(10_000)]
    reads = [schedule.next("read") for _ in range(10_000)]
    for times in (writes, reads):
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert sum(gaps) / len(gaps) == pytest.approx(100 * MS, rel=0.02)  # 10/s each
        assert min(gaps) >= 50 * MS and max(gaps) <= 150 * MS
    # each read falls between its write and the next one, at least a quarter period away
    for w, r, w_next in zip(writes, reads, writes[1:], strict=False):
        assert w + 25 * MS - 1 <= r <= w_next - 25 * MS + 1
    # jittered: the phase within a period wanders over all of it (no phase-lock)
    phases = {(t % (100 * MS)) // (10 * MS) for t in writes}
    assert phases == set(range(10))


def test_a_retired_operation_gives_its_slots_to_the_others() -> None:
    schedule = Schedule(0, 10.0, storage.OPS, random.Random(3))
    schedule.retire("write_sync")
    reads = [schedule.next("read") for _ in range(10_000)]
    gaps = [b - a for a, b in itertools.pairwise(reads)]
    assert sum(gaps) / len(gaps) == pytest.approx(100 * MS, rel=0.02)


def test_operations_start_on_their_intended_times_whatever_the_device_does(
    tmp_path: Path,
) -> None:
    clock = Clock()
    seam = Timed(clock)
    target = Target(str(tmp_path), SIZE, io=seam, clock=clock)
    lanes = lanes_of(target)
    ok(sample(lanes))  # the probe file exists: what follows is only the schedule
    lane = lanes["write_sync"]
    starts: list[int] = []
    intended: list[int] = []
    real_pwrite, real_claim = seam.pwrite, lane.claim

    def spy_pwrite(fd, buf, offset):  # type: ignore[no-untyped-def]
        starts.append(clock.now)
        return real_pwrite(fd, buf, offset)

    def spy_claim() -> tuple[int, bool]:
        claimed = real_claim()
        intended.append(claimed[0])
        return claimed

    seam.pwrite = spy_pwrite  # type: ignore[method-assign]
    lane.claim = spy_claim  # type: ignore[method-assign]
    run_for(lane, clock, 10, seam)
    # The first start was due while the first sample ran (late by its 50 µs); every
    # other one starts exactly at its intended time.
    assert starts[1:] == intended[1 : len(starts)]
    assert len(starts) == pytest.approx(100, abs=6)  # 10/s, jittered
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 50 * MS - 50 * US and max(gaps) <= 150 * MS + 1
    drained = lane.drain()
    assert drained.histogram.count == len(starts) and drained.missed == drained.overdue == 0
    close(lanes)


# --- overdue and missed: a slow or stuck device is never silent ------------------------------


def bad(drained: storage.Drained, threshold_ns: int = 100 * US) -> int:
    """Observations above the threshold, from per-bucket counts."""
    snap = drained.histogram
    good = sum(
        n
        for bound, n in zip(snap.bounds, snap.counts, strict=False)
        if bound_ns(bound) <= threshold_ns
    )
    return snap.count - good


def test_five_second_writes_at_rate_10_are_all_bad_events_at_the_full_rate(
    tmp_path: Path,
) -> None:
    """50 µs -> 5 s: without correction, 1 sample per 5 s; here 10 bad events per second."""
    clock = Clock()
    seam = Timed(clock)
    lanes = lanes_of(Target(str(tmp_path), SIZE, io=seam, clock=clock))
    ok(sample(lanes))
    lane = lanes["write_sync"]
    seam.latency["pwrite"] = 5 * NS
    start = clock.now
    run_for(lane, clock, 60, seam)  # (the last write may end up to 5 s past the minute)
    drained = lane.drain()
    expected = (clock.now - start) / NS * 10  # the intended rate, over the time simulated
    assert drained.histogram.count == pytest.approx(expected, rel=0.03)
    assert bad(drained) == drained.histogram.count  # every one of them bad
    assert drained.missed > 500 and 10 <= drained.overdue <= 13  # 12 writes were issued
    assert seam.calls.count("pwrite") <= 14  # no catch-up burst after each 5 s write
    close(lanes)


def test_an_operation_is_bad_as_soon_as_it_is_overdue_and_counted_once(tmp_path: Path) -> None:
    clock = Clock()
    seam = Timed(clock)
    lanes = lanes_of(Target(str(tmp_path), SIZE, io=seam, clock=clock))
    ok(sample(lanes))
    lane = lanes["write_sync"]
    seen: list[storage.Drained] = []

    class Report:
        """The reporting thread, running while the write is stuck."""

        def account(self, now: int) -> None:
            lane.account(now)
            seen.append(lane.drain())

    seam.tick = [Report()]  # type: ignore[list-item]
    seam.latency["pwrite"] = round(3.5 * NS)
    clock.advance(NS - clock.now % NS - 10 * MS)  # start 10 ms before a report
    lane.claim()  # the intended start due now (the idle second's, missed, set aside)
    lane.drain()
    lane.run_once()
    # First report, 10 ms in: the write is overdue (> 100 µs) and counted there and then,
    # observed at its age (a lower bound).
    first = seen[0]
    assert (first.overdue, first.missed, first.histogram.count) == (1, 0, 1)
    assert first.histogram.sum_ns == 10 * MS and bad(first) == 1
    # Completion 3.5 s later: not observed again, no error either.
    after = lane.drain()
    assert after.histogram.count == 0 and after.errors == 0
    total = sum(d.histogram.count for d in seen)
    assert sum(d.overdue for d in seen) == 1
    assert total == 1 + sum(d.missed for d in seen)  # the write itself + the starts it held up
    close(lanes)


def test_an_overdue_operation_that_then_fails_is_not_counted_twice(tmp_path: Path) -> None:
    clock = Clock()
    seam = Timed(clock)
    lanes = lanes_of(Target(str(tmp_path), SIZE, io=seam, clock=clock))
    ok(sample(lanes))
    lane = lanes["write_sync"]
    seam.latency["pwrite"] = 2 * NS
    seam.tick = [lane]
    real = Timed.pwrite

    def failing(self, fd, buf, offset):  # type: ignore[no-untyped-def]
        real(self, fd, buf, offset)
        raise OSError(errno.EIO, "Input/output error")

    seam.pwrite = failing.__get__(seam)  # type: ignore[method-assign]
    lane.run_once()
    drained = lane.drain()
    assert drained.overdue == 1 and drained.errors == 0  # one bad event, not two
    assert "EIO" in drained.error and lane.reason == "io_error" and not lane.ok
    close(lanes)


def test_a_hung_operation_keeps_producing_bad_events_every_second(tmp_path: Path) -> None:
    """dmsetup suspend: the write never returns. Each report still counts `rate` bad."""
    clock = Clock()
    seam = Timed(clock)
    lanes = lanes_of(Target(str(tmp_path), SIZE, io=seam, clock=clock))
    ok(sample(lanes))
    lane = lanes["write_sync"]
    lane._begin(0)  # in flight, and it stays so: the thread is blocked in the kernel
    counts = []
    for _ in range(30):
        clock.advance(NS)
        lane.account(clock.now)
        drained = lane.drain()
        counts.append((drained.histogram.count, bad(drained), drained.missed, drained.overdue))
    assert counts[0][3] == 1 and all(c[3] == 0 for c in counts[1:])
    for count, nbad, missed, _ in counts[1:]:
        assert count == nbad == missed and 8 <= missed <= 12  # ~10 per second, all bad
    assert lane.busy_ns and lane.done_ns < lane.busy_ns  # what the stall gauge reads
    close(lanes)


def test_after_a_stall_the_probe_resumes_on_schedule_without_a_burst(tmp_path: Path) -> None:
    clock = Clock()
    seam = Timed(clock)
    lanes = lanes_of(Target(str(tmp_path), SIZE, io=seam, clock=clock))
    ok(sample(lanes))
    lane = lanes["write_sync"]
    seam.latency["pwrite"] = 10 * NS
    seam.tick = [lane]
    lane.run_once()  # one write that takes 10 s
    stall_end = clock.now
    intended, now = lane.claim()
    late = intended <= now
    # The next start is one whose would-be latency is still under the threshold, or later.
    assert intended + 100 * US >= stall_end
    if late:
        assert stall_end - intended <= 100 * US
    drained = lane.drain()
    assert drained.missed == pytest.approx(100, abs=3)  # the 10 s of starts, counted once
    assert drained.histogram.count == drained.missed + 1
    close(lanes)


def test_a_late_start_counts_from_its_intended_time(tmp_path: Path) -> None:
    clock = Clock()
    seam = Timed(clock)
    lanes = lanes_of(Target(str(tmp_path), SIZE, io=seam, clock=clock))
    ok(sample(lanes))
    lane = lanes["write_sync"]
    intended = clock.now - 40 * US  # the previous write ran 40 µs past this start
    lane.run_once(origin=intended)
    drained = lane.drain()
    assert drained.histogram.sum_ns == 40 * US + 30 * US  # waited + its own 30 µs
    close(lanes)


def test_reads_are_not_held_up_by_a_stuck_write(tmp_path: Path) -> None:
    """Each operation has its own thread: writes hanging do not make reads look bad."""

    class Hang(SystemIO):
        def __init__(self) -> None:
            self.release = threading.Event()

        def pwrite(self, fd, buf, offset):  # type: ignore[no-untyped-def]
            self.release.wait(30)
            return super().pwrite(fd, buf, offset)

    seam = Hang()
    target = Target(str(tmp_path), SIZE, io=seam)
    lanes = lanes_of(target, rate=50.0, overdue=0.05)
    stop = threading.Event()
    threads = [
        threading.Thread(target=lane.run, args=(stop,), daemon=True) for lane in lanes.values()
    ]
    started = time.monotonic_ns()
    for thread in threads:
        thread.start()
    time.sleep(1.2)
    now = time.monotonic_ns()
    for lane in lanes.values():
        lane.account(now)
    write, read = lanes["write_sync"].drain(), lanes["read"].drain()
    stop.set()
    seam.release.set()
    for thread in threads:
        thread.join(5)
    # Both lanes run the same 50/s schedule over the same real time: the intended starts
    # are bounded by the time that passed (a loaded machine sleeps longer than 1.2 s, and
    # starts a thread late), and the held-up writes count as many starts as the reads ran.
    most = 50 * (now - started) / 1e9 + 2
    assert write.overdue == 1 and 30 <= write.missed <= most  # all held up, all bad
    assert bad(write, 50 * MS) == write.histogram.count == write.overdue + write.missed
    assert read.overdue == read.missed == 0 and 30 <= read.histogram.count <= most
    assert abs(write.histogram.count - read.histogram.count) <= 5
    close(lanes)


# --- the process side: what is reported --------------------------------------------------


def test_reports_carry_deltas_errors_and_status(tmp_path: Path) -> None:
    good = lanes_of(Target(str(tmp_path / "good"), SIZE))
    gone = lanes_of(Target(str(tmp_path / "missing" / "state"), SIZE))
    lanes = [*good.values(), *gone.values()]
    for _ in range(3):
        for lane in lanes:
            lane.run_once()
    out = io.BytesIO()
    storage.report(Reporter(out), lanes, {}, 0)
    messages = [json.loads(line) for line in out.getvalue().splitlines()]
    kinds = [m["t"] for m in messages]
    assert kinds.count("target") == 1  # only the good one is known
    hists = {tuple(m["labels"]): m for m in messages if m["t"] == "hist"}
    good_path = str(tmp_path / "good")
    assert set(hists) == {(good_path, "write_sync"), (good_path, "read")}
    assert all(
        sum(m["counts"]) == 3 and len(m["counts"]) == len(BOUNDS) + 1 for m in hists.values()
    )
    errs = {(m["target"], m["op"]): (m["n"], m["reason"]) for m in messages if m["t"] == "err"}
    gone_path = str(tmp_path / "missing" / "state")
    assert errs == {(gone_path, "write_sync"): (3, "missing"), (gone_path, "read"): (3, "missing")}
    status = next(m for m in messages if m["t"] == "status")["targets"]
    assert status[good_path]["read"]["ok"] is True
    assert status[gone_path]["write_sync"]["ok"] is False
    assert status[gone_path]["write_sync"]["reason"] == "missing"
    assert status[good_path]["write_sync"]["done_ns"] > 0
    # a second report holds only what happened since
    out2 = io.BytesIO()
    target = good["read"].target
    described = {target.path: (target.kind, target.mode, target.device)}
    storage.report(Reporter(out2), list(good.values()), described, 0)
    assert [json.loads(x)["t"] for x in out2.getvalue().splitlines()] == ["status"]
    close(good)


def test_each_operation_runs_in_its_own_thread_on_the_real_clock(tmp_path: Path) -> None:
    config = storage.Config(
        targets=(str(tmp_path),),
        rate=200.0,
        file_size=SIZE,
        bounds=BOUNDS,
        overdue=((str(tmp_path), "write_sync", 1.0), (str(tmp_path), "read", 1.0)),
    )
    lanes = storage.build_lanes(config, time.monotonic_ns())
    stop = threading.Event()
    threads = [threading.Thread(target=lane.run, args=(stop,), daemon=True) for lane in lanes]
    for thread in threads:
        thread.start()
    threading.Event().wait(1.5)
    stop.set()
    for thread in threads:
        thread.join(5)
    counts = {lane.op: lane.drain().histogram.count for lane in lanes}
    # ~300 each in 1.5 s: every intended start is counted, run or missed
    assert all(240 <= n <= 320 for n in counts.values()), counts
    assert all(lane.ok for lane in lanes)
    for lane in lanes:
        lane.close()


def test_a_report_is_one_write_however_many_messages(tmp_path: Path) -> None:
    """Fewer system calls per report, and one wake-up of the daemon's reader, not four."""

    class Counting(io.BytesIO):
        writes = 0

        def write(self, data) -> int:  # type: ignore[no-untyped-def,override]
            self.writes += 1
            return super().write(data)

    lanes = lanes_of(Target(str(tmp_path), SIZE))
    for lane in lanes.values():
        lane.run_once()
    out = Counting()
    storage.report(Reporter(out), list(lanes.values()), {}, 0)
    kinds = [json.loads(line)["t"] for line in out.getvalue().splitlines()]
    assert sorted(kinds) == ["hist", "hist", "status", "target"]
    assert out.writes == 1
    close(lanes)
