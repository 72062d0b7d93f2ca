"""Low-level readers for sysfs and procfs values.

Kernel pseudo-files are tiny and read on every scrape, thousands of them on a
256-CPU host, so the hot path is one os.open / os.read / os.close per file on a
prebuilt path string. Every failure is classified once, here, so collectors can
decide per value what it means:

- absent (ENOENT, ENODEV, ENXIO, ENOTDIR): the hardware or feature is not there.
  Readers return None; a collector exports nothing for it and still succeeds.
- `ValueUnavailable` (EAGAIN, ENODATA, EIO, EBUSY, ETIMEDOUT, EINVAL, EOPNOTSUPP):
  the file exists but the driver has no value right now (a sleeping hwmon sensor,
  a device in reset). Skip that value, keep the rest.
- `AccessDenied` (EACCES, EPERM): root-only attributes such as RAPL energy_uj.
- `MalformedValue`: the content does not parse, or is a number no kernel prints (over
  64 bits, negative where unsigned); the message carries the path.

Every number read from a kernel file goes through `to_int` / `to_u64` (directly or
via `parse_int` / `read_int`): a hostile or corrupt 400-digit value is refused where it
is read, so no counter state keeps it and no float conversion overflows later.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import stat
import threading
import weakref
from collections.abc import Callable

__all__ = [
    "AccessDenied",
    "HeldFiles",
    "MalformedValue",
    "ReadError",
    "ScrapeReads",
    "ValueUnavailable",
    "list_dir",
    "parse_int",
    "parse_u64",
    "read_all",
    "read_int",
    "read_key_values",
    "read_shared",
    "read_shared_int",
    "read_shared_text",
    "read_small",
    "read_text",
    "sharing",
    "to_int",
    "to_u64",
]

# sysfs attributes are at most one page; one read of this size gets all of it.
SMALL_READ = 4096
# procfs seq_files (diskstats, schedstat on 512 CPUs) are read in chunks of this size.
CHUNK = 65536

ABSENT = frozenset({errno.ENOENT, errno.ENODEV, errno.ENXIO, errno.ENOTDIR})
UNAVAILABLE = frozenset(
    {
        errno.EAGAIN,
        errno.ENODATA,
        errno.EIO,
        errno.EBUSY,
        errno.ETIMEDOUT,
        errno.EINVAL,
        errno.EOPNOTSUPP,
    }
)
DENIED = frozenset({errno.EACCES, errno.EPERM})

# O_NONBLOCK: kernfs and procfs ignore it, but a FIFO put in a file's place then reads
# as empty at once instead of blocking the collector until a writer comes.
_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK


class ReadError(Exception):
    """A kernel file exists but gave no usable value. Always names the file."""

    def __init__(self, path: str, reason: str, err: int | None = None) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.errno = err


class ValueUnavailable(ReadError):
    """The driver has no value right now (EAGAIN, ENODATA, EIO, ...)."""


class AccessDenied(ReadError):
    """The file needs more privilege than this process has."""


class MalformedValue(ReadError):
    """The file's content does not parse as expected."""


def _classify(path: str, exc: OSError) -> ReadError | None:
    code = exc.errno
    if code in ABSENT:
        return None
    reason = os.strerror(code) if code is not None else str(exc)
    if code in DENIED:
        return AccessDenied(path, reason, code)
    if code in UNAVAILABLE:
        return ValueUnavailable(path, reason, code)
    return ReadError(path, reason, code)


def _raise_unless_absent(path: str, exc: OSError) -> None:
    """Raise the typed error for `exc`; return only when it means the file is absent."""
    err = _classify(path, exc)
    if err is not None:
        raise err from None


def read_small(path: str) -> bytes | None:
    """One read of a sysfs attribute. None when the file is absent."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        _raise_unless_absent(path, exc)
        return None
    try:
        return os.read(fd, SMALL_READ)
    except OSError as exc:
        _raise_unless_absent(path, exc)
        return None
    finally:
        os.close(fd)


def read_all(path: str) -> bytes | None:
    """A whole procfs file, read until EOF. None when the file is absent."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        _raise_unless_absent(path, exc)
        return None
    try:
        chunks = []
        while True:
            chunk = os.read(fd, CHUNK)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        _raise_unless_absent(path, exc)
        return None
    finally:
        os.close(fd)


def read_text(path: str) -> str | None:
    """A sysfs string attribute, stripped of the newline and space padding."""
    raw = read_small(path)
    if raw is None:
        return None
    return raw.decode("utf-8", "replace").strip()


# What the kernel can print for a number: a 64-bit value, signed or unsigned.
I64_MIN = -(2**63)
U64_MAX = 2**64 - 1


class OutOfRange(ValueError):
    """A number no 64-bit kernel value can be."""


def to_int(text: str | bytes) -> int:
    """A decimal the kernel printed, in -2**63 .. 2**64-1; ValueError otherwise."""
    value = int(text)
    if not I64_MIN <= value <= U64_MAX:
        raise OutOfRange(f"out of the 64-bit range: {_shown(text)[:24]}... ({len(text)} chars)")
    return value


def to_u64(text: str | bytes) -> int:
    """A kernel counter or size: a decimal in 0 .. 2**64-1; ValueError otherwise."""
    value = to_int(text)
    if value < 0:
        raise OutOfRange(f"negative where unsigned: {value}")
    return value


def _shown(text: str | bytes) -> str:
    return (text.decode("utf-8", "replace") if isinstance(text, bytes) else text).strip()


def parse_int(path: str, text: str | bytes) -> int:
    try:
        return to_int(text)
    except OutOfRange as exc:
        raise MalformedValue(path, str(exc)) from None
    except ValueError:
        raise MalformedValue(path, f"not an integer: {_shown(text)[:40]!r}") from None


def parse_u64(path: str, text: str | bytes) -> int:
    value = parse_int(path, text)
    if value < 0:
        raise MalformedValue(path, f"negative where unsigned: {value}")
    return value


def read_int(path: str) -> int | None:
    """A sysfs integer attribute. None when absent; MalformedValue when not a number."""
    raw = read_small(path)
    if raw is None:
        return None
    return parse_int(path, raw)


def read_key_values(path: str, separator: str | None = None) -> dict[str, str] | None:
    """`key value` (or `key=value` with separator="=") lines into a dict."""
    raw = read_all(path)
    if raw is None:
        return None
    result: dict[str, str] = {}
    for line in raw.decode("utf-8", "replace").splitlines():
        parts = line.split(separator, 1)
        if len(parts) == 2:
            result[parts[0].strip()] = parts[1].strip()
    return result


def list_dir(path: str) -> list[str]:
    """Directory entries, sorted; empty when the directory is absent."""
    try:
        return sorted(os.listdir(path))
    except OSError as exc:
        err = _classify(path, exc)
        if err is None:
            return []
        raise err from None


# --- one scrape's reads of files that several collectors read -------------------------------

_scrape = threading.local()


class ScrapeReads:
    """What the collectors of one scrape read of the files that more than one of them
    reads (C-state `disable`, `scaling_governor`, turbo): the first read is kept, by
    path, and a later collector of the same scrape gets its bytes (or its error) instead
    of reading the file again, a value of the same instant. The collector framework
    makes one per scrape (`sharing`); outside a scrape, the reads go to the files."""

    __slots__ = ("values",)

    def __init__(self) -> None:
        self.values: dict[str, bytes | ReadError | None] = {}


def sharing(reads: ScrapeReads | None) -> None:
    """The reads of this thread's collector are shared in `reads` (None: not shared)."""
    _scrape.reads = reads


def read_shared(path: str, read: Callable[[str], bytes | None] | None = None) -> bytes | None:
    """`read` (read_small by default), answered from this scrape's earlier read of `path`
    when there is one."""
    read = read or read_small
    reads: ScrapeReads | None = getattr(_scrape, "reads", None)
    if reads is None:
        return read(path)
    try:
        value = reads.values[path]
    except KeyError:
        try:
            value = read(path)
        except ReadError as exc:
            reads.values[path] = exc
            raise
        reads.values[path] = value
        return value
    if isinstance(value, ReadError):
        raise type(value)(value.path, value.reason, value.errno)
    return value


def read_shared_int(path: str, read: Callable[[str], bytes | None] | None = None) -> int | None:
    """read_int through this scrape's shared reads."""
    raw = read_shared(path, read)
    if raw is None:
        return None
    return parse_int(path, raw)


def read_shared_text(path: str) -> str | None:
    """read_text through this scrape's shared reads."""
    raw = read_shared(path)
    if raw is None:
        return None
    return raw.decode("utf-8", "replace").strip()


# --- attribute files held open between scrapes ----------------------------------------------

# At most this many files held open by the whole process, and at most half the soft
# RLIMIT_NOFILE (the daemon raises it to 8,192 where the hard limit allows, see
# privileges.raise_open_files_limit; 1,024 if not): past it, files are opened per read
# as usual. 4,096 holds the C-state files of 256 CPUs (3,072) and the thermal and
# frequency ones. Descriptors past FD_SETSIZE are waited on with poll() (nodeslo.fdwait).
MAX_HELD_FILES = 4096


class _Budget:
    """How many files the process holds open (under `lock`)."""

    lock = threading.Lock()
    held = 0


@functools.cache
def _held_limit() -> int:
    """Half the soft RLIMIT_NOFILE at the first open (MAX_HELD_FILES caps it)."""
    soft = 1024
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        pass
    return MAX_HELD_FILES if soft == -1 else max(0, soft // 2)  # -1: RLIM_INFINITY


@functools.cache
def _sysfs_device() -> int | None:
    """st_dev of the real sysfs: its files are never replaced, only removed (ENODEV)."""
    try:
        return os.stat("/sys/devices").st_dev
    except OSError:
        return None


def _release(fds: dict[str, tuple[int, bool]]) -> None:
    with _Budget.lock:
        for fd, _ in fds.values():
            with contextlib.suppress(OSError):  # EBADF: closed under us already
                os.close(fd)
        _Budget.held -= len(fds)
        fds.clear()


class HeldFiles:
    """Attribute files read every scrape, kept open and read with pread at offset 0,
    which runs the attribute's show() again: a fresh value without the path walk, open
    and close of each read (6.8 us -> 1.1 us per file on a 2-vCPU VM's sysfs).

    Whatever happens to a file, a read answers as `read_small` would: a file that went
    away (CPU unplugged: ENODEV on sysfs; ENOENT; EBADF, the descriptor closed under
    us) or was replaced (a file renamed over it, outside sysfs: checked with fstat) is
    dropped and opened afresh, and that fresh read's answer is the read's (None when
    the file is absent). Only regular files are held (a FIFO put in a file's place is
    read as read_small reads it). Bounded process-wide (MAX_HELD_FILES); `close` (and
    garbage collection) gives the descriptors back.
    """

    def __init__(self) -> None:
        self._fds: dict[str, tuple[int, bool]] = {}  # path -> (fd, check for a replacement)
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _release, self._fds)

    def __len__(self) -> int:
        return len(self._fds)

    def read(self, path: str) -> bytes | None:
        held = self._fds.get(path)
        if held is not None:
            fd, check = held
            try:
                if not check or os.fstat(fd).st_nlink:
                    return os.pread(fd, SMALL_READ, 0)
            except OSError:
                pass  # gone, closed under us, or no value: read afresh, as read_small
            self._drop(path, fd)
        return self._open_and_read(path)

    def _open_and_read(self, path: str) -> bytes | None:
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except OSError as exc:
            _raise_unless_absent(path, exc)
            return None
        keep = False
        try:
            data = os.read(fd, SMALL_READ)
            if _Budget.held >= min(MAX_HELD_FILES, _held_limit()):
                return data  # no room: read as read_small reads, nothing more
            info = os.fstat(fd)
            if stat.S_ISREG(info.st_mode):
                with _Budget.lock, self._lock:
                    if path not in self._fds and _Budget.held < min(MAX_HELD_FILES, _held_limit()):
                        self._fds[path] = (fd, info.st_dev != _sysfs_device())
                        _Budget.held += 1
                        keep = True
            return data
        except OSError as exc:
            _raise_unless_absent(path, exc)
            return None
        finally:
            if not keep:
                os.close(fd)

    def _drop(self, path: str, fd: int) -> None:
        with _Budget.lock, self._lock:
            if self._fds.get(path, (None,))[0] == fd:
                del self._fds[path]
                _Budget.held -= 1
                with contextlib.suppress(OSError):  # EBADF: closed under us already
                    os.close(fd)

    def close(self) -> None:
        """Give every descriptor back (the files are opened again when next read)."""
        with self._lock:
            fds = dict(self._fds)
            self._fds.clear()
        _release(fds)
