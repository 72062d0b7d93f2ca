"""IPMI v2.0 code tables: sensor types, entities, units, and the states and severity of
discrete readings. Names are snake_case so they can be label values as they are.

Sources: IPMI v2.0 rev 1.1 tables 42-2 (generic event/reading types), 42-3 (sensor
types and sensor-specific offsets), 43-13 (entity IDs), 43-15 (units), checked
against ipmitool's and FreeIPMI's tables.
"""

from __future__ import annotations

from collections.abc import Mapping

# Event/reading type codes (table 42-1).
READING_THRESHOLD = 0x01
READING_SENSOR_SPECIFIC = 0x6F

# Severity of a reading, as `nodeslo_bmc_sensor_severity` exports it.
OK = 0
NON_CRITICAL = 1
CRITICAL = 2
NON_RECOVERABLE = 3

SENSOR_TYPES: tuple[str, ...] = (
    "reserved",  # 00h
    "temperature",
    "voltage",
    "current",
    "fan",
    "physical_security",
    "platform_security",
    "processor",
    "power_supply",  # 08h
    "power_unit",
    "cooling_device",
    "other_units",
    "memory",  # 0Ch
    "drive_slot",
    "post_memory_resize",
    "system_firmware_progress",
    "event_logging_disabled",  # 10h
    "watchdog_1",
    "system_event",
    "critical_interrupt",
    "button_switch",
    "module_board",
    "microcontroller_coprocessor",
    "add_in_card",
    "chassis",  # 18h
    "chip_set",
    "other_fru",
    "cable_interconnect",
    "terminator",
    "system_boot_restart_initiated",
    "boot_error",
    "os_boot",
    "os_stop_shutdown",  # 20h
    "slot_connector",
    "system_acpi_power_state",
    "watchdog_2",
    "platform_alert",
    "entity_presence",
    "monitor_asic_ic",
    "lan",
    "management_subsystem_health",  # 28h
    "battery",
    "session_audit",
    "version_change",
    "fru_state",  # 2Ch
)

ENTITIES: Mapping[int, str] = {
    0x00: "unspecified",
    0x01: "other",
    0x02: "unknown",
    0x03: "processor",
    0x04: "disk_or_disk_bay",
    0x05: "peripheral_bay",
    0x06: "system_management_module",
    0x07: "system_board",
    0x08: "memory_module",
    0x09: "processor_module",
    0x0A: "power_supply",
    0x0B: "add_in_card",
    0x0C: "front_panel_board",
    0x0D: "back_panel_board",
    0x0E: "power_system_board",
    0x0F: "drive_backplane",
    0x10: "system_internal_expansion_board",
    0x11: "other_system_board",
    0x12: "processor_board",
    0x13: "power_unit",
    0x14: "power_module",
    0x15: "power_management",
    0x16: "chassis_back_panel_board",
    0x17: "system_chassis",
    0x18: "sub_chassis",
    0x19: "other_chassis_board",
    0x1A: "disk_drive_bay",
    0x1B: "peripheral_bay",
    0x1C: "device_bay",
    0x1D: "fan_device",
    0x1E: "cooling_unit",
    0x1F: "cable_interconnect",
    0x20: "memory_device",
    0x21: "system_management_software",
    0x22: "bios",
    0x23: "operating_system",
    0x24: "system_bus",
    0x25: "group",
    0x26: "remote_management_device",
    0x27: "external_environment",
    0x28: "battery",
    0x29: "processing_blade",
    0x2A: "connectivity_switch",
    0x2B: "processor_memory_module",
    0x2C: "io_module",
    0x2D: "processor_io_module",
    0x2E: "management_controller_firmware",
    0x2F: "ipmi_channel",
    0x30: "pci_bus",
    0x31: "pci_express_bus",
    0x32: "scsi_bus",
    0x33: "sata_sas_bus",
    0x34: "processor_front_side_bus",
    0x35: "real_time_clock",
    0x37: "air_inlet",
    # DCMI's entity IDs for the same three things.
    0x40: "air_inlet",
    0x41: "processor",
    0x42: "system_board",
}

# Base units (table 43-15) -> (label value, factor, offset) into Prometheus base units.
# Units without a base-unit conversion keep their IPMI name and factor 1.
UNITS: Mapping[int, tuple[str, float, float]] = {
    0: ("unspecified", 1.0, 0.0),
    1: ("celsius", 1.0, 0.0),
    2: ("celsius", 5 / 9, -32 * 5 / 9),  # degrees F
    3: ("celsius", 1.0, -273.15),  # kelvin
    4: ("volts", 1.0, 0.0),
    5: ("amperes", 1.0, 0.0),
    6: ("watts", 1.0, 0.0),
    7: ("joules", 1.0, 0.0),
    8: ("coulombs", 1.0, 0.0),
    9: ("volt_amperes", 1.0, 0.0),
    10: ("nits", 1.0, 0.0),
    11: ("lumens", 1.0, 0.0),
    12: ("lux", 1.0, 0.0),
    13: ("candelas", 1.0, 0.0),
    14: ("pascals", 1000.0, 0.0),  # kPa
    15: ("pascals", 6894.757, 0.0),  # PSI
    16: ("newtons", 1.0, 0.0),
    17: ("cubic_meters_per_second", 0.00047194745, 0.0),  # CFM
    18: ("rpm", 1.0, 0.0),
    19: ("hertz", 1.0, 0.0),
    20: ("seconds", 1e-6, 0.0),
    21: ("seconds", 1e-3, 0.0),
    22: ("seconds", 1.0, 0.0),
    23: ("seconds", 60.0, 0.0),
    24: ("seconds", 3600.0, 0.0),
    25: ("seconds", 86400.0, 0.0),
    26: ("seconds", 604800.0, 0.0),
    27: ("meters", 25.4e-6, 0.0),  # mil
    28: ("meters", 0.0254, 0.0),
    29: ("meters", 0.3048, 0.0),
    30: ("cubic_meters", 16.387064e-6, 0.0),
    31: ("cubic_meters", 0.028316846592, 0.0),
    32: ("meters", 0.001, 0.0),
    33: ("meters", 0.01, 0.0),
    34: ("meters", 1.0, 0.0),
    35: ("cubic_meters", 1e-6, 0.0),
    36: ("cubic_meters", 1.0, 0.0),
    37: ("cubic_meters", 0.001, 0.0),  # liters
    38: ("fluid_ounces", 1.0, 0.0),
    39: ("radians", 1.0, 0.0),
    40: ("steradians", 1.0, 0.0),
    41: ("revolutions", 1.0, 0.0),
    42: ("cycles", 1.0, 0.0),
    43: ("gravities", 1.0, 0.0),
    44: ("ounces", 1.0, 0.0),
    45: ("pounds", 1.0, 0.0),
    46: ("foot_pounds", 1.0, 0.0),
    47: ("ounce_inches", 1.0, 0.0),
    48: ("gauss", 1.0, 0.0),
    49: ("gilberts", 1.0, 0.0),
    50: ("henries", 1.0, 0.0),
    51: ("henries", 1e-3, 0.0),
    52: ("farads", 1.0, 0.0),
    53: ("farads", 1e-6, 0.0),
    54: ("ohms", 1.0, 0.0),
    55: ("siemens", 1.0, 0.0),
    56: ("moles", 1.0, 0.0),
    57: ("becquerels", 1.0, 0.0),
    58: ("ppm", 1.0, 0.0),
    60: ("decibels", 1.0, 0.0),
    61: ("dba", 1.0, 0.0),
    62: ("dbc", 1.0, 0.0),
    63: ("grays", 1.0, 0.0),
    64: ("sieverts", 1.0, 0.0),
    65: ("kelvin_color_temperature", 1.0, 0.0),
    66: ("bits", 1.0, 0.0),
    67: ("bits", 1e3, 0.0),
    68: ("bits", 1e6, 0.0),
    69: ("bits", 1e9, 0.0),
    70: ("bytes", 1.0, 0.0),
    71: ("bytes", 1e3, 0.0),
    72: ("bytes", 1e6, 0.0),
    73: ("bytes", 1e9, 0.0),
    74: ("words", 1.0, 0.0),
    75: ("dwords", 1.0, 0.0),
    76: ("qwords", 1.0, 0.0),
    77: ("lines", 1.0, 0.0),
    78: ("hits", 1.0, 0.0),
    79: ("misses", 1.0, 0.0),
    80: ("retries", 1.0, 0.0),
    81: ("resets", 1.0, 0.0),
    82: ("overruns", 1.0, 0.0),
    83: ("underruns", 1.0, 0.0),
    84: ("collisions", 1.0, 0.0),
    85: ("packets", 1.0, 0.0),
    86: ("messages", 1.0, 0.0),
    87: ("characters", 1.0, 0.0),
    88: ("errors", 1.0, 0.0),
    89: ("correctable_errors", 1.0, 0.0),
    90: ("uncorrectable_errors", 1.0, 0.0),
    91: ("fatal_errors", 1.0, 0.0),
    92: ("grams", 1.0, 0.0),
}

# Sensor units 1, bits 5:3: a rate the base unit is divided by.
RATE_UNITS: tuple[str, ...] = ("", "microsecond", "millisecond", "second", "minute", "hour", "day")


def _names(*names: str) -> dict[int, str]:
    return dict(enumerate(names))


# Generic discrete reading types (table 42-2): offset -> state name.
GENERIC_STATES: Mapping[int, Mapping[int, str]] = {
    0x02: _names("transition_to_idle", "transition_to_active", "transition_to_busy"),
    0x03: _names("state_deasserted", "state_asserted"),
    0x04: _names("predictive_failure_deasserted", "predictive_failure_asserted"),
    0x05: _names("limit_not_exceeded", "limit_exceeded"),
    0x06: _names("performance_met", "performance_lags"),
    0x07: _names(
        "transition_to_ok",
        "transition_to_non_critical_from_ok",
        "transition_to_critical_from_less_severe",
        "transition_to_non_recoverable_from_less_severe",
        "transition_to_non_critical_from_more_severe",
        "transition_to_critical_from_non_recoverable",
        "transition_to_non_recoverable",
        "monitor",
        "informational",
    ),
    0x08: _names("device_absent", "device_present"),
    0x09: _names("device_disabled", "device_enabled"),
    0x0A: _names(
        "transition_to_running",
        "transition_to_in_test",
        "transition_to_power_off",
        "transition_to_on_line",
        "transition_to_off_line",
        "transition_to_off_duty",
        "transition_to_degraded",
        "transition_to_power_save",
        "install_error",
    ),
    0x0B: _names(
        "fully_redundant",
        "redundancy_lost",
        "redundancy_degraded",
        "non_redundant_sufficient_from_redundant",
        "non_redundant_sufficient_from_insufficient",
        "non_redundant_insufficient",
        "redundancy_degraded_from_fully_redundant",
        "redundancy_degraded_from_non_redundant",
    ),
    0x0C: _names("d0_power_state", "d1_power_state", "d2_power_state", "d3_power_state"),
}

# Sensor-specific offsets (reading type 6Fh, table 42-3): sensor type -> offset -> state.
SENSOR_SPECIFIC_STATES: Mapping[int, Mapping[int, str]] = {
    0x05: _names(
        "general_chassis_intrusion",
        "drive_bay_intrusion",
        "io_card_area_intrusion",
        "processor_area_intrusion",
        "lan_leash_lost",
        "unauthorized_dock",
        "fan_area_intrusion",
    ),
    0x06: _names(
        "secure_mode_violation_attempt",
        "pre_boot_password_violation_user",
        "pre_boot_password_violation_setup",
        "pre_boot_password_violation_network_boot",
        "pre_boot_password_violation_other",
        "out_of_band_access_password_violation",
    ),
    0x07: _names(
        "ierr",
        "thermal_trip",
        "frb1_bist_failure",
        "frb2_hang_in_post",
        "frb3_startup_failure",
        "configuration_error",
        "uncorrectable_cpu_complex_error",
        "presence_detected",
        "disabled",
        "terminator_presence_detected",
        "throttled",
        "machine_check_exception",
        "correctable_machine_check_error",
    ),
    0x08: _names(
        "presence_detected",
        "failure_detected",
        "predictive_failure",
        "input_lost",
        "input_lost_or_out_of_range",
        "input_out_of_range",
        "configuration_error",
        "inactive",
    ),
    0x09: _names(
        "power_off",
        "power_cycle",
        "power_down_240va",
        "interlock_power_down",
        "input_lost",
        "soft_power_control_failure",
        "failure_detected",
        "predictive_failure",
    ),
    0x0C: _names(
        "correctable_ecc",
        "uncorrectable_ecc",
        "parity",
        "memory_scrub_failed",
        "memory_device_disabled",
        "correctable_ecc_logging_limit_reached",
        "presence_detected",
        "configuration_error",
        "spare",
        "throttled",
        "critical_overtemperature",
    ),
    0x0D: _names(
        "presence_detected",
        "drive_fault",
        "predictive_failure",
        "hot_spare",
        "consistency_check_in_progress",
        "in_critical_array",
        "in_failed_array",
        "rebuild_in_progress",
        "rebuild_aborted",
    ),
    0x0F: _names("system_firmware_error", "system_firmware_hang", "system_firmware_progress"),
    0x10: _names(
        "correctable_memory_error_logging_disabled",
        "event_type_logging_disabled",
        "log_area_reset",
        "all_event_logging_disabled",
        "sel_full",
        "sel_almost_full",
        "correctable_machine_check_error_logging_disabled",
    ),
    0x11: _names(
        "bios_watchdog_reset",
        "os_watchdog_reset",
        "os_watchdog_shut_down",
        "os_watchdog_power_down",
        "os_watchdog_power_cycle",
        "os_watchdog_nmi",
        "os_watchdog_expired",
        "os_watchdog_pre_timeout_interrupt",
    ),
    0x12: _names(
        "system_reconfigured",
        "oem_system_boot_event",
        "undetermined_system_hardware_failure",
        "entry_added_to_auxiliary_log",
        "pef_action",
        "timestamp_clock_synch",
    ),
    0x13: _names(
        "front_panel_nmi",
        "bus_timeout",
        "io_channel_check_nmi",
        "software_nmi",
        "pci_perr",
        "pci_serr",
        "eisa_failsafe_timeout",
        "bus_correctable_error",
        "bus_uncorrectable_error",
        "fatal_nmi",
        "bus_fatal_error",
        "bus_degraded",
    ),
    0x14: _names(
        "power_button_pressed",
        "sleep_button_pressed",
        "reset_button_pressed",
        "fru_latch_open",
        "fru_service_request",
    ),
    0x19: _names("soft_power_control_failure", "thermal_trip"),
    0x1B: _names("connected", "configuration_error"),
    0x1D: _names(
        "power_up",
        "hard_reset",
        "warm_reset",
        "user_requested_pxe_boot",
        "automatic_boot_to_diagnostic",
        "os_initiated_hard_reset",
        "os_initiated_warm_reset",
        "system_restart",
    ),
    0x1E: _names(
        "no_bootable_media",
        "non_bootable_diskette",
        "pxe_server_not_found",
        "invalid_boot_sector",
        "boot_source_selection_timeout",
    ),
    0x20: _names(
        "critical_stop_during_os_load",
        "run_time_critical_stop",
        "os_graceful_stop",
        "os_graceful_shutdown",
        "pef_soft_shutdown",
        "agent_not_responding",
    ),
    0x21: _names(
        "fault_status",
        "identify_status",
        "device_installed",
        "ready_for_device_installation",
        "ready_for_device_removal",
        "slot_power_off",
        "device_removal_request",
        "interlock_asserted",
        "slot_disabled",
        "spare_device",
    ),
    0x23: {
        0: "timer_expired",
        1: "hard_reset",
        2: "power_down",
        3: "power_cycle",
        8: "timer_interrupt",
    },
    0x25: _names("entity_present", "entity_absent", "entity_disabled"),
    0x27: _names("lan_heartbeat_lost", "lan_heartbeat"),
    0x28: _names(
        "sensor_access_degraded",
        "controller_access_degraded",
        "controller_offline",
        "controller_unavailable",
        "sensor_failure",
        "fru_failure",
    ),
    0x29: _names("battery_low", "battery_failed", "battery_presence_detected"),
    0x2C: _names(
        "fru_not_installed",
        "fru_inactive",
        "fru_activation_requested",
        "fru_activation_in_progress",
        "fru_active",
        "fru_deactivation_requested",
        "fru_deactivation_in_progress",
        "fru_communication_lost",
    ),
}

# Threshold event offsets (table 42-2, reading type 01h), as SEL entries carry them.
THRESHOLD_EVENTS: tuple[str, ...] = (
    "lower_non_critical_going_low",
    "lower_non_critical_going_high",
    "lower_critical_going_low",
    "lower_critical_going_high",
    "lower_non_recoverable_going_low",
    "lower_non_recoverable_going_high",
    "upper_non_critical_going_low",
    "upper_non_critical_going_high",
    "upper_critical_going_low",
    "upper_critical_going_high",
    "upper_non_recoverable_going_low",
    "upper_non_recoverable_going_high",
)

# What an asserted state means for the equipment. Unlisted states are informational.
GENERIC_SEVERITY: Mapping[int, Mapping[int, int]] = {
    0x04: {1: NON_CRITICAL},
    0x05: {1: NON_CRITICAL},
    0x06: {1: NON_CRITICAL},
    0x07: {
        1: NON_CRITICAL,
        2: CRITICAL,
        3: NON_RECOVERABLE,
        4: NON_CRITICAL,
        5: CRITICAL,
        6: NON_RECOVERABLE,
    },
    0x0A: {6: NON_CRITICAL, 8: NON_CRITICAL},
    0x0B: {
        1: CRITICAL,
        2: NON_CRITICAL,
        3: NON_CRITICAL,
        4: NON_CRITICAL,
        5: CRITICAL,
        6: NON_CRITICAL,
        7: NON_CRITICAL,
    },
}
SENSOR_SPECIFIC_SEVERITY: Mapping[int, Mapping[int, int]] = {
    0x05: {i: NON_CRITICAL for i in range(7)},
    0x07: {
        0: CRITICAL,
        1: CRITICAL,
        2: CRITICAL,
        3: CRITICAL,
        4: CRITICAL,
        5: NON_CRITICAL,
        6: CRITICAL,
        8: NON_CRITICAL,
        10: NON_CRITICAL,
        11: CRITICAL,
        12: NON_CRITICAL,
    },
    0x08: {
        1: CRITICAL,
        2: NON_CRITICAL,
        3: CRITICAL,
        4: CRITICAL,
        5: NON_CRITICAL,
        6: CRITICAL,
    },
    0x09: {4: CRITICAL, 5: NON_CRITICAL, 6: CRITICAL, 7: NON_CRITICAL},
    0x0C: {
        1: CRITICAL,
        2: CRITICAL,
        3: NON_CRITICAL,
        4: NON_CRITICAL,
        5: NON_CRITICAL,
        7: NON_CRITICAL,
        9: NON_CRITICAL,
        10: CRITICAL,
    },
    0x0D: {1: CRITICAL, 2: NON_CRITICAL, 5: NON_CRITICAL, 6: CRITICAL, 8: NON_CRITICAL},
    0x0F: {0: NON_CRITICAL, 1: CRITICAL},
    0x10: {4: NON_CRITICAL, 5: NON_CRITICAL},
    0x13: {
        1: NON_CRITICAL,
        2: CRITICAL,
        4: CRITICAL,
        5: CRITICAL,
        7: NON_CRITICAL,
        8: CRITICAL,
        9: CRITICAL,
        10: CRITICAL,
        11: NON_CRITICAL,
    },
    0x19: {0: NON_CRITICAL, 1: CRITICAL},
    0x1B: {1: NON_CRITICAL},
    0x20: {0: CRITICAL, 1: CRITICAL},
    0x21: {0: NON_CRITICAL},
    0x28: {i: NON_CRITICAL for i in range(6)},
    0x29: {0: NON_CRITICAL, 1: CRITICAL},
    0x2C: {7: NON_CRITICAL},
}


def sensor_type_name(code: int) -> str:
    if code < len(SENSOR_TYPES):
        return SENSOR_TYPES[code]
    return "oem" if code >= 0xC0 else f"type_{code:02x}"


def entity_name(entity_id: int, instance: int) -> str:
    """`power_supply.1`: the entity, and its instance without the logical/physical bit."""
    name = ENTITIES.get(entity_id)
    if name is None:
        name = f"oem_{entity_id:02x}" if entity_id >= 0x90 else f"entity_{entity_id:02x}"
    return f"{name}.{instance & 0x7F}"


def state_names(reading_type: int, sensor_type: int) -> Mapping[int, str]:
    """Offset -> state name for a discrete sensor; empty for OEM or unknown codes."""
    if reading_type == READING_SENSOR_SPECIFIC:
        return SENSOR_SPECIFIC_STATES.get(sensor_type, {})
    return GENERIC_STATES.get(reading_type, {})


def state_name(reading_type: int, sensor_type: int, offset: int) -> str:
    if reading_type == READING_THRESHOLD:
        return THRESHOLD_EVENTS[offset] if offset < len(THRESHOLD_EVENTS) else f"state_{offset}"
    return state_names(reading_type, sensor_type).get(offset, f"state_{offset}")


def state_severity(reading_type: int, sensor_type: int, offset: int) -> int:
    if reading_type == READING_SENSOR_SPECIFIC:
        return SENSOR_SPECIFIC_SEVERITY.get(sensor_type, {}).get(offset, OK)
    return GENERIC_SEVERITY.get(reading_type, {}).get(offset, OK)


# IANA enterprise numbers of BMC manufacturers (ipmitool's table and IANA's registry).
MANUFACTURERS: Mapping[int, str] = {
    2: "IBM",
    11: "HP",
    42: "Sun",
    343: "Intel",
    674: "Dell",
    4753: "MontaVista",
    4769: "IBM",
    7244: "Quanta",
    10368: "Fujitsu",
    10876: "Supermicro",
    11129: "Google",
    19046: "Lenovo",
    20301: "IBM",
    20974: "AMI",
    47196: "HPE",
    47488: "Supermicro",
}
