"""Get Sensor Reading (04h/2Dh) and Get Sensor Thresholds (04h/27h) responses, and what a
reading means once its record is known: a value in base units, the thresholds it is
compared with, the discrete states asserted, and the severity reached.
"""

from __future__ import annotations

from dataclasses import dataclass

from nodeslo.ipmi import codes
from nodeslo.ipmi.layout import DecodeError
from nodeslo.ipmi.sdr import LEVELS, SensorRecord

# Reading byte 2 (IPMI v2.0 table 35-15).
EVENTS_ENABLED = 0x80
SCANNING_ENABLED = 0x40
READING_UNAVAILABLE = 0x20
# Threshold comparison status (byte 3, threshold sensors): bit per LEVELS entry, set when
# the reading is at or below a lower / at or above an upper threshold.
_LEVEL_SEVERITY = (
    codes.NON_CRITICAL,
    codes.CRITICAL,
    codes.NON_RECOVERABLE,
    codes.NON_CRITICAL,
    codes.CRITICAL,
    codes.NON_RECOVERABLE,
)


@dataclass(frozen=True)
class Reading:
    raw: int
    flags: int
    states: int  # discrete: bits 14:0 asserted; threshold: comparison status bits 5:0

    @property
    def available(self) -> bool:
        """False while the BMC has no reading: unavailable, or scanning disabled."""
        return bool(self.flags & SCANNING_ENABLED) and not self.flags & READING_UNAVAILABLE


def decode_reading(data: bytes) -> Reading:
    """Bytes after the completion code. The state bytes are optional in the specification
    (a BMC may stop after byte 2, or after byte 3): absent ones read as no state."""
    if len(data) < 2:
        raise DecodeError(f"Get Sensor Reading response: {len(data)} bytes, expected ≥2")
    states = data[2] if len(data) > 2 else 0
    if len(data) > 3:
        states |= (data[3] & 0x7F) << 8
    return Reading(raw=data[0], flags=data[1], states=states)


@dataclass(frozen=True)
class Thresholds:
    readable: int  # LEVELS bit mask
    raw: tuple[int | None, ...]  # by LEVELS; None where not readable


def decode_thresholds(data: bytes) -> Thresholds:
    """Readable mask, then lower NC, C, NR, upper NC, C, NR (raw, the record's scale)."""
    if len(data) < 7:
        raise DecodeError(f"Get Sensor Thresholds response: {len(data)} bytes, expected 7")
    readable = data[0] & 0x3F
    raw = tuple(data[1 + i] if readable >> i & 1 else None for i in range(len(LEVELS)))
    return Thresholds(readable, raw)


@dataclass(frozen=True)
class SensorState:
    """One sensor as the collector exports it."""

    record: SensorRecord
    value: float | None  # base units; None for discrete sensors or no reading
    thresholds: tuple[tuple[str, float], ...]  # (level, base units)
    states: tuple[tuple[str, bool], ...]  # discrete: (state, asserted)
    severity: int | None  # None while the reading is unavailable
    available: bool


def threshold_values(
    record: SensorRecord, raw: tuple[int | None, ...]
) -> tuple[tuple[str, float], ...]:
    out = []
    for level, value in zip(LEVELS, raw, strict=True):
        if value is None:
            continue
        converted = record.value(value)
        if converted is not None:
            out.append((level, converted))
    return tuple(out)


def evaluate(
    record: SensorRecord, reading: Reading, thresholds: tuple[tuple[str, float], ...]
) -> SensorState:
    """What `reading` of `record` means. `thresholds` are the converted live ones (Get
    Sensor Thresholds) or, failing those, the record's."""
    if not reading.available:
        return SensorState(record, None, thresholds, (), None, False)
    if record.is_threshold:
        severity = max(
            (_LEVEL_SEVERITY[i] for i in range(len(LEVELS)) if reading.states >> i & 1),
            default=codes.OK,
        )
        return SensorState(record, record.value(reading.raw), thresholds, (), severity, True)
    names = codes.state_names(record.reading_type, record.sensor_type)
    offsets = record.discrete_states | reading.states
    states = []
    severity = codes.OK
    for offset in range(15):
        if not offsets >> offset & 1:
            continue
        asserted = bool(reading.states >> offset & 1)
        states.append((names.get(offset, f"state_{offset}"), asserted))
        if asserted:
            severity = max(
                severity, codes.state_severity(record.reading_type, record.sensor_type, offset)
            )
    return SensorState(record, None, (), tuple(states), severity, True)
