"""Storage probe: 4 KiB synchronous write and direct read latency on a state volume.

Runs in its own process (`python -m nodeslo.probes.storage CONFIG`), one thread per
target, so a scrape holding the daemon's GIL cannot delay the clock read after a system
call, and a hung device stalls only its own target. Each sample of a target times, with
monotonic nanosecond clocks around the system call only, each operation on its own, half
a sample period after the other (so neither finds the system woken up by the other):

- `write_sync`: one 4 KiB pwrite with O_DIRECT|O_DSYNC at a random aligned offset of
  the probe file (where O_DIRECT is refused: pwrite + fdatasync, mode "buffered");
- `read`: one 4 KiB O_DIRECT pread at a random aligned offset, from the probe file or
  from a block device opened read-only (buffered mode first drops that block from the
  page cache, untimed, so the read still reaches the device).

A directory target holds one probe file, `nodeslo-probe`: created 0600 by the daemon's
user under a temporary name, written in full once (so reads hit allocated, written
blocks — ext4 answers reads of merely fallocated blocks with zeros without touching the
device), then renamed into place. Nothing else is ever written: a sample writes one
4 KiB block. A missing target directory is created (0700, one level) when its parent
exists; otherwise, and whenever the target vanishes, fills up, turns read-only or
fails, the sample counts an error for each operation it could not time, and the next
sample tries again from scratch. A probe file that is not a regular file owned by the
daemon's user (a symlink planted in the directory) is never opened or written.
"""

from __future__ import annotations

import contextlib
import errno
import json
import mmap
import os
import random
import stat
import struct
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from nodeslo.probes.histogram import LatencyHistogram
from nodeslo.probes.protocol import ParentGone, Reporter

BLOCK = 4096
PROBE_FILE = "nodeslo-probe"
FILL_CHUNK = 1 << 20
OPS = ("write_sync", "read")
JITTER = 0.5  # sample intervals uniform in [1 - J, 1 + J] / rate: no phase-lock with a periodic job
_COUNTER = struct.Struct("=Q")


# --- the system-call seam ---------------------------------------------------------------


class SystemIO:
    """Every system call the sampler makes; tests substitute failures here."""

    def open(self, path: str, flags: int, mode: int = 0o600) -> int:
        return os.open(path, flags | os.O_CLOEXEC, mode)

    def close(self, fd: int) -> None:
        os.close(fd)

    def pwrite(self, fd: int, buf: mmap.mmap, offset: int) -> int:
        return os.pwrite(fd, buf, offset)

    def pread(self, fd: int, buf: mmap.mmap, offset: int) -> int:
        return os.preadv(fd, [buf], offset)

    def write(self, fd: int, data: bytes) -> int:
        return os.write(fd, data)

    def fdatasync(self, fd: int) -> None:
        os.fdatasync(fd)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def drop_cache(self, fd: int, offset: int, length: int) -> None:
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)

    def lstat(self, path: str) -> os.stat_result:
        return os.lstat(path)

    def stat(self, path: str) -> os.stat_result:
        return os.stat(path)

    def fstat(self, fd: int) -> os.stat_result:
        return os.fstat(fd)

    def mkdir(self, path: str, mode: int) -> None:
        os.mkdir(path, mode)

    def rename(self, src: str, dst: str) -> None:
        os.rename(src, dst)

    def unlink(self, path: str) -> None:
        os.unlink(path)

    def size(self, fd: int) -> int:
        return os.lseek(fd, 0, os.SEEK_END)


SYSTEM_IO = SystemIO()


class ProbeError(OSError):
    """A target that cannot be sampled, with the reason an operator can act on."""


def describe(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0, "")
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}" + (f" ({name})" if name else "")


@dataclass(frozen=True)
class Result:
    op: str
    latency_ns: int | None = None
    error: str | None = None


def device_name(dev: int, sysfs: str) -> str:
    """The block device holding a file system (vda, nvme0n1p2, dm-0), or 'major:minor'."""
    number = f"{os.major(dev)}:{os.minor(dev)}"
    link = os.path.join(sysfs, "dev", "block", number)
    try:
        return os.path.basename(os.readlink(link))
    except OSError:
        return number


# --- one target -------------------------------------------------------------------------


@dataclass
class Target:
    """One configured path: a directory (probe file) or a block device (read only)."""

    path: str
    file_size: int = 64 << 20
    io: SystemIO = field(default_factory=SystemIO)
    clock: Callable[[], int] = time.monotonic_ns
    rng: random.Random = field(default_factory=random.Random)
    sysfs: str = "/sys"
    uid: int = field(default_factory=os.geteuid)

    kind: str = ""  # "file" | "block", once known
    mode: str = ""  # "direct" | "buffered", once an fd is open
    device: str = ""
    in_flight_since: int = 0  # monotonic ns of the I/O in progress, 0 when idle

    def __post_init__(self) -> None:
        if self.file_size < BLOCK or self.file_size % BLOCK:
            raise ValueError(f"probe file size must be a positive multiple of {BLOCK}")
        self.probe_file = os.path.join(self.path, PROBE_FILE)
        self._wfd: int | None = None
        self._rfd: int | None = None
        self._identity: tuple[int, int] | None = None
        self._blocks = 0
        self._written = 0
        self._wbuf = mmap.mmap(-1, BLOCK)  # page aligned, as O_DIRECT requires
        self._wbuf.write(os.urandom(BLOCK))  # incompressible: no drive shortcut on zeros
        self._rbuf = mmap.mmap(-1, BLOCK)

    # public ----------------------------------------------------------------------------

    def ops(self) -> tuple[str, ...]:
        return ("read",) if self.kind == "block" else OPS

    def sample(self, only: str | None = None) -> list[Result]:
        """Time both operations of this target (block devices: read), or `only` one."""
        try:
            if not self._still_there():
                self._check_target()
        except OSError as exc:
            self.close()
            return [Result(op, error=describe(exc)) for op in self.ops() if only in (None, op)]
        results = []
        if self.kind == "file" and only in (None, "write_sync"):
            results.append(self._timed("write_sync", self._write))
        if only in (None, "read"):
            results.append(self._timed("read", self._read))
        return results

    def close(self) -> None:
        for fd in (self._wfd, self._rfd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    self.io.close(fd)
        self._wfd = self._rfd = None
        self._identity = None

    # target validation ---------------------------------------------------------------

    def _still_there(self) -> bool:
        """The common case in one lstat: the probe file we hold open is still in place.

        (A deleted directory takes the file's name with it: the lstat fails.)"""
        if self.kind != "file" or self._identity is None:
            return False
        try:
            st = self.io.lstat(self.probe_file)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self._identity and st.st_size == self.file_size

    def _check_target(self) -> None:
        try:
            st = self.io.stat(self.path)
        except FileNotFoundError:
            if self.kind == "block":  # a vanished device node is never replaced by a directory
                raise ProbeError(errno.ENOENT, "block device vanished", self.path) from None
            self._create_directory()
            st = self.io.stat(self.path)
        if stat.S_ISBLK(st.st_mode):
            self._check_block(st)
        elif stat.S_ISDIR(st.st_mode):
            self._check_file()
        else:
            raise ProbeError(errno.ENOTDIR, "not a directory or block device", self.path)

    def _create_directory(self) -> None:
        parent = os.path.dirname(self.path.rstrip("/")) or "/"
        try:
            self.io.stat(parent)
        except FileNotFoundError:
            raise ProbeError(
                errno.ENOENT, "target missing and its parent too: not created", self.path
            ) from None
        try:
            self.io.mkdir(self.path, 0o700)
        except FileExistsError:
            pass
        except PermissionError:
            raise ProbeError(
                errno.EACCES,
                "cannot create the target directory (permission denied): run as a user "
                "that may, or pass --probe.storage.target DIR or --no-probe.storage",
                self.path,
            ) from None

    def _check_block(self, st: os.stat_result) -> None:
        if self.kind != "block" or self._identity != (st.st_rdev, 0):
            self.close()
            self.kind = "block"
            self.device = device_name(st.st_rdev, self.sysfs)
            self._identity = (st.st_rdev, 0)

    def _check_file(self) -> None:
        self.kind = "file"
        try:
            st = self.io.lstat(self.probe_file)
        except FileNotFoundError:
            self.close()
            self._create_probe_file()
            st = self.io.lstat(self.probe_file)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != self.uid:
            raise ProbeError(
                errno.EPERM,
                f"exists and is not a regular file owned by uid {self.uid}: left alone",
                self.probe_file,
            )
        if st.st_size != self.file_size:
            self.close()
            self._create_probe_file()
            st = self.io.lstat(self.probe_file)
        identity = (st.st_dev, st.st_ino)
        if self._identity is not None and self._identity != identity:
            self.close()  # replaced or recreated under us: reopen the new one
        if self._identity is None:
            self.device = device_name(st.st_dev, self.sysfs)
        self._identity = identity
        self._blocks = self.file_size // BLOCK

    def _create_probe_file(self) -> None:
        """Write the whole file once under a temporary name, then rename it into place."""
        temporary = self.probe_file + ".tmp"
        with contextlib.suppress(
            FileNotFoundError
        ):  # left by a crash mid-fill; unlink never follows links
            self.io.unlink(temporary)
        fd = self.io.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            chunk = os.urandom(FILL_CHUNK)
            left = self.file_size
            while left > 0:
                n = self.io.write(fd, chunk[: min(left, FILL_CHUNK)])
                if n <= 0:
                    raise ProbeError(errno.EIO, "short write filling the probe file", temporary)
                left -= n
            self.io.fsync(fd)
            self.io.drop_cache(fd, 0, self.file_size)
        except OSError:
            self.io.close(fd)
            with contextlib.suppress(OSError):
                self.io.unlink(temporary)
            raise
        self.io.close(fd)
        self.io.rename(temporary, self.probe_file)

    # the two operations ----------------------------------------------------------------

    def _open(self, flags: int) -> int:
        """Open with O_DIRECT; where the file system refuses it, without (mode buffered)."""
        path = self.path if self.kind == "block" else self.probe_file
        flags |= os.O_NOFOLLOW if self.kind == "file" else 0
        if self.mode != "buffered":
            try:
                fd = self.io.open(path, flags | os.O_DIRECT)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self.mode = "buffered"
            else:
                self.mode = "direct"
                return self._verified(fd)
        return self._verified(self.io.open(path, flags))

    def _verified(self, fd: int) -> int:
        """The fd is the file we checked, not one swapped in between lstat and open."""
        st = self.io.fstat(fd)
        ok = (
            (st.st_rdev, 0) == self._identity
            if self.kind == "block"
            else (st.st_dev, st.st_ino) == self._identity
        )
        if not ok:
            self.io.close(fd)
            raise ProbeError(errno.EAGAIN, "changed while being opened", self.path)
        if self.kind == "block":
            size = self.io.size(fd)
            self._blocks = size // BLOCK
            if self._blocks == 0:
                self.io.close(fd)
                raise ProbeError(errno.EINVAL, "block device smaller than 4 KiB", self.path)
        return fd

    def _timed(self, op: str, run: Callable[[], int]) -> Result:
        try:
            return Result(op, latency_ns=run())
        except OSError as exc:
            self.in_flight_since = 0
            if op == "write_sync":
                self._close_one("_wfd")
            else:
                self._close_one("_rfd")
            if exc.errno == errno.EINVAL and self.mode == "direct":
                self.mode = "buffered"  # O_DIRECT accepted at open, refused on I/O
            return Result(op, error=describe(exc))

    def _close_one(self, attr: str) -> None:
        fd = getattr(self, attr)
        setattr(self, attr, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                self.io.close(fd)

    def _write(self) -> int:
        if self._wfd is None:
            self._wfd = self._open(os.O_WRONLY | os.O_DSYNC)
        offset = self.rng.randrange(self._blocks) * BLOCK
        self._written += 1
        _COUNTER.pack_into(self._wbuf, 0, self._written)  # no two writes alike
        buffered = self.mode == "buffered"
        clock, io, fd = self.clock, self.io, self._wfd
        self.in_flight_since = start = clock()
        n = io.pwrite(fd, self._wbuf, offset)
        if buffered:
            io.fdatasync(fd)
        end = clock()
        self.in_flight_since = 0
        if n != BLOCK:
            raise ProbeError(errno.EIO, f"short write: {n} of {BLOCK} bytes", self.probe_file)
        return end - start

    def _read(self) -> int:
        if self._rfd is None:
            self._rfd = self._open(os.O_RDONLY)
        offset = self.rng.randrange(self._blocks) * BLOCK
        clock, io, fd = self.clock, self.io, self._rfd
        if self.mode == "buffered":
            io.drop_cache(fd, offset, BLOCK)
        self.in_flight_since = start = clock()
        n = io.pread(fd, self._rbuf, offset)
        end = clock()
        self.in_flight_since = 0
        if n != BLOCK:
            raise ProbeError(errno.EIO, f"short read: {n} of {BLOCK} bytes", self.path)
        return end - start


# --- the probe process ------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    targets: tuple[str, ...]
    rate: float
    file_size: int
    bounds: tuple[float, ...]
    sysfs: str = "/sys"
    report_seconds: float = 1.0

    def to_json(self) -> str:
        return json.dumps(
            {**self.__dict__, "targets": list(self.targets), "bounds": list(self.bounds)}
        )

    @classmethod
    def from_json(cls, text: str) -> Config:
        raw: dict[str, Any] = json.loads(text)
        raw["targets"] = tuple(raw["targets"])
        raw["bounds"] = tuple(raw["bounds"])
        return cls(**raw)


class Accumulator:
    """What the target threads measured since the last report; swapped out under a lock."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.lock = threading.Lock()
        self.histograms: dict[tuple[str, str], LatencyHistogram] = {}
        self.errors: dict[tuple[str, str], tuple[int, str]] = {}
        self.ok: dict[tuple[str, str], bool] = {}  # (target, op): last attempt succeeded

    def record(self, target: str, results: list[Result]) -> None:
        with self.lock:
            for r in results:
                key = (target, r.op)
                if r.error is not None:
                    n, _ = self.errors.get(key, (0, ""))
                    self.errors[key] = (n + 1, r.error)
                else:
                    assert r.latency_ns is not None
                    if key not in self.histograms:
                        self.histograms[key] = LatencyHistogram(self.bounds)
                    self.histograms[key].observe(r.latency_ns)
                self.ok[key] = r.error is None

    def healthy(self, target: Target) -> bool:
        """The last attempt of each of the target's operations succeeded."""
        with self.lock:
            return all(self.ok.get((target.path, op), False) for op in target.ops())

    def drain(self) -> tuple[dict[tuple[str, str], LatencyHistogram], dict[Any, tuple[int, str]]]:
        with self.lock:
            histograms, self.histograms = self.histograms, {}
            errors, self.errors = self.errors, {}
        return histograms, errors


def run_target(
    target: Target, rate: float, sink: Accumulator, stop: threading.Event, rng: random.Random
) -> None:
    """`rate` samples/s: each operation on its own, half a period apart, after idling.

    Back to back, the read would find the CPU and the device awake from the write's
    completion and come out faster than a read that follows idle time (2.5x at P50 on
    this development VM): timed apart, each is what a lone request sees.
    """
    half = 0.5 / rate
    while not stop.is_set():
        for op in OPS:
            if op in target.ops():
                sink.record(target.path, target.sample(only=op))
            # A plain sleep: Event.wait builds a lock and a condition on every call, and
            # the process is stopped by SIGKILL anyway (`stop` serves tests).
            time.sleep(half * rng.uniform(1 - JITTER, 1 + JITTER))


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m nodeslo.probes.storage CONFIG_JSON", file=sys.stderr)
        return 2
    config = Config.from_json(args[0])
    from nodeslo.probes.wakeup import become_probe_process

    become_probe_process()
    reporter = Reporter(sys.stdout.buffer)
    sink = Accumulator(config.bounds)
    stop = threading.Event()
    targets = [Target(path, config.file_size, sysfs=config.sysfs) for path in config.targets]
    for target in targets:
        thread = threading.Thread(
            target=run_target,
            args=(target, config.rate, sink, stop, random.Random()),
            name=f"target:{target.path}",
            daemon=True,
        )
        thread.start()
    described: dict[str, tuple[str, str, str]] = {}
    try:
        while True:
            time.sleep(config.report_seconds)
            report(reporter, targets, sink, described)
    except ParentGone:
        stop.set()
        return 0


def report(
    reporter: Reporter,
    targets: list[Target],
    sink: Accumulator,
    described: dict[str, tuple[str, str, str]],
) -> None:
    for target in targets:
        info = (target.kind, target.mode, target.device)
        if target.kind and target.mode and described.get(target.path) != info:
            reporter.send("target", target=target.path, kind=info[0], mode=info[1], device=info[2])
            described[target.path] = info
    histograms, errors = sink.drain()
    for (path, op), histogram in sorted(histograms.items()):
        reporter.histogram([path, op], histogram.take())
    for (path, op), (n, message) in sorted(errors.items()):
        reporter.send("err", target=path, op=op, n=n, msg=message)
    now = time.monotonic_ns()
    status = {}
    for target in targets:
        since = target.in_flight_since
        status[target.path] = {
            "ok": sink.healthy(target),
            "stuck_seconds": (now - since) / 1e9 if since else 0.0,
        }
    reporter.send("status", targets=status)


if __name__ == "__main__":
    sys.exit(main())
