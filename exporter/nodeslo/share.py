"""The files the pack ships beside the code: rules, dashboards, runbooks, units, manifests.

A wheel or sdist install carries them as package data under `nodeslo/share/` (setup.py
copies them there at build time; the Debian package links that directory to
/usr/share/nodeslo); an editable install from a checkout reads them where they are in the
repository. Both have the repository's layout: `alerts/`, `dashboards/`, `deploy/`.
"""

from __future__ import annotations

from pathlib import Path

# What setup.py copies into the package, relative to the repository's root.
SHARED = ("alerts/nodeslo.rules.yaml", "alerts/runbooks", "dashboards", "deploy")

_PACKAGED = Path(__file__).with_name("share")
_CHECKOUT = Path(__file__).resolve().parents[2]


class ShareMissing(FileNotFoundError):
    """Neither package data nor a checkout: an install that lost its data files."""


def root() -> Path:
    """The directory holding alerts/, dashboards/ and deploy/."""
    if _PACKAGED.is_dir():
        return _PACKAGED
    if (_CHECKOUT / "pyproject.toml").is_file() and (_CHECKOUT / "deploy").is_dir():
        return _CHECKOUT
    raise ShareMissing(f"{_PACKAGED}: nodeslo's data files are not installed")


def path(*parts: str) -> Path:
    return root().joinpath(*parts)
