"""The 1d and 3d error ratios as a production Prometheus computes them: hourly sums
written once an hour, 5m recordings every minute.

promtool runs every group at the test's evaluation interval, so in alerts/tests/ the
hourly group writes a sum every minute and the long windows read overlapping sums.
Here the shipped 1d rule runs alone against input series shaped as production writes
its inputs, and the figures are worked out below from the window's definition: the
hourly sums in [t - 1m - 1d, t - 1m] plus the 5m recordings in [t - 1h, t] (ranges are
closed in Prometheus 2.42).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from nodeslo.pack import rules, slo
from nodeslo.profile import load_profile

SLO = "storage-write-latency"
RATIO_1D = slo.ratio_record(86400.0)
LABELS = 'job="nodeslo",cluster="eu1",target="/t",slo="storage-write-latency"'
HOURS = 30  # of per-minute data, 0m .. 30h


def shipped_rule(record: str) -> dict[str, Any]:
    for group in rules.rule_groups(load_profile()):
        for rule in group["rules"]:
            if rule.get("record") == record and rule["labels"].get("slo") == SLO:
                return {"record": record, "expr": rule["expr"], "labels": rule["labels"]}
    raise AssertionError(f"{record} for {SLO} is not generated")


def per_minute(values: list[float | None]) -> str:
    return " ".join("_" if v is None else repr(v) for v in values)


def _sum(values: list[float | None], first: int, last: int) -> float | None:
    """The sum of the samples at minutes first..last (Prometheus 2 ranges are closed)."""
    window = [v for v in values[max(first, 0) : last + 1] if v is not None]
    return float(sum(window)) if window else None


def hourly_sums(minute_values: list[float | None]) -> list[float | None]:
    """What the hourly group writes at each full hour H, nothing in between: the sum
    of the 5m recordings over [H - 61m, H - 1m] (its range, read `offset 1m`)."""
    out: list[float | None] = [None] * len(minute_values)
    for hour in range(60, len(minute_values), 60):
        out[hour] = _sum(minute_values, hour - 61, hour - 1)
    return out


def one_day(minute_values: list[float | None], t: int) -> float | None:
    """The rule's 1d sum at minute t: hourly sums in [t - 1m - 1d, t - 1m] plus the
    5m recordings in [t - 1h, t]; either alone where the other has nothing."""
    parts = [_sum(hourly_sums(minute_values), t - 1 - 1440, t - 1), _sum(minute_values, t - 60, t)]
    present = [p for p in parts if p is not None]
    return sum(present) if present else None


def host(
    instance: str, events: list[float | None], errors: list[float | None]
) -> list[dict[str, str]]:
    labels = f'{{{LABELS},instance="{instance}"}}'
    return [
        {"series": f"instance_slo:nodeslo_sli_events:rate5m{labels}", "values": per_minute(events)},
        {"series": f"instance_slo:nodeslo_sli_errors:rate5m{labels}", "values": per_minute(errors)},
        {"series": f"{slo.HOURLY_EVENTS}{labels}", "values": per_minute(hourly_sums(events))},
        {"series": f"{slo.HOURLY_ERRORS}{labels}", "values": per_minute(hourly_sums(errors))},
    ]


def ratio_at(minute: int, expected: dict[str, float]) -> dict[str, Any]:
    return {
        "expr": f"round({RATIO_1D}, 0.000001)",
        "eval_time": f"{minute}m",
        "exp_samples": [
            {"labels": f'{{{LABELS},instance="{i}"}}', "value": round(v, 6)}
            for i, v in expected.items()
        ],
    }


def run_promtool(tmp_path: Path, promtool: str, rule: dict, series: list, cases: list) -> str:
    (tmp_path / "rules.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "g", "rules": [rule]}]})
    )
    test = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": cases}],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(test, width=10**6))
    run = subprocess.run(
        [promtool, "test", "rules", "test.yaml"],
        cwd=tmp_path,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return "" if run.returncode == 0 else run.stdout + run.stderr


# pm1: 10 events a second throughout, 1 of them bad during the third hour only (minutes
# 120-179); pm2: 5 % bad from the start; pm3 the same, until its data stops at 10h.
MINUTES = HOURS * 60 + 1
STEADY: list[float | None] = [10.0] * MINUTES
BAD_HOUR: list[float | None] = [1.0 if 120 <= m < 180 else 0.0 for m in range(MINUTES)]
FIVE_PERCENT: list[float | None] = [0.5] * MINUTES
STOPS = [v if m <= 600 else None for m, v in enumerate(STEADY)]
STOPS_BAD = [v if m <= 600 else None for m, v in enumerate(FIVE_PERCENT)]
HOSTS = {"pm1": (STEADY, BAD_HOUR), "pm2": (STEADY, FIVE_PERCENT), "pm3": (STOPS, STOPS_BAD)}


def expected(t: int) -> dict[str, float]:
    out = {}
    for name, (events, errors) in HOSTS.items():
        bad, all_ = one_day(errors, t), one_day(events, t)
        if bad is not None and all_:
            out[name] = bad / all_
    return out


def test_the_window_model_has_the_properties_the_alerts_need() -> None:
    """What the figures promtool must reproduce below mean for a ticket."""
    # The first hour, before any hourly sum: the recordings alone.
    assert expected(30) == {"pm1": 0.0, "pm2": 0.05, "pm3": 0.05}
    # The bad hour counts while it is in the day, at least as much as in an exact
    # window (the newest hour may count twice: it leans recent, never forgets it).
    exact = 60 / 2110  # 60 bad of the 211 per-minute samples so far x 10
    assert expected(210)["pm1"] >= exact
    assert expected(1200)["pm1"] > 0
    # ... and leaves the window within a day and an hour of its end (Prometheus 2
    # ranges are closed: the next hourly sum holds its last minute too).
    assert expected(1700)["pm1"] == 0.0
    # A host whose data stopped keeps its ratio from the hourly sums it has.
    assert expected(1200)["pm3"] == 0.05


def test_one_day_ratio_from_hourly_sums_as_production_writes_them(
    tmp_path: Path, promtool: str
) -> None:
    series = [s for name, (ev, er) in HOSTS.items() for s in host(name, ev, er)]
    cases = [ratio_at(t, expected(t)) for t in (30, 210, 1200, 1700)]
    failure = run_promtool(tmp_path, promtool, shipped_rule(RATIO_1D), series, cases)
    assert not failure, failure


def test_a_wrong_window_fails_the_same_check(tmp_path: Path, promtool: str) -> None:
    """Negative control: the old rule (every 5m recording of the day) gives another
    figure for the same inputs, so the test above tells the windows apart."""
    old = {
        "record": RATIO_1D,
        "expr": (
            "sum_over_time(instance_slo:nodeslo_sli_errors:rate5m[1d])"
            " / (sum_over_time(instance_slo:nodeslo_sli_events:rate5m[1d]) > 0)"
        ),
    }
    series = host("pm1", STEADY, BAD_HOUR)
    failure = run_promtool(
        tmp_path, promtool, old, series, [ratio_at(210, {"pm1": expected(210)["pm1"]})]
    )
    # 60 bad of the 211 per-minute samples so far: the exact sum the old rule reads.
    assert "2.8436E-02" in failure, failure
