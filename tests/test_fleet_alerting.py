"""Fleet regressions: NodeSLOFleetRegression's profile keys, its rules, the generated
inhibit rules of the Alertmanager example, and a real Prometheus + Alertmanager where
a regression across a cluster reaches the pager as one page while the per-host pages
of that cluster are held back (alerts/tests/fleet.yaml has the promtool cases)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import REPO, missing
from nodeslo.pack import alertmanager, rules
from nodeslo.pack.catalog import fleet
from nodeslo.profile import ProfileError, load_profile
from support import stack as s

CONFIG = REPO / "deploy" / "alertmanager" / "alertmanager.yml"


def site(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(
        "extends: process-management\nprofile: site\n" + textwrap.dedent(body).lstrip("\n")
    )
    return path


def fleet_group(profile_path: Path | None = None) -> dict[str, Any]:
    profile = load_profile(None if profile_path is None else str(profile_path))
    groups = {g["name"]: g for g in rules.rule_groups(profile)}
    return groups["nodeslo-fleet"]


# --- profile ------------------------------------------------------------------------


def test_defaults_count_pages_of_ten_hosts_or_more() -> None:
    settings = load_profile().alerting.fleet_regression
    assert (settings.share, settings.resolve_share, settings.min_hosts) == (0.1, 0.05, 10)
    assert settings.severities == ("critical",)
    assert settings.for_seconds == 120


def test_resolve_share_defaults_to_half_the_share(tmp_path: Path) -> None:
    path = site(tmp_path, "alerting:\n  fleet_regression:\n    share: 30%\n")
    settings = load_profile(str(path)).alerting.fleet_regression
    assert settings.share == pytest.approx(0.3)
    assert settings.resolve_share == pytest.approx(0.15)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("share: 0", "above 0 and below 1"),
        ("share: 100%", "above 0 and below 1"),
        ("{share: 10%, resolve_share: 20%}", "must not be above share"),
        ("min_hosts: 0", "at least 1"),
        ("severities: []", "at least one severity"),
        ("severities: [none]", "must be one of critical, warning"),
        ("for: 1.5ms", "not a whole number of milliseconds"),
    ],
)
def test_bad_fleet_settings_name_the_key(tmp_path: Path, body: str, message: str) -> None:
    if body.startswith("{"):
        text = f"alerting:\n  fleet_regression: {body}\n"
    else:
        text = f"alerting:\n  fleet_regression:\n    {body}\n"
    with pytest.raises(ProfileError) as info:
        load_profile(str(site(tmp_path, text)))
    assert "alerting.fleet_regression" in str(info.value)
    assert message in str(info.value)


# --- rules --------------------------------------------------------------------------


def test_only_the_profiles_severities_and_the_packs_own_alerts_are_counted(
    tmp_path: Path,
) -> None:
    shipped = fleet_group()["rules"][1]["expr"]
    assert 'severity=~"critical"' in shipped
    assert "NodeSLOExporterDown" in shipped and "NodeSLOErrorBudgetBurn" in shipped
    # Tickets, the heartbeat and the fleet alert itself are not counted.
    assert "KernelTuningDrift" not in shipped
    assert "Watchdog" not in shipped and fleet.NAME not in shipped.split("ALERTS{")[1]
    path = site(tmp_path, "alerting:\n  fleet_regression:\n    severities: [warning, critical]\n")
    both = fleet_group(path)["rules"][1]["expr"]
    assert 'severity=~"critical|warning"' in both and "KernelTuningDrift" in both


def test_the_fleet_is_the_instance_labels_without_instance(tmp_path: Path) -> None:
    path = site(tmp_path, "alerting:\n  instance_labels: [region, site, instance]\n")
    group = fleet_group(path)
    assert group["rules"][0]["expr"].startswith("count by (region, site) (")
    alert = group["rules"][-1]
    assert "and on (region, site, regressed_alert)" in alert["expr"]
    assert "region {{ with $labels.region }}" in alert["annotations"]["summary"]
    # Only `instance`: every host of this Prometheus is one fleet.
    path = site(tmp_path, "alerting:\n  instance_labels: [instance]\n")
    alert = fleet_group(path)["rules"][-1]
    assert "and on ()\n" in alert["expr"] and "the fleet" in alert["annotations"]["summary"]


# --- the Alertmanager example -------------------------------------------------------


def test_one_inhibit_rule_per_counted_alert_in_the_shipped_example() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    generated = [
        r for r in config["inhibit_rules"] if f'alertname="{fleet.NAME}"' in r["source_matchers"]
    ]
    names = fleet.counted_alerts(load_profile())
    assert len(generated) == len(names) > 20
    for rule, name in zip(generated, names, strict=True):
        assert rule["source_matchers"] == [f'alertname="{fleet.NAME}"', f'regressed_alert="{name}"']
        assert rule["target_matchers"] == [f'alertname="{name}"', 'severity=~"critical"']
        assert rule["equal"] == ["cluster"]


def test_the_block_follows_the_profile_and_needs_its_markers(tmp_path: Path) -> None:
    path = site(tmp_path, "alerting:\n  fleet_regression:\n    severities: [critical, warning]\n")
    text = alertmanager.alertmanager_file(load_profile(str(path)))[0][1]
    assert (
        "target_matchers: ['alertname=\"KernelTuningDrift\"', 'severity=~\"critical|warning\"']"
        in text
    )
    # Regenerating is idempotent: the hand-written rest of the file is kept.
    assert (
        alertmanager.with_block(text, alertmanager.fleet_inhibit_rules(load_profile(str(path))))
        == text
    )
    assert text.startswith(CONFIG.read_text().split(alertmanager.BEGIN)[0])
    with pytest.raises(ValueError, match="marker lines"):
        alertmanager.with_block("route: {}\n", [])


def test_the_page_names_the_cluster_and_the_regressed_alert(tmp_path: Path) -> None:
    amtool = s.tool("amtool")
    if amtool is None:
        missing("amtool is not installed (Debian package prometheus-alertmanager)")
    labels = {"alertname": fleet.NAME, "cluster": "eu1", "regressed_alert": "RDMAPortDown"}
    summary = "RDMAPortDown is on 40% of the hosts of cluster eu1"
    alert = {"status": "firing", "labels": {**labels, "severity": "critical"},
             "annotations": {"summary": summary, "runbook_url": "https://r/x.md"}}  # fmt: skip
    data = tmp_path / "data.json"
    data.write_text(json.dumps({
        "receiver": "pager", "status": "firing", "alerts": [alert],
        "groupLabels": {"alertname": fleet.NAME, "cluster": "eu1"},
        "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
    }))  # fmt: skip
    text = '{{ template "nodeslo.description" . }}|{{ template "nodeslo.alerts.firing" . }}'
    result = subprocess.run(
        [amtool, "template", "render", f"--template.glob={CONFIG.parent}/*.tmpl",
         f"--template.text={text}", f"--template.data={data}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    description, firing = result.stdout.split("|")
    assert description == f"[FIRING:1] {fleet.NAME} (eu1): {summary}"
    assert firing.startswith(f"[critical] {fleet.NAME} regressed_alert=RDMAPortDown: {summary}")


# --- a real Prometheus and Alertmanager ---------------------------------------------


@pytest.fixture(scope="module")
def binaries() -> None:
    if not (s.tool("prometheus") and s.tool("prometheus-alertmanager", "alertmanager")):
        missing("prometheus / prometheus-alertmanager are not installed (Debian packages)")


def _example_with_webhooks(hook_port: int, path: Path) -> Path:
    """The shipped example's routes and inhibit rules; its receivers post to the test."""
    config = yaml.safe_load(CONFIG.read_text())
    config.pop("templates")
    base = f"http://127.0.0.1:{hook_port}"
    config["receivers"] = [
        {"name": r["name"], "webhook_configs": [{"url": f"{base}/{r['name']}"}]}
        if r["name"] != "blackhole"
        else {"name": "blackhole"}
        for r in config["receivers"]
    ]
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.e2e
def test_a_cluster_wide_regression_is_one_page(binaries: None, tmp_path: Path) -> None:
    """Cluster a: 4 of 10 exporters down (40%); cluster b: 1 of 10 (10%, the border).
    Compressed time (for_scale 0.1): the hosts' NodeSLOExporterDown fires after 30s,
    the fleet alert after 12s of its hosts pending. The pager must get the fleet page
    for a, the single page for b's host, and no per-host page from a."""
    profile_path = site(tmp_path, "alerting:\n  for_scale: 0.1\n")
    profile = load_profile(str(profile_path))
    # The exporter and fleet groups: the bare test targets would raise the other
    # groups' alerts about missing data, which is not what is measured here.
    groups = [
        g for g in rules.rule_groups(profile) if g["name"] in ("nodeslo-exporter", "nodeslo-fleet")
    ]
    rule_file = tmp_path / "rules.yaml"
    rule_file.write_text(rules.render(profile, groups))
    exposition = tmp_path / "metrics.prom"
    exposition.write_text('nodeslo_build_info{version="test"} 1\n')
    with contextlib.ExitStack() as stack_:

        def live(n: int) -> list[str]:
            return [stack_.enter_context(s.serving(exposition)) for _ in range(n)]

        def dead(n: int) -> list[str]:
            return [f"127.0.0.1:{s.free_port()}" for _ in range(n)]  # nothing listens

        down_a, down_b = dead(4), dead(1)
        static = [
            {"targets": down_a + live(6), "labels": {"cluster": "a"}},
            {"targets": down_b + live(9), "labels": {"cluster": "b"}},
        ]
        with s.running(
            tmp_path,
            [],
            [str(rule_file)],
            alertmanager_config=lambda port: _example_with_webhooks(port, tmp_path / "am.yml"),
            static_configs=static,
        ) as stack:
            stack.wait_scraped(min_targets=15)
            hook = stack.webhook
            fleet_page = hook.wait_for(90, alertname=fleet.NAME)
            single = hook.wait_for(120, alertname="NodeSLOExporterDown", cluster="b")
            # a's hosts fire in the same evaluation as b's: give their pages time to
            # come (group_wait 10s in the example) if inhibition did not hold them.
            time.sleep(20)
            held = stack.alertmanager_alerts(alertname="NodeSLOExporterDown", cluster="a")
            pages = hook.firing(alertname="NodeSLOExporterDown")
            fleet_pages = hook.firing(alertname=fleet.NAME)
    assert fleet_page.receiver == "pager"
    assert fleet_page.labels["cluster"] == "a"
    assert fleet_page.labels["regressed_alert"] == "NodeSLOExporterDown"
    assert "4 of the 10 hosts of cluster a" in fleet_page.annotations["description"]
    assert {n.labels["cluster"] for n in fleet_pages} == {"a"}, "b is on the border"
    assert single.receiver == "pager" and single.labels["instance"] == down_b[0]
    assert {n.labels["instance"] for n in pages} == {down_b[0]}, "a's hosts paged"
    assert sorted(a["labels"]["instance"] for a in held) == sorted(down_a)
    for alert in held:
        assert alert["status"]["state"] == "suppressed" and alert["status"]["inhibitedBy"], alert


# --- the fleet dashboard ------------------------------------------------------------


def test_the_fleet_dashboard_shows_regressions_first() -> None:
    doc = json.loads((REPO / "dashboards" / "nodeslo-fleet.json").read_text())
    rows = [p for p in doc["panels"] if p["type"] == "row"]
    assert rows[0]["title"] == "Fleet regressions" and rows[0]["gridPos"]["y"] == 0
    first = [p for p in doc["panels"] if p["gridPos"]["y"] == 1]
    exprs = " ".join(t["expr"] for p in first for t in p["targets"])
    assert f'ALERTS{{alertname="{fleet.NAME}", alertstate="firing"}}' in exprs
    assert fleet.SHARE in exprs and fleet.ALERTING in exprs
    # The share's colours are the profile's: orange from the resolve share, red above.
    table = next(p for p in first if p["type"] == "table")
    steps = next(
        prop["value"]["steps"]
        for o in table["fieldConfig"]["overrides"]
        for prop in o["properties"]
        if prop["id"] == "thresholds"
    )
    assert [s["value"] for s in steps] == [None, 0.05, 0.1]
