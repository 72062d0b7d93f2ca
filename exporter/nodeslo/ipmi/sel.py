"""The System Event Log: Get SEL Info (0Ah/40h) and its 16-byte entries (0Ah/43h).

A system event record (type 02h) names the sensor type, the direction (assertion or
deassertion) and, in event data 1 bits 3:0, the offset of the state that changed.
OEM records (C0h-FFh) are counted as such: their contents are the vendor's.
"""

from __future__ import annotations

from dataclasses import dataclass

from nodeslo.ipmi import codes
from nodeslo.ipmi.layout import DecodeError, Field, Layout

ENTRY_SIZE = 16
FIRST_ENTRY = 0x0000
LAST_ENTRY = 0xFFFF  # as "next record ID": there is none after this one
SYSTEM_EVENT = 0x02

INFO = Layout(
    "Get SEL Info response",
    14,
    (
        Field(0, 1, "version", "bcd"),
        Field(1, 2, "entries", "count"),
        Field(3, 2, "free_bytes", "bytes"),
        Field(5, 4, "addition_timestamp", "seconds"),
        Field(9, 4, "erase_timestamp", "seconds"),
        Field(13, 1, "operations", "bitmask"),  # bit 7: overflow (events were dropped)
    ),
)


@dataclass(frozen=True)
class SelInfo:
    version: int
    entries: int
    free_bytes: int
    addition_timestamp: int
    erase_timestamp: int
    operations: int


INFO.check_matches(SelInfo)


def decode_info(data: bytes) -> SelInfo:
    if len(data) < INFO.size:
        raise DecodeError(f"{INFO.name}: {len(data)} bytes, expected 14")
    return SelInfo(*INFO.values(data[: INFO.size]))


ENTRY = Layout(
    "SEL system event record (02h)",
    ENTRY_SIZE,
    (
        Field(0, 2, "record_id", "id"),
        Field(2, 1, "record_type", "code"),
        Field(3, 4, "timestamp", "seconds"),
        Field(7, 2, "generator_id", "id"),
        Field(9, 1, "evm_revision", "code"),
        Field(10, 1, "sensor_type", "code"),
        Field(11, 1, "sensor_number", "id"),
        Field(12, 1, "direction_type", "bitmask"),  # bit 7 deassertion, 6:0 reading type
        Field(13, 1, "event_data1", "bitmask"),  # 3:0 offset of the state
        Field(14, 1, "event_data2", "raw_reading"),
        Field(15, 1, "event_data3", "raw_reading"),
    ),
)


@dataclass(frozen=True)
class SelEntry:
    record_id: int
    record_type: int
    timestamp: int
    generator_id: int
    evm_revision: int
    sensor_type: int
    sensor_number: int
    direction_type: int
    event_data1: int
    event_data2: int
    event_data3: int

    @property
    def is_system_event(self) -> bool:
        return self.record_type == SYSTEM_EVENT

    @property
    def type_name(self) -> str:
        return codes.sensor_type_name(self.sensor_type) if self.is_system_event else "oem"

    @property
    def direction(self) -> str:
        if not self.is_system_event:
            return "none"
        return "deassertion" if self.direction_type & 0x80 else "assertion"

    @property
    def state(self) -> str:
        if not self.is_system_event:
            return f"record_{self.record_type:02x}"
        reading_type = self.direction_type & 0x7F
        return codes.state_name(reading_type, self.sensor_type, self.event_data1 & 0x0F)


ENTRY.check_matches(SelEntry)


def decode_entry(data: bytes) -> SelEntry:
    """An entry of any record type; fields past the record type mean nothing for OEM ones."""
    if len(data) < ENTRY_SIZE:
        raise DecodeError(f"{ENTRY.name}: {len(data)} bytes, expected 16")
    return SelEntry(*ENTRY.values(data[:ENTRY_SIZE]))
