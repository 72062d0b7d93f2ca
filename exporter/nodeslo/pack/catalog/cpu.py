"""CPUs: thermal throttling, temperatures, C-states, governor, turbo."""

from __future__ import annotations

from collections.abc import Callable

from nodeslo.pack import promql
from nodeslo.pack.catalog.base import (
    CRITICAL,
    ON,
    WARNING,
    HealthAlert,
    Recording,
    apart,
    slow,
    template_filter,
)
from nodeslo.profile import CPU_VENDORS, Profile, TimeSLI
from nodeslo.units import human_seconds

# hwmon drivers of CPU package and core sensors (Intel, AMD, out-of-tree AMD, ARM SoCs).
CPU_CHIPS = "coretemp|k10temp|zenpower|cpu_thermal"
# The drivers of each vendor the profile gives temperature limits for.
VENDOR_CHIPS = {"intel": "coretemp", "amd": "k10temp|zenpower"}
assert set(VENDOR_CHIPS) == set(CPU_VENDORS)

_SENSOR = "chip=%q, sensor=%q"


def _selector(metric: str, *matchers: str) -> str:
    return promql.selector(metric, (), *matchers)


def _vendor_limits(profile: Profile, kind: str) -> tuple[tuple[str, float], ...]:
    """health.cpu.temperature_<kind> ("max" or "crit"): (vendor, °C), sorted by vendor."""
    limits: tuple[tuple[str, float], ...] = getattr(
        profile.health.cpu, f"temperature_{kind}_celsius"
    )
    return limits


def temperature_limit(profile: Profile, kind: str, selector: Callable[..., str] = _selector) -> str:
    """Each CPU sensor's `kind` ("max" or "crit") limit: its own where its driver reports
    one, else the profile's for its vendor (health.cpu.temperature_<kind>). Shared with
    the dashboards (their `selector` adds the dashboard variables), so the line drawn
    is the limit the alert fires at."""
    own = selector(f"nodeslo_hwmon_temperature_{kind}_celsius", f'chip_name=~"{CPU_CHIPS}"')
    terms = [f"{own} > 0"]
    for vendor, celsius in _vendor_limits(profile, kind):
        sensors = selector(
            "nodeslo_hwmon_temperature_celsius", f'chip_name=~"{VENDOR_CHIPS[vendor]}"'
        )
        # The limit as the sensor's value clamped to it: one operation per sensor where
        # `0 * x + limit` made two (each sensor of each host, every minute).
        limit = promql.number(celsius)
        terms.append(f"clamp({sensors}, {limit}, {limit})")
    return "\nor\n".join(terms)


def _limit_text(profile: Profile, kind: str) -> str:
    """A Go template printing a sensor's `kind` limit in °C: its own, else the profile's."""
    sel, args = template_filter(profile.alerting.instance_labels)
    own = (
        f'{{{{ with printf "nodeslo_hwmon_temperature_{kind}_celsius{{{sel}{_SENSOR}}} > 0" '
        f"{args}$labels.chip $labels.sensor | query }}}}{{{{ . | first | value | humanize }}}}°C"
    )
    fallback = "".join(
        f'{{{{ {"else if" if i else "if"} match "^(?:{VENDOR_CHIPS[vendor]})$" '
        f"$labels.chip_name }}}}{promql.number(celsius)}°C (the profile's {vendor} limit: "
        "the sensor reports none)"
        for i, (vendor, celsius) in enumerate(_vendor_limits(profile, kind))
    )
    if fallback:
        fallback = "{{ else }}" + fallback + "{{ end }}"
    return own + fallback + "{{ end }}"


def _limits_text(profile: Profile, kind: str) -> str:
    """`amd 85 °C, intel 90 °C` for docs/alerts.md and the runbooks."""
    limits = _vendor_limits(profile, kind)
    return ", ".join(f"{vendor} {promql.number(c)} °C" for vendor, c in limits) or "none"


# The bad-time counters of the CPU throttling SLI: thermal_throttle's, and the frequency
# signal the exporter computes where those do not exist (collectors/thermal.py).
THROTTLE_METRICS = (
    "nodeslo_cpu_throttle_seconds_total",
    "nodeslo_cpu_below_target_frequency_seconds_total",
)


def _measures_throttling(profile: Profile) -> bool:
    """The profile has an SLO on CPU throttling, which a host without a signal lacks."""
    return any(
        isinstance(s.sli, TimeSLI)
        and {s.sli.bad_seconds, s.sli.fallback_bad_seconds} & set(THROTTLE_METRICS)
        for s in profile.slos
    )


def parameters(profile: Profile) -> dict[str, str]:
    h = profile.health.cpu
    t = profile.tuning
    n, d = promql.number, promql.duration
    return {
        "cpu_chips": CPU_CHIPS,
        "cpu_temperature_max": temperature_limit(profile, "max"),
        "cpu_temperature_crit": temperature_limit(profile, "crit"),
        "cpu_temperature_max_text": _limit_text(profile, "max"),
        "cpu_temperature_crit_text": _limit_text(profile, "crit"),
        "cpu_temperature_max_defaults": _limits_text(profile, "max"),
        "cpu_temperature_crit_defaults": _limits_text(profile, "crit"),
        "throttling_window": d(h.throttling_window_seconds),
        "cstate_max_latency": n(t.max_cstate_exit_latency_seconds or 0),
        "cstate_max_latency_text": human_seconds(t.max_cstate_exit_latency_seconds or 0),
        "governor": promql.quote(t.governor or ""),
        "governor_text": t.governor or "",
    }


def durations(profile: Profile) -> dict[str, float]:
    return {"cpu_temperature_for": profile.health.cpu.temperature_for_seconds}


RECORDINGS: tuple[Recording, ...] = ()

# CPUTemperatureHigh and CPUTemperatureCritical each read every CPU sensor three times
# (its temperature, its limit, the profile's limit for sensors without one): 130 sensors
# per host of the seed spec. Each gets a group of its own (base.apart).
APART = ("temperature-high", "temperature-critical")
HIGH_GROUP, CRITICAL_GROUP = (apart("cpu", part) for part in APART)

ALERTS = (
    HealthAlert(
        name="CPUThermalThrottling",
        group="cpu",
        severity=WARNING,
        expr="sum by (${by}, package) ("
        + promql.increase_seen("nodeslo_cpu_throttle_events_total", "${throttling_window}")
        + ") > 0",
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
        group=HIGH_GROUP,
        severity=WARNING,
        expr="""
nodeslo_hwmon_temperature_celsius{chip_name=~"${cpu_chips}"}
>= (
${cpu_temperature_max}
)
""",
        for_="cpu_temperature_for",
        summary="CPU sensor {{ $labels.label }} " + ON + " runs hot",
        description="{{ $labels.chip_name }} {{ $labels.label }} reads {{ $value }}°C, at or "
        "above its max of ${cpu_temperature_max_text}. Throttling follows.",
        threshold="sensor temperature ≥ its max (hwmon tempN_max), else the profile's "
        "(${cpu_temperature_max_defaults})",
        source=("nodeslo_hwmon_temperature_celsius", "nodeslo_hwmon_temperature_max_celsius"),
        held_through_gaps=True,
    ),
    HealthAlert(
        name="CPUTemperatureCritical",
        group=CRITICAL_GROUP,
        severity=CRITICAL,
        expr="""
nodeslo_hwmon_temperature_celsius{chip_name=~"${cpu_chips}"}
>= (
${cpu_temperature_crit}
)
""",
        for_=60,
        summary="CPU sensor {{ $labels.label }} " + ON + " is critically hot",
        description="{{ $labels.chip_name }} {{ $labels.label }} reads {{ $value }}°C, at or "
        "above its critical limit of ${cpu_temperature_crit_text}. The platform will shut "
        "down to protect the CPU.",
        threshold="sensor temperature ≥ its crit (hwmon tempN_crit), else the profile's "
        "(${cpu_temperature_crit_defaults})",
        source=("nodeslo_hwmon_temperature_celsius", "nodeslo_hwmon_temperature_crit_celsius"),
        held_through_gaps=True,
    ),
    HealthAlert(
        name="CPUTemperatureUnmonitored",
        # An hour's absence, judged every 5 minutes: it reads every CPU sensor.
        group=slow("cpu"),
        severity=WARNING,
        expr="""
${up} == 1
unless on (${by})
nodeslo_hwmon_temperature_celsius{chip_name=~"${cpu_chips}"}
""",
        for_=3600,
        summary="No CPU temperature is read " + ON,
        description="The exporter on {{ $labels.instance }} is up but has exported no "
        "temperature of a CPU sensor (${cpu_chips}) for 1h: the driver is not loaded "
        "(k10temp on AMD, coretemp on Intel), every sensor fails to read, or the thermal "
        "collector is off. CPUTemperatureHigh and CPUTemperatureCritical cannot fire here.",
        threshold="exporter up, no CPU sensor temperature, for 1h",
        source=("up", "nodeslo_hwmon_temperature_celsius"),
        held_while_unscraped=True,
    ),
    HealthAlert(
        name="CPUThrottleSignalMissing",
        group="cpu",
        severity=WARNING,
        expr="""
${up} == 1
unless on (${by})
nodeslo_cpu_throttle_signal_info{source!="none"}
""",
        for_=900,
        summary="No CPU throttling signal " + ON,
        description="{{ $labels.instance }} has neither thermal_throttle counters (AMD CPUs "
        "and VMs have none) nor the frequency signal that replaces them (no cpufreq "
        "driver, or no capacity.all_core_frequency_hertz in the profile), or its thermal "
        "collector is off: nodeslo_cpu_throttle_signal_info is not source thermal_throttle "
        "or frequency. The cpu-unthrottled SLO has no data on this host: throttling here "
        "can neither burn its budget nor page.",
        threshold="exporter up, throttle signal none or not exported, for 15m",
        source=("up", "nodeslo_cpu_throttle_signal_info"),
        when=_measures_throttling,
        held_while_unscraped=True,
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
        held_through_gaps=True,
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
        held_through_gaps=True,
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
        held_through_gaps=True,
    ),
)
