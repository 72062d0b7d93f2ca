"""Everything is in pyproject.toml but one build step: the shipped data files.

The rules, dashboards, runbooks, units and manifests live at the repository's root (where
`nodeslo generate` writes them and reviewers read them); a wheel carries a copy under
`nodeslo/share/` so that an installed nodeslo finds them (`nodeslo.share`). An editable
install reads them from the checkout instead.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
# Kept equal to nodeslo.share.SHARED (tests/test_packaging.py checks it).
SHARED = ("alerts/nodeslo.rules.yaml", "alerts/runbooks", "dashboards", "deploy")


class BuildPyWithShare(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "nodeslo" / "share"
        for item in SHARED:
            source, dest = ROOT / item, target / item
            dest.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, dest, dirs_exist_ok=True)
            else:
                shutil.copy2(source, dest)


setup(cmdclass={"build_py": BuildPyWithShare})
