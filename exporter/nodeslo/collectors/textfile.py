"""Metrics from `*.prom` files, as node_exporter's textfile collector reads them.

Cron jobs and batch scripts write Prometheus text files into one directory
(`--collector.textfile.directory`); each scrape exports their samples, the mtime of
every file that was read (`nodeslo_textfile_mtime_seconds{file}`) and whether any file
or the directory could not be (`nodeslo_textfile_scrape_error`). Off unless a
directory is given.

A bad file never fails the scrape: its samples are left out (all of them: half a file
is worse than none), the error metric says 1, and the reason is logged once, with the
path, until the file changes. Bad is: not the text format (prometheus_client's parser
decides), a sample with a timestamp (as node_exporter), a family whose type or help
disagrees with another file's, a series another file has too, a name in nodeslo's own
namespaces, over MAX_FILE_BYTES, not UTF-8, not a regular file, or unreadable. Files
are re-parsed only when their size, mtime or inode change; a file that vanishes between
the listing and the read is simply gone (no error: writers replace files by rename).
"""

from __future__ import annotations

import argparse
import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from nodeslo.collectors.base import Collector, CollectorContext
from nodeslo.collectors.registry import register
from nodeslo.metrics import Desc, add

MTIME = Desc(
    "nodeslo_textfile_mtime_seconds",
    "gauge",
    "Modification time of a textfile collector file that was read without error.",
    ("file",),
)
SCRAPE_ERROR = Desc(
    "nodeslo_textfile_scrape_error",
    "gauge",
    "1 if the textfile directory or one of its *.prom files could not be read or parsed.",
)

SUFFIX = ".prom"
# A textfile is a few KiB to a few MiB (per-process metrics of a large host); beyond
# this it is a runaway writer, and reading it would hold the scrape and the memory.
MAX_FILE_BYTES = 16 * 1024 * 1024
# Names the exporter itself exports: a textfile sample there would shadow or duplicate one.
RESERVED_PREFIXES = ("nodeslo_", "process_")
# The help of a family whose file gives none (node_exporter's words).
DEFAULT_HELP = "Metric read from "
_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK  # a FIFO must not block the read


class TextfileError(Exception):
    """Why a file's samples are left out; the message starts with its path."""


class Vanished(Exception):
    """The file was removed between the directory listing and the read."""


@dataclass(frozen=True)
class Parsed:
    """One file's families (or why it has none), for the stat it was read at."""

    identity: tuple[int, int, int]  # (inode, size, mtime ns): a change means re-read
    mtime: float
    families: tuple[Metric, ...] = ()
    error: str = ""


def parse(path: str, text: str) -> tuple[Metric, ...]:
    """The families of one file, each with a help text; TextfileError if unusable."""
    try:
        families = list(text_string_to_metric_families(text))
    except Exception as exc:  # the parser raises ValueError, and others on odd input
        raise TextfileError(f"{path}: not the Prometheus text format: {exc}") from None
    seen_families: set[str] = set()
    seen_series: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for family in families:
        if family.name.startswith(RESERVED_PREFIXES):
            raise TextfileError(
                f"{path}: {family.name}: the {family.name.split('_')[0]}_ prefix is the "
                "exporter's own"
            )
        if family.name in seen_families:
            raise TextfileError(f"{path}: {family.name}: family declared twice")
        seen_families.add(family.name)
        for sample in family.samples:
            if sample.timestamp is not None:
                raise TextfileError(
                    f"{path}: {sample.name}: samples with timestamps are not supported"
                )
            series = (sample.name, tuple(sorted(sample.labels.items())))
            if series in seen_series:
                raise TextfileError(f"{path}: {sample.name}{dict(series[1])}: repeated sample")
            seen_series.add(series)
        if not family.documentation:
            family.documentation = f"{DEFAULT_HELP}{path}"
    return tuple(families)


def merge(files: list[tuple[str, tuple[Metric, ...]]]) -> tuple[list[Metric], dict[str, str]]:
    """Families of all files, one per name; a file that disagrees with one before it (in
    the given order) is left out whole: {path: reason}."""
    merged: dict[str, Metric] = {}
    series: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    rejected: dict[str, str] = {}
    for path, families in files:
        try:
            _check_against(path, families, merged, series)
        except TextfileError as exc:
            rejected[path] = str(exc)
            continue
        for family in families:
            into = merged.get(family.name)
            if into is None:
                into = merged[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
            into.samples.extend(family.samples)
            series.update((s.name, tuple(sorted(s.labels.items()))) for s in family.samples)
    return list(merged.values()), rejected


def _check_against(
    path: str,
    families: tuple[Metric, ...],
    merged: dict[str, Metric],
    series: set[tuple[str, tuple[tuple[str, str], ...]]],
) -> None:
    for family in families:
        other = merged.get(family.name)
        if other is None:
            continue
        if other.type != family.type:
            raise TextfileError(
                f"{path}: {family.name}: type {family.type}, another file says {other.type}"
            )
        explicit = not _default_help(other) and not _default_help(family)
        if explicit and other.documentation != family.documentation:
            raise TextfileError(f"{path}: {family.name}: help text differs from another file's")
        for sample in family.samples:
            if (sample.name, tuple(sorted(sample.labels.items()))) in series:
                raise TextfileError(
                    f"{path}: {sample.name}{sample.labels}: another file has this series"
                )


def _default_help(family: Metric) -> bool:
    return family.documentation.startswith(DEFAULT_HELP)


def read_bounded(path: str, limit: int = MAX_FILE_BYTES) -> tuple[str, os.stat_result]:
    """A regular file's text and its stat, at most `limit` bytes."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        raise Vanished(path) from None
    except OSError as exc:
        raise TextfileError(f"{path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise TextfileError(f"{path}: not a regular file")
        if info.st_size > limit:
            raise TextfileError(f"{path}: larger than {limit} bytes ({info.st_size})")
        chunks, size = [], 0
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:  # it grew while read
                raise TextfileError(f"{path}: larger than {limit} bytes")
    except OSError as exc:
        raise TextfileError(f"{path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    try:
        return data.decode("utf-8"), info
    except UnicodeDecodeError as exc:
        raise TextfileError(f"{path}: not UTF-8 (byte {exc.start})") from None


@register
class TextfileCollector(Collector):
    name = "textfile"
    help = (
        "Metrics from *.prom files in --collector.textfile.directory, as node_exporter's "
        "(enabled by giving the directory)"
    )
    default_enabled = False

    def __init__(self, ctx: CollectorContext) -> None:
        super().__init__(ctx)
        directory = ctx.option("textfile_directory", "")
        self.directory = str(directory) if directory else ""
        self._cache: dict[str, Parsed] = {}
        self._reported: set[str] = set()  # paths whose problem was logged

    @classmethod
    def add_arguments(cls, parser: argparse._ArgumentGroup) -> None:
        parser.add_argument(
            "--collector.textfile.directory",
            dest="textfile_directory",
            default="",
            metavar="DIR",
            help="directory of *.prom files to export (turns the textfile collector on)",
        )

    @classmethod
    def enabled_by_default(cls, options: argparse.Namespace) -> bool:
        return bool(getattr(options, "textfile_directory", ""))

    def collect(self) -> Iterator[Metric]:
        listing = self._listing()
        errored = listing is None
        files: list[tuple[str, tuple[Metric, ...]]] = []
        mtimes: dict[str, float] = {}
        for path in listing or ():
            parsed = self._read(path)
            if parsed is None:
                continue
            if parsed.error:
                errored = True
                self._report(path, parsed.error)
                continue
            files.append((path, parsed.families))
            mtimes[path] = parsed.mtime
        families, rejected = merge(files)
        for path, reason in rejected.items():
            errored = True
            mtimes.pop(path)
            self._report(path, reason)
        for path in mtimes:
            self._recovered(path)
        yield from families
        mtime = MTIME.family()
        for path, seconds in sorted(mtimes.items()):
            add(mtime, [path], seconds)
        yield mtime
        yield SCRAPE_ERROR.single(1.0 if errored else 0.0)

    def _listing(self) -> list[str] | None:
        """The directory's *.prom paths, sorted (the order decides which of two
        disagreeing files is kept); None, the reason logged, when it cannot be listed."""
        if not self.directory:
            self._report("", "--collector.textfile is on but no --collector.textfile.directory")
            return None
        try:
            names = os.listdir(self.directory)
        except OSError as exc:
            reason = "does not exist" if exc.errno == errno.ENOENT else exc.strerror
            self._report(self.directory, f"{self.directory}: cannot list: {reason}")
            return None
        self._recovered(self.directory)
        paths = sorted(os.path.join(self.directory, n) for n in names if n.endswith(SUFFIX))
        for stale in set(self._cache) - set(paths):
            del self._cache[stale]
            self._recovered(stale)
        return paths

    def _read(self, path: str) -> Parsed | None:
        """The file's parse, from the cache while its stat is unchanged; None if gone."""
        try:
            info = os.stat(path)
        except FileNotFoundError:
            self._cache.pop(path, None)
            return None
        except OSError as exc:
            return Parsed((0, 0, 0), 0.0, error=f"{path}: {exc.strerror}")
        identity = (info.st_ino, info.st_size, info.st_mtime_ns)
        cached = self._cache.get(path)
        if cached is not None and cached.identity == identity:
            return cached
        try:
            text, opened = read_bounded(path)
            parsed = Parsed(
                (opened.st_ino, opened.st_size, opened.st_mtime_ns),
                opened.st_mtime,
                families=parse(path, text),
            )
        except Vanished:
            self._cache.pop(path, None)
            return None
        except TextfileError as exc:
            parsed = Parsed(identity, info.st_mtime, error=str(exc))
        self._cache[path] = parsed
        return parsed

    def _report(self, path: str, reason: str) -> None:
        self._reported.add(path)
        key = f"textfile:{path}"
        self.ctx.errors.warn(key, "textfile not exported", collector=self.name, err=reason)

    def _recovered(self, path: str) -> None:
        """A path read fine again: its next problem is logged anew."""
        if path in self._reported:
            self._reported.discard(path)
            self.ctx.errors.clear(f"textfile:{path}")
