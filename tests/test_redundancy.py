"""redundancy collector: /proc/mdstat in its many shapes, ZFS pool states, bad input."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from nodeslo.collectors.base import CollectorContext, CollectorSet
from nodeslo.collectors.redundancy import (
    MalformedMdstat,
    RedundancyCollector,
    RedundancyReader,
    parse_mdstat,
)
from nodeslo.paths import Roots
from support.exposition import samples, value

PERSONALITIES = "Personalities : [raid1] [raid10] [raid0] [raid6] [raid5] [raid4] [linear]\n"

HEALTHY_AND_RECOVERING = (
    PERSONALITIES
    + """md1 : active raid1 sdb2[2] sda2[0]
      976630464 blocks super 1.2 [2/1] [U_]
      [=>...................]  recovery =  8.5% (83017920/976630464) finish=74.3min speed=2003K/sec
      bitmap: 8/8 pages [32KB], 65536KB chunk

md0 : active raid10 nvme3n1[3] nvme2n1[2] nvme1n1[1] nvme0n1[0]
      1953260544 blocks super 1.2 512K chunks 2 near-copies [4/4] [UUUU]

unused devices: <none>
"""
)


def test_healthy_and_recovering_arrays() -> None:
    md1, md0 = parse_mdstat(HEALTHY_AND_RECOVERING)
    assert (md0.device, md0.level, md0.active, md0.raid_disks, md0.working) == (
        "md0",
        "raid10",
        True,
        4,
        4,
    )
    assert md0.down == 0 and not md0.degraded and md0.sync_action is None
    # The member being rebuilt is neither in sync nor a spare.
    assert (md1.raid_disks, md1.working, md1.down, md1.failed, md1.spares) == (2, 1, 1, 0, 0)
    assert md1.degraded
    assert md1.sync_action == "recovery"
    assert md1.sync_progress == pytest.approx(83017920 / 976630464)
    assert md0.problems == () and md1.problems == ()


def test_failed_and_spare_members() -> None:
    (md,) = parse_mdstat(
        "md5 : active raid5 sde[4](S) sdd[3](F) sdc[2] sdb[1] sda[0]\n"
        "      2929893888 blocks super 1.2 level 5, 512k chunk, algorithm 2 [4/3] [UUU_]\n"
    )
    assert (md.failed, md.spares, md.working, md.down, md.degraded) == (1, 1, 3, 1, True)
    assert [m.name for m in md.members if m.faulty] == ["sdd"]


def test_write_mostly_journal_and_replacement_flags() -> None:
    (md,) = parse_mdstat(
        "md2 : active raid1 sdc1[2](R) sdb1[1](W) sda1[0] nvme0n1p1[3](J)\n"
        "      1048512 blocks [2/2] [UU]\n"
    )
    assert {m.name: m.flags for m in md.members} == {
        "sdc1": "R",
        "sdb1": "W",
        "sda1": "",
        "nvme0n1p1": "J",
    }
    assert (md.failed, md.spares, md.working) == (0, 0, 2)


def test_raid0_and_linear_have_no_redundancy_status() -> None:
    (md,) = parse_mdstat(
        "md3 : active raid0 sdb[1] sda[0]\n      1953262592 blocks super 1.2 512k chunks\n"
    )
    assert md.raid_disks is None and md.down is None
    assert md.working == 2 and not md.degraded and md.problems == ()


def test_inactive_array() -> None:
    (md,) = parse_mdstat(
        "md127 : inactive sdb[1](S) sda[0](S)\n      3906764976 blocks super 1.2\n"
    )
    assert (md.active, md.level, md.spares, md.working, md.degraded) == (False, "", 2, 0, True)
    assert md.problems == ()


def test_read_only_array_is_active() -> None:
    (md,) = parse_mdstat(
        "md0 : active (auto-read-only) raid1 sdb[1] sda[0]\n      1046528 blocks [2/2] [UU]\n"
    )
    assert md.active and md.read_only and md.level == "raid1" and not md.degraded


@pytest.mark.parametrize(
    ("line", "action", "progress"),
    [
        ("[====>....]  resync = 21.4% (1/4) finish=1min speed=1K/sec", "resync", 0.25),
        ("[==>......]  check = 12.6% (117/1000) finish=..", "check", 0.117),
        ("[=>.......]  reshape =  5.0% (5/100)", "reshape", 0.05),
        ("resync=DELAYED", "resync", 0.0),
        ("resync=PENDING", "resync", 0.0),
        ("[==>......]  recovery = 33.3%", "recovery", 0.333),
    ],
)
def test_sync_progress(line: str, action: str, progress: float) -> None:
    (md,) = parse_mdstat(
        f"md0 : active raid1 sdb[1] sda[0]\n      1046528 blocks [2/2] [UU]\n      {line}\n"
    )
    assert md.sync_action == action
    assert md.sync_progress == pytest.approx(progress)


def test_unknown_personality_is_reported_from_its_own_lines() -> None:
    (md,) = parse_mdstat(
        "md9 : active raid7 sdc[2] sdb[1] sda[0]\n      100 blocks super 1.2 [3/2] [UU_]\n"
    )
    assert md.level == "raid7"
    assert md.problems == ("unknown personality 'raid7'",)
    assert (md.raid_disks, md.working, md.degraded) == (3, 2, True)


def test_missing_status_line() -> None:
    (md, ok) = parse_mdstat(
        "md0 : active raid10 nvme1n1[1] nvme0n1[0]\n"
        "md1 : active raid1 sdb[1] sda[0]\n      1046528 blocks [2/2] [UU]\n"
    )
    assert md.problems == ("missing status line",)
    assert md.raid_disks is None and md.working == 2
    assert ok.problems == () and ok.raid_disks == 2


def test_redundant_array_without_slot_status() -> None:
    (md,) = parse_mdstat("md0 : active raid1 sdb[1] sda[0]\n      1046528 blocks super 1.2\n")
    assert md.problems == ("raid1 status line without [n/m] [U_]",)


def test_inconsistent_status() -> None:
    (md,) = parse_mdstat("md0 : active raid1 sdb[1] sda[0]\n      10 blocks [2/2] [U_]\n")
    assert md.problems == ("status [2/2] [U_] is inconsistent",)


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("      1046528 blocks [2/2] [UU]\n", "line 1: continuation outside an array"),
        (PERSONALITIES + "garbage here\n", "line 2: not an array header"),
    ],
)
def test_malformed_mdstat(text: str, complaint: str) -> None:
    with pytest.raises(MalformedMdstat, match=complaint):
        parse_mdstat(text)


def test_empty_mdstat() -> None:
    assert parse_mdstat(PERSONALITIES + "unused devices: <none>\n") == []


# --- the collector -------------------------------------------------------------


def tree(root: Path, mdstat: str | None = None, pools: dict[str, str] | None = None) -> Roots:
    if mdstat is not None:
        (root / "proc").mkdir(parents=True, exist_ok=True)
        (root / "proc" / "mdstat").write_text(mdstat)
    kstat = root / "proc/spl/kstat/zfs"
    for pool, state in (pools or {}).items():
        (kstat / pool).mkdir(parents=True, exist_ok=True)
        (kstat / pool / "state").write_text(f"{state}\n")
    if pools is not None:
        kstat.mkdir(parents=True, exist_ok=True)
        (kstat / "arcstats").write_text("13 1 0x01 147 39984 1 1\n")
    return Roots.under(str(root))


def scrape(roots: Roots) -> str:
    ctx = CollectorContext(roots=roots)
    registry = CollectorRegistry()
    registry.register(CollectorSet([RedundancyCollector(ctx)], ctx.errors))
    return generate_latest(registry).decode()


def test_collector_md_metrics(tmp_path: Path) -> None:
    text = scrape(tree(tmp_path, HEALTHY_AND_RECOVERING))
    assert value(text, "nodeslo_md_disks", device="md1", state="active") == 1
    assert value(text, "nodeslo_md_disks", device="md1", state="down") == 1
    assert value(text, "nodeslo_md_disks", device="md1", state="failed") == 0
    assert value(text, "nodeslo_md_disks", device="md1", state="spare") == 0
    assert value(text, "nodeslo_md_disks_required", device="md0") == 4
    assert value(
        text, "nodeslo_md_sync_progress_ratio", device="md1", action="recovery"
    ) == pytest.approx(0.085, abs=1e-3)
    assert not any(
        n == "nodeslo_md_sync_progress_ratio" and ("device", "md0") in ls
        for (n, ls) in samples(text)
    )
    assert value(text, "nodeslo_md_active", device="md0") == 1
    assert samples(text)[("nodeslo_md_info", (("device", "md0"), ("level", "raid10")))] == 1


def test_collector_without_md_or_zfs_exports_nothing(tmp_path: Path) -> None:
    text = scrape(Roots.under(str(tmp_path)))
    assert value(text, "nodeslo_collector_success", collector="redundancy") == 1
    assert "nodeslo_md_" not in text and "nodeslo_zfs_" not in text


def test_collector_malformed_mdstat_keeps_zfs_and_succeeds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    roots = tree(tmp_path, "      orphan continuation\n", {"pdds": "ONLINE"})
    with caplog.at_level(logging.WARNING):
        text = scrape(roots)
    assert value(text, "nodeslo_collector_success", collector="redundancy") == 1
    assert "nodeslo_md_disks{" not in text
    assert value(text, "nodeslo_zfs_pool_state", pool="pdds", state="ONLINE") == 1
    assert any("mdstat" in r.getMessage() and "line 1" in r.getMessage() for r in caplog.records)


def test_collector_unknown_personality_and_missing_status_are_exported_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mdstat = (
        "md9 : active raid7 sdb[1] sda[0]\n      100 blocks [2/2] [UU]\n"
        "md0 : active raid10 nvme1n1[1] nvme0n1[0](F)\n"
    )
    with caplog.at_level(logging.WARNING):
        text = scrape(tree(tmp_path, mdstat))
    assert value(text, "nodeslo_collector_success", collector="redundancy") == 1
    assert value(text, "nodeslo_md_disks_required", device="md9") == 2
    # Without a status line the slots are unknown; the members still tell failed ones.
    assert value(text, "nodeslo_md_disks", device="md0", state="failed") == 1
    assert value(text, "nodeslo_md_disks", device="md0", state="active") == 1
    assert 'nodeslo_md_disks_required{device="md0"}' not in text
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "unknown personality 'raid7'" in messages
    assert "md0: missing status line" in messages


def test_zfs_one_hot_states(tmp_path: Path) -> None:
    text = scrape(tree(tmp_path, pools={"pdds": "DEGRADED", "boot": "ONLINE"}))
    states = {
        (dict(ls)["pool"], dict(ls)["state"]): v
        for (n, ls), v in samples(text).items()
        if n == "nodeslo_zfs_pool_state"
    }
    assert len(states) == 14  # 7 states x 2 pools; arcstats is not a pool
    assert states[("pdds", "DEGRADED")] == 1 and states[("pdds", "ONLINE")] == 0
    assert sum(v for (pool, _), v in states.items() if pool == "boot") == 1


def test_zfs_unknown_state_is_all_zeros_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        text = scrape(tree(tmp_path, pools={"pdds": "RESILVERING?"}))
    values = [v for (n, ls), v in samples(text).items() if n == "nodeslo_zfs_pool_state"]
    assert len(values) == 7 and sum(values) == 0
    assert any("unknown state 'RESILVERING?'" in r.getMessage() for r in caplog.records)


def test_vanished_pool_is_left_out(tmp_path: Path) -> None:
    """A pool exported between listing the kstat directory and reading its state."""
    roots = tree(tmp_path, pools={"pdds": "ONLINE", "scratch": "ONLINE"})
    reader = RedundancyReader(roots)
    errors: list[tuple[str, Exception]] = []
    assert [p.name for p in reader.zfs_pools(lambda k, e: errors.append((k, e)))] == [
        "pdds",
        "scratch",
    ]
    shutil.rmtree(tmp_path / "proc/spl/kstat/zfs/scratch")
    (tmp_path / "proc/spl/kstat/zfs/scratch").mkdir()  # the directory outlives its files
    assert [p.name for p in reader.zfs_pools(lambda k, e: errors.append((k, e)))] == ["pdds"]
    assert errors == []
    text = scrape(roots)
    assert value(text, "nodeslo_collector_success", collector="redundancy") == 1
    assert 'pool="scratch"' not in text


def test_seed_spec_fixture(seed_tree: Path) -> None:
    text = scrape(Roots.under(str(seed_tree)))
    assert value(text, "nodeslo_md_disks", device="md0", state="active") == 8
    assert value(text, "nodeslo_md_disks_required", device="md0") == 8
    assert value(text, "nodeslo_zfs_pool_state", pool="pdds", state="ONLINE") == 1


def test_real_captures_have_no_md_or_zfs(real_captures: dict[str, Path]) -> None:
    for name, root in real_captures.items():
        text = scrape(Roots.under(str(root)))
        assert value(text, "nodeslo_collector_success", collector="redundancy") == 1, name
        assert "nodeslo_md_" not in text and "nodeslo_zfs_" not in text, name
