"""Busy core time held below a frequency target: the throttling signal of CPUs that have
no thermal_throttle counters (AMD). Pure decoding and accounting; the thermal collector
does the reading.

Between two scrapes, each physical core was busy for the longest busy time of its SMT
siblings (`/proc/stat`: user + nice + system + irq + softirq; idle, iowait and steal
are not busy). If the core's frequency at the scrape (the highest of its siblings'
`cpuinfo_avg_freq`, else `scaling_cur_freq`) is below the target, that busy time was
held below the target. A core whose frequency cannot be read counts as below: an
unknown frequency is not evidence of an unthrottled core.

Why here and not in the rules: the judgement needs, for the same core at the same
moment, both how busy it was and how fast it ran. The rules only see what the exporter
aggregates per package (per-CPU series would be 512 more series per host), and a
package's average frequency mixes the meaningless readings of idle cores (the
frequency the governor last requested) with those of the busy ones. Weighting by busy
time also keeps idle cores, whose readings say nothing, from counting at all.

The frequency is sampled once per scrape while the busy time covers the whole interval:
a core that ran slow for part of it counts in full or not at all. Over an SLO's windows
(5m to 30d, with 15-60s scrapes) this is an unbiased sample, not a hardware average
(APERF/MPERF over the interval would need root to read MSRs).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

# /proc/stat counts in USER_HZ ticks (100 on every Linux architecture in practice).
USER_HZ = os.sysconf("SC_CLK_TCK")

# The counters of a `cpuN` line of /proc/stat, in order; guest time is already in user.
_USER, _NICE, _SYSTEM, _IDLE, _IOWAIT, _IRQ, _SOFTIRQ, _STEAL = range(8)


def parse_cpu_ticks(text: str) -> dict[int, tuple[int, int]]:
    """The `cpuN` lines of /proc/stat -> {N: (busy ticks, all ticks)}.

    Raises ValueError on a line that does not parse (fewer than 7 counters, not numbers).
    """
    ticks: dict[int, tuple[int, int]] = {}
    for line in text.splitlines():
        if not line.startswith("cpu") or line.startswith("cpu "):
            continue
        name, *fields = line.split()
        if not name[3:].isdigit() or len(fields) < 7:
            raise ValueError(f"not a per-CPU line: {line[:80]!r}")
        values = [int(f) for f in fields[:8]]
        steal = values[_STEAL] if len(values) > _STEAL else 0
        busy = values[_USER] + values[_NICE] + values[_SYSTEM] + values[_IRQ] + values[_SOFTIRQ]
        ticks[int(name[3:])] = (busy, busy + values[_IDLE] + values[_IOWAIT] + steal)
    return ticks


@dataclass(frozen=True)
class Core:
    """One physical core: its package and the logical CPUs (SMT siblings) that share it."""

    package: str
    cpus: tuple[int, ...]


@dataclass
class BusyBelowTarget:
    """Running totals per package, in core-seconds, since the first `update`."""

    user_hz: int = USER_HZ
    busy_seconds: dict[str, float] = field(default_factory=dict)
    below_seconds: dict[str, float] = field(default_factory=dict)
    _last: dict[int, tuple[int, int]] = field(default_factory=dict)

    def update(
        self,
        cores: Iterable[Core],
        ticks: dict[int, tuple[int, int]],
        khz: dict[int, int | None],
        target_khz: float,
    ) -> None:
        """Account the interval since the last update. `khz` maps a CPU to its current
        frequency (None: unreadable); CPUs absent from `ticks` (offline) add nothing."""
        for core in cores:
            self.busy_seconds.setdefault(core.package, 0.0)
            self.below_seconds.setdefault(core.package, 0.0)
            busy_ticks = 0
            seen = False
            fastest: int | None = None
            for cpu in core.cpus:
                now, before = ticks.get(cpu), self._last.get(cpu)
                if now is None or before is None:
                    continue
                seen = True
                # Counters that went back (a CPU that came back online) add nothing.
                busy_ticks = max(busy_ticks, now[0] - before[0])
                frequency = khz.get(cpu)
                if frequency is not None and (fastest is None or frequency > fastest):
                    fastest = frequency
            if not seen or busy_ticks <= 0:
                continue
            seconds = busy_ticks / self.user_hz
            self.busy_seconds[core.package] += seconds
            if fastest is None or fastest < target_khz:
                self.below_seconds[core.package] += seconds
        self._last = dict(ticks)
