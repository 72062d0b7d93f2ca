"""Get Device ID (App 01h) and Get Chassis Status (Chassis 01h) responses, decoded.

Responses here and in the sibling modules are the bytes after the completion code.
"""

from __future__ import annotations

from dataclasses import dataclass

from nodeslo.ipmi import codes
from nodeslo.ipmi.layout import DecodeError, Field, Layout

# IPMI v2.0 table 20-2; the 4 auxiliary firmware bytes that may follow are not used.
DEVICE_ID = Layout(
    "Get Device ID response",
    11,
    (
        Field(0, 1, "device_id", "id"),
        Field(1, 1, "device_revision", "bitmask"),  # bit 7: provides device SDRs
        Field(2, 1, "firmware_major", "bitmask"),  # bits 6:0 binary; bit 7: update in progress
        Field(3, 1, "firmware_minor", "bcd"),
        Field(4, 1, "ipmi_version", "bcd"),  # bits 3:0 major, 7:4 minor
        Field(5, 1, "additional_support", "bitmask"),
        Field(6, 3, "manufacturer_id", "id"),  # IANA enterprise number, 20 bits
        Field(9, 2, "product_id", "id"),
    ),
)
# Additional device support (byte 5): what the controller implements.
SUPPORTS_SDR_REPOSITORY = 0x02
SUPPORTS_SEL = 0x04


@dataclass(frozen=True)
class DeviceId:
    device_id: int
    device_revision: int
    firmware_major: int
    firmware_minor: int
    ipmi_version: int
    additional_support: int
    manufacturer_id: int
    product_id: int

    @property
    def firmware(self) -> str:
        """As ipmitool prints it: major in binary, minor in BCD ("9.08")."""
        return f"{self.firmware_major & 0x7F}.{self.firmware_minor:02x}"

    @property
    def ipmi(self) -> str:
        return f"{self.ipmi_version & 0x0F}.{self.ipmi_version >> 4}"

    @property
    def manufacturer(self) -> str:
        manufacturer_id = self.manufacturer_id & 0xFFFFF
        return codes.MANUFACTURERS.get(manufacturer_id, str(manufacturer_id))

    @property
    def product(self) -> str:
        return f"{self.product_id:#06x}"

    @property
    def has_sdr_repository(self) -> bool:
        return bool(self.additional_support & SUPPORTS_SDR_REPOSITORY)

    @property
    def has_sel(self) -> bool:
        return bool(self.additional_support & SUPPORTS_SEL)


DEVICE_ID.check_matches(DeviceId)


def decode_device_id(data: bytes) -> DeviceId:
    if len(data) < DEVICE_ID.size:
        raise DecodeError(f"{DEVICE_ID.name}: {len(data)} bytes, expected at least 11")
    return DeviceId(*DEVICE_ID.values(data[: DEVICE_ID.size]))


# IPMI v2.0 table 28-3: three state bytes (a fourth, front panel buttons, is optional).
CHASSIS_STATUS = Layout(
    "Get Chassis Status response",
    3,
    (
        Field(0, 1, "power_state", "bitmask"),
        Field(1, 1, "last_power_event", "bitmask"),
        Field(2, 1, "misc_state", "bitmask"),
    ),
)
# flag -> (byte, bit): the conditions an operator acts on.
CHASSIS_FLAGS: tuple[tuple[str, str, int], ...] = (
    ("power_on", "power_state", 0),
    ("power_overload", "power_state", 1),
    ("power_interlock", "power_state", 2),
    ("power_fault", "power_state", 3),
    ("power_control_fault", "power_state", 4),
    ("intrusion", "misc_state", 0),
    ("front_panel_lockout", "misc_state", 1),
    ("drive_fault", "misc_state", 2),
    ("cooling_fault", "misc_state", 3),
)


@dataclass(frozen=True)
class ChassisStatus:
    power_state: int
    last_power_event: int
    misc_state: int

    def flags(self) -> tuple[tuple[str, bool], ...]:
        return tuple(
            (flag, bool(getattr(self, byte) >> bit & 1)) for flag, byte, bit in CHASSIS_FLAGS
        )


CHASSIS_STATUS.check_matches(ChassisStatus)


def decode_chassis_status(data: bytes) -> ChassisStatus:
    if len(data) < CHASSIS_STATUS.size:
        raise DecodeError(f"{CHASSIS_STATUS.name}: {len(data)} bytes, expected at least 3")
    return ChassisStatus(*CHASSIS_STATUS.values(data[: CHASSIS_STATUS.size]))
