"""The one module that talks to the Grafana Foundation SDK: model.Dashboard -> JSON.

The dashboard modules describe panels with the plain dataclasses of
`nodeslo.pack.dashboards.model`; this module turns them into the SDK's builders and
encodes the result with the SDK's JSONEncoder. When the SDK changes its API, this is
the file to change.

The SDK is the optional extra `nodeslo[pack]`: nothing on the exporter's import path
imports this module (`nodeslo generate` imports it when it renders dashboards).

Layout: panels flow left to right in rows of 24 grid units, each row of the model
starting below the tallest panel before it under a row header; panel ids are
assigned in order, so the same model always gives the same bytes.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from typing import Any

from nodeslo.pack.dashboards import model as m

# The SDK steers towards the v2 (Kubernetes-style) schema and says so when its classic
# classes are defined; classic v1 JSON is what file provisioning, the sidecar and the
# import dialog take (Grafana 12 and 13 included).
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "Prefer using dashboardv2", DeprecationWarning)
    from grafana_foundation_sdk.builders import bargauge as sdk_bargauge
    from grafana_foundation_sdk.builders import common as sdk_common
    from grafana_foundation_sdk.builders import dashboard as sdk_dashboard
    from grafana_foundation_sdk.builders import heatmap as sdk_heatmap
    from grafana_foundation_sdk.builders import prometheus as sdk_prometheus
    from grafana_foundation_sdk.builders import stat as sdk_stat
    from grafana_foundation_sdk.builders import statetimeline as sdk_statetimeline
    from grafana_foundation_sdk.builders import table as sdk_table
    from grafana_foundation_sdk.builders import text as sdk_text
    from grafana_foundation_sdk.builders import timeseries as sdk_timeseries
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models import common as common_models
    from grafana_foundation_sdk.models import dashboard as dashboard_models
    from grafana_foundation_sdk.models import heatmap as heatmap_models
    from grafana_foundation_sdk.models import prometheus as prometheus_models
    from grafana_foundation_sdk.models import text as text_models

GRID_WIDTH = 24
ROW_HEIGHT = 1
# The data source variable every panel and query points at.
DATASOURCE = common_models.DataSourceRef(type_val="prometheus", uid="${datasource}")
GRAFANA = common_models.DataSourceRef(type_val="grafana", uid="-- Grafana --")
_FORMATS = {
    "time_series": prometheus_models.PromQueryFormat.TIME_SERIES,
    "table": prometheus_models.PromQueryFormat.TABLE,
    "heatmap": prometheus_models.PromQueryFormat.HEATMAP,
}
_THRESHOLD_STYLES = {
    "off": common_models.GraphThresholdsStyleMode.OFF,
    "line": common_models.GraphThresholdsStyleMode.LINE,
    "dashed": common_models.GraphThresholdsStyleMode.DASHED,
    "area": common_models.GraphThresholdsStyleMode.AREA,
    "line+area": common_models.GraphThresholdsStyleMode.LINE_AND_AREA,
    "dashed+area": common_models.GraphThresholdsStyleMode.DASHED_AND_AREA,
}
_REF_IDS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def render(dashboard: m.Dashboard) -> str:
    """The dashboard's JSON text: sorted keys, two-space indent, a final newline."""
    data = json.loads(json.dumps(build(dashboard).build(), cls=JSONEncoder))
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def build(dashboard: m.Dashboard) -> sdk_dashboard.Dashboard:
    builder = (
        sdk_dashboard.Dashboard(dashboard.title)
        .uid(dashboard.uid)
        .description(dashboard.description)
        .tags(list(dashboard.tags))
        .editable()
        .timezone("browser")
        .time(dashboard.time_from, "now")
        .refresh(dashboard.refresh)
        .tooltip(dashboard_models.DashboardCursorSync.CROSSHAIR)
    )
    for variable in dashboard.variables:
        builder = builder.with_variable(_variable(variable))
    builder = builder.annotations(
        [_builtin_annotation(), *(_annotation(a) for a in dashboard.annotations)]
    )
    builder = builder.links(_dashboard_links(dashboard.links))
    next_id, y = 1, 0
    for row in dashboard.rows:
        builder = builder.with_row(
            sdk_dashboard.Row(row.title)
            .id(next_id)
            .collapsed(row.collapsed)
            .grid_pos(dashboard_models.GridPos(h=ROW_HEIGHT, w=GRID_WIDTH, x=0, y=y))
        )
        next_id, y = next_id + 1, y + ROW_HEIGHT
        x, line_height = 0, 0
        for panel in row.panels:
            if x + panel.width > GRID_WIDTH:
                x, y, line_height = 0, y + line_height, 0
            position = dashboard_models.GridPos(h=panel.height, w=panel.width, x=x, y=y)
            builder = builder.with_panel(_panel(panel, next_id, position))
            next_id += 1
            x += panel.width
            line_height = max(line_height, panel.height)
        y += line_height
    return builder


# --- variables, annotations, links ---------------------------------------------------


def _variable(variable: m.Variable) -> Any:
    if isinstance(variable, m.DatasourceVariable):
        return (
            sdk_dashboard.DatasourceVariable(variable.name)
            .label(variable.label)
            .type(variable.plugin)
        )
    builder = (
        sdk_dashboard.QueryVariable(variable.name)
        .label(variable.label)
        .datasource(DATASOURCE)
        .query(variable.query)
        .definition(variable.query)
        .refresh(dashboard_models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dashboard_models.VariableSort.NATURAL_ASC)
        .multi(variable.multi)
        .include_all(variable.include_all)
        .allow_custom_value(False)
    )
    if variable.description:
        builder = builder.description(variable.description)
    if variable.include_all:
        builder = builder.all_value(variable.all_value)
    return builder


def _builtin_annotation() -> sdk_dashboard.AnnotationQuery:
    """Grafana's own annotations and alert states, as every new dashboard has them."""
    return (
        sdk_dashboard.AnnotationQuery()
        .name("Annotations & Alerts")
        .datasource(GRAFANA)
        .built_in(1)
        .enable(True)
        .hide(True)
        .icon_color("rgba(0, 211, 255, 1)")
        .type("dashboard")
    )


def _annotation(annotation: m.Annotation) -> sdk_dashboard.AnnotationQuery:
    return (
        sdk_dashboard.AnnotationQuery()
        .name(annotation.name)
        .datasource(DATASOURCE)
        .enable(True)
        .hide(False)
        .icon_color(annotation.color)
        .expr(annotation.expr)
        .title_format(annotation.title)
        .text_format(annotation.text)
        .tag_keys(",".join(annotation.tags))
        .use_value_for_time(False)
    )


def _dashboard_links(links: m.DashboardLinks) -> list[Any]:
    out: list[Any] = [
        sdk_dashboard.DashboardLink("nodeslo")
        .type(dashboard_models.DashboardLinkType.DASHBOARDS)
        .tags([links.tag])
        .as_dropdown(False)
        .icon("dashboard")
        .tooltip("")
        .include_vars(True)
        .keep_time(True)
        .target_blank(False)
    ]
    out.extend(_url_link(link) for link in links.urls)
    return out


def _url_link(link: m.Link) -> sdk_dashboard.DashboardLink:
    return (
        sdk_dashboard.DashboardLink(link.title)
        .type(dashboard_models.DashboardLinkType.LINK)
        .url(link.url)
        .icon("doc" if link.new_tab else "dashboard")
        .tooltip("")
        .tags([])
        .as_dropdown(False)
        .include_vars(link.include_vars)
        .keep_time(link.keep_time)
        .target_blank(link.new_tab)
    )


# --- panels --------------------------------------------------------------------------


def _query(query: m.Query, ref_id: str) -> sdk_prometheus.Dataquery:
    builder = (
        sdk_prometheus.Dataquery()
        .ref_id(ref_id)
        .datasource(DATASOURCE)
        .expr(query.expr)
        .legend_format(query.legend or "__auto")
        .format(_FORMATS[query.format])
        .editor_mode(prometheus_models.QueryEditorMode.CODE)
    )
    builder = builder.instant() if query.instant else builder.range()
    if query.hidden:
        builder = builder.hide(True)
    return builder


def _steps(steps: Sequence[m.Step]) -> sdk_dashboard.ThresholdsConfig:
    # Without steps Grafana adds red at 80: a base colour alone keeps the panel neutral.
    chosen = list(steps) or [m.Step(None, m.GREEN)]
    return (
        sdk_dashboard.ThresholdsConfig()
        .mode(dashboard_models.ThresholdsMode.ABSOLUTE)
        .steps([dashboard_models.Threshold(value=s.value, color=s.color) for s in chosen])
    )


def _mapping(index: int, mapping: m.Mapping) -> Any:
    result = dashboard_models.ValueMappingResult(
        text=mapping.text, color=mapping.color, index=index
    )
    if isinstance(mapping, m.ValueText):
        return dashboard_models.ValueMap(options={mapping.value: result})
    return dashboard_models.RangeMap(
        options=dashboard_models.DashboardRangeMapOptions(
            from_val=mapping.low, to=mapping.high, result=result
        )
    )


def _link(link: m.Link) -> sdk_dashboard.DashboardLink:
    return _url_link(link)


def _override(override: m.Override) -> tuple[Any, list[Any]]:
    matcher = dashboard_models.MatcherConfig(id_val=override.matcher, options=override.pattern)
    properties = [
        dashboard_models.DynamicConfigValue(id_val=key, value=value)
        for key, value in override.properties
    ]
    return matcher, properties


def _common(builder: Any, panel: m.AnyPanel, panel_id: int, position: Any) -> Any:
    builder = (
        builder.id(panel_id)
        .title(panel.title)
        .description(panel.description)
        .grid_pos(position)
        .datasource(DATASOURCE)
        .thresholds(_steps(panel.steps))
    )
    if panel.queries:
        builder = builder.targets([_query(q, _REF_IDS[i]) for i, q in enumerate(panel.queries)])
    if panel.unit is not None:
        builder = builder.unit(panel.unit)
    if panel.min is not None:
        builder = builder.min(panel.min)
    if panel.max is not None:
        builder = builder.max(panel.max)
    if panel.decimals is not None:
        builder = builder.decimals(panel.decimals)
    if panel.mappings:
        builder = builder.mappings([_mapping(i, x) for i, x in enumerate(panel.mappings)])
    for override in panel.overrides:
        builder = builder.with_override(*_override(override))
    if panel.transformations:
        builder = builder.transformations(
            [
                dashboard_models.DataTransformerConfig(id_val=t.id, options=dict(t.options))
                for t in panel.transformations
            ]
        )
    if panel.links:
        builder = builder.links([_link(link) for link in panel.links])
    if panel.data_links:
        builder = builder.data_links([_link(link) for link in panel.data_links])
    return builder


def _legend(calcs: Sequence[str], table: bool) -> sdk_common.VizLegendOptions:
    return (
        sdk_common.VizLegendOptions()
        .show_legend(True)
        .display_mode(
            common_models.LegendDisplayMode.TABLE if table else common_models.LegendDisplayMode.LIST
        )
        .placement(common_models.LegendPlacement.BOTTOM)
        .calcs(list(calcs))
    )


def _tooltip() -> sdk_common.VizTooltipOptions:
    return (
        sdk_common.VizTooltipOptions()
        .mode(common_models.TooltipDisplayMode.MULTI)
        .sort(common_models.SortOrder.DESCENDING)
    )


def _reduce(calc: str) -> sdk_common.ReduceDataOptions:
    return sdk_common.ReduceDataOptions().calcs([calc]).values(False).fields("")


def _timeseries(panel: m.TimeSeries) -> Any:
    style = panel.threshold_style if len(panel.steps) > 1 else "off"
    builder = (
        sdk_timeseries.Panel()
        .legend(_legend(panel.legend_calcs, table=bool(panel.legend_calcs)))
        .tooltip(_tooltip())
        .fill_opacity(panel.fill_opacity)
        .line_width(1)
        .show_points(common_models.VisibilityMode.NEVER)
        .span_nulls(False)
        .thresholds_style(sdk_common.GraphThresholdsStyleConfig().mode(_THRESHOLD_STYLES[style]))
    )
    if panel.bars:
        builder = builder.draw_style(common_models.GraphDrawStyle.BARS)
    if panel.stacked:
        builder = builder.stacking(
            sdk_common.StackingConfig().mode(common_models.StackingMode.NORMAL).group("A")
        )
    if panel.log_base is not None:
        builder = builder.scale_distribution(
            sdk_common.ScaleDistributionConfig()
            .type(common_models.ScaleDistribution.LOG)
            .log(panel.log_base)
        )
    return builder


def _stat(panel: m.Stat) -> Any:
    return (
        sdk_stat.Panel()
        .reduce_options(_reduce(panel.calc))
        .color_mode(
            common_models.BigValueColorMode.BACKGROUND
            if panel.color_background
            else common_models.BigValueColorMode.VALUE
        )
        .graph_mode(
            common_models.BigValueGraphMode.AREA
            if panel.sparkline
            else common_models.BigValueGraphMode.NONE
        )
        .text_mode(common_models.BigValueTextMode.VALUE_AND_NAME)
        .justify_mode(common_models.BigValueJustifyMode.AUTO)
        .orientation(common_models.VizOrientation.AUTO)
    )


def _bargauge(panel: m.BarGauge) -> Any:
    return (
        sdk_bargauge.Panel()
        .reduce_options(_reduce(panel.calc))
        .orientation(
            common_models.VizOrientation.HORIZONTAL
            if panel.horizontal
            else common_models.VizOrientation.VERTICAL
        )
        .display_mode(common_models.BarGaugeDisplayMode.BASIC)
        .value_mode(common_models.BarGaugeValueMode.COLOR)
        .show_unfilled(True)
    )


def _table(panel: m.Table) -> Any:
    builder = sdk_table.Panel().cell_height(common_models.TableCellHeight.SM)
    if panel.sort_by:
        builder = builder.sort_by(
            [
                sdk_common.TableSortByFieldState().display_name(name).desc(desc)
                for name, desc in panel.sort_by
            ]
        )
    if panel.colored_cells:
        # Only numbers take the threshold colours; label columns stay plain text.
        builder = builder.override_by_field_type(
            "number",
            [
                dashboard_models.DynamicConfigValue(
                    id_val="custom.cellOptions",
                    value={"type": "color-background", "mode": "basic"},
                )
            ],
        )
    return builder


def _heatmap(panel: m.Heatmap) -> Any:
    return (
        sdk_heatmap.Panel()
        .calculate(False)
        .y_axis(sdk_heatmap.YAxisConfig().unit(panel.y_unit))
        .color(
            sdk_heatmap.HeatmapColorOptions()
            .mode(heatmap_models.HeatmapColorMode.SCHEME)
            .scheme("Spectral")
            .exponent(0.5)
            .steps(64)
            .reverse(False)
            .fill("dark-orange")
            .scale(heatmap_models.HeatmapColorScale.EXPONENTIAL)
        )
        .cell_gap(1)
        .show_legend()
        .tooltip(sdk_heatmap.HeatmapTooltip().mode(common_models.TooltipDisplayMode.SINGLE))
    )


def _state_timeline(panel: m.StateTimeline) -> Any:
    return (
        sdk_statetimeline.Panel()
        .show_value(common_models.VisibilityMode.AUTO)
        .merge_values(True)
        .row_height(0.9)
        .legend(_legend((), table=False))
        .tooltip(_tooltip())
        .fill_opacity(70)
        .line_width(0)
    )


def _text(panel: m.Text) -> Any:
    return sdk_text.Panel().mode(text_models.TextMode.MARKDOWN).content(panel.content)


def _panel(panel: m.AnyPanel, panel_id: int, position: Any) -> Any:
    if isinstance(panel, m.TimeSeries):
        kind = _timeseries(panel)
    elif isinstance(panel, m.Stat):
        kind = _stat(panel)
    elif isinstance(panel, m.BarGauge):
        kind = _bargauge(panel)
    elif isinstance(panel, m.Table):
        kind = _table(panel)
    elif isinstance(panel, m.Heatmap):
        kind = _heatmap(panel)
    elif isinstance(panel, m.StateTimeline):
        kind = _state_timeline(panel)
    else:
        kind = _text(panel)
    return _common(kind, panel, panel_id, position)
