"""What a dashboard says, as plain frozen dataclasses: no Grafana SDK in here.

The dashboard modules (fleet, node, slos) build these from the profile; the wrapper in
`nodeslo.pack.grafana` is the only code that turns them into Grafana JSON through the
Foundation SDK, so an SDK change touches that one file and these modules can be read
and tested without the SDK installed.

Values follow Grafana's vocabulary where it has one (unit ids such as `s`,
`percentunit`, `iops`; colour names; reducer ids such as `lastNotNull`), so the
wrapper passes them through unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

# Colours: Grafana's named palette.
GREEN = "green"
ORANGE = "orange"
RED = "red"
BLUE = "blue"
GREY = "text"

Format = Literal["time_series", "table", "heatmap"]
ThresholdStyle = Literal["off", "line", "dashed", "area", "line+area", "dashed+area"]
Matcher = Literal["byName", "byRegexp", "byFrameRefID", "byType"]


@dataclass(frozen=True)
class Step:
    """A threshold step: from `value` up (None = the base, from minus infinity)."""

    value: float | None
    color: str


def above(value: float, color: str = RED, base: str = GREEN) -> tuple[Step, ...]:
    """Fine below `value`, `color` from `value` up."""
    return (Step(None, base), Step(value, color))


def below(value: float, color: str = RED, base: str = GREEN) -> tuple[Step, ...]:
    """`color` below `value`, fine from `value` up."""
    return (Step(None, color), Step(value, base))


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    instant: bool = False
    format: Format = "time_series"
    # Hidden queries feed a transformation without being drawn themselves.
    hidden: bool = False


@dataclass(frozen=True)
class Link:
    title: str
    url: str
    new_tab: bool = False
    include_vars: bool = False
    keep_time: bool = False


@dataclass(frozen=True)
class Override:
    """Field properties for the fields a matcher selects.

    `matcher` is Grafana's matcher id: byName (a field's display name), byRegexp,
    byFrameRefID (every field of one query), byType (number, string, time).
    `properties` are (property id, value)
    pairs in Grafana's JSON form, e.g. ("custom.lineStyle", {"fill": "dash"}).
    """

    matcher: Matcher
    pattern: str
    properties: tuple[tuple[str, Any], ...]


def thresholds_property(steps: tuple[Step, ...]) -> tuple[str, Any]:
    return (
        "thresholds",
        {"mode": "absolute", "steps": [{"value": s.value, "color": s.color} for s in steps]},
    )


def fixed_color(color: str) -> tuple[str, Any]:
    return ("color", {"mode": "fixed", "fixedColor": color})


DASHED = ("custom.lineStyle", {"fill": "dash", "dash": [10, 10]})
NO_FILL = ("custom.fillOpacity", 0)


def reference_line(matcher: Matcher, pattern: str, color: str) -> Override:
    """A series drawn as a dashed reference line (a limit the data itself carries)."""
    return Override(matcher, pattern, (fixed_color(color), DASHED, NO_FILL))


@dataclass(frozen=True)
class ValueText:
    """Show `text` in `color` for one exact value (a value mapping)."""

    value: str
    text: str
    color: str


@dataclass(frozen=True)
class RangeText:
    """Show `text` in `color` for values in [low, high] (None = unbounded)."""

    low: float | None
    high: float | None
    text: str
    color: str


Mapping = ValueText | RangeText


@dataclass(frozen=True)
class Transformation:
    id: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Panel:
    """What every panel kind has."""

    title: str
    description: str
    queries: tuple[Query, ...] = ()
    width: int = 12
    height: int = 8
    unit: str | None = None
    min: float | None = None
    max: float | None = None
    decimals: int | None = None
    steps: tuple[Step, ...] = ()
    mappings: tuple[Mapping, ...] = ()
    overrides: tuple[Override, ...] = ()
    transformations: tuple[Transformation, ...] = ()
    # Panel links (the corner menu): runbooks, the dashboard that drills down.
    links: tuple[Link, ...] = ()
    # Data links on every value: `${__field.labels.instance}` and friends.
    data_links: tuple[Link, ...] = ()


@dataclass(frozen=True, kw_only=True)
class TimeSeries(Panel):
    # How the threshold steps are drawn: dashed lines at each target by default.
    threshold_style: ThresholdStyle = "dashed"
    stacked: bool = False
    fill_opacity: int = 10
    legend_calcs: tuple[str, ...] = ("lastNotNull", "max")
    log_base: int | None = None
    bars: bool = False


@dataclass(frozen=True, kw_only=True)
class Stat(Panel):
    calc: str = "lastNotNull"
    color_background: bool = True
    sparkline: bool = True


@dataclass(frozen=True, kw_only=True)
class BarGauge(Panel):
    calc: str = "lastNotNull"
    horizontal: bool = True


@dataclass(frozen=True, kw_only=True)
class Table(Panel):
    # (column display name, descending)
    sort_by: tuple[tuple[str, bool], ...] = ()
    # Colour each cell's background by its thresholds / mappings (else plain text).
    colored_cells: bool = True


@dataclass(frozen=True, kw_only=True)
class Heatmap(Panel):
    """A Prometheus histogram (buckets per `le`, query format heatmap) over time."""

    y_unit: str = "s"


@dataclass(frozen=True, kw_only=True)
class StateTimeline(Panel):
    pass


@dataclass(frozen=True, kw_only=True)
class Text(Panel):
    content: str = ""


AnyPanel = TimeSeries | Stat | BarGauge | Table | Heatmap | StateTimeline | Text


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[AnyPanel, ...]
    collapsed: bool = False


@dataclass(frozen=True)
class DatasourceVariable:
    name: str
    label: str
    plugin: str = "prometheus"


@dataclass(frozen=True)
class QueryVariable:
    name: str
    label: str
    query: str  # label_values(...), as the Prometheus data source's variable editor writes it
    description: str = ""
    multi: bool = False
    include_all: bool = False
    # The regex that "All" stands for: `.+` keeps selectors like instance=~"$instance" valid.
    all_value: str = ".+"


Variable = DatasourceVariable | QueryVariable


@dataclass(frozen=True)
class Annotation:
    """Events from a PromQL query drawn on every time-series panel."""

    name: str
    expr: str
    title: str
    text: str
    tags: tuple[str, ...]
    color: str


@dataclass(frozen=True)
class DashboardLinks:
    """Links at the top: the other dashboards with the same tag, and plain URLs."""

    tag: str
    urls: tuple[Link, ...] = ()


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    tags: tuple[str, ...]
    variables: tuple[Variable, ...]
    rows: tuple[Row, ...]
    links: DashboardLinks
    annotations: tuple[Annotation, ...] = ()
    time_from: str = "now-6h"
    refresh: str = "1m"

    def panels(self) -> tuple[AnyPanel, ...]:
        return tuple(p for row in self.rows for p in row.panels)
