"""Storage redundancy: md arrays from sysfs (collectors/mdraid.py), ZFS pool states.

md is judged by the kernel's own state of each array (array_state, degraded, the state
of each member), never by counting slots. ZFS (OpenZFS >= 0.8):
/proc/spl/kstat/zfs/<pool>/state holds one word, the pool state.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import Metric

from nodeslo.collectors.base import Collector, CollectorContext
from nodeslo.collectors.mdraid import ARRAY_STATES, MdArray, MdReader
from nodeslo.collectors.registry import register
from nodeslo.metrics import Desc, add
from nodeslo.paths import Roots
from nodeslo.readers import ReadError, list_dir, read_text

MD_STATE = Desc(
    "nodeslo_md_state",
    "gauge",
    "1 for the md array's state (sysfs array_state: clear, inactive, suspended, "
    "readonly, read-auto, clean, active, write-pending, active-idle, broken), 0 for the "
    "others; all 0 when the state cannot be read.",
    ("device", "state"),
)
MD_ACTIVE = Desc(
    "nodeslo_md_active",
    "gauge",
    "1 while the kernel runs the md array (readonly, read-auto, clean, active, "
    "write-pending, active-idle); 0 when it is assembled but not running (inactive), "
    "broken, or its state cannot be read.",
    ("device",),
)
MD_INFO = Desc(
    "nodeslo_md_info",
    "gauge",
    "Always 1 for each md array; its RAID level (sysfs level, empty while inactive).",
    ("device", "level"),
)
MD_DISKS_REQUIRED = Desc(
    "nodeslo_md_disks_required",
    "gauge",
    "Members of the complete md array (sysfs raid_disks), raid0 and linear included; "
    "absent while the array is inactive (the kernel does not know it yet).",
    ("device",),
)
MD_DEGRADED = Desc(
    "nodeslo_md_degraded",
    "gauge",
    "Members the md array is missing, the kernel's own count (sysfs degraded); "
    "redundant levels only, while the array runs.",
    ("device",),
)
MD_DISKS = Desc(
    "nodeslo_md_disks",
    "gauge",
    "md array members by state: active (in_sync), failed (faulty), spare (neither: a "
    "hot spare, a member being rebuilt, any member of an inactive array).",
    ("device", "state"),
)
MD_MEMBER_STATE = Desc(
    "nodeslo_md_member_state",
    "gauge",
    "1 for each state the kernel reports for an md array member (sysfs dev-*/state: "
    "in_sync, faulty, spare, write_mostly, blocked, write_error, want_replacement, "
    "replacement, journal, ...).",
    ("device", "member", "state"),
)
MD_SYNC_PROGRESS = Desc(
    "nodeslo_md_sync_progress_ratio",
    "gauge",
    "Progress of a running sync (sysfs sync_action: resync, recover, check, repair, "
    "reshape) from sync_completed; 0 while it waits its turn.",
    ("device", "action"),
)
MD_MISMATCHED = Desc(
    "nodeslo_md_mismatched_sectors",
    "gauge",
    "Sectors the last check or repair of the md array found inconsistent (sysfs mismatch_cnt).",
    ("device",),
)
ZFS_POOL_STATE = Desc(
    "nodeslo_zfs_pool_state",
    "gauge",
    "1 for the ZFS pool's current state, 0 for the others. A state this exporter does "
    "not know is exported under its own name (UNKNOWN if it is not a word).",
    ("pool", "state"),
)

MD_DISK_STATES = ("active", "failed", "spare")
ZFS_STATES = ("ONLINE", "DEGRADED", "FAULTED", "OFFLINE", "REMOVED", "UNAVAIL", "SUSPENDED")
# An unknown pool state goes into a label as it is, if it looks like one: bounded.
_ZFS_STATE_WORD = re.compile(r"^[A-Z_]{1,32}$")

OnError = Callable[[str, Exception], None]


@dataclass(frozen=True)
class ZfsPool:
    name: str
    state: str


class ZfsReader:
    """Pool states from the SPL kstats; cheap, read whole on each call."""

    def __init__(self, roots: Roots) -> None:
        self.kstat_dir = roots.proc("spl", "kstat", "zfs")

    def pools(self, on_error: OnError) -> list[ZfsPool]:
        """Pools with a state kstat; a pool exported while we list it is simply not there."""
        pools = []
        for entry in list_dir(self.kstat_dir):
            try:
                state = read_text(f"{self.kstat_dir}/{entry}/state")
            except ReadError as exc:
                on_error(f"zfs:{entry}", exc)
                continue
            if state is not None:  # None for arcstats and the other global kstats
                pools.append(ZfsPool(entry, state))
        return pools


def zfs_state_label(state: str) -> str:
    """The `state` label of a pool state: the known ones as they are, an unknown word
    (a newer OpenZFS) under its own name, anything else as UNKNOWN."""
    if state in ZFS_STATES or _ZFS_STATE_WORD.match(state):
        return state
    return "UNKNOWN"


@register
class RedundancyCollector(Collector):
    name = "redundancy"
    help = "md RAID arrays (sysfs md/) and ZFS pool states."

    def __init__(self, ctx: CollectorContext) -> None:
        super().__init__(ctx)
        self._md = MdReader(ctx.roots)
        self._zfs = ZfsReader(ctx.roots)

    def collect(self) -> Iterator[Metric]:
        yield from self._collect_md()
        yield self._collect_zfs()

    def _collect_md(self) -> Iterator[Metric]:
        try:
            arrays = self._md.arrays()
        except ReadError as exc:
            self.skip("md", exc)
            return
        if not arrays:
            return
        families = {
            d: d.family()
            for d in (
                MD_INFO,
                MD_STATE,
                MD_ACTIVE,
                MD_DISKS_REQUIRED,
                MD_DEGRADED,
                MD_DISKS,
                MD_MEMBER_STATE,
                MD_SYNC_PROGRESS,
                MD_MISMATCHED,
            )
        }
        for array in arrays:
            for problem in array.problems:
                self.skip(f"md:{array.device}", ValueError(problem))
            self._md_array(families, array)
        yield from families.values()

    @staticmethod
    def _md_array(families: dict[Desc, Metric], array: MdArray) -> None:
        dev = [array.device]
        add(families[MD_INFO], [array.device, array.level], 1)
        for state in ARRAY_STATES:
            add(families[MD_STATE], [array.device, state], 1 if array.state == state else 0)
        add(families[MD_ACTIVE], dev, 1 if array.running else 0)
        if array.raid_disks is not None:
            add(families[MD_DISKS_REQUIRED], dev, array.raid_disks)
        if array.degraded is not None:
            add(families[MD_DEGRADED], dev, array.degraded)
        counts = (array.active_members, array.failed_members, array.spare_members)
        for state, count in zip(MD_DISK_STATES, counts, strict=True):
            add(families[MD_DISKS], [array.device, state], count)
        for member in array.members:
            for state in sorted(member.states):
                add(families[MD_MEMBER_STATE], [array.device, member.name, state], 1)
        if array.sync_action is not None and array.sync_progress is not None:
            add(families[MD_SYNC_PROGRESS], [array.device, array.sync_action], array.sync_progress)
        if array.mismatched_sectors is not None:
            add(families[MD_MISMATCHED], dev, array.mismatched_sectors)

    def _collect_zfs(self) -> Metric:
        family = ZFS_POOL_STATE.family()
        try:
            pools = self._zfs.pools(self.skip)
        except ReadError as exc:
            self.skip("zfs", exc)
            return family
        for pool in pools:
            label = zfs_state_label(pool.state)
            if label not in ZFS_STATES:
                self.skip(
                    f"zfs:{pool.name}",
                    ValueError(
                        f"{self._zfs.kstat_dir}/{pool.name}/state: unknown state "
                        f"{pool.state[:40]!r}, exported as state={label!r}"
                    ),
                )
            for state in ZFS_STATES:
                add(family, [pool.name, state], 1 if label == state else 0)
            if label not in ZFS_STATES:
                add(family, [pool.name, label], 1)
        return family
