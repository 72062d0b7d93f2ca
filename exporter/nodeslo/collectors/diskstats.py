"""Block I/O counters per whole disk, from /proc/diskstats.

Field layout (Documentation/admin-guide/iostats.rst), after major, minor, name:
 1 reads completed   2 reads merged   3 sectors read     4 ms reading
 5 writes completed  6 writes merged  7 sectors written  8 ms writing
 9 I/Os in progress 10 ms doing I/O  11 weighted ms doing I/O
12-15 discards (4.18+)              16 flushes completed, 17 ms flushing (5.5+)
so a line has 14, 18 or 20 fields. Sectors are always 512 bytes here, whatever the
device's logical block size.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.core import Metric

from nodeslo.collectors.base import Collector, CollectorContext
from nodeslo.collectors.registry import register
from nodeslo.flagtypes import as_pattern, regex
from nodeslo.metrics import Desc, add
from nodeslo.readers import read_all, to_u64

READS = Desc("nodeslo_disk_reads_completed_total", "counter", "Reads completed.", ("device",))
WRITES = Desc("nodeslo_disk_writes_completed_total", "counter", "Writes completed.", ("device",))
READ_TIME = Desc(
    "nodeslo_disk_read_time_seconds_total", "counter", "Time spent on reads.", ("device",)
)
WRITE_TIME = Desc(
    "nodeslo_disk_write_time_seconds_total", "counter", "Time spent on writes.", ("device",)
)
READ_BYTES = Desc("nodeslo_disk_read_bytes_total", "counter", "Bytes read.", ("device",))
WRITTEN_BYTES = Desc("nodeslo_disk_written_bytes_total", "counter", "Bytes written.", ("device",))
IO_TIME = Desc(
    "nodeslo_disk_io_time_seconds_total",
    "counter",
    "Time the device had I/O in flight (busy time).",
    ("device",),
)
IO_TIME_WEIGHTED = Desc(
    "nodeslo_disk_io_time_weighted_seconds_total",
    "counter",
    "Time spent doing I/O weighted by the number of I/Os in flight.",
    ("device",),
)
IN_PROGRESS = Desc("nodeslo_disk_io_in_progress", "gauge", "I/Os currently in flight.", ("device",))
FLUSHES = Desc(
    "nodeslo_disk_flushes_total", "counter", "Flush requests completed (kernel 5.5+).", ("device",)
)

ALL_DESCS: tuple[Desc, ...] = (READS, WRITES, READ_TIME, WRITE_TIME, READ_BYTES, WRITTEN_BYTES)
ALL_DESCS += (IO_TIME, IO_TIME_WEIGHTED, IN_PROGRESS, FLUSHES)

SECTOR_BYTES = 512
MIN_FIELDS = 14
FLUSH_FIELDS = 20

# Partitions, loop, ram and zram devices: the counters of whole disks already hold them.
DEFAULT_DEVICE_EXCLUDE = (
    r"^(z?ram|loop|fd)\d+$"
    r"|^(h|s|v|xv)d[a-z]+\d+$"
    r"|^(nvme\d+n\d+|mmcblk\d+|md\d+|nbd\d+)p\d+$"
)


@dataclass(frozen=True)
class DiskStats:
    device: str
    reads_completed: int
    sectors_read: int
    read_ms: int
    writes_completed: int
    sectors_written: int
    write_ms: int
    in_progress: int
    io_ms: int
    weighted_io_ms: int
    flushes: int | None


class MalformedLine(ValueError):
    pass


def parse_line(line: str) -> DiskStats:
    """One /proc/diskstats line; MalformedLine when truncated or not numeric."""
    parts = line.split()
    if len(parts) < MIN_FIELDS:
        raise MalformedLine(f"{len(parts)} fields, expected at least {MIN_FIELDS}")
    device = parts[2]
    try:
        values = [to_u64(v) for v in parts[3:]]
    except ValueError:
        raise MalformedLine(f"device {device}: non-numeric field") from None
    return DiskStats(
        device=device,
        reads_completed=values[0],
        sectors_read=values[2],
        read_ms=values[3],
        writes_completed=values[4],
        sectors_written=values[6],
        write_ms=values[7],
        in_progress=values[8],
        io_ms=values[9],
        weighted_io_ms=values[10],
        flushes=values[15] if len(parts) >= FLUSH_FIELDS else None,
    )


@register
class DiskstatsCollector(Collector):
    name = "diskstats"
    help = "Block device I/O counters per whole disk (/proc/diskstats)."

    @classmethod
    def add_arguments(cls, parser: argparse._ArgumentGroup) -> None:
        parser.add_argument(
            "--collector.diskstats.device-exclude",
            dest="diskstats_device_exclude",
            type=regex,
            default=DEFAULT_DEVICE_EXCLUDE,
            metavar="REGEX",
            help="Devices to leave out (default: partitions, loop, ram, zram).",
        )
        parser.add_argument(
            "--collector.diskstats.device-include",
            dest="diskstats_device_include",
            type=regex,
            default=None,
            metavar="REGEX",
            help="Only these devices (applied before the exclude pattern).",
        )

    def __init__(self, ctx: CollectorContext) -> None:
        super().__init__(ctx)
        self._exclude = as_pattern(
            self.ctx.option("diskstats_device_exclude", DEFAULT_DEVICE_EXCLUDE)
        )
        self._include = as_pattern(self.ctx.option("diskstats_device_include"))
        self._path = self.ctx.roots.proc("diskstats")

    def wanted(self, device: str) -> bool:
        if self._include is not None and not self._include.search(device):
            return False
        return not (self._exclude is not None and self._exclude.search(device))

    def collect(self) -> Iterator[Metric]:
        raw = read_all(self._path)
        if raw is None:
            return
        families = {d: d.family() for d in ALL_DESCS}
        for number, line in enumerate(raw.decode("ascii", "replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                stats = parse_line(line)
            except MalformedLine as exc:
                self.skip(f"line{number}", ValueError(f"{self._path}:{number}: {exc}"))
                continue
            if not self.wanted(stats.device):
                continue
            dev = [stats.device]
            add(families[READS], dev, stats.reads_completed)
            add(families[WRITES], dev, stats.writes_completed)
            add(families[READ_TIME], dev, stats.read_ms / 1000.0)
            add(families[WRITE_TIME], dev, stats.write_ms / 1000.0)
            add(families[READ_BYTES], dev, stats.sectors_read * SECTOR_BYTES)
            add(families[WRITTEN_BYTES], dev, stats.sectors_written * SECTOR_BYTES)
            add(families[IO_TIME], dev, stats.io_ms / 1000.0)
            add(families[IO_TIME_WEIGHTED], dev, stats.weighted_io_ms / 1000.0)
            add(families[IN_PROGRESS], dev, stats.in_progress)
            if stats.flushes is not None:
                add(families[FLUSHES], dev, stats.flushes)
        yield from families.values()
