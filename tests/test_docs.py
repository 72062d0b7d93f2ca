"""The README is a front door, and the docs it leads to hold together."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import REPO
from nodeslo.metrics import Desc
from nodeslo.pack import docs, generate, rules, slo
from nodeslo.profile import load_profile

README = REPO / "README.md"


def pages() -> list[Path]:
    return [README, *sorted((REPO / "docs").glob("*.md"))]


def prose(page: Path) -> str:
    """The page without code blocks and code spans (`md0[0](S)` is no link)."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    return re.sub(r"`[^`\n]*`", "", text)


def test_the_readme_is_short() -> None:
    assert README.stat().st_size <= 12 * 1024


def test_the_readme_keeps_its_two_commands() -> None:
    text = README.read_text()
    assert "make run     # run the exporter on this host with the default profile" in text
    assert "make test    # lint (ruff), format check, mypy, and the whole test suite" in text


def test_the_readme_names_every_alert_that_pages_and_only_those() -> None:
    table = README.read_text().split("## What it pages on", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`([A-Z][A-Za-z]+)`", table))
    profile = load_profile()
    paging = {a.name for a in rules.health_alerts(profile) if a.severity == "critical"}
    assert slo.ALERT_NAME in named
    assert named - {slo.ALERT_NAME, "Watchdog"} == paging


def test_the_scrape_config_uses_the_job_the_rules_select() -> None:
    text = README.read_text()
    selector = load_profile().alerting.exporter_selector
    job = re.fullmatch(r'job="([^"]+)"', selector)
    assert job is not None, selector
    assert f"job_name: {job.group(1)} " in text
    assert f"up{{{selector}}}" in text and "alerting.exporter_selector" in text


def test_every_relative_link_resolves() -> None:
    broken = []
    for page in pages():
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", prose(page)):
            if "://" in target:
                continue
            path = (page.parent / target).resolve()
            if not path.exists():
                broken.append(f"{page.relative_to(REPO)}: {target}")
    assert broken == []


def test_every_anchor_within_the_docs_exists() -> None:
    def anchors(page: Path) -> set[str]:
        heads = re.findall(r"^#+ (.+)$", page.read_text(), flags=re.MULTILINE)
        return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in heads}

    missing = []
    for page in pages():
        for target, anchor in re.findall(r"\]\(([^)#\s]*)#([^)\s]+)\)", prose(page)):
            linked = (page.parent / target).resolve() if target else page
            if linked.suffix == ".md" and linked.exists() and anchor not in anchors(linked):
                missing.append(f"{page.relative_to(REPO)}: {target}#{anchor}")
    assert missing == []


def test_the_docs_index_lists_every_page() -> None:
    index = (REPO / "docs" / "README.md").read_text()
    for page in (REPO / "docs").glob("*.md"):
        if page.name != "README.md":
            assert f"]({page.name})" in index, page.name


def test_every_family_of_the_golden_expositions_is_documented() -> None:
    """What the collectors really export (tests/golden/) is in docs/metrics.md."""
    exported = {
        name
        for path in (REPO / "tests" / "golden").glob("*.prom")
        for name in re.findall(r"^# TYPE (nodeslo_\w+) ", path.read_text(), flags=re.MULTILINE)
    }
    assert len(exported) > 50
    rows = (REPO / "docs" / "metrics.md").read_text()
    documented = set(re.findall(r"^\| `(nodeslo_\w+)` \|", rows, flags=re.MULTILINE))
    assert exported - documented == set()


def test_every_declared_metric_is_documented_once() -> None:
    names = [d.desc.name for d in docs.declared()]
    assert len(names) == len(set(names))
    assert {"nodeslo_collector_success", "nodeslo_build_info"} <= set(names)  # self metrics
    assert "nodeslo_probe_io_latency_seconds" in names  # the probes
    assert "nodeslo_web_config_last_reload_successful" in names
    (row,) = [r for r in docs.metrics_page(load_profile())[0][1].splitlines() if "_io_in_p" in r]
    assert row == (
        "| `nodeslo_disk_io_in_progress` | gauge | `device` | I/Os currently in flight. "
        "| diskstats | `exporter/nodeslo/collectors/diskstats.py` |"
    )


def test_a_changed_descriptor_is_drift(monkeypatch: pytest.MonkeyPatch) -> None:
    """`nodeslo generate --check` (CI) fails when a help text or label changes."""
    from nodeslo.collectors import diskstats

    profile = load_profile()
    assert generate.stale(REPO, generate.outputs(profile)) == []
    changed = Desc("nodeslo_disk_io_in_progress", "gauge", "I/Os in flight.", ("disk",))
    monkeypatch.setattr(diskstats, "IN_PROGRESS", changed)
    assert generate.stale(REPO, generate.outputs(profile)) == [docs.METRICS_PATH]


def test_the_alert_page_follows_the_profile(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(
        "extends: process-management\nprofile: site\nhealth:\n  nvme: {wear_warning: 85%}\n"
    )
    (path, text) = docs.alerts_page(load_profile(str(site)))[0]
    assert path == "docs/alerts.md"
    assert "for the profile 'site'" in text and "percentage used ≥ 85%" in text
    assert generate.stale(REPO, [(path, text)]) == [path]
