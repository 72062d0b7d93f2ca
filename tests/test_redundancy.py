"""redundancy collector: md arrays from sysfs in every state the kernel reports, cross-
checked against node_exporter's md fixtures; ZFS pool states; bad input."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from fixtures import mdraid as fx
from fixtures.make_fixtures import build, variant
from fixtures.tree import Tree
from nodeslo.collectors.base import CollectorContext, CollectorSet
from nodeslo.collectors.mdraid import (
    MdReader,
    parse_count,
    parse_member_state,
    parse_sync_completed,
)
from nodeslo.collectors.redundancy import RedundancyCollector, ZfsReader, zfs_state_label
from nodeslo.paths import Roots
from support.exposition import samples, value

# --- pure decoders --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ratio"),
    [("none", None), ("delayed", 0.0), ("5 / 20", 0.25), ("49059 / 65408", 0.7500458659491194)],
)
def test_sync_completed(text: str, ratio: float | None) -> None:
    assert parse_sync_completed(text) == ratio


@pytest.mark.parametrize("text", ["", "12", "a / b", "5 / 0", "5/"])
def test_sync_completed_refuses_what_is_no_fraction(text: str) -> None:
    with pytest.raises(ValueError):
        parse_sync_completed(text)


def test_member_state() -> None:
    assert parse_member_state("in_sync,write_mostly") == {"in_sync", "write_mostly"}
    assert parse_member_state("faulty") == {"faulty"}
    for bad in ("", "in sync", "IN_SYNC", "spare,\x00"):
        with pytest.raises(ValueError):
            parse_member_state(bad)


def test_counts() -> None:
    assert parse_count("") is None  # raid_disks of an inactive array
    assert parse_count("4") == 4
    for bad in ("-1", "four"):
        with pytest.raises(ValueError):
            parse_count(bad)


# --- the reader on the fixture variants -----------------------------------------------


def md_tree(tmp_path: Path, *arrays: fx.Array) -> Roots:
    tree = Tree(tmp_path)
    for array in arrays:
        fx.write_sysfs(tree, array)
    return Roots.under(str(tmp_path))


def scrape(roots: Roots) -> str:
    ctx = CollectorContext(roots=roots)
    registry = CollectorRegistry()
    registry.register(CollectorSet([RedundancyCollector(ctx)], ctx.errors))
    return generate_latest(registry).decode()


def disks(text: str, device: str) -> tuple[float, float, float]:
    return tuple(  # type: ignore[return-value]
        value(text, "nodeslo_md_disks", device=device, state=s)
        for s in ("active", "failed", "spare")
    )


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("md-shapes")
    build(root, variant("md-shapes"))
    return scrape(Roots.under(str(root)))


def test_node_exporter_inactive_raid1_has_no_active_member(shapes: str) -> None:
    """node_exporter's mdstat md4 (`inactive raid1 sda3[0](F) sdb3[1](S)`): 0 active,
    1 failed, 1 spare, inactive. Its raid_disks is unknown (node_exporter says 0)."""
    assert disks(shapes, "md40") == (0, 1, 1)
    assert value(shapes, "nodeslo_md_state", device="md40", state="inactive") == 1
    assert value(shapes, "nodeslo_md_active", device="md40") == 0
    assert 'nodeslo_md_disks_required{device="md40"}' not in shapes
    assert 'nodeslo_md_degraded{device="md40"}' not in shapes
    # md219 (`inactive sdc[2](S) sda[0](S) sdb[1](S)`): 3 spares, nothing else.
    assert disks(shapes, "md219") == (0, 0, 3)
    assert value(shapes, "nodeslo_md_active", device="md219") == 0


# node_exporter's node_md_raid_disks and node_md_degraded for procfs's sysfs fixtures.
NODE_EXPORTER_SYSFS = {
    "md0": (2, 0),
    "md1": (2, 0),
    "md10": (4, 0),
    "md4": (3, 0),
    "md5": (3, 1),
    "md6": (4, 1),
}


@pytest.mark.parametrize("device", NODE_EXPORTER_SYSFS)
def test_node_exporter_sysfs_shapes(shapes: str, device: str) -> None:
    raid_disks, degraded = NODE_EXPORTER_SYSFS[device]
    assert value(shapes, "nodeslo_md_disks_required", device=device) == raid_disks
    assert value(shapes, "nodeslo_md_active", device=device) == 1
    if device == "md0":
        # raid0 has no degraded attribute: node_exporter reports 0, nodeslo nothing.
        assert 'nodeslo_md_degraded{device="md0"}' not in shapes
        assert value(shapes, "nodeslo_md_info", device="md0", level="raid0") == 1
    else:
        assert value(shapes, "nodeslo_md_degraded", device=device) == degraded


def test_node_exporter_member_states_and_recovery(shapes: str) -> None:
    # md5: sdaa spare, sdn and sdo in_sync, sdp faulty; md6 recovering onto sdt at 75 %.
    assert disks(shapes, "md5") == (2, 1, 1)
    assert value(shapes, "nodeslo_md_member_state", device="md5", member="sdp", state="faulty") == 1
    assert disks(shapes, "md6") == (3, 0, 1)
    progress = value(shapes, "nodeslo_md_sync_progress_ratio", device="md6", action="recover")
    assert progress == pytest.approx(0.7500458659491194)
    assert value(shapes, "nodeslo_md_state", device="md6", state="active") == 1
    assert sum(v for (n, _), v in samples(shapes).items() if n == "nodeslo_md_state") == 8


def test_seed_spec_and_its_faults(make_tree) -> None:  # type: ignore[no-untyped-def]
    healthy = scrape(Roots.under(str(make_tree("seed-spec"))))
    assert disks(healthy, "md0") == (8, 0, 0)
    assert value(healthy, "nodeslo_md_degraded", device="md0") == 0
    assert value(healthy, "nodeslo_md_disks_required", device="md0") == 8
    assert value(healthy, "nodeslo_md_state", device="md0", state="clean") == 1
    assert value(healthy, "nodeslo_md_mismatched_sectors", device="md0") == 0
    assert "nodeslo_md_sync_progress_ratio{" not in healthy

    degraded = scrape(Roots.under(str(make_tree("raid-degraded"))))
    assert disks(degraded, "md0") == (7, 1, 0)
    assert value(degraded, "nodeslo_md_degraded", device="md0") == 1
    assert (
        value(degraded, "nodeslo_md_member_state", device="md0", member="nvme5n1", state="faulty")
        == 1
    )

    resyncing = scrape(Roots.under(str(make_tree("raid-resyncing"))))
    ratio = value(resyncing, "nodeslo_md_sync_progress_ratio", device="md0", action="resync")
    assert ratio == pytest.approx(1 / 3)
    assert value(resyncing, "nodeslo_md_degraded", device="md0") == 0  # a resync is no loss

    inactive = scrape(Roots.under(str(make_tree("raid-inactive"))))
    assert value(inactive, "nodeslo_md_active", device="md0") == 0
    assert value(inactive, "nodeslo_md_state", device="md0", state="inactive") == 1
    assert disks(inactive, "md0") == (0, 0, 4)
    assert value(inactive, "nodeslo_md_info", device="md0", level="") == 1

    stopped = scrape(Roots.under(str(make_tree("raid-stopped"))))
    assert "nodeslo_md_" not in stopped


def test_a_fault_switched_off_again_leaves_no_stale_files(tmp_path: Path) -> None:
    """The scenario player re-renders trees: inactive -> running must bring back the
    sync files, running -> inactive must take them and the dropped members away."""
    build(tmp_path, variant("seed-spec-tuned"))
    build(tmp_path, variant("raid-inactive"))
    assert not (tmp_path / fx.SYSFS / "md0/md/degraded").exists()
    assert not (tmp_path / fx.SYSFS / "md0/md/dev-nvme1n1").exists()
    build(tmp_path, variant("seed-spec-tuned"))
    text = scrape(Roots.under(str(tmp_path)))
    assert disks(text, "md0") == (8, 0, 0)
    assert value(text, "nodeslo_md_degraded", device="md0") == 0


def test_broken_raid0_and_a_write_mostly_member(tmp_path: Path) -> None:
    """As seen under QEMU: a raid0 that lost a member and a raid1 whose last member
    was failed read `broken`; broken is not running."""
    roots = md_tree(
        tmp_path,
        fx.Array(
            "md2",
            "broken",
            "raid0",
            2,
            (fx.Member("nvme2n1", 0, "in_sync"), fx.Member("nvme3n1", 1, "in_sync")),
            100,
        ),
        fx.Array(
            "md1",
            "clean",
            "raid1",
            2,
            (fx.Member("sda", 0, "in_sync"), fx.Member("sdb", 1, "in_sync,write_mostly")),
            100,
            degraded=0,
        ),
    )
    text = scrape(roots)
    assert value(text, "nodeslo_md_active", device="md2") == 0
    assert value(text, "nodeslo_md_state", device="md2", state="broken") == 1
    assert value(text, "nodeslo_md_disks_required", device="md2") == 2  # raid0 too
    assert disks(text, "md1") == (2, 0, 0)
    for state in ("in_sync", "write_mostly"):
        got = value(text, "nodeslo_md_member_state", device="md1", member="sdb", state=state)
        assert got == 1


# --- bad input: each array and each value on its own ---------------------------------


def test_unknown_or_unreadable_array_state_is_not_running_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = fx.Array("md1", "clean", "raid1", 2, (fx.Member("sda", 0, "in_sync"),), 1, degraded=1)
    weird = fx.Array("md3", "exploded", "raid1", 2, (fx.Member("sdc", 0, "in_sync"),), 1)
    unreadable = fx.Array("md4", "clean", "raid1", 2, (fx.Member("sdd", 0, "in_sync"),), 1)
    roots = md_tree(tmp_path, good, weird, unreadable)
    state = tmp_path / fx.SYSFS / "md4/md/array_state"
    state.unlink()
    state.mkdir()  # reading it fails with EISDIR
    with caplog.at_level(logging.WARNING):
        text = scrape(roots)
    assert value(text, "nodeslo_collector_success", collector="redundancy") == 1
    for device in ("md3", "md4"):
        # Missing data is no good news: the array counts as not running.
        assert value(text, "nodeslo_md_active", device=device) == 0
        states = [
            v
            for (n, ls), v in samples(text).items()
            if n == "nodeslo_md_state" and dict(ls)["device"] == device
        ]
        assert len(states) == 10 and sum(states) == 0
    assert value(text, "nodeslo_md_active", device="md1") == 1
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "md3/md/array_state: unknown state 'exploded'" in messages
    assert "md4/md/array_state" in messages


def test_malformed_values_are_skipped_one_by_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    array = fx.Array(
        "md0",
        "active",
        "raid10",
        4,
        tuple(fx.Member(f"sd{c}", i, "in_sync") for i, c in enumerate("abcd")),
        1,
        degraded=0,
        sync_action="check",
        sync_completed="half of it",
    )
    roots = md_tree(tmp_path, array)
    md = tmp_path / fx.SYSFS / "md0/md"
    (md / "raid_disks").write_text("four\n")
    (md / "dev-sdc/state").write_text("in sync!\n")
    with caplog.at_level(logging.WARNING):
        text = scrape(roots)
    assert value(text, "nodeslo_collector_success", collector="redundancy") == 1
    assert 'nodeslo_md_disks_required{device="md0"}' not in text
    assert "nodeslo_md_sync_progress_ratio{" not in text
    assert disks(text, "md0") == (3, 0, 0)  # sdc left out, the others counted
    assert value(text, "nodeslo_md_degraded", device="md0") == 0
    messages = " ".join(r.getMessage() for r in caplog.records)
    for complaint in ("raid_disks: not a count", "sync_completed", "dev-sdc/state"):
        assert complaint in messages


def test_an_array_stopped_while_it_is_read_is_left_out(tmp_path: Path) -> None:
    roots = md_tree(tmp_path, fx.Array("md0", "clean", "raid1", 2, (), 1, degraded=0))
    reader = MdReader(roots)
    assert [a.device for a in reader.arrays()] == ["md0"]
    shutil.rmtree(tmp_path / fx.SYSFS / "md0/md")  # the block device outlives md/ briefly
    assert reader.arrays() == []
    (tmp_path / "sys/block/mdnotraid").mkdir()  # a device named md* without md/
    assert reader.arrays() == []


def test_no_md_or_zfs_exports_nothing(tmp_path: Path) -> None:
    text = scrape(Roots.under(str(tmp_path)))
    assert value(text, "nodeslo_collector_success", collector="redundancy") == 1
    assert "nodeslo_md_" not in text and "nodeslo_zfs_" not in text


def test_real_captures_have_no_md_or_zfs(real_captures: dict[str, Path]) -> None:
    for name, root in real_captures.items():
        text = scrape(Roots.under(str(root)))
        assert value(text, "nodeslo_collector_success", collector="redundancy") == 1, name
        assert "nodeslo_md_" not in text and "nodeslo_zfs_" not in text, name


# --- ZFS ------------------------------------------------------------------------------


def zfs_tree(root: Path, pools: dict[str, str]) -> Roots:
    kstat = root / "proc/spl/kstat/zfs"
    for pool, state in pools.items():
        (kstat / pool).mkdir(parents=True, exist_ok=True)
        (kstat / pool / "state").write_text(f"{state}\n")
    kstat.mkdir(parents=True, exist_ok=True)
    (kstat / "arcstats").write_text("13 1 0x01 147 39984 1 1\n")
    return Roots.under(str(root))


def pool_states(text: str) -> dict[tuple[str, str], float]:
    return {
        (dict(ls)["pool"], dict(ls)["state"]): v
        for (n, ls), v in samples(text).items()
        if n == "nodeslo_zfs_pool_state"
    }


def test_zfs_one_hot_states(tmp_path: Path) -> None:
    states = pool_states(scrape(zfs_tree(tmp_path, {"pdds": "DEGRADED", "boot": "ONLINE"})))
    assert len(states) == 14  # 7 states x 2 pools; arcstats is not a pool
    assert states[("pdds", "DEGRADED")] == 1 and states[("pdds", "ONLINE")] == 0
    assert sum(v for (pool, _), v in states.items() if pool == "boot") == 1


@pytest.mark.parametrize(
    ("raw", "label"),
    [("SPLIT", "SPLIT"), ("RESILVERING?", "UNKNOWN"), ("x" * 80, "UNKNOWN"), ("", "UNKNOWN")],
)
def test_zfs_unknown_state_is_named_not_hidden(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, raw: str, label: str
) -> None:
    """A state this exporter does not know is a state that is not ONLINE: it is exported
    under its own name when it is a word, else as UNKNOWN, so ZFSPoolDegraded names it."""
    assert zfs_state_label(raw) == label
    with caplog.at_level(logging.WARNING):
        states = pool_states(scrape(zfs_tree(tmp_path, {"pdds": raw})))
    assert states[("pdds", label)] == 1
    assert states[("pdds", "ONLINE")] == 0
    assert len(states) == 8 and sum(states.values()) == 1
    assert any("unknown state" in r.getMessage() for r in caplog.records)


def test_vanished_pool_is_left_out(tmp_path: Path) -> None:
    """A pool exported between listing the kstat directory and reading its state."""
    roots = zfs_tree(tmp_path, {"pdds": "ONLINE", "scratch": "ONLINE"})
    reader = ZfsReader(roots)
    errors: list[tuple[str, Exception]] = []
    assert [p.name for p in reader.pools(lambda k, e: errors.append((k, e)))] == [
        "pdds",
        "scratch",
    ]
    shutil.rmtree(tmp_path / "proc/spl/kstat/zfs/scratch")
    (tmp_path / "proc/spl/kstat/zfs/scratch").mkdir()  # the directory outlives its files
    assert [p.name for p in reader.pools(lambda k, e: errors.append((k, e)))] == ["pdds"]
    assert errors == []
    text = scrape(roots)
    assert value(text, "nodeslo_collector_success", collector="redundancy") == 1
    assert 'pool="scratch"' not in text


def test_seed_spec_zfs(seed_tree: Path) -> None:
    text = scrape(Roots.under(str(seed_tree)))
    assert value(text, "nodeslo_zfs_pool_state", pool="pdds", state="ONLINE") == 1
