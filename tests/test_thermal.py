"""thermal collector: throttling dedupe per core and package, hwmon sensors, thermal zones."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from fixtures import cpufreq as fx_cpufreq
from fixtures import hwmon as fx_hwmon
from fixtures import procfs as fx_procfs
from fixtures import thermal as fx
from fixtures.make_fixtures import variant
from fixtures.spec import SEED_SPEC, cpus
from nodeslo import readers
from nodeslo.collectors.base import CollectorContext, CollectorSet
from nodeslo.collectors.thermal import ThermalCollector
from nodeslo.paths import Roots
from nodeslo.profile import load_profile
from support.areas import partial_tree
from support.exposition import names, samples, value
from support.syscalls import CountingOs, FaultyOs

CPU = "sys/devices/system/cpu"
THROTTLED = "thermal-throttling"


def scrape_with(collector: ThermalCollector) -> str:
    registry = CollectorRegistry()
    registry.register(CollectorSet([collector], collector.ctx.errors))
    return generate_latest(registry).decode()


def make(roots: Roots) -> ThermalCollector:
    return ThermalCollector(CollectorContext(roots=roots))


def write(root: Path, rel: str, content: str | int) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{content}\n")


def throttle_tree(root: Path) -> Roots:
    """1 package, 2 cores x 2 threads (cpu0/cpu2 on core 0, cpu1/cpu3 on core 1)."""
    write(root, f"{CPU}/online", "0-3")
    for cpu in range(4):
        base = f"{CPU}/cpu{cpu}"
        write(root, f"{base}/topology/physical_package_id", 0)
        write(root, f"{base}/topology/core_id", cpu % 2)
        # Siblings differ a little; the package counters repeat on every CPU.
        write(root, f"{base}/thermal_throttle/core_throttle_count", 10 * (cpu % 2 + 1) + cpu // 2)
        write(root, f"{base}/thermal_throttle/core_throttle_total_time_ms", 1000 * (cpu % 2 + 1))
        write(root, f"{base}/thermal_throttle/package_throttle_count", 7)
        write(root, f"{base}/thermal_throttle/package_throttle_total_time_ms", 2500)
    return Roots(sysfs=str(root / "sys"))


def chip(root: Path, number: int, device: str | None, files: dict[str, str | int]) -> None:
    """A hwmon chip at devices/<device>/hwmon/hwmonN (or virtual), linked from class/hwmon."""
    parent = f"devices/{device}" if device else "devices/virtual"
    base = f"sys/{parent}/hwmon/hwmon{number}"
    for name, content in files.items():
        write(root, f"{base}/{name}", content)
    if device:
        (root / base / "device").symlink_to(f"../../../{device.rsplit('/', 1)[1]}")
    link = root / f"sys/class/hwmon/hwmon{number}"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(f"../../{parent}/hwmon/hwmon{number}")


def test_throttle_counts_each_core_and_package_once(tmp_path: Path) -> None:
    text = scrape_with(make(throttle_tree(tmp_path)))
    # Core 0 read on cpu0 (10), core 1 on cpu1 (20): not cpu2/cpu3, not all four.
    assert value(text, "nodeslo_cpu_throttle_events_total", package="0", scope="core") == 30
    assert value(text, "nodeslo_cpu_throttle_seconds_total", package="0", scope="core") == 3.0
    assert value(text, "nodeslo_cpu_throttle_events_total", package="0", scope="package") == 7
    assert value(text, "nodeslo_cpu_throttle_seconds_total", package="0", scope="package") == 2.5
    assert value(text, "nodeslo_cpu_physical_cores", package="0") == 2


def test_seed_spec_and_throttling_variant(tmp_path: Path) -> None:
    healthy = scrape_with(make(partial_tree(tmp_path / "a", "seed-spec", fx.write)))
    assert value(healthy, "nodeslo_cpu_throttle_seconds_total", package="1", scope="core") == 0
    assert value(healthy, "nodeslo_cpu_physical_cores", package="1") == 64
    text = scrape_with(make(partial_tree(tmp_path / "b", THROTTLED, fx.write)))
    spec = SEED_SPEC.with_faults("tuned", THROTTLED)
    first_threads = [c for c in cpus(spec) if c.thread == 0 and c.package == 0]
    want_ms = sum(fx.core_counters(spec, c).total_ms for c in first_threads)
    got = value(text, "nodeslo_cpu_throttle_seconds_total", package="0", scope="core")
    assert got == want_ms / 1000 > 0
    # The SLO's error ratio: throttled core-seconds per second over physical cores.
    cores = sum(v for (n, _), v in samples(text).items() if n == "nodeslo_cpu_physical_cores")
    ratio = got * 2 / spec.uptime_seconds / cores
    assert ratio == pytest.approx(0.025, rel=1e-3)
    package = fx.package_counters(spec, 1)
    assert value(text, "nodeslo_cpu_throttle_events_total", package="1", scope="package") == (
        package.count
    )


def test_amd_has_cores_but_no_throttle_files(tmp_path: Path) -> None:
    roots = partial_tree(tmp_path, "seed-spec-amd", fx.write)
    collector = make(roots)
    text = scrape_with(collector)
    assert value(text, "nodeslo_cpu_physical_cores", package="0") == 64
    assert "nodeslo_cpu_throttle_events_total" not in names(text)
    assert value(text, "nodeslo_collector_success", collector="thermal") == 1


def test_no_throttle_files_cost_no_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, f"{CPU}/online", "0-1")
    collector = make(Roots(sysfs=str(tmp_path / "sys")))
    scrape_with(collector)
    counting = CountingOs()
    monkeypatch.setattr(readers, "os", counting)
    scrape_with(collector)
    assert not any("throttle" in name for name in counting.opened)


def test_kernel_before_5_5_has_counts_but_no_times(tmp_path: Path) -> None:
    roots = throttle_tree(tmp_path)
    for path in (tmp_path / "sys").rglob("*_total_time_ms"):
        path.unlink()
    text = scrape_with(make(roots))
    assert value(text, "nodeslo_cpu_throttle_events_total", package="0", scope="core") == 30
    assert "nodeslo_cpu_throttle_seconds_total" not in names(text)


def test_offlined_core_keeps_throttle_sums_monotonic(tmp_path: Path) -> None:
    roots = throttle_tree(tmp_path)
    collector = make(roots)
    scrape_with(collector)
    # cpu0 goes offline: core 0 is now read on its sibling cpu2 (11: its own history).
    # The sum must neither drop cpu0's 10 nor add cpu2's 11: cpu2 counts from now on.
    write(tmp_path, f"{CPU}/online", "1-3")
    text = scrape_with(collector)
    assert value(text, "nodeslo_cpu_throttle_events_total", package="0", scope="core") == 30
    write(tmp_path, f"{CPU}/cpu2/thermal_throttle/core_throttle_count", 13)
    text = scrape_with(collector)
    assert value(text, "nodeslo_cpu_throttle_events_total", package="0", scope="core") == 32
    assert value(text, "nodeslo_cpu_physical_cores", package="0") == 2


def test_bad_counter_skips_only_itself(tmp_path: Path) -> None:
    """A malformed count keeps its last value in the sum; the time file next to it is
    still read, and no series goes missing for a scrape."""
    roots = throttle_tree(tmp_path)
    collector = make(roots)
    scrape_with(collector)
    write(tmp_path, f"{CPU}/cpu1/thermal_throttle/core_throttle_count", "x")
    write(tmp_path, f"{CPU}/cpu1/thermal_throttle/core_throttle_total_time_ms", 2500)
    text = scrape_with(collector)
    assert value(text, "nodeslo_collector_success", collector="thermal") == 1
    assert value(text, "nodeslo_cpu_throttle_events_total", package="0", scope="core") == 30
    assert value(text, "nodeslo_cpu_throttle_seconds_total", package="0", scope="core") == 3.5


def test_seed_spec_hwmon(tmp_path: Path) -> None:
    text = scrape_with(make(partial_tree(tmp_path, "seed-spec", fx.write, fx_hwmon.write)))
    core = {"chip": "platform_coretemp_1", "chip_name": "coretemp", "sensor": "temp5"}
    assert value(text, "nodeslo_hwmon_temperature_celsius", **core) == fx_hwmon.core_celsius(
        SEED_SPEC, 1, 3
    )
    assert value(text, "nodeslo_hwmon_temperature_celsius", **core, label="Core 3") > 0
    assert value(text, "nodeslo_hwmon_temperature_max_celsius", **core) == 90
    assert value(text, "nodeslo_hwmon_temperature_crit_celsius", **core) == 100
    package = {"chip": "platform_coretemp_0", "label": "Package id 0"}
    assert value(text, "nodeslo_hwmon_temperature_celsius", **package) == 62
    assert value(text, "nodeslo_hwmon_fan_rpm", label="SYSFAN1") == 5200
    assert value(text, "nodeslo_thermal_zone_temperature_celsius", zone="2") == 63
    temps = [k for k in samples(text) if k[0] == "nodeslo_hwmon_temperature_celsius"]
    assert len(temps) == 2 * 65 + 2  # coretemp x 2 (package + 64 cores), board chip x 2
    # The power meter has no temperatures or fans: not a thermal chip.
    assert "power_meter" not in text


def test_amd_k10temp_has_no_thresholds(tmp_path: Path) -> None:
    text = scrape_with(make(partial_tree(tmp_path, "seed-spec-amd", fx.write, fx_hwmon.write)))
    tctl = {"chip": "pci0000:00_0000:00:19_3", "chip_name": "k10temp", "label": "Tctl"}
    assert value(text, "nodeslo_hwmon_temperature_celsius", **tctl) == 63
    assert value(text, "nodeslo_hwmon_temperature_celsius", label="Tccd8", chip=tctl["chip"]) > 0
    assert not any(
        dict(ls).get("chip_name") == "k10temp"
        for n, ls in samples(text)
        if n == "nodeslo_hwmon_temperature_max_celsius"
    )


def test_failing_sensors_are_skipped_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """EAGAIN, ENODATA and EIO (drivetemp in standby, a sensor mid-conversion) skip only
    that sensor, that scrape; a sensor that recovers is back on the next scrape."""
    chip(
        tmp_path,
        0,
        "platform/nct6775.656",
        {
            "name": "nct6779",
            **{f"temp{i}_input": 30000 + i * 1000 for i in range(1, 5)},
            "temp1_label": "SYSTIN",
            "fan1_input": 1200,
        },
    )
    collector = make(Roots(sysfs=str(tmp_path / "sys")))
    faults = {"temp2_input": errno.EAGAIN, "temp3_input": errno.ENODATA, "fan1_input": errno.EIO}
    monkeypatch.setattr(readers, "os", FaultyOs(faults))
    text = scrape_with(collector)
    assert value(text, "nodeslo_collector_success", collector="thermal") == 1
    found = {dict(ls)["sensor"] for n, ls in samples(text) if n.startswith("nodeslo_hwmon_")}
    assert found == {"temp1", "temp4"}
    assert value(text, "nodeslo_hwmon_temperature_celsius", sensor="temp4") == 34
    monkeypatch.setattr(readers, "os", os)
    text = scrape_with(collector)
    assert value(text, "nodeslo_hwmon_temperature_celsius", sensor="temp2") == 32
    assert value(text, "nodeslo_hwmon_fan_rpm", sensor="fan1") == 1200


def test_eio_from_a_real_file(tmp_path: Path) -> None:
    """The same without any injection: /proc/self/mem answers EIO at offset 0."""
    chip(tmp_path, 0, "platform/it87.2592", {"name": "it8728", "temp1_input": 41000})
    (tmp_path / "sys/devices/platform/it87.2592/hwmon/hwmon0/temp2_input").symlink_to(
        "/proc/self/mem"
    )
    text = scrape_with(make(Roots(sysfs=str(tmp_path / "sys"))))
    assert value(text, "nodeslo_hwmon_temperature_celsius", sensor="temp1") == 41
    assert "temp2" not in text
    assert value(text, "nodeslo_collector_success", collector="thermal") == 1


def test_chip_without_name(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """No `name`: chip still identified by its device path, chip_name empty, logged once."""
    chip(tmp_path, 0, "pci0000:00/0000:00:1f.3", {"temp1_input": 45000})
    collector = make(Roots(sysfs=str(tmp_path / "sys")))
    scrape_with(collector)
    text = scrape_with(collector)
    assert value(text, "nodeslo_hwmon_temperature_celsius", chip="pci0000:00_0000:00:1f_3") == 45
    assert value(text, "nodeslo_hwmon_temperature_celsius", sensor="temp1", label="temp1") == 45
    (key,) = [k for k in samples(text) if k[0] == "nodeslo_hwmon_temperature_celsius"]
    assert "chip_name" not in dict(key[1]) or dict(key[1])["chip_name"] == ""
    logged = [r for r in caplog.records if "no name attribute" in r.getMessage()]
    assert len(logged) == 1


def test_old_layout_and_virtual_chip(tmp_path: Path) -> None:
    """Pre-hwmon-class drivers keep attributes in device/; a chip without a device (a
    virtual one) is named after its `name`."""
    device = tmp_path / "sys/devices/platform/w83627ehf.656"
    write(tmp_path, "sys/devices/platform/w83627ehf.656/name", "w83627ehf")
    write(tmp_path, "sys/devices/platform/w83627ehf.656/temp1_input", 38000)
    hwmon = device / "hwmon/hwmon0"
    hwmon.mkdir(parents=True)
    (hwmon / "device").symlink_to("../../../w83627ehf.656")
    (tmp_path / "sys/class/hwmon").mkdir(parents=True)
    (tmp_path / "sys/class/hwmon/hwmon0").symlink_to(
        "../../devices/platform/w83627ehf.656/hwmon/hwmon0"
    )
    chip(tmp_path, 1, None, {"name": "acpitz", "temp1_input": 27800, "temp1_crit": 119000})
    text = scrape_with(make(Roots(sysfs=str(tmp_path / "sys"))))
    assert value(text, "nodeslo_hwmon_temperature_celsius", chip="platform_w83627ehf_656") == 38
    assert value(text, "nodeslo_hwmon_temperature_crit_celsius", chip="acpitz") == 119


def test_non_numeric_and_vanished_sensors(tmp_path: Path) -> None:
    chip(
        tmp_path,
        0,
        "platform/coretemp.0",
        {"name": "coretemp", "temp1_input": "N/A", "temp2_input": 50000, "temp2_max": "hot"},
    )
    collector = make(Roots(sysfs=str(tmp_path / "sys")))
    text = scrape_with(collector)
    assert value(text, "nodeslo_hwmon_temperature_celsius", sensor="temp2") == 50
    assert "nodeslo_hwmon_temperature_max_celsius" not in names(text)
    assert 'sensor="temp1"' not in text
    # The chip goes away (module unloaded) between scrapes: nothing from it, no failure.
    os.unlink(tmp_path / "sys/class/hwmon/hwmon0")
    text = scrape_with(collector)
    assert "nodeslo_hwmon_temperature_celsius" not in names(text)
    assert value(text, "nodeslo_collector_success", collector="thermal") == 1


def test_thermal_zone_without_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for number, kind in enumerate(("acpitz", "iwlwifi_1")):
        write(tmp_path, f"sys/devices/virtual/thermal/thermal_zone{number}/type", kind)
        write(tmp_path, f"sys/devices/virtual/thermal/thermal_zone{number}/temp", 30000 + number)
        link = tmp_path / f"sys/class/thermal/thermal_zone{number}"
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(f"../../devices/virtual/thermal/thermal_zone{number}")
    monkeypatch.setattr(readers, "os", FaultyOs({"thermal_zone1/temp": errno.ENODATA}))
    text = scrape_with(make(Roots(sysfs=str(tmp_path / "sys"))))
    assert value(text, "nodeslo_thermal_zone_temperature_celsius", zone="0", type="acpitz") == 30
    assert "iwlwifi" not in text


def test_nvme_chips_are_left_to_the_nvme_collector(tmp_path: Path) -> None:
    """Reading an NVMe hwmon temperature is an admin command to the drive: by default the
    thermal collector neither scans nor reads NVMe chips; an empty pattern brings them back."""
    nvme = {"name": "nvme", "temp1_input": 35850, "temp1_label": "Composite", "temp1_crit": 84850}
    chip(tmp_path, 10, "pci0000:10/0000:10:00.0/nvme/nvme0", nvme)
    chip(tmp_path, 0, "platform/coretemp.0", {"name": "coretemp", "temp1_input": 50000})
    roots = Roots(sysfs=str(tmp_path / "sys"))
    default = scrape_with(make(roots))
    chip_names = {
        dict(ls)["chip_name"]
        for n, ls in samples(default)
        if n == "nodeslo_hwmon_temperature_celsius"
    }
    assert chip_names == {"coretemp"}
    ctx = CollectorContext(roots=roots)
    ctx.options.thermal_hwmon_chip_exclude = ""
    everything = scrape_with(ThermalCollector(ctx))
    assert value(everything, "nodeslo_hwmon_temperature_celsius", chip_name="nvme") == 35.85


# --- the frequency signal, where there is no thermal_throttle (AMD) --------------------

AMD_THROTTLING = "thermal-throttling-amd"
SECONDS = 100.0
# 2 packages x 4 cores x 2 threads: core 0 of each package is the throttled quarter.
CPUS = 16


def fixture_busy_ticks(cpu: int, uptime: float) -> int:
    """What fixtures.procfs writes as user + system + softirq for one CPU."""
    busy = 0.30 + 0.001 * (cpu % 50)
    return int(uptime * 100 * busy * 0.8) + int(uptime * 100 * busy * 0.2) + int(uptime)


def amd_tree(root: Path, name: str, uptime: float) -> Roots:
    areas = (fx.write, fx_procfs.write, fx_cpufreq.write)
    return partial_tree(root, name, *areas, uptime=uptime, cpus=CPUS)


def test_amd_counts_busy_core_time_below_the_target(tmp_path: Path) -> None:
    """A quarter of the cores run at 2.2 GHz, under the profile's 3.5 GHz: their busy time
    (the busier SMT sibling's) is below target; the others, at 3.5-3.75 GHz, are not."""
    start = variant(AMD_THROTTLING).uptime_seconds
    collector = make(amd_tree(tmp_path, AMD_THROTTLING, start))
    first = scrape_with(collector)
    assert value(first, "nodeslo_cpu_throttle_signal_info", source="frequency") == 1
    assert value(first, "nodeslo_cpu_busy_seconds_total", package="0") == 0
    amd_tree(tmp_path, AMD_THROTTLING, start + SECONDS)
    text = scrape_with(collector)
    spec = variant(AMD_THROTTLING, CPUS)
    busy = {"0": 0.0, "1": 0.0}
    below = {"0": 0.0, "1": 0.0}
    for package in range(spec.sockets):
        for core in range(spec.cores_per_socket):
            siblings = [c for c in cpus(spec) if c.package == package and c.core == core]
            ticks = max(
                fixture_busy_ticks(c.number, start + SECONDS) - fixture_busy_ticks(c.number, start)
                for c in siblings
            )
            busy[str(package)] += ticks / 100
            if fx.core_throttled(spec, package, core):
                below[str(package)] += ticks / 100
    for package in ("0", "1"):
        got = value(text, "nodeslo_cpu_busy_seconds_total", package=package)
        assert got == pytest.approx(busy[package])
        got = value(text, "nodeslo_cpu_below_target_frequency_seconds_total", package=package)
        assert got == pytest.approx(below[package])
    # About a third of each core's time is busy; a quarter of the cores are slow.
    assert below["0"] / (4 * SECONDS) == pytest.approx(0.25 * 0.31, rel=0.05)
    assert "nodeslo_cpu_throttle_seconds_total" not in names(text)


def test_intel_reads_thermal_throttle_and_not_frequencies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    areas = (fx.write, fx_procfs.write, fx_cpufreq.write)
    roots = partial_tree(tmp_path, "seed-spec", *areas, cpus=CPUS)
    collector = make(roots)
    counting = CountingOs()
    monkeypatch.setattr(readers, "os", counting)
    text = scrape_with(collector)
    assert value(text, "nodeslo_cpu_throttle_signal_info", source="thermal_throttle") == 1
    assert "nodeslo_cpu_below_target_frequency_seconds_total" not in names(text)
    assert not any(name.endswith(("_cur_freq", "/stat")) for name in counting.opened)


def test_amd_without_cpufreq_has_no_signal(tmp_path: Path) -> None:
    collector = make(amd_tree(tmp_path, "amd-no-cpufreq", 1000.0))
    text = scrape_with(collector)
    assert value(text, "nodeslo_cpu_throttle_signal_info", source="none") == 1
    assert "nodeslo_cpu_busy_seconds_total" not in names(text)
    assert value(text, "nodeslo_collector_success", collector="thermal") == 1


def test_a_profile_without_a_frequency_target_has_no_signal(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(
        "extends: process-management\nprofile: site\ncapacity: {all_core_frequency_hertz: null}\n"
    )
    profile = load_profile(str(site))
    roots = amd_tree(tmp_path / "tree", AMD_THROTTLING, 1000.0)
    collector = ThermalCollector(CollectorContext(roots=roots, profile=lambda: profile))
    text = scrape_with(collector)
    assert value(text, "nodeslo_cpu_throttle_signal_info", source="none") == 1


@pytest.mark.parametrize(
    ("stat", "why"),
    [
        (None, "missing"),
        ("cpu  1 2 3\ncpu0 1 2\n", "a per-CPU line with too few counters"),
        ("cpu0 1 2 x 4 5 6 7 8\n", "not a number"),
    ],
)
def test_a_bad_proc_stat_skips_the_interval_not_the_scrape(
    tmp_path: Path, stat: str | None, why: str
) -> None:
    """The counters hold (no bad time invented, none lost later), the rest is served."""
    start = 1000.0
    roots = amd_tree(tmp_path, AMD_THROTTLING, start)
    collector = make(roots)
    scrape_with(collector)
    amd_tree(tmp_path, AMD_THROTTLING, start + SECONDS)
    proc_stat = tmp_path / "proc" / "stat"
    if stat is None:
        proc_stat.unlink()
    else:
        proc_stat.write_text(stat)
    text = scrape_with(collector)
    assert value(text, "nodeslo_collector_success", collector="thermal") == 1, why
    assert value(text, "nodeslo_cpu_busy_seconds_total", package="0") == 0, why
    assert value(text, "nodeslo_cpu_throttle_signal_info", source="frequency") == 1
    assert value(text, "nodeslo_cpu_physical_cores", package="0") == CPUS // 4


def test_an_unreadable_frequency_counts_as_below_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not knowing how fast a busy core ran is not evidence that it was fast."""
    start = 1000.0
    collector = make(amd_tree(tmp_path, "seed-spec-amd", start))
    scrape_with(collector)
    amd_tree(tmp_path, "seed-spec-amd", start + SECONDS)
    # CPU 1 and CPU 9 are the two threads of core 1, package 0 (the fixture numbers all
    # first threads, then all second ones). One unreadable: judged on the other (3.5+ GHz).
    monkeypatch.setattr(readers, "os", FaultyOs({"policy1/scaling_cur_freq": errno.EIO}))
    text = scrape_with(collector)
    assert value(text, "nodeslo_collector_success", collector="thermal") == 1
    assert value(text, "nodeslo_cpu_below_target_frequency_seconds_total", package="0") == 0
    # Both unreadable: the core's busy time counts as below the target.
    faults = {"policy1/scaling_cur_freq": errno.EIO, "policy9/scaling_cur_freq": errno.EIO}
    monkeypatch.setattr(readers, "os", FaultyOs(faults))
    amd_tree(tmp_path, "seed-spec-amd", start + 2 * SECONDS)
    text = scrape_with(collector)
    expected = max(
        fixture_busy_ticks(cpu, start + 2 * SECONDS) - fixture_busy_ticks(cpu, start + SECONDS)
        for cpu in (1, 9)
    )
    got = value(text, "nodeslo_cpu_below_target_frequency_seconds_total", package="0")
    assert got == pytest.approx(expected / 100)


def test_cpuinfo_avg_freq_is_preferred_when_the_kernel_has_it(tmp_path: Path) -> None:
    """6.14+: the hardware's average; scaling_cur_freq may then be the requested one."""
    start = 1000.0
    roots = amd_tree(tmp_path, "seed-spec-amd", start)
    for policy in (tmp_path / "sys/devices/system/cpu/cpufreq").glob("policy*"):
        (policy / "cpuinfo_avg_freq").write_text("2000000\n")  # all held at 2 GHz
    collector = make(roots)
    scrape_with(collector)
    amd_tree(tmp_path, "seed-spec-amd", start + SECONDS)
    text = scrape_with(collector)
    busy = value(text, "nodeslo_cpu_busy_seconds_total", package="0")
    assert busy > 0
    assert value(text, "nodeslo_cpu_below_target_frequency_seconds_total", package="0") == busy
