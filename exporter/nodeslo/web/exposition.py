"""The exposition formats, rendered with what does not change cached.

`TextRenderer` writes byte for byte what `prometheus_client.exposition.generate_latest`
writes (text format 0.0.4), `OpenMetricsRenderer` what
`prometheus_client.openmetrics.exposition.generate_latest` writes (OpenMetrics 1.0, what
Prometheus asks for first), both with the default "underscores" name escaping:
tests/test_exposition.py checks it on random families, escapes and special floats
included. They are faster because a scrape's series are the same from one scrape to the
next: the `name{label="value",...} ` prefix of a series is escaped, sorted and formatted
once and looked up afterwards, and so are the HELP/TYPE headers; only values are
formatted on each scrape. A family with exemplars or native histograms (nodeslo has
none) is left to prometheus_client whole.

Other name escapings keep prometheus_client's encoders.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any, cast

from prometheus_client.core import Metric
from prometheus_client.openmetrics import exposition as om
from prometheus_client.openmetrics.exposition import (
    UNDERSCORES,
    escape_label_name,
    escape_metric_name,
)
from prometheus_client.utils import floatToGoString

from nodeslo.log import OnceLog

log = logging.getLogger("nodeslo.web")

# Go's float spelling, exactly as prometheus_client writes it (untyped upstream).
_go_float = cast(Callable[[float], str], floatToGoString)

# Series prefixes kept between scrapes; past this many (label values that change every
# scrape would otherwise grow it without end) the cache starts again from empty.
MAX_CACHED_SERIES = 50_000

# prometheus_client's munging of OpenMetrics types into the 0.0.4 text format.
_TEXT_TYPE = {
    "info": "gauge",
    "stateset": "gauge",
    "gaugehistogram": "histogram",
    "unknown": "untyped",
}
_NAME_SUFFIX = {"counter": "_total", "info": "_info"}
# Samples that prometheus_client moves out of their family into a gauge of their own.
_OM_SUFFIXES = ("_created", "_gsum", "_gcount")


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _escape_label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _header(name: str, mtype: str, documentation: str) -> str:
    escaped = escape_metric_name(name, UNDERSCORES)
    return f"# HELP {escaped} {_escape_help(documentation)}\n# TYPE {escaped} {mtype}\n"


class _CachingRenderer:
    """The caches a renderer keeps across scrapes: series prefixes and family headers.

    Safe to call from several threads: a cache entry is a pure function of its key, so
    a lost race only computes an entry twice.
    """

    def __init__(self, max_cached_series: int = MAX_CACHED_SERIES) -> None:
        self._max = max_cached_series
        self._prefixes: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}
        self._headers: dict[tuple[str, ...], str] = {}
        self._lock = threading.Lock()
        self._errors = OnceLog(log)

    def __call__(self, registry: Any) -> bytes:
        return self.render(registry.collect())

    def render(self, families: Iterable[Metric]) -> bytes:
        raise NotImplementedError

    def _unrenderable(self, name: str, labels: dict[str, str], exc: Exception) -> None:
        """A value no float can hold (an int past 1.8e308): that series is left out of
        this scrape, the rest is served; logged once per series."""
        self._errors.warn(f"render:{name}{sorted(labels.items())}", "value left out", err=str(exc))

    def _fresh_prefixes(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], str]:
        """The prefix cache, emptied first (headers too) once it outgrew its bound."""
        if len(self._prefixes) > self._max:
            with self._lock:
                self._prefixes.clear()
                self._headers.clear()
        return self._prefixes


class TextRenderer(_CachingRenderer):
    """Renders a registry's families in the text format."""

    def render(self, families: Iterable[Metric]) -> bytes:
        output: list[str] = []
        append = output.append
        prefixes = self._fresh_prefixes()
        for family in families:
            name = family.name
            mtype = family.type
            try:
                key = (name, mtype, family.documentation)
                header = self._headers.get(key)
                if header is None:
                    header = _header(
                        name + _NAME_SUFFIX.get(mtype, ""),
                        _TEXT_TYPE.get(mtype, mtype),
                        family.documentation,
                    )
                    self._headers[key] = header
                append(header)
                moved: dict[str, list[str]] | None = None
                for sample in family.samples:
                    sname = sample.name
                    labels = sample.labels
                    pkey = (sname, tuple(labels.items()))
                    prefix = prefixes.get(pkey)
                    if prefix is None:
                        prefix = prefixes[pkey] = _prefix(sname, labels)
                    try:
                        line = prefix + _go_float(sample.value)
                    except (OverflowError, TypeError, ValueError) as exc:
                        self._unrenderable(sname, labels, exc)
                        continue
                    if sample.timestamp is not None:
                        line += f" {int(float(sample.timestamp) * 1000):d}"
                    line += "\n"
                    if sname != name and sname.startswith(name):
                        suffix = sname[len(name) :]
                        if suffix in _OM_SUFFIXES:
                            if moved is None:
                                moved = {}
                            moved.setdefault(suffix, []).append(line)
                            continue
                    append(line)
            except Exception as exc:
                # As prometheus_client does: say which family could not be rendered.
                exc.args = (exc.args or ("",)) + (family,)
                raise
            if moved:
                for suffix, lines in sorted(moved.items()):
                    append(_header(name + suffix, "gauge", family.documentation))
                    output.extend(lines)
        return "".join(output).encode("utf-8")


def _prefix(name: str, labels: dict[str, str]) -> str:
    escaped = escape_metric_name(name, UNDERSCORES)
    if not labels:
        return escaped + " "
    pairs = ",".join(
        f'{escape_label_name(k, UNDERSCORES)}="{_escape_label_value(v)}"'
        for k, v in sorted(labels.items())
    )
    return f"{escaped}{{{pairs}}} "


class _Delegated(Exception):
    """A family this renderer leaves to prometheus_client."""


class _One:
    def __init__(self, family: Metric) -> None:
        self.family = family

    def collect(self) -> list[Metric]:
        return [self.family]


class OpenMetricsRenderer(_CachingRenderer):
    """Renders a registry's families as OpenMetrics."""

    def __init__(self, version: str = "1.0.0", max_cached_series: int = MAX_CACHED_SERIES) -> None:
        super().__init__(max_cached_series)
        self.version = version

    def render(self, families: Iterable[Metric]) -> bytes:
        output: list[str] = []
        prefixes = self._fresh_prefixes()
        for family in families:
            lines: list[str] = []
            append = lines.append
            try:
                key = (family.name, family.type, family.documentation, family.unit)
                header = self._headers.get(key)
                if header is None:
                    header = self._headers[key] = _om_header(*key)
                append(header)
                for sample in family.samples:
                    if sample.exemplar or sample.native_histogram:
                        raise _Delegated
                    labels = sample.labels
                    pkey = (sample.name, tuple(labels.items()))
                    prefix = prefixes.get(pkey)
                    if prefix is None:
                        prefix = prefixes[pkey] = _om_prefix(sample.name, labels)
                    value = sample.value
                    try:
                        line = prefix if value is None else prefix + _go_float(value)
                    except (OverflowError, TypeError, ValueError) as exc:
                        self._unrenderable(sample.name, labels, exc)
                        continue
                    if sample.timestamp is not None:
                        line += f" {sample.timestamp}"
                    append(line + "\n")
            except _Delegated:
                text: bytes = om.generate_latest(  # type: ignore[no-untyped-call]
                    _One(family), escaping=UNDERSCORES, version=self.version
                )
                output.append(text.decode("utf-8").removesuffix("# EOF\n"))
                continue
            except Exception as exc:
                exc.args = (exc.args or ("",)) + (family,)
                raise
            output.extend(lines)
        output.append("# EOF\n")
        return "".join(output).encode("utf-8")


def _om_header(name: str, mtype: str, documentation: str, unit: str) -> str:
    escaped = escape_metric_name(name, UNDERSCORES)
    help_text = _escape_label_value(documentation)
    header = f"# HELP {escaped} {help_text}\n# TYPE {escaped} {mtype}\n"
    if unit:
        header += f"# UNIT {escaped} {unit}\n"
    return header


def _om_name(name: str) -> str:
    # prometheus_client escapes OpenMetrics sample names with the label-name rules
    # (a colon becomes an underscore); the same here, so the bytes stay the same.
    return "".join(
        c
        if ("a" <= c <= "z" or "A" <= c <= "Z" or c == "_" or ("0" <= c <= "9" and i > 0))
        else "_"
        for i, c in enumerate(name)
    )


def _om_prefix(name: str, labels: dict[str, str]) -> str:
    escaped = _om_name(name)
    if not labels:
        return escaped + " "
    pairs = ",".join(
        f'{escape_label_name(k, UNDERSCORES)}="{_escape_label_value(v)}"'
        for k, v in sorted(labels.items())
    )
    return f"{escaped}{{{pairs}}} "
