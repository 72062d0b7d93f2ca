"""vmalert accepts the generated rules file as it is: every expression parses as MetricsQL
and every annotation template (including the `query` lookups) parses as vmalert's
templates. The negative controls show the dry run does check both, so a pass means
something. The rules' behaviour on VictoriaMetrics is tests/test_e2e_scenarios.py's."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import REPO, missing
from support import daemon as d
from support import stack as s

RULES = REPO / "alerts" / "nodeslo.rules.yaml"


@pytest.fixture(scope="module")
def vmalert() -> str:
    path = s.tool("vmalert")
    if not path:
        missing("vmalert is not installed (Debian package victoria-metrics)")
    assert path
    return path


def _dry_run(vmalert: str, rules: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [vmalert, "-dryRun", f"-rule={rules}", "-rule.validateTemplates"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_vmalert_accepts_the_generated_rules(vmalert: str) -> None:
    result = _dry_run(vmalert, RULES)
    assert result.returncode == 0, result.stderr[-4000:]


def test_vmalert_accepts_rules_generated_for_another_profile(vmalert: str, tmp_path: Path) -> None:
    """The e2e profile (compressed `for:`, SLOs removed) renders different numbers and
    durations: those parse too."""
    profile = REPO / "tests" / "scenarios" / "profiles" / "e2e.yaml"
    generated = d.run_cli("generate", "--rules-only", f"--profile={profile}", f"--out={tmp_path}")
    assert generated.returncode == 0, generated.stderr
    result = _dry_run(vmalert, tmp_path / "alerts" / "nodeslo.rules.yaml")
    assert result.returncode == 0, result.stderr[-4000:]


@pytest.mark.parametrize(
    ("expr", "annotation"),
    [
        ("rate(nodeslo_x_total[5m]", "fine"),  # an expression that does not parse
        ("up == 0", "{{ $labels.instance "),  # a template that does not parse
        ("up == 0", '{{ "up" | nosuchfunction }}'),  # an unknown template function
    ],
    ids=["expression", "template", "template-function"],
)
def test_the_dry_run_rejects_what_is_broken(
    vmalert: str, tmp_path: Path, expr: str, annotation: str
) -> None:
    rules = tmp_path / "broken.yaml"
    rules.write_text(
        "groups:\n- name: broken\n  rules:\n  - alert: Broken\n"
        f"    expr: '{expr}'\n    annotations:\n      summary: '{annotation}'\n"
    )
    assert _dry_run(vmalert, rules).returncode != 0
