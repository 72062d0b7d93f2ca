"""Storage probe: 4 KiB synchronous write and direct read latency on a state volume.

Runs in its own process (`python -m nodeslo.probes.storage CONFIG`). Each target has
one thread per operation, so a write stuck on a sick volume neither delays the reads
nor hides behind them, and the main thread, which never touches a file system, keeps
reporting whatever the devices do:

- `write_sync`: one 4 KiB pwrite with O_DIRECT|O_DSYNC at a random aligned offset of
  the probe file (where O_DIRECT is refused: pwrite + fdatasync, mode "buffered");
- `read`: one 4 KiB O_DIRECT pread at a random aligned offset, from the probe file or
  from a block device opened read-only (buffered mode first drops that block from the
  page cache, untimed, so the read still reaches the device).

**Schedule (no coordinated omission).** Operations start at intended times fixed in
advance, `rate` per second per operation, whatever the device does: a renewal sequence
of half-period steps drawn uniformly in [1 - J, 1 + J] x period / 2 (J = 0.5), handed
alternately to the write and the read, so each operation keeps its rate, the two stay
about half a period apart (neither finds the system woken up by the other), and the
jitter of the intended times keeps the probe from phase-locking with a periodic job. A
completion never moves the schedule. Latency is the clock around the system call for an
operation that started on time (a late wake-up of the probe's own sleep is not the
device's doing); an operation that could only start after its intended time because
the previous one of its kind was still in flight is timed from its intended time.

**Accounting (a stuck volume is never silent).** Each operation kind has a threshold:
the largest latency SLO threshold the profile sets on it (`overdue`); beyond it the
operation is bad for every SLO on it.

- An operation in flight longer than that is *overdue*: the report that finds it so
  counts it at once, observed at its age then (a lower bound). It is not observed
  again when it completes (nor counted as an error if it then fails).
- An intended start that passes while the previous operation of its kind is still in
  flight is *missed*: it is counted bad once its would-be latency passes the threshold,
  observed at that would-be latency (a lower bound). Missed operations are never issued
  later as a catch-up burst: after a stall the probe resumes with the next intended
  start that is still within the threshold, or in the future.

So a blocked target keeps producing `rate` bad events per second per operation, in the
same histogram the SLI reads. What the daemon does while this process itself is down is
in `collector.py`.

**The target.** A directory target holds one probe file, `nodeslo-probe`: created 0600
by the daemon's user under a temporary name, written in full once (so reads hit
allocated, written blocks — ext4 answers reads of merely fallocated blocks with zeros
without touching the device), then renamed into place. Nothing else is ever written: a
sample writes one 4 KiB block. The file is created only when the file system keeps at
least its size again, and 1 % of itself, free afterwards, and after a failed attempt
not again for CREATE_RETRY_SECONDS: the probe never fills a volume nor rewrites its file
in a loop. The device a target measures (the directory's st_dev, a block device's
st_rdev) is fixed by the first check and verified on every (re)open and every
CHECK_SECONDS: a target now on another file system (its volume unmounted, the path
re-pointed) is refused, never followed, and each attempt counts an error with the
reason `other_file_system`. A missing target directory is created (0700, one level)
only where its parent is on that same device (at start: any existing parent). A probe
file that is not a regular file owned by the daemon's user (a planted symlink) is never
opened or written.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import mmap
import os
import random
import stat
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from nodeslo.probes.histogram import LatencyHistogram, Snapshot, bound_ns
from nodeslo.probes.protocol import ParentGone, Reporter

BLOCK = 4096
PROBE_FILE = "nodeslo-probe"
FILL_CHUNK = 1 << 20
OPS = ("write_sync", "read")
JITTER = 0.5  # half-period steps uniform in [1 - J, 1 + J]: no phase-lock with a periodic job
CHECK_SECONDS = 1.0  # a target is re-validated at most this often
CREATE_RETRY_SECONDS = 60.0  # after a failed creation of the probe file
HEADROOM_RATIO = 0.01  # of the file system, left free besides the file's own size again
DEFAULT_OVERDUE_SECONDS = 1.0  # for an operation no SLO judges
NS = 1_000_000_000
CHECK_NS = round(CHECK_SECONDS * NS)
_COUNTER = struct.Struct("=Q")

# Why an operation failed: a bounded set, exported as a label.
REASONS = (
    "other_file_system",
    "no_space",
    "read_only",
    "missing",
    "permission",
    "foreign_file",
    "io_error",
    "other",
)
_REASON_OF_ERRNO = {
    errno.EXDEV: "other_file_system",
    errno.ENOSPC: "no_space",
    errno.EDQUOT: "no_space",
    errno.EROFS: "read_only",
    errno.ENOENT: "missing",
    errno.ENOTDIR: "missing",
    errno.EACCES: "permission",
    errno.EPERM: "permission",
    errno.EIO: "io_error",
}


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

    def statvfs(self, path: str) -> os.statvfs_result:
        return os.statvfs(path)

    def mkdir(self, path: str, mode: int) -> None:
        os.mkdir(path, mode)

    def rename(self, src: str, dst: str) -> None:
        os.rename(src, dst)

    def unlink(self, path: str) -> None:
        os.unlink(path)

    def size(self, fd: int) -> int:
        return os.lseek(fd, 0, os.SEEK_END)


class ProbeError(OSError):
    """A target that cannot be sampled, with the reason an operator can act on."""

    def __init__(self, code: int, message: str, path: str, reason: str = "") -> None:
        super().__init__(code, message, path)
        self.reason = reason


def describe(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0, "")
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}" + (f" ({name})" if name else "")


def reason_of(exc: OSError) -> str:
    if isinstance(exc, ProbeError) and exc.reason:
        return exc.reason
    return _REASON_OF_ERRNO.get(exc.errno or 0, "other")


def device_name(dev: int, sysfs: str) -> str:
    """The block device holding a file system (vda, nvme0n1p2, dm-0), or 'major:minor'."""
    number = f"{os.major(dev)}:{os.minor(dev)}"
    link = os.path.join(sysfs, "dev", "block", number)
    try:
        return os.path.basename(os.readlink(link))
    except OSError:
        return number


def _dev_text(dev: int, sysfs: str) -> str:
    name = device_name(dev, sysfs)
    number = f"{os.major(dev)}:{os.minor(dev)}"
    return name if name == number else f"{name} ({number})"


# --- one target: what the path is, the device it measures, the probe file -----------------


@dataclass
class Target:
    """One configured path, shared by its operations: validation, creation, opening.

    Each operation owns its own descriptor (see Lane); only what the path is lives
    here, under a lock, so the two operations never create the probe file twice.
    """

    path: str
    file_size: int = 64 << 20
    io: SystemIO = field(default_factory=SystemIO)
    clock: Callable[[], int] = time.monotonic_ns
    sysfs: str = "/sys"
    uid: int = field(default_factory=os.geteuid)

    kind: str = ""  # "file" | "block", fixed by the first successful check
    mode: str = ""  # "direct" | "buffered", once an fd is open
    device: str = ""  # the name of the device measured
    dev: int | None = None  # st_dev (file) or st_rdev (block), fixed by the first check

    def __post_init__(self) -> None:
        if self.file_size < BLOCK or self.file_size % BLOCK:
            raise ValueError(f"probe file size must be a positive multiple of {BLOCK}")
        self.probe_file = os.path.join(self.path, PROBE_FILE)
        self.lock = threading.Lock()
        self._retry_at = 0  # monotonic ns: no probe file creation before
        self._create_failure: ProbeError | None = None
        self._checked: tuple[int, tuple[int, int]] | None = None  # (when, identity) last found

    def ops(self) -> tuple[str, ...]:
        return ("read",) if self.kind == "block" else OPS

    # validation ----------------------------------------------------------------------

    def check(self, max_age_ns: int = 0) -> tuple[int, int]:
        """Validate the path, creating what may be created; the identity to hold open:
        (st_dev, st_ino) of the probe file, or (st_rdev, 0) of a block device.

        A successful check younger than `max_age_ns` (by either operation: they share the
        target) is not repeated: the two operations cost one validation per period."""
        with self.lock:
            now = self.clock()
            if self._checked is not None and now - self._checked[0] < max_age_ns:
                return self._checked[1]
            self._checked = None
            identity = self._check()
            self._checked = (now, identity)
            return identity

    def _check(self) -> tuple[int, int]:
        try:
            st = self.io.stat(self.path)
        except FileNotFoundError:
            if self.kind == "block":  # a vanished device node is never replaced
                raise ProbeError(
                    errno.ENOENT, "block device vanished", self.path, "missing"
                ) from None
            self._create_directory()
            st = self.io.stat(self.path)
        if stat.S_ISBLK(st.st_mode):
            self._pin("block", st.st_rdev)
            return (st.st_rdev, 0)
        if stat.S_ISDIR(st.st_mode):
            self._pin("file", st.st_dev)
            return self._check_file()
        raise ProbeError(errno.ENOTDIR, "not a directory or block device", self.path)

    def _pin(self, kind: str, dev: int) -> None:
        """The first check fixes what the target measures; later ones must find the same."""
        if self.dev is None:
            self.kind, self.dev = kind, dev
            self.device = device_name(dev, self.sysfs)
            return
        if kind != self.kind:
            raise self._moved(f"is now a {'block device' if kind == 'block' else 'directory'}")
        if dev != self.dev:
            what = "device" if kind == "block" else "file system"
            raise self._moved(f"is now on the {what} of {_dev_text(dev, self.sysfs)}")

    def _moved(self, what: str) -> ProbeError:
        assert self.dev is not None
        return ProbeError(
            errno.EXDEV,
            f"{what}, not on {_dev_text(self.dev, self.sysfs)} that the probe measures since "
            "it started (volume unmounted? path re-pointed?): not followed",
            self.path,
            "other_file_system",
        )

    def _create_directory(self) -> None:
        parent = os.path.dirname(self.path.rstrip("/")) or "/"
        try:
            st = self.io.stat(parent)
        except FileNotFoundError:
            raise ProbeError(
                errno.ENOENT, "target missing and its parent too: not created", self.path
            ) from None
        if self.dev is not None and st.st_dev != self.dev:
            # The volume is gone from under the path: never recreate it on the parent's.
            raise self._moved(
                f"is missing and its parent is on the file system of "
                f"{_dev_text(st.st_dev, self.sysfs)}"
            )
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

    def _check_file(self) -> tuple[int, int]:
        try:
            st = self.io.lstat(self.probe_file)
        except FileNotFoundError:
            self._create_probe_file()
            st = self.io.lstat(self.probe_file)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != self.uid:
            raise ProbeError(
                errno.EPERM,
                f"exists and is not a regular file owned by uid {self.uid}: left alone",
                self.probe_file,
                "foreign_file",
            )
        if st.st_dev != self.dev:
            raise self._moved(f"holds a probe file on {_dev_text(st.st_dev, self.sysfs)}")
        if st.st_size != self.file_size:
            self._create_probe_file()
            st = self.io.lstat(self.probe_file)
        return (st.st_dev, st.st_ino)

    def _create_probe_file(self) -> None:
        """Write the whole file once under a temporary name, then rename it into place.

        Only when the file system keeps room to spare afterwards, and never again within
        CREATE_RETRY_SECONDS of a failed attempt: a full volume costs no writes.
        """
        now = self.clock()
        if now < self._retry_at and self._create_failure is not None:
            failure = self._create_failure  # (messages stay constant: each is logged once)
            raise ProbeError(
                failure.errno or errno.EIO,
                f"{failure.strerror}; retried every {CREATE_RETRY_SECONDS:g}s",
                self.probe_file,
                reason_of(failure),
            )
        temporary = self.probe_file + ".tmp"
        with contextlib.suppress(FileNotFoundError):  # left by a crash; unlink never follows
            self.io.unlink(temporary)
        self._check_room()
        try:
            fd = self.io.open(
                temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600
            )
        except OSError as exc:
            raise self._failed_creation(exc) from None
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
        except OSError as exc:
            self.io.close(fd)
            with contextlib.suppress(OSError):
                self.io.unlink(temporary)
            raise self._failed_creation(exc) from None
        self.io.close(fd)
        self.io.rename(temporary, self.probe_file)
        self._create_failure = None

    def _check_room(self) -> None:
        vfs = self.io.statvfs(self.path)
        free = vfs.f_bavail * vfs.f_frsize
        headroom = max(self.file_size, math.ceil(vfs.f_blocks * vfs.f_frsize * HEADROOM_RATIO))
        if free < self.file_size + headroom:
            raise ProbeError(
                errno.ENOSPC,
                f"not enough free space: the {self.file_size}-byte probe file must leave "
                f"{headroom} bytes free, not created",
                self.path,
                "no_space",
            )

    def _failed_creation(self, exc: OSError) -> ProbeError:
        error = ProbeError(
            exc.errno or errno.EIO,
            f"creating the probe file failed: {exc.strerror or exc}",
            self.probe_file,
            reason_of(exc),
        )
        self._create_failure = error
        self._retry_at = self.clock() + round(CREATE_RETRY_SECONDS * NS)
        return error

    # opening ---------------------------------------------------------------------------

    def open(self, flags: int, identity: tuple[int, int]) -> int:
        """Open with O_DIRECT; where the file system refuses it, without (mode buffered).

        The descriptor must be the file `check` returned (not one swapped in between),
        on the device the target measures."""
        with self.lock:
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
                    return self._verified(fd, identity)
            return self._verified(self.io.open(path, flags), identity)

    def _verified(self, fd: int, identity: tuple[int, int]) -> int:
        st = self.io.fstat(fd)
        got = (st.st_rdev, 0) if self.kind == "block" else (st.st_dev, st.st_ino)
        if got != identity:
            self.io.close(fd)
            raise ProbeError(errno.EAGAIN, "changed while being opened", self.path)
        return fd

    def blocks(self, fd: int) -> int:
        """Whole 4 KiB blocks the operations may address."""
        if self.kind != "block":
            return self.file_size // BLOCK
        blocks = self.io.size(fd) // BLOCK
        if blocks == 0:
            raise ProbeError(errno.EINVAL, "block device smaller than 4 KiB", self.path)
        return blocks


# --- the schedule -------------------------------------------------------------------------


class Schedule:
    """Intended start times of one target's operations, fixed whatever the device does.

    A renewal sequence of steps of period / (number of operations), each drawn uniformly
    in [1 - J, 1 + J] times that, dealt out to the operations in turn. `retire` removes an
    operation (a block device has no write): the others then get its share of the slots,
    so each keeps `rate` starts per second.
    """

    def __init__(self, start_ns: int, rate: float, ops: Sequence[str], rng: random.Random) -> None:
        self._period = NS / rate
        self._ops = list(ops)
        self._queues: dict[str, deque[int]] = {op: deque() for op in ops}
        self._t = float(start_ns)
        self._turn = 0
        self._rng = rng
        self._lock = threading.Lock()

    def next(self, op: str) -> int:
        """The next intended start of `op` (each one handed out once)."""
        with self._lock:
            queue = self._queues[op]
            while not queue:
                step = self._period / len(self._ops)
                self._queues[self._ops[self._turn % len(self._ops)]].append(round(self._t))
                self._turn += 1
                self._t += step * self._rng.uniform(1 - JITTER, 1 + JITTER)
            return queue.popleft()

    def retire(self, op: str) -> None:
        with self._lock:
            if op in self._ops and len(self._ops) > 1:
                self._ops.remove(op)
                self._queues[op].clear()


# --- one operation on one target: its thread, its accounting ------------------------------


@dataclass
class Drained:
    """What one lane measured since the last report."""

    histogram: Snapshot
    errors: int
    error: str
    overdue: int
    missed: int


class Lane:
    """One operation kind on one target: runs on the schedule, accounts what it misses.

    The lane's thread runs the operations; the reporting thread calls `account` before
    each report, which counts an operation still in flight past the threshold, and the
    intended starts passed meanwhile, as soon as they are due. Every intended start is
    accounted exactly once, by whichever thread gets to it first (under the lock).
    """

    def __init__(
        self,
        target: Target,
        op: str,
        schedule: Schedule,
        *,
        bounds: Sequence[float],
        overdue_seconds: float,
        rng: random.Random | None = None,
    ) -> None:
        self.target, self.op, self.schedule = target, op, schedule
        self.overdue_ns = bound_ns(overdue_seconds)
        self.rng = rng or random.Random()
        self.clock = target.clock
        self.lock = threading.Lock()
        self._histogram = LatencyHistogram(bounds)
        self._errors = 0
        self._error = ""
        self._overdue = 0
        self._missed = 0
        self.ok = False  # the last attempt succeeded
        self.reason = ""  # why it failed, when it did (one of REASONS)
        self.done_ns = 0  # monotonic ns of the last completed attempt, 0 before any
        self.busy_ns = 0  # monotonic ns since when an attempt is in flight, 0 when idle
        self._origin = 0  # what the in-flight attempt's latency counts from
        self._counted = False  # the in-flight attempt was counted overdue already
        self._next = schedule.next(op)  # the next intended start not yet taken
        self.retired = False
        # I/O state, touched by the lane's own thread only.
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None
        self._blocks = 0
        self._checked = 0
        self._written = 0
        self._buf = mmap.mmap(-1, BLOCK)  # page aligned, as O_DIRECT requires
        if op == "write_sync":
            self._buf.write(os.urandom(BLOCK))  # incompressible: no drive shortcut on zeros

    # accounting ----------------------------------------------------------------------

    def _miss_due(self, now: int) -> None:
        """Count the intended starts whose would-be latency has passed the threshold."""
        while self._next + self.overdue_ns < now:
            self._histogram.observe(now - self._next)
            self._missed += 1
            self._next = self.schedule.next(self.op)

    def claim(self) -> tuple[int, int]:
        """The next start to run: (intended ns, now). Starts already overdue are missed."""
        now = self.clock()
        with self.lock:
            self._miss_due(now)
            intended, self._next = self._next, self.schedule.next(self.op)
        return intended, now

    def account(self, now: int) -> None:
        """From the reporting thread: count what a stuck attempt holds up, as it falls due."""
        with self.lock:
            if not self.busy_ns:
                return  # idle or sleeping until its next start: nothing is late
            age = now - self._origin
            if not self._counted and age > self.overdue_ns:
                self._counted = True
                self._histogram.observe(age)
                self._overdue += 1
            self._miss_due(now)

    def _begin(self, origin: int) -> int:
        now = self.clock()
        with self.lock:
            self.busy_ns = now
            self._origin = origin or now
            self._counted = False
        return now

    def _complete(self, latency_ns: int | None, exc: OSError | None, now: int = 0) -> None:
        now = now or self.clock()
        with self.lock:
            counted = self._counted
            self.busy_ns = 0
            self.done_ns = now
            self.ok = exc is None
            self.reason = "" if exc is None else reason_of(exc)
            if exc is not None:
                self._error = self._message(exc)
                if not counted:
                    self._errors += 1
            elif not counted:
                assert latency_ns is not None
                self._histogram.observe(latency_ns)

    def _message(self, exc: OSError) -> str:
        text = describe(exc)
        return text if isinstance(exc, ProbeError) else f"{self.op}: {text}"

    def drain(self) -> Drained:
        with self.lock:
            out = Drained(
                self._histogram.take(), self._errors, self._error, self._overdue, self._missed
            )
            self._errors = self._overdue = self._missed = 0
        return out

    # running -------------------------------------------------------------------------

    def run(self, stop: threading.Event, sleep: Callable[[float], None] = time.sleep) -> None:
        """Until `stop`: wait for each intended start, then run the operation."""
        while not stop.is_set() and not self.retired:
            intended, now = self.claim()
            late = intended <= now
            if not late:
                sleep((intended - now) / NS)
            self.run_once(intended if late else 0)

    def run_once(self, origin: int = 0) -> None:
        """One attempt; its latency counts from `origin` (a late start) or its own start."""
        began = self._begin(origin)
        try:
            latency, end = self._attempt(origin, began)
        except OSError as exc:
            self._drop()
            if exc.errno == errno.EINVAL and self.target.mode == "direct":
                self.target.mode = "buffered"  # O_DIRECT accepted at open, refused on I/O
            self._complete(None, exc)
            return
        if latency is None:  # a block device is only ever read: this lane ends
            with self.lock:
                self.busy_ns = 0
            self.retired = True
            self.schedule.retire(self.op)
            return
        self._complete(latency, None, end)

    def _attempt(self, origin: int, now: int) -> tuple[int | None, int]:
        """(latency, when it completed); (None, now) for a write to a block device."""
        target, io = self.target, self.target.io
        if self._fd is None or now - self._checked >= CHECK_NS:
            # Re-validated at most every CHECK_SECONDS per target; on a reopen, always.
            identity = target.check(CHECK_NS if self._fd is not None else 0)
            self._checked = now
            if identity != self._identity:
                self._drop()
                self._identity = identity
        if target.kind == "block" and self.op != "read":
            return None, now
        if self._fd is None:
            assert self._identity is not None
            flags = os.O_RDONLY if self.op == "read" else os.O_WRONLY | os.O_DSYNC
            self._fd = target.open(flags, self._identity)
            try:
                self._blocks = target.blocks(self._fd)
            except OSError:
                self._drop()
                raise
        fd, clock = self._fd, self.clock
        offset = self.rng.randrange(self._blocks) * BLOCK
        buffered = target.mode == "buffered"
        if self.op == "write_sync":
            self._written += 1
            _COUNTER.pack_into(self._buf, 0, self._written)  # no two writes alike
            start = clock()
            n = io.pwrite(fd, self._buf, offset)
            if buffered:
                io.fdatasync(fd)
            end = clock()
            what = "write"
        else:
            if buffered:
                io.drop_cache(fd, offset, BLOCK)
            start = clock()
            n = io.pread(fd, self._buf, offset)
            end = clock()
            what = "read"
        if n != BLOCK:
            raise ProbeError(errno.EIO, f"short {what}: {n} of {BLOCK} bytes", target.path)
        return end - (origin or start), end

    def _drop(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                self.target.io.close(fd)

    def close(self) -> None:
        self._drop()


# --- the probe process ------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    targets: tuple[str, ...]
    rate: float
    file_size: int
    bounds: tuple[float, ...]
    # (target, op, seconds): the largest SLO threshold on each; others DEFAULT_OVERDUE_SECONDS
    overdue: tuple[tuple[str, str, float], ...] = ()
    sysfs: str = "/sys"
    report_seconds: float = 1.0

    def overdue_seconds(self, target: str, op: str) -> float:
        for path, name, seconds in self.overdue:
            if (path, name) == (target, op):
                return seconds
        return DEFAULT_OVERDUE_SECONDS

    def to_json(self) -> str:
        return json.dumps(
            {
                **self.__dict__,
                "targets": list(self.targets),
                "bounds": list(self.bounds),
                "overdue": [list(o) for o in self.overdue],
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Config:
        raw: dict[str, Any] = json.loads(text)
        raw["targets"] = tuple(raw["targets"])
        raw["bounds"] = tuple(raw["bounds"])
        raw["overdue"] = tuple((str(t), str(o), float(s)) for t, o, s in raw.get("overdue", ()))
        return cls(**raw)


def build_lanes(
    config: Config,
    start_ns: int,
    io: SystemIO | None = None,
    clock: Callable[[], int] | None = None,
) -> list[Lane]:
    """A Target and one Lane per operation for each configured path, on one schedule each."""
    lanes = []
    for path in config.targets:
        target = Target(
            path,
            config.file_size,
            io=io or SystemIO(),
            clock=clock or time.monotonic_ns,
            sysfs=config.sysfs,
        )
        schedule = Schedule(start_ns, config.rate, OPS, random.Random())
        for op in OPS:
            overdue = config.overdue_seconds(path, op)
            lanes.append(Lane(target, op, schedule, bounds=config.bounds, overdue_seconds=overdue))
    return lanes


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m nodeslo.probes.storage CONFIG_JSON", file=sys.stderr)
        return 2
    config = Config.from_json(args[0])
    from nodeslo.probes.wakeup import become_probe_process

    become_probe_process()
    reporter = Reporter(sys.stdout.buffer)
    start = time.monotonic_ns()
    # First: where the schedule starts, so the daemon knows which gap it must account.
    reporter.send("hello", start_ns=start)
    lanes = build_lanes(config, start)
    stop = threading.Event()
    for lane in lanes:
        thread = threading.Thread(
            target=lane.run, args=(stop,), name=f"{lane.op}:{lane.target.path}", daemon=True
        )
        thread.start()
    described: dict[str, tuple[str, str, str]] = {}
    try:
        while True:
            time.sleep(config.report_seconds)
            report(reporter, lanes, described, time.monotonic_ns())
    except ParentGone:
        stop.set()
        return 0


def report(
    reporter: Reporter,
    lanes: list[Lane],
    described: dict[str, tuple[str, str, str]],
    now: int,
) -> None:
    """Account what fell due, then send the deltas and each operation's state (one write)."""
    with reporter.batch():
        _report(reporter, lanes, described, now)


def _report(
    reporter: Reporter,
    lanes: list[Lane],
    described: dict[str, tuple[str, str, str]],
    now: int,
) -> None:
    targets = {lane.target.path: lane.target for lane in lanes}
    for target in targets.values():
        info = (target.kind, target.mode, target.device)
        if target.kind and target.mode and described.get(target.path) != info:
            reporter.send("target", target=target.path, kind=info[0], mode=info[1], device=info[2])
            described[target.path] = info
    status: dict[str, dict[str, dict[str, Any]]] = {}
    for lane in lanes:
        if lane.retired:
            continue
        lane.account(now)
        drained = lane.drain()
        path = lane.target.path
        reporter.histogram([path, lane.op], drained.histogram)
        if drained.errors:
            reporter.send(
                "err",
                target=path,
                op=lane.op,
                n=drained.errors,
                msg=drained.error,
                reason=lane.reason or "other",
            )
        with lane.lock:
            state = {
                "ok": lane.ok,
                "reason": lane.reason,
                "done_ns": lane.done_ns,
                "busy_ns": lane.busy_ns,
                "overdue": drained.overdue,
                "missed": drained.missed,
            }
        status.setdefault(path, {})[lane.op] = state
    reporter.send("status", at_ns=now, targets=status)


if __name__ == "__main__":
    sys.exit(main())
