"""Content negotiation for /metrics: `Accept` and `Accept-Encoding` -> a bounded choice.

As in Prometheus' client libraries (client_golang's expfmt.Negotiate), the answer is
one of a fixed set of formats, never something built from the client's text: an
unknown version, type or escaping falls back to the text format 0.0.4, whose
Content-Type is a constant. So no client string reaches a response header (a folded
header's CRLF included) or the renderers' caches, and 2,000 invented versions cost
nothing (the parsed answers are kept for the last 64 header values only).

Escaping: nodeslo's metric and label names are all valid legacy Prometheus names, so
`underscores` and `allow-utf-8` render the same bytes; either is served as asked, any
other escaping as `underscores` (as client_golang serves an unknown one).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

# An Accept header lists a handful of media ranges; past this many, the rest is ignored.
MAX_RANGES = 16


@dataclass(frozen=True)
class Format:
    content_type: str
    openmetrics: bool


TEXT = Format("text/plain; version=0.0.4; charset=utf-8", openmetrics=False)
_OM = "application/openmetrics-text; version=1.0.0; charset=utf-8"
OPENMETRICS = Format(_OM, openmetrics=True)
# What Prometheus 2 and 3 ask for (prometheus_client's spellings of the same format).
_OM_ESCAPED = {
    "underscores": Format(f"{_OM}; escaping=underscores", openmetrics=True),
    "allow-utf-8": Format(f"{_OM}; escaping=allow-utf-8", openmetrics=True),
}
FORMATS = (TEXT, OPENMETRICS, *_OM_ESCAPED.values())


def _parameters(parts: list[str]) -> dict[str, str]:
    out = {}
    for part in parts:
        name, sep, value = part.partition("=")
        if sep:
            out[name.strip().lower()] = value.strip().strip('"')
    return out


def _quality(params: dict[str, str]) -> float:
    try:
        q = float(params.get("q", "1"))
    except ValueError:
        return 0.0
    return q if 0.0 <= q <= 1.0 else 0.0


def _offer(media: str, params: dict[str, str]) -> Format | None:
    if media == "application/openmetrics-text":
        version = params.get("version")
        if version is None:
            return OPENMETRICS
        if version != "1.0.0":
            return None  # 0.0.1, 2.0.0, or invented: not served, try the next range
        return _OM_ESCAPED.get(params.get("escaping", ""), _OM_ESCAPED["underscores"])
    if media in ("text/plain", "*/*", "text/*"):
        return TEXT
    return None


# A scraper sends the same header on every scrape: parsed once (bounded, as the
# headers are the client's to choose).
@functools.lru_cache(maxsize=64)
def choose_format(accept: str | None) -> Format:
    """The format with the highest q among those offered; text 0.0.4 when none fits."""
    best, best_q = TEXT, -1.0
    for media_range in (accept or "").split(",", MAX_RANGES)[:MAX_RANGES]:
        media, *rest = media_range.split(";")
        params = _parameters(rest)
        q = _quality(params)
        offer = _offer(media.strip().lower(), params)
        if offer is not None and q > 0 and q > best_q:
            best, best_q = offer, q
    return best


@functools.lru_cache(maxsize=64)
def accepts_gzip(accept_encoding: str | None) -> bool:
    """True if gzip is acceptable: listed (or `*`) with a q above 0 (RFC 9110 12.5.3)."""
    gzip_q: float | None = None
    star_q: float | None = None
    for coding in (accept_encoding or "").split(",", MAX_RANGES)[:MAX_RANGES]:
        name, *rest = coding.split(";")
        name = name.strip().lower()
        if name in ("gzip", "x-gzip"):
            gzip_q = _quality(_parameters(rest))
        elif name == "*":
            star_q = _quality(_parameters(rest))
    if gzip_q is not None:
        return gzip_q > 0
    return star_q is not None and star_q > 0
