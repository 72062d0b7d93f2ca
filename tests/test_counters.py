"""Aggregate counters that never go backwards (nodeslo.counters)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from nodeslo.counters import CounterSums, CounterTrack


def test_restart_keeps_the_old_total() -> None:
    track = CounterTrack(1, fresh=False)
    for raw in (100, 150, 20, 30):
        track.update(0, raw)
    assert track.total(0) == 180


def test_fresh_source_counts_from_first_sight() -> None:
    track = CounterTrack(1, fresh=True)
    track.update(0, 1_000_000)
    track.update(0, 1_000_010)
    assert track.total(0) == 10


def test_unread_track_contributes_nothing() -> None:
    assert CounterTrack(2, fresh=False).total(1) == 0


def test_vanished_sources_are_retired_into_their_group() -> None:
    sums = CounterSums(1)
    a, b = sums.rebuild([("cpu0", "C6"), ("cpu1", "C6")])
    a.update(0, 10)
    b.update(0, 5)
    (a,) = sums.rebuild([("cpu0", "C6")])  # cpu1 offline
    assert sums.retired_total("C6", 0) == 5
    a.update(0, 12)
    assert a.total(0) + sums.retired_total("C6", 0) == 17
    # cpu1 back online with its counter continued: no double counting.
    a, b = sums.rebuild([("cpu0", "C6"), ("cpu1", "C6")])
    assert sums.retired_total("C6", 0) == 0
    b.update(0, 9)
    assert a.total(0) + b.total(0) == 21


def test_a_source_first_seen_later_adds_only_its_increase() -> None:
    sums = CounterSums(1)
    (a,) = sums.rebuild([("cpu0", "C6")])
    a.update(0, 10)
    a, b = sums.rebuild([("cpu0", "C6"), ("cpu1", "C6")])  # hot-added
    b.update(0, 1_000_000)
    b.update(0, 1_000_004)
    assert a.total(0) + b.total(0) == 14


@given(
    st.lists(
        st.tuples(
            st.sets(st.sampled_from(["cpu0", "cpu1", "cpu2"])),  # sources live this scrape
            st.lists(st.integers(0, 10**6), min_size=3, max_size=3),  # their raw counters
        ),
        max_size=30,
    )
)
def test_group_sum_never_decreases(scrapes: list[tuple[set[str], list[int]]]) -> None:
    """Whatever sources come, go, restart or jump: the exported sum is monotonic."""
    sums = CounterSums(1)
    previous = 0
    for live, raws in scrapes:
        keys = sorted(live)
        tracks = sums.rebuild([(key, "C6") for key in keys])
        for key, track in zip(keys, tracks, strict=True):
            track.update(0, raws[int(key[-1])])
        total = sum(t.total(0) for t in tracks) + sums.retired_total("C6", 0)
        assert total >= previous
        previous = total
