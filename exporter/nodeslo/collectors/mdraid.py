"""md RAID as the kernel reports it: /sys/block/mdX/md/ (Documentation/admin-guide/md.rst).

What node_exporter 1.10's mdadm collector reads there (procfs `sysfs.Mdraids`), and the
member states and mismatch count besides:

    md/array_state       clear, inactive, suspended, readonly, read-auto, clean, active,
                         write-pending, active-idle, broken
    md/level             raid0 ... raid10, linear, multipath; empty while inactive
    md/raid_disks        members of the complete array; empty while inactive
    md/degraded          members missing (redundant levels, while running)
    md/sync_action       idle, resync, recover, check, repair, reshape, frozen
    md/sync_completed    "done / total" sectors, "none", or "delayed"
    md/mismatch_cnt      sectors the last check or repair found inconsistent
    md/dev-<member>/state  comma list: faulty, in_sync, journal, write_mostly, blocked,
                         spare, write_error, want_replacement, replacement, external_bbl,
                         failfast

Seen under QEMU on Debian's 6.1 kernel (tests/test_nvme_qemu.py): an array assembled by
`mdadm --incremental` with too few members is `inactive` with an empty level and
raid_disks, no degraded or sync files, and every member `spare`; a raid1 whose last
member is failed, or a raid0 that lost one, reads `broken`; `mdadm --stop` removes
/sys/block/mdX altogether. /proc/mdstat holds nothing this lacks, so it is not read.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from nodeslo.paths import Roots
from nodeslo.readers import ReadError, list_dir, read_text, to_u64

ARRAY_STATES = (
    "clear",
    "inactive",
    "suspended",
    "readonly",
    "read-auto",
    "clean",
    "active",
    "write-pending",
    "active-idle",
    "broken",
)
# The states in which the kernel serves I/O from the array.
RUNNING_STATES = frozenset(
    {"readonly", "read-auto", "clean", "active", "write-pending", "active-idle"}
)
MEMBER_STATE = re.compile(r"^[a-z_]{1,32}$")
_SYNC_COMPLETED = re.compile(r"^(\d+)\s*/\s*(\d+)$")


@dataclass(frozen=True)
class MdMember:
    name: str  # the member's block device: nvme0n1, sda2
    states: frozenset[str]

    @property
    def faulty(self) -> bool:
        return "faulty" in self.states

    @property
    def in_sync(self) -> bool:
        return "in_sync" in self.states and not self.faulty

    @property
    def spare(self) -> bool:
        """Neither in sync nor failed: a hot spare, a member being rebuilt, or any member
        of an inactive array (the kernel says `spare` for all three)."""
        return not (self.faulty or self.in_sync or "journal" in self.states)


@dataclass(frozen=True)
class MdArray:
    device: str
    state: str  # array_state; "" when it could not be read
    level: str  # "" while inactive
    raid_disks: int | None
    degraded: int | None  # None for raid0/linear and while inactive
    sync_action: str | None  # None when idle or not a redundant level
    sync_progress: float | None  # 0..1; 0 while the sync waits its turn ("delayed")
    mismatched_sectors: int | None
    members: tuple[MdMember, ...]
    problems: tuple[str, ...]  # what could not be read or parsed, with the file

    @property
    def running(self) -> bool:
        return self.state in RUNNING_STATES

    @property
    def active_members(self) -> int:
        return sum(1 for m in self.members if m.in_sync)

    @property
    def failed_members(self) -> int:
        return sum(1 for m in self.members if m.faulty)

    @property
    def spare_members(self) -> int:
        return sum(1 for m in self.members if m.spare)


# --- pure decoders ------------------------------------------------------------------


def parse_sync_completed(text: str) -> float | None:
    """`done / total` sectors as a ratio; None for "none"; 0 for "delayed" (queued)."""
    if text == "none":
        return None
    if text == "delayed":
        return 0.0
    match = _SYNC_COMPLETED.match(text)
    if match is None:
        raise ValueError(f"not 'done / total': {text[:40]!r}")
    done, total = to_u64(match.group(1)), to_u64(match.group(2))
    if total == 0:
        raise ValueError(f"total of 0 sectors: {text!r}")
    return min(1.0, done / total)


def parse_member_state(text: str) -> frozenset[str]:
    """The comma list of dev-*/state; words that are no state name are refused."""
    words = frozenset(w for w in text.split(",") if w)
    bad = [w for w in words if not MEMBER_STATE.match(w)]
    if bad or not words:
        raise ValueError(f"not a member state list: {text[:60]!r}")
    return words


def parse_count(text: str) -> int | None:
    """raid_disks, degraded, mismatch_cnt: a count, or None when empty (inactive)."""
    if text == "":
        return None
    return to_u64(text)  # a count the kernel cannot print (negative, past 64 bits) is refused


# --- reading ------------------------------------------------------------------------


class _Attributes:
    """Reads one array's attributes, keeping what failed as problems (with the path)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.problems: list[str] = []

    def text(self, name: str) -> str | None:
        path = os.path.join(self.directory, name)
        try:
            return read_text(path)
        except ReadError as exc:
            self.problems.append(str(exc))
            return None

    def count(self, name: str) -> int | None:
        text = self.text(name)
        if text is None:
            return None
        try:
            return parse_count(text)
        except ValueError:
            self.problems.append(f"{self.directory}/{name}: not a count: {text[:40]!r}")
            return None


class MdReader:
    """Every md array under --path.sysfs, read whole on each call (a few files each)."""

    def __init__(self, roots: Roots) -> None:
        self.block_dir = roots.sys("block")

    def arrays(self) -> list[MdArray]:
        """Arrays present now; one that vanishes while it is read is left out.
        ReadError only when /sys/block itself cannot be listed."""
        out = []
        for name in list_dir(self.block_dir):
            if name.startswith("md"):
                array = self.read_array(name)
                if array is not None:
                    out.append(array)
        return out

    def read_array(self, device: str) -> MdArray | None:
        attrs = _Attributes(os.path.join(self.block_dir, device, "md"))
        state = attrs.text("array_state")
        if state is None and not attrs.problems:
            return None  # not an md array (no md/), or stopped since the listing
        if state is not None and state not in ARRAY_STATES:
            attrs.problems.append(f"{attrs.directory}/array_state: unknown state {state!r}")
        level = attrs.text("level") or ""
        raid_disks = attrs.count("raid_disks")
        degraded = attrs.count("degraded")
        mismatched = attrs.count("mismatch_cnt")
        action = attrs.text("sync_action")
        progress: float | None = None
        if action is not None and action not in ("idle", "frozen"):
            completed = attrs.text("sync_completed")
            if completed is not None:
                try:
                    progress = parse_sync_completed(completed)
                except ValueError as exc:
                    attrs.problems.append(f"{attrs.directory}/sync_completed: {exc}")
        else:
            action = None
        members = self._members(attrs)
        return MdArray(
            device=device,
            state=state if state in ARRAY_STATES else "",
            level=level,
            raid_disks=raid_disks,
            degraded=degraded,
            sync_action=action if progress is not None else None,
            sync_progress=progress,
            mismatched_sectors=mismatched,
            members=members,
            problems=tuple(attrs.problems),
        )

    def _members(self, attrs: _Attributes) -> tuple[MdMember, ...]:
        members = []
        try:
            entries = list_dir(attrs.directory)
        except ReadError as exc:
            attrs.problems.append(str(exc))
            return ()
        for entry in entries:
            if not entry.startswith("dev-"):
                continue
            text = attrs.text(f"{entry}/state")
            if text is None:
                continue  # removed from the array since the listing, or unreadable
            try:
                states = parse_member_state(text)
            except ValueError as exc:
                attrs.problems.append(f"{attrs.directory}/{entry}/state: {exc}")
                continue
            members.append(MdMember(entry.removeprefix("dev-"), states))
        return tuple(members)
