"""Redundancy: md RAID and ZFS pools (power supplies are the BMC's: `bmc.py`)."""

from __future__ import annotations

from nodeslo.pack import promql
from nodeslo.pack.catalog.base import (
    CRITICAL,
    ON,
    HealthAlert,
    Recording,
    count_held_while_unscraped,
    count_per_host,
    label_list,
    lookup,
    present_now,
)
from nodeslo.profile import Profile


def parameters(profile: Profile) -> dict[str, str]:
    return {
        "redundancy_lookback": promql.duration(profile.health.redundancy.missing_lookback_seconds),
    }


ARRAYS = "instance:nodeslo_md_arrays:count"

RECORDINGS = (
    Recording(
        group="redundancy",
        record=ARRAYS,
        # md arrays per host: names change (md0 comes back as md127 after a reboot),
        # the number of arrays does not; a failed scrape does not change it either.
        expr=count_held_while_unscraped(ARRAYS, count_per_host("nodeslo_md_info")),
        source=("nodeslo_md_info", "up"),
    ),
)

ALERTS = (
    HealthAlert(
        name="RAIDArrayDegraded",
        group="redundancy",
        severity=CRITICAL,
        expr="nodeslo_md_degraded > 0",
        for_=300,
        summary="RAID array {{ $labels.device }} " + ON + " is degraded",
        description="md array {{ $labels.device }} misses {{ $value }} of its "
        + lookup("nodeslo_md_disks_required", "device=%q", "$labels.device ", 'printf "%.0f"')
        + " members, by the kernel's own count (sysfs degraded; threshold: none missing). "
        "One more failure may lose data.",
        threshold="the kernel's degraded count > 0",
        source=("nodeslo_md_degraded",),
        held_through_gaps=True,
    ),
    HealthAlert(
        name="RAIDArrayInactive",
        group="redundancy",
        severity=CRITICAL,
        expr="nodeslo_md_active == 0",
        for_=120,
        summary="RAID array {{ $labels.device }} " + ON + " is not running",
        description="The kernel does not run md array {{ $labels.device }} (array_state "
        + label_list(
            "nodeslo_md_state{${instance_sel_}device=%q} == 1",
            "${instance_args_}$labels.device ",
            "state",
        )
        + "; threshold: any state but readonly, read-auto, clean, active, write-pending, "
        "active-idle): it was assembled without enough members, stopped after a failure "
        "too many, or broke. Everything stored on it is unavailable.",
        threshold="array_state not running (inactive, broken, clear, suspended, unreadable) for 2m",
        source=("nodeslo_md_active",),
        held_through_gaps=True,
    ),
    HealthAlert(
        name="RAIDDiskFailed",
        group="redundancy",
        severity=CRITICAL,
        expr='sum without (state) (nodeslo_md_disks{state="failed"}) > 0',
        for_=60,
        summary="A member of RAID array {{ $labels.device }} " + ON + " has failed",
        description="{{ $value }} member(s) of md array {{ $labels.device }} are faulty: "
        + label_list(
            "nodeslo_md_member_state{${instance_sel_}device=%q, state=%q}",
            '${instance_args_}$labels.device "faulty" ',
            "member",
        )
        + " (threshold: any). Even while a spare rebuilds the array, the failed drive must "
        "be replaced before the next failure.",
        threshold="any member in state faulty",
        source=("nodeslo_md_disks",),
        held_through_gaps=True,
    ),
    HealthAlert(
        name="RAIDArrayMissing",
        group="redundancy",
        severity=CRITICAL,
        expr="""
instance:nodeslo_md_arrays:count
< on (${by})
max_over_time(instance:nodeslo_md_arrays:count[${redundancy_lookback}])
""",
        for_=300,
        summary="An md array " + ON + " has disappeared",
        description="The host has {{ $value }} md arrays; within the last "
        "${redundancy_lookback} it had "
        '{{ with printf "max_over_time(instance:nodeslo_md_arrays:count{${instance_sel_}}'
        '[${redundancy_lookback}])" ${instance_args_}| query }}'
        "{{ . | first | value }}{{ end }} (threshold: fewer than then). Gone: "
        + label_list(
            "group by (device) (max_over_time(nodeslo_md_info{${instance_sel_}}"
            "[${redundancy_lookback}])) unless on (device) "
            + present_now("nodeslo_md_info{${instance_sel_}}"),
            "${instance_args_}" * 4,
            "device",
        )
        + " — stopped (mdadm --stop, or too many members failed) or never assembled at boot.",
        threshold="fewer md arrays than within the last ${redundancy_lookback}",
        source=("nodeslo_md_info", "up"),
    ),
    HealthAlert(
        name="ZFSPoolDegraded",
        group="redundancy",
        severity=CRITICAL,
        # A pool with no state set at all (all zeros, as exporters before this one did
        # for a state they did not know) is no healthier than a named bad state.
        expr="""
nodeslo_zfs_pool_state{state!~"(?i)online"} == 1
or on (${by}, pool)
label_replace(max without (state) (nodeslo_zfs_pool_state) == 0, "state", "unknown", "", "")
""",
        for_=300,
        summary="ZFS pool {{ $labels.pool }} " + ON + " is {{ $labels.state }}",
        description="ZFS pool {{ $labels.pool }} is in state {{ $labels.state }} "
        "(threshold: anything but ONLINE, including a state the exporter does not know). "
        "Its redundancy is reduced or gone.",
        threshold="pool state other than ONLINE, or unknown",
        source=("nodeslo_zfs_pool_state",),
        held_through_gaps=True,
    ),
    HealthAlert(
        name="ZFSPoolMissing",
        group="redundancy",
        severity=CRITICAL,
        expr="""
group by (${by}, pool) (
  max_over_time(nodeslo_zfs_pool_state{state=~"(?i)online"}[${redundancy_lookback}])
)
unless on (${by}, pool) nodeslo_zfs_pool_state
and on (${by}) (${up} == 1)
""",
        for_=300,
        summary="ZFS pool {{ $labels.pool }} " + ON + " has disappeared",
        description="ZFS pool {{ $labels.pool }} was reported within the last "
        "${redundancy_lookback} and is absent now while the exporter is up (threshold: "
        "any pool seen in that window): it failed to import (a vdev missing at boot), "
        "was exported, or was destroyed. Nothing on it is available.",
        threshold="a pool seen within the last ${redundancy_lookback} is absent",
        source=("nodeslo_zfs_pool_state", "up"),
        held_while_unscraped=True,
    ),
)
