"""The BMC: power supplies and their redundancy, fans, inlet air, other critical sensors,
and the BMC itself.

What an absence means here:
- a BMC that stops answering keeps its last values in the exporter (`nodeslo_bmc_up`
  0 with a reason), so a firing PSU or fan alert stays; BMCUnreachable tickets. A host
  whose BMC answered within the lookback and now exports no answering BMC at all (the
  collector turned off, the driver unloaded) tickets too; a machine without a BMC
  (reason `absent`) does not.
- a PSU status sensor that stops reporting while the BMC answers lowers the count of
  healthy PSUs: PowerRedundancyLost pages. A BMC that answers but reports no PSU status
  at all tickets: redundancy cannot be judged.
- a fan or inlet sensor, or any sensor that was critical, that the BMC reported within
  the lookback and no longer reports (reading unavailable, gone from the SDR) keeps its
  alert, as a missing reading, for the lookback.
- a sensor without thresholds takes the profile's: `health.bmc.fan_min_rpm` for fans
  without a lower critical threshold, `inlet_critical_celsius` for an inlet sensor
  without an upper critical one (and `inlet_warning_celsius` always applies).
"""

from __future__ import annotations

from nodeslo.pack import promql
from nodeslo.pack.catalog.base import (
    CRITICAL,
    ON,
    WARNING,
    HealthAlert,
    Recording,
    count_held_while_unscraped,
)
from nodeslo.profile import Profile

# Sensor-specific states of a PSU status sensor (type 08h), as the exporter names them.
PSU_STATES = (
    "presence_detected|failure_detected|predictive_failure|input_lost|"
    "input_lost_or_out_of_range|input_out_of_range|configuration_error|inactive"
)
PSU_FAILURE_STATES = (
    "failure_detected|predictive_failure|input_lost|input_lost_or_out_of_range|"
    "input_out_of_range|configuration_error"
)
# Generic redundancy states (reading type 0Bh) of a power supply or power unit sensor.
REDUNDANCY_LOST_STATES = (
    "redundancy_lost|non_redundant_sufficient_from_redundant|"
    "non_redundant_sufficient_from_insufficient|non_redundant_insufficient"
)
REDUNDANCY_DEGRADED_STATES = (
    "redundancy_degraded|redundancy_degraded_from_fully_redundant|"
    "redundancy_degraded_from_non_redundant"
)
POWER_TYPES = "power_supply|power_unit"
# Sensor types with alerts of their own; BMCSensorCritical covers the others.
OWN_ALERT_TYPES = "power_supply|power_unit|fan"
INLET_ENTITIES = "air_inlet\\\\..+"

_SENSOR_ON = "on (${by}, sensor, entity)"
_BMC_ANSWERS = "and on (${by}) (max by (${by}) (nodeslo_bmc_up) == 1)"


def parameters(profile: Profile) -> dict[str, str]:
    power, bmc = profile.health.power, profile.health.bmc
    n, d = promql.number, promql.duration
    ignored = f", sensor!~{promql.quote(bmc.ignore_sensors)}" if bmc.ignore_sensors else ""
    return {
        "power_meter": promql.quote(power.meter_chip_name),
        "power_max": n(power.redundant_capacity_watts),
        "psu_count": str(power.psu_count),
        "psu_capacity": n(power.psu_capacity_watts),
        "bmc_input_power": promql.quote(power.bmc_input_power_sensors),
        "psu_states": PSU_STATES,
        "psu_failure_states": PSU_FAILURE_STATES,
        "redundancy_lost_states": REDUNDANCY_LOST_STATES,
        "redundancy_degraded_states": REDUNDANCY_DEGRADED_STATES,
        "power_types": POWER_TYPES,
        "own_alert_types": OWN_ALERT_TYPES,
        "inlet_entities": INLET_ENTITIES,
        "inlet_sensors": promql.quote(bmc.inlet_sensors),
        "inlet_warning": n(bmc.inlet_warning_celsius),
        "inlet_critical": n(bmc.inlet_critical_celsius),
        "fan_min_rpm": n(bmc.fan_min_rpm),
        "bmc_ignored_": ignored,
        "bmc_lookback": d(bmc.absent_lookback_seconds),
        "bmc_unreachable_text": d(bmc.unreachable_for_seconds),
    }


def durations(profile: Profile) -> dict[str, float]:
    return {"bmc_unreachable_for": profile.health.bmc.unreachable_for_seconds}


INLET = "instance_sensor:nodeslo_bmc_inlet_temperature_celsius:value"
HEALTHY_PSUS = "instance:nodeslo_bmc_power_supplies_healthy:count"
SEVERITY_HOURLY = "instance_sensor:nodeslo_bmc_sensor_severity:max1h"
UP_HOURLY = "instance:nodeslo_bmc_up:max1h"

RECORDINGS = (
    Recording(
        group="bmc",
        record=INLET,
        # The temperature sensors that measure inlet air: entity air inlet (IPMI 37h or
        # DCMI 40h), or named so (the profile's health.bmc.inlet_sensors).
        expr="""
nodeslo_bmc_sensor_value{type="temperature", unit="celsius", entity=~"${inlet_entities}"}
or
nodeslo_bmc_sensor_value{type="temperature", unit="celsius", sensor=~${inlet_sensors}}
""",
        source=("nodeslo_bmc_sensor_value",),
        held_through_gaps=True,
    ),
    Recording(
        group="bmc",
        record=HEALTHY_PSUS,
        # PSUs whose status sensor reports neither a fault nor absence (a sensor without
        # a presence state counts as present); 0 where PSU status sensors exist and none
        # is healthy. A sensor that stops reporting is not counted; a failed scrape
        # keeps the count (count_held_while_unscraped).
        expr=count_held_while_unscraped(
            HEALTHY_PSUS,
            """
count by (${by}) (
  group by (${by}, sensor, entity) (
    nodeslo_bmc_sensor_state{type="power_supply", state=~"${psu_states}"}
  )
  unless """
            + _SENSOR_ON
            + """
  (nodeslo_bmc_sensor_state{type="power_supply", state=~"${psu_failure_states}"} == 1)
  unless """
            + _SENSOR_ON
            + """
  (nodeslo_bmc_sensor_state{type="power_supply", state="presence_detected"} == 0)
)
or on (${by})
0 * group by (${by}) (nodeslo_bmc_sensor_state{type="power_supply", state=~"${psu_states}"})
""",
        ),
        source=("nodeslo_bmc_sensor_state", "up"),
    ),
    Recording(
        group="hourly",
        record=SEVERITY_HOURLY,
        # One point an hour per sensor: what it reported lately, for a day's lookback
        # without reading every scrape of the day.
        expr="max_over_time(nodeslo_bmc_sensor_severity[1h])",
        source=("nodeslo_bmc_sensor_severity",),
    ),
    Recording(
        group="hourly",
        record=UP_HOURLY,
        expr="max by (${by}) (max_over_time(nodeslo_bmc_up[1h]))",
        source=("nodeslo_bmc_up",),
    ),
)


def _missing(selector: str) -> str:
    """Sensors of `selector` (a hourly-recording selector) reported within the lookback,
    not reporting now while the BMC answers."""
    return (
        f"max_over_time({SEVERITY_HOURLY}{{{selector}}}[${{bmc_lookback}}])\n"
        f"unless {_SENSOR_ON} nodeslo_bmc_sensor_severity\n{_BMC_ANSWERS}"
    )


ALERTS = (
    HealthAlert(
        name="PowerSupplyFailed",
        group="bmc",
        severity=CRITICAL,
        expr="""
nodeslo_bmc_sensor_state{type="power_supply", state=~"${psu_failure_states}"} == 1
unless """
        + _SENSOR_ON
        + """
nodeslo_bmc_sensor_state{type="power_supply", state="presence_detected"} == 0
""",
        for_=60,
        summary="Power supply {{ $labels.sensor }} " + ON + " reports {{ $labels.state }}",
        description="The BMC's status sensor {{ $labels.sensor }} ({{ $labels.entity }}) "
        "asserts {{ $labels.state }} (threshold: failure, predictive failure, input lost or "
        "out of range, configuration error). The server runs on its other supplies: one "
        "more failure and it stops.",
        threshold="a present PSU asserts a failure or input state",
        source=("nodeslo_bmc_sensor_state",),
        held_through_gaps=True,
    ),
    HealthAlert(
        name="PowerRedundancyLost",
        group="bmc",
        severity=CRITICAL,
        expr='nodeslo_bmc_sensor_state{type=~"${power_types}", '
        'state=~"${redundancy_lost_states}"} == 1',
        for_=60,
        labels=(("cause", "redundancy_sensor"),),
        summary="PSU redundancy " + ON + " is lost ({{ $labels.sensor }})",
        description="The BMC's redundancy sensor {{ $labels.sensor }} asserts "
        "{{ $labels.state }} (threshold: redundancy lost or non-redundant): a single "
        "power supply or feed failure now stops the server.",
        threshold="the BMC's redundancy sensor reports lost or non-redundant",
        source=("nodeslo_bmc_sensor_state",),
        held_through_gaps=True,
    ),
    HealthAlert(
        name="PowerRedundancyLost",
        group="bmc",
        severity=CRITICAL,
        expr=f"{HEALTHY_PSUS} < ${{psu_count}}",
        for_=60,
        labels=(("cause", "healthy_psus"),),
        summary="Only {{ $value }} of ${psu_count} power supplies " + ON + " are healthy",
        description="The BMC reports {{ $value }} healthy power supplies; the profile "
        "expects ${psu_count} (health.power.psu_count). The others are failed, absent, or "
        "their status sensor stopped reporting: a single further failure stops the server.",
        threshold="healthy PSUs < health.power.psu_count (${psu_count})",
        source=("nodeslo_bmc_sensor_state", "up"),
        # Reads the count, held through a failed scrape by its recording.
        held_through_gaps=True,
    ),
    HealthAlert(
        name="PowerRedundancyLost",
        group="bmc",
        severity=WARNING,
        expr='nodeslo_bmc_sensor_state{type=~"${power_types}", '
        'state=~"${redundancy_degraded_states}"} == 1',
        for_=300,
        labels=(("cause", "redundancy_degraded"),),
        summary="PSU redundancy " + ON + " is degraded ({{ $labels.sensor }})",
        description="The BMC's redundancy sensor {{ $labels.sensor }} asserts "
        "{{ $labels.state }} (threshold: degraded): fewer spare supplies than configured.",
        threshold="the BMC's redundancy sensor reports degraded",
        source=("nodeslo_bmc_sensor_state",),
        held_through_gaps=True,
    ),
    HealthAlert(
        name="PowerRedundancyLost",
        group="bmc",
        severity=WARNING,
        expr="""
(
  sum by (${by}) (nodeslo_hwmon_power_watts{chip_name=${power_meter}})
  or
  sum by (${by}) (nodeslo_bmc_sensor_value{unit="watts", sensor=~${bmc_input_power}})
)
> ${power_max}
""",
        for_=900,
        labels=(("cause", "power_draw"),),
        summary="Power draw " + ON + " exceeds what one PSU fewer can carry",
        description="The system draws {{ $value | humanize }}W, more than the ${power_max}W "
        "its ${psu_count} PSUs of ${psu_capacity}W can supply with one of them failed "
        "(threshold ${power_max}W): if a PSU fails now, the others cannot carry the load.",
        threshold="system input power (power meter, else the BMC's PSU input power) > "
        "(PSUs - 1) x PSU capacity (${power_max} W)",
        source=("nodeslo_hwmon_power_watts", "nodeslo_bmc_sensor_value"),
        when=lambda p: p.health.power.psu_count >= 2,
        held_through_gaps=True,
    ),
    HealthAlert(
        name="PowerRedundancyLost",
        group="bmc",
        severity=WARNING,
        expr="max by (${by}) (nodeslo_bmc_up) == 1 unless on (${by}) " + HEALTHY_PSUS,
        for_=900,
        labels=(("cause", "no_psu_status"),),
        summary="The BMC " + ON + " reports no power supply status",
        description="The BMC answers but reports no power supply status sensor: PSU "
        "failures and redundancy cannot be seen on this host (threshold: the profile "
        "expects ${psu_count} PSUs).",
        threshold="BMC answering, no PSU status sensor",
        source=("nodeslo_bmc_up", "nodeslo_bmc_sensor_state", "up"),
        held_while_unscraped=True,
    ),
    HealthAlert(
        name="FanFailed",
        group="bmc",
        severity=WARNING,
        expr="""
nodeslo_bmc_sensor_value{type="fan", unit="rpm"}
<= """
        + _SENSOR_ON
        + """ group_left ()
nodeslo_bmc_sensor_threshold{type="fan", level="lower_critical"}
or
(
  nodeslo_bmc_sensor_value{type="fan", unit="rpm"} <= ${fan_min_rpm}
  unless """
        + _SENSOR_ON
        + """ nodeslo_bmc_sensor_threshold{type="fan", level="lower_critical"}
)
""",
        for_=120,
        labels=(("cause", "rpm"),),
        summary="Fan {{ $labels.sensor }} " + ON + " turns at {{ $value }} RPM",
        description="Fan {{ $labels.sensor }} ({{ $labels.entity }}) turns at {{ $value }} "
        "RPM, at or below its lower critical threshold (the BMC's, or "
        "health.bmc.fan_min_rpm ${fan_min_rpm} RPM without one). The remaining fans "
        "speed up; the cooling margin that keeps the CPUs out of throttling is gone.",
        threshold="fan RPM <= lower critical (or ${fan_min_rpm} RPM)",
        source=("nodeslo_bmc_sensor_value", "nodeslo_bmc_sensor_threshold"),
        held_through_gaps=True,
    ),
    HealthAlert(
        name="FanFailed",
        group="bmc",
        severity=WARNING,
        expr="""
nodeslo_bmc_sensor_severity{type="fan"} >= 2
unless """
        + _SENSOR_ON
        + """ nodeslo_bmc_sensor_value{type="fan"}
""",
        for_=120,
        labels=(("cause", "fan_state"),),
        summary="Fan sensor {{ $labels.sensor }} " + ON + " is critical",
        description="The discrete fan sensor {{ $labels.sensor }} ({{ $labels.entity }}) "
        "reports a critical state (a fan fault, fan redundancy lost): see "
        "nodeslo_bmc_sensor_state for which.",
        threshold="a discrete fan sensor at critical",
        source=("nodeslo_bmc_sensor_severity", "nodeslo_bmc_sensor_value", "up"),
        held_while_unscraped=True,
    ),
    HealthAlert(
        name="FanFailed",
        group="bmc",
        severity=WARNING,
        expr=_missing('type="fan"'),
        for_=300,
        labels=(("cause", "missing"),),
        summary="Fan {{ $labels.sensor }} " + ON + " no longer reports",
        description="The BMC reported fan sensor {{ $labels.sensor }} within "
        "${bmc_lookback} and has no reading for it now (unavailable or gone from the "
        "SDR): a removed or dead fan, or a fan whose tachometer failed.",
        threshold="fan reported within ${bmc_lookback}, no reading now",
        source=("nodeslo_bmc_sensor_severity", "nodeslo_bmc_up", "up"),
        held_while_unscraped=True,
    ),
    HealthAlert(
        name="InletTemperatureHigh",
        group="bmc",
        severity=WARNING,
        expr=f"""
{INLET} >= {_SENSOR_ON} group_left ()
nodeslo_bmc_sensor_threshold{{type="temperature", level="upper_non_critical"}}
or
{INLET} >= ${{inlet_warning}}
""",
        for_=300,
        labels=(("cause", "threshold"),),
        summary="Inlet air " + ON + " is at {{ $value }} °C",
        description="{{ $labels.sensor }} reads {{ $value }} °C, at or above its upper "
        "non-critical threshold or the profile's ${inlet_warning} °C "
        "(health.bmc.inlet_warning_celsius). The room or rack cooling is not keeping up: "
        "fans run faster and CPUs lose boost headroom before they throttle.",
        threshold="inlet >= upper non-critical, or >= ${inlet_warning} °C",
        source=("nodeslo_bmc_sensor_value", "nodeslo_bmc_sensor_threshold"),
        held_through_gaps=True,
    ),
    HealthAlert(
        name="InletTemperatureHigh",
        group="bmc",
        severity=CRITICAL,
        expr=f"""
{INLET} >= {_SENSOR_ON} group_left ()
nodeslo_bmc_sensor_threshold{{type="temperature", level="upper_critical"}}
or
(
  {INLET} >= ${{inlet_critical}}
  unless {_SENSOR_ON}
  nodeslo_bmc_sensor_threshold{{type="temperature", level="upper_critical"}}
)
""",
        for_=120,
        labels=(("cause", "threshold"),),
        summary="Inlet air " + ON + " is critical at {{ $value }} °C",
        description="{{ $labels.sensor }} reads {{ $value }} °C, at or above its upper "
        "critical threshold (or ${inlet_critical} °C without one, "
        "health.bmc.inlet_critical_celsius). Throttling and a thermal shutdown are next.",
        threshold="inlet >= upper critical (or ${inlet_critical} °C)",
        source=("nodeslo_bmc_sensor_value", "nodeslo_bmc_sensor_threshold"),
        held_through_gaps=True,
    ),
    HealthAlert(
        name="InletTemperatureHigh",
        group="bmc",
        severity=WARNING,
        expr=_missing('type="temperature", entity=~"${inlet_entities}"')
        + "\nor\n"
        + _missing('type="temperature", sensor=~${inlet_sensors}'),
        for_=300,
        labels=(("cause", "missing"),),
        summary="Inlet temperature {{ $labels.sensor }} " + ON + " no longer reports",
        description="The BMC reported the inlet sensor {{ $labels.sensor }} within "
        "${bmc_lookback} and has no reading for it now: the inlet air is not watched.",
        threshold="inlet sensor reported within ${bmc_lookback}, no reading now",
        source=("nodeslo_bmc_sensor_severity", "nodeslo_bmc_up", "up"),
        held_while_unscraped=True,
    ),
    HealthAlert(
        name="BMCSensorCritical",
        group="bmc",
        severity=CRITICAL,
        expr="""
nodeslo_bmc_sensor_severity{type!~"${own_alert_types}"${bmc_ignored_}} >= 2
unless """
        + _SENSOR_ON
        + " "
        + INLET,
        for_=300,
        labels=(("cause", "severity"),),
        summary="BMC sensor {{ $labels.sensor }} " + ON + " is critical",
        description="{{ $labels.sensor }} ({{ $labels.type }}, {{ $labels.entity }}) has "
        "reached severity {{ $value }} (2 critical, 3 non-recoverable; threshold: 2): the "
        "BMC itself judges it critical. nodeslo_bmc_sensor_state / _value show what it "
        "reads.",
        threshold="a sensor without its own alert at critical or worse",
        source=("nodeslo_bmc_sensor_severity", "nodeslo_bmc_sensor_value"),
        held_through_gaps=True,
    ),
    HealthAlert(
        name="BMCSensorCritical",
        group="bmc",
        severity=CRITICAL,
        expr=f"""
max_over_time(
  {SEVERITY_HOURLY}{{type!~"${{own_alert_types}}"${{bmc_ignored_}}}}[${{bmc_lookback}}]
) >= 2
unless {_SENSOR_ON} nodeslo_bmc_sensor_severity
{_BMC_ANSWERS}
""",
        for_=300,
        labels=(("cause", "missing"),),
        summary="BMC sensor {{ $labels.sensor }} " + ON + " was critical and stopped reporting",
        description="{{ $labels.sensor }} ({{ $labels.type }}) was critical within "
        "${bmc_lookback} and the BMC has no reading for it now: what failed may have "
        "taken its sensor with it.",
        threshold="critical within ${bmc_lookback}, no reading now",
        source=("nodeslo_bmc_sensor_severity", "nodeslo_bmc_up", "up"),
        held_while_unscraped=True,
    ),
    HealthAlert(
        name="BMCUnreachable",
        group="bmc",
        severity=WARNING,
        expr='nodeslo_bmc_up{reason!="absent"} == 0',
        for_="bmc_unreachable_for",
        labels=(("cause", "not_read"),),
        summary="The BMC " + ON + " is not read ({{ $labels.reason }})",
        description="nodeslo cannot read the BMC: {{ $labels.reason }} (timeout: it stopped "
        "answering; error: it answers errors; no_driver: the firmware declares a BMC but "
        "ipmi_si/ipmi_devintf are not loaded; no_helper: the daemon has no privileged "
        "helper). PSU, fan and inlet alerts see only the last values it read.",
        threshold="BMC not read, for ${bmc_unreachable_text}",
        source=("nodeslo_bmc_up",),
        held_through_gaps=True,
    ),
    HealthAlert(
        name="BMCUnreachable",
        group="bmc",
        severity=WARNING,
        expr=f"""
max_over_time({UP_HOURLY}[${{bmc_lookback}}]) == 1
unless on (${{by}}) (max by (${{by}}) (nodeslo_bmc_up) == 1)
and on (${{by}}) ${{up}} == 1
""",
        for_="bmc_unreachable_for",
        labels=(("cause", "gone"),),
        summary="The BMC " + ON + " answered within ${bmc_lookback} and is gone",
        description="This host's BMC was read within ${bmc_lookback}; now the exporter "
        "exports no answering BMC (the bmc collector is off, the IPMI driver was unloaded, "
        "the device vanished). PSU, fan and inlet failures are not seen.",
        threshold="BMC answered within ${bmc_lookback}, not now",
        source=("nodeslo_bmc_up", "up"),
        held_while_unscraped=True,
    ),
)
