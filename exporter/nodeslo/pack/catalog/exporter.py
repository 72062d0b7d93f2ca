"""The exporter itself: scrapes, collectors, probes, profile reloads."""

from __future__ import annotations

from nodeslo.pack import promql
from nodeslo.pack.catalog.base import (
    CRITICAL,
    ON,
    WARNING,
    HealthAlert,
    Recording,
)
from nodeslo.profile import Profile

# No storage probe I/O completing for this long is a hung volume (or no probe able to
# run there): the probe's stall gauge already holds the time, so the alert needs no `for`.
STORAGE_STALL_SECONDS = 120.0


def parameters(profile: Profile) -> dict[str, str]:
    return {
        "storage_stall_after": promql.number(STORAGE_STALL_SECONDS),
        "storage_stall_after_text": promql.duration(STORAGE_STALL_SECONDS),
    }


RECORDINGS: tuple[Recording, ...] = ()

ALERTS = (
    HealthAlert(
        name="NodeSLOExporterDown",
        group="exporter",
        severity=CRITICAL,
        expr="${up} == 0",
        for_=300,
        summary="nodeslo exporter " + ON + " is down",
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
        summary="nodeslo collector {{ $labels.collector }} " + ON + " is failing",
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
        summary="nodeslo {{ $labels.probe }} probe " + ON + " is down",
        description="The {{ $labels.probe }} probe has been down for 5m (its process "
        "crashed or hung, or its last sample failed): the SLOs it measures get no events, "
        "so their budgets can neither burn nor recover.",
        threshold="probe_up = 0 for 5m",
        source=("nodeslo_probe_up",),
    ),
    HealthAlert(
        name="WakeupProbeEngineFallback",
        group="exporter",
        severity=WARNING,
        expr='nodeslo_probe_wakeup_engine_info{requested!="python", engine="python"} == 1',
        for_=900,
        summary="nodeslo wake-up probe " + ON + " measures with the python engine",
        description="The wake-up probe was asked for {{ $labels.requested }} but has measured "
        "with the python engine for 15m: cyclictest is missing or keeps failing (without "
        "CAP_SYS_NICE it exits 1). The python engine reads ~25 us late at the median, so "
        "the wake-up SLO burns on measurement bias, not on the host.",
        threshold="python engine while cyclictest requested, for 15m",
        source=("nodeslo_probe_wakeup_engine_info",),
    ),
    HealthAlert(
        name="NodeSLOStorageStalled",
        group="exporter",
        severity=CRITICAL,
        expr="max by (${by}, target) (nodeslo_probe_io_stalled_seconds) > ${storage_stall_after}",
        for_=0,
        summary="storage I/O on {{ $labels.target }} " + ON + " is stalled",
        description="A storage probe operation on {{ $labels.target }} has not completed "
        "for {{ $value | humanizeDuration }} (nothing completes in ${storage_stall_after_text}): "
        "the volume hangs (a suspended device-mapper table, a dead path, a controller "
        "reset), or no probe process can run there (nodeslo_probe_up, "
        'nodeslo_probe_io_missed_total{reason="probe_down"}). Processes that write '
        "their state there are blocked too.",
        threshold="no probe I/O on a target completed for ${storage_stall_after_text}",
        source=("nodeslo_probe_io_stalled_seconds",),
    ),
    HealthAlert(
        name="NodeSLOProfileReloadFailed",
        group="exporter",
        severity=WARNING,
        expr="nodeslo_profile_last_reload_successful == 0",
        for_=300,
        summary="nodeslo " + ON + " rejected its new profile",
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
        summary=f"nodeslo {probe} probe " + ON + " is absent",
        description=f"The exporter is up but exports no nodeslo_probe_up for the {probe} "
        "probe for 10m: the probe is off on this host (a flag, a disabled collector), so the "
        "SLOs it measures have no events at all.",
        threshold="exporter up, probe not exported, for 10m",
        source=("up", "nodeslo_probe_up"),
    )
