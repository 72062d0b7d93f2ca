"""The collector contract and the framework that contains collector failures.

A collector is a prometheus_client custom collector: `collect()` yields metric
families built from one pass over the kernel's files. Collectors never touch global
state, so a test builds one on a fixture root and asserts on its exact samples.

`CollectorSet` runs the enabled collectors for one scrape. A collector that raises is
reported by `nodeslo_collector_success{collector}=0`, its partial output dropped, and
its error logged once; the other collectors' metrics are served as usual.

Each collector runs on a thread of its own (one per collector, started on first use)
while the scrape waits at most `timeout` for it. A read that blocks (a hung sysfs
attribute on a sick device) makes that collector fail this scrape with a timeout
reason; its thread stays with the stuck read, and later scrapes skip the collector at
once, reporting it failed, until the read returns. So a stuck read costs one scrape
at most `timeout`, never a connection slot for ever, and never more than one thread.
"""

from __future__ import annotations

import argparse
import functools
import logging
import queue
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


# How long a scrape waits for one collector (--collector.timeout).
DEFAULT_TIMEOUT_SECONDS = 4.0


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
    def enabled_by_default(cls, options: argparse.Namespace) -> bool:
        """On unless switched by flag; a collector may depend on its options (the
        textfile collector is on when given a directory)."""
        return cls.default_enabled

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


class CollectorTimeout(Exception):
    """The collector did not finish within its deadline."""


class _Run:
    """One collect() of one collector: its result once done."""

    __slots__ = ("done", "error", "families", "started")

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.done = threading.Event()
        self.families: list[Metric] = []
        self.error: Exception | None = None


class _Runner:
    """A collector's own thread. Runs never overlap: a scrape that finds a run in
    flight (a concurrent scrape's, or a stuck one) shares it instead of starting one."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector
        self._lock = threading.Lock()
        self._current: _Run | None = None
        self._queue: queue.SimpleQueue[_Run | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def run(self, timeout: float) -> tuple[list[Metric], Exception | None]:
        """The families of a collection, or why there are none; waits at most until
        `timeout` after that collection started."""
        with self._lock:
            run = self._current
            if run is None or run.done.is_set():
                run = self._current = _Run()
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._loop, name=f"collector-{self.collector.name}", daemon=True
                    )
                    self._thread.start()
                self._queue.put(run)
        if not run.done.wait(max(0.0, run.started + timeout - time.monotonic())):
            waited = time.monotonic() - run.started
            return [], CollectorTimeout(
                f"no result within {timeout:g}s (running for {waited:.1f}s: a blocking read?)"
            )
        return run.families, run.error

    def _loop(self) -> None:
        while (run := self._queue.get()) is not None:
            try:
                # Empty families are dropped: absent hardware exports nothing, not a bare HELP.
                run.families = [f for f in self.collector.collect() if f.samples]
            except Exception as exc:  # a collector bug or a hostile file must not fail the scrape
                run.error = exc
            run.done.set()

    def stop(self) -> None:
        self._queue.put(None)


class CollectorSet:
    """Runs the enabled collectors for a scrape, containing each one's failures."""

    def __init__(
        self,
        collectors: Iterable[Collector],
        errors: OnceLog,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self.collectors = list(collectors)
        self.timeout = timeout
        self.status: dict[str, CollectorStatus] = {
            c.name: CollectorStatus() for c in self.collectors
        }
        self._runners = {c.name: _Runner(c) for c in self.collectors}
        self._errors = errors
        self._lock = threading.Lock()

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self, only: frozenset[str] | None = None) -> Iterator[Metric]:
        """Every collector's families, or those of the collectors named in `only`
        (a scrape's collect[] parameter)."""
        success = COLLECTOR_SUCCESS.family()
        duration = COLLECTOR_DURATION.family()
        for collector in self.collectors:
            if only is not None and collector.name not in only:
                continue
            families, status = self._run(collector)
            yield from families
            add(success, [collector.name], 1.0 if status.success else 0.0)
            add(duration, [collector.name], status.duration_seconds)
        yield success
        yield duration

    def _run(self, collector: Collector) -> tuple[list[Metric], CollectorStatus]:
        start = time.perf_counter()
        key = f"collector:{collector.name}"
        families, exc = self._runners[collector.name].run(self.timeout)
        if exc is None:
            ok, error = True, ""
            if self._errors.clear(key):
                log.info("collector recovered", extra={"fields": {"collector": collector.name}})
        else:
            families, ok, error = [], False, f"{type(exc).__name__}: {exc}"
            reason = "timeout" if isinstance(exc, CollectorTimeout) else "error"
            self._errors.log(
                logging.ERROR,
                key,
                "collector failed",
                collector=collector.name,
                reason=reason,
                err=error if reason == "error" else f"no result within {self.timeout:g}s",
            )
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
        for runner in self._runners.values():
            runner.stop()
