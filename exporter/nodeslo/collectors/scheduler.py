"""Scheduler pressure: run-queue wait, context switches, forks, runnable tasks, PSI.

Sources:
- /proc/schedstat `cpuN` lines: field 8 is run_delay (ns spent runnable but waiting
  for a CPU), field 9 pcount (timeslices run), 1-based after the name. Summed over
  CPUs: a per-CPU breakdown multiplies series by 256 and answers no alert.
- /proc/stat: ctxt, processes (forks since boot), procs_running, procs_blocked.
- /proc/pressure/{cpu,io,memory,irq}: `some|full ... total=<µs>` stall time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.core import Metric

from nodeslo.collectors.base import Collector, CollectorContext
from nodeslo.collectors.registry import register
from nodeslo.metrics import Desc, add
from nodeslo.readers import ValueUnavailable, read_all, to_u64

RUNQUEUE_WAIT = Desc(
    "nodeslo_schedstat_runqueue_wait_seconds_total",
    "counter",
    "Time tasks spent runnable but waiting for a CPU, summed over CPUs (schedstat run_delay).",
)
TIMESLICES = Desc(
    "nodeslo_schedstat_timeslices_total",
    "counter",
    "Timeslices run, summed over CPUs (schedstat pcount).",
)
CONTEXT_SWITCHES = Desc(
    "nodeslo_context_switches_total", "counter", "Context switches since boot (/proc/stat ctxt)."
)
FORKS = Desc("nodeslo_forks_total", "counter", "Processes and threads created since boot.")
PROCS_RUNNING = Desc("nodeslo_procs_running", "gauge", "Tasks currently runnable.")
PROCS_BLOCKED = Desc("nodeslo_procs_blocked", "gauge", "Tasks currently blocked on I/O.")
PRESSURE_STALLED = Desc(
    "nodeslo_pressure_stalled_seconds_total",
    "counter",
    "Pressure stall time: some = at least one task stalled, full = all non-idle tasks stalled.",
    ("resource", "kind"),
)

PSI_RESOURCES = ("cpu", "io", "memory", "irq")
SCHEDSTAT_CPU_FIELDS = 9
RUN_DELAY_FIELD = 7  # 0-based index of field 8 after the cpu name
PCOUNT_FIELD = 8


class MalformedFile(ValueError):
    pass


@dataclass(frozen=True)
class Schedstat:
    run_delay_ns: int
    timeslices: int
    cpus: int


def parse_schedstat(text: str) -> Schedstat:
    """Sum run_delay and pcount over the `cpuN` lines of /proc/schedstat."""
    run_delay = timeslices = cpus = 0
    for line in text.splitlines():
        if not line.startswith("cpu"):
            continue
        fields = line.split()
        if len(fields) < SCHEDSTAT_CPU_FIELDS + 1:
            raise MalformedFile(f"{fields[0]}: {len(fields) - 1} fields, expected 9")
        try:
            run_delay += to_u64(fields[1 + RUN_DELAY_FIELD])
            timeslices += to_u64(fields[1 + PCOUNT_FIELD])
        except ValueError:
            raise MalformedFile(f"{fields[0]}: non-numeric field") from None
        cpus += 1
    return Schedstat(run_delay, timeslices, cpus)


STAT_KEYS = ("ctxt", "processes", "procs_running", "procs_blocked")


def parse_stat(text: str) -> dict[str, int]:
    """The scheduler counters of /proc/stat; keys missing from the file are absent."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(" ")
        if key in STAT_KEYS:
            try:
                values[key] = to_u64(rest.split()[0])
            except (ValueError, IndexError):
                raise MalformedFile(f"{key}: not an integer: {rest.strip()[:40]!r}") from None
    return values


def parse_pressure(text: str) -> dict[str, float]:
    """`some|full avg10=.. avg60=.. avg300=.. total=<µs>` -> {kind: seconds}."""
    totals: dict[str, float] = {}
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        if kind not in ("some", "full"):
            continue
        for item in rest.split():
            name, _, value = item.partition("=")
            if name == "total":
                try:
                    totals[kind] = to_u64(value) / 1e6
                except ValueError:
                    raise MalformedFile(f"{kind}: total is not an integer: {value!r}") from None
    return totals


@register
class SchedulerCollector(Collector):
    name = "scheduler"
    help = "Run-queue wait, context switches, forks, runnable tasks, pressure stall (PSI)."

    def __init__(self, ctx: CollectorContext) -> None:
        super().__init__(ctx)
        roots = ctx.roots
        self._schedstat = roots.proc("schedstat")
        self._stat = roots.proc("stat")
        self._pressure = {r: roots.proc("pressure", r) for r in PSI_RESOURCES}

    def _read(self, path: str) -> str | None:
        raw = read_all(path)
        return None if raw is None else raw.decode("ascii", "replace")

    def collect(self) -> Iterator[Metric]:
        yield from self._collect_schedstat()
        yield from self._collect_stat()
        yield self._collect_pressure()

    def _collect_schedstat(self) -> Iterator[Metric]:
        text = self._read(self._schedstat)
        if text is None:  # CONFIG_SCHEDSTATS=n
            return
        try:
            stats = parse_schedstat(text)
        except MalformedFile as exc:
            self.skip("schedstat", ValueError(f"{self._schedstat}: {exc}"))
            return
        if stats.cpus:
            yield RUNQUEUE_WAIT.single(stats.run_delay_ns / 1e9)
            yield TIMESLICES.single(stats.timeslices)

    def _collect_stat(self) -> Iterator[Metric]:
        text = self._read(self._stat)
        if text is None:
            return
        try:
            values = parse_stat(text)
        except MalformedFile as exc:
            self.skip("stat", ValueError(f"{self._stat}: {exc}"))
            return
        for key, desc in (
            ("ctxt", CONTEXT_SWITCHES),
            ("processes", FORKS),
            ("procs_running", PROCS_RUNNING),
            ("procs_blocked", PROCS_BLOCKED),
        ):
            if key in values:
                yield desc.single(values[key])

    def _collect_pressure(self) -> Metric:
        family = PRESSURE_STALLED.family()
        for resource, path in self._pressure.items():
            try:
                text = self._read(path)
            except ValueUnavailable:  # PSI compiled in but disabled (psi=0): EOPNOTSUPP
                continue
            if text is None:
                continue
            try:
                totals = parse_pressure(text)
            except MalformedFile as exc:
                self.skip(f"pressure:{resource}", ValueError(f"{path}: {exc}"))
                continue
            for kind, seconds in sorted(totals.items()):
                add(family, [resource, kind], seconds)
        return family
