"""Fleet regressions: the same alert on a large share of one cluster's hosts.

A bad kernel, firmware or configuration roll-out raises the same alert on hundreds of
hosts at once. Each host's own alert is right, but a thousand pages bury the one thing
to know: the roll-out broke. `NodeSLOFleetRegression` pages once per cluster and
alert name; the Alertmanager example (deploy/alertmanager/alertmanager.yml, its
generated block) inhibits the per-host alerts of that name in that cluster.

A cluster is the profile's instance labels without `instance` (`${fleet_}`); hosts
without those labels form one fleet together. Its hosts are the exporter's scrape
targets (`up`, whatever its value: a host that is down is still a host), plus the
targets that vanished (NodeSLOExporterAbsent pending or firing), so a share cannot grow
because the denominator lost hosts. A host counts once per alert name, whatever its
labels (every SLO, drive or interface of the host that fires it), and it counts while
the alert is pending too: a roll-out that hits every host at once then pages at the
fleet level before the per-host alerts (with a longer `for`) fire and are inhibited.
Only the pack's own alerts are counted (other rule files' alerts are not inhibited
by the generated block either), only the profile's severities, never the Watchdog.

Missing data: without any `ALERTS` series nothing is counted and this alert is
silent; when rule evaluation itself is broken the pipeline area (Watchdog heartbeat,
NodeSLORuleEvaluationFailures) pages. Without `up` the hosts come from the absence
alert; once those are gone too, the cluster has no hosts and no alert is counted
against it, which NodeSLOExporterAbsent has paged for already.
"""

from __future__ import annotations

from nodeslo.pack import promql
from nodeslo.pack.catalog.base import CRITICAL, HealthAlert, Recording, percent
from nodeslo.profile import Profile

NAME = "NodeSLOFleetRegression"
# The label of the fleet alert that names the per-host alert it stands for.
REGRESSED = "regressed_alert"
ABSENT = "NodeSLOExporterAbsent"
HOSTS = "cluster:nodeslo_fleet_hosts:count"
ALERTING = "cluster_alert:nodeslo_fleet_hosts_alerting:count"
SHARE = "cluster_alert:nodeslo_fleet_hosts_alerting:ratio"


def counted_alerts(profile: Profile) -> tuple[str, ...]:
    """The alert names a fleet regression counts and inhibits, sorted: the pack's own
    with one of the profile's severities, never the Watchdog's (none), never itself."""
    from nodeslo.pack import rules, slo  # both import the catalogue: import at call time

    severities = set(profile.alerting.fleet_regression.severities)
    names = {a.name for a in rules.health_alerts(profile) if a.severity in severities}
    if profile.slos:  # the burn alerts page (critical) and ticket (warning)
        names.add(slo.ALERT_NAME)
    return tuple(sorted(names - {NAME}))


def parameters(profile: Profile) -> dict[str, str]:
    fleet = profile.alerting.fleet_regression
    labels = tuple(n for n in profile.alerting.instance_labels if n != "instance")
    return {
        "fleet_by": promql.by(labels),
        "fleet_alerts": promql.quote("|".join(counted_alerts(profile))),
        "fleet_severities": promql.quote("|".join(fleet.severities)),
        "fleet_share": promql.number(fleet.share),
        "fleet_share_text": percent(fleet.share),
        "fleet_resolve_share": promql.number(fleet.resolve_share),
        "fleet_resolve_share_text": percent(fleet.resolve_share),
        "fleet_min_hosts": str(fleet.min_hosts),
        "fleet_for_text": promql.duration(fleet.for_seconds),
        # How a page names its cluster: "cluster eu1", "cluster (unlabelled)" for hosts without
        # the label, "the fleet" where the instance labels name no cluster at all.
        "fleet_name": ", ".join(
            f"{n} {{{{ with $labels.{n} }}}}{{{{ . }}}}{{{{ else }}}}(unlabelled){{{{ end }}}}"
            for n in labels
        )
        or "the fleet",
    }


def durations(profile: Profile) -> dict[str, float]:
    return {"fleet_regression_for": profile.alerting.fleet_regression.for_seconds}


# The hosts of each cluster, one series each: scraped now, or known to have vanished.
_HOSTS = f"""
group by (${{by}}) (${{up}})
or
group by (${{by}}) (ALERTS{{alertname="{ABSENT}"}})
"""


def _indent(text: str, prefix: str = "  ") -> str:
    return "\n".join(prefix + line for line in text.strip().splitlines())


RECORDINGS = (
    Recording(
        group="fleet",
        record=HOSTS,
        expr=f"""
count by (${{fleet_by}}) (
{_indent(_HOSTS)}
)
""",
        source=("up", "ALERTS"),
    ),
    Recording(
        group="fleet",
        record=ALERTING,
        # One series per host and alert name, pending or firing, hosts of the fleet only
        # (an alert without `instance`, e.g. FirmwareSkew, is fleet-wide already).
        expr=f"""
count by (${{fleet_by}}, {REGRESSED}) (
  label_replace(
    group by (${{by}}, alertname) (
      ALERTS{{alertname=~${{fleet_alerts}}, severity=~${{fleet_severities}}}}
    ),
    "{REGRESSED}", "$1", "alertname", "(.+)"
  )
  and on (${{by}})
  (
{_indent(_HOSTS, "    ")}
  )
)
""",
        source=("ALERTS", "up"),
    ),
    Recording(
        group="fleet",
        record=SHARE,
        expr=f"""
{ALERTING}
/ on (${{fleet_by}}) group_left
{HOSTS}
""",
        source=("ALERTS", "up"),
    ),
)

# Go-template pieces of the page: the alert name, how many hosts fire it, of how many.
_REGRESSED = "{{ $labels." + REGRESSED + " }}"
_COUNT = (
    f'{{{{ with printf "{ALERTING}{{${{fleet_sel_}}{REGRESSED}=%q}}" '
    f"${{fleet_args_}}$labels.{REGRESSED} | query }}}}{{{{ . | first | value }}}}{{{{ end }}}}"
)
_TOTAL = (
    f'{{{{ with printf "{HOSTS}{{${{fleet_sel_}}}}" ${{fleet_args_}}| query }}}}'
    "{{ . | first | value }}{{ end }}"
)

ALERTS = (
    HealthAlert(
        name=NAME,
        group="fleet",
        severity=CRITICAL,
        # Hysteresis: once firing it holds until the share is at or below the resolve
        # share, so a roll-back in progress does not release the per-host pages early.
        expr=f"""
(
  {SHARE} > ${{fleet_share}}
  or
  (
    {SHARE} > ${{fleet_resolve_share}}
    and on (${{fleet_by}}, {REGRESSED})
    ALERTS{{alertname="{NAME}", alertstate="firing"}}
  )
)
and on (${{fleet_by}})
{HOSTS} >= ${{fleet_min_hosts}}
""",
        for_="fleet_regression_for",
        summary=f"{_REGRESSED} is on {{{{ $value | humanizePercentage }}}} "
        "of the hosts of ${fleet_name}",
        description=f"{_REGRESSED} is pending or firing on {_COUNT} of the {_TOTAL} "
        "hosts of ${fleet_name}, {{ $value | humanizePercentage }} (this page opens above "
        "${fleet_share_text}): one cause on many hosts, typically a kernel, firmware or "
        "configuration roll-out. This is one page for all of them: Alertmanager holds "
        f"back the per-host {_REGRESSED} alerts of this cluster while it fires. Stop the "
        "roll-out; it resolves once the share is at or below ${fleet_resolve_share_text}, "
        "and the hosts still affected then page on their own.",
        threshold="more than ${fleet_share_text} of at least ${fleet_min_hosts} hosts, "
        "for ${fleet_for_text}; holds until ${fleet_resolve_share_text}",
        source=("ALERTS", "up"),
    ),
)
