"""The SLO dashboard: per SLO, the SLI, the burn of each alert tier, the budget left.

Everything reads the recording rules of `slo.py` (the same series the burn-rate
alerts read), so a line crossed here is an alert firing there: the SLI against the
objective, each tier's long and short window against the burn rate that pages or
tickets, and the budget remaining over the period against zero.
"""

from __future__ import annotations

from nodeslo.burnrate import TIERS, Tier
from nodeslo.pack import promql
from nodeslo.pack import slo as slo_rules
from nodeslo.pack.dashboards import common as c
from nodeslo.pack.dashboards import model as m
from nodeslo.probes.settings import WAKEUP_HISTOGRAM
from nodeslo.profile import SLO, LatencySLI, Profile
from nodeslo.units import human_seconds


def dashboard(profile: Profile) -> m.Dashboard:
    period = promql.duration(profile.period_seconds)
    return c.dashboard(
        profile,
        uid=c.SLOS_UID,
        title="nodeslo / SLOs",
        description=(
            f"The SLOs of the profile {profile.name!r} over its {period} period: SLI, "
            "burn rate per alert tier, error budget remaining."
        ),
        rows=tuple(_row(profile, slo) for slo in profile.slos),
        time_from="now-7d",
    )


def _burn(profile: Profile, slo: SLO, window_seconds: float) -> str:
    ratio = c.recorded(slo_rules.ratio_record(window_seconds), slo)
    return f"{ratio} / {promql.number(slo.error_budget)}"


def _tier_color(tier: Tier) -> str:
    return m.RED if tier.severity == "critical" else m.ORANGE


def _summary(profile: Profile, slo: SLO) -> str:
    period = promql.duration(profile.period_seconds)
    if isinstance(slo.sli, LatencySLI):
        good = f"a `{slo.sli.histogram}` sample within {human_seconds(slo.sli.threshold_seconds)}"
    else:
        bad = f"`{slo.sli.bad_seconds}`"
        if slo.sli.fallback_bad_seconds is not None:
            bad += f" (where absent, `{slo.sli.fallback_bad_seconds}`)"
        good = f"time not counted by {bad} (of `{slo.sli.capacity}`)"
    tiers = "\n".join(
        f"| {t.long} and {t.short} | {promql.number(t.factor(profile.period_seconds))}x "
        f"| {t.severity} | {t.budget_share:.0%} of the budget in {t.long} |"
        for t in TIERS
    )
    return (
        f"**{slo.name}**: {slo.description}\n\n"
        f"Objective **{c.percent(slo.objective)}** of events good ({good}) over {period}; "
        f"error budget {c.percent(slo.error_budget)}.\n\n"
        "| windows | burn rate | severity | spends |\n| --- | --- | --- | --- |\n"
        f"{tiers}\n"
    )


def _row(profile: Profile, slo: SLO) -> m.Row:
    period = promql.duration(profile.period_seconds)
    period_ratio = c.recorded(slo_rules.ratio_record(profile.period_seconds), slo)
    remaining = c.recorded(slo_rules.BUDGET_REMAINING, slo)
    labels = c.legend(*slo.sli.by)
    runbooks = c.runbooks(profile, slo_rules.ALERT_NAME)
    panels: list[m.AnyPanel] = [
        m.Text(
            title=f"{slo.name}",
            description="The SLO as the profile defines it and the alert tiers that guard it.",
            content=_summary(profile, slo),
            width=8,
            height=8,
            links=runbooks,
        ),
        m.Stat(
            title=f"SLI over {period}",
            description=f"Good events over all events in the last {period}; red below the "
            f"objective ({c.percent(slo.objective)}).",
            queries=(m.Query(f"1 - {period_ratio}", labels, instant=True),),
            unit="percentunit",
            decimals=3,
            steps=m.below(slo.objective),
            sparkline=False,
            width=8,
            height=8,
        ),
        m.Stat(
            title="Error budget remaining",
            description=f"1 - error ratio over {period} / error budget: 100% untouched, 0 "
            "spent, negative overspent.",
            queries=(m.Query(remaining, labels, instant=True),),
            unit="percentunit",
            decimals=1,
            steps=m.below(0),
            sparkline=False,
            width=8,
            height=8,
        ),
        m.TimeSeries(
            title=f"SLI against the {c.percent(slo.objective)} objective",
            description="Good events over all events, over 5m and over 1h; red below the "
            "objective.",
            queries=(
                m.Query(
                    f"1 - {c.recorded(slo_rules.ratio_record(min(_windows())), slo)}",
                    f"{labels} {promql.duration(min(_windows()))}",
                ),
                m.Query(
                    f"1 - {c.recorded(slo_rules.ratio_record(TIERS[0].long_seconds), slo)}",
                    f"{labels} {TIERS[0].long}",
                ),
            ),
            unit="percentunit",
            decimals=3,
            steps=m.below(slo.objective),
            width=12,
        ),
        m.TimeSeries(
            title=f"Error budget remaining over the {period} period",
            description="What is left of the period's error budget; the line is 0 (spent).",
            queries=(m.Query(remaining, labels),),
            unit="percentunit",
            steps=m.below(0),
            width=12,
            links=runbooks,
        ),
    ]
    for tier in TIERS:
        factor = tier.factor(profile.period_seconds)
        panels.append(
            m.TimeSeries(
                title=f"Burn rate {tier.long} and {tier.short} ({tier.severity} at "
                f"{promql.number(factor)}x)",
                description=f"Error ratio over the {tier.long} and {tier.short} windows "
                f"divided by the error budget ({c.percent(slo.error_budget)}). When both "
                f"stay above {promql.number(factor)}, {tier.budget_share:.0%} of the "
                f"{period} budget goes in {tier.long}: the {tier.severity} alert fires.",
                queries=(
                    m.Query(_burn(profile, slo, tier.long_seconds), f"{labels} {tier.long}"),
                    m.Query(_burn(profile, slo, tier.short_seconds), f"{labels} {tier.short}"),
                ),
                unit="none",
                decimals=2,
                steps=m.above(factor, _tier_color(tier)),
                legend_calcs=("lastNotNull", "max"),
                width=6,
                links=runbooks,
            )
        )
    panels.append(
        m.TimeSeries(
            title="Events per second",
            description="Events the SLI counts (probe samples, or capacity seconds): with "
            "none, the SLI is absent rather than perfect.",
            queries=(
                m.Query(c.recorded(slo_rules.EVENTS_RATE, slo), labels),
                m.Query(c.recorded(slo_rules.ERRORS_RATE, slo), f"{labels} bad"),
            ),
            unit="short",
            width=24,
            height=6,
        )
    )
    if isinstance(slo.sli, LatencySLI) and slo.sli.histogram == WAKEUP_HISTOGRAM:
        panels.append(_wakeup_engine())
    return m.Row(f"{slo.name} ({c.percent(slo.objective)} over {period})", tuple(panels))


def _wakeup_engine() -> m.Table:
    """Which engine measures the wake-up SLI: a fallback to python must not be silent."""
    info = "nodeslo_probe_wakeup_engine_info"
    fallback = f'{info}{{{c.RAW}, engine="python", requested!="python"}}'
    return m.Table(
        title="Wake-up probe engine",
        description="Which engine measures this SLI on each host, now: cyclictest, or python, "
        "which reads ~25 us late at the median. Fallback (red): cyclictest was asked for "
        "(requested auto or cyclictest) but python runs, e.g. cyclictest without "
        "CAP_SYS_NICE; WakeupProbeEngineFallback tickets after 15m. Where python is "
        "accepted, say so in the profile (probes.wakeup.engine: python).",
        queries=(m.Query(f"{fallback} or ({info}{{{c.RAW}}} * 0)", instant=True, format="table"),),
        mappings=(
            m.ValueText("0", "no", m.GREEN),
            m.ValueText("1", "fallback", m.RED),
        ),
        transformations=(
            m.Transformation(
                "organize",
                {
                    "excludeByName": {"Time": True, "__name__": True, "job": True},
                    "renameByName": {"Value": "fallback"},
                    "indexByName": {},
                },
            ),
        ),
        width=24,
        height=5,
    )


def _windows() -> tuple[float, ...]:
    return tuple(w for t in TIERS for w in (t.long_seconds, t.short_seconds))
