"""Memory bandwidth per L3 domain, from resctrl memory bandwidth monitoring (MBM).

With resctrl mounted (`mount -t resctrl resctrl /sys/fs/resctrl`), every control group
(the root group and each top-level directory that has `mon_data`) holds
`mon_data/mon_L3_XX/{mbm_total_bytes,mbm_local_bytes}`: cumulative bytes for that
group's tasks, its MON groups included (Documentation/filesystems/resctrl.rst). The
host's bandwidth per domain is the sum over control groups.

That sum is kept monotonic across group churn: a removed group (or one whose RMID
restarted) would otherwise make the sum drop, and rate() would read the drop as a
counter reset and add the whole sum back as one spike. A group's last bytes stay in
the total after it is gone; a group created later contributes what it counts from
then on. A counter the hardware cannot read right now ("Unavailable", "Error", or
"Unassigned" when counter assignment leaves a group without a counter) keeps its
last value: these are states, not errors.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator

from prometheus_client.core import Metric

from nodeslo.collectors.base import Collector, CollectorContext
from nodeslo.collectors.registry import register
from nodeslo.metrics import Desc, add
from nodeslo.paths import Roots
from nodeslo.readers import ReadError, list_dir, parse_u64, read_text

BANDWIDTH = Desc(
    "nodeslo_memory_bandwidth_bytes_total",
    "counter",
    "Memory traffic of all tasks, per L3 domain (resctrl mbm_total_bytes summed over groups).",
    ("domain",),
)
LOCAL_BANDWIDTH = Desc(
    "nodeslo_memory_bandwidth_local_bytes_total",
    "counter",
    "Memory traffic to the domain's local memory, per L3 domain (resctrl mbm_local_bytes).",
    ("domain",),
)

RESCTRL_DIR = "fs/resctrl"
_DOMAIN = re.compile(r"^mon_L3_(\d+)$")
EVENTS = ("mbm_total_bytes", "mbm_local_bytes")
# Values the kernel prints instead of a number when a counter cannot be read now.
NOT_A_COUNT = frozenset({"Unavailable", "Error", "Unassigned"})
# Top-level entries that are not control groups.
NOT_GROUPS = frozenset({"info", "mon_data", "mon_groups"})


def parse_mbm(path: str, text: str) -> int | None:
    """An MBM counter: bytes, or None for the kernel's not-a-count states."""
    if text in NOT_A_COUNT:
        return None
    return parse_u64(path, text)


class MonotonicSums:
    """Per-domain sums of per-group counters that never decrease (see module doc)."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], int] = {}  # (group, domain) -> last raw value
        self._totals: dict[str, int] = {}
        self._started = False

    def update(self, readings: dict[tuple[str, str], int | None]) -> dict[str, int]:
        for (group, domain), raw in readings.items():
            if raw is None:
                continue
            last = self._last.get((group, domain))
            if last is None:
                # Known from the first scrape: all its bytes; created later: none yet.
                delta = 0 if self._started else raw
            elif raw < last:
                delta = raw  # the counter restarted from zero
            else:
                delta = raw - last
            self._totals[domain] = self._totals.get(domain, 0) + delta
            self._last[(group, domain)] = raw
        self._started = True
        return dict(self._totals)


class ResctrlReader:
    def __init__(self, roots: Roots) -> None:
        self.root = roots.sys(RESCTRL_DIR)

    def groups(self) -> list[tuple[str, str]]:
        """(group name, mon_data dir): the root group ('') and every control group."""
        out = [("", f"{self.root}/mon_data")]
        for entry in list_dir(self.root):
            if entry in NOT_GROUPS:
                continue
            mon_data = f"{self.root}/{entry}/mon_data"
            if list_dir(mon_data):  # a file, or a group without monitoring, has none
                out.append((entry, mon_data))
        return out

    def domains(self, mon_data: str) -> list[tuple[str, str]]:
        """(domain id, directory) for each mon_L3_XX."""
        out = []
        for entry in list_dir(mon_data):
            match = _DOMAIN.match(entry)
            if match:
                out.append((str(int(match.group(1))), f"{mon_data}/{entry}"))
        return out


@register
class ResctrlCollector(Collector):
    name = "resctrl"
    help = "Memory bandwidth per L3 domain (resctrl MBM), when resctrl is mounted."

    def __init__(self, ctx: CollectorContext) -> None:
        super().__init__(ctx)
        self._reader = ResctrlReader(ctx.roots)
        self._sums = {event: MonotonicSums() for event in EVENTS}
        self._lock = threading.Lock()

    def collect(self) -> list[Metric]:
        # Concurrent scrapes (the HTTP server is threaded) must feed the sums their
        # readings in order: an older reading after a newer one would look like a restart.
        with self._lock:
            return list(self._collect())

    def _collect(self) -> Iterator[Metric]:
        groups = self._reader.groups()
        readings: dict[str, dict[tuple[str, str], int | None]] = {e: {} for e in EVENTS}
        for group, mon_data in groups:
            for domain, directory in self._reader.domains(mon_data):
                for event in EVENTS:
                    path = f"{directory}/{event}"
                    try:
                        text = read_text(path)
                        if text is None:  # this event is not supported (e.g. no local MBM)
                            continue
                        readings[event][(group, domain)] = parse_mbm(path, text)
                    except ReadError as exc:
                        self.skip(f"{group or '/'}:{domain}:{event}", exc)
                        readings[event][(group, domain)] = None
        for event, desc in zip(EVENTS, (BANDWIDTH, LOCAL_BANDWIDTH), strict=True):
            if not readings[event]:
                continue
            family = desc.family()
            totals = self._sums[event].update(readings[event])
            for domain in sorted(totals, key=int):
                add(family, [domain], totals[domain])
            yield family
