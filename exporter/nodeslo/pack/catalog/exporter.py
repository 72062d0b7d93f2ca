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


# Flapping: over this window, up (or probe_up) was 0 more than half of the time and
# came back at least twice (more than 3 changes). One outage followed by recovery is 2
# changes: that is NodeSLOExporterDown's, not a flap. A bare `for` on `up == 0` resets
# at every successful scrape, so a crash loop down 75 % of the time never fired it.
FLAP_WINDOW = "10m"
FLAP_MIN_CHANGES = 3


def parameters(profile: Profile) -> dict[str, str]:
    instance = profile.alerting.instance_labels
    return {
        "storage_stall_after": promql.number(STORAGE_STALL_SECONDS),
        "storage_stall_after_text": promql.duration(STORAGE_STALL_SECONDS),
        # The absent target's `job` tells which scrape configuration lost it.
        "by_job": promql.by((*instance, *(("job",) if "job" not in instance else ()))),
        "exporter_lookback": promql.duration(profile.alerting.exporter_lookback_seconds),
        "flap_window": FLAP_WINDOW,
        "flap_changes": str(FLAP_MIN_CHANGES),
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
        name="NodeSLOExporterAbsent",
        group="exporter",
        severity=CRITICAL,
        # present_over_time keeps the target's labels after its `up` went stale; the
        # `unless` compares instance labels only, so a replaced pod (new `pod` label,
        # same node) or a relabelled job is still the same host.
        expr="""
group by (${by_job}) (present_over_time(${up}[${exporter_lookback}]))
unless on (${by})
${up}
""",
        for_=300,
        summary="nodeslo exporter " + ON + " has vanished",
        description="{{ $labels.instance }} (job {{ $labels.job }}) was scraped within "
        "the last ${exporter_lookback} but has had no `up` series for 5m: its target left "
        "service discovery or the scrape configuration. Every nodeslo alert for this host "
        "is blind. A host retired on purpose: silence this alert for ${exporter_lookback}, "
        "after which it is forgotten.",
        threshold="target seen within ${exporter_lookback}, no `up` series for 5m",
        source=("up",),
    ),
    HealthAlert(
        name="NodeSLOExporterFlapping",
        group="exporter",
        severity=CRITICAL,
        expr="""
avg_over_time(${up}[${flap_window}]) < 0.5
and
changes(${up}[${flap_window}]) > ${flap_changes}
""",
        for_=300,
        summary="nodeslo exporter " + ON + " keeps failing scrapes",
        description="Only {{ $value | humanizePercentage }} of the scrapes of "
        "{{ $labels.instance }} succeeded over the last ${flap_window}, and it came back "
        "and failed again repeatedly (a crash loop, an overloaded host, a flapping link). "
        "The host's alerts see only fragments of its data.",
        threshold="up = 0 more than half of ${flap_window}, over ${flap_changes} changes, for 5m",
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
        held_through_gaps=True,
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
        held_through_gaps=True,
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
        held_through_gaps=True,
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
        held_through_gaps=True,
    ),
    HealthAlert(
        name="NodeSLOProbeFlapping",
        group="exporter",
        severity=WARNING,
        expr="""
avg_over_time(nodeslo_probe_up[${flap_window}]) < 0.5
and
changes(nodeslo_probe_up[${flap_window}]) > ${flap_changes}
""",
        for_=300,
        summary="nodeslo {{ $labels.probe }} probe " + ON + " keeps failing",
        description="The {{ $labels.probe }} probe was up only "
        "{{ $value | humanizePercentage }} of the last ${flap_window}, going down and "
        "coming back repeatedly (a crash loop restarted by the supervisor, or samples that "
        "fail most of the time): the SLOs it measures see only fragments.",
        threshold="probe_up = 0 more than half of ${flap_window}, over ${flap_changes} "
        "changes, for 5m",
        source=("nodeslo_probe_up",),
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
        held_through_gaps=True,
    ),
)


def probe_absent_alert(probe: str) -> HealthAlert:
    """A probe an SLO needs but the exporter does not export at all: its own alert.

    Not kept from ALERTS through a failed scrape (held_while_unscraped): the level
    NodeSLOProbeDown's alerts carry the same labels, and would come back as this rule's
    (one ALERTS sample twice). Its reads are held while the scrape fails instead: the
    gate is "a good scrape within the lookback", the probe's series the lookback's."""
    series = f"nodeslo_probe_up{{probe={promql.quote(probe)}}}"
    return HealthAlert(
        name="NodeSLOProbeDown",
        group="exporter",
        severity=WARNING,
        expr=f"max_over_time(${{up}}[{promql.LOOKBACK}]) == 1 unless on (${{by}}) "
        + promql.held_while_unscraped(series, "${up}", "${by}"),
        for_=600,
        labels=(("probe", probe),),
        summary=f"nodeslo {probe} probe " + ON + " is absent",
        description=f"The exporter is up but exports no nodeslo_probe_up for the {probe} "
        "probe for 10m: the probe is off on this host (a flag, a disabled collector), so the "
        "SLOs it measures have no events at all.",
        threshold="exporter up, probe not exported, for 10m",
        source=("up", "nodeslo_probe_up"),
    )
