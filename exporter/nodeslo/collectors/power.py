"""Power: RAPL energy per zone, and power meters (ACPI power meter, PMBus, any hwmon chip).

Sources:
- powercap `/sys/class/powercap/intel-rapl:N[:M]/` (Intel, and AMD since 5.8):
  `name` (package-0, dram, core, uncore, psys), `energy_uj` (µJ, wraps at
  `max_energy_range_uj`). `energy_uj` is readable by root only since 5.10
  (CVE-2020-8694, the PLATYPUS power side channel): without permission RAPL is
  reported absent once in the log and not exported; the collector still succeeds.
- hwmon `powerN_input`, else `powerN_average` (µW), e.g. the ACPI power meter
  (ACPI000D, the BMC's view of the whole system's draw).

The RAPL counter is unwrapped: the collector keeps the last raw value per zone, and a
value lower than the last one is a wrap (the range is ~262 kJ for a package, minutes
at full load), never a reset. More than one wrap between two scrapes cannot be seen:
scrape at least every few minutes (wrap period = max_energy_range_uj / power).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.core import Metric

from nodeslo.collectors.base import Collector, CollectorContext
from nodeslo.collectors.registry import register
from nodeslo.hwmon import MICRO, HwmonCatalog
from nodeslo.metrics import Desc, add
from nodeslo.readers import AccessDenied, ReadError, list_dir, read_int, read_text

RAPL_ENERGY = Desc(
    "nodeslo_rapl_energy_joules_total",
    "counter",
    "Energy consumed by a RAPL zone (package, dram, ...), unwrapped across the hardware"
    " counter's range.",
    ("zone", "name"),
)
HWMON_POWER = Desc(
    "nodeslo_hwmon_power_watts",
    "gauge",
    "Power reported by a hwmon sensor (powerN_input, else powerN_average).",
    ("chip", "chip_name", "sensor", "label"),
)

RAPL_DENIED = (
    "RAPL energy_uj is readable by root only (kernel 5.10+); RAPL energy is not exported."
    " Run nodeslo as root or make energy_uj readable (udev rule) to get it"
)


@dataclass
class EnergyCounter:
    """One zone's energy_uj followed across scrapes: wraps added back, never a reset."""

    max_range_uj: int | None
    last_uj: int = -1
    total_uj: int = 0

    def update(self, raw_uj: int) -> None:
        if self.last_uj < 0:
            self.total_uj = raw_uj
        elif raw_uj >= self.last_uj:
            self.total_uj += raw_uj - self.last_uj
        elif self.max_range_uj:
            self.total_uj += self.max_range_uj - self.last_uj + raw_uj
        else:  # range unknown: count what we can see, from 0
            self.total_uj += raw_uj
        self.last_uj = raw_uj


@dataclass(frozen=True)
class _Zone:
    zone: str
    name: str
    energy_path: str
    key: tuple[str, str]


@register
class PowerCollector(Collector):
    name = "power"
    help = "RAPL energy per zone and hwmon power sensors (ACPI power meter, PSUs)."

    def __init__(self, ctx: CollectorContext) -> None:
        super().__init__(ctx)
        self._lock = threading.Lock()
        # Benchmark-only switch (no flag): re-read static attributes on every scrape.
        self._cache_static = bool(ctx.option("cache_static", True))
        self._powercap_dir = ctx.roots.sys("class", "powercap")
        self._zone_names: list[str] | None = None
        self._zones: list[_Zone] = []
        self._counters: dict[tuple[str, str], EnergyCounter] = {}
        self._hwmon = HwmonCatalog(ctx.roots, ("power",), self._cache_static)

    def collect(self) -> list[Metric]:
        # The threaded HTTP server may run two scrapes at once; the counters' state
        # must see readings in order (an older reading after a newer one would look
        # like a restart or a wrap), so one collection at a time.
        with self._lock:
            return list(self._collect())

    def _collect(self) -> Iterator[Metric]:
        yield self._rapl()
        yield self._hwmon_power()

    def _zone_list(self) -> list[_Zone]:
        names = list_dir(self._powercap_dir)
        if names == self._zone_names and self._cache_static:
            return self._zones
        zones = []
        for entry in names:
            path = f"{self._powercap_dir}/{entry}"
            try:
                name = read_text(f"{path}/name")
                max_range = read_int(f"{path}/max_energy_range_uj")
            except ReadError as exc:
                self.skip(exc.path, exc)
                continue
            if name is None or max_range is None:  # a control type (intel-rapl), not a zone
                continue
            key = (entry, name)
            counter = self._counters.get(key)
            if counter is None:
                self._counters[key] = EnergyCounter(max_range)
            else:
                counter.max_range_uj = max_range
            zones.append(_Zone(entry, name, f"{path}/energy_uj", key))
        live = {zone.key for zone in zones}
        # A zone that went away takes its state along: its series ends.
        self._counters = {k: v for k, v in self._counters.items() if k in live}
        self._zone_names = names
        self._zones = zones
        return zones

    def _rapl(self) -> Metric:
        family = RAPL_ENERGY.family()
        for zone in self._zone_list():
            try:
                raw = read_int(zone.energy_path)
            except AccessDenied:
                # One line for all zones, once: the fix is the same for each.
                self.ctx.errors.warn(
                    "power:rapl-denied", RAPL_DENIED, collector=self.name, path=self._powercap_dir
                )
                continue
            except ReadError as exc:
                self.skip(exc.path, exc)
                continue
            if raw is None:  # zone removed (module unloaded): rescan next time
                self._zone_names = None
                continue
            counter = self._counters[zone.key]
            counter.update(raw)
            add(family, [zone.zone, zone.name], counter.total_uj / MICRO)
        return family

    def _hwmon_power(self) -> Metric:
        errors: list[ReadError] = []
        chips = self._hwmon.chips(errors)
        for exc in errors:
            self.skip(exc.path, exc)
        family = HWMON_POWER.family()
        for chip in chips:
            for sensor in chip.sensors:
                try:
                    raw = read_int(sensor.value_path)
                except ReadError as exc:  # EAGAIN, ENODATA, EIO: skip this sensor only
                    self.skip(exc.path, exc)
                    continue
                if raw is None:
                    self._hwmon.stale = True
                    continue
                add(family, [chip.chip, chip.chip_name, sensor.sensor, sensor.label], raw / MICRO)
        return family
