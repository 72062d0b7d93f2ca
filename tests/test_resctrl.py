"""resctrl collector: MBM per L3 domain summed over control groups, kept monotonic."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from nodeslo.collectors.base import CollectorContext, CollectorSet
from nodeslo.collectors.resctrl import MonotonicSums, ResctrlCollector, parse_mbm
from nodeslo.paths import Roots
from nodeslo.readers import MalformedValue
from support.exposition import value

RESCTRL = "sys/fs/resctrl"


def mbm(root: Path, group: str, domain: int, total: int | str, local: int | str | None) -> None:
    base = root / RESCTRL / group / "mon_data" / f"mon_L3_{domain:02d}"
    base.mkdir(parents=True, exist_ok=True)
    (base / "mbm_total_bytes").write_text(f"{total}\n")
    if local is not None:
        (base / "mbm_local_bytes").write_text(f"{local}\n")


class Scraper:
    def __init__(self, root: Path) -> None:
        self.ctx = CollectorContext(roots=Roots.under(str(root)))
        self.registry = CollectorRegistry()
        self.registry.register(CollectorSet([ResctrlCollector(self.ctx)], self.ctx.errors))

    def __call__(self) -> str:
        return generate_latest(self.registry).decode()


def test_parse_mbm() -> None:
    assert parse_mbm("f", "123") == 123
    for state in ("Unavailable", "Error", "Unassigned"):
        assert parse_mbm("f", state) is None
    with pytest.raises(MalformedValue, match="f: not an integer"):
        parse_mbm("f", "12 MB")


def test_sum_over_control_groups_per_domain(tmp_path: Path) -> None:
    mbm(tmp_path, "", 0, 1000, 900)
    mbm(tmp_path, "", 1, 2000, 1500)
    mbm(tmp_path, "grp", 0, 300, 200)
    mbm(tmp_path, "grp", 1, 400, 300)
    # A MON group's bytes are already in its control group: not added again.
    mbm(tmp_path, "grp/mon_groups/sub", 0, 250, 150)
    (tmp_path / RESCTRL / "info" / "L3_MON").mkdir(parents=True)
    text = Scraper(tmp_path)()
    assert value(text, "nodeslo_memory_bandwidth_bytes_total", domain="0") == 1300
    assert value(text, "nodeslo_memory_bandwidth_bytes_total", domain="1") == 2400
    assert value(text, "nodeslo_memory_bandwidth_local_bytes_total", domain="1") == 1800


def test_not_mounted_exports_nothing(tmp_path: Path) -> None:
    (tmp_path / RESCTRL).mkdir(parents=True)  # the empty mountpoint sysfs always has
    text = Scraper(tmp_path)()
    assert value(text, "nodeslo_collector_success", collector="resctrl") == 1
    assert "nodeslo_memory_bandwidth" not in text


def test_unavailable_keeps_the_last_value_without_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mbm(tmp_path, "", 0, 1000, None)
    scrape = Scraper(tmp_path)
    assert value(scrape(), "nodeslo_memory_bandwidth_bytes_total", domain="0") == 1000
    mbm(tmp_path, "", 0, "Unavailable", None)
    text = scrape()
    assert value(text, "nodeslo_memory_bandwidth_bytes_total", domain="0") == 1000
    assert value(text, "nodeslo_collector_success", collector="resctrl") == 1
    assert "nodeslo_memory_bandwidth_local_bytes_total" not in text  # no local MBM here
    assert not caplog.records
    mbm(tmp_path, "", 0, 1500, None)
    assert value(scrape(), "nodeslo_memory_bandwidth_bytes_total", domain="0") == 1500


def test_removed_group_does_not_make_the_sum_go_back(tmp_path: Path) -> None:
    mbm(tmp_path, "", 0, 1000, 0)
    mbm(tmp_path, "grp", 0, 500, 0)
    scrape = Scraper(tmp_path)
    assert value(scrape(), "nodeslo_memory_bandwidth_bytes_total", domain="0") == 1500
    shutil.rmtree(tmp_path / RESCTRL / "grp")
    mbm(tmp_path, "", 0, 1100, 0)
    assert value(scrape(), "nodeslo_memory_bandwidth_bytes_total", domain="0") == 1600
    # A group created later counts from its creation on.
    mbm(tmp_path, "new", 0, 70, 0)
    assert value(scrape(), "nodeslo_memory_bandwidth_bytes_total", domain="0") == 1600
    mbm(tmp_path, "new", 0, 100, 0)
    assert value(scrape(), "nodeslo_memory_bandwidth_bytes_total", domain="0") == 1630


def test_monotonic_sums_counter_restart() -> None:
    sums = MonotonicSums()
    assert sums.update({("", "0"): 100}) == {"0": 100}
    assert sums.update({("", "0"): 30}) == {"0": 130}  # restarted from zero
    assert sums.update({("", "0"): None}) == {"0": 130}


def test_malformed_value_is_logged_and_skipped(tmp_path: Path) -> None:
    mbm(tmp_path, "", 0, "lots", 5)
    text = Scraper(tmp_path)()
    assert value(text, "nodeslo_collector_success", collector="resctrl") == 1
    assert "nodeslo_memory_bandwidth_bytes_total{" not in text
    assert value(text, "nodeslo_memory_bandwidth_local_bytes_total", domain="0") == 5


def test_seed_spec_fixture(seed_tree: Path) -> None:
    text = Scraper(seed_tree)()
    up = 864000
    assert value(text, "nodeslo_memory_bandwidth_bytes_total", domain="0") == (150e9 + 35e9) * up
