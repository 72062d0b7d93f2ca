"""The probes as seen by a scrape: merged histograms and counters, read from memory.

Each probe runs in its own process (see `storage`, `wakeup`); a supervisor thread merges
its reports here. `collect()` only copies what was merged: a scrape never waits on a
probe. One collector, `probes`, holds both: it is part of the daemon's CollectorSet (so
it gets `nodeslo_collector_success{collector="probes"}` and the start/profile_changed/
close hooks) but not of the `--collector.*` catalogue: the probes have `--probe.*` flags.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator

from prometheus_client.core import Metric

from nodeslo.collectors.base import Collector, CollectorContext
from nodeslo.metrics import Desc, add
from nodeslo.probes import storage, wakeup
from nodeslo.probes.histogram import LatencyHistogram, add_histogram, latency_bounds
from nodeslo.probes.ledger import StorageLedger
from nodeslo.probes.protocol import Message
from nodeslo.probes.remote import RemoteProbe, RemoteProbeError
from nodeslo.probes.settings import (
    StorageSettings,
    WakeupSettings,
    storage_settings,
    wakeup_settings,
)
from nodeslo.probes.supervisor import Backoff, ProbeProcess

log = logging.getLogger("nodeslo.probe")

PROBE_UP = Desc(
    "nodeslo_probe_up",
    "gauge",
    "1 when the probe's process runs, reports, and its last sample of every target "
    "succeeded; 0 when it failed, hung, or its process is down.",
    ("probe",),
)
PROBE_RESTARTS = Desc(
    "nodeslo_probe_restarts_total",
    "counter",
    "Times the probe's process exited, crashed, hung or failed to start and was restarted.",
    ("probe",),
)
IO_LATENCY = Desc(
    "nodeslo_probe_io_latency_seconds",
    "histogram",
    "Completion time of one 4 KiB probe I/O at its intended start (write_sync = "
    "O_DIRECT|O_DSYNC write or write + fdatasync, read = O_DIRECT read at a random offset); "
    "operations overdue or missed are observed at their age when counted, a lower bound.",
    ("target", "op"),
)
IO_ERRORS = Desc(
    "nodeslo_probe_io_errors_total",
    "counter",
    "Probe I/O samples that failed (target missing, full, read-only, on another file "
    "system, I/O error).",
    ("target", "op"),
)
IO_OVERDUE = Desc(
    "nodeslo_probe_io_overdue_total",
    "counter",
    "Probe I/Os counted bad while still in flight, once older than the largest SLO "
    "threshold on the operation (also in the latency histogram; not again on completion).",
    ("target", "op"),
)
IO_MISSED = Desc(
    "nodeslo_probe_io_missed_total",
    "counter",
    "Intended probe I/Os that never started, counted bad (in the latency histogram): "
    "reason blocked = the previous one of that kind was still in flight, probe_down = no "
    "probe process was running.",
    ("target", "op", "reason"),
)
IO_STALLED = Desc(
    "nodeslo_probe_io_stalled_seconds",
    "gauge",
    "Seconds since a probe I/O of this kind on the target was last seen well (an attempt "
    "completed, with success or error, or none due), or since the target was configured: "
    "about 0 while I/O completes; grows while one hangs or no probe process runs.",
    ("target", "op"),
)
IO_FAILING = Desc(
    "nodeslo_probe_io_failing",
    "gauge",
    "1 while the last attempt of this probe I/O on the target failed, with the reason: "
    + ", ".join(storage.REASONS)
    + ". Absent while it succeeds.",
    ("target", "op", "reason"),
)
STORAGE_TARGET_INFO = Desc(
    "nodeslo_probe_storage_target_info",
    "gauge",
    "Always 1: a storage probe target's kind (file = probe file in a directory, block = "
    "device read only), I/O mode (direct = O_DIRECT; buffered = O_DIRECT refused, writes "
    "fdatasync'd, read block dropped from the page cache first) and the block device "
    "measured, fixed when the probe started.",
    ("target", "kind", "mode", "device"),
)
WAKEUP_LATENCY = Desc(
    "nodeslo_probe_wakeup_latency_seconds",
    "histogram",
    "How late a periodic absolute-deadline timer sleep woke up (CLOCK_MONOTONIC, 1 ns slack).",
    ("engine", "policy"),
)
WAKEUP_ENGINE = Desc(
    "nodeslo_probe_wakeup_engine_info",
    "gauge",
    "Always 1: the engine the wake-up probe measures with (cyclictest, or python: "
    "+~25 us bias) and its policy, next to the engine the profile or flag requested "
    "(auto = cyclictest when installed). requested!=python with engine=python is a fallback.",
    ("requested", "engine", "policy"),
)
WAKEUP_MISSED = Desc(
    "nodeslo_probe_wakeup_missed_total",
    "counter",
    "Wake-ups of the probe's timer that nothing measured, counted bad (in the latency "
    "histogram, at their lateness when counted, a lower bound): reason engine_failed = a "
    "cyclictest burst failed, hung or was killed; probe_down = no probe process was running.",
    ("reason",),
)
WAKEUP_MISSED_REASONS = ("engine_failed", "probe_down")
WAKEUP_INTERVAL = Desc(
    "nodeslo_probe_wakeup_interval_seconds",
    "gauge",
    "Period of the wake-up probe's timer.",
)

# A storage I/O in flight this long makes the probe down (a hung device), though it may
# still complete and be counted in a high bucket.
STUCK_SECONDS = 5.0
STORAGE_REPORT_TIMEOUT = 10.0
# Until its first report: Python takes seconds to start on a loaded host (a minute under
# emulation); killing it sooner would only loop. The stall grows meanwhile all the same.
STORAGE_START_TIMEOUT = 60.0
WAKEUP_REPORT_TIMEOUT = 30.0  # > a cyclictest burst (10 s) plus its start-up


class _Probe:
    probe: str
    report_timeout: float
    start_timeout: float | None = None

    def __init__(self, ctx: CollectorContext, backoff: Backoff | None = None) -> None:
        self.ctx = ctx
        self._backoff = backoff
        self._lock = threading.Lock()
        self._process: ProbeProcess | RemoteProbe | None = None
        self._started = False

    def _run(self, enabled: bool, command: list[str]) -> None:
        if not enabled:
            if self._process is not None:
                self._process.stop()
                self._process = None
            return
        if self._process is None:
            self._process = ProbeProcess(
                self.probe,
                command,
                self._on_message,
                report_timeout=self.report_timeout,
                backoff=self._backoff,
                errors=self.ctx.errors,
                on_exit=self._on_exit,
                start_timeout=self.start_timeout,
            )
            self._process.start()
        elif isinstance(self._process, ProbeProcess):
            self._process.replace(command)

    def _on_message(self, message: Message) -> None:
        raise NotImplementedError

    def _on_exit(self, reason: str) -> None:
        """The probe's process ended (not stopped or replaced by the daemon)."""

    @property
    def enabled(self) -> bool:
        raise NotImplementedError

    def up(self) -> bool:
        process = self._process
        return process is not None and process.reporting() and self._healthy()

    @property
    def restarts(self) -> int:
        return self._process.restarts if self._process is not None else 0

    def start(self) -> None:
        self.apply()

    def apply(self) -> None:
        raise NotImplementedError

    def collect(self) -> Iterator[Metric]:
        raise NotImplementedError

    def _healthy(self) -> bool:
        return True

    def _warn(self, key: str, message: str, **fields: str) -> None:
        self.ctx.errors.warn(f"probe:{self.probe}:{key}", message, probe=self.probe, **fields)

    def close(self) -> None:
        if self._process is not None:
            self._process.stop()


class StorageProbe(_Probe):
    probe = "storage"
    report_timeout = STORAGE_REPORT_TIMEOUT
    start_timeout = STORAGE_START_TIMEOUT

    def __init__(
        self,
        ctx: CollectorContext,
        backoff: Backoff | None = None,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        super().__init__(ctx, backoff)
        self.settings: StorageSettings | None = None
        self.ledger = StorageLedger(clock)
        self._failing: dict[str, bool] = {}

    @property
    def enabled(self) -> bool:
        return self.settings is not None and self.settings.enabled

    def apply(self) -> None:
        new = storage_settings(self.ctx.profile(), self.ctx.options)
        if new == self.settings:
            return
        bounds = latency_bounds(new.thresholds)
        self.ledger.configure(new.targets if new.enabled else (), new.rate, bounds, new.overdue)
        config = storage.Config(
            targets=new.targets,
            rate=new.rate,
            file_size=new.file_size,
            bounds=bounds,
            overdue=new.overdue,
            sysfs=self.ctx.roots.sysfs,
        )
        command = [sys.executable, "-m", "nodeslo.probes.storage", config.to_json()]
        self._run(new.enabled, command)
        if new.enabled:
            log.info(
                "storage probe configured",
                extra={"fields": {"targets": ",".join(new.targets), "rate": new.rate}},
            )
        self.settings = new

    def _on_exit(self, reason: str) -> None:
        self.ledger.process_ended()

    def _on_message(self, message: Message) -> None:
        self.ledger.merge(message)
        kind = message["t"]
        if kind == "err":
            # Keyed by target and reason: a target refused for both operations is one line.
            self._warn(
                f"{message['target']}:{message['reason']}",
                "storage probe failing",
                target=str(message["target"]),
                reason=str(message["reason"]),
                err=str(message["msg"]),
            )
        elif kind == "target":
            log.info(
                "storage probe target",
                extra={"fields": {k: message[k] for k in ("target", "kind", "mode", "device")}},
            )
            if message["mode"] == "buffered":
                self._warn(
                    f"{message['target']}:mode",
                    "O_DIRECT refused: timing write + fdatasync, reads after dropping the cache",
                    target=str(message["target"]),
                )
        elif kind == "status":
            failing = self.ledger.failing()
            with self._lock:
                was, self._failing = self._failing, failing
            for target, bad in failing.items():
                if was.get(target) and not bad:
                    for reason in storage.REASONS:
                        self.ctx.errors.clear(f"probe:{self.probe}:{target}:{reason}")
                    log.info("storage probe target recovered", extra={"fields": {"target": target}})

    def _healthy(self) -> bool:
        return self.ledger.healthy(STUCK_SECONDS)

    def collect(self) -> Iterator[Metric]:
        settings = self.settings
        if settings is None or not settings.enabled:
            return
        latency, errors, overdue, missed, stalled, failing, info = (
            IO_LATENCY.family(),
            IO_ERRORS.family(),
            IO_OVERDUE.family(),
            IO_MISSED.family(),
            IO_STALLED.family(),
            IO_FAILING.family(),
            STORAGE_TARGET_INFO.family(),
        )
        for lane in self.ledger.view():
            labels = [lane.target, lane.op]
            add_histogram(latency, labels, lane.histogram)
            add(errors, labels, lane.errors)
            add(overdue, labels, lane.overdue)
            for reason, n in sorted(lane.missed.items()):
                add(missed, [*labels, reason], n)
            add(stalled, labels, lane.stalled_seconds)
            if lane.failing:
                add(failing, [*labels, lane.failing], 1)
        for target, (kind, mode, device) in sorted(self.ledger.info().items()):
            add(info, [target, kind, mode, device], 1)
        yield from (latency, errors, overdue, missed, stalled, failing, info)


class WakeupProbe(_Probe):
    """The wake-up probe's histograms, merged from its process's reports.

    While no probe process runs (it crashed, hung and was killed, or failed to start;
    not a reload's replacement), every timer period from the end of what its reports
    covered to the next process's hello is a missed wake-up with the reason
    `probe_down`, observed in the histogram of the engine last in use as soon as a
    scrape or the hello finds it due: a probe that cannot run burns the wake-up SLO
    instead of silencing it.
    """

    probe = "wakeup"
    report_timeout = WAKEUP_REPORT_TIMEOUT

    def __init__(
        self,
        ctx: CollectorContext,
        backoff: Backoff | None = None,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        super().__init__(ctx, backoff)
        self.settings: WakeupSettings | None = None
        self._histograms: dict[tuple[str, str], LatencyHistogram] = {}
        self._bounds: tuple[float, ...] = ()
        self._engine: tuple[str, str, str] | None = None
        self._clock = clock
        self._missed = dict.fromkeys(WAKEUP_MISSED_REASONS, 0)
        self._covered_ns: int | None = None  # the reports cover time until here
        self._gap_next_ns: int | None = None  # the next unmeasured deadline of an open gap

    @property
    def enabled(self) -> bool:
        return self.settings is not None and self.settings.enabled

    def _run_remote(self, enabled: bool, path: str, config: str) -> None:
        """The probe process connects to `path` (its own unit or container, holding
        CAP_SYS_NICE for cyclictest) instead of being started here."""
        if not enabled:
            self._run(False, [])
            return
        if isinstance(self._process, RemoteProbe):
            self._process.replace(config)
            return
        remote = RemoteProbe(
            self.probe,
            path,
            config,
            self._on_message,
            report_timeout=self.report_timeout,
            errors=self.ctx.errors,
            on_exit=self._on_exit,
        )
        try:
            remote.start()
        except RemoteProbeError as exc:
            # The daemon serves on; the probe is down (nodeslo_probe_up 0) and says why.
            log.error("cannot listen for the wake-up probe", extra={"fields": {"err": str(exc)}})
            return
        self._process = remote

    def apply(self) -> None:
        new = wakeup_settings(self.ctx.profile(), self.ctx.options)
        if new == self.settings:
            return
        bounds = latency_bounds(new.thresholds)
        with self._lock:
            if bounds != self._bounds:
                self._histograms.clear()
                self._bounds = bounds
        config = wakeup.Config(
            engine=new.engine,
            interval_ns=round(new.interval_seconds * 1e9),
            policy=new.policy,
            bounds=bounds,
        )
        with self._lock:
            if self._covered_ns is None:  # a first process that never reports: a gap from now
                self._covered_ns = self._clock()
        socket_path = self.ctx.option("probe_wakeup_socket")
        if socket_path:
            self._run_remote(new.enabled, str(socket_path), config.to_json())
        else:
            command = [sys.executable, "-m", "nodeslo.probes.wakeup", config.to_json()]
            self._run(new.enabled, command)
        self.settings = new

    def _on_exit(self, reason: str) -> None:
        with self._lock:
            if self._gap_next_ns is None and self.settings is not None:
                start = self._covered_ns if self._covered_ns is not None else self._clock()
                self._gap_next_ns = start + self._interval_ns()
            self._covered_ns = None

    def _interval_ns(self) -> int:
        assert self.settings is not None
        return max(1, round(self.settings.interval_seconds * 1e9))

    def _account_gap(self, until_ns: int) -> None:
        """Under the lock: the open gap's deadlines before `until_ns`, counted missed."""
        first = self._gap_next_ns
        if first is None or self.settings is None:
            return
        engine = self._engine  # never heard of: the engine it would have run
        key = (
            (engine[1], engine[2])
            if engine
            else (wakeup.choose_engine(self.settings.engine), self.settings.policy)
        )
        histogram = self._histograms.get(key)
        if histogram is None:
            histogram = self._histograms[key] = LatencyHistogram(self._bounds)
        n, self._gap_next_ns = wakeup.observe_missed(
            histogram, first, self._interval_ns(), until_ns
        )
        self._missed["probe_down"] += n

    def _on_message(self, message: Message) -> None:
        kind = message["t"]
        now = self._clock()
        with self._lock:
            if kind == "hello" and self._gap_next_ns is not None:
                self._account_gap(now)  # the gap ends where the new process starts
                self._gap_next_ns = None
            self._covered_ns = now
        if kind == "missed":
            with self._lock:
                reason = str(message["reason"])
                if reason in self._missed:
                    self._missed[reason] += int(message["n"])
        elif kind == "hist":
            engine, policy = (str(v) for v in message["labels"])
            with self._lock:
                histogram = self._histograms.get((engine, policy))
                if histogram is None:
                    histogram = self._histograms[(engine, policy)] = LatencyHistogram(self._bounds)
                histogram.add(message["counts"], int(message["sum_ns"]))
        elif kind == "hello":
            engine, policy = str(message["engine"]), str(message["policy"])
            requested = str(message.get("requested") or engine)
            with self._lock:
                self._histograms.setdefault((engine, policy), LatencyHistogram(self._bounds))
                self._engine = (requested, engine, policy)
            log.info(
                "wake-up probe running",
                extra={"fields": {"engine": message["engine"], "policy": message["policy"]}},
            )
        elif kind == "warn":
            self._warn("warn", "wake-up probe", msg=str(message["msg"]))

    def collect(self) -> Iterator[Metric]:
        settings = self.settings
        if settings is None or not settings.enabled:
            return
        yield WAKEUP_INTERVAL.single(settings.interval_seconds)
        latency, in_use = WAKEUP_LATENCY.family(), WAKEUP_ENGINE.family()
        # The engine in use, while there is one: a probe that stopped reporting measures
        # with nothing (nodeslo_probe_up says so), not with its last engine.
        reporting = self._process is not None and self._process.reporting()
        missed = WAKEUP_MISSED.family()
        with self._lock:
            self._account_gap(self._clock())
            snapshots = {k: h.snapshot() for k, h in self._histograms.items()}
            if self._engine is not None and reporting:
                add(in_use, list(self._engine), 1)
            for reason, n in self._missed.items():
                add(missed, [reason], n)
        yield in_use
        for (engine, policy), snap in sorted(snapshots.items()):
            add_histogram(latency, [engine, policy], snap)
        yield latency
        yield missed


class ProbesCollector(Collector):
    name = "probes"
    help = "Active probes: storage I/O completion and scheduler wake-up latency."

    def __init__(self, ctx: CollectorContext, backoff: Backoff | None = None) -> None:
        super().__init__(ctx)
        self.probes: dict[str, StorageProbe | WakeupProbe] = {}
        # A probe switched off by flag is never built; one the profile leaves off is:
        # a SIGHUP reload may turn it on.
        if ctx.option("probe_storage") is not False:
            self.probes["storage"] = StorageProbe(ctx, backoff)
        if ctx.option("probe_wakeup") is not False:
            self.probes["wakeup"] = WakeupProbe(ctx, backoff)

    def start(self) -> None:
        for probe in self.probes.values():
            probe.apply()

    def profile_changed(self) -> None:
        for probe in self.probes.values():
            probe.apply()

    def close(self) -> None:
        for probe in self.probes.values():
            probe.close()

    def collect(self) -> Iterator[Metric]:
        up, restarts = PROBE_UP.family(), PROBE_RESTARTS.family()
        for name, probe in sorted(self.probes.items()):
            if probe.enabled:
                add(up, [name], 1 if probe.up() else 0)
                add(restarts, [name], probe.restarts)
                yield from probe.collect()
        yield up
        yield restarts


def probe_collectors(ctx: CollectorContext) -> list[Collector]:
    """The probes collector, unless both probes are switched off by flag."""
    if ctx.option("probe_storage") is False and ctx.option("probe_wakeup") is False:
        return []
    return [ProbesCollector(ctx)]
