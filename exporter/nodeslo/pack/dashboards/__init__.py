"""The Grafana dashboards of the pack: fleet, node and SLOs, all from the profile.

`dashboard_files` is the `nodeslo generate` producer: it writes
`dashboards/<uid>.json`. The definitions (fleet.py, node.py, slos.py) are plain data
(model.py); only the rendering needs the Grafana Foundation SDK, the optional extra
`nodeslo[pack]`, imported here on first use so that nothing else (the exporter
above all) ever loads it.
"""

from __future__ import annotations

from nodeslo.pack.dashboards import fleet, node, slos
from nodeslo.pack.dashboards.model import Dashboard
from nodeslo.profile import Profile

DIRECTORY = "dashboards"
SDK = "grafana_foundation_sdk"


class MissingExtra(RuntimeError):
    """The dashboards need the SDK, which `pip install 'nodeslo[pack]'` brings."""


def dashboards(profile: Profile) -> tuple[Dashboard, ...]:
    return (fleet.dashboard(profile), node.dashboard(profile), slos.dashboard(profile))


def path(dashboard: Dashboard) -> str:
    return f"{DIRECTORY}/{dashboard.uid}.json"


def dashboard_files(profile: Profile) -> list[tuple[str, str]]:
    """The generate producer: (path, JSON text) of each dashboard."""
    try:
        from nodeslo.pack import grafana
    except ImportError as exc:
        if exc.name is None or not exc.name.startswith(SDK):
            raise
        raise MissingExtra(
            "the dashboards need the Grafana Foundation SDK, which is not installed: "
            "pip install 'nodeslo[pack]' (it pins grafana-foundation-sdk==0.0.21)"
        ) from exc
    return [(path(d), grafana.render(d)) for d in dashboards(profile)]
