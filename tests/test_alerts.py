"""The committed rule file with promtool, the hand-written tests' coverage, the runbooks.

`promtool check rules` and `promtool test rules alerts/tests/*.yaml` run against the
Debian package (Prometheus 2.42); they skip without promtool, and fail in CI
(NODESLO_REQUIRE_TOOLS). The coverage checks make sure every alert the rules can raise
has a hand-written case where it fires (with its labels) and one where it stays silent,
and every alert has a runbook with real sections.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import REPO
from nodeslo.pack import catalog, rules
from nodeslo.profile import load_profile

RULE_FILE = REPO / rules.RULES_PATH
TESTS = sorted((REPO / "alerts" / "tests").glob("*.yaml"))
RUNBOOKS = REPO / "alerts" / "runbooks"
SECTIONS = ("## What it means", "## Why it matters", "## How to confirm", "## What to do")


def alert_names() -> tuple[str, ...]:
    return rules.alert_names(load_profile())


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def alert_cases() -> list[dict[str, Any]]:
    return [
        case
        for path in TESTS
        for group in load(path)["tests"]
        for case in group.get("alert_rule_test", [])
    ]


def test_promtool_check_rules(promtool: str) -> None:
    result = subprocess.run(
        [promtool, "check", "rules", str(RULE_FILE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    assert "WARNING" not in (result.stdout + result.stderr).upper()


@pytest.mark.parametrize("path", TESTS, ids=[p.name for p in TESTS])
def test_promtool_test_rules(promtool: str, path: Path) -> None:
    result = subprocess.run(
        [promtool, "test", "rules", path.name],
        cwd=path.parent,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", TESTS, ids=[p.name for p in TESTS])
def test_the_test_files_run_on_prometheus_2_42(path: Path) -> None:
    """2.42 has no default `interval`, no fuzzy_compare, no group labels."""
    data = load(path)
    assert data["rule_files"] == ["../nodeslo.rules.yaml"]
    assert "evaluation_interval" in data
    for group in data["tests"]:
        assert "interval" in group, group.get("name")
        assert "labels" not in group and "external_labels" not in group
    assert "fuzzy_compare" not in path.read_text()


def test_every_alert_fires_in_a_test_and_stays_silent_in_another() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for case in alert_cases():
        (firing if case.get("exp_alerts") else silent).add(case["alertname"])
        for expected in case.get("exp_alerts") or []:
            # The expected labels include severity: the page/ticket decision is tested.
            assert "severity" in expected["exp_labels"], case
            assert set(expected["exp_annotations"]) == {"summary", "description", "runbook_url"}
    names = set(alert_names())
    # The Watchdog fires whatever the data: its silence is the heartbeat service's page.
    heartbeats = names - set(rules.alert_names(load_profile(), heartbeats=False))
    assert heartbeats == {"Watchdog"}
    assert names - firing == set(), "alerts never seen firing"
    assert names - silent - heartbeats == set(), "alerts never seen staying silent"
    assert firing - names == set(), "tests for alerts the rules do not have"


def test_all_four_burn_tiers_and_both_probe_cases_are_tested() -> None:
    tiers = set()
    probe_cases = set()
    for case in alert_cases():
        for expected in case.get("exp_alerts") or []:
            labels = expected["exp_labels"]
            if case["alertname"] == "NodeSLOErrorBudgetBurn":
                tiers.add((labels["severity"], labels["long_window"], labels["short_window"]))
            if case["alertname"] == "NodeSLOProbeDown":
                probe_cases.add(expected["exp_annotations"]["summary"].rsplit(" ", 1)[-1])
    assert tiers == {
        ("critical", "1h", "5m"),
        ("critical", "6h", "30m"),
        ("warning", "1d", "2h"),
        ("warning", "3d", "6h"),
    }
    assert probe_cases == {"down", "absent"}


def test_zero_traffic_is_tested_for_nan() -> None:
    exprs = [
        case["expr"]
        for path in TESTS
        for group in load(path)["tests"]
        for case in group.get("promql_expr_test", [])
    ]
    assert any("> -Inf < +Inf" in e for e in exprs), "no test looks for NaN in the recordings"


def test_every_alert_has_a_runbook_and_every_runbook_an_alert() -> None:
    books = {p.stem for p in RUNBOOKS.glob("*.md")}
    assert books == set(alert_names())


@pytest.mark.parametrize("name", alert_names())
def test_runbooks_have_real_sections(name: str) -> None:
    text = (RUNBOOKS / f"{name}.md").read_text()
    assert text.startswith(f"# {name}\n")
    positions = [text.find(section) for section in SECTIONS]
    assert all(p > 0 for p in positions) and positions == sorted(positions), name
    bodies = re.split(r"^## .*$", text, flags=re.MULTILINE)[1:]
    for section, body in zip(SECTIONS, bodies, strict=True):
        assert len(body.split()) >= 25, f"{name}: {section} is too thin"


def test_the_rules_match_le_in_prometheus_2_and_3_spellings() -> None:
    """Prometheus 3 rewrites le="1" as "1.0": an equality matcher on le breaks there."""
    text = RULE_FILE.read_text()
    assert 'le="' not in text
    # the threshold bucket of each of the 3 latency SLOs, in its 5m, 30m and 1h windows
    assert text.count("le=~") == 3 * 3


def test_the_docs_list_every_alert_with_its_severity_threshold_and_source() -> None:
    """docs/alerts.md's table is what the catalogue generates for the shipped profile."""
    profile = load_profile()
    params = catalog.parameters(profile)
    expected: dict[str, tuple[list[str], list[str], list[str]]] = {}
    for alert in rules.health_alerts(profile):
        severities, thresholds, sources = expected.setdefault(alert.name, ([], [], []))
        severities.extend([alert.severity] * (alert.severity not in severities))
        threshold = catalog.fill(alert.threshold, params)
        thresholds.extend([threshold] * (threshold not in thresholds))
        sources.extend(s for s in alert.source if s not in sources)
    doc = (REPO / "docs" / "alerts.md").read_text()
    table = doc.split("| alert | severity |", 1)[1].split("\n\n", 1)[0]
    rows = {
        re.sub(r"^\[(\w+)\]\(\.\./alerts/runbooks/\1\.md\)$", r"\1", cells[0]): cells[1:]
        for line in table.splitlines()[2:]
        for cells in [[c.strip() for c in line.strip("|").split(" | ")]]
    }
    assert rows.pop("NodeSLOErrorBudgetBurn")[0] == "critical, warning"
    assert set(rows) == set(expected)
    for name, (severities, thresholds, sources) in expected.items():
        row = rows[name]
        assert [row[0], row[3], row[4]] == [
            ", ".join(sorted(severities)),
            "; ".join(thresholds),
            ", ".join(f"`{s}`" for s in sources),
        ], name
