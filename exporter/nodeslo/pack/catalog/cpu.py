"""CPUs: thermal throttling, temperatures, C-states, governor, turbo."""

from __future__ import annotations

from nodeslo.pack import promql
from nodeslo.pack.catalog.base import (
    CRITICAL,
    ON,
    WARNING,
    HealthAlert,
    Recording,
    lookup,
)
from nodeslo.profile import Profile
from nodeslo.units import human_seconds

# hwmon drivers of CPU package and core sensors (Intel, AMD, out-of-tree AMD, ARM SoCs).
CPU_CHIPS = "coretemp|k10temp|zenpower|cpu_thermal"

_SENSOR = "chip=%q, sensor=%q"


def parameters(profile: Profile) -> dict[str, str]:
    h = profile.health.cpu
    t = profile.tuning
    n, d = promql.number, promql.duration
    return {
        "cpu_chips": CPU_CHIPS,
        "throttling_window": d(h.throttling_window_seconds),
        "cstate_max_latency": n(t.max_cstate_exit_latency_seconds or 0),
        "cstate_max_latency_text": human_seconds(t.max_cstate_exit_latency_seconds or 0),
        "governor": promql.quote(t.governor or ""),
        "governor_text": t.governor or "",
    }


def durations(profile: Profile) -> dict[str, float]:
    return {"cpu_temperature_for": profile.health.cpu.temperature_for_seconds}


RECORDINGS: tuple[Recording, ...] = ()

ALERTS = (
    HealthAlert(
        name="CPUThermalThrottling",
        group="cpu",
        severity=WARNING,
        expr="sum by (${by}, package) "
        "(increase(nodeslo_cpu_throttle_events_total[${throttling_window}])) > 0",
        for_=0,
        summary="CPU package {{ $labels.package }} " + ON + " is thermally throttled",
        description='{{ $value | printf "%.0f" }} thermal throttle events on package '
        "{{ $labels.package }} in the last ${throttling_window} (threshold: any). "
        "A throttled core runs slower than the scheduler expects.",
        threshold="any throttle event over ${throttling_window}",
        source=("nodeslo_cpu_throttle_events_total",),
    ),
    HealthAlert(
        name="CPUTemperatureHigh",
        group="cpu",
        severity=WARNING,
        expr="""
nodeslo_hwmon_temperature_celsius{chip_name=~"${cpu_chips}"}
>= (nodeslo_hwmon_temperature_max_celsius > 0)
""",
        for_="cpu_temperature_for",
        summary="CPU sensor {{ $labels.label }} " + ON + " runs hot",
        description="{{ $labels.chip_name }} {{ $labels.label }} reads {{ $value }}°C, at or "
        "above its max of "
        + lookup(
            "nodeslo_hwmon_temperature_max_celsius",
            _SENSOR,
            "$labels.chip $labels.sensor ",
            "humanize",
        )
        + "°C. Throttling follows.",
        threshold="sensor temperature ≥ its max (hwmon tempN_max)",
        source=("nodeslo_hwmon_temperature_celsius", "nodeslo_hwmon_temperature_max_celsius"),
    ),
    HealthAlert(
        name="CPUTemperatureCritical",
        group="cpu",
        severity=CRITICAL,
        expr="""
nodeslo_hwmon_temperature_celsius{chip_name=~"${cpu_chips}"}
>= (nodeslo_hwmon_temperature_crit_celsius > 0)
""",
        for_=60,
        summary="CPU sensor {{ $labels.label }} " + ON + " is critically hot",
        description="{{ $labels.chip_name }} {{ $labels.label }} reads {{ $value }}°C, at or "
        "above its critical limit of "
        + lookup(
            "nodeslo_hwmon_temperature_crit_celsius",
            _SENSOR,
            "$labels.chip $labels.sensor ",
            "humanize",
        )
        + "°C. The platform will shut down to protect the CPU.",
        threshold="sensor temperature ≥ its crit (hwmon tempN_crit)",
        source=("nodeslo_hwmon_temperature_celsius", "nodeslo_hwmon_temperature_crit_celsius"),
    ),
    HealthAlert(
        name="DeepCStatesEnabled",
        group="cpu",
        severity=WARNING,
        expr="""
nodeslo_cpuidle_enabled_cpus > 0
and
nodeslo_cpuidle_exit_latency_seconds > ${cstate_max_latency}
""",
        for_=900,
        summary="Deep C-state {{ $labels.state }} is enabled " + ON,
        description="C-state {{ $labels.state }} is enabled on {{ $value }} CPUs; its exit "
        "latency exceeds the profile's ${cstate_max_latency_text} (threshold: disabled on "
        "every CPU). Waking from it adds its exit latency to every task wake-up.",
        threshold="a C-state with exit latency > ${cstate_max_latency_text} enabled on any CPU",
        source=("nodeslo_cpuidle_enabled_cpus", "nodeslo_cpuidle_exit_latency_seconds"),
        when=lambda p: p.tuning.max_cstate_exit_latency_seconds is not None,
    ),
    HealthAlert(
        name="CPUGovernorNotPerformance",
        group="cpu",
        severity=WARNING,
        expr="nodeslo_cpu_governor_cpus{governor!=${governor}} > 0",
        for_=900,
        summary="{{ $value }} CPUs " + ON + " run the {{ $labels.governor }} governor",
        description="{{ $value }} CPUs run the cpufreq governor {{ $labels.governor }}; the "
        "profile expects ${governor_text} on every CPU. Other governors lower the clock "
        "between bursts and ramp it up too late.",
        threshold="any CPU with a governor other than ${governor_text}",
        source=("nodeslo_cpu_governor_cpus",),
        when=lambda p: p.tuning.governor is not None,
    ),
    HealthAlert(
        name="CPUTurboDisabled",
        group="cpu",
        severity=WARNING,
        expr="nodeslo_cpu_turbo_enabled == 0",
        for_=900,
        summary="Turbo boost is disabled " + ON,
        description="Turbo boost / Precision Boost is off (nodeslo_cpu_turbo_enabled = "
        "{{ $value }}, the profile expects 1): the sustained all-core frequency target "
        "cannot be reached.",
        threshold="turbo off while the profile expects it on",
        source=("nodeslo_cpu_turbo_enabled",),
        when=lambda p: p.tuning.turbo is True,
    ),
)
