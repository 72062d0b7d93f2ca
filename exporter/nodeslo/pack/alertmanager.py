"""The generated block of the example Alertmanager configuration: fleet inhibitions.

`NodeSLOFleetRegression` names the per-host alert it stands for in its
`regressed_alert` label. Alertmanager's `equal` compares one label name on both sides,
so "the target's alertname equals the source's regressed_alert" takes one inhibit rule
per alert name: `nodeslo generate` writes them between two marker lines of
deploy/alertmanager/alertmanager.yml (the rest of the file is hand-written) and
`--check` fails when the block no longer matches the catalogue.
"""

from __future__ import annotations

from nodeslo import share
from nodeslo.pack import promql
from nodeslo.pack.catalog import fleet
from nodeslo.profile import Profile

PATH = "deploy/alertmanager/alertmanager.yml"
BEGIN = "  # BEGIN nodeslo generate: fleet regressions (pack/alertmanager.py), do not edit"
END = "  # END nodeslo generate: fleet regressions"


def _flow(items: list[str]) -> str:
    return "[" + ", ".join(items) + "]"


def fleet_inhibit_rules(profile: Profile) -> list[str]:
    """The block's lines: per alert name, the fleet page holds back the per-host alerts
    of that name and of a counted severity in the same cluster."""
    fleet_labels = [n for n in profile.alerting.instance_labels if n != "instance"]
    severities = "|".join(profile.alerting.fleet_regression.severities)
    lines = [
        BEGIN,
        "  # One NodeSLOFleetRegression page stands for the per-host alerts it names",
        "  # (regressed_alert) in its cluster: they are held back while it fires.",
    ]
    for name in fleet.counted_alerts(profile):
        source = [
            f"alertname={promql.quote(fleet.NAME)}",
            f"{fleet.REGRESSED}={promql.quote(name)}",
        ]
        target = [f"alertname={promql.quote(name)}", f"severity=~{promql.quote(severities)}"]
        lines += [
            f"  - source_matchers: {_flow([repr(m) for m in source])}",
            f"    target_matchers: {_flow([repr(m) for m in target])}",
            f"    equal: {_flow(fleet_labels)}",
        ]
    lines.append(END)
    return lines


def with_block(text: str, block: list[str]) -> str:
    """`text` with the lines between the markers (inclusive) replaced by `block`."""
    lines = text.splitlines()
    try:
        start, stop = lines.index(BEGIN), lines.index(END)
    except ValueError:
        raise ValueError(f"{PATH}: the marker lines of the generated block are missing") from None
    return "\n".join([*lines[:start], *block, *lines[stop + 1 :]]) + "\n"


def alertmanager_file(profile: Profile) -> list[tuple[str, str]]:
    """The generate producer: the shipped example with its block regenerated."""
    shipped = share.path(PATH).read_text(encoding="utf-8")
    return [(PATH, with_block(shipped, fleet_inhibit_rules(profile)))]
