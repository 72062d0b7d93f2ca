"""The collector contract and the framework that contains collector failures.

A collector is a prometheus_client custom collector: `collect()` yields metric
families built from one pass over the kernel's files. Collectors never touch global
state, so a test builds one on a fixture root and asserts on its exact samples.

`CollectorSet` runs the enabled collectors for one scrape. A collector that raises is
reported by `nodeslo_collector_success{collector}=0`, its partial output dropped, and
its error logged once; the other collectors' metrics are served as usual.

The collectors run on a worker thread while the scrape waits at most `timeout` for
each. A read that blocks (a hung sysfs attribute on a sick device) makes that
collector fail this scrape with a timeout reason; the worker stays with the stuck read
and a new one runs the other collectors; later scrapes skip the stuck collector at
once, reporting it failed, until the read returns. So a stuck read costs one scrape
at most `timeout`, never a connection slot for ever, and never more than one thread.
"""

from __future__ import annotations

import argparse
import collections
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
from nodeslo.readers import ScrapeReads, sharing

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
    """One collect() of one collector: its result once finished."""

    __slots__ = (
        "collector",
        "error",
        "families",
        "finished",
        "overran",
        "reads",
        "started",
        "took",
    )

    def __init__(self, collector: Collector, reads: ScrapeReads) -> None:
        self.collector = collector
        self.reads = reads  # shared with the other collectors of its scrape
        self.started: float | None = None  # monotonic; None while queued
        self.took = 0.0
        self.finished = False
        self.overran = False  # its deadline passed: its worker was given up on
        self.families: list[Metric] = []
        self.error: Exception | None = None


class _Worker:
    """The thread that runs the queued collections, one after the other."""

    __slots__ = ("abandoned", "current", "thread")

    def __init__(self) -> None:
        self.current: _Run | None = None
        self.abandoned = False  # stuck in `current`: a replacement took the queue
        self.thread: threading.Thread | None = None


class CollectorSet:
    """Runs the enabled collectors for a scrape, containing each one's failures.

    One worker thread runs a scrape's collections in turn (a thread per collector cost
    two context switches per collector and scrape: a third of a small host's scrape).
    The scrape waits for each collection at most `timeout` after it started. One that
    overruns is given up on with its worker, which stays with the stuck read and ends
    once it returns; a new worker takes over the rest of the queue. A collector's runs
    never overlap: a scrape that finds one queued, in flight or stuck shares it (a
    stuck one fails that scrape at once). Threads: one worker, plus one per collector
    stuck in a read.
    """

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
        self._errors = errors
        self._lock = threading.Lock()
        self._queued = threading.Condition(self._lock)  # work for the worker, or close
        self._finished = threading.Condition(self._lock)  # the queue ran dry
        self._queue: collections.deque[_Run] = collections.deque()
        self._runs: dict[str, _Run] = {}  # each collector's latest run
        self._worker: _Worker | None = None
        self._closed = False

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self, only: frozenset[str] | None = None) -> Iterator[Metric]:
        """Every collector's families, or those of the collectors named in `only`
        (a scrape's collect[] parameter)."""
        chosen = [c for c in self.collectors if only is None or c.name in only]
        runs = self._submit(chosen)
        self._await(runs)
        success = COLLECTOR_SUCCESS.family()
        duration = COLLECTOR_DURATION.family()
        for collector, run in zip(chosen, runs, strict=True):
            families, status = self._outcome(collector, run)
            yield from families
            add(success, [collector.name], 1.0 if status.success else 0.0)
            add(duration, [collector.name], status.duration_seconds)
        yield success
        yield duration

    def _submit(self, chosen: list[Collector]) -> list[_Run]:
        """Each collector's run: the one in progress, or a new one queued."""
        runs = []
        reads = ScrapeReads()
        with self._lock:
            queued = False
            for collector in chosen:
                run = self._runs.get(collector.name)
                if run is None or run.finished:
                    run = self._runs[collector.name] = _Run(collector, reads)
                    self._queue.append(run)
                    queued = True
                runs.append(run)
            if queued:
                if self._worker is None:
                    self._start_worker()
                self._queued.notify()
        return runs

    def _start_worker(self) -> None:
        worker = self._worker = _Worker()
        worker.thread = threading.Thread(
            target=self._work, args=(worker,), name="collectors", daemon=True
        )
        worker.thread.start()

    def _work(self, me: _Worker) -> None:
        lock = self._lock
        run: _Run | None = None
        families: list[Metric] = []
        error: Exception | None = None
        while True:
            with lock:
                # The next run starts as the last one ends: `current` is None only while
                # the queue is empty, so a waiter never sleeps past a deadline.
                if run is not None:
                    run.took = time.monotonic() - (run.started or 0.0)
                    run.families, run.error, run.finished = families, error, True
                    me.current = None
                    if me.abandoned:
                        return  # its replacement has the queue
                    if not self._queue:
                        self._finished.notify_all()
                while not self._queue and not self._closed:
                    self._queued.wait()
                if self._closed:
                    return
                run = me.current = self._queue.popleft()
                run.started = time.monotonic()
            sharing(run.reads)
            try:
                # Empty families are dropped: absent hardware exports nothing, not a bare HELP.
                families = [f for f in run.collector.collect() if f.samples]
                error = None
            except Exception as exc:  # a collector bug or a hostile file must not fail the scrape
                families, error = [], exc
            sharing(None)

    def _await(self, runs: list[_Run]) -> None:
        """Until every run has finished or overrun its deadline."""
        with self._lock:
            while True:
                now = time.monotonic()
                self._give_up_overrun(now)
                if self._closed or all(r.finished or r.overran for r in runs):
                    return
                worker = self._worker
                current = worker.current if worker is not None else None
                if current is not None and current.started is not None:
                    wait = current.started + self.timeout - now
                else:
                    wait = self.timeout  # between runs: woken when the queue ran dry
                self._finished.wait(max(wait, 0.001))

    def _give_up_overrun(self, now: float) -> None:
        """The worker's run overran its deadline: leave the worker with it (a read
        that blocks), hand the queue to a new one. Under the lock."""
        worker = self._worker
        if worker is None or worker.current is None:
            return
        run = worker.current
        if run.started is None or now - run.started < self.timeout:
            return
        run.overran = True
        worker.abandoned = True
        assert worker.thread is not None
        worker.thread.name = f"collector-{run.collector.name}"  # who holds it, in a dump
        self._worker = None
        if self._queue and not self._closed:
            self._start_worker()

    def _outcome(self, collector: Collector, run: _Run) -> tuple[list[Metric], CollectorStatus]:
        key = f"collector:{collector.name}"
        if run.finished:
            exc, took = run.error, run.took
        elif run.started is None:  # still queued when the set was closed (shutdown)
            exc, took = CollectorTimeout("not run: the collectors are shutting down"), 0.0
        else:
            took = time.monotonic() - run.started
            exc = CollectorTimeout(
                f"no result within {self.timeout:g}s (running for {took:.1f}s: a blocking read?)"
            )
        if exc is None:
            families, ok, error = run.families, True, ""
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
        status = CollectorStatus(ok, took, error, time.time())
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
        with self._lock:
            self._closed = True
            self._queued.notify_all()
            self._finished.notify_all()  # scrapes still waiting answer now
