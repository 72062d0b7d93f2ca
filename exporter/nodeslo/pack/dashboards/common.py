"""What the three dashboards share: variables, selectors, links, runbooks, the alert overlay.

Selectors: raw exporter series carry `job` and `instance` and are filtered by both
variables; the SLO recordings are summed by the profile's instance labels (no `job`),
so they are filtered by `instance` alone - the instance variable already lists only
the instances of the chosen jobs.
"""

from __future__ import annotations

from typing import TypedDict

from nodeslo.pack import catalog, promql, rules
from nodeslo.pack.dashboards import model as m
from nodeslo.profile import SLO, LatencySLI, Profile

TAG = "nodeslo"
FLEET_UID = "nodeslo-fleet"
NODE_UID = "nodeslo-node"
SLOS_UID = "nodeslo-slos"

RAW = 'job=~"$job", instance=~"$instance"'
RECORDED = 'instance=~"$instance"'
RATE = "$__rate_interval"
# The exporter's own series, always present on a host it runs on: lists the instances.
PRESENCE = "nodeslo_build_info"


def variables(all_instances: bool = True) -> tuple[m.Variable, ...]:
    """Data source, job, instance. Without `all_instances` there is no "All" (the node
    dashboard: Grafana would open it on every server at once)."""
    return (
        m.DatasourceVariable("datasource", "Data source"),
        m.QueryVariable(
            "job",
            "Job",
            f"label_values({PRESENCE}, job)",
            description="Scrape jobs of the nodeslo exporter.",
            include_all=True,
        ),
        m.QueryVariable(
            "instance",
            "Instance",
            f'label_values({PRESENCE}{{job=~"$job"}}, instance)',
            description="Servers; several may be selected.",
            multi=True,
            include_all=all_instances,
        ),
    )


def by(profile: Profile, *labels: str) -> str:
    """The profile's instance labels (cluster, instance) plus `labels`, for `by (...)`."""
    return promql.by((*profile.alerting.instance_labels, *labels))


def legend(*labels: str) -> str:
    """`{{instance}} {{device}}`: the series' server first, then what tells it apart."""
    return " ".join("{{" + name + "}}" for name in ("instance", *labels))


def raw(metric: str, *matchers: str) -> str:
    """`metric{job=~"$job", instance=~"$instance", ...}`."""
    return f"{metric}{{{', '.join((RAW, *matchers))}}}"


def rate(metric: str, *matchers: str, window: str = RATE) -> str:
    return f"rate({raw(metric, *matchers)}[{window}])"


def recorded(record: str, slo: SLO | None = None) -> str:
    """A recording rule's series, for one SLO or all."""
    matchers = [RECORDED]
    if slo is not None:
        matchers.append(promql.matchers([("slo", slo.name)]))
    return f"{record}{{{', '.join(matchers)}}}"


def percent(ratio: float) -> str:
    """0.999 -> '99.9%'."""
    return f"{round(ratio * 100, 6):g}%"


def quantile_name(objective: float) -> str:
    """The percentile an objective speaks of: 0.99 -> 'P99', 0.999 -> 'P99.9'."""
    return f"P{round(objective * 100, 6):g}"


def latency_slos(profile: Profile) -> tuple[SLO, ...]:
    return tuple(s for s in profile.slos if isinstance(s.sli, LatencySLI))


def runbooks(profile: Profile, *alerts: str) -> tuple[m.Link, ...]:
    """Panel links to the runbooks of the alerts a panel explains (those the profile has)."""
    enabled = set(rules.alert_names(profile))
    base = profile.alerting.runbook_base_url
    return tuple(
        m.Link(f"Runbook: {name}", f"{base}/{name}.md", new_tab=True)
        for name in alerts
        if name in enabled
    )


def dashboard_links(profile: Profile) -> m.DashboardLinks:
    return m.DashboardLinks(
        tag=TAG,
        urls=(m.Link("Runbooks", profile.alerting.runbook_base_url, new_tab=True),),
    )


def to_dashboard(uid: str, title: str, field: str = "instance") -> m.Link:
    """A data link to another nodeslo dashboard for the instance of the clicked value."""
    return m.Link(
        title,
        f"/d/{uid}?${{datasource:queryparam}}&${{job:queryparam}}"
        f"&var-instance=${{__data.fields.{field}}}&${{__url_time_range}}",
    )


def catalog_record(profile: Profile, metric: str) -> str:
    """The name the rule file gives a catalogue recording of `metric` (windows filled in)."""
    params = catalog.parameters(profile)
    for recording in catalog.RECORDINGS:
        name = catalog.fill(recording.record, params)
        if name.split(":")[1] == metric:
            return name
    raise LookupError(f"the rule catalogue records no {metric}")


def alert_selector(profile: Profile, *matchers: str) -> str:
    """ALERTS of nodeslo's own rules (by name), firing, plus `matchers`; not the
    always-firing Watchdog."""
    names = "|".join(rules.alert_names(profile, heartbeats=False))
    inside = ", ".join(('alertstate="firing"', f'alertname=~"{names}"', *matchers))
    return f"ALERTS{{{inside}}}"


def severities() -> tuple[str, str]:
    """The severities that page and open tickets, as the catalogue names them."""
    return catalog.CRITICAL, catalog.WARNING


def alert_annotation(profile: Profile) -> m.Annotation:
    return m.Annotation(
        name="nodeslo alerts",
        expr=alert_selector(profile, RECORDED),
        title="{{alertname}}",
        text="{{severity}} on {{instance}}",
        tags=("alertname", "severity"),
        color="rgba(255, 96, 96, 1)",
    )


def dashboard(
    profile: Profile,
    *,
    uid: str,
    title: str,
    description: str,
    rows: tuple[m.Row, ...],
    all_instances: bool = True,
    time_from: str = m.Dashboard.time_from,
) -> m.Dashboard:
    """A nodeslo dashboard: the tag, the variables, links to the others, alert annotations."""
    return m.Dashboard(
        uid=uid,
        title=title,
        description=description,
        tags=(TAG,),
        variables=variables(all_instances=all_instances),
        rows=rows,
        links=dashboard_links(profile),
        annotations=(alert_annotation(profile),),
        time_from=time_from,
    )


class Limited(TypedDict):
    queries: tuple[m.Query, ...]
    overrides: tuple[m.Override, ...]


def against_limits(values: tuple[m.Query, ...], *limits: tuple[m.Query, str]) -> Limited:
    """Panel queries: the values, then each limit drawn as a dashed line of its colour
    (a limit the data carries: the device's own threshold, the most seen lately).
    Grafana names queries A, B, C... by position, which the overrides match."""
    first = len(values)
    return Limited(
        queries=(*values, *(query for query, _ in limits)),
        overrides=tuple(
            m.reference_line("byFrameRefID", chr(ord("A") + first + i), color)
            for i, (_, color) in enumerate(limits)
        ),
    )
