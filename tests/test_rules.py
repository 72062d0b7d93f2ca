"""The rule generator: PromQL helpers, burn factors, rule structure, profile knobs, drift.

promtool-based tests of the rules' behaviour are in test_alerts.py; this module checks
what can be checked without Prometheus, including that the committed rule file is
exactly what `nodeslo generate` writes.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.utils import floatToGoString

from conftest import REPO
from nodeslo import burnrate
from nodeslo.cli import main
from nodeslo.pack import catalog, generate, promql, rules, slo
from nodeslo.profile import LatencySLI, Profile, load_profile

DAY = 86400.0


@pytest.fixture(scope="module")
def profile() -> Profile:
    return load_profile()


@pytest.fixture(scope="module")
def groups(profile: Profile) -> list[dict[str, Any]]:
    return rules.rule_groups(profile)


def site(tmp_path: Path, text: str) -> Profile:
    path = tmp_path / "site.yaml"
    body = textwrap.dedent(text).lstrip("\n")
    path.write_text("extends: process-management\nprofile: site\n" + body)
    return load_profile(str(path))


def all_rules(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [rule for group in groups for rule in group["rules"]]


def alerts(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [rule for rule in all_rules(groups) if "alert" in rule]


# --- le: every spelling of a bound, and nothing else -------------------------------


# Go's strconv.FormatFloat(v, 'g', -1, 64), measured (client_golang, Prometheus 2).
GO_G = [
    (0.0001, "0.0001"),
    (0.00001, "1e-05"),
    (5e-05, "5e-05"),
    (2.5e-05, "2.5e-05"),
    (0.000128, "0.000128"),
    (1.0, "1"),
    (999999.0, "999999"),
    (1234567.0, "1.234567e+06"),
    (1e21, "1e+21"),
]


@pytest.mark.parametrize(("bound", "go"), GO_G)
def test_le_spellings_include_go_and_prometheus_3(bound: float, go: str) -> None:
    spellings = promql.le_spellings(bound)
    assert go in spellings
    # Prometheus 3 normalises to the OpenMetrics form: Go's, with ".0" on integers.
    openmetrics = go if ("." in go or "e" in go) else go + ".0"
    assert openmetrics in spellings


def test_le_spellings_of_the_shipped_thresholds() -> None:
    assert promql.le_spellings(100e-6) == ("0.0001", "1e-04")
    assert promql.le_spellings(50e-6) == ("0.00005", "5e-05")
    assert promql.le_matcher(100e-6) == 'le=~"0\\\\.0001|1e-04"'


def _regex_of(matcher: str) -> re.Pattern[str]:
    """The RE2 pattern inside le=~"..." (PromQL string unescaped), anchored as Prometheus does."""
    literal = matcher.removeprefix("le=~")
    pattern = yaml.safe_load(literal)  # a double-quoted YAML scalar unescapes like PromQL
    assert isinstance(pattern, str)
    return re.compile(f"^(?:{pattern})$")


@given(st.floats(min_value=1e-9, max_value=1e9, allow_nan=False, allow_infinity=False))
def test_le_matcher_matches_every_spelling_and_no_other_bound(bound: float) -> None:
    spellings = promql.le_spellings(bound)
    for spelling in spellings:
        assert float(spelling) == bound  # each is the same float
    assert floatToGoString(bound) in spellings  # what our own exporter writes
    regex = _regex_of(promql.le_matcher(bound))
    assert all(regex.match(s) for s in spellings)
    for other in (bound * 2, bound / 2, math.nextafter(bound, math.inf)):
        if other != bound:
            assert not any(regex.match(s) for s in promql.le_spellings(other))
    assert not regex.match(spellings[0] + "0") or float(spellings[0] + "0") == bound


@pytest.mark.parametrize("bad", [0.0, -1e-6, math.inf, math.nan])
def test_le_refuses_what_is_no_latency_bound(bad: float) -> None:
    with pytest.raises(ValueError):
        promql.le_spellings(bad)


@given(st.floats(min_value=-1e12, max_value=1e12, allow_nan=False))
def test_numbers_read_back(value: float) -> None:
    text = promql.number(value)
    assert math.isclose(float(text), value, rel_tol=1e-11, abs_tol=1e-300)


def test_label_values_are_escaped() -> None:
    assert promql.selector("m", [("a", 'x"y\\z')]) == 'm{a="x\\"y\\\\z"}'


@pytest.mark.parametrize(
    ("plain", "held"),
    [
        ("nodeslo_a > 1", "last_over_time(nodeslo_a[5m]) > 1"),
        # Names in matchers and strings are no reads; a fallback read is one.
        (
            'nodeslo_t{x="nodeslo_b"} >= (nodeslo_c > 0 or 0 * nodeslo_t{y=~"a|}"} + 85)',
            'last_over_time(nodeslo_t{x="nodeslo_b"}[5m]) >= (last_over_time(nodeslo_c[5m]) > 0'
            ' or 0 * last_over_time(nodeslo_t{y=~"a|}"}[5m]) + 85)',
        ),
        # Range reads (their functions skip staleness markers already) stay as they are.
        (
            "changes(nodeslo_s[10m]) >= 3 or nodeslo_s == 0",
            "changes(nodeslo_s[10m]) >= 3 or last_over_time(nodeslo_s[5m]) == 0",
        ),
        (
            "nodeslo_x - nodeslo_x offset 1h",
            "last_over_time(nodeslo_x[5m]) - last_over_time(nodeslo_x[5m] offset 1h)",
        ),
        # Recordings, `up` and label lists are not the exporter's series.
        (
            "sum by (cluster) (nodeslo_d) < on (cluster) "
            "max_over_time(instance:nodeslo_d:hourly[7d])",
            "sum by (cluster) (last_over_time(nodeslo_d[5m])) < on (cluster) "
            "max_over_time(instance:nodeslo_d:hourly[7d])",
        ),
        (
            'label_replace(max without (state) (nodeslo_z) == 0, "state", "nodeslo_q", "", "")',
            'label_replace(max without (state) (last_over_time(nodeslo_z[5m])) == 0, "state", '
            '"nodeslo_q", "", "")',
        ),
        ("up == 1 and nodeslo_a{b='c'}", "up == 1 and last_over_time(nodeslo_a{b='c'}[5m])"),
    ],
)
def test_held_reads_wrap_every_instant_read_of_a_scraped_series(plain: str, held: str) -> None:
    assert promql.held_through_gaps(plain) == held


def test_an_at_modifier_is_refused_not_misread() -> None:
    with pytest.raises(ValueError, match="@ modifier"):
        promql.held_through_gaps("nodeslo_a @ 100")


def test_held_template_queries_keep_their_verbs() -> None:
    text = '{{ with printf "nodeslo_m{instance=%q} > 0" $labels.instance | query }}{{ end }}'
    assert promql.held_in_template_queries(text) == (
        '{{ with printf "last_over_time(nodeslo_m{instance=%q}[5m]) > 0" '
        "$labels.instance | query }}{{ end }}"
    )


UP = 'up{job="n"}'


def test_reads_held_while_unscraped_keep_a_good_scrape_as_it_is() -> None:
    """Each plain read gains the lookback's value only for hosts whose scrape fails."""
    held = promql.held_while_unscraped(
        'nodeslo_a == 1 unless on (instance, x) nodeslo_b{x="nodeslo_c"} '
        "and on (instance) max_over_time(nodeslo_d[1d])",
        UP,
        "instance",
    )
    assert held == (
        '(nodeslo_a or last_over_time(nodeslo_a[5m]) unless on (instance) (up{job="n"} == 1))'
        " == 1 unless on (instance, x) "
        '(nodeslo_b{x="nodeslo_c"} or last_over_time(nodeslo_b{x="nodeslo_c"}[5m]) '
        'unless on (instance) (up{job="n"} == 1)) '
        "and on (instance) max_over_time(nodeslo_d[1d])"
    )


def test_an_offset_read_is_not_held_on_up_now() -> None:
    with pytest.raises(ValueError, match="offset read"):
        promql.held_while_unscraped("nodeslo_x - nodeslo_x offset 1h", UP, "instance")


def test_template_queries_held_while_unscraped_take_their_arguments_once() -> None:
    """A read written twice takes its label values by index from the one printf list."""
    text = (
        '{{ with printf "nodeslo_m{instance=%q, port=%q} > nodeslo_n{instance=%q}" '
        "$labels.instance $labels.port $labels.instance | query }}{{ end }}"
    )
    held = promql.held_while_unscraped_in_template_queries(text, UP, "instance")
    assert held == (
        '{{ with printf "(nodeslo_m{instance=%[1]q, port=%[2]q} or '
        "last_over_time(nodeslo_m{instance=%[1]q, port=%[2]q}[5m]) unless on (instance) "
        '(up{job=\\"n\\"} == 1)) > (nodeslo_n{instance=%[3]q} or '
        "last_over_time(nodeslo_n{instance=%[3]q}[5m]) unless on (instance) "
        '(up{job=\\"n\\"} == 1))" $labels.instance $labels.port $labels.instance | query }}'
        "{{ end }}"
    )


# Alerts that read an exporter series plainly, and why a failed scrape does not matter:
# each "any rise in the window" alert is held by its rise recording for the window; the
# plain `x - x offset w` branch only adds a rise that recording missed.
PLAIN_READS_ALLOWED = {
    "NVMeMediaErrorsIncreasing",
    "MemoryUncorrectableErrors",
    "PCIeUncorrectableErrors",
}


def test_no_alert_reads_an_exporter_series_plainly(groups: list[dict[str, Any]]) -> None:
    """A failed scrape stale-marks every series of the host and sets `up` to 0: an alert
    whose expression reads a scraped series plainly, or gates on `up == 1`, keeps its
    state from ALERTS while the scrape fails (held_while_unscraped); every other read is
    held through the lookback (held_through_gaps), held while the scrape fails
    (promql.held_while_unscraped), or a range read."""
    for rule in all_rules(groups):
        if "alert" not in rule or rule["alert"] in PLAIN_READS_ALLOWED:
            continue
        expr = rule["expr"]
        reads = promql.instant_reads(expr)
        held = {r: expr.count(f"({r} or last_over_time({r}[5m]) unless on (") for r in reads}
        plain = [r for r in held if held[r] != reads.count(r)]
        ungated = re.sub(r"unless on \([^)]*\) \(up\{[^}]*\} == 1\)\)", "", expr)
        gates = re.findall(r"(?<![\w_])up\{[^}]*\} == 1", ungated)
        kept = f'(ALERTS{{alertname="{rule["alert"]}", '  # kept_while_unscraped's read
        assert (kept in expr) == bool(plain or gates), (rule["alert"], plain, gates)


def test_an_alert_kept_while_unscraped_reads_its_own_labels_back(
    profile: Profile, groups: list[dict[str, Any]]
) -> None:
    """The ALERTS read names the alert by every label the rule adds, and drops just those:
    what remains is the expression's own label set, the alert it continues."""
    kept = [a for a in rules.health_alerts(profile) if a.held_while_unscraped]
    assert {"NetworkLinkDown", "ZFSPoolMissing", "CPUTemperatureUnmonitored"} <= {
        a.name for a in kept
    }
    checked = 0
    for rule in all_rules(groups):
        if "alert" not in rule or f'(ALERTS{{alertname="{rule["alert"]}", ' not in rule["expr"]:
            continue
        checked += 1
        added = {**dict(profile.alerting.labels), **rule["labels"]}
        matchers = ", ".join(f'{k}="{v}"' for k, v in sorted(added.items()))
        dropped = ", ".join(["alertname", "alertstate", *sorted(added)])
        own = f'max without ({dropped}) (ALERTS{{alertname="{rule["alert"]}", {matchers}}})'
        assert own in rule["expr"], rule["alert"]
        # No other rule of the name may have alerts this read finds: two rules writing
        # one ALERTS series fail their evaluation ("duplicate sample for timestamp").
        for other in all_rules(groups):
            if other.get("alert") == rule["alert"] and other is not rule:
                theirs = other["labels"]
                assert any(theirs.get(k, v) != v for k, v in rule["labels"].items()), (
                    rule["alert"],
                    theirs,
                )
    assert checked == len(kept)


def test_held_alerts_are_levels_and_read_nothing_plain(
    profile: Profile, groups: list[dict[str, Any]]
) -> None:
    """A held alert reads no scraped series through a plain selector (in its expression
    and in its annotations' queries), and none is an alert on a series' absence, which
    the hold would delay by the lookback."""
    params = catalog.parameters(profile)
    held = [a for a in rules.health_alerts(profile) if a.held_through_gaps]
    assert {
        "CPUTemperatureCritical",
        "NVMeWearHigh",
        "InletTemperatureHigh",
        "PowerRedundancyLost",
    } <= {a.name for a in held}
    recorded = {catalog.fill(r.record, params): r for r in catalog.RECORDINGS}
    written = {rule["expr"]: rule for rule in all_rules(groups)}
    for alert in held:
        plain = catalog.fill(alert.expr.strip(), params)
        # A recording a held alert reads plainly (a level, not a window) is held too:
        # its reads, or (a count of devices) its own last value while the scrape fails.
        for name in re.findall(r"([a-z_]+:nodeslo_[a-z0-9_]+:[a-z0-9_]+)(?![\w{\[])", plain):
            recording = recorded[name]
            own_last = f"last_over_time({name}[{promql.LOOKBACK}])"
            assert recording.held_through_gaps or own_last in recording.expr, (alert.name, name)
        # The absence alerts read `up`, absent() or present_over_time(); a held `unless`
        # (FanFailed's fallback where a fan has no threshold) compares levels only.
        assert not re.search(r"\bup\b|absent\(|present_over_time\(", plain), alert.name
        rule = written[promql.held_through_gaps(plain)]
        queries = re.findall(r'printf "([^"]*)"', " ".join(rule["annotations"].values()))
        for text in [rule["expr"], *queries]:
            bare = re.findall(r"(?<![(:a-z_])nodeslo_[a-z0-9_]+(?:\{[^}]*\})?(?!\[)", text)
            assert not bare, (alert.name, bare)


# --- burn rates ----------------------------------------------------------------------


def test_burn_factors_follow_the_workbook_for_30_days() -> None:
    assert [t.factor(30 * DAY) for t in burnrate.TIERS] == [14.4, 6, 3, 1]
    assert [(t.long, t.short) for t in burnrate.TIERS] == [
        ("1h", "5m"),
        ("6h", "30m"),
        ("1d", "2h"),
        ("3d", "6h"),
    ]


def test_burn_factors_keep_the_budget_shares_for_28_days() -> None:
    factors = [t.factor(28 * DAY) for t in burnrate.TIERS]
    assert factors == [13.44, 5.6, 2.8, 0.933333]
    for tier, factor in zip(burnrate.TIERS, factors, strict=True):
        spent = factor * tier.long_seconds / (28 * DAY)
        assert spent == pytest.approx(tier.budget_share, rel=1e-6)


def test_a_28_day_profile_renders_its_own_thresholds(tmp_path: Path) -> None:
    text = rules.rule_file(site(tmp_path, "period: 28d\n"))[0][1]
    assert "> (13.44 * 0.01)" in text and "> (0.933333 * 0.01)" in text
    assert "ratio_rate28d" in text and "ratio_rate30d" not in text


# --- structure -----------------------------------------------------------------------


def test_groups_in_a_stable_order(groups: list[dict[str, Any]]) -> None:
    assert [g["name"] for g in groups] == [
        "nodeslo-slo-storage-write-latency",
        "nodeslo-slo-storage-read-latency",
        "nodeslo-slo-scheduler-wakeup-latency",
        "nodeslo-slo-cpu-unthrottled",
        "nodeslo-slo-period",
        "nodeslo-nvme",
        "nodeslo-nvme-temperature",
        "nodeslo-nvme-slow",
        "nodeslo-cpu",
        "nodeslo-cpu-temperature-high",
        "nodeslo-cpu-temperature-critical",
        "nodeslo-cpu-slow",
        "nodeslo-memory",
        "nodeslo-memory-slow",
        "nodeslo-redundancy",
        "nodeslo-bmc",
        "nodeslo-platform",
        "nodeslo-links",
        "nodeslo-links-aer",
        "nodeslo-links-aer-rootport",
        "nodeslo-links-slow",
        "nodeslo-inventory",
        "nodeslo-exporter",
        "nodeslo-pipeline",
        "nodeslo-fleet",
        "nodeslo-hourly",
    ]
    intervals = {g["name"]: g.get("interval") for g in groups}
    assert {name: i for name, i in intervals.items() if i} == {
        "nodeslo-slo-period": "5m",
        "nodeslo-nvme-slow": "5m",
        "nodeslo-cpu-slow": "5m",
        "nodeslo-memory-slow": "5m",
        "nodeslo-links-slow": "5m",
        "nodeslo-hourly": "1h",
    }


def test_every_catalogue_rule_is_in_a_group(profile: Profile, groups: list[dict[str, Any]]) -> None:
    """A rule whose group the layout does not know (a typo in `group=`) would be dropped
    from the file without a word."""
    written = {g["name"] for g in groups}
    for rule in (*catalog.RECORDINGS, *rules.health_alerts(profile)):
        assert f"{catalog.GROUP_PREFIX}{rule.group}" in written, rule


def test_slow_groups_read_no_other_groups_recordings(groups: list[dict[str, Any]]) -> None:
    """promtool runs groups in a random order at each step (only `group_eval_order`
    fixes it): a slow group that read another group's recording of the same step would
    see it or the one before at random. Only the hourly group's sums are read across
    (through ranges: test_each_recording_is_read_after_it_is_written), by the period's
    ratio, which no alert reads."""
    home = {r["record"]: g["name"] for g in groups for r in g["rules"] if "record" in r}
    slow = [g for g in groups if g.get("interval") == "5m"]
    assert slow
    for group in slow:
        for rule in group["rules"]:
            for record in re.findall(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", rule["expr"]):
                assert home[record] in (group["name"], "nodeslo-hourly"), (group["name"], record)
                if home[record] == "nodeslo-hourly":
                    assert group["name"] == "nodeslo-slo-period", (group["name"], record)


def test_generation_is_deterministic(profile: Profile) -> None:
    first = rules.rule_file(profile)
    assert rules.rule_file(load_profile()) == first
    assert yaml.safe_load(first[0][1])["groups"] == rules.rule_groups(profile)


def test_each_recording_is_read_after_it_is_written(groups: list[dict[str, Any]]) -> None:
    """Within a group, in order. A recording of another group (evaluated on its own
    schedule, e.g. the hourly one) is read only through a range, never as a value."""
    recorded = {r["record"] for r in all_rules(groups) if "record" in r}
    assert {r["record"] for r in groups[-1]["rules"]} == {
        "instance_serial:nodeslo_nvme_percentage_used_ratio:hourly",
        "instance_serial:nodeslo_nvme_percentage_used_ratio:predict_linear30d",
        "instance:nodeslo_nvme_controllers:max1h",
        "instance_slo:nodeslo_sli_errors:sum1h_rate5m",
        "instance_slo:nodeslo_sli_events:sum1h_rate5m",
        "instance_sensor:nodeslo_bmc_sensor_severity:max1h",
        "instance:nodeslo_bmc_up:max1h",
        "instance_interface:nodeslo_network_speed_bytes_per_second:max1h",
        "instance:nodeslo_inventory_memory_bytes:hourly",
        "instance:nodeslo_inventory_dimms:hourly",
    }
    for group in groups:
        seen: set[str] = set()
        for rule in group["rules"]:
            used = set(re.findall(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", rule["expr"]))
            name = rule.get("record") or rule["alert"]
            assert used <= recorded, (group["name"], name, used - recorded)
            for record in used - seen:
                ranged = re.escape(record) + r"(\{[^}]*\})?\[\d+[smhd]\]"
                assert re.search(ranged, rule["expr"]), (group["name"], name, record)
            if "record" in rule:
                seen.add(rule["record"])


def test_recording_names_follow_level_metric_operations(groups: list[dict[str, Any]]) -> None:
    for rule in all_rules(groups):
        if "record" in rule:
            level, metric, operations = rule["record"].split(":")
            assert level and metric.startswith("nodeslo_") and operations, rule["record"]


def test_slo_records_are_the_documented_ones(profile: Profile) -> None:
    names = slo.record_names(profile)
    assert names == (
        "instance_slo:nodeslo_sli_errors:rate5m",
        "instance_slo:nodeslo_sli_events:rate5m",
        "instance_slo:nodeslo_sli_error:ratio_rate5m",
        "instance_slo:nodeslo_sli_error:ratio_rate30m",
        "instance_slo:nodeslo_sli_error:ratio_rate1h",
        "instance_slo:nodeslo_sli_error:ratio_rate2h",
        "instance_slo:nodeslo_sli_error:ratio_rate6h",
        "instance_slo:nodeslo_sli_error:ratio_rate1d",
        "instance_slo:nodeslo_sli_error:ratio_rate3d",
        "instance_slo:nodeslo_sli_error:ratio_rate30d",
        "instance_slo:nodeslo_error_budget_remaining:ratio",
    )
    groups = rules.rule_groups(profile)
    for group in groups[: len(profile.slos)]:
        assert tuple(r["record"] for r in group["rules"] if "record" in r) == names[:-2]
    # The period and the budget left, every SLO's, in the 5-minute group after them.
    period = groups[len(profile.slos)]
    assert period["name"] == "nodeslo-slo-period"
    assert [r["record"] for r in period["rules"]] == list(names[-2:]) * len(profile.slos)


def test_only_windows_up_to_an_hour_read_raw_series(groups: list[dict[str, Any]]) -> None:
    """Long windows and the period come from recordings, never a 30d range over raw data;
    the paging tier's windows (30m, 1h) of latency SLIs read the raw counters, free of the
    5m rates' lag (a time SLI's capacity is a gauge: its windows stay on the recordings)."""
    profile = load_profile()
    for group in groups[:4]:
        slo_name = group["name"].removeprefix("nodeslo-slo-")
        latency = isinstance(profile.slo(slo_name).sli, LatencySLI)
        raw_records = ("ratio_rate30m", "ratio_rate1h") if latency else ()
        for rule in group["rules"]:
            raw = set(re.findall(r"(?<![:a-z_])nodeslo_[a-z0-9_]+", rule["expr"]))
            if rule.get("record", "").endswith((":rate5m", *raw_records)):
                assert raw, rule["record"]
                assert "_over_time(" not in rule["expr"]
            else:
                assert not raw, (rule.get("record") or rule["alert"], raw)
                assert not re.search(r"\[\d+[smhd]:", rule["expr"])  # no subquery either


def test_every_aggregation_keeps_the_instance_labels(groups: list[dict[str, Any]]) -> None:
    for rule in all_rules(groups):
        for clause in re.findall(r"\b(?:sum|count|quantile) by \(([^)]*)\)", rule["expr"]):
            labels = [label.strip() for label in clause.split(",")]
            assert "cluster" in labels, (rule.get("alert") or rule["record"], clause)
        for clause in re.findall(r"\bon \(([^)]*)\)", rule["expr"]):
            assert "cluster" in clause, clause


def test_latency_slis_read_the_threshold_bucket_in_every_spelling(
    groups: list[dict[str, Any]],
) -> None:
    errors = {g["name"]: g["rules"][0]["expr"] for g in groups[:3]}
    assert 'le=~"0\\\\.0001|1e-04"' in errors["nodeslo-slo-storage-write-latency"]
    assert 'le=~"0\\\\.00005|5e-05"' in errors["nodeslo-slo-storage-read-latency"]
    assert 'le=~"0\\\\.00005|5e-05"' in errors["nodeslo-slo-scheduler-wakeup-latency"]
    for expr in errors.values():
        assert 'le="' not in expr


def test_every_alert_is_complete(profile: Profile, groups: list[dict[str, Any]]) -> None:
    for alert in alerts(groups):
        heartbeat = alert["alert"] == "Watchdog" and alert["labels"]["severity"] == "none"
        assert alert["labels"]["severity"] in ("critical", "warning") or heartbeat
        assert set(alert["annotations"]) == {"summary", "description", "runbook_url"}
        assert alert["annotations"]["runbook_url"] == (
            f"{profile.alerting.runbook_base_url}/{alert['alert']}.md"
        )
        assert "${" not in alert["expr"] + str(alert["annotations"])


def test_the_burn_alerts_carry_slo_severity_and_windows(groups: list[dict[str, Any]]) -> None:
    burns = [a for a in alerts(groups) if a["alert"] == "NodeSLOErrorBudgetBurn"]
    assert len(burns) == 4 * 4
    by_slo: dict[str, list[tuple[str, str, str]]] = {}
    for alert in burns:
        labels = alert["labels"]
        by_slo.setdefault(labels["slo"], []).append(
            (labels["severity"], labels["long_window"], labels["short_window"])
        )
    for tiers in by_slo.values():
        assert tiers == [
            ("critical", "1h", "5m"),
            ("critical", "6h", "30m"),
            ("warning", "1d", "2h"),
            ("warning", "3d", "6h"),
        ]
    cpu = [a["expr"] for a in burns if a["labels"]["slo"] == "cpu-unthrottled"]
    assert "> (14.4 * 0.001)" in cpu[0] and "> (1 * 0.001)" in cpu[3]


def test_the_required_health_alerts_exist(profile: Profile) -> None:
    required = {
        ("NVMeCriticalWarning", "critical"),
        ("NVMeSpareBelowThreshold", "critical"),
        ("NVMeControllerNotLive", "critical"),
        ("NVMeWearHigh", "warning"),
        ("NVMeWearOutPredicted", "warning"),
        ("NVMeMediaErrorsIncreasing", "warning"),
        ("NVMeWriteAmplificationHigh", "warning"),
        ("NVMeTemperatureHigh", "warning"),
        ("NVMeSmartStale", "warning"),
        ("NVMeLatencyOutlier", "warning"),
        ("NVMeTemperatureCritical", "critical"),
        ("CPUThermalThrottling", "warning"),
        ("CPUTemperatureHigh", "warning"),
        ("DeepCStatesEnabled", "warning"),
        ("CPUGovernorNotPerformance", "warning"),
        ("CPUTurboDisabled", "warning"),
        ("CPUTemperatureCritical", "critical"),
        ("MemoryUncorrectableErrors", "critical"),
        ("MemoryCorrectableErrorsHigh", "warning"),
        ("ECCReportingAbsent", "warning"),
        ("NUMARemoteAccessHigh", "warning"),
        ("RAIDArrayDegraded", "critical"),
        ("ZFSPoolDegraded", "critical"),
        ("PowerRedundancyLost", "warning"),
        ("KernelTuningDrift", "warning"),
        ("FirmwareSkew", "warning"),
        ("NodeSLOExporterDown", "critical"),
        ("NodeSLOCollectorFailing", "warning"),
        ("NodeSLOProbeDown", "warning"),
    }
    present = {(a.name, a.severity) for a in rules.health_alerts(profile)}
    assert required <= present


# --- profile knobs -------------------------------------------------------------------


def _for_seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = re.fullmatch(r"(\d+)(ms|s|m|h|d)", text).groups()  # type: ignore[union-attr]
    return int(number) * units[unit]


def test_for_scale_scales_every_for(tmp_path: Path, groups: list[dict[str, Any]]) -> None:
    scaled = rules.rule_groups(site(tmp_path, "alerting: {for_scale: 0.01}\n"))
    before = [(a["alert"], a.get("for")) for a in alerts(groups)]
    after = [(a["alert"], a.get("for")) for a in alerts(scaled)]
    assert [name for name, _ in before] == [name for name, _ in after]
    for (name, old), (_, new) in zip(before, after, strict=True):
        if old is None:
            assert new is None, name
        else:
            assert _for_seconds(new) == pytest.approx(_for_seconds(old) * 0.01), name
    # Only `for` changes: windows and thresholds stay as they are.
    strip = [{k: v for k, v in r.items() if k != "for"} for r in all_rules(groups)]
    assert strip == [{k: v for k, v in r.items() if k != "for"} for r in all_rules(scaled)]


def test_scaled_for_rounds_to_milliseconds() -> None:
    assert rules.scaled_for(300, 0.01) == "3s"
    assert rules.scaled_for(120, 0.001) == "120ms"
    assert rules.scaled_for(60, 1e-6) is None
    assert rules.scaled_for(0, 1) is None


def test_extra_labels_and_instance_labels(tmp_path: Path) -> None:
    profile = site(
        tmp_path,
        """
        alerting:
          labels: {team: infra}
          instance_labels: [region, cluster, instance]
          exporter_selector: job=~"nodeslo|nodeslo-k8s"
        """,
    )
    groups = rules.rule_groups(profile)
    for alert in alerts(groups):
        assert alert["labels"]["team"] == "infra"
    errors = groups[0]["rules"][0]["expr"]
    assert "sum by (region, cluster, instance, target)" in errors
    skew = next(a for a in alerts(groups) if a["alert"] == "FirmwareSkew")["expr"]
    assert "count by (region, cluster, model)" in skew
    down = next(a for a in alerts(groups) if a["alert"] == "NodeSLOExporterDown")["expr"]
    assert down == 'up{job=~"nodeslo|nodeslo-k8s"} == 0'


def test_every_up_selector_follows_the_profiles_exporter_selector(tmp_path: Path) -> None:
    """A scrape job named otherwise than `nodeslo` is set once, in the profile (README)."""
    profile = site(tmp_path, 'alerting:\n  exporter_selector: job="node-slo"\n')
    text = "\n".join(r["expr"] for g in rules.rule_groups(profile) for r in g["rules"])
    assert 'job="nodeslo"' not in text
    ups = re.findall(r"\bup\{[^}]*\}", text)
    assert len(ups) >= 5 and set(ups) == {'up{job="node-slo"}'}


def test_thresholds_come_from_the_profile(tmp_path: Path) -> None:
    profile = site(
        tmp_path,
        """
        health:
          nvme: {wear_warning: 90%, write_amplification_max: 2.5}
          memory: {numa_remote_max: 0.1, correctable_errors_max: 4}
          power: {psu_capacity_watts: 1600, psu_count: 3}
        """,
    )
    by_name = {a["alert"]: a for a in alerts(rules.rule_groups(profile))}
    assert by_name["NVMeWearHigh"]["expr"].endswith(">= 0.9")
    assert by_name["NVMeWearHigh"]["annotations"]["description"].count("90%") == 1
    assert by_name["NVMeWriteAmplificationHigh"]["expr"].endswith("> 2.5")
    assert by_name["NUMARemoteAccessHigh"]["expr"].endswith("> 0.1")
    assert by_name["MemoryCorrectableErrorsHigh"]["expr"].endswith("> 4")
    (draw,) = [
        a
        for a in alerts(rules.rule_groups(profile))
        if a["alert"] == "PowerRedundancyLost" and a["labels"]["cause"] == "power_draw"
    ]
    assert draw["expr"].endswith("> 3200")


def test_alerts_the_profile_turns_off(tmp_path: Path) -> None:
    profile = site(
        tmp_path,
        """
        slos: {scheduler-wakeup-latency: null}
        probes: {wakeup: {enabled: false}}
        tuning: {governor: null, turbo: false, max_cstate_exit_latency: null}
        health: {power: {psu_count: 1}}
        """,
    )
    names = [a.name for a in rules.health_alerts(profile)]
    for gone in ("CPUGovernorNotPerformance", "CPUTurboDisabled", "DeepCStatesEnabled"):
        assert gone not in names
    power_draw = [a for a in rules.health_alerts(profile) if ("cause", "power_draw") in a.labels]
    assert power_draw == []  # one PSU: no "one PSU fewer" to compare the draw with
    absent = [
        a
        for a in rules.health_alerts(profile)
        if a.name == "NodeSLOProbeDown" and "unless" in a.expr
    ]
    absent = [a for a in rules.health_alerts(profile) if a.name == "NodeSLOProbeDown" and a.labels]
    assert [dict(a.labels)["probe"] for a in absent] == ["storage"]


def test_without_a_prometheus_selector_the_rule_evaluation_alerts_are_off(
    tmp_path: Path,
) -> None:
    """Rules run where prometheus_rule_* do not exist (a Mimir ruler): the heartbeat stays."""
    names = rules.alert_names(site(tmp_path, "alerting: {prometheus_selector: false}\n"))
    assert "Watchdog" in names
    assert not [n for n in names if n.startswith("NodeSLORule")]


def test_the_site_selectors_reach_the_absence_alerts(tmp_path: Path) -> None:
    profile = site(
        tmp_path,
        """
        alerting:
          prometheus_selector: job="prometheus-k8s", namespace="monitoring"
          exporter_lookback: 7d
          instance_labels: [region, instance]
        """,
    )
    text = rules.rule_file(profile)[0][1]
    assert (
        'absent(prometheus_rule_group_iterations_total{job="prometheus-k8s", '
        'namespace="monitoring", rule_group=~".+;nodeslo-.+"})' in text
    )
    assert 'group by (region, instance, job) (present_over_time(up{job="nodeslo"}[7d]))' in text
    assert "unless on (region, instance)" in text


def test_without_a_throttling_slo_a_missing_throttle_signal_is_no_ticket(tmp_path: Path) -> None:
    assert "CPUThrottleSignalMissing" in rules.alert_names(load_profile())
    names = rules.alert_names(site(tmp_path, "slos: {cpu-unthrottled: null}\n"))
    assert "CPUThrottleSignalMissing" not in names


def test_cpu_temperature_limits_follow_the_profile(tmp_path: Path) -> None:
    """Only the vendors the profile names get a fallback limit."""
    profile = site(tmp_path, "health: {cpu: {temperature_crit: {amd: null, intel: 105}}}\n")
    text = rules.rule_file(profile)[0][1]
    sensors = "nodeslo_hwmon_temperature_celsius"
    assert f'{sensors}{{chip_name=~"coretemp"}}[5m]), 105, 105)' in text
    assert f'{sensors}{{chip_name=~"k10temp|zenpower"}}[5m]), 95, 95)' not in text
    assert f'{sensors}{{chip_name=~"k10temp|zenpower"}}[5m]), 85, 85)' in text


def test_a_profile_without_slos_has_no_burn_alerts(tmp_path: Path) -> None:
    path = tmp_path / "bare.yaml"
    path.write_text("profile: bare\n")
    profile = load_profile(str(path))
    assert "NodeSLOErrorBudgetBurn" not in rules.alert_names(profile)
    assert not [g for g in rules.rule_groups(profile) if "-slo-" in g["name"]]


# --- what the rules read -------------------------------------------------------------

# Metrics outside the design's contract table, each agreed with its collector's owner.
CONTRACT_EXTRAS = {
    "nodeslo_cpu_physical_cores",  # capacity of cpu-unthrottled (thermal collector)
    "nodeslo_cpu_below_target_frequency_seconds_total",  # its bad time on AMD (thermal)
    "nodeslo_cpu_throttle_signal_info",  # which of the two a host has (thermal)
    "nodeslo_firmware_microcode_revisions",  # firmware collector
    "nodeslo_firmware_microcode_outdated",  # firmware collector
    "nodeslo_profile_last_reload_successful",  # the daemon's self metrics
    "nodeslo_bmc_sensor_threshold",  # the BMC row's "thresholds per sensor" (bmc collector)
    "nodeslo_probe_wakeup_engine_info",  # the wake-up probe's engine (WakeupProbeEngineFallback)
    "nodeslo_probe_io_stalled_seconds",  # storage probe (NodeSLOStorageStalled, issue 13)
    # md as the kernel's sysfs reports it (redundancy collector, issue 13).
    "nodeslo_md_active",
    "nodeslo_md_degraded",
    "nodeslo_md_info",
    "nodeslo_md_member_state",
    "nodeslo_md_state",
    # The design's "links" row names these areas only; the names are issue 15's
    # (docs/links-and-inventory.md): pcie, network and inventory collectors.
    "nodeslo_pcie_link_speed_transfers_per_second",
    "nodeslo_pcie_link_expected_speed_transfers_per_second",
    "nodeslo_pcie_link_width",
    "nodeslo_pcie_link_expected_width",
    "nodeslo_pcie_device_responding",
    "nodeslo_pcie_aer_errors_total",
    "nodeslo_pcie_aer_rootport_errors_total",
    "nodeslo_network_expected_up",
    "nodeslo_network_carrier",
    "nodeslo_network_speed_bytes_per_second",
    "nodeslo_network_data_plane",
    "nodeslo_network_carrier_changes_total",
    "nodeslo_network_errors_total",
    "nodeslo_network_packets_total",
    "nodeslo_rdma_port_expected_active",
    "nodeslo_rdma_port_active",
    "nodeslo_inventory_memory_bytes",
    "nodeslo_inventory_dimms",
    "nodeslo_inventory_info",
    "nodeslo_inventory_compliant",
}


def metrics_read(groups: list[dict[str, Any]]) -> set[str]:
    names: set[str] = set()
    for rule in all_rules(groups):
        names.update(re.findall(r"(?<![:a-z_])nodeslo_[a-z0-9_]+", rule["expr"]))
    return {re.sub(r"_(bucket|count|sum)$", "", n) if "latency" in n else n for n in names}


def test_the_rules_read_only_the_metric_contract(
    shared: Path, groups: list[dict[str, Any]]
) -> None:
    design = (shared / "DESIGN.md").read_text()
    table = design.split("## Metric contract", 1)[1].split("\n## ", 1)[0]
    contract = {
        "nodeslo_" + name
        for row in table.splitlines()
        if row.startswith("|")
        for name in re.findall(r"`([a-z0-9_]+)(?:\{[^`]*\})?`", row)
    }
    assert metrics_read(groups) - contract - CONTRACT_EXTRAS == set()


def test_the_catalogue_names_what_each_alert_reads(profile: Profile) -> None:
    params = catalog.parameters(profile)
    for alert in rules.health_alerts(profile):
        expr = catalog.fill(alert.expr, params)
        read = set(
            re.findall(r"(?<![:a-z_])(?:(?:nodeslo|prometheus)_[a-z0-9_]+|up)(?=[{[\s)]|$)", expr)
        )
        recorded = {catalog.fill(r.record, params): set(r.source) for r in catalog.RECORDINGS}
        for name, sources in recorded.items():
            if name in expr:
                read |= sources
        if alert.held_while_unscraped:
            read.add("up")  # its gate: which hosts' scrape fails
        assert read == set(alert.source), alert.name


# --- generate ------------------------------------------------------------------------


def test_the_committed_rule_file_is_what_generate_writes() -> None:
    """CI fails when the profile or the generator changed and nobody regenerated."""
    stale = generate.stale(REPO, generate.outputs(load_profile()))
    assert stale == [], f"run `nodeslo generate` and commit: {stale}"


def test_generate_writes_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--out", str(tmp_path)]) == 0
    written = tmp_path / rules.RULES_PATH
    assert written.read_text() == (REPO / rules.RULES_PATH).read_text()
    assert "alerts/nodeslo.rules.yaml: written" in capsys.readouterr().out
    assert main(["generate", "--out", str(tmp_path), "--check"]) == 0
    assert main(["generate", "--out", str(tmp_path)]) == 0
    assert "unchanged" in capsys.readouterr().out
    written.write_text(written.read_text().replace("> (14.4 * 0.01)", "> (14 * 0.01)", 1))
    assert main(["generate", "--out", str(tmp_path), "--check"]) == 1
    err = capsys.readouterr().err
    assert "alerts/nodeslo.rules.yaml: differs" in err and "nodeslo generate" in err


def test_generate_with_a_site_profile(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text("extends: process-management\nprofile: site\nalerting: {for_scale: 0.1}\n")
    assert main(["generate", "--profile", str(path), "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / rules.RULES_PATH).read_text()
    assert "from the profile 'site'" in text and "for: 12s" in text


def test_generate_with_a_broken_profile_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("profile: bad\nperiod: 30d\nslos:\n  x:\n    objective: 120%\n")
    assert main(["generate", "--profile", str(path), "--out", str(tmp_path)]) == 2
    assert f"{path}:5: slos.x.objective" in capsys.readouterr().err
    assert not (tmp_path / "alerts").exists()


def test_producers_may_not_clash() -> None:
    def twice(_: Profile) -> list[tuple[str, str]]:
        return [("a.txt", "1"), ("a.txt", "2")]

    with pytest.raises(ValueError, match="repeated path"):
        generate.outputs(load_profile(), [twice])
    with pytest.raises(ValueError, match="bad or repeated path"):
        generate.outputs(load_profile(), [lambda _: [("../escape.txt", "")]])


def test_the_pack_does_not_import_the_dashboard_sdk() -> None:
    code = (
        "import sys; import nodeslo.pack.generate, nodeslo.cli; "
        "sys.exit('grafana_foundation_sdk' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
