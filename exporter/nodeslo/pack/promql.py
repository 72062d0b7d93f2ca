"""Small PromQL renderers: numbers, label matchers, `le` bounds, aggregation clauses.

Rules are text; these helpers keep the few things that are easy to get subtly wrong in
one place: escaping of label values, numbers that round-trip, and the several ways one
histogram bound can be spelled in an `le` label.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from decimal import Decimal

from nodeslo.units import prom_duration

__all__ = [
    "by",
    "duration",
    "increase_seen",
    "le_matcher",
    "le_spellings",
    "matchers",
    "number",
    "quote",
    "selector",
]


def number(value: float) -> str:
    """A PromQL literal that reads back as the same float in 12 significant digits."""
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {value}")
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.12g}"


def duration(seconds: float) -> str:
    return prom_duration(seconds)


def increase_seen(counter: str, window: str) -> str:
    """`increase(counter[window])`, kept only where the window's own samples rose or reset.

    On Prometheus the guard changes nothing: an increase above 0 needs a rise between two
    samples of the window, or a reset. MetricsQL's increase() (VictoriaMetrics, vmalert)
    also counts a series' first value as a rise from 0 when the series begins inside the
    window and that value is small: every error counter of a host just deployed, a drive
    or DIMM just seen, would alert on errors from before monitoring began. min and max
    over the window read the same samples on both engines (docs/scale-out.md). No
    `resets()`: a reset is a sample below an earlier one, so max > min holds already (and
    each range function reads the window again: at 1,000 hosts the AER alerts alone
    read ~5 M samples a minute for it)."""
    rng = f"{counter}[{window}]"
    return f"(increase({rng}) and max_over_time({rng}) > min_over_time({rng}))"


def quote(value: str) -> str:
    """A PromQL double-quoted string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def matchers(pairs: Iterable[tuple[str, str]], *extra: str) -> str:
    """`name="value"` equality matchers (escaped) plus any ready-made ones, comma-joined."""
    return ", ".join([*(f"{name}={quote(value)}" for name, value in pairs), *extra])


def selector(metric: str, pairs: Iterable[tuple[str, str]] = (), *extra: str) -> str:
    inside = matchers(pairs, *extra)
    return f"{metric}{{{inside}}}" if inside else metric


def by(labels: Sequence[str]) -> str:
    return ", ".join(labels)


def _shortest(value: float) -> tuple[str, int]:
    """The shortest round-tripping digits of a positive float and its decimal exponent."""
    _sign, digits, exponent = Decimal(repr(value)).normalize().as_tuple()
    assert isinstance(exponent, int)
    text = "".join(map(str, digits))
    return text, exponent + len(text) - 1


def _scientific(digits: str, exp: int) -> str:
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"


def le_spellings(bound: float) -> tuple[str, ...]:
    """Every way a scraped `le` label may spell this bound, sorted.

    Prometheus 2 stores the exporter's text as-is: Go clients write strconv's
    shortest form ("0.0001", "5e-05", "1"), client_python writes repr-like forms
    ("1.0", "1e+06"). Prometheus 3 normalises every bound to the OpenMetrics form
    ("1.0", "5e-05"). Hand-written exporters use plain decimals ("0.00005") or a
    two-digit exponent ("1e-04"). A rule that reads the threshold bucket must match
    them all, and nothing else.
    """
    if not (math.isfinite(bound) and bound > 0):
        raise ValueError(f"a latency threshold is a positive finite number, got {bound}")
    digits, exp = _shortest(bound)
    plain = format(Decimal(repr(bound)).normalize(), "f")
    # Go's strconv.FormatFloat(v, 'g', -1, 64) takes the exponent form below 1e-4 and
    # from 1e6 up (precision 6 decides when the precision is "shortest").
    go = _scientific(digits, exp) if exp < -4 or exp >= 6 else plain
    spellings = {
        go,
        repr(bound),  # Python's own, what client_python starts from
        _scientific(digits, exp),  # 1e-04, 5e-05, 1e+00
        plain,  # 0.0001, 0.00005, 1
    }
    if "." not in go and "e" not in go:
        spellings.add(go + ".0")  # the OpenMetrics / Prometheus 3 form of integers
    return tuple(sorted(spellings))


def le_matcher(bound: float) -> str:
    """`le=~"..."` matching exactly the spellings of `bound` (regexes are anchored)."""
    # Spellings hold digits, ".", "e", "+" and "-": only "." and "+" mean anything in RE2.
    alternatives = "|".join(s.replace(".", "\\.").replace("+", "\\+") for s in le_spellings(bound))
    return f"le=~{quote(alternatives)}"
