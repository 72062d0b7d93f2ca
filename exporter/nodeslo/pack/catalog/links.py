"""Links: PCIe training and AER errors, NIC carrier, speed, flaps and errors, RDMA ports.

Absence: a watched PCI function that vanishes from sysfs, or whose config space stops
answering, exports `nodeslo_pcie_device_responding 0` (the exporter remembers it until
it restarts or reloads): PCIeLinkDegraded fires for it. An interface that must have
carrier (listed in the profile, or had carrier since the exporter started) and has no
carrier series at all - it vanished, or its carrier cannot be read - is NetworkLinkDown,
as is one with carrier 0; the same holds for RDMA ports seen active. A data-plane NIC
with carrier whose speed the driver does not report cannot be judged:
NetworkLinkSpeedDegraded says so.
"""

from __future__ import annotations

from nodeslo.pack import promql
from nodeslo.pack.catalog.base import (
    CRITICAL,
    ON,
    WARNING,
    HealthAlert,
    Recording,
    apart,
    lookup,
    percent,
    rise_alert,
    rise_recording,
    rise_window,
    slow,
)
from nodeslo.profile import Profile
from nodeslo.units import human_bit_rate

SPEED_RECORD = "instance_interface:nodeslo_network_speed_bytes_per_second:max1h"
# Where uncorrectable AER counters rose lately (base.rise_recording): written only then.
AER_RISE_RECORD = "instance_device:nodeslo_pcie_aer_uncorrectable_errors:recent_increase"
AER_ROOTPORT_RISE_RECORD = (
    "instance_device:nodeslo_pcie_aer_rootport_uncorrectable_errors:recent_increase"
)
_UNCORRECTABLE = '{aer_severity=~"nonfatal|fatal"}'
AER_UNCORRECTABLE = "nodeslo_pcie_aer_errors_total" + _UNCORRECTABLE
AER_ROOTPORT_UNCORRECTABLE = "nodeslo_pcie_aer_rootport_errors_total" + _UNCORRECTABLE
_DEVICE = "device=%q"
_WHO = (
    "{{ $labels.device }}{{ with $labels.controller }} ({{ . }} {{ $labels.serial }})"
    "{{ end }}{{ with $labels.interface }} ({{ . }}){{ end }}"
)


def parameters(profile: Profile) -> dict[str, str]:
    h = profile.health.links
    speed = profile.inventory.network.speed_bytes_per_second or 0.0
    n, d = promql.number, promql.duration
    return {
        "pcie_uncorrectable_window": d(h.pcie_uncorrectable_window_seconds),
        "pcie_uncorrectable_rise_window": rise_window(h.pcie_uncorrectable_window_seconds),
        "pcie_correctable_max": n(h.pcie_correctable_errors_max),
        "pcie_correctable_window": d(h.pcie_correctable_window_seconds),
        "network_speed_bits": n(speed * 8),
        "network_speed_text": human_bit_rate(speed),
        "network_speed_lookback": d(h.network_speed_lookback_seconds),
        "speed_record": SPEED_RECORD,
        "network_flap_max": n(h.network_flap_changes_max),
        "network_flap_window": d(h.network_flap_window_seconds),
        "network_errors_max": n(h.network_errors_max_ratio),
        "network_errors_max_text": percent(h.network_errors_max_ratio),
        "network_errors_window": d(h.network_errors_window_seconds),
        "network_errors_min_rate": n(h.network_errors_min_packets_per_second),
        "pcie_degraded_for_text": d(h.pcie_degraded_for_seconds),
        "network_down_for_text": d(h.network_down_for_seconds),
        "rdma_down_for_text": d(h.rdma_down_for_seconds),
    }


def durations(profile: Profile) -> dict[str, float]:
    h = profile.health.links
    return {
        "pcie_degraded_for": h.pcie_degraded_for_seconds,
        "network_down_for": h.network_down_for_seconds,
        "network_speed_for": h.network_speed_for_seconds,
        "rdma_down_for": h.rdma_down_for_seconds,
    }


def _has_speed(profile: Profile) -> bool:
    return profile.inventory.network.speed_bytes_per_second is not None


# Each read of the AER counters is 114 series per host (38 devices x 3 severities): the
# uncorrectable pages and their recordings get groups of their own (base.apart).
APART = ("aer", "aer-rootport")
AER_GROUP, AER_ROOTPORT_GROUP = (apart("links", part) for part in APART)


RECORDINGS = (
    Recording(
        group="hourly",
        record=SPEED_RECORD,
        # The fastest each NIC ran in the hour: a week of them is 168 points, where a raw
        # max_over_time over the week would read every scrape of it on every evaluation.
        expr="max_over_time(nodeslo_network_speed_bytes_per_second[1h])",
        source=("nodeslo_network_speed_bytes_per_second",),
    ),
    rise_recording(
        AER_GROUP,
        AER_RISE_RECORD,
        AER_UNCORRECTABLE,
        "${pcie_uncorrectable_rise_window}",
    ),
    rise_recording(
        AER_ROOTPORT_GROUP,
        AER_ROOTPORT_RISE_RECORD,
        AER_ROOTPORT_UNCORRECTABLE,
        "${pcie_uncorrectable_rise_window}",
    ),
)

ALERTS = (
    HealthAlert(
        name="PCIeLinkDegraded",
        group="links",
        severity=WARNING,
        expr="""
nodeslo_pcie_link_speed_transfers_per_second
< nodeslo_pcie_link_expected_speed_transfers_per_second
or
nodeslo_pcie_link_width < nodeslo_pcie_link_expected_width
""",
        for_="pcie_degraded_for",
        summary="PCIe link of " + _WHO + " " + ON + " trained below what it can do",
        description="The link of "
        + _WHO
        + " runs at "
        + lookup(
            "nodeslo_pcie_link_speed_transfers_per_second", _DEVICE, "$labels.device ", "humanize"
        )
        + "T/s x"
        + lookup("nodeslo_pcie_link_width", _DEVICE, "$labels.device ", "humanize")
        + "; it can reach "
        + lookup(
            "nodeslo_pcie_link_expected_speed_transfers_per_second",
            _DEVICE,
            "$labels.device ",
            "humanize",
        )
        + "T/s x"
        + lookup("nodeslo_pcie_link_expected_width", _DEVICE, "$labels.device ", "humanize")
        + " (the lower of the device's and its upstream port's maximum). A drive or NIC "
        "on fewer lanes or a slower generation delivers a fraction of its bandwidth.",
        threshold="link speed or width below min(device max, upstream port max) for "
        "${pcie_degraded_for_text}",
        labels=(("reason", "trained_low"),),
        source=(
            "nodeslo_pcie_link_speed_transfers_per_second",
            "nodeslo_pcie_link_expected_speed_transfers_per_second",
            "nodeslo_pcie_link_width",
            "nodeslo_pcie_link_expected_width",
        ),
        held_through_gaps=True,
    ),
    HealthAlert(
        name="PCIeLinkDegraded",
        group="links",
        severity=WARNING,
        expr="nodeslo_pcie_device_responding == 0",
        for_="pcie_degraded_for",
        summary="PCIe device " + _WHO + " " + ON + " does not answer",
        description="The link registers of " + _WHO + " read as Unknown / width 255, or the "
        "device vanished from sysfs (nodeslo_pcie_device_responding = {{ $value }}): its "
        "config space no longer answers. The device fell off the bus after a fatal error, "
        "a surprise removal or a link that went down.",
        threshold="config space not answering, or the device gone from sysfs, for "
        "${pcie_degraded_for_text}",
        labels=(("reason", "not_answering"),),
        source=("nodeslo_pcie_device_responding",),
        held_through_gaps=True,
    ),
    HealthAlert(
        name="PCIeUncorrectableErrors",
        group=AER_GROUP,
        severity=CRITICAL,
        expr=rise_alert(AER_RISE_RECORD, AER_UNCORRECTABLE, "${pcie_uncorrectable_window}"),
        for_=0,
        summary="Uncorrectable PCIe errors on " + _WHO + " " + ON,
        description='{{ $value | printf "%.0f" }} {{ $labels.aer_severity }} AER errors on '
        + _WHO
        + " in the last ${pcie_uncorrectable_window} (threshold: any). A transaction was "
        "lost or corrupted: the driver reset the device or took it offline.",
        threshold="any non-fatal or fatal AER error over ${pcie_uncorrectable_window}",
        labels=(("reason", "device_errors"),),
        source=("nodeslo_pcie_aer_errors_total",),
    ),
    HealthAlert(
        name="PCIeUncorrectableErrors",
        group=AER_ROOTPORT_GROUP,
        severity=CRITICAL,
        expr=rise_alert(
            AER_ROOTPORT_RISE_RECORD, AER_ROOTPORT_UNCORRECTABLE, "${pcie_uncorrectable_window}"
        ),
        for_=0,
        summary="Root port {{ $labels.device }} " + ON + " received uncorrectable PCIe errors",
        description='{{ $value | printf "%.0f" }} {{ $labels.aer_severity }} AER error messages '
        "reached root port {{ $labels.device }} from the devices below it in the last "
        "${pcie_uncorrectable_window} (threshold: any); devices without AER of their own "
        "are seen only here.",
        threshold="any non-fatal or fatal error reported to a root port over "
        "${pcie_uncorrectable_window}",
        labels=(("reason", "root_port_errors"),),
        source=("nodeslo_pcie_aer_rootport_errors_total",),
    ),
    HealthAlert(
        name="PCIeCorrectableErrorsHigh",
        # A count over an hour, so the full window; a warning: every 5 minutes is enough.
        group=slow("links"),
        severity=WARNING,
        expr=promql.increase_seen(
            'nodeslo_pcie_aer_errors_total{aer_severity="correctable"}',
            "${pcie_correctable_window}",
        )
        + " > ${pcie_correctable_max}",
        for_=0,
        summary="Many correctable PCIe errors on " + _WHO + " " + ON,
        description='{{ $value | printf "%.0f" }} correctable AER errors on ' + _WHO + " in "
        "the last ${pcie_correctable_window} (threshold ${pcie_correctable_max}). Each is a "
        "retried transaction: latency spikes now, and often a link about to downtrain or "
        "fail (a reseated riser, a marginal slot, a failing drive).",
        threshold="more than ${pcie_correctable_max} per ${pcie_correctable_window} per device",
        source=("nodeslo_pcie_aer_errors_total",),
    ),
    HealthAlert(
        name="NetworkLinkDown",
        group="links",
        severity=CRITICAL,
        expr="""
nodeslo_network_expected_up == 1
unless on (${by}, interface)
nodeslo_network_carrier == 1
""",
        for_="network_down_for",
        summary="Network interface {{ $labels.interface }} " + ON + " is down",
        description="{{ $labels.interface }} "
        '{{ with printf "nodeslo_network_carrier{${instance_sel_}interface=%q}" '
        "${instance_args_}$labels.interface | query }}has no carrier"
        "{{ else }}is gone or unreadable{{ end }}; it is listed in the profile or had "
        "carrier since the exporter started (threshold: carrier). Traffic on it has "
        "stopped or failed over.",
        threshold="an expected interface without carrier (or gone) for ${network_down_for_text}",
        source=("nodeslo_network_expected_up", "nodeslo_network_carrier", "up"),
        held_while_unscraped=True,
    ),
    HealthAlert(
        name="NetworkLinkSpeedDegraded",
        group="links",
        severity=WARNING,
        expr="""
nodeslo_network_speed_bytes_per_second * 8 < ${network_speed_bits}
and on (${by}, interface) nodeslo_network_carrier == 1
and on (${by}, interface)
(
  nodeslo_network_data_plane == 1
  or on (${by}, interface)
  max_over_time(${speed_record}[${network_speed_lookback}]) * 8 >= ${network_speed_bits}
)
""",
        for_="network_speed_for",
        summary="Network interface {{ $labels.interface }} " + ON + " runs at "
        "{{ $value | humanize }}b/s",
        description="{{ $labels.interface }} negotiated {{ $value | humanize }}b/s, below the "
        "profile's ${network_speed_text} (inventory.network.speed); it is a data-plane "
        "interface or ran at that speed within ${network_speed_lookback}. A bad cable, "
        "optic or switch port negotiates down.",
        threshold="carrier up below ${network_speed_text} (data-plane interfaces, and any "
        "that reached it within ${network_speed_lookback})",
        labels=(("reason", "below_speed"),),
        source=(
            "nodeslo_network_speed_bytes_per_second",
            "nodeslo_network_carrier",
            "nodeslo_network_data_plane",
        ),
        when=_has_speed,
        held_through_gaps=True,
    ),
    HealthAlert(
        name="NetworkLinkSpeedDegraded",
        group="links",
        severity=WARNING,
        expr="""
(nodeslo_network_carrier == 1 and on (${by}, interface) nodeslo_network_data_plane == 1)
unless on (${by}, interface)
nodeslo_network_speed_bytes_per_second
""",
        for_="network_speed_for",
        summary="Speed of network interface {{ $labels.interface }} " + ON + " is unknown",
        description="Data-plane interface {{ $labels.interface }} has carrier but its driver "
        "reports no speed (-1), so it cannot be held to the profile's ${network_speed_text}.",
        threshold="a data-plane interface with carrier and no speed",
        labels=(("reason", "speed_unknown"),),
        source=(
            "nodeslo_network_carrier",
            "nodeslo_network_data_plane",
            "nodeslo_network_speed_bytes_per_second",
            "up",
        ),
        when=_has_speed,
        held_while_unscraped=True,
    ),
    HealthAlert(
        name="NetworkLinkFlapping",
        group="links",
        severity=WARNING,
        expr=promql.increase_seen("nodeslo_network_carrier_changes_total", "${network_flap_window}")
        + " > ${network_flap_max}",
        for_=0,
        summary="Network interface {{ $labels.interface }} " + ON + " is flapping",
        description='Its carrier came or went {{ $value | printf "%.0f" }} times in the last '
        "${network_flap_window} (threshold ${network_flap_max}). Every flap drops traffic and "
        "makes bonds and RDMA connections fail over.",
        threshold="more than ${network_flap_max} carrier changes per ${network_flap_window}",
        source=("nodeslo_network_carrier_changes_total",),
    ),
    HealthAlert(
        name="NetworkErrorsHigh",
        group="links",
        severity=WARNING,
        expr="""
sum by (${by}, interface) (rate(nodeslo_network_errors_total[${network_errors_window}]))
/
(
  (
    sum by (${by}, interface) (rate(nodeslo_network_packets_total[${network_errors_window}]))
    + sum by (${by}, interface) (rate(nodeslo_network_errors_total[${network_errors_window}]))
  ) > ${network_errors_min_rate}
)
> ${network_errors_max}
""",
        for_=0,
        summary="{{ $value | humanizePercentage }} of packets on {{ $labels.interface }} "
        + ON
        + " have errors",
        description="{{ $value | humanizePercentage }} of the packets {{ $labels.interface }} "
        "received or sent over the last ${network_errors_window} had errors (threshold "
        "${network_errors_max_text}, judged above ${network_errors_min_rate} packets/s). "
        "CRC errors point at a cable or optic; missed and FIFO errors at a host that does "
        "not drain the NIC's rings in time.",
        threshold="errored packets > ${network_errors_max_text} of packets over "
        "${network_errors_window}",
        source=("nodeslo_network_errors_total", "nodeslo_network_packets_total"),
    ),
    HealthAlert(
        name="RDMAPortDown",
        group="links",
        severity=CRITICAL,
        expr="""
nodeslo_rdma_port_expected_active == 1
unless on (${by}, rdma, port)
nodeslo_rdma_port_active == 1
""",
        for_="rdma_down_for",
        summary="RDMA port {{ $labels.rdma }}/{{ $labels.port }} " + ON + " is not active",
        description="RDMA port {{ $labels.rdma }}/{{ $labels.port }} was active since the "
        "exporter started and is now "
        '{{ with printf "nodeslo_rdma_port_state_id{${instance_sel_}rdma=%q, port=%q}" '
        "${instance_args_}$labels.rdma $labels.port | query }}in state "
        "{{ . | first | value }} (1 DOWN, 2 INIT, 3 ARMED){{ else }}gone{{ end }} "
        "(threshold: ACTIVE). RDMA traffic (RoCE, InfiniBand) over it has stopped.",
        threshold="a port seen ACTIVE no longer ACTIVE (or gone) for ${rdma_down_for_text}",
        source=("nodeslo_rdma_port_expected_active", "nodeslo_rdma_port_active", "up"),
        held_while_unscraped=True,
    ),
)
