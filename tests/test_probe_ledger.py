"""The daemon's books of the storage probe, on a fake clock: reports merged, the stall,
and the operations nobody measured while no probe process ran.

What a stopped, crashed or never-started probe process gets: every intended operation
of the gap counted bad (`missed`, reason `probe_down`) at the configured rate, once
(never again by the next process), and a stall that keeps growing.
"""

from __future__ import annotations

from nodeslo.probes.histogram import bound_ns, latency_bounds
from nodeslo.probes.ledger import LaneView, StorageLedger
from nodeslo.probes.storage import NS

BOUNDS = latency_bounds((50e-6, 100e-6))
TARGET = "/var/lib/nodeslo"
OVERDUE = ((TARGET, "write_sync", 100e-6), (TARGET, "read", 50e-6))
MS = 1_000_000


class Clock:
    def __init__(self) -> None:
        self.now = 5_000 * NS

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += round(seconds * NS)


def ledger(clock: Clock, rate: float = 10.0) -> StorageLedger:
    books = StorageLedger(clock)
    books.configure((TARGET,), rate, BOUNDS, OVERDUE)
    return books


def lanes(books: StorageLedger) -> dict[str, LaneView]:
    return {lane.op: lane for lane in books.view()}


def bad(view: LaneView, threshold: float) -> int:
    snap = view.histogram
    good = sum(
        n
        for b, n in zip(snap.bounds, snap.counts, strict=False)
        if bound_ns(b) <= bound_ns(threshold)
    )
    return snap.count - good


def status(books: StorageLedger, clock: Clock, *, done: bool = True, busy: int = 0) -> None:
    """One healthy report of the probe process, as `storage.report` sends it."""
    state = {
        "ok": True,
        "reason": "",
        "done_ns": clock.now if done else 0,
        "busy_ns": busy,
        "overdue": 0,
        "missed": 0,
    }
    books.merge(
        {
            "t": "status",
            "at_ns": clock.now,
            "targets": {TARGET: {"write_sync": dict(state), "read": dict(state)}},
        }
    )


def test_every_configured_operation_is_exported_from_the_start() -> None:
    clock = Clock()
    books = ledger(clock)
    clock.advance(3)
    views = lanes(books)
    assert set(views) == {"write_sync", "read"}
    for view in views.values():
        assert view.histogram.count == 0 and view.errors == 0
        assert view.missed == {"blocked": 0, "probe_down": 0}
        assert view.stalled_seconds == 3.0  # nothing completed since it was configured


def test_reports_are_merged_and_the_stall_is_the_time_since_last_seen_well() -> None:
    clock = Clock()
    books = ledger(clock)
    books.merge({"t": "hello", "start_ns": clock.now})
    books.merge(
        {"t": "hist", "labels": [TARGET, "read"], "counts": [0] * 6 + [7] + [0] * 24, "sum_ns": 1}
    )
    books.merge({"t": "err", "target": TARGET, "op": "write_sync", "n": 2, "msg": "x"})
    clock.advance(1)
    books.merge(
        {
            "t": "status",
            "at_ns": clock.now,
            "targets": {
                TARGET: {
                    "write_sync": {
                        "ok": False,
                        "reason": "io_error",
                        "done_ns": clock.now - 200 * MS,
                        "busy_ns": clock.now - 150 * MS,  # in flight since
                        "overdue": 1,
                        "missed": 9,
                    },
                    "read": {
                        "ok": True,
                        "reason": "",
                        "done_ns": clock.now - 50 * MS,
                        "busy_ns": 0,
                        "overdue": 0,
                        "missed": 0,
                    },
                }
            },
        }
    )
    clock.advance(0.5)
    views = lanes(books)
    assert views["read"].histogram.count == 7
    assert views["write_sync"].errors == 2
    assert (views["write_sync"].overdue, views["write_sync"].missed["blocked"]) == (1, 9)
    assert views["write_sync"].stalled_seconds == 0.7  # since its last completion
    assert views["read"].stalled_seconds == 0.5  # idle at the last report: well then
    assert views["write_sync"].failing == "io_error" and views["read"].failing == ""
    assert not books.healthy(5.0)


def test_an_operation_in_flight_too_long_makes_the_probe_unhealthy() -> None:
    clock = Clock()
    books = ledger(clock)
    status(books, clock)
    assert books.healthy(5.0)
    status(books, clock, busy=clock.now)
    clock.advance(4.9)
    assert books.healthy(5.0)
    clock.advance(0.2)
    assert not books.healthy(5.0)
    assert lanes(books)["read"].stalled_seconds == 5.1  # and the stall grows


def test_a_low_rate_is_no_stall_and_a_restart_on_a_hung_volume_does_not_reset_it() -> None:
    clock = Clock()
    books = ledger(clock, rate=0.001)  # one operation per 1000 s
    for _ in range(10):
        clock.advance(100)
        status(books, clock, done=False)  # idle, waiting for the next start
    assert all(v.stalled_seconds == 0.0 for v in books.view())
    status(books, clock, busy=clock.now)  # an attempt hangs
    hung = clock.now
    clock.advance(50)
    books.process_ended()  # a crash loop on top of it
    books.merge({"t": "hello", "start_ns": clock.now})
    clock.advance(1)
    status(books, clock, done=False, busy=clock.now - NS // 2)  # the new one hangs too
    assert all(v.stalled_seconds == (clock.now - hung) / NS for v in books.view())


def test_a_stopped_probe_process_counts_every_intended_operation_bad_once() -> None:
    """SIGSTOP: no report for 10 s, killed, restarted after its backoff. The gap, from
    the last report to the new process's first intended start, is all missed."""
    clock = Clock()
    books = ledger(clock)
    books.merge({"t": "hello", "start_ns": clock.now})
    clock.advance(1)
    status(books, clock)
    last_report = clock.now
    clock.advance(10)  # silent: stopped (the supervisor waits for its report timeout)
    books.process_ended()  # killed
    assert not books.healthy(5.0)
    clock.advance(20)  # the backoff, and a crash loop after it: still down
    views = lanes(books)
    for op, threshold in (("write_sync", 100e-6), ("read", 50e-6)):
        view = views[op]
        # 30 s at 10/s, each counted once its would-be latency passed the threshold
        assert view.missed["probe_down"] == 300
        assert view.histogram.count == bad(view, threshold) == 300
        assert view.stalled_seconds == 30.0
    # The next process starts its schedule 2 s later; its own reports cover from there.
    clock.advance(2)
    books.merge({"t": "hello", "start_ns": clock.now})
    new_start = clock.now
    clock.advance(60)
    status(books, clock)
    views = lanes(books)
    expected = (new_start - last_report) // (100 * MS)
    assert views["read"].missed["probe_down"] == expected == 320
    assert views["read"].histogram.count == 320  # nothing after the new start: no double count
    assert views["read"].stalled_seconds == 0.0
    assert books.healthy(5.0)


def test_a_probe_process_that_never_starts_is_a_gap_from_the_first_failure() -> None:
    clock = Clock()
    books = ledger(clock)
    books.process_ended()  # "cannot start python3: Permission denied"
    clock.advance(60)
    for view in lanes(books).values():
        assert view.missed["probe_down"] == 600
        assert view.stalled_seconds == 60.0


def test_a_first_process_that_never_reports_is_a_gap_from_the_configuration() -> None:
    clock = Clock()
    books = ledger(clock)
    clock.advance(60)  # started, silent until the supervisor's start timeout
    books.process_ended()
    clock.advance(10)
    for view in lanes(books).values():
        assert view.missed["probe_down"] == 700


def test_the_tail_of_a_gap_is_counted_once_its_starts_are_overdue() -> None:
    clock = Clock()
    books = ledger(clock, rate=1000.0)
    status(books, clock)
    books.process_ended()
    clock.advance(1.00005)  # 1001 starts 1 ms apart; the newest is 50 µs old
    books.merge({"t": "hello", "start_ns": clock.now})
    assert lanes(books)["write_sync"].missed["probe_down"] == 1000  # not the newest yet
    clock.advance(1)
    assert lanes(books)["write_sync"].missed["probe_down"] == 1001
    clock.advance(10)
    assert lanes(books)["write_sync"].missed["probe_down"] == 1001  # closed: no more


def test_a_profile_reload_opens_no_gap_and_new_targets_start_their_books() -> None:
    clock = Clock()
    books = ledger(clock)
    status(books, clock)
    clock.advance(5)
    books.configure((TARGET, "/srv/state"), 10.0, BOUNDS, OVERDUE)
    books.merge({"t": "hello", "start_ns": clock.now})  # the replaced process
    views = {(v.target, v.op): v for v in books.view()}
    assert views[("/srv/state", "read")].stalled_seconds == 0.0
    assert all(v.missed["probe_down"] == 0 for v in views.values())
    books.configure(("/srv/state",), 10.0, BOUNDS, ())
    assert {v.target for v in books.view()} == {"/srv/state"}


def test_a_block_device_target_has_no_write_to_wait_for() -> None:
    clock = Clock()
    books = StorageLedger(clock)
    books.configure(("/dev/nvme0n1",), 10.0, BOUNDS, ())
    books.merge(
        {"t": "target", "target": "/dev/nvme0n1", "kind": "block", "mode": "direct", "device": "x"}
    )
    assert [v.op for v in books.view()] == ["read"]
    assert books.info() == {"/dev/nvme0n1": ("block", "direct", "x")}


def test_reports_for_targets_no_longer_configured_are_ignored() -> None:
    clock = Clock()
    books = ledger(clock)
    books.merge({"t": "hist", "labels": ["/old", "read"], "counts": [1] + [0] * 30, "sum_ns": 1})
    books.merge({"t": "err", "target": "/old", "op": "read", "n": 1, "msg": "x"})
    assert {v.target for v in books.view()} == {TARGET}
