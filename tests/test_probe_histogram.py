"""Probe histograms: the bucket layout, exact integer arithmetic, both wake-up engines' binning."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from nodeslo.metrics import Desc
from nodeslo.probes.histogram import (
    LatencyHistogram,
    add_histogram,
    bound_ns,
    latency_bounds,
    le_label,
)
from nodeslo.probes.wakeup import cyclictest_command, fold_cyclictest, run_python

SEED_THRESHOLDS = (25e-6, 50e-6, 100e-6)


def test_layout_is_biolatency_plus_every_threshold_exactly() -> None:
    bounds = latency_bounds(SEED_THRESHOLDS)
    powers = [2**k * 1e-6 for k in range(28)]
    assert set(powers) <= set(bounds)
    for threshold in SEED_THRESHOLDS:
        assert threshold in bounds  # the float itself, so `le` is the threshold
    assert len(bounds) == 28 + 3
    assert bounds[0] == 1e-06 and bounds[-1] == 134.217728
    assert list(bounds) == sorted(bounds)


def test_le_strings_the_rules_match() -> None:
    # Told to the rule generator: these exact strings appear in the exposition.
    assert [le_label(t) for t in SEED_THRESHOLDS] == ["2.5e-05", "5e-05", "0.0001"]
    assert le_label(2**27 * 1e-6) == "134.217728"
    assert le_label(2**5 * 1e-6) == "3.2e-05"


def test_a_threshold_on_a_power_of_two_appears_once() -> None:
    bounds = latency_bounds((64e-6,))
    assert len(bounds) == 28
    assert [le_label(b) for b in bounds].count("6.4e-05") == 1


@pytest.mark.parametrize("bad", [0.0, -1e-6, float("inf"), float("nan")])
def test_a_bad_threshold_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="positive and finite"):
        latency_bounds((bad,))


def test_bounds_are_whole_nanoseconds_from_the_decimal() -> None:
    # The double nearest 1e-6 is below 1000 ns; the bound still holds a 1000 ns sample.
    assert bound_ns(1e-06) == 1000
    assert bound_ns(5e-05) == 50_000
    assert bound_ns(0.0001) == 100_000
    assert bound_ns(134.217728) == 134_217_728_000


def test_observations_on_the_edges() -> None:
    h = LatencyHistogram(latency_bounds(SEED_THRESHOLDS))
    for ns in (0, 1000, 1001, 25_000, 25_001, 50_000, 50_001, 100_000, 10**12):
        h.observe(ns)
    snap = h.snapshot()
    cumulative = dict(snap.cumulative())
    assert cumulative["1e-06"] == 2  # 0 and exactly 1 µs
    assert cumulative["2e-06"] == 3
    assert cumulative["2.5e-05"] == 4  # exactly 25 µs is good
    assert cumulative["3.2e-05"] == 5
    assert cumulative["5e-05"] == 6  # exactly 50 µs is good, 50.001 µs is not
    assert cumulative["6.4e-05"] == 7
    assert cumulative["0.0001"] == 8
    assert cumulative["134.217728"] == 8
    assert cumulative["+Inf"] == 9  # 1000 s: overflow
    assert snap.sum_ns == 1000 + 1001 + 25_000 + 25_001 + 50_000 + 50_001 + 100_000 + 10**12


def test_take_returns_the_delta_and_starts_again() -> None:
    h = LatencyHistogram(latency_bounds())
    h.observe(3000)
    first = h.take()
    assert first.count == 1 and first.sum_ns == 3000
    assert h.snapshot().count == 0
    merged = LatencyHistogram(latency_bounds())
    merged.add(first.counts, first.sum_ns)
    merged.add(first.counts, first.sum_ns)
    assert merged.snapshot().count == 2 and merged.snapshot().sum_ns == 6000


@given(
    smallest=st.integers(1, 10**12),
    step=st.integers(1, 10**10),
    n=st.integers(0, 300),
)
def test_spaced_observations_equal_one_by_one(smallest: int, step: int, n: int) -> None:
    """The gap accounting's arithmetic: the same buckets and sum as observing each."""
    bounds = latency_bounds(SEED_THRESHOLDS)
    bulk, single = LatencyHistogram(bounds), LatencyHistogram(bounds)
    bulk.observe_spaced(smallest, step, n)
    for k in range(n):
        single.observe(smallest + k * step)
    assert bulk.snapshot() == single.snapshot()


def test_a_report_over_other_buckets_is_refused() -> None:
    h = LatencyHistogram(latency_bounds())
    with pytest.raises(ValueError, match="bucket counts"):
        h.add([1, 2, 3], 10)
    with pytest.raises(ValueError, match="negative"):
        h.add([-1] + [0] * 28, 10)


def test_exposition_parses_and_is_cumulative() -> None:
    h = LatencyHistogram(latency_bounds(SEED_THRESHOLDS))
    for ns in (10_000, 40_000, 60_000, 200_000):
        h.observe(ns)
    desc = Desc("nodeslo_probe_test_latency_seconds", "histogram", "test", ("target",))
    family = desc.family()
    add_histogram(family, ["/x"], h.snapshot())

    class One:
        def collect(self):  # type: ignore[no-untyped-def]
            yield family

    registry = CollectorRegistry()
    registry.register(One())  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    assert 'nodeslo_probe_test_latency_seconds_bucket{le="5e-05",target="/x"} 2.0' in text
    parsed = next(iter(text_string_to_metric_families(text)))
    buckets = [s.value for s in parsed.samples if s.name.endswith("_bucket")]
    assert buckets == sorted(buckets) and buckets[-1] == 4
    total = next(s.value for s in parsed.samples if s.name.endswith("_sum"))
    assert total == pytest.approx(310e-6, abs=1e-15)


class FakeTime:
    """A clock that wakes each sleep `overshoot` ns after the deadline."""

    def __init__(self, overshoots: list[int], start: int = 5_000_000) -> None:
        self.now = start
        self.overshoots = iter(overshoots)
        self.deadlines: list[int] = []

    def clock(self) -> int:
        return self.now

    def sleep(self, deadline: int) -> None:
        self.deadlines.append(deadline)
        self.now = max(self.now, deadline) + next(self.overshoots)


def test_python_engine_records_overshoot_exactly_and_keeps_the_grid() -> None:
    interval = 1_000_000
    overshoots = [0, 1000, 1001, 50_000, 50_001, 2_500_000, 7]
    fake = FakeTime(overshoots)
    h = LatencyHistogram(latency_bounds(SEED_THRESHOLDS))
    reports: list[int] = []
    run_python(
        interval,
        histogram=h,
        report=lambda: reports.append(fake.now),
        report_every_ns=3 * interval,
        clock=fake.clock,
        sleep=fake.sleep,
        cycles=len(overshoots),
    )
    snap = h.snapshot()
    assert snap.count == 7
    assert snap.sum_ns == sum(overshoots)
    cumulative = dict(snap.cumulative())
    assert cumulative["1e-06"] == 3  # 0, 1000, 7
    assert cumulative["2e-06"] == 4
    assert cumulative["5e-05"] == 5
    assert cumulative["6.4e-05"] == 6
    assert cumulative["0.002048"] == 6 and cumulative["0.004096"] == 7  # 2.5 ms
    start = 5_000_000
    # Deadlines stay on the grid; the 2.5 ms late wake-up skips two periods, once.
    assert fake.deadlines == [start + k * interval for k in (1, 2, 3, 4, 5, 6, 9)]
    assert reports  # reported at least once on the way


def test_cyclictest_bins_never_land_below_the_truth() -> None:
    bounds = latency_bounds(SEED_THRESHOLDS)
    ns = [bound_ns(b) for b in bounds]
    doc = {
        "thread": {
            "0": {
                # bin k holds [k, k+1) µs: 49 -> <= 50 µs; 50 -> above 50 µs
                "histogram": {"0": 3, "1": 1, "49": 2, "50": 4, "99": 1},
                "cycles": 13,  # 2 overflowed (>= -h limit)
                "min": 0,
                "max": 20000,
                "avg": 3100.5,
            }
        }
    }
    counts, sum_ns = fold_cyclictest(doc, ns)
    assert sum(counts) == 13
    index = {le_label(b): i for i, b in enumerate(bounds)}
    assert counts[index["1e-06"]] == 3  # [0, 1) µs
    assert counts[index["2e-06"]] == 1  # [1, 2) µs
    assert counts[index["5e-05"]] == 2  # [49, 50) µs
    assert counts[index["6.4e-05"]] == 4  # [50, 51) µs
    assert counts[index["0.0001"]] == 1  # [99, 100) µs
    assert counts[index["0.032768"]] == 2  # overflows, in max's (20 ms) bucket
    assert sum_ns == round(3100.5 * 13 * 1000)


@pytest.mark.parametrize(
    "doc",
    [
        {},
        {"thread": {"0": {"histogram": {"1": 5}, "cycles": 3, "max": 1, "avg": 1}}},
        {"thread": {"0": {"histogram": {"x": 1}, "cycles": 1, "max": 1, "avg": 1}}},
        {"thread": {"0": {"histogram": {"1": -1}, "cycles": 0, "max": 1, "avg": 1}}},
    ],
)
def test_bad_cyclictest_output_is_an_error_not_data(doc: object) -> None:
    from nodeslo.probes.wakeup import CyclictestOutputError

    with pytest.raises(CyclictestOutputError):
        fold_cyclictest(doc, [1000, 2000])


def test_cyclictest_runs_without_touching_cpu_dma_latency() -> None:
    command = cyclictest_command("cyclictest", 10_000_000, 500, "other", "/dev/fd/5")
    assert "--default-system" in command  # the option that skips /dev/cpu_dma_latency
    assert not any(arg.startswith("--latency") for arg in command)
    assert "--interval=10000" in command and "--loops=500" in command
    assert "--json=/dev/fd/5" in command and "--policy=other" in command
    assert not any(arg.startswith("--priority") for arg in command)  # =0 would mean FIFO 2
    fifo = cyclictest_command("cyclictest", 1_000_000, 5, "fifo", "x")
    assert "--policy=fifo" in fifo and "--priority=1" in fifo


def test_cyclictest_json_shape_matches_this_hosts_cyclictest(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import shutil
    import subprocess

    from conftest import missing

    binary = shutil.which("cyclictest")
    if binary is None:
        missing("cyclictest is not installed (Debian package rt-tests)")
    out = tmp_path / "ct.json"
    command = cyclictest_command(binary, 1_000_000, 20, "other", str(out))
    subprocess.run(command, check=True, capture_output=True, timeout=30)
    counts, sum_ns = fold_cyclictest(json.loads(out.read_text()), [1000 * 2**k for k in range(28)])
    assert sum(counts) == 20 and sum_ns >= 0
