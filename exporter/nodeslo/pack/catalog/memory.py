"""Memory: ECC errors and reporting, NUMA placement."""

from __future__ import annotations

from nodeslo.pack import promql
from nodeslo.pack.catalog.base import (
    CRITICAL,
    ON,
    WARNING,
    HealthAlert,
    Recording,
    percent,
    rise_alert,
    rise_recording,
    rise_window,
    slow,
)
from nodeslo.profile import Profile


def parameters(profile: Profile) -> dict[str, str]:
    h = profile.health.memory
    n, d = promql.number, promql.duration
    return {
        "ue_window": d(h.uncorrectable_errors_window_seconds),
        "ue_rise_window": rise_window(h.uncorrectable_errors_window_seconds),
        "ce_max": n(h.correctable_errors_max),
        "ce_window": d(h.correctable_errors_window_seconds),
        "numa_max": n(h.numa_remote_ratio_max),
        "numa_max_text": percent(h.numa_remote_ratio_max),
        "numa_window": d(h.numa_window_seconds),
        "numa_min_rate": n(h.numa_min_pages_per_second),
    }


UE = "nodeslo_edac_uncorrectable_errors_total"
UE_RISE = "instance_controller:nodeslo_edac_uncorrectable_errors:recent_increase"

RECORDINGS: tuple[Recording, ...] = (rise_recording("memory", UE_RISE, UE, "${ue_rise_window}"),)

ALERTS = (
    HealthAlert(
        name="MemoryUncorrectableErrors",
        group="memory",
        severity=CRITICAL,
        expr=rise_alert(UE_RISE, UE, "${ue_window}"),
        for_=0,
        summary="Uncorrectable memory errors on controller {{ $labels.controller }} " + ON,
        description='{{ $value | printf "%.0f" }} uncorrectable ECC errors on memory '
        "controller {{ $labels.controller }} in the last ${ue_window} (threshold: any). "
        "Data in memory was corrupted; the process that owned it may have been killed.",
        threshold="any increase over ${ue_window}",
        source=("nodeslo_edac_uncorrectable_errors_total",),
    ),
    HealthAlert(
        name="MemoryCorrectableErrorsHigh",
        # A day's count judged after 15 minutes: every 5 minutes is enough.
        group=slow("memory"),
        severity=WARNING,
        expr="sum by (${by}) "
        "("
        + promql.increase_seen("nodeslo_edac_correctable_errors_total", "${ce_window}")
        + ") > ${ce_max}",
        for_=900,
        summary="Many correctable memory errors " + ON,
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
        summary="No ECC error reporting " + ON,
        description="The kernel exposes no EDAC memory controller (nodeslo_edac_memory_"
        "controllers = {{ $value }}, threshold: at least 1): memory errors on this host "
        "are invisible. ECC is mandatory for this server class.",
        threshold="no EDAC memory controller",
        source=("nodeslo_edac_memory_controllers",),
        held_through_gaps=True,
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
        summary="{{ $value | humanizePercentage }} of memory allocations " + ON + " are remote",
        description="{{ $value | humanizePercentage }} of the pages allocated over the last "
        "${numa_window} went to tasks running on another NUMA node (threshold "
        "${numa_max_text}, judged above ${numa_min_rate} pages/s). Remote memory is slower.",
        threshold="remote share of page allocations > ${numa_max_text} over ${numa_window}",
        source=("nodeslo_numa_local_pages_total", "nodeslo_numa_remote_pages_total"),
    ),
)
