"""NVMe drives: SMART health, wear, temperatures, latency against their peers."""

from __future__ import annotations

from nodeslo.pack import promql
from nodeslo.pack.catalog.base import (
    CRITICAL,
    ON,
    WARNING,
    HealthAlert,
    Recording,
    apart,
    bytes_text,
    count_held_while_unscraped,
    count_per_host,
    label_list,
    lookup,
    percent,
    present_now,
    rise_alert,
    rise_recording,
    rise_window,
    slow,
)
from nodeslo.profile import Profile

# NVMe critical-warning flags with an alert of their own (spare, temperature).
FLAGS_ALERTED_ELSEWHERE = "spare|temperature"
# Whole NVMe namespaces in /proc/diskstats, and the controller they hang off.
NVME_NAMESPACE = "nvme[0-9]+n[0-9]+"
NVME_CONTROLLER_OF_NAMESPACE = "(nvme[0-9]+)n[0-9]+"

_CONTROLLER = "controller=%q"
# Windows of 6h and 1d, judged after an hour: every 5 minutes is enough (catalog/base.py).
SLOW = slow("nvme")
CONTROLLERS = "instance:nodeslo_nvme_controllers:count"
CONTROLLERS_HOURLY = "instance:nodeslo_nvme_controllers:max1h"
MEDIA_ERRORS = "nodeslo_nvme_media_errors_total"
MEDIA_ERRORS_RISE = "instance_controller:nodeslo_nvme_media_errors:recent_increase"
USED = "nodeslo_nvme_percentage_used_ratio"
WEAR_HOURLY = "instance_serial:nodeslo_nvme_percentage_used_ratio:hourly"
WEAR_PROJECTED = (
    "instance_serial:nodeslo_nvme_percentage_used_ratio:predict_linear${wearout_horizon}"
)


def parameters(profile: Profile) -> dict[str, str]:
    h = profile.health.nvme
    n, d = promql.number, promql.duration
    return {
        "flags_elsewhere": FLAGS_ALERTED_ELSEWHERE,
        "nvme_namespace": NVME_NAMESPACE,
        "nvme_controller_of_namespace": NVME_CONTROLLER_OF_NAMESPACE,
        "wear_warning": n(h.wear_warning_ratio),
        "wear_warning_text": percent(h.wear_warning_ratio),
        "wearout_lookback": d(h.wearout_lookback_seconds),
        "wearout_horizon": d(h.wearout_horizon_seconds),
        "wearout_horizon_seconds": n(h.wearout_horizon_seconds),
        # Whole hours: the hourly recording has one point per hour.
        "wearout_min_history": d(max(3600, h.wearout_lookback_seconds // 7200 * 3600)),
        "waf_max": n(h.write_amplification_max),
        "waf_window": d(h.write_amplification_window_seconds),
        "waf_min_written": n(h.write_amplification_min_written_bytes),
        "waf_min_written_text": bytes_text(h.write_amplification_min_written_bytes),
        "media_errors_window": d(h.media_errors_window_seconds),
        "media_errors_rise_window": rise_window(h.media_errors_window_seconds),
        "outlier_factor": n(h.latency_outlier_factor),
        "outlier_window": d(h.latency_outlier_window_seconds),
        "outlier_min_iops": n(h.latency_outlier_min_iops),
        "outlier_min_ios": n(h.latency_outlier_min_iops * h.latency_outlier_window_seconds),
        "smart_stale_after": n(h.smart_stale_after_seconds),
        "smart_stale_after_text": d(h.smart_stale_after_seconds),
        "nvme_lookback": d(h.missing_lookback_seconds),
        "reset_loop_window": d(h.reset_loop_window_seconds),
        "reset_loop_resets": str(h.reset_loop_resets),
        # Leaving `live` N times is 2N - 1 changes at least (the last may be ongoing).
        "reset_loop_changes": str(2 * h.reset_loop_resets - 1),
    }


def durations(profile: Profile) -> dict[str, float]:
    return {"nvme_temperature_for": profile.health.nvme.temperature_for_seconds}


# The drives' temperatures against their thresholds: four reads of 16 drives per host,
# beside a group that already reads every drive a dozen times (base.apart).
APART = ("temperature",)
(TEMPERATURE_GROUP,) = (apart("nvme", part) for part in APART)

RECORDINGS = (
    Recording(
        group="nvme",
        record=CONTROLLERS,
        # NVMe controllers per host: a rename (nvme0 <-> nvme1) keeps the number, a
        # drive that vanishes lowers it, a failed scrape does not.
        expr=count_held_while_unscraped(CONTROLLERS, count_per_host("nodeslo_nvme_info")),
        source=("nodeslo_nvme_info", "up"),
    ),
    rise_recording(
        "nvme",
        MEDIA_ERRORS_RISE,
        MEDIA_ERRORS,
        "${media_errors_rise_window}",
    ),
    Recording(
        group=SLOW,
        record="instance_controller:nodeslo_nvme_write_amplification:ratio${waf_window}",
        # NAND bytes written per host byte written, once the host wrote enough for the
        # ratio to mean something. SMART counters are the drive's lifetime totals, so the
        # difference to a window ago is the exact increase at the cost of two lookups (a
        # range would read every scrape of the day). A window ago is looked up by the
        # drive's serial, not its controller name: after a reboot renamed nvme0 <-> nvme1
        # each drive is still compared with itself, and a drive new to the host (or to
        # the slot) has no value until it has a window of its own. Series without a
        # serial (an exporter from before serials) would merge drives: left out.
        expr="""
(
  nodeslo_nvme_media_written_bytes_total{serial!=""}
  - ignoring (controller) group_left ()
  max without (controller) (
    nodeslo_nvme_media_written_bytes_total{serial!=""} offset ${waf_window}
  )
)
/
(
  (
    nodeslo_nvme_data_written_bytes_total{serial!=""}
    - ignoring (controller) group_left ()
    max without (controller) (
      nodeslo_nvme_data_written_bytes_total{serial!=""} offset ${waf_window}
    )
  ) > ${waf_min_written}
)
""",
        source=("nodeslo_nvme_media_written_bytes_total", "nodeslo_nvme_data_written_bytes_total"),
    ),
    Recording(
        group=SLOW,
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
* on (${by}, controller) group_left (model, serial) nodeslo_nvme_info
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
        record=CONTROLLERS_HOURLY,
        # The most controllers seen in the hour, for NVMeControllerMissing's day: a max
        # of maxes is the max whatever the evaluation interval (promtool runs this group
        # every minute), and 24 points a day replace 1,440.
        expr=f"max_over_time({CONTROLLERS}[1h])",
        source=("nodeslo_nvme_info", "up"),
    ),
    Recording(
        group="hourly",
        record=WEAR_HOURLY,
        # Wear moves by whole percents over weeks: one point an hour is plenty for the
        # 7-day projection and costs 168 samples instead of every scrape of a week. Kept
        # by serial without the controller name, so a drive's history survives renames.
        expr=f'max without (controller) ({USED}{{serial!=""}})',
        source=(USED,),
    ),
    Recording(
        group="hourly",
        record=WEAR_PROJECTED,
        # The projection of the hourly points, once their history reaches back half the
        # lookback (a single lookup, not a count of every point): a fresh series is not
        # extrapolated from a single step. A week of points per drive is read once an
        # hour here, not every minute by the alert; the line through hourly points moves
        # only when a new point arrives.
        expr=f"""
predict_linear({WEAR_HOURLY}[${{wearout_lookback}}], ${{wearout_horizon_seconds}})
and
last_over_time({WEAR_HOURLY}[1h] offset ${{wearout_min_history}})
""",
        source=(USED,),
    ),
)

ALERTS = (
    HealthAlert(
        name="NVMeCriticalWarning",
        group="nvme",
        severity=CRITICAL,
        expr='nodeslo_nvme_critical_warning_flag{flag!~"${flags_elsewhere}"} == 1',
        for_=60,
        summary="NVMe {{ $labels.controller }} " + ON + " reports critical warning "
        "{{ $labels.flag }}",
        description="The drive's SMART log sets the critical warning flag {{ $labels.flag }} "
        "(reliability: NVM subsystem reliability degraded; read_only: media forced "
        "read-only; volatile_backup: volatile memory backup failed; pmr_read_only: "
        "persistent memory region read-only). Threshold: any of these flags set. "
        "The drive itself says it is failing: plan its replacement now.",
        threshold="reliability, read_only, volatile_backup or pmr_read_only flag set",
        source=("nodeslo_nvme_critical_warning_flag",),
        held_through_gaps=True,
    ),
    HealthAlert(
        name="NVMeSpareBelowThreshold",
        group="nvme",
        severity=CRITICAL,
        expr="nodeslo_nvme_available_spare_ratio < nodeslo_nvme_available_spare_threshold_ratio",
        for_=60,
        summary="NVMe {{ $labels.controller }} " + ON + " has used up its spare blocks",
        description="Available spare is {{ $value | humanizePercentage }}, below the "
        "threshold of "
        + lookup(
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
        held_through_gaps=True,
    ),
    HealthAlert(
        name="NVMeControllerNotLive",
        group="nvme",
        severity=CRITICAL,
        # Not live now, or in and out of live (a reset loop): a `for` on the first alone
        # would start over at every scrape that catches the controller live.
        expr="""
changes(nodeslo_nvme_state_live[${reset_loop_window}]) >= ${reset_loop_changes}
or
nodeslo_nvme_state_live == 0
""",
        for_=120,
        summary="NVMe {{ $labels.controller }} " + ON + " is not live",
        description="{{ if eq $value 0.0 }}The kernel reports controller "
        "{{ $labels.controller }} (serial {{ $labels.serial }}) in a state other than live "
        "(resetting, connecting, deleting or dead) for 2m{{ else }}Controller "
        "{{ $labels.controller }} (serial {{ $labels.serial }}) changed between live and "
        'not live {{ $value | printf "%.0f" }} times in ${reset_loop_window}: a reset '
        "loop{{ end }} (threshold: not live for 2m, or out of live ${reset_loop_resets} "
        "times in ${reset_loop_window}). I/O to its namespaces stalls or fails.",
        threshold="controller state not `live` for 2m, or leaving `live` "
        "${reset_loop_resets} times in ${reset_loop_window}",
        source=("nodeslo_nvme_state_live",),
        held_through_gaps=True,
    ),
    HealthAlert(
        name="NVMeControllerMissing",
        group="nvme",
        severity=CRITICAL,
        # The most controllers within the lookback: the hourly maxima, and the last hour
        # from the per-minute count (the hourly group may not have run since it, and a
        # host new to the rules has no hourly point yet). `a >= b or b or a`: the larger
        # of the two, or whichever exists.
        expr=f"""
{CONTROLLERS}
< on (${{by}})
(
  max_over_time({CONTROLLERS}[1h])
  >= on (${{by}}) max_over_time({CONTROLLERS_HOURLY}[${{nvme_lookback}}])
  or max_over_time({CONTROLLERS_HOURLY}[${{nvme_lookback}}])
  or max_over_time({CONTROLLERS}[1h])
)
""",
        for_=300,
        summary="An NVMe controller " + ON + " has disappeared",
        description="The host has {{ $value }} NVMe controllers; within the last "
        "${nvme_lookback} it had "
        '{{ with printf "max_over_time(instance:nodeslo_nvme_controllers:count'
        '{${instance_sel_}}[${nvme_lookback}])" ${instance_args_}| query }}'
        "{{ . | first | value }}{{ end }} (threshold: fewer than then). Gone, by serial: "
        + label_list(
            "max_over_time(nodeslo_nvme_info{${instance_sel_}}[${nvme_lookback}]) "
            "unless on (serial) " + present_now("nodeslo_nvme_info{${instance_sel_}}"),
            "${instance_args_}" * 4,
            "serial",
        )
        + " — removed, or dropped by the kernel after a failed reset. Its namespaces are "
        "gone with it.",
        threshold="fewer NVMe controllers than within the last ${nvme_lookback}",
        source=("nodeslo_nvme_info", "up"),
    ),
    HealthAlert(
        name="NVMeWearHigh",
        group="nvme",
        severity=WARNING,
        expr="nodeslo_nvme_percentage_used_ratio >= ${wear_warning}",
        for_=900,
        summary="NVMe {{ $labels.controller }} " + ON + " has used "
        "{{ $value | humanizePercentage }} of its rated endurance",
        description="Percentage used is {{ $value | humanizePercentage }}, at or above the "
        "profile's ${wear_warning_text}. Schedule the replacement for the next maintenance "
        "window.",
        threshold="percentage used ≥ ${wear_warning_text}",
        source=("nodeslo_nvme_percentage_used_ratio",),
        held_through_gaps=True,
    ),
    HealthAlert(
        name="NVMeWearOutPredicted",
        group="nvme",
        severity=WARNING,
        # The hourly group's projection (by serial, whatever the drive's name was), read
        # with last_over_time: written once an hour, it is stale to a plain selector
        # 5 minutes later; 2h rides out one late or missed hourly run. The drive's name
        # now joined from nodeslo_nvme_info (one per serial even when two controllers
        # share it): a drive gone from the host ends the alert at once.
        expr=f"""
(last_over_time({WEAR_PROJECTED}[2h]) >= 1)
* on (${{by}}, serial) group_left (controller)
topk by (${{by}}, serial) (1, nodeslo_nvme_info)
""",
        for_=3600,
        summary="NVMe {{ $labels.controller }} " + ON + " will wear out within ${wearout_horizon}",
        description="At the wear rate of the last ${wearout_lookback} the drive reaches "
        "{{ $value | humanizePercentage }} of its rated endurance in ${wearout_horizon} "
        "(threshold: 100% within ${wearout_horizon}). Replace it before then.",
        threshold="linear projection over ${wearout_lookback} reaches 100% within "
        "${wearout_horizon}",
        source=("nodeslo_nvme_percentage_used_ratio", "nodeslo_nvme_info"),
        held_through_gaps=True,
    ),
    HealthAlert(
        name="NVMeMediaErrorsIncreasing",
        group="nvme",
        severity=WARNING,
        expr=rise_alert(MEDIA_ERRORS_RISE, MEDIA_ERRORS, "${media_errors_window}"),
        for_=0,
        summary="NVMe {{ $labels.controller }} " + ON + " reports new media errors",
        description='{{ $value | printf "%.0f" }} new media and data integrity errors in the '
        "last ${media_errors_window} (threshold: any). The drive returned data it could "
        "not correct.",
        threshold="any increase over ${media_errors_window}",
        source=("nodeslo_nvme_media_errors_total",),
    ),
    HealthAlert(
        name="NVMeWriteAmplificationHigh",
        group=SLOW,
        severity=WARNING,
        expr="instance_controller:nodeslo_nvme_write_amplification:ratio${waf_window} > ${waf_max}",
        for_=3600,
        summary="NVMe {{ $labels.controller }} " + ON + " amplifies writes "
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
        group=TEMPERATURE_GROUP,
        severity=WARNING,
        expr="""
nodeslo_nvme_temperature_celsius{sensor="composite"}
>= on (${by}, controller, serial) group_left ()
(nodeslo_nvme_temperature_threshold_celsius{level="warning"} > 0)
""",
        for_="nvme_temperature_for",
        summary="NVMe {{ $labels.controller }} " + ON + " runs hot",
        description="Composite temperature is {{ $value }}°C, at or above the drive's warning "
        "threshold (WCTEMP) of "
        + lookup(
            "nodeslo_nvme_temperature_threshold_celsius",
            _CONTROLLER + ", level=%q",
            '$labels.controller "warning" ',
            "humanize",
        )
        + "°C. The drive throttles itself above it.",
        threshold="composite temperature ≥ WCTEMP",
        source=("nodeslo_nvme_temperature_celsius", "nodeslo_nvme_temperature_threshold_celsius"),
        held_through_gaps=True,
    ),
    HealthAlert(
        name="NVMeTemperatureCritical",
        group=TEMPERATURE_GROUP,
        severity=CRITICAL,
        expr="""
nodeslo_nvme_temperature_celsius{sensor="composite"}
>= on (${by}, controller, serial) group_left ()
(nodeslo_nvme_temperature_threshold_celsius{level="critical"} > 0)
""",
        for_=60,
        summary="NVMe {{ $labels.controller }} " + ON + " is critically hot",
        description="Composite temperature is {{ $value }}°C, at or above the drive's "
        "critical threshold (CCTEMP) of "
        + lookup(
            "nodeslo_nvme_temperature_threshold_celsius",
            _CONTROLLER + ", level=%q",
            '$labels.controller "critical" ',
            "humanize",
        )
        + "°C. The drive may shut down to protect itself.",
        threshold="composite temperature ≥ CCTEMP",
        source=("nodeslo_nvme_temperature_celsius", "nodeslo_nvme_temperature_threshold_celsius"),
        held_through_gaps=True,
    ),
    HealthAlert(
        name="NVMeSmartStale",
        group="nvme",
        severity=WARNING,
        # Never read at all (no helper, a drive that never answered) is as stale as it
        # gets: up 0 without any last success.
        expr="""
time() - nodeslo_nvme_smart_last_success_timestamp_seconds > ${smart_stale_after}
or
nodeslo_nvme_smart_up == 0 unless nodeslo_nvme_smart_last_success_timestamp_seconds
""",
        for_=300,
        summary="SMART data of NVMe {{ $labels.controller }} " + ON + " is stale",
        description="{{ if eq $value 0.0 }}SMART has never been read from this drive since "
        "the exporter started (no privileged helper, or the drive does not answer)"
        "{{ else }}The last successful SMART read was {{ $value | humanizeDuration }} ago"
        "{{ end }} (threshold ${smart_stale_after_text}): the drive's wear, spare and "
        "critical warnings are not being watched.",
        threshold="last successful SMART read older than ${smart_stale_after_text}, or none",
        source=(
            "nodeslo_nvme_smart_last_success_timestamp_seconds",
            "nodeslo_nvme_smart_up",
        ),
        held_through_gaps=True,
    ),
    HealthAlert(
        name="NVMeLatencyOutlier",
        group=SLOW,
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
        summary="NVMe {{ $labels.device }} " + ON + " is slower than its peers",
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
)
