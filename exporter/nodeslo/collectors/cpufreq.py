"""CPU frequency: is every package running at its sustained all-core frequency?

Sources (Documentation/admin-guide/pm/cpufreq.rst):
- `cpu/cpuN/cpufreq` links to its policy (`cpu/cpufreq/policyM`); a policy covers
  one CPU (intel_pstate, amd-pstate) or several (acpi-cpufreq on some platforms).
  Per policy: `scaling_cur_freq` (kHz; the last frequency seen by the kernel),
  `scaling_governor`, `cpuinfo_max_freq` (kHz, the hardware maximum: with turbo).
- Turbo: `cpu/intel_pstate/no_turbo` (intel_pstate), else `cpu/cpufreq/boost`
  (acpi-cpufreq, amd-pstate). Neither on most VMs: no series, not an error.

Frequencies are aggregated per package (`topology/physical_package_id`): average
and minimum current frequency over its online CPUs, and the hardware maximum.
Policies are resolved once per change of the online CPUs or of the turbo setting
(intel_pstate lowers cpuinfo_max_freq when turbo is switched off); a scrape reads
two files per policy plus the turbo switch.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.core import Metric

from nodeslo.collectors.base import Collector, CollectorContext
from nodeslo.collectors.registry import register
from nodeslo.cpus import CPU_DIR, CpuTopology, Topology
from nodeslo.metrics import Desc, add
from nodeslo.readers import ReadError, read_int, read_shared_int, read_shared_text

AVERAGE = Desc(
    "nodeslo_cpu_frequency_average_hertz",
    "gauge",
    "Average current frequency over the package's online CPUs (scaling_cur_freq).",
    ("package",),
)
MINIMUM = Desc(
    "nodeslo_cpu_frequency_min_hertz",
    "gauge",
    "Lowest current frequency of any online CPU of the package (scaling_cur_freq).",
    ("package",),
)
MAXIMUM = Desc(
    "nodeslo_cpu_frequency_max_hertz",
    "gauge",
    "Hardware maximum frequency of the package's CPUs (cpuinfo_max_freq, turbo included).",
    ("package",),
)
GOVERNOR_CPUS = Desc(
    "nodeslo_cpu_governor_cpus",
    "gauge",
    "Online CPUs per cpufreq scaling governor.",
    ("governor",),
)
TURBO = Desc(
    "nodeslo_cpu_turbo_enabled",
    "gauge",
    "1 when turbo / boost frequencies are allowed (intel_pstate no_turbo=0, cpufreq boost=1).",
)

HZ_PER_KHZ = 1000


@dataclass
class _Policy:
    cur_path: str
    governor_path: str
    # (package slot, online CPUs of this policy in that package)
    packages: list[tuple[int, int]] = field(default_factory=list)
    cpus: int = 0


@dataclass
class _Plan:
    cpus: tuple[CpuTopology, ...]
    turbo: int | None
    packages: list[str]
    max_khz: list[int | None]
    policies: list[_Policy]
    stale: bool = False


def resolve_policy(link: str) -> str | None:
    """cpuN/cpufreq links to ../cpufreq/policyM (4.7+); before, it was the directory.
    The policy directory, spelled the same way for every reader (their shared reads of
    scaling_governor meet on it); None without a cpufreq driver for that CPU."""
    try:
        target = os.readlink(link)
    except OSError as exc:
        if exc.errno == errno.EINVAL:  # a directory, not a link
            return link
        return None
    return os.path.normpath(os.path.join(os.path.dirname(link), target))


@register
class CpufreqCollector(Collector):
    name = "cpufreq"
    help = "CPU frequency per package, scaling governors, turbo."

    def __init__(self, ctx: CollectorContext) -> None:
        super().__init__(ctx)
        self._lock = threading.Lock()
        # Benchmark-only switch (no flag): re-read static attributes on every scrape.
        self._cache_static = bool(ctx.option("cache_static", True))
        self._topology = Topology(ctx.roots)
        self._no_turbo_path = ctx.roots.sys(CPU_DIR, "intel_pstate", "no_turbo")
        self._boost_path = ctx.roots.sys(CPU_DIR, "cpufreq", "boost")
        self._plan: _Plan | None = None

    def _turbo(self) -> int | None:
        try:
            no_turbo = read_shared_int(self._no_turbo_path)
            if no_turbo is not None:
                return 0 if no_turbo else 1
            boost = read_shared_int(self._boost_path)
        except ReadError as exc:
            self.skip(exc.path, exc)
            return None
        return None if boost is None else (1 if boost else 0)

    def _build(self, cpus: tuple[CpuTopology, ...], turbo: int | None) -> _Plan:
        policies: dict[str, _Policy] = {}
        members: dict[str, dict[str, int]] = {}
        slots: dict[str, int] = {}
        max_khz: list[int | None] = []
        for cpu in sorted(cpus, key=lambda c: (int(c.package), c.cpu)):
            policy_dir = resolve_policy(self._topology.cpu_path(cpu.cpu, "cpufreq"))
            if policy_dir is None:
                continue  # no cpufreq driver for this CPU (VM, or cpufreq off)
            if cpu.package not in slots:
                slots[cpu.package] = len(max_khz)
                max_khz.append(None)
            policy = policies.get(policy_dir)
            if policy is None:
                policy = policies[policy_dir] = _Policy(
                    f"{policy_dir}/scaling_cur_freq", f"{policy_dir}/scaling_governor"
                )
                try:
                    hardware_max = read_int(f"{policy_dir}/cpuinfo_max_freq")
                except ReadError as exc:
                    self.skip(exc.path, exc)
                    hardware_max = None
                slot = slots[cpu.package]
                if hardware_max is not None:
                    current = max_khz[slot]
                    max_khz[slot] = hardware_max if current is None else max(current, hardware_max)
            counts = members.setdefault(policy_dir, {})
            counts[cpu.package] = counts.get(cpu.package, 0) + 1
            policy.cpus += 1
        for policy_dir, policy in policies.items():
            policy.packages = [(slots[p], n) for p, n in members[policy_dir].items()]
        return _Plan(cpus, turbo, list(slots), max_khz, list(policies.values()))

    def collect(self) -> list[Metric]:
        # The threaded HTTP server may run two scrapes at once; the counters' state
        # must see readings in order (an older reading after a newer one would look
        # like a restart or a wrap), so one collection at a time.
        with self._lock:
            return list(self._collect())

    def _collect(self) -> Iterator[Metric]:
        turbo = self._turbo()
        if turbo is not None:
            yield TURBO.single(turbo)
        cpus = self._topology.online()
        plan = self._plan
        if (
            plan is None
            or plan.stale
            or plan.cpus is not cpus
            or plan.turbo != turbo
            or not self._cache_static
        ):
            plan = self._plan = self._build(cpus, turbo)
        if not plan.policies:
            return
        n = len(plan.packages)
        khz_sum = [0] * n
        counted = [0] * n
        lowest: list[int | None] = [None] * n
        governors: dict[str, int] = {}
        for policy in plan.policies:
            try:
                khz = read_int(policy.cur_path)
                governor = read_shared_text(policy.governor_path)
            except ReadError as exc:
                self.skip(exc.path, exc)
                continue
            if khz is None or governor is None:  # policy torn down (CPU offline, driver switch)
                plan.stale = True
                continue
            governors[governor] = governors.get(governor, 0) + policy.cpus
            for slot, cpus_here in policy.packages:
                khz_sum[slot] += khz * cpus_here
                counted[slot] += cpus_here
                low = lowest[slot]
                if low is None or khz < low:
                    lowest[slot] = khz
        average = AVERAGE.family()
        minimum = MINIMUM.family()
        maximum = MAXIMUM.family()
        for slot, package in enumerate(plan.packages):
            low = lowest[slot]
            if counted[slot] and low is not None:
                add(average, [package], khz_sum[slot] * HZ_PER_KHZ / counted[slot])
                add(minimum, [package], low * HZ_PER_KHZ)
            hardware_max = plan.max_khz[slot]
            if hardware_max is not None:
                add(maximum, [package], hardware_max * HZ_PER_KHZ)
        governor_family = GOVERNOR_CPUS.family()
        for governor in sorted(governors):
            add(governor_family, [governor], governors[governor])
        yield from (average, minimum, maximum, governor_family)
