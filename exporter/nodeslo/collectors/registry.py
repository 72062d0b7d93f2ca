"""The catalogue of collectors; each collector module registers itself with one line."""

from __future__ import annotations

from typing import TypeVar

from nodeslo.collectors.base import Collector

C = TypeVar("C", bound=type[Collector])

COLLECTORS: dict[str, type[Collector]] = {}


def register(cls: C) -> C:
    if cls.name in COLLECTORS:
        raise ValueError(f"collector {cls.name!r} registered twice")
    COLLECTORS[cls.name] = cls
    return cls
