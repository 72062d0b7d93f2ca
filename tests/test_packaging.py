"""What nodeslo ships: one version everywhere, the sdist and wheel with their data, nodeslo(1).

The sdist is built with PyPA's `build` (and the wheel from that sdist, as pip does), so
the wheel's package data is proven to come through the sdist. From the unpacked wheel,
`nodeslo generate --out DIR` must give a Kubernetes base that `kubectl kustomize` builds
(the DaemonSet, Service and ServiceMonitor come from the package data then).
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml

from conftest import REPO, missing
from nodeslo import __version__, cli, manpage, share
from nodeslo.pack import kubernetes as k8s


def test_one_version_everywhere() -> None:
    debian = (REPO / "debian" / "changelog").read_text().splitlines()[0]
    match = re.match(r"nodeslo \(([^)]+)\) ", debian)
    assert match, debian
    assert match.group(1) == __version__, "debian/changelog's first entry must be the version"
    changelog = (REPO / "CHANGELOG.md").read_text()
    releases = re.findall(r"^## \[([^\]]+)\]", changelog, re.MULTILINE)
    assert releases[:2] == ["Unreleased", __version__], releases


def test_setup_copies_what_the_code_reads() -> None:
    tree = ast.parse((REPO / "setup.py").read_text())
    shared = next(
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "SHARED"
    )
    assert tuple(shared) == share.SHARED
    for item in share.SHARED:
        assert (REPO / item).exists(), item


def test_in_a_checkout_the_data_are_the_repository_files() -> None:
    assert share.root() == REPO
    assert share.path("deploy", "kubernetes", "daemonset.yaml").is_file()


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sdist, then the wheel built from it (needs PyPI for the build backend)."""
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(REPO)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


def tracked(*roots: str) -> set[str]:
    listed = subprocess.run(
        ["git", "ls-files", *roots], cwd=REPO, capture_output=True, text=True, check=False
    )
    if listed.returncode != 0:
        pytest.skip("not a git checkout (an unpacked sdist): nothing to compare with")
    return {p for p in listed.stdout.splitlines() if (REPO / p).exists()}


def test_the_sdist_holds_the_project_and_its_tests(dist: Path) -> None:
    (sdist,) = dist.glob(f"nodeslo-{__version__}.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for path in ("LICENSE", "CHANGELOG.md", "README.md", "Makefile", "setup.py", "pyproject.toml"):
        assert path in names, path
    wanted = tracked("exporter", "tests", "alerts", "dashboards", "deploy", "debian", "docs")
    lost = sorted(wanted - names)
    assert not lost, f"missing from the sdist: {lost[:20]}"


def test_the_wheel_carries_the_data_files(dist: Path) -> None:
    (wheel,) = dist.glob(f"nodeslo-{__version__}-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    for item in share.SHARED:
        source = REPO / item
        files = [source] if source.is_file() else [p for p in source.rglob("*") if p.is_file()]
        for path in files:
            assert f"nodeslo/share/{path.relative_to(REPO)}" in names, path
    assert f"nodeslo-{__version__}.dist-info/licenses/LICENSE" in names
    assert not any(n.startswith("tests/") for n in names)


def test_generate_from_the_wheel_gives_a_base_that_kustomize_builds(
    dist: Path, tmp_path: Path
) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        missing("kubectl (its built-in kustomize) is not installed")
    (wheel,) = dist.glob("nodeslo-*.whl")
    installed = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(installed)
    out = tmp_path / "out"
    # The unpacked wheel ahead of the checkout's editable install; run away from the repo.
    env = {**os.environ, "PYTHONPATH": str(installed)}
    code = "import sys, nodeslo.share as s, nodeslo.cli as c; print(s.root()); sys.exit(c.main())"
    result = subprocess.run(
        [sys.executable, "-c", code, "generate", "--out", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == str(installed / "nodeslo" / "share")
    base = out / k8s.DIRECTORY
    for name in k8s.STATIC_RESOURCES:
        assert (base / name).read_text() == (REPO / k8s.DIRECTORY / name).read_text()
    built = subprocess.run(
        [kubectl, "kustomize", str(base)], capture_output=True, text=True, check=False, timeout=120
    )
    assert built.returncode == 0, built.stderr
    kinds = {d["kind"] for d in yaml.safe_load_all(built.stdout) if d}
    assert {"DaemonSet", "Service", "ServiceMonitor", "PrometheusRule", "ConfigMap"} <= kinds


def test_without_its_data_generate_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(share, "_PACKAGED", tmp_path / "absent")
    monkeypatch.setattr(share, "_CHECKOUT", tmp_path)
    assert cli.main(["generate", "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


# --- nodeslo(1) ------------------------------------------------------------------------


def every_parser() -> list[tuple[str, object]]:
    import argparse

    out: list[tuple[str, object]] = []

    def walk(parser: argparse.ArgumentParser, words: str) -> None:
        out.append((words, parser))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{words} {name}".strip())

    walk(cli.build_parser(), "")
    return out


def test_the_man_page_documents_every_command_and_flag() -> None:
    import argparse

    page = manpage.render()
    for words, parser in every_parser():
        assert isinstance(parser, argparse.ArgumentParser)
        if words:
            assert f'.SS "{manpage.escape(words)}"' in page, words
        for action in parser._actions:
            for option in action.option_strings:
                if option in ("-h", "--help", "--version"):
                    continue
                assert rf"\fB{manpage.escape(option)}\fR" in page, (words, option)
    assert f"nodeslo {__version__}" in page


def test_the_man_page_is_clean_roff(tmp_path: Path) -> None:
    groff = shutil.which("groff")
    if groff is None:
        missing("groff is not installed (Debian package groff-base)")
    page = tmp_path / "nodeslo.1"
    page.write_text(manpage.render())
    result = subprocess.run(
        [groff, "-man", "-ww", "-z", str(page)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    text = subprocess.run(
        [groff, "-man", "-Tutf8", str(page)], capture_output=True, text=True, check=True
    ).stdout
    assert "--probe.wakeup.socket" in re.sub(r".\x08", "", text).replace("\u2010", "-")
