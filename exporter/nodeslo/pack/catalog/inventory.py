"""Inventory: the box against the profile's `inventory:` and against its own past.

MemoryCapacityDegraded compares memory and DIMMs with the profile and with what the host
had within health.memory.capacity_lookback (a DIMM that failed to train at the last
boot takes its capacity with it and nothing else says so). The past comes from hourly
recordings, so a week's lookback reads 168 points. Absence: without EDAC there is no
DIMM count (ECCReportingAbsent tickets that); without the inventory collector there is
nothing (NodeSLOCollectorFailing).

InventoryNonConforming tickets every other line of `nodeslo check`'s inventory that the
host does not meet, an hour after it starts to, so that a drive missing after a reboot
or a NIC that came up slow does not wait for the next certification run.
"""

from __future__ import annotations

from nodeslo.pack import promql
from nodeslo.pack.catalog.base import (
    ON,
    WARNING,
    HealthAlert,
    Recording,
    percent,
)
from nodeslo.profile import Profile
from nodeslo.units import human_bytes

# Items of nodeslo_inventory_compliant that MemoryCapacityDegraded covers.
ITEMS_ALERTED_ELSEWHERE = "memory|dimms_per_socket"
MEMORY_RECORD = "instance:nodeslo_inventory_memory_bytes:hourly"
DIMMS_RECORD = "instance:nodeslo_inventory_dimms:hourly"


def parameters(profile: Profile) -> dict[str, str]:
    inventory = profile.inventory
    h = profile.health.memory
    n, d = promql.number, promql.duration
    floor = inventory.memory_floor_bytes or 0.0
    dimms = (inventory.dimms_per_socket or 0) * (inventory.sockets or 0)
    return {
        "inventory_elsewhere": ITEMS_ALERTED_ELSEWHERE,
        "memory_record": MEMORY_RECORD,
        "dimms_record": DIMMS_RECORD,
        "memory_floor": n(floor),
        "memory_floor_text": human_bytes(floor),
        "memory_text": human_bytes(inventory.memory_bytes or 0),
        "dimms_total": str(dimms),
        "capacity_lookback": d(h.capacity_lookback_seconds),
        "capacity_keep": n(1 - h.capacity_drop_ratio),
        "capacity_drop_text": percent(h.capacity_drop_ratio),
    }


RECORDINGS = (
    Recording(
        group="hourly",
        record=MEMORY_RECORD,
        expr="nodeslo_inventory_memory_bytes",
        source=("nodeslo_inventory_memory_bytes",),
    ),
    Recording(
        group="hourly",
        record=DIMMS_RECORD,
        expr="sum by (${by}) (nodeslo_inventory_dimms)",
        source=("nodeslo_inventory_dimms",),
    ),
)

ALERTS = (
    HealthAlert(
        name="MemoryCapacityDegraded",
        group="inventory",
        severity=WARNING,
        expr="nodeslo_inventory_memory_bytes < ${memory_floor}",
        for_=900,
        summary="Less memory " + ON + " than the profile specifies",
        description="The kernel manages {{ $value | humanize1024 }}B (MemTotal), less than the "
        "profile's ${memory_text} allows for (${memory_floor_text} after firmware and page "
        "tables). A DIMM failed to train, was removed, or memory went offline.",
        threshold="MemTotal below the profile's memory less its tolerance (${memory_floor_text})",
        labels=(("reason", "memory_below_profile"),),
        source=("nodeslo_inventory_memory_bytes",),
        when=lambda p: p.inventory.memory_bytes is not None,
        held_through_gaps=True,
    ),
    HealthAlert(
        name="MemoryCapacityDegraded",
        group="inventory",
        severity=WARNING,
        expr="sum by (${by}) (nodeslo_inventory_dimms) < ${dimms_total}",
        for_=900,
        summary="Fewer DIMMs " + ON + " than the profile specifies",
        description="EDAC reports {{ $value }} DIMMs; the profile specifies ${dimms_total} "
        "(inventory.dimms_per_socket x sockets). A DIMM that failed to train at boot is "
        "missing from EDAC's list: its channel runs empty and bandwidth drops with it.",
        threshold="fewer DIMMs than dimms_per_socket x sockets (${dimms_total})",
        labels=(("reason", "dimms_below_profile"),),
        source=("nodeslo_inventory_dimms",),
        when=lambda p: bool(p.inventory.dimms_per_socket and p.inventory.sockets),
        held_through_gaps=True,
    ),
    HealthAlert(
        name="MemoryCapacityDegraded",
        group="inventory",
        severity=WARNING,
        expr="""
nodeslo_inventory_memory_bytes
< ${capacity_keep} * max_over_time(${memory_record}[${capacity_lookback}])
""",
        for_=900,
        summary="Memory " + ON + " shrank since an earlier boot",
        description="The kernel manages {{ $value | humanize1024 }}B, more than "
        "${capacity_drop_text} less than the host had within ${capacity_lookback}: a DIMM "
        "that trained before did not at the last boot, or memory went offline.",
        threshold="MemTotal more than ${capacity_drop_text} below its maximum over "
        "${capacity_lookback}",
        labels=(("reason", "memory_shrank"),),
        source=("nodeslo_inventory_memory_bytes",),
        held_through_gaps=True,
    ),
    HealthAlert(
        name="MemoryCapacityDegraded",
        group="inventory",
        severity=WARNING,
        expr="""
sum by (${by}) (nodeslo_inventory_dimms)
< max_over_time(${dimms_record}[${capacity_lookback}])
""",
        for_=900,
        summary="Fewer DIMMs " + ON + " than at an earlier boot",
        description="EDAC reports {{ $value }} DIMMs, fewer than the host had within "
        "${capacity_lookback}: a DIMM failed to train at the last boot.",
        threshold="fewer DIMMs than the most within ${capacity_lookback}",
        labels=(("reason", "dimms_fewer"),),
        source=("nodeslo_inventory_dimms",),
        held_through_gaps=True,
    ),
    HealthAlert(
        name="InventoryNonConforming",
        group="inventory",
        severity=WARNING,
        expr="""
nodeslo_inventory_info{item!~"${inventory_elsewhere}"}
and on (${by}, item)
(nodeslo_inventory_compliant == 0)
""",
        for_=3600,
        summary="{{ $labels.item }} " + ON + " differs from the profile",
        description="{{ $labels.item }}: the profile's inventory expects "
        "{{ $labels.expected }}; the host has {{ $labels.actual }}. `nodeslo check` on the "
        "host prints the whole inventory.",
        threshold="a line of the profile's `inventory:` not met for 1h",
        source=("nodeslo_inventory_info", "nodeslo_inventory_compliant"),
        held_through_gaps=True,
    ),
)
