"""The storage probe's sampler against real file systems and failures at the syscall seam.

What each bad target gets: an error counted for every operation the sample could not
time, the probe keeps sampling, and it recovers by itself once the target is back.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodeslo.probes import storage
from nodeslo.probes.histogram import latency_bounds
from nodeslo.probes.protocol import Reporter
from nodeslo.probes.storage import BLOCK, PROBE_FILE, Accumulator, SystemIO, Target

SIZE = 64 * BLOCK


def ok(results: list[storage.Result]) -> dict[str, int | None]:
    assert all(r.error is None for r in results), results
    return {r.op: r.latency_ns for r in results}


def failed(results: list[storage.Result]) -> dict[str, str | None]:
    assert all(r.error is not None for r in results), results
    return {r.op: r.error for r in results}


class Faulty(SystemIO):
    """Real system calls, except the ones told to fail with an errno."""

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

    def open(self, path, flags, mode=0o600):  # type: ignore[no-untyped-def]
        if flags & os.O_DIRECT:
            self._maybe("open_direct")
        return super().open(path, flags, mode)


def test_creates_the_directory_and_a_private_preallocated_probe_file(tmp_path: Path) -> None:
    target = Target(str(tmp_path / "state"), SIZE)
    latencies = ok(target.sample())
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
    target.close()


def test_a_sample_writes_at_most_one_4k_block_and_nothing_else(tmp_path: Path) -> None:
    target = Target(str(tmp_path), SIZE)
    ok(target.sample())
    probe = tmp_path / PROBE_FILE
    for _ in range(20):
        before = probe.read_bytes()
        ok(target.sample())
        after = probe.read_bytes()
        changed = {
            i // BLOCK
            for i in range(0, SIZE, BLOCK)
            if before[i : i + BLOCK] != after[i : i + BLOCK]
        }
        assert len(changed) <= 1
        assert len(after) == SIZE
    assert sorted(os.listdir(tmp_path)) == [PROBE_FILE]
    target.close()


def test_latency_is_the_clock_around_the_system_call(tmp_path: Path) -> None:
    ticks = iter([1_000, 31_000, 50_000, 95_000])  # write 30 µs, read 45 µs
    target = Target(str(tmp_path), SIZE, clock=lambda: next(ticks))
    assert ok(target.sample()) == {"write_sync": 30_000, "read": 45_000}
    target.close()


def test_missing_parent_is_an_error_and_nothing_is_created(tmp_path: Path) -> None:
    path = tmp_path / "volume" / "state"
    target = Target(str(path), SIZE)
    errors = failed(target.sample())
    assert set(errors) == {"write_sync", "read"}
    assert "parent" in str(errors["read"])
    assert not (tmp_path / "volume").exists()
    (tmp_path / "volume").mkdir()  # the volume is mounted: recovers by itself
    ok(target.sample())
    target.close()


def test_a_target_that_disappears_counts_errors_then_recovers(tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    target = Target(str(volume / "state"), SIZE)
    ok(target.sample())
    shutil.rmtree(volume)
    # The open descriptors would still "work" on the unlinked file: the probe notices.
    failed(target.sample())
    failed(target.sample())
    volume.mkdir()
    ok(target.sample())
    assert (volume / "state" / PROBE_FILE).stat().st_size == SIZE
    target.close()


def test_a_probe_file_replaced_underneath_is_reopened(tmp_path: Path) -> None:
    target = Target(str(tmp_path), SIZE)
    ok(target.sample())
    (tmp_path / PROBE_FILE).unlink()
    ok(target.sample())  # recreated and reopened, not the unlinked inode
    assert (tmp_path / PROBE_FILE).stat().st_size == SIZE
    target.close()


def test_a_planted_symlink_is_never_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious" * 1000)
    state = tmp_path / "state"
    state.mkdir()
    (state / PROBE_FILE).symlink_to(victim)
    target = Target(str(state), SIZE)
    errors = failed(target.sample())
    assert "left alone" in str(errors["write_sync"])
    assert victim.read_bytes() == b"precious" * 1000
    target.close()


def test_a_file_owned_by_someone_else_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / PROBE_FILE).write_bytes(b"\0" * SIZE)
    target = Target(str(tmp_path), SIZE, uid=os.geteuid() + 1)
    assert "left alone" in str(failed(target.sample())["read"])


def test_a_regular_file_as_target_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_bytes(b"x")
    errors = failed(Target(str(path), SIZE).sample())
    assert "not a directory or block device" in str(errors["read"])
    assert path.read_bytes() == b"x"


def test_a_changed_file_size_rebuilds_the_probe_file(tmp_path: Path) -> None:
    ok(Target(str(tmp_path), SIZE).sample())
    target = Target(str(tmp_path), 2 * SIZE)
    ok(target.sample())
    assert (tmp_path / PROBE_FILE).stat().st_size == 2 * SIZE
    assert sorted(os.listdir(tmp_path)) == [PROBE_FILE]
    target.close()


@pytest.mark.parametrize(
    ("call", "code"), [("pwrite", errno.ENOSPC), ("pwrite", errno.EROFS), ("pwrite", errno.EIO)]
)
def test_a_failing_write_is_counted_and_the_probe_goes_on(
    tmp_path: Path, call: str, code: int
) -> None:
    seam = Faulty()
    target = Target(str(tmp_path), SIZE, io=seam)
    ok(target.sample())
    seam.fail[call] = code
    results = {r.op: r for r in target.sample()}
    assert results["write_sync"].error is not None
    assert errno.errorcode[code] in results["write_sync"].error
    assert results["read"].error is None  # reads go on when writes fail
    del seam.fail[call]
    ok(target.sample())
    target.close()


def test_a_failing_read_is_counted(tmp_path: Path) -> None:
    seam = Faulty()
    target = Target(str(tmp_path), SIZE, io=seam)
    seam.fail["pread"] = errno.EIO
    results = {r.op: r for r in target.sample()}
    assert results["write_sync"].error is None and "EIO" in str(results["read"].error)
    del seam.fail["pread"]
    ok(target.sample())
    target.close()


def test_o_direct_refused_falls_back_to_fdatasync_and_dropping_the_cache(tmp_path: Path) -> None:
    seam = Faulty()
    seam.fail["open_direct"] = errno.EINVAL
    target = Target(str(tmp_path), SIZE, io=seam)
    ok(target.sample())
    assert target.mode == "buffered"
    # the sync is inside the timed section; the cache drop precedes the timed read
    assert seam.calls[-4:] == ["pwrite", "fdatasync", "drop_cache", "pread"]
    target.close()


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
        target = Target(str(mnt / "state"), 32 * BLOCK)
        errors = failed(target.sample())
        assert "ENOSPC" in str(errors["write_sync"])
        assert not (mnt / "state" / (PROBE_FILE + ".tmp")).exists()  # no half file left
        failed(target.sample())
        filler.unlink()
        ok(target.sample())
        target.close()


def test_a_file_system_turned_read_only_fails_writes_and_keeps_reading(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "mnt", "1m") as mnt:
        target = Target(str(mnt), 16 * BLOCK)
        ok(target.sample())
        target.close()  # the kernel refuses a read-only remount while a writer is open
        remount(mnt, "ro")
        results = {r.op: r for r in target.sample()}
        assert "EROFS" in str(results["write_sync"].error)
        assert results["read"].error is None
        remount(mnt, "rw")
        ok(target.sample())
        target.close()


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
    for _ in range(5):
        assert set(ok(target.sample())) == {"read"}
    assert target.kind == "block" and target.device == os.path.basename(loop_device)
    assert (tmp_path / "disk.img").read_bytes() == before
    target.close()


def test_a_vanished_block_device_is_not_replaced_by_a_directory(tmp_path: Path) -> None:
    seam = Faulty()
    node = tmp_path / "dev"
    target = Target(str(node), SIZE, io=seam)
    target.kind = "block"  # as if it had been a device that was hot-removed
    assert set(failed(target.sample())) == {"read"}
    assert not node.exists()


# --- the process side: what is reported --------------------------------------------------


def test_reports_carry_deltas_errors_and_status(tmp_path: Path) -> None:
    bounds = latency_bounds((50e-6, 100e-6))
    good = Target(str(tmp_path / "good"), SIZE)
    bad = Target(str(tmp_path / "missing" / "state"), SIZE)
    sink = Accumulator(bounds)
    for _ in range(3):
        sink.record(good.path, good.sample())
        sink.record(bad.path, bad.sample())
    out = io.BytesIO()
    storage.report(Reporter(out), [good, bad], sink, {})
    messages = [json.loads(line) for line in out.getvalue().splitlines()]
    kinds = [m["t"] for m in messages]
    assert kinds.count("target") == 1  # only the good one is known
    hists = {tuple(m["labels"]): m for m in messages if m["t"] == "hist"}
    assert set(hists) == {(good.path, "write_sync"), (good.path, "read")}
    assert all(
        sum(m["counts"]) == 3 and len(m["counts"]) == len(bounds) + 1 for m in hists.values()
    )
    errs = {(m["target"], m["op"]): m["n"] for m in messages if m["t"] == "err"}
    assert errs == {(bad.path, "write_sync"): 3, (bad.path, "read"): 3}
    status = next(m for m in messages if m["t"] == "status")["targets"]
    assert status[good.path]["ok"] is True and status[bad.path]["ok"] is False
    # a second report holds only what happened since
    out2 = io.BytesIO()
    storage.report(
        Reporter(out2), [good, bad], sink, {good.path: (good.kind, good.mode, good.device)}
    )
    assert [json.loads(x)["t"] for x in out2.getvalue().splitlines()] == ["status"]
    good.close()


def test_each_operation_is_timed_on_its_own_and_health_needs_both(tmp_path: Path) -> None:
    import random
    import threading

    target = Target(str(tmp_path), SIZE)
    sink = Accumulator(latency_bounds())
    seen: list[str | None] = []
    sample = target.sample

    def spy(only: str | None = None) -> list[storage.Result]:
        seen.append(only)
        if len(seen) == 6:
            stop.set()
        return sample(only)

    target.sample = spy  # type: ignore[method-assign]
    stop = threading.Event()
    storage.run_target(target, 1000.0, sink, stop, random.Random(1))
    assert seen == ["write_sync", "read"] * 3  # alternating, never both at once
    assert sink.healthy(target)
    sink.record(target.path, [storage.Result("write_sync", error="EROFS")])
    assert not sink.healthy(target)  # reads still fine, writes not: the probe is down
    target.close()


def test_a_directory_it_may_not_create_says_what_to_do(tmp_path: Path) -> None:
    class NoMkdir(SystemIO):
        def mkdir(self, path: str, mode: int) -> None:
            raise PermissionError(errno.EACCES, "Permission denied", path)

    errors = failed(Target(str(tmp_path / "state"), SIZE, io=NoMkdir()).sample())
    assert "--probe.storage.target" in str(errors["write_sync"])
    assert "EACCES" in str(errors["read"])
