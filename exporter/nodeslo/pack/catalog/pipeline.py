"""The alerting pipeline itself: Prometheus evaluating the pack, Alertmanager receiving it.

No alert can report that alerts stopped being evaluated or delivered: `Watchdog` always
fires, and a heartbeat service outside the monitoring stack (the Alertmanager example
routes it to the `heartbeat` receiver) raises the alarm when its notifications stop,
which covers a dead Prometheus, a rule file that is not loaded, and an Alertmanager
that cannot be reached. Failed and missed evaluations of the nodeslo groups come from
Prometheus' own metrics (`prometheus_rule_*`, label `rule_group` = `<file>;<group>`),
read through the profile's `alerting.prometheus_selector`; where those metrics are not
scraped the pack says so instead of staying quiet.
"""

from __future__ import annotations

from nodeslo.pack import promql
from nodeslo.pack.catalog.base import CRITICAL, NONE, WARNING, HealthAlert, Recording
from nodeslo.profile import Profile

# Every nodeslo rule group is named with this prefix (pack/rules.py).
GROUP_PREFIX = "nodeslo-"


def parameters(profile: Profile) -> dict[str, str]:
    selector = profile.alerting.prometheus_selector or ""
    groups = f"rule_group=~{promql.quote(f'.+;{GROUP_PREFIX}.+')}"
    return {
        "prometheus_text": selector.replace('"', "'"),
        "rule_groups": ", ".join(m for m in (selector, groups) if m),
    }


def _watched(profile: Profile) -> bool:
    return profile.alerting.prometheus_selector is not None


RECORDINGS: tuple[Recording, ...] = ()

ALERTS = (
    HealthAlert(
        name="Watchdog",
        group="pipeline",
        severity=NONE,
        expr="vector(1)",
        for_=0,
        summary="The nodeslo alerting pipeline is alive",
        description="Always firing, on purpose: a dead man's switch. Route it to a heartbeat "
        "service (deploy/alertmanager/alertmanager.yml: receiver heartbeat) that raises the "
        "alarm when these notifications stop: Prometheus is down, the nodeslo rules are not "
        "loaded or not evaluated, or Alertmanager is unreachable.",
        threshold="always fires",
        source=(),
    ),
    HealthAlert(
        name="NodeSLORuleEvaluationFailures",
        group="pipeline",
        severity=CRITICAL,
        # An hour covers one evaluation of the hourly group too.
        expr="increase(prometheus_rule_evaluation_failures_total{${rule_groups}}[1h]) > 0",
        for_=900,
        summary="Prometheus fails to evaluate the nodeslo rule group {{ $labels.rule_group }}",
        description="Failed rule evaluations of {{ $labels.rule_group }} on "
        '{{ $labels.instance }} within the last hour: {{ $value | printf "%.0f" }}. '
        "The alerts of a failing rule cannot fire and the recordings it feeds have holes: "
        "part of the pager is blind. Prometheus logs the error; its /rules page shows it.",
        threshold="any failed evaluation within 1h, for 15m",
        source=("prometheus_rule_evaluation_failures_total",),
        when=_watched,
    ),
    HealthAlert(
        name="NodeSLORuleEvaluationsMissed",
        group="pipeline",
        severity=WARNING,
        expr="increase(prometheus_rule_group_iterations_missed_total{${rule_groups}}[1h]) > 0",
        for_=900,
        summary="Prometheus skips evaluations of the nodeslo rule group {{ $labels.rule_group }}",
        description="Skipped evaluations of {{ $labels.rule_group }} on "
        '{{ $labels.instance }} within the last hour: {{ $value | printf "%.0f" }}. An '
        "evaluation took longer than the group's interval (an overloaded Prometheus, a "
        "slow query). Alerts fire late, and the hourly recordings of the error budget "
        "miss hours.",
        threshold="any missed iteration within 1h, for 15m",
        source=("prometheus_rule_group_iterations_missed_total",),
        when=_watched,
    ),
    HealthAlert(
        name="NodeSLORuleMetricsAbsent",
        group="pipeline",
        severity=WARNING,
        expr="absent(prometheus_rule_group_iterations_total{${rule_groups}})",
        for_=900,
        summary="Prometheus' own rule metrics for the nodeslo groups are missing",
        description="No prometheus_rule_group_iterations_total series of a nodeslo rule "
        "group matches ${prometheus_text} for 15m: Prometheus does not scrape itself under "
        "that selector (or that scrape is down), so failed or missed evaluations of the "
        "nodeslo rules would go unnoticed. Fix the scrape or alerting.prometheus_selector.",
        threshold="no prometheus_rule_group_iterations_total for the nodeslo groups, for 15m",
        source=("prometheus_rule_group_iterations_total",),
        when=_watched,
    ),
)
