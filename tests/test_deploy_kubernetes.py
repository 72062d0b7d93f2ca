"""deploy/kubernetes: every manifest validated against the Kubernetes and
prometheus-operator schemas, the kustomize base builds, the generated files are what the
pack generates, and the pod's privileges are what the design promises.

Schemas, offline: `kubernetes-validate` bundles the Kubernetes OpenAPI schemas (strict
mode: unknown fields are errors); the prometheus-operator CRDs' schemas are in
tests/schemas/prometheus-operator.json (made by tests/schemas/make_operator_schemas.py
from the models generated from those CRDs), made strict the same way."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from conftest import REPO, missing
from nodeslo import cli
from nodeslo.pack import kubernetes as k8s
from nodeslo.pack import rules
from nodeslo.profile import load_profile

BASE = REPO / "deploy" / "kubernetes"
# The oldest Kubernetes minor still supported upstream when this was written, and the
# newest the validator knows: a manifest must be valid on both.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
_OPERATOR = json.loads((REPO / "tests" / "schemas" / "prometheus-operator.json").read_text())
OPERATOR_SCHEMAS = {
    kind: jsonschema.Draft202012Validator(
        _OPERATOR[kind], format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    for kind in ("ServiceMonitor", "PrometheusRule")
}


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def base_manifests() -> Iterator[tuple[str, dict[str, Any]]]:
    kustomization = documents(BASE / "kustomization.yaml")[0]
    for name in kustomization["resources"]:
        for doc in documents(BASE / name):
            yield name, doc


def validate(doc: dict[str, Any]) -> None:
    """Raise unless `doc` is valid for its kind: Kubernetes schema or operator CRD."""
    validator = OPERATOR_SCHEMAS.get(doc["kind"])
    if validator is None:
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)
    else:
        validator.validate(doc)


def test_every_manifest_is_valid_for_its_schema() -> None:
    kinds = []
    for name, doc in base_manifests():
        try:
            validate(doc)
        except Exception as exc:
            pytest.fail(f"{name}: {doc['kind']}: {exc}")
        kinds.append(doc["kind"])
    assert {"DaemonSet", "Service", "ServiceMonitor", "PrometheusRule"} <= set(kinds)


def test_the_validators_catch_mistakes() -> None:
    # The checks above can fail: a wrong type, an unknown field, a bad enum.
    daemonset = next(d for _, d in base_manifests() if d["kind"] == "DaemonSet")
    broken = yaml.safe_load(yaml.safe_dump(daemonset))
    broken["spec"]["template"]["spec"]["hostPid"] = False  # misspelt hostPID
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken)
    monitor = next(d for _, d in base_manifests() if d["kind"] == "ServiceMonitor")
    typo = yaml.safe_load(yaml.safe_dump(monitor))
    typo["spec"]["endpoints"][0]["scrapeIntervall"] = "30s"
    with pytest.raises(jsonschema.ValidationError, match="scrapeIntervall"):
        validate(typo)
    bad_action = yaml.safe_load(yaml.safe_dump(monitor))
    bad_action["spec"]["endpoints"][0]["relabelings"][0]["action"] = "rename"
    with pytest.raises(jsonschema.ValidationError, match="rename"):
        validate(bad_action)
    rule = next(d for _, d in base_manifests() if d["kind"] == "PrometheusRule")
    bad_for = yaml.safe_load(yaml.safe_dump(rule))
    alert = next(r for g in bad_for["spec"]["groups"] for r in g["rules"] if "for" in r)
    alert["for"] = "ten minutes"
    with pytest.raises(jsonschema.ValidationError, match="ten minutes"):
        validate(bad_for)


def test_generated_files_are_what_the_pack_generates() -> None:
    for path, text in k8s.kubernetes_files(load_profile()):
        committed = REPO / path
        assert committed.exists(), f"{path}: run `nodeslo generate`"
        assert committed.read_text() == text, f"{path} is stale: run `nodeslo generate`"


def test_prometheusrule_carries_the_rule_file_unchanged() -> None:
    (rule,) = documents(BASE / k8s.RULE_FILE)
    rule_file = yaml.safe_load((REPO / rules.RULES_PATH).read_text())
    assert rule["spec"]["groups"] == rule_file["groups"]
    assert rule["spec"]["groups"], "no rules"


def test_dashboards_become_sidecar_configmaps() -> None:
    dashboard = '{"title": "nodeslo / Node", "uid": "nodeslo-node", "panels": []}\n'
    files = dict(
        k8s.manifests(
            "p", [], [("dashboards/node.json", dashboard), ("dashboards/fleet.json", "{}")]
        )
    )
    configmaps = list(yaml.safe_load_all(files[f"{k8s.DIRECTORY}/{k8s.DASHBOARD_FILE}"]))
    assert [c["metadata"]["name"] for c in configmaps] == [
        "nodeslo-dashboard-fleet",
        "nodeslo-dashboard-node",
    ]
    node = configmaps[1]
    assert node["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert node["data"] == {"node.json": dashboard}
    for configmap in configmaps:
        validate(configmap)
    kustomization = yaml.safe_load(files[f"{k8s.DIRECTORY}/{k8s.KUSTOMIZATION}"])
    assert k8s.DASHBOARD_FILE in kustomization["resources"]


def test_a_dashboard_too_large_or_not_json_is_refused() -> None:
    with pytest.raises(ValueError, match="too large"):
        k8s.dashboard_configmap("dashboards/x.json", '"' + "x" * k8s.CONFIGMAP_MAX_BYTES + '"')
    with pytest.raises(ValueError):
        k8s.dashboard_configmap("dashboards/x.json", "{not json")


@pytest.mark.parametrize(
    ("text", "name"),
    [("Node", "node"), ("NVMe & RAID", "nvme-raid"), ("--x--", "x"), ("a" * 80, "a" * 63)],
)
def test_dns_names(text: str, name: str) -> None:
    assert k8s.dns_name(text) == name


def _pod() -> dict[str, Any]:
    daemonset = next(d for _, d in base_manifests() if d["kind"] == "DaemonSet")
    pod: dict[str, Any] = daemonset["spec"]["template"]["spec"]
    return pod


def test_only_the_device_helpers_are_privileged() -> None:
    pod = _pod()
    assert pod["hostPID"] is False and pod["hostNetwork"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    containers = {c["name"]: c for c in pod["containers"] + pod["initContainers"]}
    privileged = {n for n, c in containers.items() if c["securityContext"].get("privileged")}
    # Device access without a device plugin; each drops its capabilities when it starts.
    assert privileged == {"nvme-helper", "bmc-helper"}
    exporter = containers["nodeslo"]["securityContext"]
    assert exporter["capabilities"] == {"drop": ["ALL"]}
    assert exporter["allowPrivilegeEscalation"] is False
    assert exporter["readOnlyRootFilesystem"] is True
    init = containers["probe-dir"]["securityContext"]
    assert init["capabilities"]["drop"] == ["ALL"]
    assert set(init["capabilities"]["add"]) <= {"CHOWN", "FOWNER"}


def test_host_mounts_are_read_only_and_the_sockets_are_shared() -> None:
    pod = _pod()
    volumes = {v["name"]: v for v in pod["volumes"]}
    exporter = next(c for c in pod["containers"] if c["name"] == "nodeslo")
    mounts = {m["name"]: m for m in exporter["volumeMounts"]}
    for name, host_path in (("sys", "/sys"), ("proc", "/proc"), ("udev", "/run/udev")):
        assert volumes[name]["hostPath"]["path"] == host_path
        assert mounts[name]["readOnly"] is True
    # The probe's directory is the one writable host path, and where the profile says.
    assert volumes["probe"]["hostPath"]["path"] == mounts["probe"]["mountPath"]
    assert load_profile().probes.storage.targets == (mounts["probe"]["mountPath"],)
    for name, volume in (("nvme-helper", "nvme-socket"), ("bmc-helper", "bmc-socket")):
        helper = next(c for c in pod["containers"] if c["name"] == name)
        assert "emptyDir" in volumes[volume]
        helper_mounts = {m["name"]: m["mountPath"] for m in helper["volumeMounts"]}
        assert helper_mounts[volume] == mounts[volume]["mountPath"]
        # An emptyDir is writable by all, and a helper refuses to listen in a directory
        # others may write: the socket goes in a directory below it, which the helper
        # creates (root's, 0755).
        socket_dir = Path(cli.build_parser().parse_args(helper["args"]).socket).parent
        assert socket_dir.parent == Path(mounts[volume]["mountPath"]), name


def test_container_arguments_parse_with_the_real_cli() -> None:
    pod = _pod()
    parser = cli.build_parser()
    exporter = next(c for c in pod["containers"] if c["name"] == "nodeslo")
    helper = next(c for c in pod["containers"] if c["name"] == "nvme-helper")
    bmc = next(c for c in pod["containers"] if c["name"] == "bmc-helper")
    served = parser.parse_args(exporter["args"])
    helped = parser.parse_args(helper["args"])
    bmc_helped = parser.parse_args(bmc["args"])
    assert served.command == "serve" and helped.command == "nvme-helper"
    assert bmc_helped.command == "bmc-helper"
    assert served.nvme_helper_socket == helped.socket
    assert served.bmc_helper_socket == bmc_helped.socket
    uid = str(pod["securityContext"]["runAsUser"])
    assert helped.allow_user == [uid] and helped.socket_group == uid
    assert bmc_helped.allow_user == [uid] and bmc_helped.socket_group == uid
    assert bmc_helped.path_sysfs == served.path_sysfs  # the presence test reads both
    (address,) = served.web_listen_address  # one address (the flag is repeatable)
    port = address[1]
    assert exporter["ports"][0]["containerPort"] == port


def test_service_monitor_gives_the_job_the_rules_select() -> None:
    manifests = dict((d["kind"], d) for _, d in base_manifests())
    monitor, service = manifests["ServiceMonitor"], manifests["Service"]
    job = service["metadata"]["labels"][monitor["spec"]["jobLabel"]]
    assert load_profile().alerting.exporter_selector == f'job="{job}"'
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert service["spec"]["selector"] == _daemonset_labels()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]


def _daemonset_labels() -> dict[str, str]:
    daemonset = next(d for _, d in base_manifests() if d["kind"] == "DaemonSet")
    labels: dict[str, str] = daemonset["spec"]["template"]["metadata"]["labels"]
    return labels


def test_kustomize_builds_the_base() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        missing("kubectl (its built-in kustomize) is not installed")
    result = subprocess.run(
        [kubectl, "kustomize", str(BASE)], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stderr
    built = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert {d["kind"] for d in built} >= {
        "DaemonSet",
        "Service",
        "ServiceMonitor",
        "PrometheusRule",
    }
    for doc in built:
        assert doc["metadata"]["namespace"] == "monitoring"
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "nodeslo"
        validate(doc)


def test_only_the_wakeup_probe_gets_sys_nice_and_it_shares_the_socket() -> None:
    pod = _pod()
    containers = {c["name"]: c for c in pod["containers"]}
    probe = containers["wakeup-probe"]
    context = probe["securityContext"]
    assert context["capabilities"] == {"drop": ["ALL"], "add": ["SYS_NICE"]}
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert not context.get("privileged")
    # Kubernetes grants added capabilities to root only; the exporter's group opens the
    # socket (mode 0660, owned by the exporter's uid).
    assert context["runAsUser"] == 0
    assert context["runAsGroup"] == pod["securityContext"]["runAsGroup"]
    assert "ports" not in probe
    for name, container in containers.items():
        added = container["securityContext"].get("capabilities", {}).get("add", [])
        assert "SYS_NICE" not in added or name == "wakeup-probe", name
    parser = cli.build_parser()
    served = parser.parse_args(containers["nodeslo"]["args"])
    probed = parser.parse_args(probe["args"])
    assert (probed.command, probed.probe) == ("probe", "wakeup")
    assert probed.connect == served.probe_wakeup_socket
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in probe["volumeMounts"]}
    socket_volume = mounts[str(Path(probed.connect).parent)]
    assert "emptyDir" in volumes[socket_volume]
    exporter_mounts = {m["name"]: m["mountPath"] for m in containers["nodeslo"]["volumeMounts"]}
    assert exporter_mounts[socket_volume] == str(Path(probed.connect).parent)
    assert [m["name"] for m in probe["volumeMounts"]] == [socket_volume]  # nothing of the host


def test_the_readme_overlay_builds_on_a_generated_base(tmp_path: Path) -> None:
    """docs/install.md's overlay over what `nodeslo generate --out DIR` writes."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        missing("kubectl (its built-in kustomize) is not installed")
    install = (REPO / "docs" / "install.md").read_text()
    overlay = install.split("cat > site/kustomization.yaml <<'YAML'\n", 1)[1].split("YAML\n", 1)[0]
    assert cli.main(["generate", "--out", str(tmp_path)]) == 0
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "kustomization.yaml").write_text(overlay)
    result = subprocess.run(
        [kubectl, "kustomize", str(tmp_path / "site")],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    built = [d for d in yaml.safe_load_all(result.stdout) if d]
    (daemonset,) = [d for d in built if d["kind"] == "DaemonSet"]
    spec = daemonset["spec"]["template"]["spec"]
    containers = spec["containers"] + spec["initContainers"]
    assert {c["name"] for c in containers} == {
        "nodeslo",
        "nvme-helper",
        "bmc-helper",
        "wakeup-probe",
        "probe-dir",
    }
    assert {c["image"] for c in containers} == {"registry.example.com/nodeslo:0.1.0"}
    for doc in built:
        validate(doc)
