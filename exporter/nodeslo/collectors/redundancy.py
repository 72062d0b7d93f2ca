"""Storage redundancy: md arrays from /proc/mdstat, ZFS pool state from the SPL kstats.

/proc/mdstat (drivers/md/md.c md_seq_show), one block per array:

    md0 : active raid10 nvme7n1[7] nvme6n1[6](F) ... nvme0n1[0]
          7501209600 blocks super 1.2 512K chunks 2 near-copies [8/7] [UUUUUU_U]
          [==>..................]  recovery = 12.6% (118185856/937651200) finish=... speed=...

- header: state (active, inactive), optional (read-only) / (auto-read-only), the
  personality (raid1, raid10, ...; none when inactive), members `name[slot]` with
  suffixes (F) faulty, (S) spare, (W) write-mostly, (J) journal, (R) replacement;
- status line: `[raid_disks/working] [U_]`, one U per in-sync slot, printed by the
  redundant personalities only (not by raid0 or linear);
- progress line: `resync|recovery|check|reshape = P% (done/total)`, or
  `resync=DELAYED` / `resync=PENDING` for a sync waiting its turn.

ZFS (OpenZFS >= 0.8): /proc/spl/kstat/zfs/<pool>/state holds one word, the pool state.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import Metric

from nodeslo.collectors.base import Collector, CollectorContext
from nodeslo.collectors.registry import register
from nodeslo.metrics import Desc, add
from nodeslo.paths import Roots
from nodeslo.readers import ReadError, list_dir, read_all, read_text, to_u64

MD_DISKS = Desc(
    "nodeslo_md_disks",
    "gauge",
    "md array members by state: active (in-sync slots), down (slots without an in-sync "
    "member), failed (members marked faulty), spare (hot spares).",
    ("device", "state"),
)
MD_DISKS_REQUIRED = Desc(
    "nodeslo_md_disks_required",
    "gauge",
    "Slots the md array needs for full redundancy (raid_disks).",
    ("device",),
)
MD_SYNC_PROGRESS = Desc(
    "nodeslo_md_sync_progress_ratio",
    "gauge",
    "Progress of a running resync, recovery, check or reshape (0 while delayed or pending).",
    ("device", "action"),
)
MD_ACTIVE = Desc(
    "nodeslo_md_active",
    "gauge",
    "1 when the md array is running (read-only included), 0 when assembled but inactive.",
    ("device",),
)
MD_INFO = Desc(
    "nodeslo_md_info",
    "gauge",
    "Always 1; the array's RAID level (personality).",
    ("device", "level"),
)
ZFS_POOL_STATE = Desc(
    "nodeslo_zfs_pool_state",
    "gauge",
    "1 for the ZFS pool's current state, 0 for the others.",
    ("pool", "state"),
)

PERSONALITIES = frozenset(
    {"linear", "multipath", "raid0", "raid1", "raid4", "raid5", "raid6", "raid10", "faulty"}
)
# Personalities that print the [n/m] [U_] status; the others have no redundancy to report.
REDUNDANT = frozenset({"multipath", "raid1", "raid4", "raid5", "raid6", "raid10"})
SYNC_ACTIONS = ("resync", "recovery", "check", "reshape")
ZFS_STATES = ("ONLINE", "DEGRADED", "FAULTED", "OFFLINE", "REMOVED", "UNAVAIL", "SUSPENDED")
MD_DISK_STATES = ("active", "down", "failed", "spare")

_HEADER = re.compile(r"^(\S+)\s*:\s*(active|inactive)\b(.*)$")
_MEMBER = re.compile(r"^([^\[\s]+)\[(\d+)\]((?:\([A-Z]\))*)$")
_STATUS = re.compile(r"\[(\d+)/(\d+)\]\s*\[([U_]*)\]")
_PROGRESS = re.compile(
    r"\b(resync|recovery|check|reshape)\s*=\s*(?:(\d+(?:\.\d+)?)%\s*(?:\((\d+)/(\d+)\))?"
    r"|(DELAYED|PENDING))"
)


OnError = Callable[[str, Exception], None]


class MalformedMdstat(ValueError):
    pass


@dataclass(frozen=True)
class MdMember:
    name: str
    slot: int
    flags: str  # "F", "S", "W", "J", "R" in any combination

    @property
    def faulty(self) -> bool:
        return "F" in self.flags

    @property
    def spare(self) -> bool:
        return "S" in self.flags and not self.faulty


@dataclass(frozen=True)
class MdArray:
    device: str
    active: bool
    read_only: bool
    level: str  # "" when inactive
    members: tuple[MdMember, ...]
    raid_disks: int | None  # from [n/m]; None without a status
    in_sync: str | None  # the [U_] string
    sync_action: str | None
    sync_progress: float | None  # 0..1
    problems: tuple[str, ...]  # what did not parse: the array is reported from the rest

    @property
    def failed(self) -> int:
        return sum(1 for m in self.members if m.faulty)

    @property
    def spares(self) -> int:
        return sum(1 for m in self.members if m.spare)

    @property
    def working(self) -> int:
        """In-sync slots: the U's of the status, or the live members without one."""
        if self.in_sync is not None:
            return self.in_sync.count("U")
        return sum(1 for m in self.members if not (m.faulty or m.spare or "J" in m.flags))

    @property
    def down(self) -> int | None:
        return None if self.in_sync is None else self.in_sync.count("_")

    @property
    def degraded(self) -> bool:
        return not self.active or (self.raid_disks is not None and self.working < self.raid_disks)


def _parse_header(rest: str) -> tuple[bool, str, list[MdMember], list[str]]:
    read_only = False
    level = ""
    members: list[MdMember] = []
    problems: list[str] = []
    for token in rest.split():
        if token in ("(read-only)", "(auto-read-only)"):
            read_only = True
            continue
        match = _MEMBER.match(token)
        if match:
            flags = match.group(3).replace("(", "").replace(")", "")
            members.append(MdMember(match.group(1), int(match.group(2)), flags))
        elif not level and not members:
            level = token
            if token not in PERSONALITIES:
                problems.append(f"unknown personality {token!r}")
        else:
            problems.append(f"unexpected token {token!r}")
    return read_only, level, members, problems


def _parse_array(device: str, state: str, rest: str, body: list[str]) -> MdArray:
    read_only, level, members, problems = _parse_header(rest)
    active = state == "active"
    raid_disks: int | None = None
    in_sync: str | None = None
    action: str | None = None
    progress: float | None = None
    has_blocks = False
    for line in body:
        if " blocks" in line or line.strip().endswith("blocks"):
            has_blocks = True
        try:
            status = _STATUS.search(line)
            if status and in_sync is None:
                disks, working = to_u64(status.group(1)), to_u64(status.group(2))
                raid_disks, in_sync = disks, status.group(3)
                if len(in_sync) != raid_disks or in_sync.count("U") != working:
                    problems.append(f"status [{raid_disks}/{working}] [{in_sync}] is inconsistent")
            sync = _PROGRESS.search(line)
            if sync and action is None:
                action = sync.group(1)
                if sync.group(5):  # DELAYED / PENDING: queued behind another array
                    progress = 0.0
                elif sync.group(3) and to_u64(sync.group(4)) > 0:
                    progress = min(1.0, to_u64(sync.group(3)) / to_u64(sync.group(4)))
                else:
                    progress = min(1.0, float(sync.group(2)) / 100)
        except ValueError as exc:  # a number no kernel prints: this line is left out
            problems.append(f"{line.strip()[:60]!r}: {exc}")
    if active and not has_blocks:
        problems.append("missing status line")
    elif active and in_sync is None and level in REDUNDANT:
        problems.append(f"{level} status line without [n/m] [U_]")
    return MdArray(
        device=device,
        active=active,
        read_only=read_only,
        level=level,
        members=tuple(members),
        raid_disks=raid_disks,
        in_sync=in_sync,
        sync_action=action,
        sync_progress=progress,
        problems=tuple(problems),
    )


def parse_mdstat(text: str) -> list[MdArray]:
    """Every array in /proc/mdstat. Lines that belong to no array raise MalformedMdstat."""
    arrays: list[MdArray] = []
    current: tuple[str, str, str] | None = None
    body: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if line[0].isspace():
            if current is None:
                raise MalformedMdstat(f"line {number}: continuation outside an array")
            body.append(line)
            continue
        if line.startswith(("Personalities", "unused devices", "read_ahead", "Event:")):
            continue
        header = _HEADER.match(line)
        if header is None:
            raise MalformedMdstat(f"line {number}: not an array header: {line.strip()[:60]!r}")
        if current is not None:
            arrays.append(_parse_array(*current, body))
        current, body = (header.group(1), header.group(2), header.group(3)), []
    if current is not None:
        arrays.append(_parse_array(*current, body))
    return arrays


@dataclass(frozen=True)
class ZfsPool:
    name: str
    state: str


class RedundancyReader:
    """Reads md arrays and ZFS pools; both are cheap and read whole on each call."""

    def __init__(self, roots: Roots) -> None:
        self.mdstat_path = roots.proc("mdstat")
        self.zfs_dir = roots.proc("spl", "kstat", "zfs")

    def md_arrays(self) -> list[MdArray] | None:
        """None when md is not in the kernel; MalformedMdstat names the bad line."""
        raw = read_all(self.mdstat_path)
        if raw is None:
            return None
        return parse_mdstat(raw.decode("utf-8", "replace"))

    def zfs_pools(self, on_error: OnError) -> list[ZfsPool]:
        """Pools with a state kstat; a pool exported while we list it is simply not there."""
        pools = []
        for entry in list_dir(self.zfs_dir):
            try:
                state = read_text(f"{self.zfs_dir}/{entry}/state")
            except ReadError as exc:
                on_error(f"zfs:{entry}", exc)
                continue
            if state is not None:  # None for arcstats and the other global kstats
                pools.append(ZfsPool(entry, state))
        return pools


@register
class RedundancyCollector(Collector):
    name = "redundancy"
    help = "md RAID arrays (/proc/mdstat) and ZFS pool states."

    def __init__(self, ctx: CollectorContext) -> None:
        super().__init__(ctx)
        self._reader = RedundancyReader(ctx.roots)

    def collect(self) -> Iterator[Metric]:
        yield from self._collect_md()
        yield self._collect_zfs()

    def _collect_md(self) -> Iterator[Metric]:
        try:
            arrays = self._reader.md_arrays()
        except (ReadError, MalformedMdstat) as exc:
            self.skip("mdstat", ValueError(f"{self._reader.mdstat_path}: {exc}"))
            return
        if not arrays:
            return
        disks, required = MD_DISKS.family(), MD_DISKS_REQUIRED.family()
        progress, active, info = MD_SYNC_PROGRESS.family(), MD_ACTIVE.family(), MD_INFO.family()
        for array in arrays:
            dev = array.device
            for problem in array.problems:
                self.skip(
                    f"mdstat:{dev}", ValueError(f"{self._reader.mdstat_path}: {dev}: {problem}")
                )
            add(active, [dev], 1 if array.active else 0)
            if array.level:
                add(info, [dev, array.level], 1)
            counts = {"active": array.working, "failed": array.failed, "spare": array.spares}
            if array.down is not None:
                counts["down"] = array.down
            for state in MD_DISK_STATES:
                if state in counts:
                    add(disks, [dev, state], counts[state])
            if array.raid_disks is not None:
                add(required, [dev], array.raid_disks)
            if array.sync_action is not None and array.sync_progress is not None:
                add(progress, [dev, array.sync_action], array.sync_progress)
        yield from (disks, required, progress, active, info)

    def _collect_zfs(self) -> Metric:
        family = ZFS_POOL_STATE.family()
        try:
            pools = self._reader.zfs_pools(self.skip)
        except ReadError as exc:
            self.skip("zfs", exc)
            return family
        for pool in pools:
            if pool.state not in ZFS_STATES:
                # All zeros: an alert on state="ONLINE" != 1 still fires.
                self.skip(
                    f"zfs:{pool.name}",
                    ValueError(f"pool {pool.name}: unknown state {pool.state!r}"),
                )
            for state in ZFS_STATES:
                add(family, [pool.name, state], 1 if pool.state == state else 0)
        return family
