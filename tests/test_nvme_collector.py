"""The nvme collector and its poller on the seed-spec fixture, replayed and degraded."""

from __future__ import annotations

import argparse
import itertools
import logging
import shutil
import threading
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from fixtures import nvme as fx
from fixtures.make_fixtures import variant
from fixtures.spec import ServerSpec
from fixtures.tree import Tree
from nodeslo.collectors.base import CollectorContext
from nodeslo.collectors.nvme import NvmeCollector
from nodeslo.log import OnceLog
from nodeslo.nvme.poller import Poller
from nodeslo.nvme.replay import ReplaySource
from nodeslo.nvme.requests import CommandTimeout, PageRequest, SourceError
from nodeslo.paths import Roots
from support.exposition import samples, value

UPTIME = variant("seed-spec").uptime_seconds


def build(root: Path, spec: ServerSpec) -> None:
    """Only the NVMe area: these tests change the tree, and a whole one is 20,000 files."""
    fx.write(Tree(root), spec)


def scrape(collector: NvmeCollector) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry).decode()


def make_collector(tree: Path, **options: object) -> NvmeCollector:
    defaults = {"nvme_poll_interval": 3600.0, "nvme_command_timeout": 2.0}
    args = argparse.Namespace(**{**defaults, **options})
    ctx = CollectorContext(
        roots=Roots.under(str(tree)), options=args, errors=OnceLog(logging.getLogger("t"))
    )
    return NvmeCollector(ctx)


@pytest.fixture(scope="module")
def replayed(seed_tree: Path) -> str:
    collector = make_collector(seed_tree, nvme_replay_dir=str(seed_tree / fx.REPLAY_DIR))
    collector.start()
    try:
        return scrape(collector)
    finally:
        collector.close()


def test_every_controller_is_read(replayed: str) -> None:
    for i in range(16):
        assert value(replayed, "nodeslo_nvme_smart_up", controller=f"nvme{i}") == 1
        assert value(replayed, "nodeslo_nvme_state_live", controller=f"nvme{i}") == 1
        stamp = value(
            replayed, "nodeslo_nvme_smart_last_success_timestamp_seconds", controller=f"nvme{i}"
        )
        assert abs(stamp - time.time()) < 60


def test_info_from_sysfs_strips_padding(replayed: str) -> None:
    info = value(
        replayed,
        "nodeslo_nvme_info",
        controller="nvme3",
        model=fx.MODEL,
        serial="FX7N0003A0103",
        firmware=fx.FIRMWARE,
        transport="pcie",
    )
    assert info == 1


def test_smart_values_in_base_units(replayed: str) -> None:
    ctrl = fx.controllers(variant("seed-spec"))[2]
    writes = int(ctrl.write_iops * UPTIME)
    reads = int(ctrl.read_iops * UPTIME)

    def v(name: str, **labels: str) -> float:
        return value(replayed, f"nodeslo_nvme_{name}", controller="nvme2", **labels)

    assert v("data_written_bytes_total") == writes * 4096 // 512000 * 512000
    assert v("data_read_bytes_total") == reads * 4096 // 512000 * 512000
    assert v("host_write_commands_total") == writes
    assert v("host_read_commands_total") == reads
    assert v("controller_busy_seconds_total") == int(UPTIME * 0.6 / 60) * 60
    assert v("power_on_seconds_total") == (17000 + 200 + int(UPTIME // 3600)) * 3600
    assert v("power_cycles_total") == 42
    assert v("unsafe_shutdowns_total") == 4
    assert v("error_log_entries_total") == 6
    assert v("warning_temperature_seconds_total") == 120
    assert v("percentage_used_ratio") == 0.05
    assert v("available_spare_ratio") == 1.0
    assert v("available_spare_threshold_ratio") == 0.1
    assert v("temperature_celsius", sensor="composite") == round(310 - 273.15, 2)
    assert v("temperature_celsius", sensor="sensor1") == round(313 - 273.15, 2)
    assert v("temperature_celsius", sensor="sensor2") == round(308 - 273.15, 2)
    assert v("temperature_threshold_celsius", level="warning") == 69.85
    assert v("temperature_threshold_celsius", level="critical") == 84.85
    # Sensors 3-8 read 0 K: not implemented, not exported.
    sensors = {
        dict(ls)["sensor"]
        for (n, ls) in samples(replayed)
        if n.endswith("temperature_celsius") and dict(ls)["controller"] == "nvme2"
    }
    assert sensors == {"composite", "sensor1", "sensor2"}
    # OCP: media bytes and write amplification.
    media = v("media_written_bytes_total")
    assert media == int(writes * 4096 * ctrl.write_amplification)
    assert v("bad_blocks", kind="user") == 4
    assert v("bad_blocks", kind="system") == 0
    assert v("pcie_correctable_errors_total") == 10


def test_degraded_controllers(replayed: str) -> None:
    def flag(controller: str, name: str) -> float:
        return value(
            replayed, "nodeslo_nvme_critical_warning_flag", controller=controller, flag=name
        )

    assert value(replayed, "nodeslo_nvme_percentage_used_ratio", controller="nvme10") == 0.97
    assert value(replayed, "nodeslo_nvme_critical_warning", controller="nvme11") == 4
    assert flag("nvme11", "reliability") == 1 and flag("nvme11", "spare") == 0
    assert value(replayed, "nodeslo_nvme_media_errors_total", controller="nvme11") == 12
    assert value(replayed, "nodeslo_nvme_critical_warning", controller="nvme12") == 1
    assert flag("nvme12", "spare") == 1
    assert value(replayed, "nodeslo_nvme_available_spare_ratio", controller="nvme12") == 0.08
    for i in range(10):
        assert value(replayed, "nodeslo_nvme_critical_warning", controller=f"nvme{i}") == 0


def test_ocp_only_where_the_guid_matches(replayed: str) -> None:
    with_ocp = {
        dict(ls)["controller"]
        for (name, ls) in samples(replayed)
        if name == "nodeslo_nvme_media_written_bytes_total"
    }
    # nvme13 has no C0h page, nvme14 a vendor page at C0h; both are still up.
    assert with_ocp == {f"nvme{i}" for i in range(16)} - {"nvme13", "nvme14"}
    assert value(replayed, "nodeslo_nvme_smart_up", controller="nvme14") == 1


class Recording(ReplaySource):
    def __init__(self, directory: str) -> None:
        super().__init__(directory)
        self.requests: list[PageRequest] = []

    def fetch(self, request: PageRequest, timeout: float) -> bytes:
        self.requests.append(request)
        return super().fetch(request, timeout)


def test_uuid_list_selects_the_ocp_index_and_pages_are_asked_once(seed_tree: Path) -> None:
    source = Recording(str(seed_tree / fx.REPLAY_DIR))
    poller = Poller(
        str(seed_tree / "sys"),
        source,
        interval=3600,
        timeout=2.0,
        errors=OnceLog(logging.getLogger("t")),
    )
    poller.poll_round(wait=5)
    poller.poll_round(wait=5)
    mine = [r for r in source.requests if r.controller == "nvme15"]
    c0 = [r for r in mine if r.code == 0xC0]
    assert c0 and all(r.uuid_index == 2 for r in c0)
    # Identify and the UUID list once per drive and firmware; SMART every round;
    # C0h every round where it is OCP, once where it is not.
    codes = [(r.opcode, r.code) for r in mine]
    assert codes.count((0x06, 0x01)) == 1 and codes.count((0x06, 0x17)) == 1
    assert codes.count((0x02, 0x02)) == 2
    assert [(r.opcode, r.code) for r in source.requests if r.controller == "nvme13"].count(
        (0x02, 0xC0)
    ) == 1
    assert [(r.opcode, r.code) for r in source.requests if r.controller == "nvme14"].count(
        (0x02, 0xC0)
    ) == 1
    # The SMART page is read after C0h, so it counts any error entry the C0h request made.
    assert codes.index((0x02, 0x02)) > codes.index((0x02, 0xC0))


def test_no_helper_exports_sysfs_and_hwmon_and_says_so_once(
    seed_tree: Path, caplog: pytest.LogCaptureFixture
) -> None:
    collector = make_collector(seed_tree)
    assert collector.source is None
    with caplog.at_level(logging.WARNING):
        collector.start()
        first = scrape(collector)
        scrape(collector)
    collector.close()
    missing = [r for r in caplog.records if "no privileged helper" in r.getMessage()]
    assert len(missing) == 1
    names = {n for n, _ in samples(first)}
    assert names == {
        "nodeslo_nvme_info",
        "nodeslo_nvme_state_live",
        "nodeslo_nvme_temperature_celsius",
        "nodeslo_nvme_temperature_threshold_celsius",
        "nodeslo_nvme_smart_up",
    }
    # SMART never read: 0 for every drive, so NVMeSmartStale sees it; no last success.
    ups = [v for (n, _), v in samples(first).items() if n == "nodeslo_nvme_smart_up"]
    assert ups == [0.0] * 16
    # hwmon: temp1 Composite, temp2 "Sensor 1"; only CCTEMP (temp1_crit) as a threshold.
    assert (
        value(first, "nodeslo_nvme_temperature_celsius", controller="nvme4", sensor="composite")
        == 38.85
    )
    assert (
        value(first, "nodeslo_nvme_temperature_celsius", controller="nvme4", sensor="sensor1")
        == 41.85
    )
    assert (
        value(
            first,
            "nodeslo_nvme_temperature_threshold_celsius",
            controller="nvme4",
            level="critical",
        )
        == 84.85
    )


def test_failing_variant(tmp_path: Path) -> None:
    tree = tmp_path
    build(tree, variant("nvme-failing"))
    collector = make_collector(tree, nvme_replay_dir=str(tree / fx.REPLAY_DIR))
    collector.start()
    text = scrape(collector)
    collector.close()
    assert value(text, "nodeslo_nvme_critical_warning", controller="nvme3") == 12
    assert (
        value(text, "nodeslo_nvme_critical_warning_flag", controller="nvme3", flag="read_only") == 1
    )
    assert value(text, "nodeslo_nvme_media_errors_total", controller="nvme3") == 1200


def test_counters_advance_with_uptime(tmp_path: Path) -> None:
    from dataclasses import replace

    spec = variant("seed-spec")
    build(tmp_path, spec)
    collector = make_collector(tmp_path, nvme_replay_dir=str(tmp_path / fx.REPLAY_DIR))
    collector.start()
    before = value(scrape(collector), "nodeslo_nvme_host_write_commands_total", controller="nvme0")
    build(tmp_path, replace(spec, uptime_seconds=spec.uptime_seconds + 60))
    collector.poller.poll_round(wait=5)
    after = value(scrape(collector), "nodeslo_nvme_host_write_commands_total", controller="nvme0")
    collector.close()
    assert after - before == 60000 * 60


def test_hotplug_and_removal_without_restart(tmp_path: Path) -> None:
    build(tmp_path, variant("seed-spec"))
    collector = make_collector(tmp_path, nvme_replay_dir=str(tmp_path / fx.REPLAY_DIR))
    collector.start()
    assert value(scrape(collector), "nodeslo_nvme_smart_up", controller="nvme5") == 1
    # nvme5 is removed (sysfs and its replay files); nvme16 appears as a copy of nvme0.
    (tmp_path / "sys/class/nvme/nvme5").unlink()
    shutil.rmtree(tmp_path / fx.REPLAY_DIR / "nvme5")
    new = "devices/pci0000:30/0000:30:00.0/nvme/nvme16"
    shutil.copytree(tmp_path / "sys/class/nvme/nvme0/", tmp_path / "sys" / new, symlinks=True)
    (tmp_path / "sys/class/nvme/nvme16").symlink_to(f"../../{new}")
    shutil.copytree(tmp_path / fx.REPLAY_DIR / "nvme0", tmp_path / fx.REPLAY_DIR / "nvme16")
    text = scrape(collector)  # sees nvme16, wakes the poller
    assert not [k for k in samples(text) if dict(k[1]).get("controller") == "nvme5"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = scrape(collector)
        if ("nodeslo_nvme_smart_up", (("controller", "nvme16"),)) in samples(text):
            break
        time.sleep(0.05)
    collector.close()
    assert value(text, "nodeslo_nvme_smart_up", controller="nvme16") == 1
    assert value(text, "nodeslo_nvme_state_live", controller="nvme16") == 1


class Hanging(ReplaySource):
    """Replays, except that chosen controllers hang (until released) and then time out."""

    def __init__(self, directory: str) -> None:
        super().__init__(directory)
        self.hang: set[str] = set()
        self.release = threading.Event()

    def fetch(self, request: PageRequest, timeout: float) -> bytes:
        if request.controller in self.hang:
            self.release.wait(timeout)
            raise CommandTimeout(f"{request.describe()}: no answer within {timeout}s")
        return super().fetch(request, timeout)


def test_timeout_marks_one_controller_stale_and_keeps_its_last_values(seed_tree: Path) -> None:
    source = Hanging(str(seed_tree / fx.REPLAY_DIR))
    clock = itertools.count(1000.0)
    poller = Poller(
        str(seed_tree / "sys"),
        source,
        interval=3600,
        timeout=0.3,
        errors=OnceLog(logging.getLogger("t")),
        clock=lambda: next(clock),
    )
    poller.poll_round(wait=5)
    first = {s.controller: s for s in poller.snapshot(poller.controllers())}
    assert all(s.up for s in first.values())

    source.hang.add("nvme7")
    start = time.monotonic()
    poller.poll_round(wait=5)
    assert time.monotonic() - start < 2.0
    second = {s.controller: s for s in poller.snapshot(poller.controllers())}
    assert second["nvme7"].up is False
    assert second["nvme7"].last_success == first["nvme7"].last_success
    assert second["nvme7"].smart == first["nvme7"].smart  # last values stay exported
    others = [s for name, s in second.items() if name != "nvme7"]
    assert all(s.up for s in others)
    assert all(s.last_success > first[s.controller].last_success for s in others)  # type: ignore[operator]


def test_a_hung_thread_is_stale_and_not_polled_twice(seed_tree: Path) -> None:
    class Stuck(ReplaySource):
        def __init__(self, directory: str) -> None:
            super().__init__(directory)
            self.release = threading.Event()
            self.calls = 0

        def fetch(self, request: PageRequest, timeout: float) -> bytes:
            if request.controller == "nvme2" and request.code == 0x02:
                self.calls += 1
                self.release.wait(30)  # ignores its timeout, like a wedged ioctl
            return super().fetch(request, timeout)

    source = Stuck(str(seed_tree / fx.REPLAY_DIR))
    poller = Poller(
        str(seed_tree / "sys"),
        source,
        interval=3600,
        timeout=0.05,
        errors=OnceLog(logging.getLogger("t")),
    )
    poller.poll_round(wait=0.5)
    stuck = {s.controller: s for s in poller.snapshot(poller.controllers())}["nvme2"]
    assert stuck.up is None  # never finished: nothing to say yet
    time.sleep(poller._budget() + 0.1)
    poller.poll_round(wait=0.5)
    snap = {s.controller: s for s in poller.snapshot(poller.controllers())}
    assert snap["nvme2"].up is False
    assert snap["nvme3"].up is True
    assert source.calls == 1  # no second thread piled up behind the stuck one
    source.release.set()


def test_dump_writes_what_replay_reads(seed_tree: Path, tmp_path: Path) -> None:
    from nodeslo.nvme.cli import dump

    source = Recording(str(seed_tree / fx.REPLAY_DIR))
    report = dump(source, "nvme15", str(tmp_path), 2.0)
    assert report == dict.fromkeys(
        ("identify-ctrl.bin", "identify-uuid.bin", "log-c0.bin", "log-02.bin"), "ok"
    )
    for name in report:
        original = seed_tree / fx.REPLAY_DIR / "nvme15" / name
        assert (tmp_path / "nvme15" / name).read_bytes() == original.read_bytes()
    # The C0h request carried the OCP UUID's index from the UUID list.
    assert [r.uuid_index for r in source.requests if r.code == 0xC0] == [2]
    report = dump(source, "nvme13", str(tmp_path), 2.0)
    assert report["log-c0.bin"].startswith("not supported")
    assert not (tmp_path / "nvme13" / "log-c0.bin").exists()
    assert "identify-uuid.bin" not in report  # CTRATT says no UUID list: not asked


def test_a_replay_never_sees_a_controller_half_dumped(seed_tree: Path, tmp_path: Path) -> None:
    """A replay polling the dump's directory while it is written (the QEMU test does
    this) must not take a page not yet written for one the controller lacks."""
    from nodeslo.nvme.cli import dump

    reader = ReplaySource(str(tmp_path))
    seen: list[list[str]] = []

    class Watched(ReplaySource):
        def fetch(self, request: PageRequest, timeout: float) -> bytes:
            seen.append(reader.controllers())
            return super().fetch(request, timeout)

    dump(Watched(str(seed_tree / fx.REPLAY_DIR)), "nvme15", str(tmp_path), 2.0)
    assert seen and all(s == [] for s in seen)  # nothing visible mid-dump
    assert reader.controllers() == ["nvme15"]
    # A second capture replaces the first whole, again never half-written.
    seen.clear()
    dump(Watched(str(seed_tree / fx.REPLAY_DIR)), "nvme15", str(tmp_path), 2.0)
    assert seen and all(s in ([], ["nvme15"]) for s in seen)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nvme15"]  # no staging left


class Failing(ReplaySource):
    def fetch(self, request: PageRequest, timeout: float) -> bytes:
        if request.code == 0x02:
            raise SourceError("helper went away")
        return super().fetch(request, timeout)


def test_a_failed_dump_leaves_no_partial_controller(seed_tree: Path, tmp_path: Path) -> None:
    from nodeslo.nvme.cli import dump

    with pytest.raises(SourceError):
        dump(Failing(str(seed_tree / fx.REPLAY_DIR)), "nvme15", str(tmp_path), 2.0)
    assert list(tmp_path.iterdir()) == []


def test_replay_without_a_controller_directory_is_a_failed_read(tmp_path: Path) -> None:
    from nodeslo.nvme.requests import SourceError, Unsupported

    (tmp_path / "nvme0").mkdir()
    source = ReplaySource(str(tmp_path))
    with pytest.raises(Unsupported):  # the capture has no such page
        source.fetch(PageRequest("nvme0", 0x02, 0xC0), 1.0)
    with pytest.raises(SourceError, match="no replay directory") as info:
        source.fetch(PageRequest("nvme1", 0x02, 0x02), 1.0)
    assert not isinstance(info.value, Unsupported)  # retried next round


# --- identity: every series names its drive ---------------------------------------------


def test_every_per_drive_series_carries_the_drives_serial_and_model(replayed: str) -> None:
    info = {
        dict(ls)["controller"]: (dict(ls)["model"], dict(ls)["serial"])
        for (n, ls) in samples(replayed)
        if n == "nodeslo_nvme_info"
    }
    assert len(info) == 16 and len({serial for _, serial in info.values()}) == 16
    per_drive = [(n, dict(ls)) for (n, ls) in samples(replayed) if n.startswith("nodeslo_nvme_")]
    assert len(per_drive) > 30 * 16
    for name, labels in per_drive:
        assert (labels["model"], labels["serial"]) == info[labels["controller"]], name


def drive_values(text: str, controller: str) -> dict[str, float]:
    """The SMART values exported for a controller, with the serial they carry."""
    out: dict[str, float] = {}
    for (name, labels), v in samples(text).items():
        ls = dict(labels)
        if ls.get("controller") == controller and name.endswith("_total"):
            out[f"{name}@{ls['serial']}"] = v
    return out


def wait_for(collector: NvmeCollector, predicate, timeout: float = 10.0) -> str:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        text = scrape(collector)
        if predicate(text) or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def test_a_rename_never_exports_one_drives_values_under_another(tmp_path: Path) -> None:
    """nvme0 and nvme1 swap drives (a reboot's enumeration order) while the exporter
    runs: until the poller has read the drives again, neither name is exported with
    the other drive's values; afterwards each serial keeps its own counters."""
    spec = variant("seed-spec-tuned")
    build(tmp_path, spec)
    collector = make_collector(tmp_path, nvme_replay_dir=str(tmp_path / fx.REPLAY_DIR))
    collector.start()
    try:
        before = scrape(collector)
        serials = {
            dict(ls)["controller"]: dict(ls)["serial"]
            for (n, ls) in samples(before)
            if n == "nodeslo_nvme_info" and dict(ls)["controller"] in ("nvme0", "nvme1")
        }
        assert value(before, "nodeslo_nvme_media_errors_total", controller="nvme1") == 3
        build(tmp_path, spec.with_faults("nvme-renamed"))
        # The poller has not seen the swap: the scrape notices the serial changed.
        during = scrape(collector)
        for name in ("nvme0", "nvme1"):
            labels = [dict(ls) for (_, ls) in samples(during) if dict(ls).get("controller") == name]
            assert all(ls["serial"] != serials[name] for ls in labels), name

        def swapped(text: str) -> bool:
            return all(
                any(
                    n == "nodeslo_nvme_media_errors_total" and dict(ls).get("controller") == c
                    for (n, ls) in samples(text)
                )
                for c in ("nvme0", "nvme1")
            )

        after = wait_for(collector, swapped)
    finally:
        collector.close()
    # The drive with 3 old media errors now answers as nvme0, with its own serial.
    media = value(after, "nodeslo_nvme_media_errors_total", controller="nvme0")
    assert media == 3
    assert value(after, "nodeslo_nvme_info", controller="nvme0", serial=serials["nvme1"]) == 1
    assert value(after, "nodeslo_nvme_info", controller="nvme1", serial=serials["nvme0"]) == 1
    assert value(after, "nodeslo_nvme_media_errors_total", serial=serials["nvme0"]) == 0


class FailsFor(ReplaySource):
    """Replays, except that SMART reads of the named serials' drives fail."""

    def __init__(self, directory: str, sysfs: Path) -> None:
        super().__init__(directory)
        self.sysfs = sysfs
        self.failing: set[str] = set()

    def fetch(self, request: PageRequest, timeout: float) -> bytes:
        serial = (self.sysfs / "class/nvme" / request.controller / "serial").read_text().strip()
        if serial in self.failing and request.code == 0x02:
            raise SourceError(f"{request.describe()}: no answer")
        return super().fetch(request, timeout)


def test_a_drive_swapped_into_a_slot_does_not_inherit_the_last_ones_smart(
    tmp_path: Path,
) -> None:
    """A used drive hot-swapped in under the same name, whose SMART cannot be read: no
    SMART value of the drive that was there before is exported under its serial."""
    spec = variant("seed-spec-tuned")
    build(tmp_path, spec)
    source = FailsFor(str(tmp_path / fx.REPLAY_DIR), tmp_path / "sys")
    poller = Poller(
        str(tmp_path / "sys"),
        source,
        interval=3600,
        timeout=1.0,
        errors=OnceLog(logging.getLogger("t")),
    )
    poller.poll_round(wait=5)
    (old,) = [s for s in poller.snapshot(["nvme0"])]
    assert old.up and old.smart is not None
    build(tmp_path, spec.with_faults("nvme-renamed"))  # nvme0 now holds the other drive
    source.failing.add((tmp_path / "sys/class/nvme/nvme0/serial").read_text().strip())
    poller.poll_round(wait=5)
    (new,) = poller.snapshot(["nvme0"])
    assert new.identity is not None and old.identity is not None
    assert new.identity[1] != old.identity[1]
    assert new.smart is None and new.up is False and new.last_success is None


def test_a_drive_that_never_answers_is_down_with_no_last_success(tmp_path: Path) -> None:
    spec = variant("seed-spec-tuned")
    build(tmp_path, spec)
    source = FailsFor(str(tmp_path / fx.REPLAY_DIR), tmp_path / "sys")
    source.failing.add((tmp_path / "sys/class/nvme/nvme4/serial").read_text().strip())
    collector = make_collector(tmp_path)
    collector.source = source
    collector.poller.source = source
    collector.start()
    try:
        text = scrape(collector)
    finally:
        collector.close()
    assert value(text, "nodeslo_nvme_smart_up", controller="nvme4") == 0
    assert not [
        k
        for k in samples(text)
        if k[0] == "nodeslo_nvme_smart_last_success_timestamp_seconds"
        and dict(k[1])["controller"] == "nvme4"
    ]
    assert value(text, "nodeslo_nvme_smart_up", controller="nvme3") == 1


def test_a_drive_without_identity_is_not_exported_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No serial in sysfs and no Identify page: its series could not be told from
    another drive's, so there are none, and it does not count as present."""
    build(tmp_path, variant("seed-spec-tuned"))
    (tmp_path / "sys/class/nvme/nvme7/model").unlink()
    (tmp_path / fx.REPLAY_DIR / "nvme7/identify-ctrl.bin").unlink()
    collector = make_collector(tmp_path, nvme_replay_dir=str(tmp_path / fx.REPLAY_DIR))
    with caplog.at_level(logging.WARNING):
        collector.start()
        text = scrape(collector)
    collector.close()
    assert not [k for k in samples(text) if dict(k[1]).get("controller") == "nvme7"]
    assert value(text, "nodeslo_nvme_smart_up", controller="nvme6") == 1
    assert any("nvme7: no model or serial" in r.getMessage() for r in caplog.records)


def test_a_vanished_controller_is_gone_from_the_scrape(tmp_path: Path) -> None:
    spec = variant("seed-spec-tuned")
    build(tmp_path, spec)
    collector = make_collector(tmp_path, nvme_replay_dir=str(tmp_path / fx.REPLAY_DIR))
    collector.start()
    try:
        assert value(scrape(collector), "nodeslo_nvme_state_live", controller="nvme5") == 1
        build(tmp_path, spec.with_faults("nvme-vanished"))
        text = scrape(collector)
    finally:
        collector.close()
    assert not [k for k in samples(text) if dict(k[1]).get("controller") == "nvme5"]
    infos = [k for k in samples(text) if k[0] == "nodeslo_nvme_info"]
    assert len(infos) == 15
