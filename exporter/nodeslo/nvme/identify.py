"""Identify Controller (CNS 01h) and Identify UUID List (CNS 17h), 4096 bytes each."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from nodeslo.nvme.layout import Field, Layout, PageError

CNS_CONTROLLER = 0x01
CNS_UUID_LIST = 0x17
SIZE = 4096
# CTRATT bit 9: the controller supports Identify UUID List.
CTRATT_UUID_LIST = 1 << 9
# The OCP Datacenter NVMe SSD specification's UUID, as nvme-cli's OCP plugin looks it up.
OCP_UUID = uuid.UUID("c194d55b-e094-4794-a21d-29998f56be6f")

CONTROLLER_LAYOUT = Layout(
    "Identify Controller (CNS 01h)",
    SIZE,
    (
        Field(0, 2, "pci_vendor_id", "id"),
        Field(2, 2, "pci_subsystem_vendor_id", "id"),
        Field(4, 20, "serial", "ascii"),
        Field(24, 40, "model", "ascii"),
        Field(64, 8, "firmware", "ascii"),
        Field(78, 2, "controller_id", "id"),
        Field(80, 4, "version", "version"),
        Field(96, 4, "controller_attributes", "bitmask"),
        Field(261, 1, "log_page_attributes", "bitmask"),
        Field(266, 2, "warning_temperature_kelvin", "kelvin"),
        Field(268, 2, "critical_temperature_kelvin", "kelvin"),
    ),
)


@dataclass(frozen=True)
class IdentifyController:
    pci_vendor_id: int
    pci_subsystem_vendor_id: int
    serial: str
    model: str
    firmware: str
    controller_id: int
    version: int
    controller_attributes: int
    log_page_attributes: int
    # WCTEMP / CCTEMP; 0 when the controller does not report the threshold.
    warning_temperature_kelvin: int
    critical_temperature_kelvin: int

    @property
    def uuid_list_supported(self) -> bool:
        return bool(self.controller_attributes & CTRATT_UUID_LIST)


CONTROLLER_LAYOUT.check_matches(IdentifyController)


def decode_controller(data: bytes) -> IdentifyController:
    """Decode Identify Controller. PageError unless it is exactly 4096 bytes."""
    return IdentifyController(*CONTROLLER_LAYOUT.values(data))


# UUID List: 32 reserved bytes, then 127 entries of 32 bytes: a header byte
# (bits 1:0 identifier association), 15 reserved bytes, the 16-byte UUID.
UUID_LIST_HEADER = 32
UUID_ENTRY_SIZE = 32
UUID_OFFSET_IN_ENTRY = 16
UUID_LIST_MAX = 127


def decode_uuid_list(data: bytes) -> tuple[uuid.UUID, ...]:
    """The UUIDs of an Identify UUID List, in index order; the first zero entry ends it."""
    if len(data) != SIZE:
        what = "empty" if not data else f"{len(data)} bytes"
        raise PageError(f"Identify UUID List (CNS 17h): {what}, expected exactly {SIZE} bytes")
    out = []
    for i in range(UUID_LIST_MAX):
        start = UUID_LIST_HEADER + i * UUID_ENTRY_SIZE + UUID_OFFSET_IN_ENTRY
        raw = data[start : start + 16]
        if raw == bytes(16):
            break
        out.append(uuid.UUID(bytes=raw))
    return tuple(out)


def ocp_uuid_index(uuids: tuple[uuid.UUID, ...]) -> int:
    """The 1-based UUID index of the OCP UUID for Get Log Page's cdw14; 0 when absent."""
    for index, value in enumerate(uuids, 1):
        if value == OCP_UUID:
            return index
    return 0
