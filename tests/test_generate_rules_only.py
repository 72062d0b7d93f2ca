"""`nodeslo generate --rules-only` without the [pack] extra, and a CLI that does not
import the generators on every start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from nodeslo.pack import generate, rules
from nodeslo.profile import load_profile

REPO = Path(__file__).resolve().parents[1]
SDK = "grafana_foundation_sdk"

# A meta-path finder that refuses the SDK, as on a host without `nodeslo[pack]`.
BLOCK_SDK = f"""
import sys
class NoSDK:
    def find_spec(self, name, path=None, target=None):
        if name == {SDK!r} or name.startswith({SDK!r} + "."):
            raise ImportError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, NoSDK())
"""


def run_cli_without_sdk(*argv: str) -> subprocess.CompletedProcess[str]:
    code = BLOCK_SDK + f"from nodeslo.cli import main\nsys.exit(main({list(argv)!r}))\n"
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )


def test_rules_only_without_the_sdk_writes_the_normal_runs_rule_file(tmp_path: Path) -> None:
    """The same bytes as the full run's rule file (its first producer, and the
    committed file that `generate --check` holds to it)."""
    result = run_cli_without_sdk("generate", "--rules-only", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    written = [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()]
    assert written == [rules.RULES_PATH]
    text = (tmp_path / rules.RULES_PATH).read_text()
    full_run = dict(generate.outputs(load_profile()))
    assert text == full_run[rules.RULES_PATH]
    assert text == (REPO / rules.RULES_PATH).read_text()


def test_rules_only_check_passes_on_the_checkout_without_the_sdk() -> None:
    result = run_cli_without_sdk("generate", "--rules-only", "--check", "--out", str(REPO))
    assert result.returncode == 0, result.stderr


def test_rules_only_check_fails_on_a_stale_rule_file(tmp_path: Path) -> None:
    """A hand-edited rule file: --check exits 1 naming it, without the SDK."""
    (tmp_path / "alerts").mkdir()
    (tmp_path / rules.RULES_PATH).write_text("groups: []\n")
    result = run_cli_without_sdk("generate", "--rules-only", "--check", "--out", str(tmp_path))
    assert result.returncode == 1
    assert rules.RULES_PATH in result.stderr


def test_the_cli_does_not_import_the_generators() -> None:
    """Every start (serve, check, --version) builds the whole parser: the rule and
    dashboard generators are imported only when `generate` runs."""
    out = subprocess.run(
        [sys.executable, "-c", "import sys, nodeslo.cli; print('\\n'.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "nodeslo.cli" in out and "nodeslo.pack.generate" in out
    loaded = {m for m in out if m.startswith("nodeslo.pack.") and m != "nodeslo.pack.generate"}
    assert loaded == set()
