"""Reading generated dashboards back: their panels, queries and Grafana variables.

Grafana substitutes its variables before a query reaches Prometheus; `substitute`
does the same with the values a test chooses, so every expression of a dashboard can
be sent to a real Prometheus as Grafana would send it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

# $name, ${name} and ${name:format}; label_replace's "$1" is no variable.
_VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::[a-z]+)?\}|([A-Za-z_][A-Za-z0-9_]*))")
_LABEL_VALUES = re.compile(r"^label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\)$", re.S)


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str  # uid
    panel: str  # title
    ref_id: str
    expr: str
    instant: bool
    panel_json: dict[str, Any]

    @property
    def key(self) -> tuple[str, str, str]:
        """(dashboard, panel title, refId): how a test names a query."""
        return (self.dashboard, self.panel, self.ref_id)

    @property
    def unique(self) -> tuple[str, int, str, str]:
        """Titles repeat (one row per SLO): the panel id tells them apart."""
        return (self.dashboard, int(self.panel_json["id"]), self.ref_id, self.panel)


def panels(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that is not a row header, including panels nested in rows."""
    for panel in doc.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def queries(doc: dict[str, Any]) -> Iterator[PanelQuery]:
    for panel in panels(doc):
        for target in panel.get("targets", []):
            yield PanelQuery(
                doc["uid"],
                panel["title"],
                target["refId"],
                target["expr"],
                bool(target.get("instant")),
                panel,
            )


def substitute(expr: str, values: dict[str, str]) -> str:
    """Replace every Grafana variable; an unknown one is a test bug, not a pass."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise KeyError(f"no value for Grafana variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(value, expr)


def label_values(query: str) -> tuple[str, str]:
    """`label_values(metric{...}, label)` -> (the series selector, the label)."""
    match = _LABEL_VALUES.match(query.strip())
    if not match:
        raise ValueError(f"not a label_values() variable query: {query!r}")
    return match.group(1), match.group(2)


def threshold_values(panel: dict[str, Any]) -> list[float]:
    """Every threshold step value of a panel: its defaults and its overrides."""
    out: list[float] = []
    steps = panel.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {}).get("steps", [])
    out.extend(s["value"] for s in steps if s["value"] is not None)
    for override in panel.get("fieldConfig", {}).get("overrides", []):
        for prop in override["properties"]:
            if prop["id"] == "thresholds":
                out.extend(s["value"] for s in prop["value"]["steps"] if s["value"] is not None)
    return out
