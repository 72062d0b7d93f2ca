"""Human units in the profile (100us, 30d, 99.9%, 64MiB) to base units and back."""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

# Decimal arithmetic, so "100us" is exactly the float 0.0001 a histogram bucket holds
# (100 * 1e-6 in binary floating point is 9.999999999999999e-05).
_DURATION_UNITS = {
    "ns": Decimal("1e-9"),
    "us": Decimal("1e-6"),
    "µs": Decimal("1e-6"),
    "ms": Decimal("1e-3"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
    "d": Decimal(86400),
    "w": Decimal(604800),
}
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ns|us|µs|ms|s|m|h|d|w)\s*$")
_SIZE_UNITS = {"": 1, "B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "KB": 1000}
_SIZE_UNITS |= {"MB": 1000**2, "GB": 1000**3}
# Capacities of drives and memory: 3.84TB (drive makers count in powers of ten), 1.5TiB.
_SIZE_UNITS |= {"TiB": 1024**4, "TB": 1000**4}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(B|KiB|MiB|GiB|TiB|KB|MB|GB|TB)?\s*$")
# Link rates as vendors write them: 25Gb/s (Ethernet, bits), 16GT/s (PCIe, transfers).
_RATE_SCALE = {"": 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_BIT_RATE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kKMGT]?)(?:b/s|bps|bit/s)\s*$")
_TRANSFER_RATE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kKMGT]?)T/s\s*$")
# The forms as regular expressions, for the profile's JSON Schema.
DURATION_PATTERN = _DURATION.pattern
SIZE_PATTERN = _SIZE.pattern
BIT_RATE_PATTERN = _BIT_RATE.pattern
TRANSFER_RATE_PATTERN = _TRANSFER_RATE.pattern


def parse_duration(value: object) -> float:
    """'100us', '10ms', '30d' -> seconds. A bare number is seconds."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        if value < 0 or not math.isfinite(value):
            raise ValueError(f"not a duration: {value!r}")
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"not a duration: {value!r} (use e.g. 100us, 10ms, 5m, 30d)")
    return float(Decimal(match.group(1)) * _DURATION_UNITS[match.group(2)])


def parse_percent(value: object) -> float:
    """'99.9%' or 99.9 -> 0.999; an SLO objective is written as a percentage."""
    if isinstance(value, bool):
        raise ValueError(f"not a percentage: {value!r}")
    text = str(value).strip()
    number = text[:-1] if text.endswith("%") else text
    try:
        percent = Decimal(number)
    except InvalidOperation:
        raise ValueError(f"not a percentage: {value!r}") from None
    if not 0 < percent < 100:
        raise ValueError(f"must be between 0% and 100% exclusive, got {value!r}")
    return float(percent / 100)


def parse_ratio(value: object) -> float:
    """'5%' -> 0.05; a bare number must already be a ratio in [0, 1]."""
    if isinstance(value, bool):
        raise ValueError(f"not a ratio: {value!r}")
    text = str(value).strip()
    try:
        ratio = Decimal(text[:-1]) / 100 if text.endswith("%") else Decimal(text)
    except InvalidOperation:
        raise ValueError(f"not a ratio: {value!r} (use e.g. 5% or 0.05)") from None
    if not ratio.is_finite():
        raise ValueError(f"not a ratio: {value!r}")
    if not 0 <= ratio <= 1:
        raise ValueError(f"must be between 0 and 1 (or 0% and 100%), got {value!r}")
    return float(ratio)


def parse_size(value: object) -> int:
    """'64MiB', '1.5TiB', '3.84TB' -> bytes (a whole number of them)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"not a size: {value!r} (use e.g. 64MiB)")
    size = Decimal(match.group(1)) * _SIZE_UNITS[match.group(2) or ""]
    if size != size.to_integral_value():
        raise ValueError(f"not a whole number of bytes: {value!r}")
    return int(size)


def parse_bit_rate(value: object) -> float:
    """'25Gb/s' -> bytes per second (3.125e9): link speeds are quoted in bits, Prometheus
    counts bytes, as node_exporter's speed_bytes does."""
    match = _BIT_RATE.match(str(value))
    if not match:
        raise ValueError(f"not a bit rate: {value!r} (use e.g. 25Gb/s)")
    return float(Decimal(match.group(1)) * _RATE_SCALE[match.group(2)] / 8)


def parse_transfer_rate(value: object) -> float:
    """'16GT/s' -> transfers per second (1.6e10), a PCIe link's signalling rate."""
    match = _TRANSFER_RATE.match(str(value))
    if not match:
        raise ValueError(f"not a transfer rate: {value!r} (use e.g. 16GT/s)")
    return float(Decimal(match.group(1)) * _RATE_SCALE[match.group(2)])


def human_bit_rate(bytes_per_second: float) -> str:
    """3.125e9 -> '25Gb/s', as a NIC's speed is spoken of."""
    bits = bytes_per_second * 8
    for unit, scale in (("Tb/s", 1e12), ("Gb/s", 1e9), ("Mb/s", 1e6), ("kb/s", 1e3)):
        if bits >= scale:
            return f"{bits / scale:g}{unit}"
    return f"{bits:g}b/s"


def human_transfer_rate(transfers_per_second: float) -> str:
    """1.6e10 -> '16GT/s (Gen4)': PCIe rates with the generation users know them by."""
    text = f"{transfers_per_second / 1e9:g}GT/s"
    generation = PCIE_GENERATIONS.get(round(transfers_per_second / 1e8))
    return f"{text} (Gen{generation})" if generation else text


# PCIe signalling rate in units of 0.1 GT/s -> generation.
PCIE_GENERATIONS = {25: 1, 50: 2, 80: 3, 160: 4, 320: 5, 640: 6}


def human_bytes(size: float, binary: bool = True) -> str:
    """1649267441664 -> '1.5TiB'; with binary=False, 3.84e12 -> '3.84TB'."""
    units = (
        (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024))
        if binary
        else (("TB", 1000**4), ("GB", 1000**3), ("MB", 1000**2), ("KB", 1000))
    )
    for unit, scale in units:
        if size >= scale:
            return f"{round(size / scale, 2):g}{unit}"
    return f"{size:g}B"


def prom_duration(seconds: float) -> str:
    """Seconds -> the shortest exact Prometheus duration ('30d', '5m', '90s', '250ms')."""
    millis = round(seconds * 1000)
    if millis <= 0 or abs(millis / 1000 - seconds) > 1e-9:
        raise ValueError(f"{seconds}s is not a whole number of milliseconds")
    # Days at most: "28d" reads better in a rule than "4w".
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if millis % size == 0:
            return f"{millis // size}{unit}"
    return f"{millis}ms"


def human_seconds(seconds: float) -> str:
    """50e-6 -> '50µs', for summaries and panel titles."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0), ("ms", 1e-3)):
        if seconds >= size:
            return f"{seconds / size:g}{unit}"
    if seconds >= 1e-6:
        return f"{seconds / 1e-6:g}µs"
    return f"{seconds / 1e-9:g}ns"
