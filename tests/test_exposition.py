"""The cached renderers write exactly what prometheus_client's encoders write."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.core import CounterMetricFamily, Exemplar, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics import exposition as openmetrics

from nodeslo.cli import build_parser
from nodeslo.collectors import COLLECTORS
from nodeslo.daemon import Daemon
from nodeslo.profile import load_profile
from nodeslo.web.exposition import OpenMetricsRenderer, TextRenderer

TYPES = (
    "counter",
    "gauge",
    "histogram",
    "summary",
    "info",
    "stateset",
    "gaugehistogram",
    "unknown",
)
# Characters that need escaping somewhere in the format, and some that need none.
TEXT = st.text(alphabet=st.sampled_from('ab_:.Z9 \\"\n\t{}=,#é€😀'), max_size=12)
NAMES = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_:]{0,10}", fullmatch=True)
# Label names outside the legacy character set are escaped to underscores.
LABEL_NAMES = NAMES | st.from_regex(r"[a-z][a-z.\-é]{0,6}", fullmatch=True)
VALUES = (
    st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(-(2**70), 2**70)
    | st.sampled_from(
        [0.0, -0.0, 1e-300, 5e-324, 1e300, 1234567.0, 12345678.9, 1e22, -1e22, 0.1, 1.0]
    )
)
TIMESTAMPS = st.none() | st.floats(0, 2e9, allow_nan=False)


class Families:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


@st.composite
def families(draw: Any) -> Metric:
    name = draw(NAMES)
    family = Metric(name, draw(TEXT), draw(st.sampled_from(TYPES)))
    label_names = draw(st.lists(LABEL_NAMES, max_size=3, unique=True))
    suffix = st.sampled_from(["", "_total", "_created", "_gsum", "_gcount", "_bucket", "_count"])
    for _ in range(draw(st.integers(0, 5))):
        labels = {k: draw(TEXT) for k in label_names}
        family.add_sample(name + draw(suffix), labels, draw(VALUES), draw(TIMESTAMPS))
    return family


def render_both(metrics: list[Metric], renderer: TextRenderer | None = None) -> tuple[bytes, bytes]:
    registry = Families(metrics)
    return (renderer or TextRenderer())(registry), generate_latest(registry)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(st.lists(families(), max_size=6))
def test_random_families_render_byte_identical(metrics: list[Metric]) -> None:
    ours, theirs = render_both(metrics)
    assert ours == theirs


@settings(max_examples=50, deadline=None)
@given(st.lists(families(), max_size=6), st.lists(families(), max_size=6))
def test_cache_carries_over_scrapes_without_leaking(
    first: list[Metric], second: list[Metric]
) -> None:
    renderer = TextRenderer(max_cached_series=4)  # small: the reset path runs too
    for metrics in (first, second, first):
        ours, theirs = render_both(metrics, renderer)
        assert ours == theirs


def test_typical_families_and_special_values() -> None:
    counter = CounterMetricFamily("x_total", 'a "help"\\ with\nnewline', labels=["dev"])
    counter.add_metric(['nv"me\\0\n'], 3, created=1700000000.5)
    gauge = GaugeMetricFamily("y", "gauge help", labels=["b", "a"])
    for value in (math.nan, math.inf, -math.inf, 1e-7, 123456789.0, 2**53):
        gauge.add_metric(["1", str(value)], value)
    ours, theirs = render_both([counter, gauge])
    assert ours == theirs
    assert b'x_total{dev="nv\\"me\\\\0\\n"} 3.0\n' in ours
    assert b"# TYPE x_created gauge\n" in ours
    assert b'y{a="nan",b="1"} NaN\n' in ours


def test_a_bad_family_names_itself_in_the_error() -> None:
    family = Metric("z", "help", "gauge")
    family.add_sample("z", {"k": 1}, 1.0)  # type: ignore[dict-item]  # not a string
    try:
        TextRenderer().render([family])
    except AttributeError as exc:
        assert exc.args[-1] is family
    else:
        raise AssertionError("a non-string label value must fail as in prometheus_client")


@st.composite
def om_families(draw: Any) -> Metric:
    """Families as OpenMetrics carries them: units, value-less samples, exemplars."""
    unit = draw(st.sampled_from(["", "seconds", "bytes"]))
    name = draw(NAMES) + (f"_{unit}" if unit else "")
    mtype = draw(st.sampled_from(TYPES))
    family = Metric(name, draw(TEXT), mtype, unit)
    label_names = draw(st.lists(LABEL_NAMES, max_size=3, unique=True))
    suffix = st.sampled_from(["", "_total", "_created", "_bucket", "_count"])
    for _ in range(draw(st.integers(0, 5))):
        labels = {k: draw(TEXT) for k in label_names}
        sample_name = name + draw(suffix)
        value = draw(st.none() | VALUES)
        exemplar = None
        if mtype == "counter" and sample_name.endswith("_total") and draw(st.booleans()):
            exemplar = Exemplar({"trace_id": draw(TEXT)}, draw(VALUES), draw(TIMESTAMPS))
        family.add_sample(sample_name, labels, value, draw(TIMESTAMPS), exemplar)
    return family


@settings(max_examples=200, deadline=None)
@given(st.lists(om_families(), max_size=6))
def test_random_families_render_byte_identical_in_openmetrics(metrics: list[Metric]) -> None:
    registry = Families(metrics)
    renderer = OpenMetricsRenderer()
    for _ in range(2):  # the second time from the caches
        assert renderer(registry) == openmetrics.generate_latest(registry)  # type: ignore[no-untyped-call]


def test_openmetrics_counter_with_created_and_exemplar() -> None:
    counter = CounterMetricFamily("req", "requests", labels=["code"], created=None)
    counter.add_metric(["200"], 7, created=1700000000.25)
    plain = GaugeMetricFamily("up", "up", value=1)
    registry = Families([counter, plain])
    ours = OpenMetricsRenderer()(registry)
    assert ours == openmetrics.generate_latest(registry)  # type: ignore[no-untyped-call]
    assert ours.endswith(b"up 1.0\n# EOF\n")
    assert b'req_created{code="200"} 1.70000000025e+09\n' in ours


def test_every_collector_on_the_seed_tree_renders_identically(seed_tree: Path) -> None:
    """The daemon's real families (every collector, self metrics, process metrics)."""
    argv = [
        "serve",
        f"--path.sysfs={seed_tree}/sys",
        f"--path.procfs={seed_tree}/proc",
        f"--path.rootfs={seed_tree}",
        f"--path.udev.data={seed_tree}/run/udev/data",
        "--no-probe.storage",
        "--no-probe.wakeup",
        *[f"--collector.{name}" for name in COLLECTORS],
    ]
    args = build_parser().parse_args(argv)
    daemon = Daemon(args, load_profile(args.profile))
    text, om = TextRenderer(), OpenMetricsRenderer()
    for _ in range(2):  # the second scrape from the caches
        # One collection for both encoders: process metrics change between collections.
        registry = Families(list(daemon.registry.collect()))
        assert text(registry) == generate_latest(registry)  # type: ignore[arg-type]
        assert om(registry) == openmetrics.generate_latest(registry)  # type: ignore[no-untyped-call]
    assert b"nodeslo_cpuidle_residency_seconds_total" in text(registry)
