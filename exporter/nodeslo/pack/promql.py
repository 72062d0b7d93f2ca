"""Small PromQL renderers: numbers, label matchers, `le` bounds, aggregation clauses.

Rules are text; these helpers keep the few things that are easy to get subtly wrong in
one place: escaping of label values, numbers that round-trip, and the several ways one
histogram bound can be spelled in an `le` label.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal

from nodeslo.units import prom_duration

__all__ = [
    "by",
    "duration",
    "held_in_template_queries",
    "held_through_gaps",
    "held_while_unscraped",
    "held_while_unscraped_in_template_queries",
    "increase_seen",
    "instant_reads",
    "le_matcher",
    "le_spellings",
    "matchers",
    "number",
    "quote",
    "selector",
    "while_unscraped",
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
    or DIMM just seen, would alert on errors from before monitoring began. The guard is
    "the window's samples are not all equal": their standard deviation above 0, which
    both engines compute from the window's own samples only (changes() would not do: on
    VictoriaMetrics it counts a late-born series' first sample as a change), and which is
    exactly 0 for equal samples (Prometheus computes it incrementally from the running
    mean; victoria-metrics 1.79 checked: 0 for a constant series). It reads
    the window once: max_over_time > min_over_time, the same test, read it twice, and at
    1,000 hosts each read of the AER counters costs ~1.5 s a minute (a read costs per
    series, RESULTS.md). No `resets()`: a reset is a sample below an earlier one."""
    rng = f"{counter}[{window}]"
    return f"(increase({rng}) and stddev_over_time({rng}) > 0)"


# Prometheus' default lookback (--query.lookback-delta): how old a sample an instant
# selector still returns when no staleness marker ends its series.
LOOKBACK = "5m"

# What may surround an exporter series in the catalogue's PromQL: strings, matcher
# blocks and range brackets are copied whole (a series name inside them is no read).
_TOKENS = re.compile(
    r"""(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
      |(?P<matchers>\{(?:[^{}"'`]|"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)*\})
      |(?P<range>\[[^\]]*\])
      |(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)
      |(?P<space>\s+)
      |(?P<other>.)""",
    re.VERBOSE | re.DOTALL,
)
_OFFSET = re.compile(r"\s+offset\s+-?[0-9][0-9a-z]*", re.IGNORECASE)


def _instant_reads(expr: str, prefix: str, wrap: Callable[[str, str], str]) -> str:
    """`expr` with every instant read of a scraped series (named `prefix...`, with its
    matchers) replaced by `wrap(read, offset)`, `offset` "" or " offset 1h". Range reads
    (`x[w]`) and names inside strings and matchers are left as they are."""
    out: list[str] = []
    pos = 0
    while pos < len(expr):
        token = _TOKENS.match(expr, pos)
        assert token is not None  # `other` matches any one character
        pos = token.end()
        if token.lastgroup != "name" or not token.group().startswith(prefix):
            out.append(token.group())
            continue
        read = token.group()
        follows = _TOKENS.match(expr, pos)
        if follows is not None and follows.lastgroup == "matchers":
            read, pos = read + follows.group(), follows.end()
        if expr[pos:].lstrip().startswith(("[", "(")):
            out.append(read)  # a range read, or a function of that name: left alone
            continue
        offset = _OFFSET.match(expr, pos)
        shift = ""
        if offset is not None:
            shift, pos = " " + " ".join(offset.group().split()), offset.end()
        if expr[pos:].lstrip().startswith("@"):
            raise ValueError(f"an @ modifier on {read} is not supported: {expr}")
        out.append(wrap(read, shift))
    return "".join(out)


def instant_reads(expr: str, prefix: str = "nodeslo_") -> list[str]:
    """The instant reads of scraped series in `expr`, as written (offset included)."""
    found: list[str] = []

    def note(read: str, shift: str) -> str:
        found.append(read + shift)
        return read + shift

    _instant_reads(expr, prefix, note)
    return found


def held_through_gaps(expr: str, prefix: str = "nodeslo_", window: str = LOOKBACK) -> str:
    """Every instant read of a scraped series (named `prefix...`) in `expr` as
    `last_over_time(series[window])`: the same value while the series is scraped, and
    still that value through a failed scrape.

    A failed scrape writes a staleness marker into every series of the target: a plain
    selector then finds nothing until the next good scrape, so an alert reading it
    resolves and its `for` starts again. Range functions skip staleness markers, and
    over the lookback (5m, Prometheus' default) last_over_time returns what the plain
    selector returns whenever no marker is there. A series that truly ends is held for
    the window, then gone. Range reads (`x[w]`, whose functions skip markers already)
    and names inside strings and matchers are left as they are."""
    return _instant_reads(
        expr, prefix, lambda read, shift: f"last_over_time({read}[{window}]{shift})"
    )


def while_unscraped(held: str, up: str, on: str) -> str:
    """`held` only for hosts whose scrape fails now (`up` not 1, matched `on` their
    instance labels) and had a good one within the lookback: what a failed scrape keeps
    of a host, gone 5m after its exporter is (NodeSLOExporterDown has paged by then)."""
    return f"""{held}
  unless on ({on}) ({up} == 1)
  and on ({on}) (max_over_time({up}[{LOOKBACK}]) == 1)"""


def held_while_unscraped(
    expr: str, up: str, on: str, prefix: str = "nodeslo_", window: str = LOOKBACK
) -> str:
    """Every instant read of a scraped series in `expr` as it is, and, for a host whose
    scrape fails (`up` not 1, matched `on` its instance labels), as the lookback last
    held it: `(x or last_over_time(x[window]) unless on (…) (up == 1))`.

    For what an absence alert's annotation reads (the alert itself keeps its state from
    ALERTS, rules.kept_while_unscraped), and the absence alert that cannot read ALERTS
    back (catalog probe_absent_alert): a series that leaves a good scrape is missing
    at once, and a failed scrape, which stale-marks every series of the host, does not
    turn "no carrier" into "gone". One case slips: through a failed scrape within the
    window after a series left, it reads as present once more. An offset read is
    refused: the gate is `up` now, not then."""

    def held(read: str, shift: str) -> str:
        if shift:
            raise ValueError(f"an offset read of {read} cannot be held on `up` now: {expr}")
        return f"({read} or last_over_time({read}[{window}]) unless on ({on}) ({up} == 1))"

    return _instant_reads(expr, prefix, held)


# A query an annotation runs: a Go template's `printf "…"` whose result is piped to
# `query` (the catalogue writes label values as %q verbs, so no quote is inside).
_TEMPLATE_QUERY = re.compile(r'(printf ")((?:[^"\\]|\\.)*)(")')


def held_in_template_queries(text: str) -> str:
    """held_through_gaps() for the queries in an alert's annotation templates: the
    limit a page names is there through a failed scrape, as the page is."""
    return _TEMPLATE_QUERY.sub(
        lambda m: m.group(1) + held_through_gaps(m.group(2)) + m.group(3), text
    )


_VERB = re.compile(r"%(?:\[(\d+)\])?q")


def _indexed_verbs(query: str) -> str:
    """Every `%q` of a printf format as `%[n]q`, the argument it takes (Go's fmt: an
    unindexed verb takes the one after the previous verb's), so a read written twice
    takes its label values twice from one set of arguments."""
    last = 0

    def index(match: re.Match[str]) -> str:
        nonlocal last
        last = int(match.group(1)) if match.group(1) else last + 1
        return f"%[{last}]q"

    return _VERB.sub(index, query)


def held_while_unscraped_in_template_queries(text: str, up: str, on: str) -> str:
    """held_while_unscraped() for the queries in an alert's annotation templates: a page
    that names what its host reads says the same through a failed scrape."""
    escaped = up.replace('"', '\\"')  # inside the template's printf "…"

    def held(m: re.Match[str]) -> str:
        query = held_while_unscraped(_indexed_verbs(m.group(2)), escaped, on)
        return m.group(1) + query + m.group(3)

    return _TEMPLATE_QUERY.sub(held, text)


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
