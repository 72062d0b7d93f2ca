"""Thermal throttling, temperatures and fans: is the CPU running as fast as it was bought to?

Sources:
- x86 `cpu/cpuN/thermal_throttle/` (Intel only; arch/x86/kernel/cpu/mce/therm_throt.c):
  `core_throttle_count`, `core_throttle_total_time_ms` (5.5+) and the `package_*`
  pair. Each logical CPU keeps its own copy: SMT siblings repeat their core's events
  and every CPU of a package repeats the package's, so one CPU per physical core
  (per package for scope="package") is read, keyed by package and core id as
  node_exporter does, and summed per package.
- `nodeslo_cpu_physical_cores{package}`: the denominator of the profile's
  cpu-unthrottled SLO (core-scope throttled seconds per second, over cores). Exported
  whenever the CPU topology is known, with or without thermal_throttle files.
- Where there is no thermal_throttle (AMD), the SLI's bad time is busy core time held
  below the profile's all-core frequency target (`nodeslo.busyfreq`: `/proc/stat` and
  each cpufreq policy's `cpuinfo_avg_freq`, else `scaling_cur_freq`, per scrape).
  `nodeslo_cpu_throttle_signal_info{source}` says which signal the host has, `none`
  when neither (no cpufreq driver, or no target in the profile): never a silent
  "unthrottled".
- hwmon chips (`nodeslo.hwmon`): every `tempN_input` with `tempN_max` / `tempN_crit`
  when the driver offers them (coretemp, k10temp, nvme, drivetemp, any chip), and
  every `fanN_input`. A sensor that answers EAGAIN, ENODATA or EIO is skipped for
  that scrape; the chip's other sensors are kept.
- `/sys/class/thermal/thermal_zoneN/{type,temp}`.

Throttle sums stay monotonic when CPUs go offline (`nodeslo.counters`).
"""

from __future__ import annotations

import argparse
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.core import Metric

from nodeslo.busyfreq import BusyBelowTarget, Core, parse_cpu_ticks
from nodeslo.collectors.base import Collector, CollectorContext
from nodeslo.collectors.registry import register
from nodeslo.counters import CounterSums, CounterTrack
from nodeslo.cpus import CpuTopology, Topology
from nodeslo.flagtypes import as_pattern, regex
from nodeslo.hwmon import MILLI, HwmonCatalog
from nodeslo.metrics import Desc, add
from nodeslo.readers import (
    MalformedValue,
    ReadError,
    list_dir,
    read_all,
    read_int,
    read_text,
)

THROTTLE_EVENTS = Desc(
    "nodeslo_cpu_throttle_events_total",
    "counter",
    "Thermal throttling events: scope=core summed over the package's physical cores"
    " (each counted once), scope=package the package's own.",
    ("package", "scope"),
)
THROTTLE_SECONDS = Desc(
    "nodeslo_cpu_throttle_seconds_total",
    "counter",
    "Time spent thermally throttled: scope=core summed over the package's physical cores"
    " (each counted once), scope=package the package's own (kernel 5.5+).",
    ("package", "scope"),
)
THROTTLE_SIGNAL = Desc(
    "nodeslo_cpu_throttle_signal_info",
    "gauge",
    "Always 1: where the host's CPU throttling signal comes from: thermal_throttle (the"
    " kernel's counters, Intel), frequency (busy core time below the profile's all-core"
    " frequency target, where thermal_throttle is absent: AMD), or none.",
    ("source",),
)
BUSY_SECONDS = Desc(
    "nodeslo_cpu_busy_seconds_total",
    "counter",
    "Core-seconds the package's physical cores were busy (the busiest SMT sibling's"
    " non-idle /proc/stat time), counted where source=frequency.",
    ("package",),
)
BELOW_TARGET_SECONDS = Desc(
    "nodeslo_cpu_below_target_frequency_seconds_total",
    "counter",
    "Busy core-seconds at a frequency below the profile's all-core target"
    " (capacity.all_core_frequency_hertz): the throttling signal where source=frequency.",
    ("package",),
)
PHYSICAL_CORES = Desc(
    "nodeslo_cpu_physical_cores",
    "gauge",
    "Online physical cores per package (SMT siblings counted once).",
    ("package",),
)
HWMON_LABELS = ("chip", "chip_name", "sensor", "label")
TEMPERATURE = Desc(
    "nodeslo_hwmon_temperature_celsius",
    "gauge",
    "Temperature reported by a hwmon sensor.",
    HWMON_LABELS,
)
TEMPERATURE_MAX = Desc(
    "nodeslo_hwmon_temperature_max_celsius",
    "gauge",
    "The sensor's high-temperature threshold, where the driver reports one.",
    HWMON_LABELS,
)
TEMPERATURE_CRIT = Desc(
    "nodeslo_hwmon_temperature_crit_celsius",
    "gauge",
    "The sensor's critical-temperature threshold, where the driver reports one.",
    HWMON_LABELS,
)
FAN = Desc("nodeslo_hwmon_fan_rpm", "gauge", "Fan speed reported by a hwmon sensor.", HWMON_LABELS)
ZONE_TEMPERATURE = Desc(
    "nodeslo_thermal_zone_temperature_celsius",
    "gauge",
    "Temperature of a thermal zone (/sys/class/thermal).",
    ("zone", "type"),
)

MS_PER_SECOND = 1000.0
HZ_PER_KHZ = 1000.0
# CounterTrack columns.
EVENTS, MILLISECONDS = range(2)
SCOPES = ("core", "package")


class _Source:
    """One CPU read on behalf of a physical core or a package."""

    __slots__ = ("count_path", "package", "scope", "time_path")

    def __init__(self, package: str, scope: str, base: str) -> None:
        self.package = package
        self.scope = scope
        self.count_path = f"{base}/{scope}_throttle_count"
        # Set to None once absent: kernels before 5.5 have counts only.
        self.time_path: str | None = f"{base}/{scope}_throttle_total_time_ms"


@dataclass(frozen=True)
class _FrequencyPlan:
    """What the frequency signal reads: one file per cpufreq policy, and the cores."""

    cores: tuple[Core, ...]
    policies: tuple[tuple[str, tuple[int, ...]], ...]  # (frequency file, its CPUs)


@dataclass
class _Plan:
    cpus: tuple[CpuTopology, ...]
    physical_cores: dict[str, int]
    sources: list[_Source]
    tracks: list[CounterTrack]
    groups: list[tuple[str, str]]  # (package, scope), in exposition order
    frequency: _FrequencyPlan | None = None
    stale: bool = False


def throttle_sources(
    cpus: tuple[CpuTopology, ...],
) -> tuple[dict[str, int], list[tuple[CpuTopology, str]]]:
    """Physical cores per package, and the (CPU, scope) pairs to read: the first CPU of
    each physical core for scope=core, the first CPU of each package for scope=package."""
    cores: dict[tuple[str, str], CpuTopology] = {}
    packages: dict[str, CpuTopology] = {}
    for cpu in cpus:
        cores.setdefault(cpu.core_key, cpu)
        packages.setdefault(cpu.package, cpu)
    per_package: dict[str, int] = {}
    for package, _ in cores:
        per_package[package] = per_package.get(package, 0) + 1
    pairs = [(cpu, "core") for cpu in cores.values()]
    pairs += [(cpu, "package") for cpu in packages.values()]
    return per_package, pairs


# Every read of an NVMe hwmon temperature is an admin command to the drive: a dying drive
# would hang the scrape. The nvme collector reads them in its background poller.
DEFAULT_HWMON_CHIP_EXCLUDE = "^nvme$"


@register
class ThermalCollector(Collector):
    name = "thermal"
    help = "Thermal throttling per package, hwmon temperatures and fans, thermal zones."

    @classmethod
    def add_arguments(cls, parser: argparse._ArgumentGroup) -> None:
        parser.add_argument(
            "--collector.thermal.hwmon-chip-exclude",
            dest="thermal_hwmon_chip_exclude",
            type=regex,
            default=DEFAULT_HWMON_CHIP_EXCLUDE,
            metavar="REGEX",
            help="hwmon chip names (the `name` file) to leave out (default: %(default)s; "
            "NVMe temperatures come from the nvme collector's poller instead).",
        )

    def __init__(self, ctx: CollectorContext) -> None:
        super().__init__(ctx)
        self._lock = threading.Lock()
        # Benchmark-only switch (no flag): re-read static attributes on every scrape.
        self._cache_static = bool(ctx.option("cache_static", True))
        self._topology = Topology(ctx.roots)
        exclude = ctx.option("thermal_hwmon_chip_exclude", DEFAULT_HWMON_CHIP_EXCLUDE)
        self._hwmon = HwmonCatalog(
            ctx.roots,
            ("temp", "fan"),
            self._cache_static,
            as_pattern(exclude),
        )
        self._thermal_dir = ctx.roots.sys("class", "thermal")
        self._zones: tuple[list[str], list[tuple[str, str, str]]] | None = None
        self._sums = CounterSums(2)
        self._plan: _Plan | None = None
        self._stat_path = ctx.roots.proc("stat")
        self._busy = BusyBelowTarget()

    def collect(self) -> list[Metric]:
        # The threaded HTTP server may run two scrapes at once; the counters' state
        # must see readings in order (an older reading after a newer one would look
        # like a restart or a wrap), so one collection at a time.
        with self._lock:
            return list(self._collect())

    def _collect(self) -> Iterator[Metric]:
        yield from self._throttling()
        yield from self._hwmon_sensors()
        yield self._thermal_zones()

    def _build(self, cpus: tuple[CpuTopology, ...]) -> _Plan:
        physical_cores, pairs = throttle_sources(cpus)
        sources: list[_Source] = []
        keys = []
        # No thermal_throttle on AMD or in VMs: find out once, not with 130 failed opens
        # per scrape.
        present = False
        if cpus:
            probe = self._topology.cpu_path(cpus[0].cpu, "thermal_throttle", "core_throttle_count")
            present = read_text(probe) is not None
        if present:
            for cpu, scope in pairs:
                base = self._topology.cpu_path(cpu.cpu, "thermal_throttle")
                sources.append(_Source(cpu.package, scope, base))
                keys.append(((scope, cpu.cpu), (cpu.package, scope)))
        groups = sorted({group for _, group in keys}, key=lambda g: (_number(g[0]), g[1]))
        frequency = None if present else self._frequency_plan(cpus)
        return _Plan(cpus, physical_cores, sources, self._sums.rebuild(keys), groups, frequency)

    def _frequency_plan(self, cpus: tuple[CpuTopology, ...]) -> _FrequencyPlan | None:
        """The cpufreq policy of each CPU (one file per policy); None without cpufreq."""
        members: dict[str, list[int]] = {}
        for cpu in cpus:
            policy = os.path.realpath(self._topology.cpu_path(cpu.cpu, "cpufreq"))
            if os.path.isdir(policy):
                members.setdefault(policy, []).append(cpu.cpu)
        if not members:
            return None
        # cpuinfo_avg_freq (6.14+) is the hardware's average over the last milliseconds;
        # scaling_cur_freq is that on older x86 kernels, the requested one elsewhere.
        average = os.path.exists(f"{next(iter(members))}/cpuinfo_avg_freq")
        name = "cpuinfo_avg_freq" if average else "scaling_cur_freq"
        cores: dict[tuple[str, str], list[int]] = {}
        for cpu in cpus:
            cores.setdefault(cpu.core_key, []).append(cpu.cpu)
        return _FrequencyPlan(
            cores=tuple(Core(package, tuple(ids)) for (package, _), ids in cores.items()),
            policies=tuple((f"{p}/{name}", tuple(ids)) for p, ids in members.items()),
        )

    def _throttling(self) -> Iterator[Metric]:
        cpus = self._topology.online()
        plan = self._plan
        if plan is None or plan.stale or plan.cpus is not cpus or not self._cache_static:
            plan = self._plan = self._build(cpus)
        cores = PHYSICAL_CORES.family()
        for package in sorted(plan.physical_cores, key=_number):
            add(cores, [package], plan.physical_cores[package])
        yield cores
        target = self.ctx.profile().capacity.all_core_frequency_hertz
        if plan.sources:
            signal = "thermal_throttle"
        elif plan.frequency is not None and target is not None and plan.physical_cores:
            signal = "frequency"
            yield from self._below_target(plan, plan.frequency, target)
        else:
            signal = "none"
        yield THROTTLE_SIGNAL.single(1, signal)
        if not plan.sources:
            return
        for source, track in zip(plan.sources, plan.tracks, strict=True):
            count = self._counter(source.count_path)
            if count is None:  # CPU went offline mid-scrape: rebuild next time
                plan.stale = True
                continue
            if count >= 0:
                track.update(EVENTS, count)
            if source.time_path is not None:
                millis = self._counter(source.time_path)
                if millis is None:
                    source.time_path = None
                elif millis >= 0:
                    track.update(MILLISECONDS, millis)
        # Unread values keep counting their last reading: the sums never go back.
        events: dict[tuple[str, str], int] = {}
        millis_sum: dict[tuple[str, str], int] = {}
        timed: set[tuple[str, str]] = set()
        for source, track in zip(plan.sources, plan.tracks, strict=True):
            group = (source.package, source.scope)
            events[group] = events.get(group, 0) + track.total(EVENTS)
            millis_sum[group] = millis_sum.get(group, 0) + track.total(MILLISECONDS)
            if track.last[MILLISECONDS] >= 0:
                timed.add(group)
        events_family = THROTTLE_EVENTS.family()
        seconds_family = THROTTLE_SECONDS.family()
        retired = self._sums.retired_total
        for group in plan.groups:
            add(events_family, group, events.get(group, 0) + retired(group, EVENTS))
            if group in timed:
                millis = millis_sum.get(group, 0) + retired(group, MILLISECONDS)
                add(seconds_family, group, millis / MS_PER_SECOND)
        yield events_family
        yield seconds_family

    def _below_target(
        self, plan: _Plan, frequency: _FrequencyPlan, target_hertz: float
    ) -> Iterator[Metric]:
        """Account the busy core time since the last scrape, then export the totals."""
        try:
            raw = read_all(self._stat_path)
            ticks = parse_cpu_ticks(raw.decode()) if raw is not None else None
        except ReadError as exc:
            self.skip(exc.path, exc)
            ticks = None
        except ValueError as exc:  # a malformed line: skip this interval, keep counting
            self.skip(self._stat_path, MalformedValue(self._stat_path, str(exc)))
            ticks = None
        if ticks is not None:
            khz: dict[int, int | None] = {}
            for path, cpus in frequency.policies:
                value = self._frequency(path)
                if value is None:
                    plan.stale = True  # the policy went away: rebuild next time
                for cpu in cpus:
                    khz[cpu] = value if value is not None and value > 0 else None
            self._busy.update(frequency.cores, ticks, khz, target_hertz / HZ_PER_KHZ)
        busy = BUSY_SECONDS.family()
        below = BELOW_TARGET_SECONDS.family()
        for package in sorted(plan.physical_cores, key=_number):
            add(busy, [package], self._busy.busy_seconds.get(package, 0.0))
            add(below, [package], self._busy.below_seconds.get(package, 0.0))
        yield busy
        yield below

    def _frequency(self, path: str) -> int | None:
        """A policy's frequency in kHz; None when absent, -1 when unreadable (logged)."""
        try:
            return read_int(path)
        except ReadError as exc:  # EAGAIN from cpuinfo_avg_freq on an idle CPU
            self.skip(exc.path, exc)
            return -1

    def _counter(self, path: str) -> int | None:
        """A throttle counter; None when absent, -1 when unreadable (logged once)."""
        try:
            value = read_int(path)
        except ReadError as exc:
            self.skip(exc.path, exc)
            return -1
        if value is not None and value < 0:
            self.skip(path, MalformedValue(path, f"negative: {value}"))
            return -1
        return value

    def _hwmon_sensors(self) -> Iterator[Metric]:
        errors: list[ReadError] = []
        chips = self._hwmon.chips(errors)
        for exc in errors:
            self.skip(exc.path, exc)
        temperature = TEMPERATURE.family()
        temperature_max = TEMPERATURE_MAX.family()
        temperature_crit = TEMPERATURE_CRIT.family()
        fans = FAN.family()
        for chip in chips:
            for sensor in chip.sensors:
                try:
                    raw = read_int(sensor.value_path)
                except ReadError as exc:  # EAGAIN, ENODATA, EIO: skip this sensor only
                    self.skip(exc.path, exc)
                    continue
                if raw is None:  # the chip went away: rescan next time
                    self._hwmon.stale = True
                    continue
                labels = [chip.chip, chip.chip_name, sensor.sensor, sensor.label]
                if sensor.kind == "fan":
                    add(fans, labels, raw)
                    continue
                add(temperature, labels, raw / MILLI)
                if sensor.max is not None:
                    add(temperature_max, labels, sensor.max)
                if sensor.crit is not None:
                    add(temperature_crit, labels, sensor.crit)
        yield from (temperature, temperature_max, temperature_crit, fans)

    def _zone_list(self) -> list[tuple[str, str, str]]:
        """(zone number, type, temp path) per thermal zone; types read once per zone set."""
        names = [n for n in list_dir(self._thermal_dir) if n.startswith("thermal_zone")]
        if self._zones is not None and self._zones[0] == names and self._cache_static:
            return self._zones[1]
        zones = []
        for name in sorted(names, key=lambda n: _number(n[len("thermal_zone") :])):
            path = f"{self._thermal_dir}/{name}"
            try:
                kind = read_text(f"{path}/type")
            except ReadError as exc:
                self.skip(exc.path, exc)
                kind = None
            if kind is not None:
                zones.append((name[len("thermal_zone") :], kind, f"{path}/temp"))
        self._zones = (names, zones)
        return zones

    def _thermal_zones(self) -> Metric:
        family = ZONE_TEMPERATURE.family()
        for zone, kind, path in self._zone_list():
            try:
                raw = read_int(path)
            except ReadError as exc:  # disabled zones answer ENODATA or EAGAIN
                self.skip(exc.path, exc)
                continue
            if raw is not None:
                add(family, [zone, kind], raw / MILLI)
        return family


def _number(text: str) -> tuple[int, str]:
    """Numeric order for ids that are numbers ('2' < '10'), text order otherwise."""
    return (int(text), "") if text.isdigit() else (1 << 30, text)
