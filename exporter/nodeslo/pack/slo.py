"""SLO rules: error ratios per window, the period's ratio, the budget left, burn alerts.

Per SLO, one rule group, evaluated in order so that each rule reads the recordings of
the same evaluation:

- `instance_slo:nodeslo_sli_errors:rate5m` and `instance_slo:nodeslo_sli_events:rate5m`:
  bad events and all events per second over 5m, per server (and per `by` label, e.g.
  the storage target). The only rules that read raw series.
- `instance_slo:nodeslo_sli_error:ratio_rate<w>` for w in 5m 30m 1h 2h 6h 1d 3d: bad
  over all events in the window. Latency SLIs' windows up to an hour (the paging tier's,
  where minutes count) read the raw counters over the window: the mean of 5m rates would lag
  a sudden failure by 2.5 minutes, a quarter of the time a 99 % objective's 1h window
  needs to cross 14.4 % (8.6 minutes of total failure). The 2h and 6h windows sum the 5m
  recordings over the window: weighted by traffic, cheaper than ranges over raw series
  (one recorded sample per evaluation instead of every scrape of every raw series), and
  free of the bias a raw `rate(...[3d])` has while a series is younger than its window.
  Windows of a day and more (the ticket tiers' long windows) sum the hourly sums below
  plus the last hour of 5m recordings: 24 + 60 samples per series for 1d instead of
  1,440, 72 + 60 for 3d instead of 4,320 (issue 18: these two windows were ~80 % of all
  samples the rules read). The hourly sums are read `offset 1m` so that no evaluation
  depends on whether the hourly group ran before it in the same step; the newest hour
  may count twice (its hourly sum and the 5m recordings), never not at all, so the
  window spans 24-25 hours, leaning to the recent one.
  With no events at all the ratio is absent, never NaN: a probe that is not running
  must not page, nor poison the period's ratio (the storage probe counts what it cannot
  measure as bad events instead; other probes' absence has an alert of its own).
- `instance_slo:nodeslo_sli_errors:sum1h_rate5m` and `..._events:sum1h_rate5m`, in
  the group `nodeslo-hourly` evaluated once an hour: the SUM of the hour's 5m rates
  (read `offset 1m`, so whether the SLO's group ran first in a step does not matter),
  i.e. its events divided by the evaluation interval. Sums, not means, so that the
  period weighs every hour by how much of it had data: a mean would count an hour
  with 6 minutes of data as a full hour. Written once an hour, they tile the timeline
  without overlap; read them only through range functions (an instant query finds
  them stale most of the hour).
- `instance_slo:nodeslo_sli_error:ratio_rate<period>` (30d by default): the hourly
  bad over the hourly events, summed over the period: the same sum of bad over sum of
  all 5m samples as the shorter windows, from 720 samples per series for 30 days
  instead of 43,200 per-minute ones (the period is the costliest window). The
  evaluation interval cancels out in the ratio; changing it re-weighs the hours
  recorded before the change until they leave the period.
- `instance_slo:nodeslo_error_budget_remaining:ratio`: 1 - period ratio / budget
  (1 = untouched, 0 = spent, negative = overspent), for the dashboards.
  These two read only hourly sums and feed no alert: they run in the 5-minute group
  `nodeslo-slo-period` (`period_rules`), not every minute.
- `NodeSLOErrorBudgetBurn`, one alert rule per tier of `burnrate.TIERS`.

A latency SLI reads the exact bucket of its threshold (`le` in every spelling the
scrape may have produced); a time SLI divides bad seconds by the capacity in
seconds per second (e.g. core-seconds throttled / physical cores).
"""

from __future__ import annotations

from typing import Any

from nodeslo.burnrate import TIERS, WINDOWS_SECONDS, Tier
from nodeslo.pack import promql
from nodeslo.profile import SLO, LatencySLI, Profile, TimeSLI

Rule = dict[str, Any]

BASE_WINDOW_SECONDS = min(WINDOWS_SECONDS)
# Windows up to this read the raw counters (see the module docstring).
RAW_WINDOW_MAX_SECONDS = 3600.0
# Windows from this on read the hourly sums plus the last hour of 5m recordings.
HOURLY_WINDOW_MIN_SECONDS = 86400.0
# Keeps a step's hourly sum out of reach whatever order the groups ran in.
HOURLY_READ_OFFSET = "1m"
ALERT_NAME = "NodeSLOErrorBudgetBurn"
ERRORS_RATE = "instance_slo:nodeslo_sli_errors:rate5m"
EVENTS_RATE = "instance_slo:nodeslo_sli_events:rate5m"
HOURLY_ERRORS = "instance_slo:nodeslo_sli_errors:sum1h_rate5m"
HOURLY_EVENTS = "instance_slo:nodeslo_sli_events:sum1h_rate5m"
HOUR_SECONDS = 3600.0
HOUR_DURATION = promql.duration(HOUR_SECONDS)
BUDGET_REMAINING = "instance_slo:nodeslo_error_budget_remaining:ratio"


def ratio_record(window_seconds: float) -> str:
    """The recording rule name of the error ratio over one window (or the period)."""
    return f"instance_slo:nodeslo_sli_error:ratio_rate{promql.duration(window_seconds)}"


def record_names(profile: Profile) -> tuple[str, ...]:
    """Every recording an SLO has, in order (its group's, then the period group's)."""
    return (
        ERRORS_RATE,
        EVENTS_RATE,
        *(ratio_record(w) for w in WINDOWS_SECONDS),
        ratio_record(profile.period_seconds),
        BUDGET_REMAINING,
    )


def _labels(profile: Profile, slo: SLO) -> str:
    return promql.by((*profile.alerting.instance_labels, *slo.sli.by))


def _rate(labels: str, series: str, window_seconds: float = BASE_WINDOW_SECONDS) -> str:
    return f"sum by ({labels}) (rate({series}[{promql.duration(window_seconds)}]))"


def _or_zero(series: str, like: str) -> str:
    """`series`, or 0 for each server that has `like` but not `series`.

    A counter of failures that never happened may not be exported at all: read it as
    zero rather than losing the whole SLI through a failed vector match.
    """
    return f"(\n  {series}\n  or\n  0 * {like}\n)"


def _bad_time(sli: TimeSLI, labels: str, window: float = BASE_WINDOW_SECONDS) -> str:
    """Bad seconds per second; from the fallback on the servers without `bad_seconds`."""
    bad = _rate(labels, promql.selector(sli.bad_seconds, sli.matchers), window)
    if sli.fallback_bad_seconds is None:
        return bad
    fallback = _rate(labels, promql.selector(sli.fallback_bad_seconds, ()), window)
    return f"(\n  {bad}\n  or\n  {fallback}\n)"


def _errors_expr(
    sli: LatencySLI | TimeSLI, labels: str, window: float = BASE_WINDOW_SECONDS
) -> str:
    if isinstance(sli, TimeSLI):
        return _bad_time(sli, labels, window)
    bucket = promql.selector(
        f"{sli.histogram}_bucket", sli.matchers, promql.le_matcher(sli.threshold_seconds)
    )
    # Bad = every event but those observed within the threshold.
    return f"{_events_expr(sli, labels, window)}\n- {_rate(labels, bucket, window)}"


def _events_expr(
    sli: LatencySLI | TimeSLI, labels: str, window: float = BASE_WINDOW_SECONDS
) -> str:
    if isinstance(sli, TimeSLI):
        # Capacity counts only while bad time is measured: a host without it (a VM: no
        # thermal_throttle, no cpufreq) has no SLI rather than a perfect one.
        return f"sum by ({labels}) ({sli.capacity})\nand\n{_bad_time(sli, labels, window)}"
    count = _rate(labels, promql.selector(f"{sli.histogram}_count", sli.matchers), window)
    if sli.errors is None:
        return count
    errors = _rate(labels, promql.selector(sli.errors, sli.matchers), window)
    # Failed events never reach the histogram: they are events too.
    return f"{count}\n+ {_or_zero(errors, count)}"


def _ratio_expr(slo: SLO, window_seconds: float, errors: str, events: str) -> str:
    match = promql.matchers([("slo", slo.name)])
    errors, events = f"{errors}{{{match}}}", f"{events}{{{match}}}"
    # Dividing by (events > 0) drops the series when there are none: absent, not NaN.
    if window_seconds == BASE_WINDOW_SECONDS:
        return f"{errors}\n/\n({events} > 0)"
    window = promql.duration(window_seconds)
    return f"sum_over_time({errors}[{window}])\n/\n(sum_over_time({events}[{window}]) > 0)"


def _hourly_plus_last_hour(slo: SLO, window_seconds: float, hourly: str, rate: str) -> str:
    """The window's sum of 5m samples: the hourly sums and the last hour's own samples.

    Either part alone where the other has none: the first hour after deployment has no
    hourly sum yet, and a series that stopped an hour ago still has its older hours.
    """
    match = promql.matchers([("slo", slo.name)])
    window = promql.duration(window_seconds)
    older = f"sum_over_time({hourly}{{{match}}}[{window}] offset {HOURLY_READ_OFFSET})"
    recent = f"sum_over_time({rate}{{{match}}}[{HOUR_DURATION}])"
    return f"(\n  {older}\n  + {recent}\n  or {recent}\n  or {older}\n)"


def _long_ratio_expr(slo: SLO, window_seconds: float) -> str:
    errors = _hourly_plus_last_hour(slo, window_seconds, HOURLY_ERRORS, ERRORS_RATE)
    events = _hourly_plus_last_hour(slo, window_seconds, HOURLY_EVENTS, EVENTS_RATE)
    return f"{errors}\n/\n(\n{events}\n> 0\n)"


def hourly_rules(slo: SLO) -> list[Rule]:
    """The hour's sums of the 5m bad and all event rates (group `nodeslo-hourly`).

    Sums, not means: an hour counts by how many of its evaluations saw events, so an
    hour with 6 minutes of data weighs a tenth of a full one in the period's ratio.
    """
    match = promql.matchers([("slo", slo.name)])
    offset = f"offset {HOURLY_READ_OFFSET}"  # the SLO group may not have run yet this step
    return [
        {
            "record": hourly,
            "expr": f"sum_over_time({rate}{{{match}}}[{HOUR_DURATION}] {offset})",
            "labels": {"slo": slo.name},
        }
        for hourly, rate in ((HOURLY_ERRORS, ERRORS_RATE), (HOURLY_EVENTS, EVENTS_RATE))
    ]


def _burn_alert(profile: Profile, slo: SLO, tier: Tier) -> Rule:
    factor = tier.factor(profile.period_seconds)
    budget = slo.error_budget
    match = promql.matchers([("slo", slo.name)])
    threshold = f"({promql.number(factor)} * {promql.number(budget)})"
    expr = (
        f"{ratio_record(tier.long_seconds)}{{{match}}} > {threshold}\n"
        f"and\n"
        f"{ratio_record(tier.short_seconds)}{{{match}}} > {threshold}"
    )
    period = promql.duration(profile.period_seconds)
    percent = promql.number(round(factor * budget * 100, 6))
    target = "{{ with $labels.target }} ({{ . }}){{ end }}"
    return {
        "alert": ALERT_NAME,
        "expr": expr,
        "for_seconds": tier.for_seconds,
        "labels": {
            "severity": tier.severity,
            "slo": slo.name,
            "long_window": tier.long,
            "short_window": tier.short,
        },
        "annotations": {
            "summary": f"SLO {slo.name} on {{{{ $labels.instance }}}}{target} burns its "
            f"error budget {promql.number(factor)}x too fast",
            "description": f"Error ratio {{{{ $value | humanizePercentage }}}} over the last "
            f"{tier.long}, and above {percent}% over the last {tier.short} as well "
            f"(threshold {percent}% = burn rate {promql.number(factor)} x the "
            f"{promql.number(round(budget * 100, 6))}% error budget of the "
            f"{promql.number(round(slo.objective * 100, 6))}% objective). At this rate "
            f"{tier.budget_share:.0%} of the {period} budget goes in {tier.long} and all of it "
            f"in {_about(profile.period_seconds / factor)}. SLI: {slo.description}",
        },
    }


def _about(seconds: float) -> str:
    """A rough duration for prose: '2.1d', '50h'."""
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f}".removesuffix(".0") + "d"
    return f"{seconds / 3600:.0f}h"


def slo_rules(profile: Profile, slo: SLO) -> list[Rule]:
    """The rules of one SLO, in evaluation order (recordings before what reads them)."""
    labels = {"slo": slo.name}
    by = _labels(profile, slo)
    rules: list[Rule] = [
        {"record": ERRORS_RATE, "expr": _errors_expr(slo.sli, by), "labels": labels},
        {"record": EVENTS_RATE, "expr": _events_expr(slo.sli, by), "labels": labels},
    ]
    # Raw windows only where both sides are rates over the same range: a time SLI's
    # capacity is a gauge, so a raw ratio would under-read while its counter is younger
    # than the window (a host that just started, a new fallback counter).
    raw = isinstance(slo.sli, LatencySLI)
    for window in WINDOWS_SECONDS:
        if raw and BASE_WINDOW_SECONDS < window <= RAW_WINDOW_MAX_SECONDS:
            errors, events = _errors_expr(slo.sli, by, window), _events_expr(slo.sli, by, window)
            # ( ) around the events: `a and b > 0` would compare b alone.
            expr = f"(\n{errors}\n)\n/\n(\n(\n{events}\n)\n> 0\n)"
        elif window >= HOURLY_WINDOW_MIN_SECONDS:
            expr = _long_ratio_expr(slo, window)
        else:
            expr = _ratio_expr(slo, window, ERRORS_RATE, EVENTS_RATE)
        rules.append({"record": ratio_record(window), "expr": expr, "labels": labels})
    rules.extend(_burn_alert(profile, slo, tier) for tier in TIERS)
    return rules


def period_rules(profile: Profile, slo: SLO) -> list[Rule]:
    """The period's ratio and the budget left (group `nodeslo-slo-period`, every 5m)."""
    labels = {"slo": slo.name}
    period = _ratio_expr(slo, profile.period_seconds, HOURLY_ERRORS, HOURLY_EVENTS)
    period_ratio = f"{ratio_record(profile.period_seconds)}{{{promql.matchers(labels.items())}}}"
    return [
        {"record": ratio_record(profile.period_seconds), "expr": period, "labels": labels},
        {
            "record": BUDGET_REMAINING,
            "expr": f"1 - {period_ratio} / {promql.number(slo.error_budget)}",
            "labels": labels,
        },
    ]
