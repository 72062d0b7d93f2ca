"""The newest TLS version a ClientHello offers, read from its first bytes (peeked).

Used to give clients that speak nothing newer than TLS 1.1 a context of their own,
so allowing them never lowers what TLS 1.2 and 1.3 clients get. A pure decoder: no
I/O, and anything truncated or malformed is None (the caller then uses the modern
context, which refuses what it cannot serve).

Layout (RFC 8446 4.1.2, 5.1): record header (type 22, version, length), handshake
header (type 1, 24-bit length), legacy_version, random[32], session_id<0..32>,
cipher_suites<2..2^16-2>, compression_methods<1..2^8-1>, extensions<0..2^16-1>; the
supported_versions extension (43) lists versions newest clients actually offer.
"""

from __future__ import annotations

import struct

_HANDSHAKE = 22
_CLIENT_HELLO = 1
_SUPPORTED_VERSIONS = 43
# Largest ClientHello looked at: a record is at most 16 KiB plus its header.
MAX_HELLO = 5 + (1 << 14)


def _is_grease(version: int) -> bool:
    # RFC 8701 reserves 0x?A?A values that clients sprinkle in to keep servers honest.
    return version & 0x0F0F == 0x0A0A


def client_max_version(data: bytes) -> int | None:
    """The newest version offered (0x0301 TLS 1.0 ... 0x0304 TLS 1.3), or None."""
    try:
        if data[0] != _HANDSHAKE or data[5] != _CLIENT_HELLO:
            return None
        (legacy_version,) = struct.unpack_from("!H", data, 9)
        pos = 11 + 32
        pos += 1 + data[pos]  # session id
        (suites,) = struct.unpack_from("!H", data, pos)
        pos += 2 + suites
        pos += 1 + data[pos]  # compression methods
        if pos == len(data):
            return int(legacy_version)  # no extensions: a TLS 1.0-era client
        (extensions_length,) = struct.unpack_from("!H", data, pos)
        pos += 2
        end = pos + extensions_length
        while pos + 4 <= min(len(data), end):
            kind, length = struct.unpack_from("!HH", data, pos)
            pos += 4
            if kind == _SUPPORTED_VERSIONS:
                count = data[pos]
                listed = data[pos + 1 : pos + 1 + count]
                versions = [v for (v,) in struct.iter_unpack("!H", listed) if not _is_grease(v)]
                return max(versions) if versions else None
            pos += length
        if end > len(data):
            return None  # truncated: supported_versions may be in what is missing
        return int(legacy_version)
    except (IndexError, struct.error):
        return None
