"""The BMC on the dashboards: a row of the node dashboard (power supplies and their
redundancy, fans, inlet air, other sensors, the SEL) and a table of the fleet's servers.

Every line is what an alert judges: the healthy-PSU count against the profile's
`psu_count`, fans against their lower critical threshold, inlet air against the
profile's warning and critical lines and the sensors' own thresholds (dashed).
"""

from __future__ import annotations

from nodeslo.pack import promql
from nodeslo.pack.catalog import bmc as alerts
from nodeslo.pack.dashboards import common as c
from nodeslo.pack.dashboards import model as m
from nodeslo.profile import Profile

# Severity codes carry their colours in the mappings (no threshold steps: 2 is a code
# here, not the profile's PSU count).
SEVERITY = (
    m.ValueText("0", "ok", m.GREEN),
    m.ValueText("1", "non-critical", m.ORANGE),
    m.ValueText("2", "critical", m.RED),
    m.ValueText("3", "non-recoverable", m.RED),
)
POWER = f"type=~{promql.quote(alerts.POWER_TYPES)}"
FAN = 'type="fan"'
RPM = 'unit="rpm"'
TEMPERATURE = 'type="temperature"'


def _threshold(kind: str, level: str) -> str:
    return c.raw("nodeslo_bmc_sensor_threshold", kind, f"level={promql.quote(level)}")


def _inlet() -> str:
    return f"{alerts.INLET}{{{c.RECORDED}}}"


def _healthy() -> str:
    return f"{alerts.HEALTHY_PSUS}{{{c.RECORDED}}}"


def node_row(profile: Profile) -> m.Row:
    power, bmc = profile.health.power, profile.health.bmc
    keep = c.by(profile, "sensor")
    return m.Row(
        "BMC: power supplies, fans, inlet air",
        (
            m.Stat(
                title="Healthy power supplies",
                description="PSUs whose BMC status sensor reports neither a fault nor "
                f"absence, against the profile's {power.psu_count} (health.power.psu_count): "
                "red below it. A status sensor that stops reporting is not counted.",
                queries=(m.Query(_healthy(), c.legend()),),
                steps=m.below(power.psu_count),
                decimals=0,
                width=4,
                links=c.runbooks(profile, "PowerRedundancyLost", "PowerSupplyFailed"),
            ),
            m.StateTimeline(
                title="Power supplies and redundancy",
                description="Severity of each PSU status and PSU redundancy sensor as the BMC "
                "reports it: non-critical (a predictive failure, redundancy degraded), critical "
                "(failed, input lost, redundancy lost). nodeslo_bmc_sensor_state shows which "
                "state.",
                queries=(
                    m.Query(
                        c.raw("nodeslo_bmc_sensor_severity", POWER),
                        c.legend("sensor"),
                    ),
                ),
                mappings=SEVERITY,
                width=10,
                links=c.runbooks(profile, "PowerSupplyFailed", "PowerRedundancyLost"),
            ),
            m.StateTimeline(
                title="BMC read",
                description="1 while the BMC answers; 0 with the reason (timeout, error, "
                "no_driver, no_helper). Machines without a BMC (absent) show nothing.",
                queries=(
                    m.Query(
                        c.raw("nodeslo_bmc_up", 'reason!="absent"'),
                        c.legend("reason"),
                    ),
                ),
                mappings=(
                    m.ValueText("1", "answering", m.GREEN),
                    m.ValueText("0", "not read", m.RED),
                ),
                steps=m.below(1),
                width=10,
                links=c.runbooks(profile, "BMCUnreachable"),
            ),
            m.TimeSeries(
                title="Fans against their lower critical threshold",
                description="Each fan's tachometer; dashed, the lowest lower critical threshold "
                f"the BMC sets for them (red; without one, {bmc.fan_min_rpm:g} RPM, "
                "health.bmc.fan_min_rpm, counts as failed).",
                queries=(
                    m.Query(c.raw("nodeslo_bmc_sensor_value", FAN, RPM), c.legend("sensor")),
                    m.Query(
                        f"min by ({c.by(profile)}) ({_threshold(FAN, 'lower_critical')})",
                        c.legend() + " lower critical",
                    ),
                ),
                unit="rotrpm",
                min=0,
                overrides=(m.reference_line("byFrameRefID", "B", m.RED),),
                width=12,
                links=c.runbooks(profile, "FanFailed"),
            ),
            m.TimeSeries(
                title="Inlet air against its limits",
                description="Inlet temperature sensors (entity air inlet, or named like "
                f"{bmc.inlet_sensors}); orange from {bmc.inlet_warning_celsius:g} °C "
                "(health.bmc.inlet_warning_celsius, the top of ASHRAE's recommended "
                f"envelope), red from {bmc.inlet_critical_celsius:g} °C (the critical line for "
                "a sensor without one). Dashed, the sensors' own upper non-critical and "
                "critical thresholds.",
                queries=(
                    m.Query(_inlet(), c.legend("sensor")),
                    m.Query(
                        f"min by ({keep}) ({_threshold(TEMPERATURE, 'upper_non_critical')})"
                        f"\nand on ({keep}) {_inlet()}",
                        c.legend("sensor") + " UNC",
                    ),
                    m.Query(
                        f"min by ({keep}) ({_threshold(TEMPERATURE, 'upper_critical')})"
                        f"\nand on ({keep}) {_inlet()}",
                        c.legend("sensor") + " UC",
                    ),
                ),
                unit="celsius",
                steps=(
                    m.Step(None, m.GREEN),
                    m.Step(bmc.inlet_warning_celsius, m.ORANGE),
                    m.Step(bmc.inlet_critical_celsius, m.RED),
                ),
                overrides=(
                    m.reference_line("byFrameRefID", "B", m.ORANGE),
                    m.reference_line("byFrameRefID", "C", m.RED),
                ),
                width=12,
                links=c.runbooks(profile, "InletTemperatureHigh"),
            ),
            m.Table(
                title="Sensors not ok",
                description="Every BMC sensor whose reading has reached non-critical or worse "
                "(its threshold comparison, or the meaning of its asserted states), now.",
                queries=(
                    m.Query(
                        c.raw("nodeslo_bmc_sensor_severity") + " > 0",
                        instant=True,
                        format="table",
                    ),
                ),
                transformations=(
                    m.Transformation(
                        "organize",
                        {
                            "excludeByName": {"Time": True, "__name__": True, "job": True},
                            "renameByName": {"Value": "severity"},
                            "indexByName": {},
                        },
                    ),
                ),
                mappings=SEVERITY,
                sort_by=(("severity", True),),
                width=12,
                links=c.runbooks(profile, "BMCSensorCritical"),
            ),
            m.TimeSeries(
                title="SEL events",
                description="Entries the BMC added to its System Event Log, by sensor type and "
                "state (assertions and deassertions), per interval.",
                queries=(
                    m.Query(
                        f"sum by ({c.by(profile, 'type', 'state', 'direction')}) "
                        f"(increase({c.raw('nodeslo_bmc_sel_events_total')}[$__rate_interval]))",
                        c.legend("type", "state", "direction"),
                    ),
                ),
                bars=True,
                min=0,
                legend_calcs=("sum",),
                width=12,
            ),
        ),
    )


def fleet_panel(profile: Profile) -> m.Table:
    """Servers whose BMC sees a problem, worst first."""
    power = profile.health.power
    by = c.by(profile)
    names = ("Healthy PSUs", "Fans at or below LC", "Hottest inlet °C", "Critical sensors")
    fans = (
        f"count by ({by}) (\n{c.raw('nodeslo_bmc_sensor_value', FAN, RPM)}\n"
        f"<= on ({c.by(profile, 'sensor', 'entity')}) group_left ()\n"
        f"{_threshold(FAN, 'lower_critical')}\n)"
    )
    critical = f"count by ({by}) ({c.raw('nodeslo_bmc_sensor_severity')} >= 2)"
    return m.Table(
        title="BMC: power supplies, fans, inlet air",
        description="Per server: healthy PSUs against the profile's "
        f"{power.psu_count} (red below), fans at or below their lower critical threshold, "
        "the hottest inlet sensor, and sensors at critical or worse.",
        queries=(
            m.Query(f"min by ({by}) ({_healthy()})", instant=True, format="table"),
            m.Query(fans, instant=True, format="table"),
            m.Query(f"max by ({by}) ({_inlet()})", instant=True, format="table"),
            m.Query(critical, instant=True, format="table"),
        ),
        transformations=(
            m.Transformation("merge"),
            m.Transformation(
                "organize",
                {
                    "excludeByName": {"Time": True},
                    "renameByName": {
                        f"Value #{chr(ord('A') + i)}": name for i, name in enumerate(names)
                    },
                    "indexByName": {},
                },
            ),
        ),
        overrides=(
            m.Override("byName", names[0], (m.thresholds_property(m.below(power.psu_count)),)),
            m.Override("byName", names[1], (m.thresholds_property(m.above(1, m.ORANGE)),)),
            m.Override(
                "byName",
                names[2],
                (
                    m.thresholds_property(
                        (
                            m.Step(None, m.GREEN),
                            m.Step(profile.health.bmc.inlet_warning_celsius, m.ORANGE),
                            m.Step(profile.health.bmc.inlet_critical_celsius, m.RED),
                        )
                    ),
                ),
            ),
            m.Override("byName", names[3], (m.thresholds_property(m.above(1)),)),
        ),
        sort_by=((names[0], False),),
        data_links=(c.to_dashboard(c.NODE_UID, "Node dashboard of ${__data.fields.instance}"),),
        width=24,
        height=8,
        links=c.runbooks(
            profile,
            "PowerSupplyFailed",
            "PowerRedundancyLost",
            "FanFailed",
            "InletTemperatureHigh",
            "BMCSensorCritical",
        ),
    )
