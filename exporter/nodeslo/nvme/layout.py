"""Binary page layouts written as the specification's tables.

A `Layout` is a tuple of `Field(offset, size, name, unit)` rows, in the order the
specification lists them, compiled once into a `struct.Struct` for the whole page and
a converter from its items to the fields' values. Sizes struct has no code for are
read as raw bytes: 16-byte (128-bit) counters as two little-endian u64 halves, 6- and
7-byte counters via int.from_bytes. A row with `count` > 1 is an array of equal
fields (the SMART page's eight temperature sensors) and decodes to a tuple. Gaps
between rows become pad bytes, so an offset in the table is the offset in the page;
overlapping rows are refused at import time.

The converter is generated source (as dataclasses and namedtuple do it) so that a
decode is one struct.unpack and one tuple expression: a poll decodes two pages per
controller, and a Python loop over the fields costs ten times the unpack.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

__all__ = ["Field", "Layout", "PageError"]

# struct codes for the integer sizes the NVMe pages use; 16 = u128 as two u64 halves.
_CODES = {1: "B", 2: "H", 4: "I", 8: "Q", 16: "QQ"}


class PageError(ValueError):
    """A page that cannot be decoded: wrong length, or not the layout it claims to be."""


@dataclass(frozen=True)
class Field:
    offset: int
    size: int  # of one element
    name: str
    # What one unit of the raw value is: "count", "kelvin", "minutes", "hours",
    # "seconds", "percent", "data_units" (1000 x 512 bytes), "bytes", "bitmask", "id",
    # "version", "ascii" (space padded text), "raw" (bytes kept as they are).
    unit: str
    count: int = 1


def _ascii(raw: bytes) -> str:
    """Identify strings are space padded ASCII; some firmware pads with NULs instead."""
    return raw.decode("ascii", "replace").rstrip(" \x00")


def _uint(raw: bytes) -> int:
    return int.from_bytes(raw, "little")


class Layout:
    """A fixed-size page: its field table and the struct that reads all of it at once."""

    def __init__(self, name: str, size: int, fields: tuple[Field, ...]) -> None:
        self.name = name
        self.size = size
        self.fields = fields
        self.names = tuple(f.name for f in fields)
        by_offset = sorted(range(len(fields)), key=lambda i: fields[i].offset)
        fmt = ["<"]
        # Per field (in table order): the expression over the struct's items `v`.
        expressions: list[str] = [""] * len(fields)
        position = item = 0
        for index in by_offset:
            field = fields[index]
            if field.offset < position:
                raise ValueError(f"{name}: field {field.name} at {field.offset} overlaps")
            if field.offset > position:
                fmt.append(f"{field.offset - position}x")
            parts = []
            for _ in range(field.count):
                code, expression, items = self._element(field, item)
                fmt.append(code)
                parts.append(expression)
                item += items
            expressions[index] = parts[0] if field.count == 1 else f"({', '.join(parts)},)"
            position = field.offset + field.size * field.count
        if position > size:
            raise ValueError(f"{name}: fields end at {position}, past the page size {size}")
        fmt.append(f"{size - position}x")
        self.struct = struct.Struct("".join(fmt))
        assert self.struct.size == size
        source = f"def convert(v):\n    return ({', '.join(expressions)},)\n"
        namespace: dict[str, Any] = {"_ascii": _ascii, "_uint": _uint}
        exec(compile(source, f"<layout {name}>", "exec"), namespace)
        self._convert = namespace["convert"]

    @staticmethod
    def _element(field: Field, item: int) -> tuple[str, str, int]:
        """(struct code, expression, number of struct items) for one element."""
        if field.unit in ("ascii", "raw"):
            return (
                f"{field.size}s",
                (f"_ascii(v[{item}])" if field.unit == "ascii" else f"v[{item}]"),
                1,
            )
        if field.size == 16:
            return _CODES[16], f"(v[{item}] | v[{item + 1}] << 64)", 2
        if field.size in _CODES:
            return _CODES[field.size], f"v[{item}]", 1
        return f"{field.size}s", f"_uint(v[{item}])", 1

    def check(self, data: bytes) -> None:
        if len(data) != self.size:
            what = "empty" if not data else f"{len(data)} bytes"
            raise PageError(f"{self.name}: {what}, expected exactly {self.size} bytes")

    def values(self, data: bytes) -> tuple[Any, ...]:
        """Every field's value, in table order and the table's units. PageError on a bad
        length."""
        self.check(data)
        result: tuple[Any, ...] = self._convert(self.struct.unpack(data))
        return result

    def check_matches(self, cls: type) -> None:
        """The decoded dataclass takes the fields positionally: same names, same order."""
        names = tuple(getattr(cls, "__dataclass_fields__", {}))
        if names != self.names:
            raise TypeError(f"{cls.__name__} fields {names} differ from {self.name} {self.names}")
