"""Summing many kernel counters into one series that never goes backwards.

An aggregate counter (C-state residency summed over 256 CPUs, throttle time summed
over a package's cores) is only a counter if its sum never decreases. Summing what is
readable right now breaks that: a CPU taken offline, a value that failed to read this
scrape, or a source whose counter restarted (a device re-registered) drops the sum,
and Prometheus' rate() reads the drop as a reset and adds the whole sum back as one
spike. So each source is tracked across scrapes:

- a source that restarts (new < last) keeps its old total as an offset;
- a source that is unreadable or gone keeps contributing its last total, frozen;
- a source first seen after the first scrape (a CPU brought online, a reading moved
  to an SMT sibling) contributes only what it counts from then on.

Per-source sums therefore equal the kernel's sums while the set of sources is stable,
and stay monotonic when it is not.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence


class CounterTrack:
    """A few counters of one source (one CPU's idle state, one core), followed across scrapes."""

    __slots__ = ("base", "fresh", "last")

    def __init__(self, width: int, fresh: bool) -> None:
        self.last = [-1] * width  # -1: not read yet
        self.base = [0] * width
        self.fresh = fresh

    def update(self, index: int, raw: int) -> None:
        last = self.last[index]
        if raw < last:  # the kernel's counter restarted
            self.base[index] += last
        elif last < 0 and self.fresh:
            self.base[index] = -raw
        self.last[index] = raw

    def total(self, index: int) -> int:
        last = self.last[index]
        return self.base[index] + last if last >= 0 else 0


class CounterSums:
    """The tracks of all sources ever seen, and the frozen totals of those not live now."""

    def __init__(self, width: int) -> None:
        self.width = width
        self._tracks: dict[Hashable, CounterTrack] = {}
        self._groups: dict[Hashable, Hashable] = {}
        self._started = False
        self.retired: dict[Hashable, list[int]] = {}

    def rebuild(self, live: Sequence[tuple[Hashable, Hashable]]) -> list[CounterTrack]:
        """The set of live sources changed: (key, group) pairs -> their tracks, in order.

        Sources no longer live are folded into `retired[group]`.
        """
        tracks = []
        for key, group in live:
            track = self._tracks.get(key)
            if track is None:
                track = self._tracks[key] = CounterTrack(self.width, self._started)
            self._groups[key] = group
            tracks.append(track)
        live_keys = {key for key, _ in live}
        retired: dict[Hashable, list[int]] = {}
        for key, track in self._tracks.items():
            if key in live_keys:
                continue
            sums = retired.setdefault(self._groups[key], [0] * self.width)
            for i in range(self.width):
                sums[i] += track.total(i)
        self.retired = retired
        self._started = True
        return tracks

    def retired_total(self, group: Hashable, index: int) -> int:
        sums = self.retired.get(group)
        return sums[index] if sums is not None else 0
