"""The health alerts, as data: name, severity, PromQL template, `for`, texts, sources.

This module is what an operator reads to see what pages and why; `rules.py` turns it
into rule groups. Templates use `${name}` placeholders (PromQL and Go templates use
neither `${` nor `}` in that combination) filled from `parameters(profile)`: every
threshold comes from the profile, never from a literal here. Expressions keep every
label of an instance-level series, or aggregate `by (${by})` (the profile's instance
labels, `cluster, instance` by default) so a fleet's `cluster` label is carried
through. Fleet-wide comparisons group by `${fleet_}` (the instance labels without
`instance`).

`for` waits out one bad poll or a transient spike. Alerts on a counter's increase
over a window need no `for`: the window itself holds them up for its length.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from nodeslo.pack import promql
from nodeslo.profile import Profile
from nodeslo.units import human_seconds

CRITICAL = "critical"
WARNING = "warning"

# hwmon drivers of CPU package and core sensors (Intel, AMD, out-of-tree AMD, ARM SoCs).
CPU_CHIPS = "coretemp|k10temp|zenpower|cpu_thermal"
# NVMe critical-warning flags with an alert of their own (spare, temperature).
FLAGS_ALERTED_ELSEWHERE = "spare|temperature"
# `setting` values of nodeslo_tuning_compliant that dedicated alerts already cover.
TUNING_ALERTED_ELSEWHERE = "deep_cstates|governor|turbo"
# Whole NVMe namespaces in /proc/diskstats, and the controller they hang off.
NVME_NAMESPACE = "nvme[0-9]+n[0-9]+"
NVME_CONTROLLER_OF_NAMESPACE = "(nvme[0-9]+)n[0-9]+"


@dataclass(frozen=True)
class Recording:
    group: str
    record: str
    expr: str
    source: tuple[str, ...]


@dataclass(frozen=True)
class HealthAlert:
    name: str
    group: str
    severity: str
    expr: str
    # Seconds, or the name of a duration in `durations(profile)`; 0 means no `for`.
    for_: float | str
    summary: str
    description: str
    threshold: str  # for the README's table and the runbook
    source: tuple[str, ...]
    labels: tuple[tuple[str, str], ...] = ()
    when: Callable[[Profile], bool] | None = None


def durations(profile: Profile) -> dict[str, float]:
    h = profile.health
    return {
        "nvme_temperature_for": h.nvme.temperature_for_seconds,
        "cpu_temperature_for": h.cpu.temperature_for_seconds,
        "firmware_skew_for": h.firmware.skew_for_seconds,
    }


def _percent(ratio: float) -> str:
    return f"{ratio * 100:g}%"


def _template_filter(labels: tuple[str, ...]) -> tuple[str, str]:
    """(`a=%q, b=%q, `, `$labels.a $labels.b `) to rebuild a selector inside a template."""
    return (
        "".join(f"{name}=%q, " for name in labels),
        "".join(f"$labels.{name} " for name in labels),
    )


def parameters(profile: Profile) -> dict[str, str]:
    """Every `${name}` the templates may use, rendered for PromQL or for text."""
    h = profile.health
    t = profile.tuning
    instance = profile.alerting.instance_labels
    fleet = tuple(name for name in instance if name != "instance")
    instance_sel, instance_args = _template_filter(instance)
    fleet_sel, fleet_args = _template_filter(fleet)
    host_group_sel, host_group_args = _template_filter(h.firmware.host_group_by)
    n, d = promql.number, promql.duration
    return {
        "by": promql.by(instance),
        "fleet_": "".join(f"{name}, " for name in fleet),
        "up": f"up{{{profile.alerting.exporter_selector}}}",
        "instance_sel_": instance_sel,
        "instance_args_": instance_args,
        "fleet_sel_": fleet_sel,
        "fleet_args_": fleet_args,
        "cpu_chips": CPU_CHIPS,
        "flags_elsewhere": FLAGS_ALERTED_ELSEWHERE,
        "tuning_elsewhere": TUNING_ALERTED_ELSEWHERE,
        "nvme_namespace": NVME_NAMESPACE,
        "nvme_controller_of_namespace": NVME_CONTROLLER_OF_NAMESPACE,
        # NVMe
        "wear_warning": n(h.nvme.wear_warning_ratio),
        "wear_warning_text": _percent(h.nvme.wear_warning_ratio),
        "wearout_lookback": d(h.nvme.wearout_lookback_seconds),
        "wearout_horizon": d(h.nvme.wearout_horizon_seconds),
        "wearout_horizon_seconds": n(h.nvme.wearout_horizon_seconds),
        # Whole hours: the hourly recording has one point per hour.
        "wearout_min_history": d(max(3600, h.nvme.wearout_lookback_seconds // 7200 * 3600)),
        "waf_max": n(h.nvme.write_amplification_max),
        "waf_window": d(h.nvme.write_amplification_window_seconds),
        "waf_min_written": n(h.nvme.write_amplification_min_written_bytes),
        "waf_min_written_text": _bytes_text(h.nvme.write_amplification_min_written_bytes),
        "media_errors_window": d(h.nvme.media_errors_window_seconds),
        "outlier_factor": n(h.nvme.latency_outlier_factor),
        "outlier_window": d(h.nvme.latency_outlier_window_seconds),
        "outlier_min_iops": n(h.nvme.latency_outlier_min_iops),
        "outlier_min_ios": n(
            h.nvme.latency_outlier_min_iops * h.nvme.latency_outlier_window_seconds
        ),
        "smart_stale_after": n(h.nvme.smart_stale_after_seconds),
        "smart_stale_after_text": d(h.nvme.smart_stale_after_seconds),
        # CPU
        "throttling_window": d(h.cpu.throttling_window_seconds),
        "cstate_max_latency": n(t.max_cstate_exit_latency_seconds or 0),
        "cstate_max_latency_text": human_seconds(t.max_cstate_exit_latency_seconds or 0),
        "governor": promql.quote(t.governor or ""),
        "governor_text": t.governor or "",
        # Memory
        "ue_window": d(h.memory.uncorrectable_errors_window_seconds),
        "ce_max": n(h.memory.correctable_errors_max),
        "ce_window": d(h.memory.correctable_errors_window_seconds),
        "numa_max": n(h.memory.numa_remote_ratio_max),
        "numa_max_text": _percent(h.memory.numa_remote_ratio_max),
        "numa_window": d(h.memory.numa_window_seconds),
        "numa_min_rate": n(h.memory.numa_min_pages_per_second),
        # Power, firmware
        "power_meter": promql.quote(h.power.meter_chip_name),
        "power_max": n(h.power.redundant_capacity_watts),
        "psu_count": str(h.power.psu_count),
        "psu_capacity": n(h.power.psu_capacity_watts),
        "host_components": promql.quote("|".join(h.firmware.host_components)),
        "host_components_text": ", ".join(h.firmware.host_components),
        "host_group_": "".join(f"{name}, " for name in h.firmware.host_group_by),
        "host_group_sel_": host_group_sel,
        "host_group_args_": host_group_args,
    }


def _bytes_text(size: int) -> str:
    for unit, scale in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} bytes"


_PLACEHOLDER = re.compile(r"\$\{([a-z_]+)\}")


def fill(template: str, params: dict[str, str]) -> str:
    """Replace `${name}`; an unknown name is a bug in this module, not user input."""

    def value(match: re.Match[str]) -> str:
        return params[match.group(1)]

    return _PLACEHOLDER.sub(value, template)


def _lookup(metric: str, extra: str, args: str, pipe: str) -> str:
    """A Go-template snippet that prints another series of the same instance.

    `extra` holds that series' own `name=%q` matchers, `args` the `$labels.name `
    values they take. Prints nothing when the series is absent, not a template error.
    """
    return (
        f'{{{{ with printf "{metric}{{${{instance_sel_}}{extra}}}" '
        f"${{instance_args_}}{args}| query }}}}{{{{ . | first | value | {pipe} }}}}{{{{ end }}}}"
    )


_CONTROLLER = "controller=%q"
_SENSOR = "chip=%q, sensor=%q"

RECORDINGS = (
    Recording(
        group="nvme",
        record="instance_controller:nodeslo_nvme_write_amplification:ratio${waf_window}",
        # NAND bytes written per host byte written, once the host wrote enough for the
        # ratio to mean something. SMART counters are the drive's lifetime totals and
        # never reset while it is in place, so the difference to a window ago is the
        # exact increase at the cost of two lookups (a range would read every scrape of
        # the day); a replaced drive gives a negative difference, which is dropped.
        expr="""
(
  nodeslo_nvme_media_written_bytes_total
  - nodeslo_nvme_media_written_bytes_total offset ${waf_window}
)
/
(
  (
    nodeslo_nvme_data_written_bytes_total
    - nodeslo_nvme_data_written_bytes_total offset ${waf_window}
  ) > ${waf_min_written}
)
""",
        source=("nodeslo_nvme_media_written_bytes_total", "nodeslo_nvme_data_written_bytes_total"),
    ),
    Recording(
        group="nvme",
        record="instance_device:nodeslo_disk_io_latency_seconds:mean${outlier_window}",
        # Average time per I/O of each NVMe namespace under load over the window, with
        # its drive's model (nvme0n1 belongs to controller nvme0) so it can be compared
        # with its peers. Differences to a window ago, not ranges: a reboot resets the
        # counters, the difference turns negative and fails the load guard, so a host
        # is judged again a window after it rebooted.
        expr="""
label_replace(
  (
    (
      nodeslo_disk_read_time_seconds_total{device=~"${nvme_namespace}"}
      - nodeslo_disk_read_time_seconds_total{device=~"${nvme_namespace}"} offset ${outlier_window}
    )
    + (
      nodeslo_disk_write_time_seconds_total{device=~"${nvme_namespace}"}
      - nodeslo_disk_write_time_seconds_total{device=~"${nvme_namespace}"} offset ${outlier_window}
    )
  )
  /
  (
    (
      (
        nodeslo_disk_reads_completed_total{device=~"${nvme_namespace}"}
        - nodeslo_disk_reads_completed_total{device=~"${nvme_namespace}"} offset ${outlier_window}
      )
      + (
        nodeslo_disk_writes_completed_total{device=~"${nvme_namespace}"}
        - nodeslo_disk_writes_completed_total{device=~"${nvme_namespace}"} offset ${outlier_window}
      )
    ) > ${outlier_min_ios}
  ),
  "controller", "$1", "device", "${nvme_controller_of_namespace}"
)
* on (${by}, controller) group_left (model) nodeslo_nvme_info
""",
        source=(
            "nodeslo_disk_read_time_seconds_total",
            "nodeslo_disk_write_time_seconds_total",
            "nodeslo_disk_reads_completed_total",
            "nodeslo_disk_writes_completed_total",
            "nodeslo_nvme_info",
        ),
    ),
    Recording(
        group="hourly",
        record="instance_controller:nodeslo_nvme_percentage_used_ratio:hourly",
        # Wear moves by whole percents over weeks: one point an hour is plenty for the
        # 7-day projection and costs 168 samples instead of every scrape of a week.
        expr="nodeslo_nvme_percentage_used_ratio",
        source=("nodeslo_nvme_percentage_used_ratio",),
    ),
)

_ON = "on {{ $labels.instance }}"

ALERTS = (
    # --- NVMe ----------------------------------------------------------------------
    HealthAlert(
        name="NVMeCriticalWarning",
        group="nvme",
        severity=CRITICAL,
        expr='nodeslo_nvme_critical_warning_flag{flag!~"${flags_elsewhere}"} == 1',
        for_=60,
        summary="NVMe {{ $labels.controller }} " + _ON + " reports critical warning "
        "{{ $labels.flag }}",
        description="The drive's SMART log sets the critical warning flag {{ $labels.flag }} "
        "(reliability: NVM subsystem reliability degraded; read_only: media forced "
        "read-only; volatile_backup: volatile memory backup failed; pmr_read_only: "
        "persistent memory region read-only). Threshold: any of these flags set. "
        "The drive itself says it is failing: plan its replacement now.",
        threshold="reliability, read_only, volatile_backup or pmr_read_only flag set",
        source=("nodeslo_nvme_critical_warning_flag",),
    ),
    HealthAlert(
        name="NVMeSpareBelowThreshold",
        group="nvme",
        severity=CRITICAL,
        expr="nodeslo_nvme_available_spare_ratio < nodeslo_nvme_available_spare_threshold_ratio",
        for_=60,
        summary="NVMe {{ $labels.controller }} " + _ON + " has used up its spare blocks",
        description="Available spare is {{ $value | humanizePercentage }}, below the "
        "threshold of "
        + _lookup(
            "nodeslo_nvme_available_spare_threshold_ratio",
            _CONTROLLER,
            "$labels.controller ",
            "humanizePercentage",
        )
        + " the drive's firmware sets. The drive can no longer remap failing blocks.",
        threshold="available spare below the drive's own threshold",
        source=(
            "nodeslo_nvme_available_spare_ratio",
            "nodeslo_nvme_available_spare_threshold_ratio",
        ),
    ),
    HealthAlert(
        name="NVMeControllerNotLive",
        group="nvme",
        severity=CRITICAL,
        expr="nodeslo_nvme_state_live == 0",
        for_=120,
        summary="NVMe {{ $labels.controller }} " + _ON + " is not live",
        description="The kernel reports controller {{ $labels.controller }} in a state other "
        "than live (resetting, connecting, deleting or dead) for 2m "
        "(nodeslo_nvme_state_live = {{ $value }}, threshold: 0). I/O to its namespaces "
        "stalls or fails.",
        threshold="controller state not `live` for 2m",
        source=("nodeslo_nvme_state_live",),
    ),
    HealthAlert(
        name="NVMeWearHigh",
        group="nvme",
        severity=WARNING,
        expr="nodeslo_nvme_percentage_used_ratio >= ${wear_warning}",
        for_=900,
        summary="NVMe {{ $labels.controller }} " + _ON + " has used "
        "{{ $value | humanizePercentage }} of its rated endurance",
        description="Percentage used is {{ $value | humanizePercentage }}, at or above the "
        "profile's ${wear_warning_text}. Schedule the replacement for the next maintenance "
        "window.",
        threshold="percentage used ≥ ${wear_warning_text}",
        source=("nodeslo_nvme_percentage_used_ratio",),
    ),
    HealthAlert(
        name="NVMeWearOutPredicted",
        group="nvme",
        severity=WARNING,
        # From the hourly recording, once its history reaches back half the lookback (a
        # single lookup, not a count of every point): a fresh series is not extrapolated
        # from a single step.
        expr="""
predict_linear(
  instance_controller:nodeslo_nvme_percentage_used_ratio:hourly[${wearout_lookback}],
  ${wearout_horizon_seconds}
) >= 1
and
last_over_time(
  instance_controller:nodeslo_nvme_percentage_used_ratio:hourly[1h] offset ${wearout_min_history}
)
""",
        for_=3600,
        summary="NVMe {{ $labels.controller }} " + _ON + " will wear out within ${wearout_horizon}",
        description="At the wear rate of the last ${wearout_lookback} the drive reaches "
        "{{ $value | humanizePercentage }} of its rated endurance in ${wearout_horizon} "
        "(threshold: 100% within ${wearout_horizon}). Replace it before then.",
        threshold="linear projection over ${wearout_lookback} reaches 100% within "
        "${wearout_horizon}",
        source=("nodeslo_nvme_percentage_used_ratio",),
    ),
    HealthAlert(
        name="NVMeMediaErrorsIncreasing",
        group="nvme",
        severity=WARNING,
        expr="increase(nodeslo_nvme_media_errors_total[${media_errors_window}]) > 0",
        for_=0,
        summary="NVMe {{ $labels.controller }} " + _ON + " reports new media errors",
        description='{{ $value | printf "%.0f" }} new media and data integrity errors in the '
        "last ${media_errors_window} (threshold: any). The drive returned data it could "
        "not correct.",
        threshold="any increase over ${media_errors_window}",
        source=("nodeslo_nvme_media_errors_total",),
    ),
    HealthAlert(
        name="NVMeWriteAmplificationHigh",
        group="nvme",
        severity=WARNING,
        expr="instance_controller:nodeslo_nvme_write_amplification:ratio${waf_window} > ${waf_max}",
        for_=3600,
        summary="NVMe {{ $labels.controller }} " + _ON + " amplifies writes "
        '{{ $value | printf "%.2f" }}x',
        description='Over the last ${waf_window} the NAND wrote {{ $value | printf "%.2f" }} '
        "bytes per byte the host wrote (threshold ${waf_max}; judged once the host wrote "
        "more than ${waf_min_written_text}). High write amplification wears the drive "
        "out early and makes its latency erratic.",
        threshold="media bytes / host bytes written > ${waf_max} over ${waf_window}",
        source=("nodeslo_nvme_media_written_bytes_total", "nodeslo_nvme_data_written_bytes_total"),
    ),
    HealthAlert(
        name="NVMeTemperatureHigh",
        group="nvme",
        severity=WARNING,
        expr="""
nodeslo_nvme_temperature_celsius{sensor="composite"}
>= on (${by}, controller) group_left ()
(nodeslo_nvme_temperature_threshold_celsius{level="warning"} > 0)
""",
        for_="nvme_temperature_for",
        summary="NVMe {{ $labels.controller }} " + _ON + " runs hot",
        description="Composite temperature is {{ $value }}°C, at or above the drive's warning "
        "threshold (WCTEMP) of "
        + _lookup(
            "nodeslo_nvme_temperature_threshold_celsius",
            _CONTROLLER + ", level=%q",
            '$labels.controller "warning" ',
            "humanize",
        )
        + "°C. The drive throttles itself above it.",
        threshold="composite temperature ≥ WCTEMP",
        source=("nodeslo_nvme_temperature_celsius", "nodeslo_nvme_temperature_threshold_celsius"),
    ),
    HealthAlert(
        name="NVMeTemperatureCritical",
        group="nvme",
        severity=CRITICAL,
        expr="""
nodeslo_nvme_temperature_celsius{sensor="composite"}
>= on (${by}, controller) group_left ()
(nodeslo_nvme_temperature_threshold_celsius{level="critical"} > 0)
""",
        for_=60,
        summary="NVMe {{ $labels.controller }} " + _ON + " is critically hot",
        description="Composite temperature is {{ $value }}°C, at or above the drive's "
        "critical threshold (CCTEMP) of "
        + _lookup(
            "nodeslo_nvme_temperature_threshold_celsius",
            _CONTROLLER + ", level=%q",
            '$labels.controller "critical" ',
            "humanize",
        )
        + "°C. The drive may shut down to protect itself.",
        threshold="composite temperature ≥ CCTEMP",
        source=("nodeslo_nvme_temperature_celsius", "nodeslo_nvme_temperature_threshold_celsius"),
    ),
    HealthAlert(
        name="NVMeSmartStale",
        group="nvme",
        severity=WARNING,
        expr="time() - nodeslo_nvme_smart_last_success_timestamp_seconds > ${smart_stale_after}",
        for_=300,
        summary="SMART data of NVMe {{ $labels.controller }} " + _ON + " is stale",
        description="The last successful SMART read was {{ $value | humanizeDuration }} ago "
        "(threshold ${smart_stale_after_text}): the drive's wear, spare and critical "
        "warnings are not being watched.",
        threshold="last successful SMART read older than ${smart_stale_after_text}",
        source=("nodeslo_nvme_smart_last_success_timestamp_seconds",),
    ),
    HealthAlert(
        name="NVMeLatencyOutlier",
        group="nvme",
        severity=WARNING,
        expr="""
instance_device:nodeslo_disk_io_latency_seconds:mean${outlier_window}
> on (${fleet_}model) group_left ()
(
  ${outlier_factor}
  * quantile by (${fleet_}model) (
    0.5, instance_device:nodeslo_disk_io_latency_seconds:mean${outlier_window}
  )
)
""",
        for_=3600,
        summary="NVMe {{ $labels.device }} " + _ON + " is slower than its peers",
        description="Average I/O latency over ${outlier_window} is "
        "{{ $value | humanizeDuration }}, more than ${outlier_factor} times the median of "
        "{{ $labels.model }} drives under load (≥ ${outlier_min_iops} IOPS): "
        '{{ with printf "quantile(0.5, instance_device:nodeslo_disk_io_latency_seconds:'
        'mean${outlier_window}{${fleet_sel_}model=%q})" ${fleet_args_}$labels.model | query }}'
        "{{ . | first | value | humanizeDuration }}{{ end }}. A drive that slows down "
        "under the same load as its peers is failing.",
        threshold="mean latency over ${outlier_window} > ${outlier_factor} x the median of "
        "the same model under load",
        source=(
            "nodeslo_disk_read_time_seconds_total",
            "nodeslo_disk_write_time_seconds_total",
            "nodeslo_disk_reads_completed_total",
            "nodeslo_disk_writes_completed_total",
            "nodeslo_nvme_info",
        ),
    ),
    # --- CPU -----------------------------------------------------------------------
    HealthAlert(
        name="CPUThermalThrottling",
        group="cpu",
        severity=WARNING,
        expr="sum by (${by}, package) "
        "(increase(nodeslo_cpu_throttle_events_total[${throttling_window}])) > 0",
        for_=0,
        summary="CPU package {{ $labels.package }} " + _ON + " is thermally throttled",
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
        summary="CPU sensor {{ $labels.label }} " + _ON + " runs hot",
        description="{{ $labels.chip_name }} {{ $labels.label }} reads {{ $value }}°C, at or "
        "above its max of "
        + _lookup(
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
        summary="CPU sensor {{ $labels.label }} " + _ON + " is critically hot",
        description="{{ $labels.chip_name }} {{ $labels.label }} reads {{ $value }}°C, at or "
        "above its critical limit of "
        + _lookup(
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
        summary="Deep C-state {{ $labels.state }} is enabled " + _ON,
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
        summary="{{ $value }} CPUs " + _ON + " run the {{ $labels.governor }} governor",
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
        summary="Turbo boost is disabled " + _ON,
        description="Turbo boost / Precision Boost is off (nodeslo_cpu_turbo_enabled = "
        "{{ $value }}, the profile expects 1): the sustained all-core frequency target "
        "cannot be reached.",
        threshold="turbo off while the profile expects it on",
        source=("nodeslo_cpu_turbo_enabled",),
        when=lambda p: p.tuning.turbo is True,
    ),
    # --- memory --------------------------------------------------------------------
    HealthAlert(
        name="MemoryUncorrectableErrors",
        group="memory",
        severity=CRITICAL,
        expr="increase(nodeslo_edac_uncorrectable_errors_total[${ue_window}]) > 0",
        for_=0,
        summary="Uncorrectable memory errors on controller {{ $labels.controller }} " + _ON,
        description='{{ $value | printf "%.0f" }} uncorrectable ECC errors on memory '
        "controller {{ $labels.controller }} in the last ${ue_window} (threshold: any). "
        "Data in memory was corrupted; the process that owned it may have been killed.",
        threshold="any increase over ${ue_window}",
        source=("nodeslo_edac_uncorrectable_errors_total",),
    ),
    HealthAlert(
        name="MemoryCorrectableErrorsHigh",
        group="memory",
        severity=WARNING,
        expr="sum by (${by}) "
        "(increase(nodeslo_edac_correctable_errors_total[${ce_window}])) > ${ce_max}",
        for_=900,
        summary="Many correctable memory errors " + _ON,
        description='{{ $value | printf "%.0f" }} correctable ECC errors in the last '
        "${ce_window} (threshold ${ce_max}). A DIMM that corrects this often tends to "
        "fail uncorrectably next.",
        threshold="more than ${ce_max} per ${ce_window} per host",
        source=("nodeslo_edac_correctable_errors_total",),
    ),
    HealthAlert(
        name="ECCReportingAbsent",
        group="memory",
        severity=WARNING,
        expr="nodeslo_edac_memory_controllers == 0",
        for_=3600,
        summary="No ECC error reporting " + _ON,
        description="The kernel exposes no EDAC memory controller (nodeslo_edac_memory_"
        "controllers = {{ $value }}, threshold: at least 1): memory errors on this host "
        "are invisible. ECC is mandatory for this server class.",
        threshold="no EDAC memory controller",
        source=("nodeslo_edac_memory_controllers",),
    ),
    HealthAlert(
        name="NUMARemoteAccessHigh",
        group="memory",
        severity=WARNING,
        expr="""
sum by (${by}) (rate(nodeslo_numa_remote_pages_total[${numa_window}]))
/
(
  (
    sum by (${by}) (rate(nodeslo_numa_local_pages_total[${numa_window}]))
    + sum by (${by}) (rate(nodeslo_numa_remote_pages_total[${numa_window}]))
  ) > ${numa_min_rate}
)
> ${numa_max}
""",
        for_=900,
        summary="{{ $value | humanizePercentage }} of memory allocations " + _ON + " are remote",
        description="{{ $value | humanizePercentage }} of the pages allocated over the last "
        "${numa_window} went to tasks running on another NUMA node (threshold "
        "${numa_max_text}, judged above ${numa_min_rate} pages/s). Remote memory is slower.",
        threshold="remote share of page allocations > ${numa_max_text} over ${numa_window}",
        source=("nodeslo_numa_local_pages_total", "nodeslo_numa_remote_pages_total"),
    ),
    # --- redundancy ----------------------------------------------------------------
    HealthAlert(
        name="RAIDArrayDegraded",
        group="redundancy",
        severity=CRITICAL,
        expr='nodeslo_md_disks_required - ignoring (state) nodeslo_md_disks{state="active"} > 0',
        for_=300,
        summary="RAID array {{ $labels.device }} " + _ON + " is degraded",
        description="md array {{ $labels.device }} misses {{ $value }} of its required "
        "members (threshold: none missing). One more failure may lose data.",
        threshold="active members < required members",
        source=("nodeslo_md_disks", "nodeslo_md_disks_required"),
    ),
    HealthAlert(
        name="ZFSPoolDegraded",
        group="redundancy",
        severity=CRITICAL,
        expr='nodeslo_zfs_pool_state{state!~"(?i)online"} == 1',
        for_=300,
        summary="ZFS pool {{ $labels.pool }} " + _ON + " is {{ $labels.state }}",
        description="ZFS pool {{ $labels.pool }} is in state {{ $labels.state }} "
        "(threshold: anything but ONLINE). Its redundancy is reduced or gone.",
        threshold="pool state other than ONLINE",
        source=("nodeslo_zfs_pool_state",),
    ),
    HealthAlert(
        name="PowerRedundancyLost",
        group="redundancy",
        severity=WARNING,
        expr="sum by (${by}) (nodeslo_hwmon_power_watts{chip_name=${power_meter}}) > ${power_max}",
        for_=900,
        summary="Power draw " + _ON + " exceeds what one PSU fewer can carry",
        description="The system draws {{ $value | humanize }}W, more than the ${power_max}W "
        "its ${psu_count} PSUs of ${psu_capacity}W can supply with one of them failed "
        "(threshold ${power_max}W): if a PSU fails now, the others cannot carry the load.",
        threshold="system input power > (PSUs - 1) x PSU capacity (${power_max} W)",
        source=("nodeslo_hwmon_power_watts",),
        when=lambda p: p.health.power.psu_count >= 2,
    ),
    # --- platform: tuning and firmware ---------------------------------------------
    HealthAlert(
        name="KernelTuningDrift",
        group="platform",
        severity=WARNING,
        expr="""
nodeslo_tuning_info{setting!~"${tuning_elsewhere}"}
and on (${by}, setting)
(nodeslo_tuning_compliant == 0)
""",
        for_=900,
        summary="Kernel setting {{ $labels.setting }} drifted " + _ON,
        description="{{ $labels.setting }} is {{ $labels.actual }}; the profile expects "
        "{{ $labels.expected }}. Something (a package update, a tuned profile, an "
        "operator) changed it.",
        threshold="a setting differs from the profile's `tuning:`",
        source=("nodeslo_tuning_info", "nodeslo_tuning_compliant"),
    ),
    HealthAlert(
        name="FirmwareSkew",
        group="platform",
        severity=WARNING,
        expr="""
count by (${fleet_}model) (
  count by (${fleet_}model, firmware) (nodeslo_nvme_info)
) > 1
""",
        for_="firmware_skew_for",
        labels=(("component", "nvme"),),
        summary="{{ $value }} firmware versions run on {{ $labels.model }} NVMe drives",
        description="Drives of the same model {{ $labels.model }} run {{ $value }} firmware "
        "versions (threshold: 1): "
        '{{ range printf "count by (firmware) (nodeslo_nvme_info{${fleet_sel_}model=%q})" '
        '${fleet_args_}$labels.model | query | sortByLabel "firmware" }}'
        "{{ .Labels.firmware }} on {{ .Value }}; {{ end }}"
        "bring them all to the validated version.",
        threshold="more than one firmware version per drive model",
        source=("nodeslo_nvme_info",),
    ),
    HealthAlert(
        name="FirmwareSkew",
        group="platform",
        severity=WARNING,
        expr="""
count by (${fleet_}${host_group_}component) (
  count by (${fleet_}${host_group_}component, version) (
    nodeslo_firmware_info{component=~${host_components}}
  )
) > 1
""",
        for_="firmware_skew_for",
        summary="{{ $value }} {{ $labels.component }} versions run across hosts",
        description="Hosts run {{ $value }} versions of {{ $labels.component }} (threshold: "
        "1, compared: ${host_components_text}): "
        '{{ range printf "count by (version) (nodeslo_firmware_info{${fleet_sel_}'
        '${host_group_sel_}component=%q})" ${fleet_args_}${host_group_args_}$labels.component '
        '| query | sortByLabel "version" }}'
        "{{ .Labels.version }} on {{ .Value }}; {{ end }}roll the validated version out "
        "everywhere.",
        threshold="more than one version of ${host_components_text} across hosts",
        source=("nodeslo_firmware_info",),
    ),
    HealthAlert(
        name="FirmwareSkew",
        group="platform",
        severity=WARNING,
        expr="nodeslo_firmware_microcode_revisions > 1",
        for_="firmware_skew_for",
        labels=(("component", "microcode"),),
        summary="CPUs " + _ON + " run {{ $value }} microcode revisions",
        description="The CPUs of this host run {{ $value }} different microcode revisions "
        "(threshold: 1): a microcode update was applied to some CPUs only.",
        threshold="more than one microcode revision within a host",
        source=("nodeslo_firmware_microcode_revisions",),
    ),
    HealthAlert(
        name="CPUMicrocodeOutdated",
        group="platform",
        severity=WARNING,
        expr="nodeslo_firmware_microcode_outdated == 1",
        for_=3600,
        summary="CPU microcode " + _ON + " is outdated",
        description="The kernel knows a newer microcode for this CPU than the one loaded "
        "(nodeslo_firmware_microcode_outdated = {{ $value }}, threshold: 0). Vendors fix "
        "scheduling-latency and power-state bugs in microcode.",
        threshold="the kernel reports old microcode",
        source=("nodeslo_firmware_microcode_outdated",),
    ),
    # --- the exporter itself -------------------------------------------------------
    HealthAlert(
        name="NodeSLOExporterDown",
        group="exporter",
        severity=CRITICAL,
        expr="${up} == 0",
        for_=300,
        summary="nodeslo exporter " + _ON + " is down",
        description="Prometheus has failed to scrape the nodeslo exporter at "
        "{{ $labels.instance }} for 5m (up = {{ $value }}). Every other nodeslo alert for "
        "this host is blind until it is back.",
        threshold="scrape failing for 5m",
        source=("up",),
    ),
    HealthAlert(
        name="NodeSLOCollectorFailing",
        group="exporter",
        severity=WARNING,
        expr="nodeslo_collector_success == 0",
        for_=900,
        summary="nodeslo collector {{ $labels.collector }} " + _ON + " is failing",
        description="The {{ $labels.collector }} collector has failed on every scrape for "
        "15m: its metrics and the alerts that read them are missing. The exporter's "
        "landing page (/) shows the error.",
        threshold="collector_success = 0 for 15m",
        source=("nodeslo_collector_success",),
    ),
    HealthAlert(
        name="NodeSLOProbeDown",
        group="exporter",
        severity=WARNING,
        expr="nodeslo_probe_up == 0",
        for_=300,
        summary="nodeslo {{ $labels.probe }} probe " + _ON + " is down",
        description="The {{ $labels.probe }} probe has been down for 5m (its process "
        "crashed or hung, or its last sample failed): the SLOs it measures get no events, "
        "so their budgets can neither burn nor recover.",
        threshold="probe_up = 0 for 5m",
        source=("nodeslo_probe_up",),
    ),
    HealthAlert(
        name="NodeSLOProfileReloadFailed",
        group="exporter",
        severity=WARNING,
        expr="nodeslo_profile_last_reload_successful == 0",
        for_=300,
        summary="nodeslo " + _ON + " rejected its new profile",
        description="The last profile reload failed; the exporter keeps the previous "
        "profile, so its tuning checks may differ from what was deployed. The exporter's "
        "log names the file, key and line.",
        threshold="last reload failed",
        source=("nodeslo_profile_last_reload_successful",),
    ),
)


def probe_absent_alert(probe: str) -> HealthAlert:
    """A probe an SLO needs but the exporter does not export at all: its own alert."""
    return HealthAlert(
        name="NodeSLOProbeDown",
        group="exporter",
        severity=WARNING,
        expr=f"${{up}} == 1 unless on (${{by}}) nodeslo_probe_up{{probe={promql.quote(probe)}}}",
        for_=600,
        labels=(("probe", probe),),
        summary=f"nodeslo {probe} probe " + _ON + " is absent",
        description=f"The exporter is up but exports no nodeslo_probe_up for the {probe} "
        "probe for 10m: the probe is off on this host (a flag, a disabled collector), so the "
        "SLOs it measures have no events at all.",
        threshold="exporter up, probe not exported, for 10m",
        source=("up", "nodeslo_probe_up"),
    )
