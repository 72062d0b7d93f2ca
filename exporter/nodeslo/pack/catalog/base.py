"""What every catalogue area shares: the alert and recording records, templates, helpers.

Templates use `${name}` placeholders (PromQL and Go templates use neither `${` nor `}`
in that combination) filled from the parameters each area module renders from the
profile: every threshold comes from the profile, never from a literal in a template.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from nodeslo.pack import promql
from nodeslo.profile import Profile

CRITICAL = "critical"
WARNING = "warning"
# Always firing, routed to a heartbeat receiver (Watchdog): never a person, no dashboard.
NONE = "none"

# An area's rules over windows of hours to days, judged after an hour, run in a group of
# their own, `<area>-slow`, evaluated every 5 minutes instead of every minute: such a
# ratio barely moves in a minute, and the `for` hides a few minutes' delay. 5m, not
# more: an instant query (a dashboard, another rule) still finds a value written at
# the last evaluation within Prometheus' 5m lookback. A slow group reads only raw
# series and its own recordings (promtool runs groups in a random order: docs/slos.md).
SLOW_INTERVAL_SECONDS = 300.0


def slow(group: str) -> str:
    """The slow group of an area."""
    return f"{group}-slow"


def apart(group: str, part: str) -> str:
    """A group of an area's own, evaluated at the area's interval beside it: for rules
    that read so many series per host (130 CPU sensors, 114 AER counters) that in one
    group with the rest they would hold up its every evaluation. Prometheus and vmalert
    evaluate groups concurrently, the rules of one group one after the other: no group
    should take more than a tenth of its interval (issue 18, RESULTS.md). An alert and
    the recordings it reads stay in one group (promtool's random group order)."""
    return f"{group}-{part}"


@dataclass(frozen=True)
class Recording:
    group: str
    record: str
    expr: str
    source: tuple[str, ...]
    # A level that held alerts read (HealthAlert.held_through_gaps): recorded through a
    # failed scrape instead of missing for an evaluation.
    held_through_gaps: bool = False


@dataclass(frozen=True)
class HealthAlert:
    name: str
    group: str
    severity: str
    expr: str
    # Seconds, or the name of a duration in `durations(profile)`; 0 means no `for`.
    for_: float | str
    summary: str
    description: str
    threshold: str  # for docs/alerts.md and the runbook
    source: tuple[str, ...]
    labels: tuple[tuple[str, str], ...] = ()
    when: Callable[[Profile], bool] | None = None
    # A level compared with a threshold: its exporter series are read through
    # promql.held_through_gaps, so one failed scrape neither resolves the alert nor
    # restarts its `for`. Not for alerts on a series' absence, which it would delay.
    held_through_gaps: bool = False
    # An alert on a series' absence (or a level whose `unless` reads one), which
    # held_through_gaps would delay: while the host's scrape fails (`up` 0) and a good
    # scrape is within the lookback, it also keeps what it was at its last evaluation
    # (rules.kept_while_unscraped, from ALERTS), so a failed scrape neither resolves it
    # nor restarts its `for`, while a series that leaves a good scrape is missing at once.
    held_while_unscraped: bool = False


# "Any rise in the last hour" alerts on error counters (PCIe AER, NVMe media, EDAC UE)
# would read an hour of every counter every minute, three times over (increase_seen),
# though the counters almost never move: ~80 % of the samples the links group read at
# 1,000 hosts. A recording in the alert's own group looks back only this far and is
# written only where a counter rose; the alert keeps each rise for its window by reading
# that sparse recording. 10 minutes, not the 2 a rise needs: a rise is still seen across
# a scrape gap (an exporter restart, a lost scrape) or missed evaluations of up to 9.
# Measured (benchmarks/RESULTS.md, fourth stop): 0.22x the samples, but Prometheus 2.42
# spends ~20 us per series and selector whatever the window, and the alert's look a
# window back adds two lookups: engine time unchanged. Fewer selectors was the next cut:
# increase_seen's guard is one read of the window now, not two (sixth stop).
RISE_WINDOW_SECONDS = 600.0


def rise_window(window_seconds: float) -> str:
    """How far a rise recording looks back for an alert over `window_seconds`."""
    return promql.duration(min(RISE_WINDOW_SECONDS, window_seconds))


def rise_recording(group: str, record: str, counter: str, window: str) -> Recording:
    """`record`: a counter's increase over `window` (a `rise_window`), written only
    where its own samples rose (increase_seen: not a series born with old errors)."""
    metric = counter.split("{", 1)[0]
    return Recording(
        group=group,
        record=record,
        expr=promql.increase_seen(counter, window) + " > 0",
        source=(metric,),
    )


def rise_alert(record: str, counter: str, window: str) -> str:
    """Fires while `counter` is above its value a `window` ago (two lookups a series:
    also a rise the recording missed, across a scrape gap longer than its window), or
    a `rise_recording` was written within `window`: every rise in the window, as the
    full-window increase_seen did, for up to one rise window longer. The value is the
    exact rise over the window where the counter spans it without a reset; else (a
    series younger than the window, reset, or gone) the most it rose in one rise window.
    A series born inside the window has nothing a window ago: old errors stay silent."""
    recent = f"max_over_time({record}[{window}])"
    return f"""
({counter} - {counter} offset {window} > 0)
or
{recent}
"""


def percent(ratio: float) -> str:
    return f"{ratio * 100:g}%"


def template_filter(labels: tuple[str, ...]) -> tuple[str, str]:
    """(`a=%q, b=%q, `, `$labels.a $labels.b `) to rebuild a selector inside a template."""
    return (
        "".join(f"{name}=%q, " for name in labels),
        "".join(f"$labels.{name} " for name in labels),
    )


def parameters(profile: Profile) -> dict[str, str]:
    """The `${name}`s every area may use: instance and fleet grouping, the `up` selector."""
    instance = profile.alerting.instance_labels
    fleet = tuple(name for name in instance if name != "instance")
    instance_sel, instance_args = template_filter(instance)
    fleet_sel, fleet_args = template_filter(fleet)
    escaped = profile.alerting.exporter_selector.replace('"', '\\"')
    return {
        "by": promql.by(instance),
        "fleet_": "".join(f"{name}, " for name in fleet),
        "up": f"up{{{profile.alerting.exporter_selector}}}",
        # For a template's printf "…": its own quotes escaped.
        "up_sel_": f"up{{{escaped}, {instance_sel}}}",
        "instance_sel_": instance_sel,
        "instance_args_": instance_args,
        "fleet_sel_": fleet_sel,
        "fleet_args_": fleet_args,
    }


def bytes_text(size: int) -> str:
    for unit, scale in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} bytes"


_PLACEHOLDER = re.compile(r"\$\{([a-z_]+)\}")


def fill(template: str, params: dict[str, str]) -> str:
    """Replace `${name}`; an unknown name is a bug in this module, not user input."""

    def value(match: re.Match[str]) -> str:
        return params[match.group(1)]

    return _PLACEHOLDER.sub(value, template)


def lookup(metric: str, extra: str, args: str, pipe: str) -> str:
    """A Go-template snippet that prints another series of the same instance.

    `extra` holds that series' own `name=%q` matchers, `args` the `$labels.name `
    values they take. Prints nothing when the series is absent, not a template error.
    """
    return (
        f'{{{{ with printf "{metric}{{${{instance_sel_}}{extra}}}" '
        f"${{instance_args_}}{args}| query }}}}{{{{ . | first | value | {pipe} }}}}{{{{ end }}}}"
    )


def count_per_host(metric: str) -> str:
    """How many series of `metric` each host has, 0 while its exporter is up and reports
    none: the count a device that disappears lowers, whatever names its peers take."""
    return f"""
count by (${{by}}) ({metric})
or on (${{by}})
0 * group by (${{by}}) (${{up}} == 1)
"""


def count_held_while_unscraped(record: str, expr: str) -> str:
    """`expr`, the recording `record` of a count of devices, and through a failed scrape
    the count it recorded last.

    A failed scrape stale-marks every series of the host, so a count of them would be
    missing for that evaluation, and an alert comparing it (a drive or PSU fewer than
    before) would resolve or restart its `for`. Holding the count's inputs instead
    (last_over_time) would count a device that left minutes before as present. So the
    recording reads its own last value, only while the scrape fails (`up` 0) and only
    while a good scrape is within the lookback: an exporter that dies keeps the count
    5m, as the held alerts keep their level, then NodeSLOExporterDown has paged."""
    own_last = f"last_over_time({record}[{promql.LOOKBACK}])"
    return f"""{expr.rstrip()}
or on (${{by}})
(
  {promql.while_unscraped(own_last, "${up}", "${by}")}
)
"""


def present_now(selector: str) -> str:
    """For an annotation's query: the series of `selector` (the host's own, its `%q`s
    taking `${instance_args_}`) the last scrape returned, and through a failed scrape
    (`up` 0, every series stale-marked) those of the lookback instead. A plain read finds
    none then, so a list of what is gone would name every device; a read held always
    would hide a device gone less than the lookback ago. Takes `${instance_args_}`
    three times."""
    return (
        f"({selector} or last_over_time({selector}[{promql.LOOKBACK}]) "
        "and on () (${up_sel_} == 0))"
    )


def label_list(selector: str, args: str, label: str) -> str:
    """A Go-template snippet listing `label` of the series a query finds: "a, b".

    `selector` is a printf format (its `%q`s take `args`, `$labels.name ` values)."""
    return (
        f'{{{{ range $i, $s := printf "{selector}" {args}| query }}}}'
        f"{{{{ if $i }}}}, {{{{ end }}}}{{{{ $s.Labels.{label} }}}}{{{{ end }}}}"
    )


ON = "on {{ $labels.instance }}"
