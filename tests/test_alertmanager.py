"""deploy/alertmanager/alertmanager.yml: valid, routes by severity, inhibits what it says,
and its pages name every alert they carry.

amtool (Debian package prometheus-alertmanager, 0.25) checks the file, resolves routes
and renders the notification templates (nodeslo.tmpl) offline; a real Alertmanager,
started on a free port with the example's routes and inhibit rules, is sent alerts
through its API and asked which ones it inhibits, and, with its PagerDuty and webhook
receivers pointed at a local server, shows what a page and a heartbeat really carry.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import REPO, missing
from nodeslo.pack.catalog import fleet
from nodeslo.profile import load_profile
from support import stack as s

CONFIG = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
TEMPLATES = REPO / "deploy" / "alertmanager" / "nodeslo.tmpl"


@pytest.fixture(scope="module")
def amtool() -> str:
    path = shutil.which("amtool")
    if path is None:
        missing("amtool is not installed (Debian package prometheus-alertmanager)")
    return str(path)


def test_amtool_check_config(amtool: str) -> None:
    result = subprocess.run(
        [amtool, "check-config", str(CONFIG)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    # 9 written by hand, one per counted alert generated for fleet regressions.
    fleet_rules = len(fleet.counted_alerts(load_profile()))
    assert f"{9 + fleet_rules} inhibit rules" in result.stdout
    assert "1 templates" in result.stdout


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=NodeSLOErrorBudgetBurn", "severity=critical", "slo=x"], "pager"),
        (["alertname=NVMeCriticalWarning", "severity=critical"], "pager"),
        (["alertname=NodeSLOErrorBudgetBurn", "severity=warning"], "ticket"),
        (["alertname=FirmwareSkew", "severity=warning"], "ticket"),
        (["alertname=Something", "severity=info"], "blackhole"),
        (["alertname=NoSeverity"], "ticket"),
        # The dead man's switch goes to the heartbeat service, never to a person.
        (["alertname=Watchdog", "severity=none"], "heartbeat"),
        (["alertname=NodeSLOExporterAbsent", "severity=critical"], "pager"),
    ],
)
def test_routes_by_severity(amtool: str, labels: list[str], receiver: str) -> None:
    result = subprocess.run(
        [amtool, "config", "routes", "test", f"--config.file={CONFIG}", *labels],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == receiver


def test_groups_by_alertname_and_instance() -> None:
    route = yaml.safe_load(CONFIG.read_text())["route"]
    assert {"alertname", "instance"} <= set(route["group_by"])


def test_the_heartbeat_repeats_every_minute() -> None:
    """The heartbeat service's period must be longer than the repeat interval."""
    route = yaml.safe_load(CONFIG.read_text())["route"]
    (watchdog,) = [r for r in route["routes"] if r["receiver"] == "heartbeat"]
    assert route["routes"][0] is watchdog
    assert watchdog["repeat_interval"] == watchdog["group_interval"] == "1m"


# --- the notification texts -------------------------------------------------------------

# Two SLOs burning on one server: one group (alertname, cluster, instance), whose alerts
# differ in slo, target, summary and description.
WRITE_BURN = {
    "labels": {"alertname": "NodeSLOErrorBudgetBurn", "severity": "critical",
               "slo": "storage-write-latency", "target": "/var/lib/nodeslo",
               "long_window": "1h", "short_window": "5m",
               "instance": "pm1:10131", "cluster": "eu1"},
    "annotations": {
        "summary": "SLO storage-write-latency on pm1:10131 (/var/lib/nodeslo) burns its "
        "error budget 14.4x too fast",
        "description": "Error ratio 20% over the last 1h, and above 14.4% over the last 5m.",
        "runbook_url": "https://runbooks.example/NodeSLOErrorBudgetBurn.md",
    },
}  # fmt: skip
CPU_BURN = {
    "labels": {"alertname": "NodeSLOErrorBudgetBurn", "severity": "critical",
               "slo": "cpu-unthrottled", "long_window": "6h", "short_window": "30m",
               "instance": "pm1:10131", "cluster": "eu1"},
    "annotations": {
        "summary": "SLO cpu-unthrottled on pm1:10131 burns its error budget 6x too fast",
        "description": "Error ratio 1% over the last 6h, and above 0.6% over the last 30m.",
        "runbook_url": "https://runbooks.example/NodeSLOErrorBudgetBurn.md",
    },
}  # fmt: skip
BURNS = [WRITE_BURN, CPU_BURN]


def _pager() -> dict[str, Any]:
    (pager,) = [r for r in yaml.safe_load(CONFIG.read_text())["receivers"] if r["name"] == "pager"]
    config: dict[str, Any] = pager["pagerduty_configs"][0]
    return config


def _template_data(alerts: list[dict[str, Any]]) -> dict[str, Any]:
    """Alertmanager's template.Data for one notification of `alerts`, all firing."""
    labels = [a["labels"] for a in alerts]
    annotations = [a["annotations"] for a in alerts]
    common = {k: v for k, v in labels[0].items() if all(x.get(k) == v for x in labels)}
    common_annotations = {
        k: v for k, v in annotations[0].items() if all(x.get(k) == v for x in annotations)
    }
    return {
        "receiver": "pager",
        "status": "firing",
        "alerts": [
            {**a, "status": "firing", "startsAt": "2024-05-01T10:00:00Z",
             "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "", "fingerprint": str(i)}
            for i, a in enumerate(alerts)
        ],
        "groupLabels": {k: common[k] for k in ("alertname", "cluster", "instance")},
        "commonLabels": common,
        "commonAnnotations": common_annotations,
        "externalURL": "http://alertmanager.example",
    }  # fmt: skip


def _render(amtool: str, text: str, data: Path) -> str:
    result = subprocess.run(
        [
            amtool,
            "template",
            "render",
            f"--template.glob={TEMPLATES}",
            f"--template.text={text}",
            f"--template.data={data}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_two_slos_burning_on_one_server_are_both_in_the_page(amtool: str, tmp_path: Path) -> None:
    data = tmp_path / "data.json"
    data.write_text(json.dumps(_template_data(BURNS)))
    pager = _pager()
    # What the example used to send: common labels and annotations, empty here.
    old = "{{ .CommonAnnotations.summary }}|{{ .CommonLabels.slo }}|{{ .CommonLabels.target }}"
    assert _render(amtool, old, data) == "||"
    description = _render(amtool, pager["description"], data)
    assert description.startswith("[FIRING:2] NodeSLOErrorBudgetBurn on pm1:10131 (eu1): ")
    details = {k: _render(amtool, v, data) for k, v in pager["details"].items()}
    assert details["resolved"] == ""
    for alert in BURNS:
        labels, annotations = alert["labels"], alert["annotations"]
        assert annotations["summary"] in description
        (line,) = [x for x in details["firing"].splitlines() if f"slo={labels['slo']}" in x]
        assert annotations["summary"] in line and annotations["description"] in line
        target = f"target={labels['target']}" if "target" in labels else None
        assert (target in line) if target else ("target=" not in line)
        assert line.endswith(f"Runbook: {annotations['runbook_url']}")
    assert details["runbook"] == WRITE_BURN["annotations"]["runbook_url"]
    assert _render(amtool, pager["links"][0]["href"], data) == details["runbook"]


def test_a_single_alert_reads_as_before(amtool: str, tmp_path: Path) -> None:
    data = tmp_path / "data.json"
    data.write_text(json.dumps(_template_data([WRITE_BURN])))
    description = _render(amtool, _pager()["description"], data)
    summary = WRITE_BURN["annotations"]["summary"]
    assert description == f"[FIRING:1] NodeSLOErrorBudgetBurn on pm1:10131 (eu1): {summary}"


# --- the inhibit rules, in a real Alertmanager -----------------------------------------


def _alert(**labels: str) -> dict[str, Any]:
    return {"labels": labels, "annotations": {"summary": "test"}}


# (alert, inhibited?) - every burn carries the same slo/instance/target unless it says.
BURN = {"alertname": "NodeSLOErrorBudgetBurn", "slo": "storage-write-latency"}
HOST = {"instance": "pm1:10131", "cluster": "eu1"}
TARGET = {"target": "/var/lib/nodeslo"}
CASES: list[tuple[dict[str, str], bool]] = [
    # The fast burn pages and inhibits the slow burn of the same SLO and server...
    ({**BURN, **HOST, **TARGET, "severity": "critical", "long_window": "1h"}, False),
    ({**BURN, **HOST, **TARGET, "severity": "warning", "long_window": "1d"}, True),
    # ...but not that of another SLO, another server, or another storage target.
    ({**BURN, **HOST, **TARGET, "slo": "storage-read-latency", "severity": "warning"}, False),
    ({**BURN, **TARGET, "instance": "pm2:10131", "cluster": "eu1", "severity": "warning"}, False),
    ({**BURN, **HOST, "target": "/srv/other", "severity": "warning"}, False),
    # Exporter down on pm3 silences pm3's other alerts, not pm1's, and not itself.
    ({"alertname": "NodeSLOExporterDown", "instance": "pm3:10131", "cluster": "eu1",
      "job": "nodeslo", "severity": "critical"}, False),
    ({"alertname": "NVMeWearHigh", "instance": "pm3:10131", "cluster": "eu1",
      "controller": "nvme0", "severity": "warning"}, True),
    ({"alertname": "NodeSLOProbeDown", "instance": "pm3:10131", "cluster": "eu1",
      "probe": "storage", "severity": "warning"}, True),
    ({"alertname": "NVMeWearHigh", "instance": "pm3:10131", "cluster": "us1",
      "controller": "nvme0", "severity": "warning"}, False),
    # A fleet-wide alert has no instance to be silenced by.
    ({"alertname": "FirmwareSkew", "cluster": "eu1", "model": "M", "component": "nvme",
      "severity": "warning"}, False),
    # Critical temperature covers the warning of the same drive only.
    ({"alertname": "NVMeTemperatureCritical", **HOST, "controller": "nvme4",
      "severity": "critical"}, False),
    ({"alertname": "NVMeTemperatureHigh", **HOST, "controller": "nvme4",
      "severity": "warning"}, True),
    ({"alertname": "NVMeTemperatureHigh", **HOST, "controller": "nvme5",
      "severity": "warning"}, False),
    # A failed PSU pages alone: the redundancy loss it causes is part of that page...
    ({"alertname": "PowerSupplyFailed", **HOST, "sensor": "PSU2 Status",
      "state": "failure_detected", "severity": "critical"}, False),
    ({"alertname": "PowerRedundancyLost", **HOST, "cause": "healthy_psus",
      "severity": "critical"}, True),
    # ...on that server only; elsewhere lost redundancy covers its warnings.
    ({"alertname": "PowerRedundancyLost", "instance": "pm2:10131", "cluster": "eu1",
      "cause": "redundancy_sensor", "sensor": "PS Redundancy", "severity": "critical"}, False),
    ({"alertname": "PowerRedundancyLost", "instance": "pm2:10131", "cluster": "eu1",
      "cause": "power_draw", "severity": "warning"}, True),
    ({"alertname": "PowerRedundancyLost", "instance": "pm5:10131", "cluster": "eu1",
      "cause": "power_draw", "severity": "warning"}, False),
    # Critical inlet air covers the warning of the same sensor only.
    ({"alertname": "InletTemperatureHigh", **HOST, "sensor": "Inlet Temp", "cause": "threshold",
      "severity": "critical"}, False),
    ({"alertname": "InletTemperatureHigh", **HOST, "sensor": "Inlet Temp", "cause": "threshold",
      "severity": "warning"}, True),
    ({"alertname": "InletTemperatureHigh", **HOST, "sensor": "Ambient", "cause": "threshold",
      "severity": "warning"}, False),
    # A NIC that is down covers its own flaps, not another NIC's.
    ({"alertname": "NetworkLinkDown", **HOST, "interface": "ens1f1np1",
      "severity": "critical"}, False),
    ({"alertname": "NetworkLinkFlapping", **HOST, "interface": "ens1f1np1",
      "severity": "warning"}, True),
    ({"alertname": "NetworkLinkFlapping", **HOST, "interface": "ens1f0np0",
      "severity": "warning"}, False),
    # A broken md array pages as not running; its degraded page is covered, its failed
    # member still pages, and another array's degraded page is its own.
    ({"alertname": "RAIDArrayInactive", **HOST, "device": "md1", "severity": "critical"},
     False),
    ({"alertname": "RAIDArrayDegraded", **HOST, "device": "md1", "severity": "critical"},
     True),
    ({"alertname": "RAIDDiskFailed", **HOST, "device": "md1", "severity": "critical"}, False),
    ({"alertname": "RAIDArrayDegraded", **HOST, "device": "md0", "severity": "critical"},
     False),
    # A vanished target silences its host's stale alerts like a down one.
    ({"alertname": "NodeSLOExporterAbsent", "instance": "pm4:10131", "cluster": "eu1",
      "job": "nodeslo", "severity": "critical"}, False),
    ({"alertname": "RAIDArrayDegraded", "instance": "pm4:10131", "cluster": "eu1",
      "device": "md0", "severity": "critical"}, True),
    # A fleet regression in ap1 holds back the per-host pages of that alert in ap1 only,
    # and only the severities it counts (critical); it is not inhibited itself.
    ({"alertname": "NodeSLOFleetRegression", "cluster": "ap1",
      "regressed_alert": "NVMeCriticalWarning", "severity": "critical"}, False),
    ({"alertname": "NVMeCriticalWarning", "instance": "ap1-07:10131", "cluster": "ap1",
      "controller": "nvme0", "severity": "critical"}, True),
    ({"alertname": "NVMeCriticalWarning", "instance": "us2-07:10131", "cluster": "us2",
      "controller": "nvme0", "severity": "critical"}, False),
    ({"alertname": "RAIDDiskFailed", "instance": "ap1-07:10131", "cluster": "ap1",
      "device": "md0", "severity": "critical"}, False),
    ({"alertname": "NodeSLOFleetRegression", "cluster": "ap1",
      "regressed_alert": "NodeSLOErrorBudgetBurn", "severity": "critical"}, False),
    ({**BURN, "instance": "ap1-03:10131", "cluster": "ap1", "severity": "critical",
      "long_window": "1h"}, True),
    ({**BURN, "instance": "ap1-04:10131", "cluster": "ap1", "severity": "warning",
      "long_window": "1d"}, False),
    # Without a cluster label: a fleet page without one covers the hosts without one.
    ({"alertname": "NodeSLOFleetRegression", "regressed_alert": "RDMAPortDown",
      "severity": "critical"}, False),
    ({"alertname": "RDMAPortDown", "instance": "lab-1:10131", "device": "mlx5_0",
      "port": "1", "severity": "critical"}, True),
    ({"alertname": "RDMAPortDown", **HOST, "device": "mlx5_0", "port": "1",
      "severity": "critical"}, False),
    # The Watchdog is never inhibited, even carrying the labels of a host whose
    # exporter is down (a Prometheus with `instance` among its external labels).
    ({"alertname": "Watchdog", "instance": "pm3:10131", "cluster": "eu1",
      "severity": "none"}, False),
]  # fmt: skip


@pytest.fixture(scope="module")
def alertmanager_binaries() -> None:
    if not (s.tool("prometheus") and s.tool("prometheus-alertmanager", "alertmanager")):
        missing("prometheus / prometheus-alertmanager are not installed (Debian packages)")


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.e2e
def test_inhibition_in_a_real_alertmanager(alertmanager_binaries: None, tmp_path: Path) -> None:
    config = yaml.safe_load(CONFIG.read_text())
    # Keep routes and inhibit rules; receivers without integrations send nothing.
    config["receivers"] = [{"name": r["name"]} for r in config["receivers"]]
    copy = tmp_path / "alertmanager.yml"
    copy.write_text(yaml.safe_dump(config))
    with s.running(tmp_path, [], [], alertmanager_config=lambda _port: copy) as stack:
        body = json.dumps([_alert(**labels) for labels, _ in CASES]).encode()
        request = urllib.request.Request(
            f"{stack.alertmanager_url}/api/v2/alerts",
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        deadline = time.monotonic() + 30
        while True:
            got = {
                tuple(sorted(a["labels"].items())): bool(a["status"]["inhibitedBy"])
                for a in _get(f"{stack.alertmanager_url}/api/v2/alerts")
            }
            expected = {tuple(sorted(labels.items())): inhibited for labels, inhibited in CASES}
            if got == expected or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    wrong = {dict(k).get("alertname", "?") + str(dict(k)): v for k, v in got.items()
             if expected.get(k) != v}  # fmt: skip
    assert got.keys() == expected.keys()
    assert wrong == {}, "inhibited state differs from the expectation"


# --- pages and heartbeats, from a real Alertmanager -------------------------------------


class _Capture:
    """Records every JSON body POSTed to it, by path."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, Any]] = []
        self.lock = threading.Lock()
        capture = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with capture.lock:
                    capture.posts.append((self.path, json.loads(body or b"null")))
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def wait_for(self, path: str, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                found = [body for p, body in self.posts if p == path]
            if found:
                return found[0]
            time.sleep(0.2)
        raise AssertionError(f"nothing POSTed to {path} within {timeout:.0f}s: {self.posts}")


@pytest.fixture
def capture() -> Iterator[_Capture]:
    server = _Capture()
    threading.Thread(target=server.server.serve_forever, daemon=True).start()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.mark.e2e
def test_pages_and_heartbeats_through_a_real_alertmanager(
    alertmanager_binaries: None, tmp_path: Path, capture: _Capture
) -> None:
    """The example's own receivers and templates; only the endpoints point here."""
    config = yaml.safe_load(CONFIG.read_text())
    config["templates"] = [str(CONFIG.parent / t) for t in config["templates"]]
    for receiver in config["receivers"]:
        for pagerduty in receiver.get("pagerduty_configs", []):
            pagerduty["url"] = f"{capture.url}/pagerduty/{receiver['name']}"
        for webhook in receiver.get("webhook_configs", []):
            webhook["url"] = f"{capture.url}/webhook/{receiver['name']}"
    copy = tmp_path / "alertmanager.yml"
    copy.write_text(yaml.safe_dump(config))
    with s.running(tmp_path, [], [], alertmanager_config=lambda _port: copy) as stack:
        watchdog = {
            "labels": {"alertname": "Watchdog", "severity": "none"},
            "annotations": {"summary": "The nodeslo alerting pipeline is alive"},
        }
        body = json.dumps([*BURNS, watchdog]).encode()
        request = urllib.request.Request(
            f"{stack.alertmanager_url}/api/v2/alerts",
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        heartbeat = capture.wait_for("/webhook/heartbeat", timeout=30)
        event = capture.wait_for("/pagerduty/pager", timeout=60)
    assert [a["labels"]["alertname"] for a in heartbeat["alerts"]] == ["Watchdog"]
    # PagerDuty Events API v2, as Alertmanager 0.25 sends it.
    assert event["event_action"] == "trigger"
    summary = event["payload"]["summary"]
    details = event["payload"]["custom_details"]
    assert summary.startswith("[FIRING:2] NodeSLOErrorBudgetBurn on pm1:10131 (eu1): ")
    for alert in BURNS:
        labels, annotations = alert["labels"], alert["annotations"]
        assert annotations["summary"] in summary
        assert f"slo={labels['slo']}" in details["firing"]
        assert annotations["description"] in details["firing"]
    assert "target=/var/lib/nodeslo" in details["firing"]
    assert details["firing"].count("Runbook: https://runbooks.example/") == 2
    assert event["links"] == [
        {"href": "https://runbooks.example/NodeSLOErrorBudgetBurn.md",
         "text": "runbook: NodeSLOErrorBudgetBurn"}
    ]  # fmt: skip
