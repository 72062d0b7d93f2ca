"""busyfreq: /proc/stat per-CPU ticks, and busy core time below a frequency target."""

from __future__ import annotations

import pytest

from nodeslo.busyfreq import BusyBelowTarget, Core, parse_cpu_ticks

STAT = """cpu  10 0 10 100 5 0 0 0 0 0
cpu0 100 5 20 1000 7 3 2 9 40 0
cpu1 50 0 10 2000 0 0 0 0 0 0
intr 12345 0 0
ctxt 999
"""


def test_ticks_count_busy_time_and_all_time_per_cpu() -> None:
    ticks = parse_cpu_ticks(STAT)
    # busy = user + nice + system + irq + softirq (guest is inside user already);
    # all = busy + idle + iowait + steal.
    assert ticks == {0: (130, 130 + 1000 + 7 + 9), 1: (60, 60 + 2000)}


def test_old_kernels_without_steal_parse() -> None:
    assert parse_cpu_ticks("cpu3 1 2 3 4 5 6 7\n") == {3: (1 + 2 + 3 + 6 + 7, 28)}


@pytest.mark.parametrize("line", ["cpu0 1 2 3\n", "cpu0 1 2 x 4 5 6 7\n", "cpuX 1 2 3 4 5 6 7\n"])
def test_a_malformed_line_is_an_error_not_a_guess(line: str) -> None:
    with pytest.raises(ValueError):
        parse_cpu_ticks(line)


CORES = (Core("0", (0, 2)), Core("0", (1, 3)), Core("1", (4,)))
TARGET = 3_500_000.0


def account(*steps: tuple[dict[int, tuple[int, int]], dict[int, int | None]]) -> BusyBelowTarget:
    totals = BusyBelowTarget(user_hz=100)
    for ticks, khz in steps:
        totals.update(CORES, ticks, khz, TARGET)
    return totals


def test_the_first_reading_only_sets_the_baseline() -> None:
    totals = account(({0: (100, 1000)}, {0: 2_000_000}))
    assert totals.busy_seconds == {"0": 0.0, "1": 0.0}
    assert totals.below_seconds == {"0": 0.0, "1": 0.0}


def test_a_core_is_as_busy_as_its_busiest_thread_and_as_fast_as_its_fastest() -> None:
    base = {0: (0, 0), 1: (0, 0), 2: (0, 0), 3: (0, 0), 4: (0, 0)}
    later = {0: (300, 1000), 2: (100, 1000), 1: (500, 1000), 3: (500, 1000), 4: (1000, 1000)}
    fast, slow = 3_600_000, 2_200_000
    totals = account(
        (base, {}),
        # Core (0, 2): 3 s busy; one thread slow, the other fast: the core ran fast.
        # Core (1, 3): 5 s busy, both slow. Core (4,): 10 s busy, at exactly the target.
        (later, {0: slow, 2: fast, 1: slow, 3: slow, 4: 3_500_000}),
    )
    assert totals.busy_seconds == {"0": 8.0, "1": 10.0}
    assert totals.below_seconds == {"0": 5.0, "1": 0.0}


def test_an_unknown_frequency_of_a_busy_core_counts_as_below() -> None:
    base = {4: (0, 0)}
    totals = account((base, {}), ({4: (200, 1000)}, {4: None}))
    assert totals.below_seconds["1"] == 2.0


def test_offline_cpus_and_counters_that_go_back_add_nothing() -> None:
    totals = account(
        ({0: (500, 1000), 4: (500, 1000)}, {}),
        # CPU 0 went offline (no line); CPU 4's counters went back (re-onlined).
        ({4: (100, 200)}, {4: 1_000_000}),
        # CPU 0 is back: its old baseline was dropped, so no jump is invented.
        ({0: (900, 1500), 4: (150, 300)}, {0: 1_000_000, 4: 1_000_000}),
    )
    assert totals.busy_seconds == {"0": 0.0, "1": 0.5}
    assert totals.below_seconds == {"0": 0.0, "1": 0.5}
