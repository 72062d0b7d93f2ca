"""The IPMI decoders: bytes in, values out, no I/O.

Recorded data (tests/data/bmc/, from OpenIPMI's simulator behind the guest kernel's
driver in tests/test_bmc_qemu.py) is decoded to what ipmitool showed for the same BMC in
the same guest; hand-built records cover what the simulator does not (signed and
exponent factors, non-linear curves, other ID encodings) and what a hostile or broken
BMC may send (each gets a DecodeError or is skipped, never an exception of another kind).
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from nodeslo.ipmi import codes, device, sdr, sel, sensor
from nodeslo.ipmi.cli import poll_until_complete
from nodeslo.ipmi.layout import DecodeError
from nodeslo.ipmi.poller import Poller
from nodeslo.ipmi.recording import ReplayTransport
from nodeslo.log import OnceLog
from support import bmc_chassis

DATA = Path(__file__).parent / "data" / "bmc"


def poll(recording: str) -> dict[str, sensor.SensorState]:
    import logging

    poller = Poller(
        ReplayTransport(str(DATA / recording)),
        interval=60.0,
        timeout=1.0,
        errors=OnceLog(logging.getLogger("test")),
    )
    snap = poll_until_complete(poller)
    assert snap.up, snap.reason
    return {s.record.name: s for s in snap.sensors}


# -- the recorded simulator: what ipmitool showed in the same guest ------------------

# ipmitool sensor (healthy): name -> (value, unit label, thresholds by level).
HEALTHY_THRESHOLD_SENSORS = {
    "FAN1": (6000.0, "rpm", {"lower_non_recoverable": 500, "lower_critical": 1000,
                              "lower_non_critical": 1500}),
    "Inlet Temp": (24.0, "celsius", {"upper_non_critical": 40, "upper_critical": 45,
                                     "upper_non_recoverable": 50}),
    "PSU1 Input Power": (450.0, "watts", {"upper_non_critical": 2000, "upper_critical": 2200}),
    "PSU2 Input Power": (440.0, "watts", {"upper_non_critical": 2000, "upper_critical": 2200}),
    "12V": (11.97, "volts", {"lower_critical": 10.71, "lower_non_critical": 11.34,
                             "upper_non_critical": 12.6, "upper_critical": 13.23}),
    "Exhaust Temp": (40.0, "celsius", {"upper_non_critical": 70, "upper_critical": 80}),
}  # fmt: skip


def test_recorded_healthy_bmc_decodes_as_ipmitool_shows_it() -> None:
    states = poll("healthy.json")
    assert len(states) == 15
    for name, (value, unit, thresholds) in HEALTHY_THRESHOLD_SENSORS.items():
        state = states[name]
        assert state.value == pytest.approx(value), name
        assert state.record.units.label() == unit
        assert dict(state.thresholds) == pytest.approx(thresholds), name
        assert state.severity == codes.OK
    assert dict(states["PSU2 Status"].states) == {
        "presence_detected": True,
        "failure_detected": False,
        "predictive_failure": False,
        "input_lost": False,
    }
    assert dict(states["PS Redundancy"].states)["fully_redundant"] is True
    # One compact record shared by four sensors: "DIMM " + A..D, entity instances 1..4.
    for i, letter in enumerate("ABCD", 1):
        dimm = states[f"DIMM {letter}"]
        assert dimm.record.number == 9 + i
        assert dimm.record.entity == f"memory_device.{i}"
        assert dict(dimm.states) == {
            "correctable_ecc": False,
            "uncorrectable_ecc": False,
            "presence_detected": True,
        }
    assert dict(states["Drive 0"].states)["presence_detected"] is True
    fan_redundancy = states["Fan Redundancy"]
    assert (fan_redundancy.record.type_name, fan_redundancy.record.entity) == (
        "fan",
        "cooling_unit.1",
    )


def test_recorded_faults_decode_as_ipmitool_shows_them() -> None:
    states = poll("faults.json")
    psu2 = dict(states["PSU2 Status"].states)
    assert psu2 == {
        "presence_detected": True,
        "failure_detected": True,
        "predictive_failure": False,
        "input_lost": True,
    }
    assert states["PSU2 Status"].severity == codes.CRITICAL
    assert dict(states["PS Redundancy"].states) == {
        "fully_redundant": False,
        "redundancy_lost": True,
        "redundancy_degraded": False,
    }
    # ipmitool: FAN1 800 RPM "cr", Inlet Temp 42 "nc", 12V 11.655 "ok".
    assert (states["FAN1"].value, states["FAN1"].severity) == (800.0, codes.CRITICAL)
    assert (states["Inlet Temp"].value, states["Inlet Temp"].severity) == (42.0, codes.NON_CRITICAL)
    assert (states["12V"].value, states["12V"].severity) == (11.655, codes.OK)
    assert dict(states["DIMM C"].states)["uncorrectable_ecc"] is True
    assert states["DIMM C"].severity == codes.CRITICAL
    assert states["DIMM B"].severity == codes.OK


def test_recorded_sel_counts_as_ipmitool_lists_it() -> None:
    import logging

    poller = Poller(
        ReplayTransport(str(DATA / "faults.json")),
        interval=60.0,
        timeout=1.0,
        errors=OnceLog(logging.getLogger("test")),
    )
    snap = poll_until_complete(poller)
    assert snap.sel is not None and snap.sel.entries == 17
    events = dict(snap.sel_events or ())
    assert sum(events.values()) == 17
    assert events[("power_supply", "assertion", "failure_detected")] == 1
    assert events[("power_supply", "assertion", "input_lost")] == 1
    assert events[("power_supply", "assertion", "presence_detected")] == 2
    assert events[("power_unit", "deassertion", "fully_redundant")] == 1
    assert events[("fan", "assertion", "lower_critical_going_low")] == 1
    assert events[("temperature", "assertion", "upper_non_critical_going_high")] == 1
    assert events[("memory", "assertion", "uncorrectable_ecc")] == 1
    assert events[("memory", "assertion", "presence_detected")] == 4
    assert events[("drive_slot", "assertion", "presence_detected")] == 1


def test_recorded_device_id() -> None:
    import json

    document = json.loads((DATA / "healthy.json").read_text())
    response = next(e for e in document["exchanges"] if (e["netfn"], e["cmd"]) == (6, 1))
    d = device.decode_device_id(bytes.fromhex(response["response"])[1:])
    assert (d.manufacturer, d.manufacturer_id, d.product, d.firmware, d.ipmi) == (
        "MontaVista",
        4753,
        "0x0f02",
        "9.08",
        "2.0",
    )
    assert d.has_sdr_repository and d.has_sel


# -- conversion -------------------------------------------------------------------------


def conversion(
    *, m: int = 1, b: int = 0, k1: int = 0, k2: int = 0, lin: int = 0, fmt: int = sdr.UNSIGNED
) -> sdr.Conversion:
    return sdr.Conversion(m, b, k1, k2, lin, fmt)


@pytest.mark.parametrize(
    ("factors", "raw", "value"),
    [
        (conversion(m=63, k2=-3), 190, 11.97),  # 12V rail, 0.063 V a count
        (conversion(m=1, b=-20), 60, 40.0),  # a negative offset
        (conversion(m=2, b=5, k1=1, k2=-1), 10, 7.0),  # (2·10 + 5·10^1)·10^-1
        (conversion(m=-1), 10, -10.0),  # a negative slope
        (conversion(fmt=sdr.TWOS_COMPLEMENT), 0xFB, -5.0),
        (conversion(fmt=sdr.ONES_COMPLEMENT), 0xFA, -5.0),
        (conversion(fmt=sdr.ONES_COMPLEMENT), 0x05, 5.0),
        (conversion(lin=7), 4, 0.25),  # 1/x
        (conversion(lin=10), 16, 4.0),  # sqrt
        (conversion(lin=8), 3, 9.0),  # x²
        (conversion(lin=11), 27, 3.0),  # cube root
        (conversion(lin=2), 100, 2.0),  # log10
    ],
)
def test_conversion(factors: sdr.Conversion, raw: int, value: float) -> None:
    assert factors.value(raw) == pytest.approx(value)


@pytest.mark.parametrize(
    ("factors", "raw"),
    [
        (conversion(fmt=sdr.NO_ANALOG), 10),  # no analog reading at all
        (conversion(lin=0x70), 10),  # an OEM curve: needs Get Sensor Reading Factors
        (conversion(lin=7), 0),  # 1/0
        (conversion(lin=1), 0),  # ln 0
    ],
)
def test_conversion_without_a_value(factors: sdr.Conversion, raw: int) -> None:
    assert factors.value(raw) is None


@pytest.mark.parametrize(
    ("units", "label", "value", "converted"),
    [
        (sdr.Units(1, 0, 0, 0, False), "celsius", 30.0, 30.0),
        (sdr.Units(2, 0, 0, 0, False), "celsius", 212.0, 100.0),  # °F
        (sdr.Units(3, 0, 0, 0, False), "celsius", 300.0, 26.85),  # K
        (sdr.Units(18, 0, 0, 0, False), "rpm", 1200.0, 1200.0),
        (sdr.Units(21, 0, 0, 0, False), "seconds", 250.0, 0.25),  # ms
        (sdr.Units(14, 0, 0, 0, False), "pascals", 2.0, 2000.0),  # kPa
        (sdr.Units(0, 0, 0, 0, True), "ratio", 40.0, 0.4),  # percentage
        (sdr.Units(6, 24, 1, 0, False), "watts_per_seconds", 5.0, 5.0),  # W / hour
        (sdr.Units(85, 0, 0, 3, False), "packets_per_second", 7.0, 7.0),  # rate
        (sdr.Units(200, 0, 0, 0, False), "unit_200", 7.0, 7.0),  # unknown code
    ],
)
def test_units(units: sdr.Units, label: str, value: float, converted: float) -> None:
    assert units.label() == label
    assert units.to_base(value) == pytest.approx(converted)


# -- records ----------------------------------------------------------------------------


def test_full_record_from_the_extended_chassis() -> None:
    (record,) = sdr.decode_record(bmc_chassis.EXTRA_RECORDS[0])
    assert (record.name, record.number, record.type_name, record.entity) == (
        "12V",
        8,
        "voltage",
        "system_board.1",
    )
    assert record.conversion == sdr.Conversion(63, 0, 0, -3, 0, sdr.UNSIGNED)
    assert record.readable_thresholds == 0b011011  # LNC, LC, UNC, UC
    assert sensor.threshold_values(record, record.thresholds) == (
        ("lower_non_critical", 11.34),
        ("lower_critical", 10.71),
        ("upper_non_critical", 12.6),
        ("upper_critical", 13.23),
    )
    assert record.on_bmc and record.lun == 0


def test_shared_compact_record_names_numeric_and_alphabetic() -> None:
    numeric = bmc_chassis.compact(
        20, "CPU", entity=0x03, instance=1, sensor_type=0x07, reading_type=0x6F, mask=0x81,
        share=3,
    )  # fmt: skip
    assert [(r.name, r.number, r.entity) for r in sdr.decode_record(numeric)] == [
        ("CPU0", 20, "processor.1"),
        ("CPU1", 21, "processor.2"),
        ("CPU2", 22, "processor.3"),
    ]
    assert sdr._modifier(1, 25) == "Z" and sdr._modifier(1, 26) == "AA"


def test_record_types_without_sensors_are_skipped() -> None:
    event_only = bytes([0, 0, 0x51, 0x03, 3, 0x20, 0, 1])
    locator = bytes([0, 0, 0x51, 0x12, 2, 0x20, 0])
    assert sdr.decode_record(event_only) == []
    assert sdr.decode_record(locator) == []


@pytest.mark.parametrize(
    ("record", "complaint"),
    [
        (b"\x01\x00\x51", "expected 5"),  # not even a header
        (bytes([1, 0, 0x51, 0x01, 40]) + bytes(20), "header says more"),
        (bytes([1, 0, 0x51, 0x01, 20]) + bytes(20), "expected"),  # shorter than a full record
        (bytes([1, 0, 0x51, 0x02, 27]) + bytes(26) + b"\xc8", "ID string cut short"),
    ],
)
def test_broken_records(record: bytes, complaint: str) -> None:
    with pytest.raises(DecodeError, match=complaint):
        sdr.decode_record(record)


@pytest.mark.parametrize(
    ("type_length", "raw", "name"),
    [
        (0xC4, b"FAN1", "FAN1"),
        (0xC6, b"Temp\x00\x00", "Temp"),
        (0x43, bytes([0x12, 0x3B, 0x4A]), "123-4"),  # BCD plus: 1 2 3 - 4 space
        # 6-bit packed ASCII: "ABCD" (0x21 0x22 0x23 0x24) in 3 bytes, low bits first.
        (0x83, (0x21 | 0x22 << 6 | 0x23 << 12 | 0x24 << 18).to_bytes(3, "little"), "ABCD"),
    ],
)
def test_id_strings(type_length: int, raw: bytes, name: str) -> None:
    assert sdr.decode_id_string(type_length, raw).strip() == name


# -- readings and states ----------------------------------------------------------------


def _record(reading_type: int, sensor_type: int, mask: int) -> sdr.SensorRecord:
    raw = bmc_chassis.compact(
        30, "X", entity=0x07, instance=1, sensor_type=sensor_type, reading_type=reading_type,
        mask=mask,
    )  # fmt: skip
    (record,) = sdr.decode_record(raw)
    return record


def test_threshold_comparison_bits_give_the_severity() -> None:
    (fan,) = sdr.decode_record(
        bmc_chassis.full(4, "FAN1", entity=0x1D, instance=1, sensor_type=0x04, unit=18,
                         thresholds={"lnc": 15, "lc": 10, "lnr": 5}, m=100)
    )  # fmt: skip
    for states, severity in ((0x00, 0), (0x01, 1), (0x03, 2), (0x07, 3), (0x08, 1)):
        state = sensor.evaluate(fan, sensor.Reading(8, 0xC0, states), ())
        assert (state.value, state.severity) == (800.0, severity)


def test_discrete_states_and_their_severity() -> None:
    psu = _record(0x6F, 0x08, 0x000F)
    state = sensor.evaluate(psu, sensor.decode_reading(bytes([0x00, 0xC0, 0x0B, 0x00])), ())
    assert dict(state.states) == {
        "presence_detected": True,
        "failure_detected": True,
        "predictive_failure": False,
        "input_lost": True,
    }
    assert state.severity == codes.CRITICAL
    # A state the SDR did not announce is still reported when asserted.
    extra = sensor.evaluate(psu, sensor.decode_reading(bytes([0, 0xC0, 0x80, 0x00])), ())
    assert dict(extra.states)["inactive"] is True
    # A generic severity sensor (07h) and an OEM reading type.
    severity = _record(0x07, 0x0C, 0x01FF)
    assert sensor.evaluate(severity, sensor.Reading(0, 0xC0, 1 << 6), ()).severity == 3
    oem = _record(0x70, 0xC0, 0x0003)
    assert dict(sensor.evaluate(oem, sensor.Reading(0, 0xC0, 2), ()).states) == {
        "state_0": False,
        "state_1": True,
    }


@pytest.mark.parametrize("flags", [0xE0, 0x80, 0x00])  # unavailable, scanning off
def test_unavailable_readings_have_no_value_and_no_states(flags: int) -> None:
    psu = _record(0x6F, 0x08, 0x000F)
    state = sensor.evaluate(psu, sensor.Reading(0, flags, 0x01), ())
    assert (state.available, state.states, state.severity) == (False, (), None)


def test_readings_with_optional_bytes_missing() -> None:
    assert sensor.decode_reading(bytes([0x3C, 0xC0])) == sensor.Reading(0x3C, 0xC0, 0)
    assert sensor.decode_reading(bytes([0x00, 0xC0, 0x01])).states == 0x01
    assert sensor.decode_reading(bytes([0x00, 0xC0, 0x01, 0xFF])).states == 0x7F01
    with pytest.raises(DecodeError):
        sensor.decode_reading(b"\x00")


def test_thresholds_response() -> None:
    t = sensor.decode_thresholds(bytes([0x38, 0, 0, 0, 40, 45, 50]))
    assert t.raw == (None, None, None, 40, 45, 50)
    with pytest.raises(DecodeError):
        sensor.decode_thresholds(bytes([0x38, 0, 0]))


# -- the SEL, device ID and chassis status ---------------------------------------------


def test_sel_entries() -> None:
    system = struct.pack("<HBIHBBBBBBB", 7, 0x02, 1000, 0x20, 0x04, 0x08, 2, 0x6F, 0x01, 0xFF, 0xFF)
    entry = sel.decode_entry(system)
    assert (entry.type_name, entry.direction, entry.state) == (
        "power_supply",
        "assertion",
        "failure_detected",
    )
    gone = struct.pack("<HBIHBBBBBBB", 8, 0x02, 1000, 0x20, 0x04, 0x04, 4, 0x81, 0x52, 0, 0)
    assert (sel.decode_entry(gone).direction, sel.decode_entry(gone).state) == (
        "deassertion",
        "lower_critical_going_low",
    )
    oem = struct.pack("<HB", 9, 0xC1) + bytes(13)
    assert (sel.decode_entry(oem).type_name, sel.decode_entry(oem).direction) == ("oem", "none")
    with pytest.raises(DecodeError):
        sel.decode_entry(system[:15])


def test_device_id_and_chassis_status_too_short() -> None:
    with pytest.raises(DecodeError):
        device.decode_device_id(bytes(10))
    with pytest.raises(DecodeError):
        device.decode_chassis_status(bytes(2))
    chassis = device.decode_chassis_status(bytes([0x09, 0x00, 0x08]))
    flags = dict(chassis.flags())
    assert flags["power_on"] and flags["power_fault"] and flags["cooling_fault"]
    assert not flags["power_overload"]
