"""The health alerts, as data: name, severity, PromQL template, `for`, texts, sources.

This package is what an operator reads to see what pages and why, one module per area
(`nvme.py`, `cpu.py`, `memory.py`, `redundancy.py`, `bmc.py`, `platform.py`,
`links.py`, `inventory.py`, `exporter.py`, `pipeline.py`, `fleet.py`); `rules.py` turns
it into rule groups. Each area module holds its alerts and recordings and renders the
`${name}` parameters its templates use from the profile. Expressions keep every label of an
instance-level series, or aggregate `by (${by})` (the profile's instance labels,
`cluster, instance` by default) so a fleet's `cluster` label is carried through.
Fleet-wide comparisons group by `${fleet_}` (the instance labels without `instance`).

`for` waits out one bad poll or a transient spike. Alerts on a counter's increase
over a window need no `for`: the window itself holds them up for its length.
"""

from __future__ import annotations

from types import ModuleType

from nodeslo.pack.catalog import (
    base,
    bmc,
    cpu,
    exporter,
    fleet,
    inventory,
    links,
    memory,
    nvme,
    pipeline,
    platform,
    redundancy,
)
from nodeslo.pack.catalog.base import (
    CRITICAL,
    NONE,
    SLOW_INTERVAL_SECONDS,
    WARNING,
    HealthAlert,
    Recording,
    apart,
    fill,
    slow,
)
from nodeslo.pack.catalog.cpu import CPU_CHIPS
from nodeslo.pack.catalog.exporter import probe_absent_alert
from nodeslo.pack.catalog.nvme import NVME_NAMESPACE
from nodeslo.pack.catalog.pipeline import GROUP_PREFIX
from nodeslo.profile import Profile

# In rule-file order within each group.
AREAS: tuple[ModuleType, ...] = (
    nvme,
    cpu,
    memory,
    redundancy,
    bmc,
    platform,
    links,
    inventory,
    exporter,
    pipeline,
    fleet,
)

RECORDINGS: tuple[Recording, ...] = tuple(r for area in AREAS for r in area.RECORDINGS)
ALERTS: tuple[HealthAlert, ...] = tuple(a for area in AREAS for a in area.ALERTS)
# One rule group per area, named after its module, then the groups it keeps apart
# (`apart(area, part)`, the module's APART), then its slow group (`slow(area)`) when it
# has long-window rules (the hourly group is shared).
GROUPS: tuple[str, ...] = tuple(area.__name__.rsplit(".", 1)[-1] for area in AREAS)
APART: dict[str, tuple[str, ...]] = {
    group: tuple(apart(group, part) for part in getattr(area, "APART", ()))
    for group, area in zip(GROUPS, AREAS, strict=True)
}


def parameters(profile: Profile) -> dict[str, str]:
    """Every `${name}` the templates may use, rendered for PromQL or for text."""
    params = base.parameters(profile)
    for area in AREAS:
        own = area.parameters(profile)
        clash = params.keys() & own.keys()
        assert not clash, f"{area.__name__} redefines {sorted(clash)}"
        params.update(own)
    return params


def durations(profile: Profile) -> dict[str, float]:
    """Named `for` durations (HealthAlert.for_ as a string) from the profile."""
    named: dict[str, float] = {}
    for area in AREAS:
        if hasattr(area, "durations"):
            named.update(area.durations(profile))
    return named


__all__ = [
    "ALERTS",
    "AREAS",
    "CPU_CHIPS",
    "CRITICAL",
    "GROUPS",
    "GROUP_PREFIX",
    "NONE",
    "NVME_NAMESPACE",
    "RECORDINGS",
    "SLOW_INTERVAL_SECONDS",
    "WARNING",
    "HealthAlert",
    "Recording",
    "apart",
    "durations",
    "fill",
    "parameters",
    "probe_absent_alert",
    "slow",
]
