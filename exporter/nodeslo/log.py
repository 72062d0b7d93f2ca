"""Structured logging in the formats Prometheus components use (logfmt, json).

Fields are passed as `extra={"fields": {...}}`; `OnceLog` keeps a scrape loop from
repeating the same complaint every 15 seconds.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

LEVELS = ("debug", "info", "warn", "error")
FORMATS = ("logfmt", "json")

_LEVEL_NAMES = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warn",
    logging.ERROR: "error",
    logging.CRITICAL: "error",
}


def _timestamp(record: logging.LogRecord) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ts": _timestamp(record),
        "level": _LEVEL_NAMES.get(record.levelno, "info"),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    extra = getattr(record, "fields", None)
    if isinstance(extra, Mapping):
        out.update(extra)
    if record.exc_info and record.exc_info[1] is not None:
        out["err"] = f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
    return out


def _logfmt_value(value: Any) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' ="\\\n\t'):
        escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    return text


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in _fields(record).items())


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), default=str, sort_keys=False)


def configure(level: str = "info", fmt: str = "logfmt") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel({"warn": logging.WARNING}.get(level, getattr(logging, level.upper())))


class OnceLog:
    """Logs each distinct (key, message) once until it is cleared.

    A malformed file is read on every scrape; the operator needs to hear about it
    once, and again only after it was fixed and broke anew. Bounded so a flood of
    distinct messages cannot grow memory without limit.
    """

    def __init__(self, logger: logging.Logger, limit: int = 4096) -> None:
        self._logger = logger
        self._seen: set[tuple[str, str]] = set()  # (key, message and fields)
        self._limit = limit
        self._lock = threading.Lock()

    def warn(self, key: str, message: str, **fields: Any) -> bool:
        """Log a warning unless this exact one was logged already. True if logged."""
        return self.log(logging.WARNING, key, message, **fields)

    def log(
        self,
        level: int,
        key: str,
        message: str,
        detail: dict[str, Any] | None = None,
        **fields: Any,
    ) -> bool:
        """`detail` is logged but does not make a message distinct: which command of a
        round timed out varies with when the BMC stopped, the problem does not."""
        entry = (key, f"{message} {sorted(fields.items())}")
        with self._lock:
            if entry in self._seen:
                return False
            if len(self._seen) >= self._limit:
                self._seen.clear()
            self._seen.add(entry)
        self._logger.log(level, message, extra={"fields": {"key": key, **fields, **(detail or {})}})
        return True

    def clear(self, key: str) -> bool:
        """Forget the messages of one key (its problem went away). True if any were known."""
        with self._lock:
            stale = {entry for entry in self._seen if entry[0] == key}
            self._seen -= stale
        return bool(stale)
