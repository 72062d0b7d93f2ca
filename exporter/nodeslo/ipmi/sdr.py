"""The Sensor Data Record repository: its info, and full (01h) and compact (02h) records.

A sensor record says how to read a sensor (owner, LUN, number), what it is (sensor
type, entity, name), how its raw byte becomes a value (full records only: y =
L[(M·x + B·10^K1)·10^K2] in the record's units), which thresholds exist, and which
discrete states it can report. A compact record may stand for several sensors that
share it (DIMMs, drive slots): numbers and names then run on from the first one.
Other record types (event-only 03h, locators, OEM) describe nothing to poll.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from nodeslo.ipmi import codes
from nodeslo.ipmi.layout import DecodeError, Field, Layout

HEADER = Layout(
    "SDR record header",
    5,
    (
        Field(0, 2, "record_id", "id"),
        Field(2, 1, "sdr_version", "bcd"),
        Field(3, 1, "record_type", "code"),
        Field(4, 1, "record_length", "bytes"),  # of the body that follows the header
    ),
)
FULL_SENSOR = 0x01
COMPACT_SENSOR = 0x02

# The sensor key and body both record types share (IPMI v2.0 tables 43-1 and 43-2,
# zero-based offsets within the record, header included).
COMMON = Layout(
    "SDR sensor record (common part)",
    23,
    (
        Field(5, 1, "owner_id", "id"),  # bits 7:1 slave address or software ID; bit 0 which
        Field(6, 1, "owner_lun", "bitmask"),  # bits 7:4 channel, 1:0 LUN
        Field(7, 1, "number", "id"),
        Field(8, 1, "entity_id", "code"),
        Field(9, 1, "entity_instance", "bitmask"),  # bit 7: logical container
        Field(10, 1, "initialization", "bitmask"),
        Field(11, 1, "capabilities", "bitmask"),
        Field(12, 1, "sensor_type", "code"),
        Field(13, 1, "reading_type", "code"),
        Field(14, 2, "assertion_mask", "bitmask"),  # threshold: + lower comparisons 14:12
        Field(16, 2, "deassertion_mask", "bitmask"),  # threshold: + upper comparisons 14:12
        Field(18, 2, "reading_mask", "bitmask"),  # threshold: readable 7:0, settable 15:8
        Field(20, 1, "units1", "bitmask"),  # 7:6 analog format, 5:3 rate, 2:1 modifier, 0 %
        Field(21, 1, "base_unit", "code"),
        Field(22, 1, "modifier_unit", "code"),
    ),
)
FULL = Layout(
    "SDR full sensor record (01h)",
    48,
    (
        Field(23, 1, "linearization", "code"),
        Field(24, 1, "m_ls", "raw_bits"),
        Field(25, 1, "m_ms_tolerance", "raw_bits"),  # 7:6 M bits 9:8
        Field(26, 1, "b_ls", "raw_bits"),
        Field(27, 1, "b_ms_accuracy", "raw_bits"),  # 7:6 B bits 9:8
        Field(28, 1, "accuracy_direction", "raw_bits"),
        Field(29, 1, "exponents", "raw_bits"),  # 7:4 K2 (R), 3:0 K1 (B), both signed
        Field(30, 1, "analog_flags", "bitmask"),
        Field(31, 1, "nominal_reading", "raw_reading"),
        Field(32, 1, "normal_maximum", "raw_reading"),
        Field(33, 1, "normal_minimum", "raw_reading"),
        Field(34, 1, "sensor_maximum", "raw_reading"),
        Field(35, 1, "sensor_minimum", "raw_reading"),
        # Thresholds (bytes), from upper non-recoverable down to lower non-critical.
        Field(36, 6, "thresholds", "raw"),
        Field(42, 1, "positive_hysteresis", "raw_reading"),
        Field(43, 1, "negative_hysteresis", "raw_reading"),
        Field(46, 1, "oem", "code"),
        Field(47, 1, "id_type_length", "bitmask"),  # 7:6 encoding, 4:0 length
    ),
)
COMPACT = Layout(
    "SDR compact sensor record (02h)",
    32,
    (
        Field(23, 1, "sharing1", "bitmask"),  # 5:4 ID modifier type, 3:0 share count
        Field(24, 1, "sharing2", "bitmask"),  # 7 entity instance increments, 6:0 ID offset
        Field(25, 1, "positive_hysteresis", "raw_reading"),
        Field(26, 1, "negative_hysteresis", "raw_reading"),
        Field(30, 1, "oem", "code"),
        Field(31, 1, "id_type_length", "bitmask"),
    ),
)

# Threshold levels in Get Sensor Thresholds' and the readable mask's bit order.
LEVELS: tuple[str, ...] = (
    "lower_non_critical",
    "lower_critical",
    "lower_non_recoverable",
    "upper_non_critical",
    "upper_critical",
    "upper_non_recoverable",
)
# A full record lists them from upper non-recoverable down: its index per level.
_FULL_THRESHOLD_ORDER = (5, 4, 3, 2, 1, 0)
# Analog data formats (units 1, bits 7:6).
UNSIGNED, ONES_COMPLEMENT, TWOS_COMPLEMENT, NO_ANALOG = range(4)
OWNER_BMC = 0x20

# ID string encodings (type/length bits 7:6) other than 8-bit ASCII + Latin-1 (11b).
_BCD_PLUS = "0123456789 -.:,_"
_ID_UNICODE, _ID_BCD_PLUS, _ID_SIX_BIT = 0, 1, 2


@dataclass(frozen=True)
class RepositoryInfo:
    """Get SDR Repository Info: what the walk cache is keyed on."""

    version: int
    record_count: int
    free_bytes: int
    addition_timestamp: int
    erase_timestamp: int
    operations: int


REPOSITORY_INFO = Layout(
    "Get SDR Repository Info response",
    14,
    (
        Field(0, 1, "version", "bcd"),
        Field(1, 2, "record_count", "count"),
        Field(3, 2, "free_bytes", "bytes"),
        Field(5, 4, "addition_timestamp", "seconds"),
        Field(9, 4, "erase_timestamp", "seconds"),
        Field(13, 1, "operations", "bitmask"),
    ),
)
REPOSITORY_INFO.check_matches(RepositoryInfo)


def decode_repository_info(data: bytes) -> RepositoryInfo:
    if len(data) < REPOSITORY_INFO.size:
        raise DecodeError(f"{REPOSITORY_INFO.name}: {len(data)} bytes, expected 14")
    return RepositoryInfo(*REPOSITORY_INFO.values(data[: REPOSITORY_INFO.size]))


@dataclass(frozen=True)
class Conversion:
    """How a raw reading becomes a value (full records)."""

    m: int
    b: int
    k1: int  # B exponent
    k2: int  # result exponent
    linearization: int
    analog_format: int

    def signed(self, raw: int) -> int:
        if self.analog_format == ONES_COMPLEMENT and raw & 0x80:
            return raw - 0xFF
        if self.analog_format == TWOS_COMPLEMENT and raw & 0x80:
            return raw - 0x100
        return raw

    def value(self, raw: int) -> float | None:
        """The reading in the record's units; None when it cannot be computed."""
        if self.analog_format == NO_ANALOG:
            return None
        linear = _scale(self.m * self.signed(raw) + _scale(self.b, self.k1), self.k2)
        return linearize(self.linearization, linear)


def _scale(x: float, exponent: int) -> float:
    """x · 10^exponent, dividing for negative exponents: 11655 · 10^-3 is 11.655, not
    11.655000000000001."""
    return x * 10.0**exponent if exponent >= 0 else x / 10.0 ** (-exponent)


def _ln(x: float) -> float:
    return math.log(x)


def _cube_root(x: float) -> float:
    return math.copysign(abs(x) ** (1 / 3), x)


# Linearization functions (table 43-1, byte 24); 70h-7Fh are OEM curves needing Get Sensor
# Reading Factors per reading, which this client does not send.
_LINEARIZATION = {
    0: lambda x: x,
    1: _ln,
    2: math.log10,
    3: math.log2,
    4: math.exp,
    5: lambda x: 10.0**x,
    6: lambda x: 2.0**x,
    7: lambda x: 1.0 / x,
    8: lambda x: x * x,
    9: lambda x: x * x * x,
    10: math.sqrt,
    11: _cube_root,
}


def linearize(code: int, x: float) -> float | None:
    function = _LINEARIZATION.get(code & 0x7F)
    if function is None:
        return None
    try:
        return float(function(x))
    except (ValueError, ZeroDivisionError, OverflowError):
        return None


def linear_supported(code: int) -> bool:
    return (code & 0x7F) in _LINEARIZATION


@dataclass(frozen=True)
class Units:
    base: int
    modifier: int
    modifier_kind: int  # 0 none, 1 base / modifier, 2 base x modifier
    rate: int
    percentage: bool

    def label(self) -> str:
        """The unit label value: the base unit after conversion, modifiers spelled out."""
        if self.percentage:
            return "ratio"
        name = codes.UNITS.get(self.base, (f"unit_{self.base}", 1.0, 0.0))[0]
        if self.modifier_kind:
            modifier = codes.UNITS.get(self.modifier, (f"unit_{self.modifier}", 1.0, 0.0))[0]
            name = f"{name}_per_{modifier}" if self.modifier_kind == 1 else f"{name}_{modifier}"
        if 0 < self.rate < len(codes.RATE_UNITS):
            name = f"{name}_per_{codes.RATE_UNITS[self.rate]}"
        return name

    def to_base(self, value: float) -> float:
        """A value in the record's units, in the label's (Prometheus base) units."""
        if self.percentage:
            return value / 100.0
        if self.modifier_kind or self.rate:
            return value  # compound units stay in the BMC's own scale
        _, factor, offset = codes.UNITS.get(self.base, ("", 1.0, 0.0))
        return value * factor + offset


@dataclass(frozen=True)
class SensorRecord:
    record_id: int
    record_type: int
    owner_id: int
    owner_lun: int
    number: int
    entity_id: int
    entity_instance: int
    sensor_type: int
    reading_type: int
    name: str
    assertion_mask: int
    deassertion_mask: int
    reading_mask: int
    units: Units
    conversion: Conversion | None  # full records only
    # Raw thresholds by level (LEVELS order); None where the record marks it unreadable.
    thresholds: tuple[int | None, ...]

    @property
    def is_threshold(self) -> bool:
        return self.reading_type == codes.READING_THRESHOLD

    @property
    def lun(self) -> int:
        return self.owner_lun & 0x03

    @property
    def on_bmc(self) -> bool:
        """Owned by the BMC itself (slave address 20h, IPMB channel 0): readable without
        bridging, which the whitelist does not allow."""
        return self.owner_id == OWNER_BMC and self.owner_lun >> 4 == 0

    @property
    def readable_thresholds(self) -> int:
        return self.reading_mask & 0x3F if self.is_threshold else 0

    @property
    def discrete_states(self) -> int:
        """States the sensor can report (discrete reading mask), bits 14:0."""
        return 0 if self.is_threshold else self.reading_mask & 0x7FFF

    @property
    def type_name(self) -> str:
        return codes.sensor_type_name(self.sensor_type)

    @property
    def entity(self) -> str:
        return codes.entity_name(self.entity_id, self.entity_instance)

    def value(self, raw: int) -> float | None:
        """A raw reading or threshold in base units; None for a compact record or a
        non-linear OEM curve (no conversion factors)."""
        if self.conversion is None:
            return None
        value = self.conversion.value(raw)
        return None if value is None else self.units.to_base(value)


def decode_id_string(type_length: int, raw: bytes) -> str:
    """The sensor's name. Length in bytes is bits 4:0; encoding bits 7:6."""
    length = type_length & 0x1F
    data = raw[:length]
    encoding = type_length >> 6
    if encoding == _ID_BCD_PLUS:
        return "".join(_BCD_PLUS[b >> 4] + _BCD_PLUS[b & 0x0F] for b in data).rstrip()
    if encoding == _ID_SIX_BIT:
        bits = int.from_bytes(data, "little")
        chars = len(data) * 8 // 6
        text = "".join(chr(0x20 + (bits >> (6 * i) & 0x3F)) for i in range(chars))
        return text.rstrip()
    # 8-bit ASCII + Latin-1 (and Unicode, which BMCs do not use for sensor names).
    return data.decode("latin-1").rstrip("\x00")


def decode_header(data: bytes) -> tuple[int, int, int]:
    """(record ID, record type, body length) of a record's first five bytes."""
    if len(data) < HEADER.size:
        raise DecodeError(f"{HEADER.name}: {len(data)} bytes, expected 5")
    record_id, _version, record_type, length = HEADER.values(data[: HEADER.size])
    return record_id, record_type, length


def _signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value & (1 << (bits - 1)) else value


def decode_record(record: bytes) -> list[SensorRecord]:
    """The sensors a whole record (header included) describes; [] for other record types.

    DecodeError for a sensor record shorter than its fixed part or its ID string.
    """
    record_id, record_type, length = decode_header(record)
    if record_type not in (FULL_SENSOR, COMPACT_SENSOR):
        return []
    if len(record) < HEADER.size + length:
        raise DecodeError(f"SDR record {record_id:#06x}: {len(record)} bytes, header says more")
    record = record[: HEADER.size + length]
    layout = FULL if record_type == FULL_SENSOR else COMPACT
    if len(record) < layout.size:
        raise DecodeError(
            f"{layout.name} {record_id:#06x}: {len(record)} bytes, expected ≥{layout.size}"
        )
    (
        owner_id,
        owner_lun,
        number,
        entity_id,
        entity_instance,
        _init,
        _capabilities,
        sensor_type,
        reading_type,
        assertion_mask,
        deassertion_mask,
        reading_mask,
        units1,
        base_unit,
        modifier_unit,
    ) = COMMON.values(record[: COMMON.size])
    units = Units(
        base=base_unit,
        modifier=modifier_unit,
        modifier_kind=units1 >> 1 & 0x03,
        rate=units1 >> 3 & 0x07,
        percentage=bool(units1 & 0x01),
    )
    fields = dict(zip(layout.names, layout.values(record[: layout.size]), strict=True))
    id_length = fields["id_type_length"] & 0x1F
    if len(record) < layout.size + id_length:
        raise DecodeError(f"{layout.name} {record_id:#06x}: ID string cut short")
    # Trailing blanks are kept until a shared record's suffix is added ("DIMM " + "A").
    name = decode_id_string(fields["id_type_length"], record[layout.size :])
    readable = reading_mask & 0x3F if reading_type == codes.READING_THRESHOLD else 0
    common = {
        "record_id": record_id,
        "record_type": record_type,
        "owner_id": owner_id,
        "owner_lun": owner_lun,
        "sensor_type": sensor_type,
        "reading_type": reading_type,
        "assertion_mask": assertion_mask,
        "deassertion_mask": deassertion_mask,
        "reading_mask": reading_mask,
        "units": units,
    }
    if record_type == FULL_SENSOR:
        raw = fields["thresholds"]  # unr, uc, unc, lnr, lc, lnc
        thresholds = tuple(
            raw[_FULL_THRESHOLD_ORDER[level]] if readable >> level & 1 else None
            for level in range(len(LEVELS))
        )
        conversion = Conversion(
            m=_signed(fields["m_ls"] | (fields["m_ms_tolerance"] & 0xC0) << 2, 10),
            b=_signed(fields["b_ls"] | (fields["b_ms_accuracy"] & 0xC0) << 2, 10),
            k1=_signed(fields["exponents"] & 0x0F, 4),
            k2=_signed(fields["exponents"] >> 4, 4),
            linearization=fields["linearization"] & 0x7F,
            analog_format=units1 >> 6,
        )
        return [
            SensorRecord(
                number=number,
                entity_id=entity_id,
                entity_instance=entity_instance,
                name=name.strip(),
                conversion=conversion,
                thresholds=thresholds,
                **common,
            )
        ]
    # Compact: no conversion, no threshold values; maybe shared by several sensors.
    share_count = max(1, fields["sharing1"] & 0x0F)
    modifier_type = fields["sharing1"] >> 4 & 0x03
    modifier_offset = fields["sharing2"] & 0x7F
    instance_increments = bool(fields["sharing2"] & 0x80)
    sensors = []
    for i in range(share_count):
        suffix = _modifier(modifier_type, modifier_offset + i) if share_count > 1 else ""
        sensors.append(
            SensorRecord(
                number=(number + i) & 0xFF,
                entity_id=entity_id,
                entity_instance=(entity_instance + i) & 0x7F | entity_instance & 0x80
                if instance_increments
                else entity_instance,
                name=(name + suffix).strip(),
                conversion=None,
                thresholds=(None,) * len(LEVELS),
                **common,
            )
        )
    return sensors


def _modifier(kind: int, offset: int) -> str:
    """The suffix a shared record gives its n-th sensor: numeric, or alpha (A..Z, AA..)."""
    if kind == 1:
        letters = ""
        n = offset
        while True:
            letters = chr(ord("A") + n % 26) + letters
            n = n // 26 - 1
            if n < 0:
                return letters
    return str(offset)
