"""Tuning drift: the live host compared with the profile's `tuning:` section.

The seed document wants deep C-states off, the performance governor, turbo on and
kernel settings that "have not been inadvertently altered". Each setting the profile
names becomes one `tuning_compliant{setting}` (1/0) and one
`tuning_info{setting,expected,actual}`; a setting the profile leaves out (or sets to
null) is not checked and not exported. The profile is re-read on every scrape, so a
SIGHUP reload changes the expectations at once.

Settings and their sources:
- deep_cstates: every idle state whose exit latency exceeds
  `max_cstate_exit_latency` must be disabled on every online CPU (cpuN/cpuidle/stateK/
  disable, via the cpuidle collector's `read_idle_states`). No cpuidle states at all
  (no driver, idle=poll, most VMs) complies: nothing deep can be entered.
- governor: scaling_governor of every cpufreq policy; no cpufreq driver does not
  comply (nothing holds the frequency the profile wants; remove the expectation from
  a site profile whose firmware owns frequency).
- turbo: intel_pstate/no_turbo, else cpufreq/boost.
- transparent_hugepage: the bracketed mode of /sys/kernel/mm/transparent_hugepage/
  enabled; a kernel without THP complies with `never`.
- isolated_cpus, nohz_full: /sys/devices/system/cpu/{isolated,nohz_full}; a kernel
  without NO_HZ_FULL has no nohz_full file, which is the empty set.
- sysctl: /proc/sys/<name with dots as slashes>; a name this kernel does not have does
  not comply (actual "absent"): it is either a typo or a setting that cannot hold.

A setting whose files cannot be read this time (EIO, EACCES, garbage) is left out of
the scrape and logged once; `nodeslo check` shows it as an error.

The per-scrape cost is one `disable` read per deep state per CPU, one governor read
per cpufreq policy and one read per other setting; which states are deep and which
CPUs share a policy is worked out once per change of the online CPUs, the cpuidle
driver or the latency limit. In a scrape where the cpuidle and cpufreq collectors ran
(before this one), the `disable`, governor and turbo files are not read again: their
reads are shared (`readers.read_shared`), so both report the same instant.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client.core import Metric

from nodeslo.collectors.base import Collector, CollectorContext
from nodeslo.collectors.cpufreq import resolve_policy
from nodeslo.collectors.cpuidle import IdleState, read_idle_driver, read_idle_states
from nodeslo.collectors.registry import register
from nodeslo.cpus import CPU_DIR, CpuTopology, Topology, parse_cpu_list
from nodeslo.metrics import Desc, add
from nodeslo.paths import Roots
from nodeslo.profile import Tuning, format_cpu_list
from nodeslo.readers import (
    MalformedValue,
    ReadError,
    read_shared_int,
    read_shared_text,
    read_text,
)
from nodeslo.sysctl import normalize_value, sysctl_relpath
from nodeslo.units import human_seconds

COMPLIANT = Desc(
    "nodeslo_tuning_compliant",
    "gauge",
    "1 when the host's setting matches the profile's tuning section, 0 when it drifted.",
    ("setting",),
)
INFO = Desc(
    "nodeslo_tuning_info",
    "gauge",
    "Always 1; what the profile expects of a setting and what the host has.",
    ("setting", "expected", "actual"),
)

DEEP_CSTATES = "deep_cstates"
GOVERNOR = "governor"
TURBO = "turbo"
THP = "transparent_hugepage"
ISOLATED_CPUS = "isolated_cpus"
NOHZ_FULL = "nohz_full"
THP_PATH = "kernel/mm/transparent_hugepage/enabled"

OnError = Callable[[str, Exception], None]


@dataclass(frozen=True)
class TuningResult:
    setting: str
    expected: str
    actual: str
    # None: the host's value could not be read, so compliance is unknown.
    compliant: bool | None


def _on_off(value: bool) -> str:
    return "on" if value else "off"


def _cpus(cpus: Sequence[int] | str) -> str:
    text = cpus if isinstance(cpus, str) else format_cpu_list(list(cpus))
    return text or "none"


# --- pure evaluations: host facts in, verdict out ----------------------------------


def evaluate_cstates(
    states: Mapping[int, Sequence[IdleState]], limit_seconds: float, driver: str | None
) -> TuningResult:
    """Deep states (exit latency above the limit) enabled on any CPU do not comply."""
    expected = f"disabled above {human_seconds(limit_seconds)}"
    if not states:
        why = f"cpuidle driver {driver}" if driver else "no cpuidle"
        return TuningResult(DEEP_CSTATES, expected, f"no idle states ({why})", True)
    enabled: dict[str, tuple[float, int]] = {}  # name -> (worst latency, CPUs)
    unknown = 0
    for cpu_states in states.values():
        for state in cpu_states:
            latency = state.exit_latency_seconds
            if latency is None or state.disabled is None:
                if latency is None or latency > limit_seconds:
                    unknown += 1
                continue
            if latency > limit_seconds and not state.disabled:
                worst, cpus = enabled.get(state.label, (0.0, 0))
                enabled[state.label] = (max(worst, latency), cpus + 1)
    if enabled:
        actual = ", ".join(
            f"{name} ({human_seconds(latency)}) enabled on {cpus} CPUs"
            for name, (latency, cpus) in sorted(enabled.items(), key=lambda kv: kv[1][0])
        )
        return TuningResult(DEEP_CSTATES, expected, actual, False)
    if unknown:
        return TuningResult(DEEP_CSTATES, expected, f"{unknown} states unreadable", None)
    return TuningResult(DEEP_CSTATES, expected, "all disabled", True)


def evaluate_governor(governors: Mapping[str, int] | None, expected: str) -> TuningResult:
    """{governor: CPUs}; None when no CPU has a cpufreq policy."""
    if not governors:
        return TuningResult(GOVERNOR, expected, "no cpufreq driver", False)
    if len(governors) == 1:
        actual = next(iter(governors))
    else:
        actual = ", ".join(f"{g} on {n} CPUs" for g, n in sorted(governors.items()))
    return TuningResult(GOVERNOR, expected, actual, set(governors) == {expected})


def evaluate_turbo(enabled: bool | None, expected: bool) -> TuningResult:
    if enabled is None:
        return TuningResult(TURBO, _on_off(expected), "no turbo control", False)
    return TuningResult(TURBO, _on_off(expected), _on_off(enabled), enabled == expected)


def selected_mode(text: str) -> str:
    """'always [madvise] never' -> 'madvise'."""
    for word in text.split():
        if word.startswith("[") and word.endswith("]"):
            return word[1:-1]
    raise ValueError(f"no [selected] mode in {text.strip()[:60]!r}")


def evaluate_thp(mode: str | None, expected: str) -> TuningResult:
    """mode None: the kernel has no transparent hugepages."""
    if mode is None:
        return TuningResult(THP, expected, "not built in", expected == "never")
    return TuningResult(THP, expected, mode, mode == expected)


def evaluate_cpu_list(setting: str, text: str | None, expected: str) -> TuningResult:
    """text: the kernel's CPU list ('' or '(null)' for none); None when the file is absent."""
    want = set(parse_cpu_list(expected))
    have: set[int] = set()
    if text is not None and text.strip() not in ("", "(null)"):
        have = set(parse_cpu_list(text))
    return TuningResult(setting, _cpus(expected), _cpus(sorted(have)), have == want)


def evaluate_sysctl(name: str, text: str | None, expected: str) -> TuningResult:
    want = normalize_value(expected)
    if text is None:
        return TuningResult(name, want, "absent", False)
    have = normalize_value(text)
    return TuningResult(name, want, have, have == want)


# --- reading the host --------------------------------------------------------------


@dataclass(frozen=True)
class _DeepStatesPlan:
    key: tuple[tuple[CpuTopology, ...], str | None, float]
    states: dict[int, list[IdleState]]
    # (cpu, index in states[cpu], disable path) of the states above the limit
    deep: list[tuple[int, int, str]]


@dataclass(frozen=True)
class _PolicyPlan:
    cpus: tuple[CpuTopology, ...]
    policies: list[tuple[str, int]]  # (scaling_governor path, online CPUs it covers)


class TuningReader:
    """Reads the host's side of each setting; `evaluate` compares it with a Tuning."""

    def __init__(
        self, roots: Roots, topology: Topology | None = None, cache_plans: bool = True
    ) -> None:
        self._roots = roots
        self._cache_plans = cache_plans
        self._topology = topology if topology is not None else Topology(roots)
        self._no_turbo = roots.sys(CPU_DIR, "intel_pstate", "no_turbo")
        self._boost = roots.sys(CPU_DIR, "cpufreq", "boost")
        self._thp = roots.sys(THP_PATH)
        self._deep_plan: _DeepStatesPlan | None = None
        self._policy_plan: _PolicyPlan | None = None

    def evaluate(self, tuning: Tuning, on_error: OnError) -> list[TuningResult]:
        """One result per setting the profile names, in a fixed order."""
        if not self._cache_plans:
            self._deep_plan = self._policy_plan = None
        checks: list[tuple[str, str, Callable[[], TuningResult]]] = []
        if tuning.max_cstate_exit_latency_seconds is not None:
            limit = tuning.max_cstate_exit_latency_seconds
            expected = f"disabled above {human_seconds(limit)}"
            checks.append((DEEP_CSTATES, expected, lambda: self.deep_cstates(limit, on_error)))
        if tuning.governor is not None:
            governor = tuning.governor
            checks.append(
                (GOVERNOR, governor, lambda: evaluate_governor(self.governors(on_error), governor))
            )
        if tuning.turbo is not None:
            turbo = tuning.turbo
            checks.append((TURBO, _on_off(turbo), lambda: evaluate_turbo(self.turbo(), turbo)))
        if tuning.transparent_hugepage is not None:
            thp = tuning.transparent_hugepage
            checks.append((THP, thp, lambda: evaluate_thp(self.thp_mode(), thp)))
        for setting, file, want in (
            (ISOLATED_CPUS, "isolated", tuning.isolated_cpus),
            (NOHZ_FULL, "nohz_full", tuning.nohz_full),
        ):
            if want is not None:
                checks.append((setting, _cpus(want), self._cpu_list_check(setting, file, want)))
        for name, value in tuning.sysctl:
            checks.append((name, normalize_value(value), self._sysctl_check(name, value)))
        results = []
        for setting, expected, check in checks:
            try:
                results.append(check())
            except ReadError as exc:
                on_error(setting, exc)
                results.append(TuningResult(setting, expected, f"unreadable: {exc.reason}", None))
        return results

    def _cpu_list_check(self, setting: str, file: str, want: str) -> Callable[[], TuningResult]:
        path = self._roots.sys(CPU_DIR, file)

        def check() -> TuningResult:
            text = read_text(path)
            try:
                return evaluate_cpu_list(setting, text, want)
            except ValueError as exc:
                raise MalformedValue(path, str(exc)) from None

        return check

    def _sysctl_check(self, name: str, value: str) -> Callable[[], TuningResult]:
        path = self._roots.proc("sys", sysctl_relpath(name))
        return lambda: evaluate_sysctl(name, read_text(path), value)

    def deep_cstates(self, limit_seconds: float, on_error: OnError) -> TuningResult:
        driver_info = read_idle_driver(self._roots)
        driver = driver_info.driver if driver_info is not None else None
        key = (self._topology.online(), driver, limit_seconds)
        plan = self._deep_plan
        if plan is None or plan.key != key:
            plan = self._deep_plan = self._plan_deep_states(key, limit_seconds, on_error)
        states = {cpu: list(found) for cpu, found in plan.states.items()}
        for cpu, position, path in plan.deep:
            try:
                disable = read_shared_int(path)  # the cpuidle collector's read, if it ran
            except ReadError as exc:
                on_error(f"{DEEP_CSTATES}:cpu{cpu}", exc)
                disabled: bool | None = None
            else:
                if disable is None:  # state gone (CPU unplugged, driver swapped)
                    self._deep_plan = None
                    disabled = None
                else:
                    disabled = bool(disable)
            state = states[cpu][position]
            states[cpu][position] = IdleState(
                state.cpu,
                state.index,
                state.name,
                state.label,
                state.desc,
                state.exit_latency_seconds,
                state.target_residency_seconds,
                disabled,
            )
        return evaluate_cstates(states, limit_seconds, driver)

    def _plan_deep_states(
        self,
        key: tuple[tuple[CpuTopology, ...], str | None, float],
        limit_seconds: float,
        on_error: OnError,
    ) -> _DeepStatesPlan:
        errors: list[ReadError] = []
        states = read_idle_states(self._roots, self._topology, errors)
        for exc in errors:
            on_error(f"{DEEP_CSTATES}:{exc.path}", exc)
        deep = []
        for cpu, cpu_states in states.items():
            for position, state in enumerate(cpu_states):
                latency = state.exit_latency_seconds
                if latency is not None and latency > limit_seconds:
                    path = self._topology.cpu_path(cpu, "cpuidle", f"state{state.index}", "disable")
                    deep.append((cpu, position, path))
        return _DeepStatesPlan(key, states, deep)

    def governors(self, on_error: OnError) -> dict[str, int] | None:
        """{scaling governor: online CPUs}; None when no CPU has a cpufreq policy."""
        cpus = self._topology.online()
        plan = self._policy_plan
        if plan is None or plan.cpus is not cpus:
            plan = self._policy_plan = self._plan_policies(cpus)
        if not plan.policies:
            return None
        counts: dict[str, int] = {}
        for path, members in plan.policies:
            try:
                governor = read_shared_text(path)  # the cpufreq collector's read, if it ran
            except ReadError as exc:
                on_error(f"{GOVERNOR}:{path}", exc)
                continue
            if governor is None:  # policy torn down: re-resolve next time
                self._policy_plan = None
                continue
            counts[governor] = counts.get(governor, 0) + members
        return counts

    def _plan_policies(self, cpus: tuple[CpuTopology, ...]) -> _PolicyPlan:
        members: dict[str, int] = {}
        for cpu in cpus:
            policy = resolve_policy(self._topology.cpu_path(cpu.cpu, "cpufreq"))
            if policy is not None and os.path.isdir(policy):
                members[policy] = members.get(policy, 0) + 1
        return _PolicyPlan(cpus, [(f"{p}/scaling_governor", n) for p, n in members.items()])

    def turbo(self) -> bool | None:
        no_turbo = read_shared_int(self._no_turbo)
        if no_turbo is not None:
            return not no_turbo
        boost = read_shared_int(self._boost)
        return None if boost is None else bool(boost)

    def thp_mode(self) -> str | None:
        text = read_text(self._thp)
        if text is None:
            return None
        try:
            return selected_mode(text)
        except ValueError as exc:
            raise MalformedValue(self._thp, str(exc)) from None


def tuning_families(results: Sequence[TuningResult]) -> Iterator[Metric]:
    compliant, info = COMPLIANT.family(), INFO.family()
    for result in results:
        if result.compliant is None:
            continue
        add(compliant, [result.setting], 1 if result.compliant else 0)
        add(info, [result.setting, result.expected, result.actual], 1)
    yield compliant
    yield info


@register
class TuningCollector(Collector):
    name = "tuning"
    help = "Kernel tuning compared with the profile's tuning section (drift)."

    def __init__(self, ctx: CollectorContext) -> None:
        super().__init__(ctx)
        # Benchmark-only switch (no flag): work out deep states and policies every scrape.
        self._reader = TuningReader(ctx.roots, cache_plans=bool(ctx.option("cache_static", True)))
        self._lock = threading.Lock()  # concurrent scrapes share the reader's plans

    def collect(self) -> list[Metric]:
        with self._lock:
            results = self._reader.evaluate(self.ctx.profile().tuning, self.skip)
        return list(tuning_families(results))
