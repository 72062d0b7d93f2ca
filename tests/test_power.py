"""power collector: RAPL energy unwrapped across its range, permission, hwmon power."""

from __future__ import annotations

import errno
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from fixtures import hwmon as fx_hwmon
from fixtures import powercap as fx
from fixtures.spec import SEED_SPEC
from nodeslo import readers
from nodeslo.collectors.base import CollectorContext, CollectorSet
from nodeslo.collectors.power import EnergyCounter, PowerCollector
from nodeslo.paths import Roots
from support.areas import partial_tree
from support.exposition import names, samples, value
from support.syscalls import FaultyOs

RANGE = 262_143_328_850
ZONE = "sys/devices/virtual/powercap/intel-rapl/intel-rapl:0"


def scrape_with(collector: PowerCollector) -> str:
    registry = CollectorRegistry()
    registry.register(CollectorSet([collector], collector.ctx.errors))
    return generate_latest(registry).decode()


def make(roots: Roots) -> PowerCollector:
    return PowerCollector(CollectorContext(roots=roots))


def zone_tree(root: Path, energy_uj: int) -> Roots:
    for name, content in (("name", "package-0"), ("max_energy_range_uj", RANGE)):
        (root / ZONE).mkdir(parents=True, exist_ok=True)
        (root / ZONE / name).write_text(f"{content}\n")
    set_energy(root, energy_uj)
    link = root / "sys/class/powercap/intel-rapl:0"
    if not link.is_symlink():
        link.parent.mkdir(parents=True)
        link.symlink_to("../../devices/virtual/powercap/intel-rapl/intel-rapl:0")
    return Roots(sysfs=str(root / "sys"))


def set_energy(root: Path, energy_uj: int) -> None:
    tmp = root / ZONE / "energy_uj.tmp"
    tmp.write_text(f"{energy_uj}\n")
    tmp.replace(root / ZONE / "energy_uj")  # atomically: a reader never sees half a value


def rapl(text: str, zone: str) -> tuple[str, float]:
    """(name label, joules) of one zone; `value()` cannot take a label called name."""
    (found,) = [
        (dict(labels)["name"], v)
        for (metric, labels), v in samples(text).items()
        if metric == "nodeslo_rapl_energy_joules_total" and dict(labels)["zone"] == zone
    ]
    return found


def energy(text: str) -> float:
    name, joules = rapl(text, "intel-rapl:0")
    assert name == "package-0"
    return joules


def test_seed_spec_zones_and_power_meter(tmp_path: Path) -> None:
    roots = partial_tree(tmp_path, "seed-spec", fx.write, fx_hwmon.write)
    text = scrape_with(make(roots))
    for zone in fx.zones(SEED_SPEC):
        assert rapl(text, zone.zone) == (zone.name, fx.energy_uj(SEED_SPEC, zone) / 1e6)
    assert value(text, "nodeslo_hwmon_power_watts", chip_name="power_meter", sensor="power1") == 780
    assert value(text, "nodeslo_collector_success", collector="power") == 1


def test_energy_is_unwrapped_across_the_range(tmp_path: Path) -> None:
    """Near the top of the range, then past it: the counter keeps rising."""
    collector = make(zone_tree(tmp_path, RANGE - 1_000_000))
    assert energy(scrape_with(collector)) == (RANGE - 1_000_000) / 1e6
    set_energy(tmp_path, 4_000_000)  # wrapped: 5 J later
    assert energy(scrape_with(collector)) == pytest.approx((RANGE + 4_000_000) / 1e6)
    set_energy(tmp_path, 6_000_000)
    assert energy(scrape_with(collector)) == pytest.approx((RANGE + 6_000_000) / 1e6)


def test_scenario_advancing_time_never_resets(tmp_path: Path) -> None:
    """Regenerating the fixture at later uptimes (a scenario player): the exported
    counter rises by exactly the energy of the elapsed time, through wraps."""
    collector = make(partial_tree(tmp_path, "seed-spec", fx.write))
    zone = fx.zones(SEED_SPEC)[0]
    first = None
    for step in range(6):
        uptime = SEED_SPEC.uptime_seconds + step * 400.0  # 400 s x 280 W = 112 kJ per step
        partial_tree(tmp_path, "seed-spec", fx.write, uptime=uptime)
        _, got = rapl(scrape_with(collector), zone.zone)
        first = got if first is None else first
        assert got == pytest.approx(first + step * 400.0 * zone.watts, abs=1e-3)


def test_permission_denied_is_logged_once_and_exports_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """energy_uj is root-only since 5.10: an unprivileged exporter says so once."""
    collector = make(partial_tree(tmp_path, "seed-spec", fx.write, fx_hwmon.write))
    monkeypatch.setattr(readers, "os", FaultyOs({"energy_uj": errno.EACCES}))
    for _ in range(3):
        text = scrape_with(collector)
        assert value(text, "nodeslo_collector_success", collector="power") == 1
        assert "nodeslo_rapl_energy_joules_total" not in names(text)
        assert value(text, "nodeslo_hwmon_power_watts", chip_name="power_meter") == 780
    logged = [r for r in caplog.records if "root only" in r.getMessage()]
    assert len(logged) == 1


def test_zone_removed_and_malformed(tmp_path: Path) -> None:
    collector = make(zone_tree(tmp_path, 1000))
    scrape_with(collector)
    set_energy(tmp_path, "garbage")  # type: ignore[arg-type]
    text = scrape_with(collector)
    assert value(text, "nodeslo_collector_success", collector="power") == 1
    assert "nodeslo_rapl_energy_joules_total" not in names(text)
    (tmp_path / "sys/class/powercap/intel-rapl:0").unlink()
    text = scrape_with(collector)
    assert "nodeslo_rapl_energy_joules_total" not in names(text)
    assert value(text, "nodeslo_collector_success", collector="power") == 1


def test_power_input_preferred_over_average(tmp_path: Path) -> None:
    base = tmp_path / "sys/devices/platform/dell_smm_hwmon/hwmon/hwmon0"
    base.mkdir(parents=True)
    for name, content in {
        "name": "psu",
        "power1_input": 410_500_000,
        "power1_average": 400_000_000,
        "power1_label": "PSU1",
        "power2_average": 390_000_000,
    }.items():
        (base / name).write_text(f"{content}\n")
    (base / "device").symlink_to("../../../dell_smm_hwmon")
    (tmp_path / "sys/class/hwmon").mkdir(parents=True)
    (tmp_path / "sys/class/hwmon/hwmon0").symlink_to(
        "../../devices/platform/dell_smm_hwmon/hwmon/hwmon0"
    )
    text = scrape_with(make(Roots(sysfs=str(tmp_path / "sys"))))
    assert value(text, "nodeslo_hwmon_power_watts", sensor="power1", label="PSU1") == 410.5
    assert value(text, "nodeslo_hwmon_power_watts", sensor="power2") == 390


@given(st.lists(st.integers(0, 10**12), min_size=1, max_size=40))
def test_energy_counter_is_monotonic_and_exact_for_small_steps(steps: list[int]) -> None:
    """Any sequence of increments shorter than the range, read modulo the range,
    is recovered exactly."""
    counter = EnergyCounter(RANGE)
    true_total = 5
    counter.update(true_total)
    for step in steps:
        true_total += step % RANGE
        previous = counter.total_uj
        counter.update(true_total % RANGE)
        assert counter.total_uj >= previous
        assert counter.total_uj == true_total


class SlowReadOs(FaultyOs):
    """Reads energy_uj, then sleeps before returning: a reading can come back after a
    newer one taken by another thread."""

    def __init__(self) -> None:
        super().__init__({})
        self._paths: dict[int, str] = {}

    def open(self, path: str, flags: int, mode: int = 0o777) -> int:
        fd = super().open(path, flags, mode)
        self._paths[fd] = path
        return fd

    def read(self, fd: int, size: int) -> bytes:
        data = super().read(fd, size)
        if self._paths.get(fd, "").endswith("energy_uj"):
            time.sleep(0.002)
        return data


def test_concurrent_scrapes_never_see_a_false_wrap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two Prometheus replicas scraping at once: readings must reach the counter in
    order, or an older one after a newer one would count as a wrap (+262 kJ)."""
    collector = make(zone_tree(tmp_path, 1_000_000))
    scrape_with(collector)
    monkeypatch.setattr(readers, "os", SlowReadOs())
    stop = threading.Event()

    def rise() -> None:
        energy_uj = 1_000_000
        while not stop.is_set():
            energy_uj += 1000
            set_energy(tmp_path, energy_uj)

    writer = threading.Thread(target=rise)
    writer.start()
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda _: collector.collect(), range(40)))
    finally:
        stop.set()
        writer.join()
    assert energy(scrape_with(collector)) < RANGE / 1e6
