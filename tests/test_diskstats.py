"""diskstats: layouts, filtering, and what every kind of bad line gets."""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from nodeslo import readers
from nodeslo.collectors.base import CollectorContext, CollectorSet
from nodeslo.collectors.diskstats import DEFAULT_DEVICE_EXCLUDE, DiskstatsCollector, parse_line
from nodeslo.log import OnceLog
from nodeslo.paths import Roots
from support.exposition import samples, value

LINE_14 = "   8       0 sda 100 5 800 40 200 10 1600 30 0 50 70"
LINE_18 = LINE_14 + " 3 0 24 2"
LINE_20 = LINE_18 + " 9 4"


def collect(tmp_path: Path, diskstats: str | None, **options: object) -> str:
    proc = tmp_path / "proc"
    proc.mkdir(exist_ok=True)
    if diskstats is not None:
        (proc / "diskstats").write_text(diskstats)
    opts = argparse.Namespace(**options)
    ctx = CollectorContext(roots=Roots(procfs=str(proc)), options=opts)
    registry = CollectorRegistry()
    registry.register(DiskstatsCollector(ctx))
    return generate_latest(registry).decode()


@pytest.mark.parametrize("line", [LINE_14, LINE_18, LINE_20])
def test_every_layout_gives_the_same_base_counters(line: str) -> None:
    stats = parse_line(line)
    assert (stats.device, stats.reads_completed, stats.sectors_read, stats.read_ms) == (
        "sda",
        100,
        800,
        40,
    )
    assert (stats.writes_completed, stats.sectors_written, stats.write_ms) == (200, 1600, 30)
    assert (stats.in_progress, stats.io_ms, stats.weighted_io_ms) == (0, 50, 70)
    assert stats.flushes == (9 if line == LINE_20 else None)


def test_units_are_seconds_and_bytes(tmp_path: Path) -> None:
    text = collect(tmp_path, LINE_20 + "\n")
    assert value(text, "nodeslo_disk_read_bytes_total", device="sda") == 800 * 512
    assert value(text, "nodeslo_disk_written_bytes_total", device="sda") == 1600 * 512
    assert value(text, "nodeslo_disk_read_time_seconds_total", device="sda") == 0.040
    assert value(text, "nodeslo_disk_write_time_seconds_total", device="sda") == 0.030
    assert value(text, "nodeslo_disk_io_time_seconds_total", device="sda") == 0.050
    assert value(text, "nodeslo_disk_io_time_weighted_seconds_total", device="sda") == 0.070
    assert value(text, "nodeslo_disk_flushes_total", device="sda") == 9


def test_no_flush_series_on_old_kernels(tmp_path: Path) -> None:
    text = collect(tmp_path, LINE_14 + "\n")
    assert not any(n == "nodeslo_disk_flushes_total" for n, _ in samples(text))


@pytest.mark.parametrize(
    ("device", "kept"),
    [
        ("nvme0n1", True),
        ("nvme0n1p1", False),
        ("nvme12n1p3", False),
        ("sda", True),
        ("sda1", False),
        ("sdaa", True),
        ("sdaa2", False),
        ("vda", True),
        ("vda1", False),
        ("xvdb", True),
        ("xvdb1", False),
        ("md0", True),
        ("md127", True),
        ("md0p1", False),
        ("dm-0", True),
        ("loop0", False),
        ("loop12", False),
        ("ram0", False),
        ("zram0", False),
        ("mmcblk0", True),
        ("mmcblk0p1", False),
    ],
)
def test_default_filter_keeps_whole_disks(device: str, kept: bool) -> None:
    assert (re.search(DEFAULT_DEVICE_EXCLUDE, device) is None) is kept


def test_include_and_exclude_flags(tmp_path: Path) -> None:
    lines = "\n".join(LINE_20.replace("sda", d) for d in ("sda", "nvme0n1", "nvme1n1")) + "\n"
    text = collect(
        tmp_path, lines, diskstats_device_include="^nvme", diskstats_device_exclude="nvme1"
    )
    devices = {dict(ls)["device"] for n, ls in samples(text) if n.startswith("nodeslo_disk")}
    assert devices == {"nvme0n1"}


@pytest.mark.parametrize(
    "bad",
    [
        "   8       1 sdb 100 5 800",  # truncated
        "   8       1 sdb 100 5 800 40 200 x 1600 30 0 50 70 0 0 0 0 0 0",  # non-numeric
        "garbage",
    ],
)
def test_bad_line_skips_that_device_only(
    tmp_path: Path, bad: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    text = collect(tmp_path, f"{LINE_20}\n{bad}\n")
    devices = {dict(ls)["device"] for n, ls in samples(text) if n.startswith("nodeslo_disk")}
    assert devices == {"sda"}
    assert any("diskstats" in r.getMessage() for r in caplog.records)


def test_extra_fields_from_a_future_kernel_are_ignored(tmp_path: Path) -> None:
    text = collect(tmp_path, LINE_20 + " 77 88\n")
    assert value(text, "nodeslo_disk_flushes_total", device="sda") == 9


def test_empty_file_exports_nothing(tmp_path: Path) -> None:
    assert samples(collect(tmp_path, "")) == {}


def test_missing_file_exports_nothing(tmp_path: Path) -> None:
    assert samples(collect(tmp_path, None)) == {}


def test_bad_line_is_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "diskstats").write_text(f"{LINE_20}\n   8 1 sdb 1 2\n")
    errors = OnceLog(logging.getLogger("test.once"))
    ctx = CollectorContext(roots=Roots(procfs=str(proc)), errors=errors)
    collector = DiskstatsCollector(ctx)
    caplog.set_level(logging.WARNING, logger="test.once")
    for _ in range(5):
        list(collector.collect())
    assert len([r for r in caplog.records if r.name == "test.once"]) == 1


def test_permission_denied_fails_the_collector_not_the_scrape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nodeslo.collectors.diskstats as module

    def denied(path: str) -> bytes:
        raise readers.AccessDenied(path, "Permission denied")

    monkeypatch.setattr(module, "read_all", denied)
    ctx = CollectorContext(roots=Roots(procfs=str(tmp_path)))
    registry = CollectorRegistry()
    registry.register(CollectorSet([DiskstatsCollector(ctx)], ctx.errors))
    text = generate_latest(registry).decode()
    assert value(text, "nodeslo_collector_success", collector="diskstats") == 0
