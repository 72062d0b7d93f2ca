"""Redundancy: md RAID and ZFS pools (power supplies are the BMC's: `bmc.py`)."""

from __future__ import annotations

from nodeslo.pack.catalog.base import (
    CRITICAL,
    ON,
    HealthAlert,
    Recording,
)
from nodeslo.profile import Profile


def parameters(profile: Profile) -> dict[str, str]:
    return {}


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
)
