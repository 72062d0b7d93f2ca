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
from collections.abc import Iterator

from prometheus_client.core import Metric

from nodeslo.collectors.base import Collector, CollectorContext
from nodeslo.metrics import Desc, add
from nodeslo.probes import storage, wakeup
from nodeslo.probes.histogram import LatencyHistogram, add_histogram, latency_bounds
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
    "Completion time of one 4 KiB probe I/O: write_sync = O_DIRECT|O_DSYNC write "
    "(or write + fdatasync), read = O_DIRECT read at a random offset.",
    ("target", "op"),
)
IO_ERRORS = Desc(
    "nodeslo_probe_io_errors_total",
    "counter",
    "Probe I/O samples that failed (target missing, full, read-only, I/O error).",
    ("target", "op"),
)
STORAGE_TARGET_INFO = Desc(
    "nodeslo_probe_storage_target_info",
    "gauge",
    "Always 1: a storage probe target's kind (file = probe file in a directory, block = "
    "device read only), I/O mode (direct = O_DIRECT; buffered = O_DIRECT refused, writes "
    "fdatasync'd, read block dropped from the page cache first) and the block device measured.",
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
WAKEUP_INTERVAL = Desc(
    "nodeslo_probe_wakeup_interval_seconds",
    "gauge",
    "Period of the wake-up probe's timer.",
)

# A storage I/O in flight this long makes the probe down (a hung device), though it may
# still complete and be counted in a high bucket.
STUCK_SECONDS = 5.0
STORAGE_REPORT_TIMEOUT = 10.0
WAKEUP_REPORT_TIMEOUT = 30.0  # > a cyclictest burst (10 s) plus its start-up


class _Probe:
    probe: str
    report_timeout: float

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
            )
            self._process.start()
        elif isinstance(self._process, ProbeProcess):
            self._process.replace(command)

    def _on_message(self, message: Message) -> None:
        raise NotImplementedError

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

    def __init__(self, ctx: CollectorContext, backoff: Backoff | None = None) -> None:
        super().__init__(ctx, backoff)
        self.settings: StorageSettings | None = None
        self._histograms: dict[tuple[str, str], LatencyHistogram] = {}
        self._errors: dict[tuple[str, str], int] = {}
        self._info: dict[str, tuple[str, str, str]] = {}
        self._ok: dict[str, tuple[bool, float]] = {}
        self._bounds: tuple[float, ...] = ()

    @property
    def enabled(self) -> bool:
        return self.settings is not None and self.settings.enabled

    def apply(self) -> None:
        new = storage_settings(self.ctx.profile(), self.ctx.options)
        if new == self.settings:
            return
        bounds = latency_bounds(new.thresholds)
        with self._lock:
            if bounds != self._bounds:
                self._histograms.clear()  # new buckets: the series start again
                self._bounds = bounds
            keep = set(new.targets)
            for table in (self._histograms, self._errors):
                for key in [k for k in table if k[0] not in keep]:
                    del table[key]
            for target in [t for t in self._info if t not in keep]:
                del self._info[target]
            self._ok = {t: v for t, v in self._ok.items() if t in keep}
        config = storage.Config(
            targets=new.targets,
            rate=new.rate,
            file_size=new.file_size,
            bounds=bounds,
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

    def _on_message(self, message: Message) -> None:
        kind = message["t"]
        with self._lock:
            if kind == "hist":
                target, op = (str(v) for v in message["labels"])
                histogram = self._histograms.get((target, op))
                if histogram is None:
                    histogram = self._histograms[(target, op)] = LatencyHistogram(self._bounds)
                histogram.add(message["counts"], int(message["sum_ns"]))
            elif kind == "err":
                key = (str(message["target"]), str(message["op"]))
                self._errors[key] = self._errors.get(key, 0) + int(message["n"])
            elif kind == "target":
                target = str(message["target"])
                info = (str(message["kind"]), str(message["mode"]), str(message["device"]))
                self._info[target] = info
                for op in storage.OPS if info[0] == "file" else ("read",):
                    self._errors.setdefault((target, op), 0)
                    self._histograms.setdefault((target, op), LatencyHistogram(self._bounds))
            elif kind == "status":
                was = dict(self._ok)
                self._ok = {
                    str(t): (bool(s["ok"]), float(s["stuck_seconds"]))
                    for t, s in message["targets"].items()
                }
        if kind == "err":
            self._warn(
                f"{message['target']}:{message['op']}",
                "storage probe sample failed",
                target=str(message["target"]),
                op=str(message["op"]),
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
            for target, (ok, _) in self._ok.items():
                if ok and not was.get(target, (True, 0.0))[0]:
                    for op in storage.OPS:
                        self.ctx.errors.clear(f"probe:{self.probe}:{target}:{op}")
                    log.info("storage probe target recovered", extra={"fields": {"target": target}})

    def _healthy(self) -> bool:
        with self._lock:
            targets = self.settings.targets if self.settings else ()
            return all(
                self._ok.get(t, (False, 0.0))[0] and self._ok[t][1] < STUCK_SECONDS for t in targets
            )

    def collect(self) -> Iterator[Metric]:
        settings = self.settings
        if settings is None or not settings.enabled:
            return
        latency, errors, info = (
            IO_LATENCY.family(),
            IO_ERRORS.family(),
            STORAGE_TARGET_INFO.family(),
        )
        with self._lock:
            snapshots = {k: h.snapshot() for k, h in self._histograms.items()}
            error_counts = dict(self._errors)
            infos = dict(self._info)
        for (target, op), snap in sorted(snapshots.items()):
            add_histogram(latency, [target, op], snap)
        for (target, op), n in sorted(error_counts.items()):
            add(errors, [target, op], n)
        for target, (kind, mode, device) in sorted(infos.items()):
            add(info, [target, kind, mode, device], 1)
        yield latency
        yield errors
        yield info


class WakeupProbe(_Probe):
    probe = "wakeup"
    report_timeout = WAKEUP_REPORT_TIMEOUT

    def __init__(self, ctx: CollectorContext, backoff: Backoff | None = None) -> None:
        super().__init__(ctx, backoff)
        self.settings: WakeupSettings | None = None
        self._histograms: dict[tuple[str, str], LatencyHistogram] = {}
        self._bounds: tuple[float, ...] = ()
        self._engine: tuple[str, str, str] | None = None

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
        socket_path = self.ctx.option("probe_wakeup_socket")
        if socket_path:
            self._run_remote(new.enabled, str(socket_path), config.to_json())
        else:
            command = [sys.executable, "-m", "nodeslo.probes.wakeup", config.to_json()]
            self._run(new.enabled, command)
        self.settings = new

    def _on_message(self, message: Message) -> None:
        kind = message["t"]
        if kind == "hist":
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
        with self._lock:
            snapshots = {k: h.snapshot() for k, h in self._histograms.items()}
            if self._engine is not None and reporting:
                add(in_use, list(self._engine), 1)
        yield in_use
        for (engine, policy), snap in sorted(snapshots.items()):
            add_histogram(latency, [engine, policy], snap)
        yield latency


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
