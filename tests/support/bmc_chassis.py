"""The BMC the QEMU test simulates: ../shared/tools/qemu-ipmi/bmc.emu's server (two PSUs,
PSU redundancy, FAN1, inlet air, PSU input power) plus sensors that exercise the rest of
the decoders, written as an ipmi_sim command file.

Added (numbers 8-15):
  8  "12V"            voltage, full record, M=63 K2=-3 (0.063 V a count), LC/LNC/UNC/UC
  9  "Exhaust Temp"   temperature, full record, M=1 B=-20 (a negative offset), UNC/UC
  10-13 "DIMM A".."D" memory (0Ch) states, ONE compact record shared by four sensors
                      (alphabetic name suffix, entity instance incrementing)
  14 "Drive 0"        drive slot (0Dh) states, compact record
  15 "Fan Redundancy" fan sensor with the generic redundancy reading type (0Bh)
The record layout follows IPMI v2.0 tables 43-1 and 43-2 (the same as make_sdrs.py).
"""

from __future__ import annotations

from pathlib import Path

OWNER = 0x20
# Event masks of a discrete sensor: the states it supports, as assertion, deassertion
# and reading masks.


def _id(name: str) -> bytes:
    raw = name.encode()[:16]
    return bytes([0xC0 | len(raw)]) + raw


def _record(record_type: int, body: bytes) -> bytes:
    return bytes([0, 0, 0x51, record_type, len(body)]) + body


def compact(
    number: int,
    name: str,
    *,
    entity: int,
    instance: int,
    sensor_type: int,
    reading_type: int,
    mask: int,
    share: int = 1,
    alpha: bool = False,
) -> bytes:
    body = bytes([OWNER, 0x00, number, entity, instance, 0x67, 0x40, sensor_type, reading_type])
    body += mask.to_bytes(2, "little") * 3  # assertion, deassertion, reading masks
    body += bytes([0x00, 0x00, 0x00])  # units: none
    sharing1 = (0x10 if alpha else 0x00) | (share & 0x0F) if share > 1 else 0x00
    sharing2 = 0x80 if share > 1 else 0x00  # entity instance increments
    body += bytes([sharing1, sharing2, 0, 0, 0, 0, 0, 0])  # sharing, hysteresis, reserved, OEM
    return _record(0x02, body + _id(name))


def full(
    number: int,
    name: str,
    *,
    entity: int,
    instance: int,
    sensor_type: int,
    unit: int,
    thresholds: dict[str, int],
    m: int,
    b: int = 0,
    k1: int = 0,
    k2: int = 0,
) -> bytes:
    order = ["lnc", "lc", "lnr", "unc", "uc", "unr"]
    readable = sum(1 << i for i, k in enumerate(order) if k in thresholds)
    events = sum(
        1 << {"lnc": 0, "lc": 2, "lnr": 4, "unc": 7, "uc": 9, "unr": 11}[k] for k in thresholds
    )
    lower = sum(1 << (12 + i) for i, k in enumerate(order[:3]) if k in thresholds)
    upper = sum(1 << (12 + i) for i, k in enumerate(order[3:]) if k in thresholds)
    body = bytes([OWNER, 0x00, number, entity, instance, 0x7F, 0x48, sensor_type, 0x01])
    body += (events | lower).to_bytes(2, "little") + (events | upper).to_bytes(2, "little")
    body += bytes([readable, readable, 0x00, unit, 0x00, 0x00])
    body += bytes(
        [m & 0xFF, (m >> 2) & 0xC0, b & 0xFF, (b >> 2) & 0xC0, 0x00, ((k2 & 0xF) << 4) | (k1 & 0xF)]
    )
    body += bytes([0x00, 0, 0, 0, 0xFF, 0x00])
    body += bytes(thresholds.get(k, 0) for k in ["unr", "uc", "unc", "lnr", "lc", "lnc"])
    body += bytes(5)
    return _record(0x01, body + _id(name))


def _bits(mask: int) -> str:
    return format(mask, "015b")


def _threshold_args(thresholds: dict[str, int]) -> str:
    order = ["unr", "uc", "unc", "lnr", "lc", "lnc"]
    flags = "".join("1" if k in thresholds else "0" for k in order)
    return f"{flags} " + " ".join(str(thresholds.get(k, 0)) for k in order)


def _threshold_event_mask(thresholds: dict[str, int]) -> int:
    bit = {"lnc": 0, "lc": 2, "lnr": 4, "unc": 7, "uc": 9, "unr": 11}
    return sum(1 << bit[k] for k in thresholds)


VOLTS_12 = {"lnc": 180, "lc": 170, "unc": 200, "uc": 210}
EXHAUST = {"unc": 90, "uc": 100}
DIMM_STATES = 0x0043  # correctable ECC, uncorrectable ECC, presence
DRIVE_STATES = 0x0007  # presence, fault, predictive failure
REDUNDANCY_STATES = 0x0007  # fully redundant, redundancy lost, degraded

EXTRA_RECORDS = (
    full(
        8,
        "12V",
        entity=0x07,
        instance=1,
        sensor_type=0x02,
        unit=4,
        thresholds=VOLTS_12,
        m=63,
        k2=-3,
    ),
    full(
        9,
        "Exhaust Temp",
        entity=0x07,
        instance=2,
        sensor_type=0x01,
        unit=1,
        thresholds=EXHAUST,
        m=1,
        b=-20,
    ),
    compact(
        10,
        "DIMM ",
        entity=0x20,
        instance=1,
        sensor_type=0x0C,
        reading_type=0x6F,
        mask=DIMM_STATES,
        share=4,
        alpha=True,
    ),
    compact(
        14,
        "Drive 0",
        entity=0x1A,
        instance=1,
        sensor_type=0x0D,
        reading_type=0x6F,
        mask=DRIVE_STATES,
    ),
    compact(
        15,
        "Fan Redundancy",
        entity=0x1E,
        instance=1,
        sensor_type=0x04,
        reading_type=0x0B,
        mask=REDUNDANCY_STATES,
    ),
)


def _discrete(number: int, sensor_type: int, reading_type: int, mask: int, initial: int) -> str:
    bits = _bits(mask)
    return (
        f"sensor_add 0x20 0 {number} {sensor_type:#04x} {reading_type:#04x}\n"
        f"sensor_set_event_support 0x20 0 {number} enable scanning per-state "
        f"{bits} {bits} {bits} {bits}\n"
        f"sensor_set_bit_clr_rest 0x20 0 {number} {initial} 1 0\n"
    )


def _threshold(number: int, sensor_type: int, thresholds: dict[str, int], value: int) -> str:
    bits = _bits(_threshold_event_mask(thresholds))
    return (
        f"sensor_add 0x20 0 {number} {sensor_type:#04x} 0x01\n"
        f"sensor_set_threshold 0x20 0 {number} settable {_threshold_args(thresholds)}\n"
        f"sensor_set_event_support 0x20 0 {number} enable scanning per-state "
        f"{bits} {bits} {bits} {bits}\n"
        f"sensor_set_value 0x20 0 {number} {value} 0\n"
    )


EXTRA_SENSORS = (
    _threshold(8, 0x02, VOLTS_12, 190)
    + _threshold(9, 0x01, EXHAUST, 60)
    + "".join(_discrete(n, 0x0C, 0x6F, DIMM_STATES, 6) for n in range(10, 14))
    + _discrete(14, 0x0D, 0x6F, DRIVE_STATES, 0)
    + _discrete(15, 0x04, 0x0B, REDUNDANCY_STATES, 0)
)


def emu_file(base: Path) -> str:
    """The shared chassis with the extra sensors, enabled last as the base enables it."""
    text = base.read_text()
    head, enable, _ = text.rpartition("mc_enable 0x20")
    if not enable:
        raise ValueError(f"{base}: no 'mc_enable 0x20' line")
    adds = "".join(
        "main_sdr_add 0x20 " + " ".join(f"{x:#04x}" for x in record) + "\n"
        for record in EXTRA_RECORDS
    )
    return head + adds + EXTRA_SENSORS + "\nmc_enable 0x20\n"
