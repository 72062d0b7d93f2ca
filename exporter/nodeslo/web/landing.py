"""The landing page at `/`: what is running, with which profile, and how each collector fares."""

from __future__ import annotations

import html
import time
from collections.abc import Mapping

from nodeslo import __version__
from nodeslo.collectors.base import CollectorStatus

_STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:60em}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}"
    ".ok{color:#1a7f37}.fail{color:#cf222e}.wait{color:#888}"
)


def render(
    telemetry_path: str,
    profile_name: str,
    profile_sha256: str,
    statuses: Mapping[str, CollectorStatus],
    disabled: list[str],
) -> str:
    rows = []
    for name, status in sorted(statuses.items()):
        if status.success is None:
            state, css = "not scraped yet", "wait"
        elif status.success:
            state, css = "ok", "ok"
        else:
            state, css = "failing", "fail"
        age = f"{time.time() - status.last_run:.0f}s ago" if status.last_run else ""
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td class={css}>{state}</td>"
            f"<td>{status.duration_seconds * 1000:.1f} ms</td><td>{age}</td>"
            f"<td>{html.escape(status.error)}</td></tr>"
        )
    path = html.escape(telemetry_path)
    off = ", ".join(html.escape(n) for n in sorted(disabled)) or "none"
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>nodeslo</title><style>{_STYLE}</style></head>
<body>
<h1>nodeslo {html.escape(__version__)}</h1>
<p>Prometheus exporter for deterministic process-management servers.</p>
<ul>
<li><a href="{path}">Metrics</a></li>
<li><a href="/-/healthy">Health</a> &middot; <a href="/-/ready">Readiness</a></li>
</ul>
<p>Profile <b>{html.escape(profile_name)}</b>
(sha256 <code>{html.escape(profile_sha256[:12])}</code>)</p>
<h2>Collectors</h2>
<table><tr><th>collector</th><th>last status</th><th>duration</th><th>last run</th>
<th>error</th></tr>
{"".join(rows)}
</table>
<p>Disabled: {off}</p>
</body></html>
"""
