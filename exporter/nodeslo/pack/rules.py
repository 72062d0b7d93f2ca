"""Profile -> Prometheus rule groups (plain dicts, stable order) -> the rule file's text.

Pure functions: the same profile always gives the same bytes, so the generated file
can be committed and CI can fail on any drift. Every alert gets `severity`, the
profile's extra labels, `summary`, `description` and a `runbook_url` pointing at
`alerts/runbooks/<AlertName>.md`; every `for:` is scaled by `alerting.for_scale`
(1 in production; compressed end-to-end tests set it lower).
"""

from __future__ import annotations

import textwrap
from typing import Any

import yaml

from nodeslo.pack import catalog, promql, slo
from nodeslo.pack.catalog import HealthAlert, Recording
from nodeslo.profile import Profile
from nodeslo.units import prom_duration

Rule = dict[str, Any]
Group = dict[str, Any]

RULES_PATH = "alerts/nodeslo.rules.yaml"
GROUP_PREFIX = catalog.GROUP_PREFIX
# Health groups, in file order; SLO groups (one per SLO, profile order) come first.
HEALTH_GROUPS = catalog.GROUPS
# Evaluated once an hour: recordings that long windows read through range functions.
HOURLY_GROUP = "hourly"


def scaled_for(seconds: float, scale: float) -> str | None:
    """`for:` scaled by for_scale, whole milliseconds; None for no `for` at all."""
    millis = round(seconds * scale * 1000)
    return prom_duration(millis / 1000) if millis > 0 else None


def _alert(profile: Profile, rule: Rule) -> Rule:
    """Finish an alert: severity and profile labels, runbook, scaled `for`."""
    name = rule["alert"]
    out: Rule = {"alert": name, "expr": rule["expr"]}
    duration = scaled_for(rule["for_seconds"], profile.alerting.for_scale)
    if duration is not None:
        out["for"] = duration
    out["labels"] = {**dict(profile.alerting.labels), **rule["labels"]}
    base = profile.alerting.runbook_base_url
    out["annotations"] = {**rule["annotations"], "runbook_url": f"{base}/{name}.md"}
    return out


def _health_alert(profile: Profile, alert: HealthAlert, params: dict[str, str]) -> Rule:
    named = isinstance(alert.for_, str)
    seconds = catalog.durations(profile)[str(alert.for_)] if named else float(alert.for_)
    expr = catalog.fill(alert.expr.strip(), params)
    summary = catalog.fill(alert.summary, params)
    description = catalog.fill(alert.description, params)
    if alert.held_through_gaps:
        expr = promql.held_through_gaps(expr)
        summary = promql.held_in_template_queries(summary)
        description = promql.held_in_template_queries(description)
    up, on = params["up"], params["by"]
    if alert.held_while_unscraped:
        summary = promql.held_while_unscraped_in_template_queries(summary, up, on)
        description = promql.held_while_unscraped_in_template_queries(description, up, on)
    rule = _alert(
        profile,
        {
            "alert": alert.name,
            "expr": expr,
            "for_seconds": float(seconds),
            "labels": {"severity": alert.severity, **dict(alert.labels)},
            "annotations": {"summary": summary, "description": description},
        },
    )
    if alert.held_while_unscraped:
        # Read back by every label the finished rule adds, the profile's included.
        rule["expr"] = kept_while_unscraped(expr, alert.name, rule["labels"], up, on)
    return rule


def kept_while_unscraped(expr: str, name: str, added: dict[str, str], up: str, on: str) -> str:
    """`expr`, the alert `name`'s, and while its host's scrape fails (`up` not 1) with a
    good scrape within the lookback: the alerts it was at its last evaluation.

    A failed scrape stale-marks every series of the host, so an alert on a series'
    absence stops matching (its `up == 1` gate is 0, its expected series are gone): its
    page resolves, its `for` starts again. Holding its reads through the lookback would
    count a series that left minutes ago as present; a plain read of ALERTS finds
    exactly the alerts of the previous evaluation (a resolved one is stale-marked), and
    `max without` the labels the rule adds gives back the expression's own label sets,
    so the same alerts continue, `for` and all. The value is 1 then. An exporter that
    dies keeps them 5 minutes, until NodeSLOExporterDown pages."""
    own = promql.selector("ALERTS", [("alertname", name), *sorted(added.items())])
    dropped = promql.by(["alertname", "alertstate", *sorted(added)])
    return f"""{expr}
or
(
  {promql.while_unscraped(f"max without ({dropped}) ({own})", up, on)}
)"""


def _recording(recording: Recording, params: dict[str, str]) -> Rule:
    expr = catalog.fill(recording.expr.strip(), params)
    return {
        "record": catalog.fill(recording.record, params),
        "expr": promql.held_through_gaps(expr) if recording.held_through_gaps else expr,
    }


def health_alerts(profile: Profile) -> tuple[HealthAlert, ...]:
    """The health alerts this profile enables, catalogue order, then absent probes."""
    alerts = [a for a in catalog.ALERTS if a.when is None or a.when(profile)]
    probes = sorted({s.probe for s in profile.slos if s.probe is not None})
    alerts.extend(catalog.probe_absent_alert(p) for p in probes)
    return tuple(alerts)


def _area_group(name: str, rules: list[Rule], interval: str | None) -> list[Group]:
    """An area's group, a group it keeps apart, or its slow group; none without rules.
    `interval` None: the evaluation interval of the Prometheus or vmalert that loads it."""
    if not rules:
        return []
    group: Group = {"name": f"{GROUP_PREFIX}{name}", "rules": rules}
    if interval is not None:
        group["interval"] = interval
    return [group]


def rule_groups(profile: Profile) -> list[Group]:
    groups: list[Group] = []
    for objective in profile.slos:
        rules = [
            _alert(profile, r) if "alert" in r else r for r in slo.slo_rules(profile, objective)
        ]
        groups.append({"name": f"{GROUP_PREFIX}slo-{objective.name}", "rules": rules})
    # The period's ratios read hourly sums only and page nobody: every 5 minutes is enough.
    slow = promql.duration(catalog.SLOW_INTERVAL_SECONDS)
    period = [r for objective in profile.slos for r in slo.period_rules(profile, objective)]
    if period:
        groups.append({"name": f"{GROUP_PREFIX}slo-period", "interval": slow, "rules": period})
    params = catalog.parameters(profile)
    alerts = health_alerts(profile)
    for area in HEALTH_GROUPS:
        layout: list[tuple[str, str | None]] = [(g, None) for g in (area, *catalog.APART[area])]
        for group, every in [*layout, (catalog.slow(area), slow)]:
            rules = [_recording(r, params) for r in catalog.RECORDINGS if r.group == group]
            rules += [_health_alert(profile, a, params) for a in alerts if a.group == group]
            groups += _area_group(group, rules, every)
    hourly = [r for objective in profile.slos for r in slo.hourly_rules(objective)]
    hourly += [_recording(r, params) for r in catalog.RECORDINGS if r.group == HOURLY_GROUP]
    # The hour's windows tile the timeline only if the group runs once an hour.
    groups.append(
        {"name": f"{GROUP_PREFIX}{HOURLY_GROUP}", "interval": slo.HOUR_DURATION, "rules": hourly}
    )
    return groups


# --- rendering --------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """Block lists indented under their key, multi-line strings as literal blocks."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)

    def ignore_aliases(self, data: Any) -> bool:
        return True  # repeat shared label maps instead of writing &id001 anchors


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render(profile: Profile, groups: list[Group]) -> str:
    header = textwrap.dedent(
        f"""\
        # Generated by `nodeslo generate` from the profile {profile.name!r}. Do not edit:
        # change the profile, run `nodeslo generate`, and commit both (docs/slos.md).
        # Tests: alerts/tests/ (promtool test rules), runbooks: alerts/runbooks/.
        """
    )
    body = yaml.dump(
        {"groups": groups},
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        width=10_000,
        default_flow_style=False,
    )
    return header + body


def rule_file(profile: Profile) -> list[tuple[str, str]]:
    """The generate output for the rules: one file."""
    return [(RULES_PATH, render(profile, rule_groups(profile)))]


def alert_names(profile: Profile, heartbeats: bool = True) -> tuple[str, ...]:
    """Every alert name the profile's rules can raise, sorted, once each; without the
    always-firing heartbeats (Watchdog) if `heartbeats` is False."""
    names = {a.name for a in health_alerts(profile) if heartbeats or a.severity != catalog.NONE}
    if profile.slos:
        names.add(slo.ALERT_NAME)
    return tuple(sorted(names))
