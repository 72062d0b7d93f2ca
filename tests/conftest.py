"""Shared fixtures: generated trees, the real VM captures, the golden-file switch."""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

import pytest

from fixtures.make_fixtures import build, variant
from support import stack

REPO = Path(__file__).resolve().parents[1]
# ../shared sits beside every checkout (CI's too) but not on a user's machine.
SHARED = REPO.parent / "shared"


def missing(what: str) -> None:
    """Skip a test whose tool is absent, except in CI, where the tool must be there."""
    if os.environ.get("NODESLO_REQUIRE_TOOLS"):
        pytest.fail(f"{what} (NODESLO_REQUIRE_TOOLS is set: CI installs it)")
    pytest.skip(what)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="rewrite the golden files under tests/golden from the current output",
    )


@pytest.fixture(params=stack.ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """Each rule engine in turn (Prometheus; vmagent → victoria-metrics → vmalert),
    where installed (CI: both)."""
    absent = stack.engine_missing(request.param)
    if absent:
        missing(f"{absent}: not installed (Debian packages)")
    return str(request.param)


@pytest.fixture(scope="session")
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


def _tree(factory: pytest.TempPathFactory, name: str) -> Path:
    root = factory.mktemp(name)
    build(root, variant(name))
    return root


@pytest.fixture(scope="session")
def seed_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seed-spec server (read-only: tests that change files make their own)."""
    return _tree(tmp_path_factory, "seed-spec")


@pytest.fixture(scope="session")
def make_tree(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Build a fresh tree of any variant: make_tree("seed-spec")."""
    return lambda name="seed-spec": _tree(tmp_path_factory, name)


@pytest.fixture(scope="session")
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared is not present (only beside a development checkout)")
    return SHARED


@pytest.fixture(scope="session")
def real_captures(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The real VM captures in ../shared/fixtures/real, unpacked once per session."""
    out = {}
    for archive in sorted((shared / "fixtures" / "real").glob("*.tar.gz")):
        name = archive.name.removesuffix(".tar.gz")
        root = tmp_path_factory.mktemp(name)
        with tarfile.open(archive) as tar:
            tar.extractall(root, filter="tar")
        out[name] = root
    if not out:
        pytest.skip("no real captures in ../shared/fixtures/real")
    return out


@pytest.fixture(scope="session")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        missing("promtool is not installed (Debian package prometheus)")
    return path
