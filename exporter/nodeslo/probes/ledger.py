"""The daemon's books of the storage probe: merged reports, and what nobody measured.

The probe process counts everything it could have measured (see `storage`: on-time,
overdue and missed operations). This ledger merges its reports and adds what no
process measured: from the moment a probe process ends (crashed, killed because it hung
or was stopped, failed to start) to the start of the next one's schedule, every
intended operation — `rate` per second per operation of each target — is *missed* with
the reason `probe_down`, observed in the same histogram as soon as its would-be latency
passes the operation's threshold. Missing data is never good news: a probe that cannot
run burns the SLOs it measures, and `nodeslo_probe_io_missed_total{reason="probe_down"}`
says why. A profile reload that restarts the probe opens no gap.

It also knows, per operation, when it was last seen well: an attempt completed (with
success or error) or the operation waiting idle for its next start, as the probe's own
monotonic clock reported it (CLOCK_MONOTONIC is one clock for the whole host). The stall
is the time since then (or since the target was configured): about zero at any rate
while operations complete, growing while one hangs or no probe process runs, and not
reset by a probe process restarting on a volume that still hangs.

Pure bookkeeping under one lock, with an injected clock: no I/O, nothing blocks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from nodeslo.probes.histogram import LatencyHistogram, Snapshot, bound_ns
from nodeslo.probes.protocol import Message
from nodeslo.probes.storage import DEFAULT_OVERDUE_SECONDS, NS, OPS

MISSED_REASONS = ("blocked", "probe_down")


@dataclass
class LaneBook:
    """One operation of one target, as merged from every probe process so far."""

    histogram: LatencyHistogram
    overdue_ns: int
    errors: int = 0
    overdue: int = 0
    missed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MISSED_REASONS, 0))
    ok: bool = False
    reason: str = ""
    busy_ns: int = 0
    well_ns: int = 0  # last seen completing or idle
    gap_next_ns: int | None = None  # the next intended start of an unmeasured gap


@dataclass(frozen=True)
class LaneView:
    """One lane at scrape time."""

    target: str
    op: str
    histogram: Snapshot
    errors: int
    overdue: int
    missed: dict[str, int]
    stalled_seconds: float
    failing: str  # the reason of the last attempt's failure, "" when it succeeded


class StorageLedger:
    def __init__(self, clock: Callable[[], int] = time.monotonic_ns) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._bounds: tuple[float, ...] = ()
        self._period_ns = NS // 10
        self._lanes: dict[tuple[str, str], LaneBook] = {}
        self._since: dict[str, int] = {}  # target -> when it was configured
        self._info: dict[str, tuple[str, str, str]] = {}
        self._overdue: dict[tuple[str, str], float] = {}
        self._covered_ns: int | None = None  # the probe's reports cover time until here
        self._gap_end_ns: int | None = None  # the next process's schedule starts here
        self._gap_open = False

    # configuration ---------------------------------------------------------------------

    def configure(
        self,
        targets: Iterable[str],
        rate: float,
        bounds: tuple[float, ...],
        overdue: Iterable[tuple[str, str, float]],
    ) -> None:
        """The settings in force: new targets start their books; gone ones are dropped."""
        now = self.clock()
        keep = tuple(targets)
        with self._lock:
            if bounds != self._bounds:
                self._lanes.clear()  # new buckets: the series start again
                self._bounds = bounds
            self._period_ns = round(NS / rate)
            if self._covered_ns is None:  # a first process that never reports: a gap from now
                self._covered_ns = now
            self._overdue = {(t, o): s for t, o, s in overdue}
            for key in [k for k in self._lanes if k[0] not in keep]:
                del self._lanes[key]
            self._since = {t: self._since.get(t, now) for t in keep}
            self._info = {t: v for t, v in self._info.items() if t in keep}
            for target in keep:
                for op in self._ops(target):
                    self._lane(target, op)
                    self._lanes[(target, op)].overdue_ns = bound_ns(self._threshold(target, op))

    def _threshold(self, target: str, op: str) -> float:
        return self._overdue.get((target, op), DEFAULT_OVERDUE_SECONDS)

    def _ops(self, target: str) -> tuple[str, ...]:
        return ("read",) if self._info.get(target, ("",))[0] == "block" else OPS

    def _lane(self, target: str, op: str) -> LaneBook:
        book = self._lanes.get((target, op))
        if book is None:
            book = LaneBook(LatencyHistogram(self._bounds), bound_ns(self._threshold(target, op)))
            if self._gap_open:
                book.gap_next_ns = self.clock()
            self._lanes[(target, op)] = book
        return book

    # the probe process's reports -------------------------------------------------------

    def merge(self, message: Message) -> None:
        kind = message["t"]
        with self._lock:
            if kind == "hello":
                self._close_gap(int(message["start_ns"]))
            elif kind == "hist":
                target, op = (str(v) for v in message["labels"])
                if target in self._since:
                    self._lane(target, op).histogram.add(message["counts"], int(message["sum_ns"]))
            elif kind == "err":
                key = (str(message["target"]), str(message["op"]))
                if key[0] in self._since:
                    self._lane(*key).errors += int(message["n"])
            elif kind == "target":
                target = str(message["target"])
                if target in self._since:
                    info = (str(message["kind"]), str(message["mode"]), str(message["device"]))
                    self._info[target] = info
                    if info[0] == "block":  # only ever read: no write to wait for
                        self._lanes.pop((target, "write_sync"), None)
            elif kind == "status":
                self._covered_ns = at = int(message["at_ns"])
                for target, ops in message["targets"].items():
                    for op, state in ops.items():
                        if (target, op) in self._lanes:
                            self._merge_state(self._lanes[(target, op)], state, at)

    @staticmethod
    def _merge_state(book: LaneBook, state: dict[str, Any], at_ns: int) -> None:
        book.ok = bool(state["ok"])
        book.reason = str(state["reason"])
        book.busy_ns = int(state["busy_ns"])
        book.well_ns = max(book.well_ns, int(state["done_ns"]), 0 if book.busy_ns else at_ns)
        book.overdue += int(state["overdue"])
        book.missed["blocked"] += int(state["missed"])

    # gaps: no probe process measures ----------------------------------------------------

    def process_ended(self) -> None:
        """A probe process is gone (crashed, killed, never started): from the end of what
        its reports covered, every intended operation is missed until the next one starts."""
        now = self.clock()
        with self._lock:
            start = self._covered_ns if self._covered_ns is not None else now
            if not self._gap_open:
                self._gap_open = True
                self._gap_end_ns = None
                for book in self._lanes.values():
                    book.gap_next_ns = start
            for book in self._lanes.values():
                book.busy_ns = 0
                book.ok = False
            self._covered_ns = None

    def _close_gap(self, start_ns: int) -> None:
        self._covered_ns = start_ns
        if self._gap_open:
            self._gap_open = False
            self._gap_end_ns = start_ns
            self._account_gaps(self.clock())

    def _account_gaps(self, now: int) -> None:
        """Observe the gap's intended starts whose would-be latency passed the threshold."""
        period = self._period_ns
        for book in self._lanes.values():
            first = book.gap_next_ns
            if first is None:
                continue
            end = now - book.overdue_ns  # strictly before: older than the threshold
            if not self._gap_open and self._gap_end_ns is not None:
                end = min(end, self._gap_end_ns)
            n = max(0, -(-(end - first) // period))  # starts first + k*period < end
            if n:
                newest = first + (n - 1) * period
                book.histogram.observe_spaced(now - newest, period, n)
                book.missed["probe_down"] += n
                first += n * period
            closed = not self._gap_open and (self._gap_end_ns is None or first >= self._gap_end_ns)
            book.gap_next_ns = None if closed else first

    # scrape ------------------------------------------------------------------------------

    def healthy(self, stuck_after_seconds: float) -> bool:
        """Every operation's last attempt succeeded and none has been in flight too long."""
        now = self.clock()
        limit = round(stuck_after_seconds * NS)
        with self._lock:
            return bool(self._lanes) and all(
                book.ok and not (book.busy_ns and now - book.busy_ns >= limit)
                for book in self._lanes.values()
            )

    def info(self) -> dict[str, tuple[str, str, str]]:
        with self._lock:
            return dict(self._info)

    def view(self) -> list[LaneView]:
        now = self.clock()
        with self._lock:
            self._account_gaps(now)
            out = []
            for (target, op), book in sorted(self._lanes.items()):
                last = max(book.well_ns, self._since.get(target, now))
                out.append(
                    LaneView(
                        target,
                        op,
                        book.histogram.snapshot(),
                        book.errors,
                        book.overdue,
                        dict(book.missed),
                        max(0.0, (now - last) / NS),
                        "" if book.ok else book.reason,
                    )
                )
            return out

    def failing(self) -> dict[str, bool]:
        """Per target: whether any of its operations' last attempt failed."""
        with self._lock:
            out: dict[str, bool] = {}
            for (target, _), book in self._lanes.items():
                out[target] = out.get(target, False) or not book.ok
            return out
