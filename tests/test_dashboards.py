"""The generated Grafana dashboards: schema-valid, non-Angular, linked, laid out, drawn
from the profile, committed as generated; the SDK stays out of the exporter.

Schemas: the Grafana Foundation SDK's JSON schemas (not in its wheel; a copy in
../shared/grafana-schemas). The dashboard schema checks the whole document; each
panel's `options` and `fieldConfig.defaults.custom` are checked against its panel
type's schema, each target against the Prometheus dataquery schema. Two definitions
of the dashboard schema are relaxed, each because it rejects what Grafana itself
writes (test_the_relaxed_definitions_are_the_only_strict_failures proves it).
The PromQL of every panel runs against a real Prometheus in test_dashboards_promql.py.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from conftest import REPO
from nodeslo.burnrate import TIERS
from nodeslo.pack import dashboards, generate, kubernetes, rules
from nodeslo.pack.dashboards import common, model
from nodeslo.profile import Profile, load_profile
from support import daemon as d
from support import grafana as g

NON_ANGULAR = {
    "timeseries",
    "heatmap",
    "stat",
    "gauge",
    "table",
    "bargauge",
    "text",
    "state-timeline",
}
SCHEMA_FILE = {"state-timeline": "statetimeline"}
UIDS = ("nodeslo-fleet", "nodeslo-node", "nodeslo-slos")
SDK = "grafana_foundation_sdk"


@pytest.fixture(scope="module")
def profile() -> Profile:
    return load_profile()


@pytest.fixture(scope="module")
def files(profile: Profile) -> dict[str, str]:
    return dict(dashboards.dashboard_files(profile))


@pytest.fixture(scope="module")
def docs(files: dict[str, str]) -> dict[str, dict[str, Any]]:
    return {json.loads(text)["uid"]: json.loads(text) for text in files.values()}


def all_panels(docs: dict[str, dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for uid, doc in docs.items():
        for panel in g.panels(doc):
            yield uid, panel


# --- schemas --------------------------------------------------------------------------


def _schema(shared: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (shared / "grafana-schemas" / f"{name}.jsonschema.json").read_text()
    )
    return data


def _relaxed_dashboard_schema(shared: Path) -> dict[str, Any]:
    schema = copy.deepcopy(_schema(shared, "dashboard"))
    definitions = schema["definitions"]
    # MatcherConfig.options is "object" in the schema, but a byName / byRegexp /
    # byFrameRefID / byType matcher's options is a string (the field name, the regex,
    # the refId, the type) in every dashboard Grafana saves, and the SDK's own
    # override_by_name() writes a string there.
    definitions["MatcherConfig"]["properties"]["options"] = {}
    # DynamicConfigValue.value is "object" in the schema, but an override property's
    # value is whatever that property holds: a unit string, a number of decimals, a
    # list of links, a thresholds object.
    definitions["DynamicConfigValue"]["properties"]["value"] = {}
    return schema


def _validator(schema: dict[str, Any], definition: str | None = None) -> jsonschema.Draft7Validator:
    if definition is not None:
        schema = {**schema, "$ref": f"#/definitions/{definition}"}
    return jsonschema.Draft7Validator(schema)


def test_dashboards_validate_against_the_dashboard_schema(
    shared: Path, docs: dict[str, dict[str, Any]]
) -> None:
    validator = _validator(_relaxed_dashboard_schema(shared))
    for uid, doc in docs.items():
        errors = [f"{list(e.absolute_path)}: {e.message[:200]}" for e in validator.iter_errors(doc)]
        assert not errors, f"{uid}:\n" + "\n".join(errors[:20])


def test_the_relaxed_definitions_are_the_only_strict_failures(
    shared: Path, docs: dict[str, dict[str, Any]]
) -> None:
    """Against the schema as published, every error is one of the two relaxed spots."""
    strict = _validator(_schema(shared, "dashboard"))
    relaxed_spots = 0
    for uid, doc in docs.items():
        for error in strict.iter_errors(doc):
            # oneOf over Panel | RowPanel reports the panel; find the deepest cause.
            causes = list(_leaves(error))
            for cause in causes:
                path = list(cause.absolute_path)
                inside_override = "overrides" in path and (
                    path[-1] in ("options", "value") or path[-2:-1] in (["options"], ["value"])
                )
                assert inside_override, (
                    f"{uid}: strict schema error elsewhere: {path}: {cause.message}"
                )
                relaxed_spots += 1
    assert relaxed_spots, "no dashboard uses an override: the relaxation is not needed"


def _leaves(error: jsonschema.ValidationError) -> Iterator[jsonschema.ValidationError]:
    if not error.context:
        yield error
        return
    # Of a oneOf's branches, the one that got furthest describes the real problem.
    best = max(error.context, key=lambda e: len(e.absolute_path))
    if best.validator in ("oneOf", "anyOf"):
        yield from _leaves(best)
    else:
        deepest = max(len(e.absolute_path) for e in error.context)
        yield from (e for e in error.context if len(e.absolute_path) == deepest)


def test_panel_options_and_field_config_validate_against_their_panel_schemas(
    shared: Path, docs: dict[str, dict[str, Any]]
) -> None:
    checked = set()
    for uid, panel in all_panels(docs):
        schema = _schema(shared, SCHEMA_FILE.get(panel["type"], panel["type"]))
        errors = [
            f"options {list(e.absolute_path)}: {e.message[:200]}"
            for e in _validator(schema, "Options").iter_errors(panel["options"])
        ]
        if "FieldConfig" in schema["definitions"]:
            custom = panel["fieldConfig"]["defaults"].get("custom", {})
            errors += [
                f"custom {list(e.absolute_path)}: {e.message[:200]}"
                for e in _validator(schema, "FieldConfig").iter_errors(custom)
            ]
        assert not errors, f"{uid} / {panel['title']}:\n" + "\n".join(errors)
        checked.add(panel["type"])
    assert checked == NON_ANGULAR - {"gauge"}, checked  # every kind but gauge is in use


def test_every_target_validates_against_the_prometheus_dataquery_schema(
    shared: Path, docs: dict[str, dict[str, Any]]
) -> None:
    validator = _validator(_schema(shared, "prometheus"))
    count = 0
    for uid, panel in all_panels(docs):
        for target in panel.get("targets", []):
            errors = [e.message[:200] for e in validator.iter_errors(target)]
            assert not errors, f"{uid} / {panel['title']} {target['refId']}: {errors}"
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            count += 1
    assert count > 100


# --- what Grafana needs ---------------------------------------------------------------


def test_only_non_angular_panel_types(docs: dict[str, dict[str, Any]]) -> None:
    for uid, doc in docs.items():
        for panel in doc["panels"]:
            assert panel["type"] in NON_ANGULAR | {"row"}, (uid, panel["title"], panel["type"])
            assert panel["type"] not in ("graph", "singlestat", "table-old")


def test_stable_uids_paths_titles_and_tags(
    files: dict[str, str], docs: dict[str, dict[str, Any]]
) -> None:
    assert sorted(docs) == sorted(UIDS)
    assert sorted(files) == sorted(f"dashboards/{uid}.json" for uid in UIDS)
    for uid, doc in docs.items():
        assert 8 <= len(uid) <= 40 and re.fullmatch(r"[a-z0-9-]+", uid)
        assert doc["title"].startswith("nodeslo / ")
        assert doc["tags"] == [common.TAG]
        assert "id" not in doc  # Grafana assigns it on import


def test_variables_datasource_job_and_multi_instance(docs: dict[str, dict[str, Any]]) -> None:
    for uid, doc in docs.items():
        variables = {v["name"]: v for v in doc["templating"]["list"]}
        assert list(variables) == ["datasource", "job", "instance"], uid
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        instance = variables["instance"]
        assert instance["type"] == "query" and instance["multi"] is True
        if uid == "nodeslo-node":  # opened on one server, not on the whole fleet
            assert instance["includeAll"] is False
        else:
            assert instance["includeAll"] and instance["allValue"] == ".+"
        assert "$job" in instance["query"]
        for name in ("job", "instance"):
            assert variables[name]["datasource"]["uid"] == "${datasource}"


def test_dashboards_link_each_other_and_the_runbooks(
    profile: Profile, docs: dict[str, dict[str, Any]]
) -> None:
    for doc in docs.values():
        by_type = {link["type"]: link for link in doc["links"]}
        # A tag link lists every dashboard with the tag: all three, each on each.
        assert by_type["dashboards"]["tags"] == [common.TAG]
        assert by_type["dashboards"]["includeVars"] and by_type["dashboards"]["keepTime"]
        assert by_type["link"]["url"] == profile.alerting.runbook_base_url
    # Data links drill down from the fleet to the node and SLO dashboards by uid.
    fleet = json.dumps(docs["nodeslo-fleet"])
    for uid in ("nodeslo-node", "nodeslo-slos"):
        assert f"/d/{uid}?" in fleet


def test_panel_runbook_links_point_at_existing_runbooks_of_existing_alerts(
    profile: Profile, docs: dict[str, dict[str, Any]]
) -> None:
    base = profile.alerting.runbook_base_url
    names = set(rules.alert_names(profile))
    linked = set()
    for uid, panel in all_panels(docs):
        for link in panel.get("links", []):
            assert link["url"].startswith(base + "/"), (uid, panel["title"], link)
            name = link["url"].removeprefix(base + "/").removesuffix(".md")
            assert name in names, f"{uid} / {panel['title']} links the runbook of no alert: {name}"
            assert (REPO / "alerts" / "runbooks" / f"{name}.md").is_file(), name
            assert link["targetBlank"]
            linked.add(name)
    # Most alerts are explained by a panel; the exporter-internal ones are fine without,
    # and those about Prometheus' own rule evaluation have no nodeslo panel to explain.
    pipeline = {a.name for a in rules.health_alerts(profile) if a.group == "pipeline"}
    assert len(linked) >= len(names - pipeline) - 3, sorted(names - pipeline - linked)


def test_alerts_table_links_every_alert_name_to_its_runbook(
    profile: Profile, docs: dict[str, dict[str, Any]]
) -> None:
    panel = next(p for p in g.panels(docs["nodeslo-fleet"]) if p["title"] == "Firing alerts")
    override = next(
        o for o in panel["fieldConfig"]["overrides"] if o["matcher"]["options"] == "alertname"
    )
    links = next(p["value"] for p in override["properties"] if p["id"] == "links")
    assert links[0]["url"] == profile.alerting.runbook_base_url + "/${__value.text}.md"


def test_layout_is_a_grid_without_overlaps(docs: dict[str, dict[str, Any]]) -> None:
    for uid, doc in docs.items():
        ids = [p["id"] for p in doc["panels"]]
        assert ids == list(range(1, len(ids) + 1)), uid
        cells: set[tuple[int, int]] = set()
        for panel in doc["panels"]:
            pos = panel["gridPos"]
            assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, (uid, panel["title"])
            for x in range(pos["x"], pos["x"] + pos["w"]):
                for y in range(pos["y"], pos["y"] + pos["h"]):
                    assert (x, y) not in cells, (uid, panel["title"], "overlaps")
                    cells.add((x, y))


def test_every_panel_says_what_it_shows(docs: dict[str, dict[str, Any]]) -> None:
    for uid, panel in all_panels(docs):
        assert panel["title"] and len(panel["description"]) > 40, (uid, panel["title"])
        assert panel["datasource"]["uid"] == "${datasource}"


def test_the_issue_s_panels_exist(profile: Profile, docs: dict[str, dict[str, Any]]) -> None:
    titles = {uid: [p["title"] for p in g.panels(doc)] for uid, doc in docs.items()}

    def has(uid: str, *words: str) -> None:
        assert any(all(w in t for w in words) for t in titles[uid]), (uid, words)

    has("nodeslo-fleet", "SLO compliance")
    has("nodeslo-fleet", "Burn rate")
    has("nodeslo-fleet", "firing alerts")
    has("nodeslo-fleet", "wear band")
    has("nodeslo-fleet", "projected wear-out")
    has("nodeslo-fleet", "Firmware versions by model")
    has("nodeslo-fleet", "Tuning compliance")
    has("nodeslo-fleet", "BMC", "power supplies", "inlet")
    for slo in common.latency_slos(profile):
        has("nodeslo-node", slo.name, "latency distribution")
        has("nodeslo-node", slo.name, "P50", common.quantile_name(slo.objective))
    for words in (
        ("IOPS per NVMe",),
        ("Aggregate NVMe IOPS", "capacity"),
        ("Average read latency",),
        ("C-state residency",),
        ("deep C-states enabled",),
        ("frequency per package",),
        ("throttle events",),
        ("share of time lost",),
        ("temperatures", "max and crit"),
        ("one PSU fewer",),
        ("ECC errors per DIMM",),
        ("NUMA remote",),
        ("Memory bandwidth",),
        ("NVMe controllers",),
        ("NVMe wear",),
        ("spare",),
        ("WCTEMP and CCTEMP",),
        ("media errors",),
        ("write amplification",),
        ("md arrays",),
        ("ZFS pools",),
        ("Healthy power supplies",),
        ("Power supplies and redundancy",),
        ("BMC read",),
        ("Fans", "lower critical"),
        ("Inlet air",),
        ("Sensors not ok",),
        ("SEL events",),
    ):
        has("nodeslo-node", *words)
    for slo in profile.slos:
        rows = [p["title"] for p in docs["nodeslo-slos"]["panels"] if p["type"] == "row"]
        assert any(r.startswith(slo.name) for r in rows)
    burn = [t for t in titles["nodeslo-slos"] if t.startswith("Burn rate")]
    assert len(burn) == len(TIERS) * len(profile.slos)


def test_slo_panels_read_the_recording_rules(
    profile: Profile, docs: dict[str, dict[str, Any]]
) -> None:
    """The SLO dashboard reads only what the rules record (the same series the alerts
    read), and each recording it reads exists in the generated rule file."""
    recorded = {
        r["record"] for group in rules.rule_groups(profile) for r in group["rules"] if "record" in r
    }
    for panel in g.panels(docs["nodeslo-slos"]):
        if panel["title"] == ENGINE_PANEL:
            continue  # not the SLI: which engine measures it (next test)
        for target in panel.get("targets", []):
            names = set(re.findall(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", target["expr"]))
            assert names and names <= recorded, (panel["title"], names - recorded)
            assert "nodeslo_probe" not in target["expr"]


ENGINE_PANEL = "Wake-up probe engine"


def test_the_wakeup_slo_shows_its_engine_and_flags_a_fallback(
    profile: Profile, docs: dict[str, dict[str, Any]]
) -> None:
    panels = [p for p in g.panels(docs["nodeslo-slos"]) if p["title"] == ENGINE_PANEL]
    wakeup_slos = [
        s
        for s in profile.slos
        if getattr(s.sli, "histogram", "") == "nodeslo_probe_wakeup_latency_seconds"
    ]
    assert len(panels) == len(wakeup_slos) >= 1
    (target,) = panels[0]["targets"]
    assert "nodeslo_probe_wakeup_engine_info" in target["expr"]
    assert 'engine="python", requested!="python"' in target["expr"]
    texts = json.dumps(panels[0]["fieldConfig"]["defaults"]["mappings"])
    assert "fallback" in texts


# --- thresholds come from the profile -------------------------------------------------

# Structural numbers that are no target: "none / any" counts (0, 1 event, CPU, missing
# member), and 1.0 = 100 % (rated endurance, a full budget).
STRUCTURAL = {0.0, 1.0}


def _numbers(value: object) -> Iterator[float]:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _numbers(getattr(value, f.name))
    elif isinstance(value, tuple):
        for item in value:
            yield from _numbers(item)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield float(value)


def profile_numbers(profile: Profile) -> set[float]:
    """Every number the profile holds, and the ones derived from it by definition."""
    numbers = set(_numbers(profile))
    numbers |= {s.error_budget for s in profile.slos}
    numbers |= {t.factor(profile.period_seconds) for t in TIERS}
    numbers.add(profile.health.power.redundant_capacity_watts)
    cap = profile.capacity
    if cap.memory_bandwidth_bytes_per_second and cap.memory_bandwidth_target_ratio:
        numbers.add(cap.memory_bandwidth_bytes_per_second * cap.memory_bandwidth_target_ratio)
    return numbers


def thresholds(docs: dict[str, dict[str, Any]]) -> list[tuple[str, float]]:
    return [
        (f"{uid} / {panel['title']}", value)
        for uid, panel in all_panels(docs)
        for value in g.threshold_values(panel)
    ]


def _close_to_any(value: float, allowed: set[float]) -> bool:
    return any(math.isclose(value, a, rel_tol=1e-9, abs_tol=1e-15) for a in allowed)


def test_every_threshold_is_a_number_of_the_profile(
    profile: Profile, docs: dict[str, dict[str, Any]]
) -> None:
    allowed = profile_numbers(profile) | STRUCTURAL
    found = thresholds(docs)
    assert len(found) > 40
    for where, value in found:
        assert _close_to_any(value, allowed), f"{where}: threshold {value} is not from the profile"


SITE = """
extends: process-management
profile: site
period: 28d
slos:
  storage-write-latency: {objective: 99.5%, sli: {latency: {threshold: 200us}}}
  storage-read-latency: {objective: 98%, sli: {latency: {threshold: 64us}}}
  scheduler-wakeup-latency: {objective: 99.9%, sli: {latency: {threshold: 32us}}}
  cpu-unthrottled: {objective: 99.5%}
health:
  nvme: {wear_warning: 70%, write_amplification_max: 2.5, wearout_horizon: 20d,
         media_errors_window: 2h, write_amplification_window: 12h}
  cpu: {throttling_window: 5m}
  memory: {correctable_errors_max: 7, numa_remote_max: 4%, correctable_errors_window: 12h}
  power: {psu_capacity_watts: 1800, psu_count: 3}
  bmc: {fan_min_rpm: 800, inlet_warning_celsius: 25, inlet_critical_celsius: 32}
tuning: {max_cstate_exit_latency: 5us}
capacity:
  iops: 2500000
  memory_bandwidth_bytes_per_second: 800e9
  memory_bandwidth_target: 80%
  all_core_frequency_hertz: 3.2e9
  peak_power_watts: 1300
alerting: {runbook_base_url: "https://runbooks.example.com/nodeslo/"}
"""


def test_a_site_profile_moves_every_threshold(tmp_path: Path, profile: Profile) -> None:
    """Change every number in a site profile: no threshold of the shipped profile
    survives, each new one is the site's, and the texts follow."""
    path = tmp_path / "site.yaml"
    path.write_text(SITE)
    site = load_profile(str(path))
    site_docs = {json.loads(t)["uid"]: json.loads(t) for _, t in dashboards.dashboard_files(site)}
    shipped = profile_numbers(profile) - STRUCTURAL
    mine = profile_numbers(site)
    for where, value in thresholds(site_docs):
        assert _close_to_any(value, mine | STRUCTURAL), f"{where}: {value}"
        assert not _close_to_any(value, shipped - mine), f"{where}: {value} is the shipped one"
    values = {v for _, v in thresholds(site_docs)}
    site_targets = (
        *(200e-6, 64e-6, 32e-6),  # latency thresholds
        *(0.995, 0.98, 0.005),  # objectives, an error budget
        *(13.44, 5.6, 2.8),  # burn rates of a 28-day period
        *(0.7, 2.5, 20 * 86400.0),  # NVMe wear warning, WAF, wear-out horizon
        *(2.5e6, 3.2e9, 1300.0, 3600.0),  # IOPS, all-core frequency, peak power, 2 x 1800 W
        *(640e9, 800e9, 7.0, 0.04),  # memory bandwidth target and peak, ECC, NUMA
        *(3.0, 25.0, 32.0),  # healthy PSUs, inlet warning and critical
    )
    for expected in site_targets:
        assert any(math.isclose(expected, v, rel_tol=1e-6) for v in values), (
            f"{expected} drawn nowhere"
        )
    text = json.dumps(site_docs, ensure_ascii=False)
    assert "https://runbooks.example.com/nodeslo/NVMeWearHigh.md" in text
    assert "over the last 5m" in text and "over the last 2h" in text and "28d" in text
    assert "(exit latency > 5µs)" in text and "> 5e-06" in text
    assert "without one, 800 RPM" in text and "from 25 °C" in text


def test_a_profile_without_optional_targets_draws_no_line_for_them(tmp_path: Path) -> None:
    path = tmp_path / "lean.yaml"
    path.write_text(
        "extends: process-management\nprofile: lean\n"
        "capacity: {iops: null, memory_bandwidth_bytes_per_second: null, "
        "all_core_frequency_hertz: null, peak_power_watts: null}\n"
        "tuning: {max_cstate_exit_latency: null}\nhealth: {power: {psu_count: 1}}\n"
    )
    lean = load_profile(str(path))
    docs = {json.loads(t)["uid"]: json.loads(t) for _, t in dashboards.dashboard_files(lean)}
    node = {p["title"]: p for p in g.panels(docs["nodeslo-node"])}
    assert g.threshold_values(node["Aggregate NVMe IOPS against the capacity target"]) == []
    assert g.threshold_values(node["CPU frequency per package"]) == []
    assert g.threshold_values(node["System input power against one PSU fewer"]) == []
    assert not any("Memory bandwidth" in t for t in node)
    assert not any("deep C-states" in t for t in node)


# --- the model and the wrapper --------------------------------------------------------


def test_rendering_is_deterministic(profile: Profile, files: dict[str, str]) -> None:
    assert dict(dashboards.dashboard_files(profile)) == files
    for text in files.values():
        assert text.endswith("}\n")
        json.loads(text)


def test_threshold_lines_only_where_there_is_a_target() -> None:
    from nodeslo.pack import grafana

    def panel(steps: tuple[model.Step, ...]) -> dict[str, Any]:
        board = model.Dashboard(
            uid="x-test-dashboard",
            title="t",
            description="",
            tags=(),
            variables=(),
            rows=(model.Row("r", (model.TimeSeries(title="p", description="", steps=steps),)),),
            links=model.DashboardLinks(tag="t"),
        )
        return next(g.panels(json.loads(grafana.render(board))))

    plain = panel(())
    assert plain["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] == "off"
    # A base step only: without it Grafana would add its default red at 80.
    assert plain["fieldConfig"]["defaults"]["thresholds"]["steps"] == [
        {"color": "green", "value": None}
    ]
    lined = panel(model.above(0.5))
    assert lined["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] == "dashed"
    assert lined["fieldConfig"]["defaults"]["thresholds"]["steps"][1] == {
        "color": "red",
        "value": 0.5,
    }


# --- generated, committed, and kept out of the exporter -------------------------------


def test_the_committed_dashboards_are_what_generate_writes(profile: Profile) -> None:
    """The drift test of generate covers the dashboards and their ConfigMaps."""
    outputs = dict(generate.outputs(profile))
    for uid in UIDS:
        assert f"dashboards/{uid}.json" in outputs
    assert f"{kubernetes.DIRECTORY}/{kubernetes.DASHBOARD_FILE}" in outputs
    stale = generate.stale(REPO, list(outputs.items()))
    assert stale == [], f"run `nodeslo generate` and commit: {stale}"


def _imports_in_a_fresh_python(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys; print('\\n'.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(out.split())


def test_the_exporter_never_imports_the_sdk() -> None:
    modules = _imports_in_a_fresh_python(
        "import nodeslo.daemon, nodeslo.cli, nodeslo.pack.generate, nodeslo.pack.dashboards"
    )
    assert "nodeslo.daemon" in modules and "nodeslo.pack.dashboards.node" in modules
    assert not {m for m in modules if m.startswith(SDK) or m == "nodeslo.pack.grafana"}


def test_nodeslo_serve_starts_without_loading_the_sdk(tmp_path: Path) -> None:
    """The real `nodeslo serve` start-up, with Python's import log on."""
    with d.running(
        None, "--no-probe.storage", "--no-probe.wakeup", env={"PYTHONPROFILEIMPORTTIME": "1"}
    ) as daemon:
        assert daemon.scrape()
        log = list(daemon.log)
    imported = [line for line in log if line.startswith("import time:")]
    assert any("nodeslo.daemon" in line for line in imported)
    assert not [line for line in imported if SDK in line]


def test_generate_without_the_sdk_names_the_extra_and_writes_nothing(tmp_path: Path) -> None:
    # A None entry in sys.modules makes every import of the SDK fail, as if absent.
    code = (
        "import sys\n"
        f"sys.modules[{SDK!r}] = None\n"
        "from nodeslo.cli import main\n"
        f"sys.exit(main(['generate', '--out', {str(tmp_path)!r}]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2, result.stderr
    assert "nodeslo[pack]" in result.stderr and "Grafana Foundation SDK" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_provisioning_file_loads_the_dashboards_folder() -> None:
    """deploy/grafana: Grafana's classic file provisioning format, and the README's path."""
    config = yaml.safe_load((REPO / "deploy" / "grafana" / "nodeslo-dashboards.yaml").read_text())
    assert config["apiVersion"] == 1
    (provider,) = config["providers"]
    assert provider["type"] == "file" and provider["folder"] == "nodeslo"
    assert provider["allowUiUpdates"] is False
    assert set(provider["options"]) == {"path", "foldersFromFilesStructure"}
    assert f"`{provider['options']['path']}/`" in (REPO / "README.md").read_text()
