"""deploy/alertmanager/alertmanager.yml: valid, routes by severity, inhibits what it says.

amtool (Debian package prometheus-alertmanager, 0.25) checks the file and resolves
routes offline; a real Alertmanager, started on a free port with the example's routes
and inhibit rules (receivers emptied, so nothing leaves the machine), is sent alerts
through its API and asked which ones it inhibits.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import REPO, missing
from support import stack as s

CONFIG = REPO / "deploy" / "alertmanager" / "alertmanager.yml"


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
    assert "5 inhibit rules" in result.stdout


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=NodeSLOErrorBudgetBurn", "severity=critical", "slo=x"], "pager"),
        (["alertname=NVMeCriticalWarning", "severity=critical"], "pager"),
        (["alertname=NodeSLOErrorBudgetBurn", "severity=warning"], "ticket"),
        (["alertname=FirmwareSkew", "severity=warning"], "ticket"),
        (["alertname=Something", "severity=info"], "blackhole"),
        (["alertname=NoSeverity"], "ticket"),
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
    # A NIC that is down covers its own flaps, not another NIC's.
    ({"alertname": "NetworkLinkDown", **HOST, "interface": "ens1f1np1",
      "severity": "critical"}, False),
    ({"alertname": "NetworkLinkFlapping", **HOST, "interface": "ens1f1np1",
      "severity": "warning"}, True),
    ({"alertname": "NetworkLinkFlapping", **HOST, "interface": "ens1f0np0",
      "severity": "warning"}, False),
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
