"""Redundancy: md RAID, ZFS pools, power supplies."""

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


def parameters(profile: Profile) -> dict[str, str]:
    h = profile.health.power
    n = promql.number
    return {
        "power_meter": promql.quote(h.meter_chip_name),
        "power_max": n(h.redundant_capacity_watts),
        "psu_count": str(h.psu_count),
        "psu_capacity": n(h.psu_capacity_watts),
    }


RECORDINGS: tuple[Recording, ...] = ()

ALERTS = (
    HealthAlert(
        name="RAIDArrayDegraded",
        group="redundancy",
        severity=CRITICAL,
        expr='nodeslo_md_disks_required - ignoring (state) nodeslo_md_disks{state="active"} > 0',
        for_=300,
        summary="RAID array {{ $labels.device }} " + ON + " is degraded",
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
        summary="ZFS pool {{ $labels.pool }} " + ON + " is {{ $labels.state }}",
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
        summary="Power draw " + ON + " exceeds what one PSU fewer can carry",
        description="The system draws {{ $value | humanize }}W, more than the ${power_max}W "
        "its ${psu_count} PSUs of ${psu_capacity}W can supply with one of them failed "
        "(threshold ${power_max}W): if a PSU fails now, the others cannot carry the load.",
        threshold="system input power > (PSUs - 1) x PSU capacity (${power_max} W)",
        source=("nodeslo_hwmon_power_watts",),
        when=lambda p: p.health.power.psu_count >= 2,
    ),
)
