"""The collector contract and the framework that contains collector failures.

A collector is a prometheus_client custom collector: `collect()` yields metric
families built from one pass over the kernel's files. Collectors never touch global
state, so a test builds one on a fixture root and asserts on its exact samples.

`CollectorSet` runs the enabled collectors for one scrape. A collector that raises is
reported by `nodeslo_collector_success{collector}=0`, its partial output dropped, and
its error logged once; the other collectors' metrics are served as usual.
"""

from __future__ import annotations

import argparse
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import ClassVar

from prometheus_client.core import Metric

from nodeslo.log import OnceLog
from nodeslo.metrics import Desc, add
from nodeslo.paths import Roots
from nodeslo.profile import Profile, load_profile

log = logging.getLogger("nodeslo.collector")

COLLECTOR_SUCCESS = Desc(
    "nodeslo_collector_success",
    "gauge",
    "1 when the collector's last run completed, 0 when it failed.",
    ("collector",),
)
COLLECTOR_DURATION = Desc(
    "nodeslo_collector_duration_seconds",
    "gauge",
    "Time the collector's last run took.",
    ("collector",),
)


@functools.cache
def _default_profile() -> Profile:
    return load_profile()


@dataclass
class CollectorContext:
    """What a collector may depend on: roots, its flags, the profile, the error log."""

    roots: Roots = field(default_factory=Roots)
    options: argparse.Namespace = field(default_factory=argparse.Namespace)
    errors: OnceLog = field(default_factory=lambda: OnceLog(log))
    # Returns the profile in force; reloaded on SIGHUP, so never keep its result.
    profile: Callable[[], Profile] = _default_profile

    def option(self, name: str, default: object = None) -> object:
        return getattr(self.options, name, default)


class Collector:
    """Base class: subclasses set `name`, `help`, and implement `collect()`."""

    name: ClassVar[str]
    help: ClassVar[str]
    default_enabled: ClassVar[bool] = True

    def __init__(self, ctx: CollectorContext) -> None:
        self.ctx = ctx

    @classmethod
    def add_arguments(cls, parser: argparse._ArgumentGroup) -> None:
        """Declare collector-specific flags (`--collector.<name>.<option>`)."""

    @classmethod
    def prepare_privileged(cls, options: argparse.Namespace) -> None:
        """Set up what needs root (fork a helper, open a root-only file), before the
        daemon binds its port and drops privileges (`--run-as-user`). No threads yet."""

    def collect(self) -> Iterable[Metric]:
        raise NotImplementedError

    def describe(self) -> Iterable[Metric]:
        # Registering must not trigger a collection.
        return ()

    def skip(self, key: str, err: Exception) -> None:
        """A value that could not be read: skip it, log the reason once."""
        self.ctx.errors.warn(f"{self.name}:{key}", str(err), collector=self.name)

    def start(self) -> None:
        """Start background work (pollers, probes). Called once the daemon is set up."""

    def profile_changed(self) -> None:
        """The profile was reloaded (SIGHUP); re-read whatever came from it."""

    def close(self) -> None:
        """Stop background work. Called on shutdown; must return within a second."""


@dataclass
class CollectorStatus:
    success: bool | None = None
    duration_seconds: float = 0.0
    error: str = ""
    last_run: float = 0.0


class CollectorSet:
    """Runs the enabled collectors for a scrape, containing each one's failures."""

    def __init__(self, collectors: Iterable[Collector], errors: OnceLog) -> None:
        self.collectors = list(collectors)
        self.status: dict[str, CollectorStatus] = {
            c.name: CollectorStatus() for c in self.collectors
        }
        self._errors = errors
        self._lock = threading.Lock()

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterator[Metric]:
        success = COLLECTOR_SUCCESS.family()
        duration = COLLECTOR_DURATION.family()
        for collector in self.collectors:
            families, status = self._run(collector)
            yield from families
            add(success, [collector.name], 1.0 if status.success else 0.0)
            add(duration, [collector.name], status.duration_seconds)
        yield success
        yield duration

    def _run(self, collector: Collector) -> tuple[list[Metric], CollectorStatus]:
        start = time.perf_counter()
        key = f"collector:{collector.name}"
        try:
            # Empty families are dropped: absent hardware exports nothing, not a bare HELP line.
            families = [f for f in collector.collect() if f.samples]
            ok, error = True, ""
        except Exception as exc:  # a collector bug or a hostile file must not fail the scrape
            families, ok, error = [], False, f"{type(exc).__name__}: {exc}"
            self._errors.log(
                logging.ERROR, key, "collector failed", collector=collector.name, err=error
            )
        else:
            if self._errors.clear(key):
                log.info("collector recovered", extra={"fields": {"collector": collector.name}})
        status = CollectorStatus(ok, time.perf_counter() - start, error, time.time())
        with self._lock:
            self.status[collector.name] = status
        return families, status

    def _each(self, action: str) -> None:
        for collector in self.collectors:
            try:
                getattr(collector, action)()
            except Exception:
                log.exception(
                    f"collector {action} failed", extra={"fields": {"collector": collector.name}}
                )

    def start(self) -> None:
        self._each("start")

    def profile_changed(self) -> None:
        self._each("profile_changed")

    def close(self) -> None:
        self._each("close")
