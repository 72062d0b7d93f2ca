"""Binary layouts of IPMI responses and records, written as the specification's tables.

The table-plus-struct machinery is NVMe's (`nodeslo.nvme.layout`): a `Layout` of
`Field(offset, size, name, unit)` rows compiled into one `struct.Struct`. IPMI data is
little-endian too; bit fields that straddle bytes (M, B, exponents) are assembled by
the decoders from the raw bytes a layout returns.
"""

from __future__ import annotations

from nodeslo.nvme.layout import Field, Layout, PageError

__all__ = ["DecodeError", "Field", "Layout"]


class DecodeError(PageError):
    """A response or record that cannot be decoded (too short, inconsistent)."""
