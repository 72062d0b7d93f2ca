"""C-states: how long CPUs sleep in each idle state, how often, and how deep it is.

Sources (Documentation/admin-guide/pm/cpuidle.rst, ABI sysfs-devices-system-cpu):
- `cpu/cpuN/cpuidle/stateK/`: `name`, `desc`, `latency` (exit latency, µs) and
  `residency` (target residency, µs) are fixed while the driver is loaded; `usage`
  (entries), `time` (µs spent in the state), `above` / `below` (5.1+: entries where the
  CPU woke sooner than the target residency / where a deeper state would have fitted:
  the governor's mispredictions) and `disable` (3.10+, per CPU, writable) change.
- `cpu/cpuidle/current_driver` and `current_governor` (`current_governor_ro` before 5.2).

By default every metric is aggregated per state over the online CPUs: residency,
entries and mispredictions summed (monotonic across CPU hotplug, see
`nodeslo.counters`), exit latency and target residency as the largest value any CPU
reports, `cpuidle_enabled_cpus{state}` the CPUs on which the state is not disabled.
`--collector.cpuidle.per-cpu` adds a `cpu` label to those instead. Mispredictions are
off by default (`--collector.cpuidle.mispredictions`): `above` and `below` are 2 of the
5 reads per state per CPU, which on a 256-CPU server is 40 % of the collector's cost
and most of the daemon's idle CPU, for a diagnostic no alert or dashboard uses. The `state` label
is the state's name; when two states of a CPU share a name (or it is empty) it is
`stateK`.

Static attributes are read once per change of the device set (the online CPUs or the
driver); a scrape reads only usage, time, disable (and above, below when asked): 3 (5)
small reads per state per CPU, no directory listing. Those files stay open between
scrapes and are read with pread (`readers.HeldFiles`: up to 512 per process, the rest
opened per read; reopened when a CPU goes and comes back), and the `disable` reads are
shared with the tuning collector of the same scrape (`readers.read_shared`).

Public API (for the tuning checks and `nodeslo check`; kept stable):

    read_idle_states(roots, topology=None) -> dict[int, list[IdleState]]
        Every online CPU's idle states, read afresh (no cache): `IdleState` has cpu,
        index (K of stateK), name, label, desc, exit_latency_seconds and
        target_residency_seconds (None when unreadable), disabled (False when the
        kernel has no `disable` file, None when it is unreadable). CPUs without idle
        states (no cpuidle driver) are absent. Read errors are appended to `errors`
        when a list is passed, otherwise dropped.
    read_idle_driver(roots) -> IdleDriver | None
        The cpuidle driver and governor; None without CONFIG_CPU_IDLE.
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

from prometheus_client.core import Metric

from nodeslo.collectors.base import Collector, CollectorContext
from nodeslo.collectors.registry import register
from nodeslo.counters import CounterSums, CounterTrack
from nodeslo.cpus import CPU_DIR, CpuTopology, Topology
from nodeslo.metrics import Desc, add
from nodeslo.paths import Roots
from nodeslo.readers import (
    HeldFiles,
    MalformedValue,
    ReadError,
    list_dir,
    parse_int,
    read_int,
    read_shared_int,
    read_text,
)

DRIVER_INFO = Desc(
    "nodeslo_cpuidle_driver_info",
    "gauge",
    "The cpuidle driver (intel_idle, acpi_idle, none, ...) and governor in use; always 1.",
    ("driver", "governor"),
)
CPUS = Desc(
    "nodeslo_cpuidle_cpus",
    "gauge",
    "Online CPUs that have idle states (a cpuidle device).",
)
RESIDENCY = Desc(
    "nodeslo_cpuidle_residency_seconds_total",
    "counter",
    "Time spent in the idle state, summed over CPUs.",
    ("state",),
)
ENTRIES = Desc(
    "nodeslo_cpuidle_entries_total",
    "counter",
    "Times the idle state was entered, summed over CPUs.",
    ("state",),
)
MISPREDICTIONS = Desc(
    "nodeslo_cpuidle_mispredictions_total",
    "counter",
    "Idle state entries the governor got wrong: above = woke before the target residency"
    " (state too deep), below = a deeper state would have fitted (kernel 5.1+).",
    ("state", "direction"),
)
EXIT_LATENCY = Desc(
    "nodeslo_cpuidle_exit_latency_seconds",
    "gauge",
    "Worst-case time to wake from the idle state (the largest any CPU reports).",
    ("state",),
)
TARGET_RESIDENCY = Desc(
    "nodeslo_cpuidle_target_residency_seconds",
    "gauge",
    "Minimum stay for the idle state to save energy (the largest any CPU reports).",
    ("state",),
)
ENABLED_CPUS = Desc(
    "nodeslo_cpuidle_enabled_cpus",
    "gauge",
    "CPUs on which the idle state is not disabled.",
    ("state",),
)

# --collector.cpuidle.per-cpu: the same metrics with a cpu label.
PER_CPU = {
    d: replace(d, labels=(*d.labels, "cpu"))
    for d in (RESIDENCY, ENTRIES, MISPREDICTIONS, EXIT_LATENCY, TARGET_RESIDENCY, ENABLED_CPUS)
}

US_PER_SECOND = 1e6  # divide, do not multiply by 1e-6: 800 µs must read 0.0008
# Columns of a state's values (the first four are its CounterTrack's counters).
USAGE, TIME, ABOVE, BELOW, DISABLE = range(5)
ABSENT, UNREADABLE = -1, -2


@dataclass(frozen=True)
class IdleState:
    """One idle state of one CPU, as the tuning checks need it."""

    cpu: int
    index: int
    name: str
    label: str
    desc: str
    exit_latency_seconds: float | None
    target_residency_seconds: float | None
    disabled: bool | None


@dataclass(frozen=True)
class IdleDriver:
    driver: str
    governor: str


@dataclass(frozen=True)
class StaticState:
    """The attributes of cpuN/cpuidle/stateK that do not change while the driver is loaded."""

    index: int
    name: str
    label: str
    desc: str
    latency_us: int | None
    residency_us: int | None
    path: str


def state_labels(states: Sequence[tuple[int, str]]) -> list[str]:
    """(index, name) of one CPU's states -> their `state` labels, unique per CPU."""
    counts: dict[str, int] = {}
    for _, name in states:
        counts[name] = counts.get(name, 0) + 1
    return [name if name and counts[name] == 1 else f"state{index}" for index, name in states]


def _text(path: str, errors: list[ReadError]) -> str | None:
    try:
        return read_text(path)
    except ReadError as exc:
        errors.append(exc)
        return None


def _int(path: str, errors: list[ReadError]) -> int | None:
    try:
        return read_int(path)
    except ReadError as exc:
        errors.append(exc)
        return None


def scan_cpu(cpuidle_dir: str, errors: list[ReadError]) -> list[StaticState]:
    """The static attributes of one CPU's idle states (cold path: lists the directory).

    A state whose `name` is absent vanished while being read (CPU unplugged) and is
    left out; unreadable latency or residency is None and recorded in `errors`.
    """
    try:
        entries = list_dir(cpuidle_dir)
    except ReadError as exc:
        errors.append(exc)
        return []
    indices = sorted(int(e[5:]) for e in entries if e.startswith("state") and e[5:].isdigit())
    found: list[tuple[int, str, str, int | None, int | None, str]] = []
    for index in indices:
        path = f"{cpuidle_dir}/state{index}"
        name = _text(f"{path}/name", errors)
        if name is None:
            continue
        desc = _text(f"{path}/desc", errors) or ""
        latency = _int(f"{path}/latency", errors)
        residency = _int(f"{path}/residency", errors)
        found.append((index, name, desc, latency, residency, path))
    labels = state_labels([(index, name) for index, name, *_ in found])
    return [
        StaticState(index, name, label, desc, latency, residency, path)
        for (index, name, desc, latency, residency, path), label in zip(found, labels, strict=True)
    ]


def read_idle_driver(roots: Roots) -> IdleDriver | None:
    """The cpuidle driver and governor; None when the kernel has no cpuidle framework."""
    base = roots.sys(CPU_DIR, "cpuidle")
    driver = read_text(f"{base}/current_driver")
    if driver is None:
        return None
    governor = read_text(f"{base}/current_governor")
    if governor is None:
        governor = read_text(f"{base}/current_governor_ro")
    return IdleDriver(driver, governor or "")


def read_idle_states(
    roots: Roots, topology: Topology | None = None, errors: list[ReadError] | None = None
) -> dict[int, list[IdleState]]:
    """Every online CPU's idle states, read afresh; see the module docstring."""
    errors = errors if errors is not None else []
    topology = topology if topology is not None else Topology(roots)
    out: dict[int, list[IdleState]] = {}
    for cpu in topology.online():
        states = []
        for static in scan_cpu(topology.cpu_path(cpu.cpu, "cpuidle"), errors):
            try:
                disable = read_int(f"{static.path}/disable")
            except ReadError as exc:
                errors.append(exc)
                disabled: bool | None = None
            else:
                disabled = bool(disable)  # no file (before 3.10): nothing can disable it
            states.append(
                IdleState(
                    cpu=cpu.cpu,
                    index=static.index,
                    name=static.name,
                    label=static.label,
                    desc=static.desc,
                    exit_latency_seconds=_seconds(static.latency_us),
                    target_residency_seconds=_seconds(static.residency_us),
                    disabled=disabled,
                )
            )
        if states:
            out[cpu.cpu] = states
    return out


def _seconds(microseconds: int | None) -> float | None:
    return None if microseconds is None else microseconds / US_PER_SECOND


class _Entry:
    """One (CPU, state) of the scrape plan: prebuilt paths of the files that change."""

    __slots__ = ("above", "below", "cpu", "disable", "slot", "static", "time", "usage")

    def __init__(self, cpu: str, slot: int, static: StaticState) -> None:
        self.cpu = cpu
        self.slot = slot
        self.static = static
        self.usage = f"{static.path}/usage"
        self.time = f"{static.path}/time"
        # Set to None once absent: kernels before 5.1 (above, below) or 3.10 (disable).
        self.above: str | None = f"{static.path}/above"
        self.below: str | None = f"{static.path}/below"
        self.disable: str | None = f"{static.path}/disable"


@dataclass
class _Plan:
    cpus: tuple[CpuTopology, ...]
    driver: str
    labels: list[str]
    entries: list[_Entry]
    tracks: list[CounterTrack]
    latency_us: list[int | None]  # per label: the largest any CPU reports
    residency_us: list[int | None]
    cpus_with_states: int
    stale: bool = False


def _max(current: int | None, value: int | None) -> int | None:
    if value is None:
        return current
    return value if current is None or value > current else current


@register
class CpuidleCollector(Collector):
    name = "cpuidle"
    help = "C-state residency, entries, exit latency, target residency and enablement."

    @classmethod
    def add_arguments(cls, parser: argparse._ArgumentGroup) -> None:
        parser.add_argument(
            "--collector.cpuidle.per-cpu",
            dest="cpuidle_per_cpu",
            action="store_true",
            help="add a cpu label to the C-state metrics instead of aggregating per state"
            " (x CPUs more series)",
        )
        parser.add_argument(
            "--collector.cpuidle.mispredictions",
            dest="cpuidle_mispredictions",
            action="store_true",
            help="also export the governor's mispredictions (above/below): 2 more reads per"
            " state per CPU, +40%% of this collector's cost",
        )

    def __init__(self, ctx: CollectorContext) -> None:
        super().__init__(ctx)
        self._lock = threading.Lock()
        self._per_cpu = bool(ctx.option("cpuidle_per_cpu", False))
        self._mispredictions = bool(ctx.option("cpuidle_mispredictions", False))
        # Benchmark-only switch (no flag): re-read static attributes on every scrape.
        self._cache_static = bool(ctx.option("cache_static", True))
        self._topology = Topology(ctx.roots)
        base = ctx.roots.sys(CPU_DIR, "cpuidle")
        self._driver_path = f"{base}/current_driver"
        self._governor_paths = (f"{base}/current_governor", f"{base}/current_governor_ro")
        self._sums = CounterSums(4)
        self._plan: _Plan | None = None
        # The per-state files read every scrape, held open (bounded: see HeldFiles).
        self._held = HeldFiles()

    def close(self) -> None:
        self._held.close()

    def collect(self) -> list[Metric]:
        # The threaded HTTP server may run two scrapes at once; the counters' state
        # must see readings in order (an older reading after a newer one would look
        # like a restart or a wrap), so one collection at a time.
        with self._lock:
            return list(self._collect())

    def _collect(self) -> Iterator[Metric]:
        driver = read_text(self._driver_path)
        if driver is None:  # CONFIG_CPU_IDLE=n
            return
        governor = read_text(self._governor_paths[0])
        if governor is None:
            governor = read_text(self._governor_paths[1])
        yield DRIVER_INFO.single(1, driver, governor or "")
        cpus = self._topology.online()
        plan = self._plan
        if (
            plan is None
            or plan.stale
            or plan.cpus is not cpus
            or plan.driver != driver
            or not self._cache_static
        ):
            self._held.close()  # the files of the old plan
            plan = self._plan = self._build(cpus, driver)
        yield CPUS.single(plan.cpus_with_states)
        if plan.entries:
            yield from self._per_cpu_families(plan) if self._per_cpu else self._families(plan)

    def _build(self, cpus: tuple[CpuTopology, ...], driver: str) -> _Plan:
        errors: list[ReadError] = []
        slots: dict[str, int] = {}
        order: list[tuple[int, str]] = []  # (lowest index, label) per slot
        entries: list[_Entry] = []
        latency: list[int | None] = []
        residency: list[int | None] = []
        with_states = 0
        for cpu in cpus:
            states = scan_cpu(self._topology.cpu_path(cpu.cpu, "cpuidle"), errors)
            with_states += bool(states)
            for static in states:
                slot = slots.get(static.label)
                if slot is None:
                    slot = slots[static.label] = len(order)
                    order.append((static.index, static.label))
                    latency.append(None)
                    residency.append(None)
                latency[slot] = _max(latency[slot], static.latency_us)
                residency[slot] = _max(residency[slot], static.residency_us)
                entry = _Entry(str(cpu.cpu), slot, static)
                if not self._mispredictions:
                    entry.above = entry.below = None  # never read: no series
                entries.append(entry)
        for exc in errors:
            self.skip(exc.path, exc)
        # Labels ordered by state index so expositions list POLL, C1, ... C6.
        ranked = sorted(range(len(order)), key=lambda s: order[s])
        rank = {slot: position for position, slot in enumerate(ranked)}
        for entry in entries:
            entry.slot = rank[entry.slot]
        labels = [order[s][1] for s in ranked]
        tracks = self._sums.rebuild(
            [((e.cpu, e.static.index, e.static.name), labels[e.slot]) for e in entries]
        )
        return _Plan(
            cpus=cpus,
            driver=driver,
            labels=labels,
            entries=entries,
            tracks=tracks,
            latency_us=[latency[s] for s in ranked],
            residency_us=[residency[s] for s in ranked],
            cpus_with_states=with_states,
        )

    def _int(self, path: str, shared: bool = False) -> int:
        """A counter or flag; ABSENT when the file is not there, UNREADABLE (logged once)
        when it does not read as a non-negative integer. `shared`: a file the tuning
        collector reads too, kept for it in this scrape's shared reads."""
        read = self._held.read
        try:
            if shared:
                value = read_shared_int(path, read)
            else:
                raw = read(path)
                value = None if raw is None else parse_int(path, raw)
        except ReadError as exc:
            self.skip(exc.path, exc)
            return UNREADABLE
        if value is None:
            return ABSENT
        if value < 0:
            self.skip(path, MalformedValue(path, f"negative: {value}"))
            return UNREADABLE
        return value

    def _read(self, entry: _Entry) -> list[int] | None:
        """usage, time, above, below, disable of one state (each value on its own: a bad
        one is UNREADABLE or ABSENT, the others stand); None when the state vanished (CPU
        unplugged mid-scrape: the plan is rebuilt next time)."""
        usage = self._int(entry.usage)
        time_us = self._int(entry.time)
        if ABSENT in (usage, time_us):
            return None
        above = below = ABSENT
        if entry.above is not None:
            above = self._int(entry.above)
            if above == ABSENT:  # kernel before 5.1: stop asking
                entry.above = None
        if entry.below is not None:
            below = self._int(entry.below)
            if below == ABSENT:
                entry.below = None
        disable = 0  # no file (before 3.10): nothing can disable the state
        if entry.disable is not None:
            disable = self._int(entry.disable, shared=True)
            if disable == ABSENT:
                entry.disable = None
                disable = 0
        return [usage, time_us, above, below, disable]

    def _families(self, plan: _Plan) -> Iterator[Metric]:
        n = len(plan.labels)
        sums = [[0] * n for _ in range(4)]  # per counter column, per label
        mispredicts = [False] * n
        enabled = [0] * n
        for entry, track in zip(plan.entries, plan.tracks, strict=True):
            slot = entry.slot
            values = self._read(entry)
            if values is None:
                plan.stale = True
            else:
                for column in (USAGE, TIME, ABOVE, BELOW):
                    if values[column] >= 0:
                        track.update(column, values[column])
                if values[DISABLE] == 0:
                    enabled[slot] += 1
            # Unread values keep counting their last reading: the sums never go back.
            for column in (USAGE, TIME, ABOVE, BELOW):
                sums[column][slot] += track.total(column)
            if entry.above is not None or entry.below is not None:
                mispredicts[slot] = True
        retired = self._sums.retired_total
        families = {d: d.family() for d in (RESIDENCY, ENTRIES, MISPREDICTIONS)}
        families |= {d: d.family() for d in (EXIT_LATENCY, TARGET_RESIDENCY, ENABLED_CPUS)}
        for slot, label in enumerate(plan.labels):
            state = [label]
            total = [sums[column][slot] + retired(label, column) for column in range(4)]
            add(families[RESIDENCY], state, total[TIME] / US_PER_SECOND)
            add(families[ENTRIES], state, total[USAGE])
            if mispredicts[slot]:
                add(families[MISPREDICTIONS], [label, "above"], total[ABOVE])
                add(families[MISPREDICTIONS], [label, "below"], total[BELOW])
            latency, residency = plan.latency_us[slot], plan.residency_us[slot]
            if latency is not None:
                add(families[EXIT_LATENCY], state, latency / US_PER_SECOND)
            if residency is not None:
                add(families[TARGET_RESIDENCY], state, residency / US_PER_SECOND)
            add(families[ENABLED_CPUS], state, enabled[slot])
        yield from families.values()

    def _per_cpu_families(self, plan: _Plan) -> Iterator[Metric]:
        residency = PER_CPU[RESIDENCY].family()
        entries = PER_CPU[ENTRIES].family()
        mispredictions = PER_CPU[MISPREDICTIONS].family()
        latency = PER_CPU[EXIT_LATENCY].family()
        target = PER_CPU[TARGET_RESIDENCY].family()
        enabled = PER_CPU[ENABLED_CPUS].family()
        for entry in plan.entries:
            static = entry.static
            values = self._read(entry)
            if values is None:
                plan.stale = True
                continue
            key = [plan.labels[entry.slot], entry.cpu]
            # Per CPU the kernel's own counters are exported: a series per source.
            if values[TIME] >= 0:
                add(residency, key, values[TIME] / US_PER_SECOND)
            if values[USAGE] >= 0:
                add(entries, key, values[USAGE])
            for column, direction in ((ABOVE, "above"), (BELOW, "below")):
                if values[column] >= 0:
                    add(mispredictions, [key[0], direction, entry.cpu], values[column])
            if static.latency_us is not None:
                add(latency, key, static.latency_us / US_PER_SECOND)
            if static.residency_us is not None:
                add(target, key, static.residency_us / US_PER_SECOND)
            if values[DISABLE] >= 0:
                add(enabled, key, 1 if values[DISABLE] == 0 else 0)
        yield from (residency, entries, mispredictions, latency, target, enabled)
