"""SMART / Health Information log page (LID 02h), NVMe Base Specification.

512 bytes, little-endian; counters at offsets 32-191 are 128 bits wide. Values are
kept in the specification's units (kelvin, data units, minutes, hours); the collector
converts them to base units.
"""

from __future__ import annotations

from dataclasses import dataclass

from nodeslo.nvme.layout import Field, Layout

LID = 0x02
SIZE = 512
# One data unit is 1000 512-byte units (NVMe Base Specification, SMART log bytes 47:32).
DATA_UNIT_BYTES = 512_000
SENSORS = 8

LAYOUT = Layout(
    "SMART / Health log (02h)",
    SIZE,
    (
        Field(0, 1, "critical_warning", "bitmask"),
        Field(1, 2, "composite_temperature_kelvin", "kelvin"),
        Field(3, 1, "available_spare_percent", "percent"),
        Field(4, 1, "available_spare_threshold_percent", "percent"),
        Field(5, 1, "percentage_used", "percent"),
        Field(6, 1, "endurance_group_critical_warning", "bitmask"),
        Field(32, 16, "data_units_read", "data_units"),
        Field(48, 16, "data_units_written", "data_units"),
        Field(64, 16, "host_read_commands", "count"),
        Field(80, 16, "host_write_commands", "count"),
        Field(96, 16, "controller_busy_minutes", "minutes"),
        Field(112, 16, "power_cycles", "count"),
        Field(128, 16, "power_on_hours", "hours"),
        Field(144, 16, "unsafe_shutdowns", "count"),
        Field(160, 16, "media_errors", "count"),
        Field(176, 16, "error_log_entries", "count"),
        Field(192, 4, "warning_temperature_minutes", "minutes"),
        Field(196, 4, "critical_temperature_minutes", "minutes"),
        Field(200, 2, "temperature_sensors_kelvin", "kelvin", count=SENSORS),
        Field(216, 4, "thermal_management_temp1_transitions", "count"),
        Field(220, 4, "thermal_management_temp2_transitions", "count"),
        Field(224, 4, "thermal_management_temp1_seconds", "seconds"),
        Field(228, 4, "thermal_management_temp2_seconds", "seconds"),
    ),
)

# Critical warning bits (byte 0), named as the metric's `flag` label values.
CRITICAL_WARNING_FLAGS: tuple[tuple[int, str], ...] = (
    (0, "spare"),  # available spare below threshold
    (1, "temperature"),  # composite temperature over/under a threshold
    (2, "reliability"),  # NVM subsystem reliability degraded
    (3, "read_only"),  # media placed in read-only mode
    (4, "volatile_backup"),  # volatile memory backup device failed
    (5, "pmr_read_only"),  # persistent memory region became read-only
)


@dataclass(frozen=True)
class SmartLog:
    critical_warning: int
    composite_temperature_kelvin: int
    available_spare_percent: int
    available_spare_threshold_percent: int
    # May exceed 100 (the drive outlived its rated endurance); the drive caps it at 255.
    percentage_used: int
    endurance_group_critical_warning: int
    data_units_read: int
    data_units_written: int
    host_read_commands: int
    host_write_commands: int
    controller_busy_minutes: int
    power_cycles: int
    power_on_hours: int
    unsafe_shutdowns: int
    media_errors: int
    error_log_entries: int
    warning_temperature_minutes: int
    critical_temperature_minutes: int
    # Sensors 1-8 in kelvin; 0 means the sensor is not implemented.
    temperature_sensors_kelvin: tuple[int, ...]
    thermal_management_temp1_transitions: int
    thermal_management_temp2_transitions: int
    thermal_management_temp1_seconds: int
    thermal_management_temp2_seconds: int

    def warning_flags(self) -> dict[str, bool]:
        return {
            name: bool(self.critical_warning >> bit & 1) for bit, name in CRITICAL_WARNING_FLAGS
        }


LAYOUT.check_matches(SmartLog)


def decode(data: bytes) -> SmartLog:
    """Decode a SMART / Health page. PageError unless it is exactly 512 bytes."""
    return SmartLog(*LAYOUT.values(data))
