"""The background poller: reads the BMC so a scrape never waits on it.

Every `interval` seconds one thread runs a round:
  Get SDR Repository Info, and the SDR walk only when its record count or its
  addition / erase timestamps changed (a BMC firmware update, a hot-added sensor);
  each sensor's thresholds (Get Sensor Thresholds) after a walk and then hourly, the
  record's own when the command is refused; each sensor's reading; Chassis Status;
  Get SEL Info, and the entries added since the last one read (a backlog in batches).
The round publishes one `Snapshot`; a scrape only copies the last one.

A BMC that stops answering: the first command timing out ends the round (one sensor
timing out only marks that sensor unavailable); the snapshot keeps the last values
with `up` False and the reason, so an alert on a failed PSU does not resolve because
the BMC went quiet, and one line is logged until it answers again. Where there is no
BMC the reason says why (`absent`, `no_driver`, `no_helper`) and nothing is asked.
"""

from __future__ import annotations

import glob
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from nodeslo.ipmi import sdr, sel, sensor
from nodeslo.ipmi.bmc import Bmc
from nodeslo.ipmi.device import ChassisStatus, DeviceId
from nodeslo.ipmi.layout import DecodeError
from nodeslo.ipmi.requests import (
    CC_INVALID_COMMAND,
    CompletionCode,
    IpmiError,
    NoDevice,
    Timeout,
    Transport,
)
from nodeslo.log import OnceLog

log = logging.getLogger("nodeslo.collector")

# Why `up` is 0 (the `reason` label): no BMC in this machine's firmware tables; a BMC
# the kernel has no device for (ipmi_si / ipmi_devintf not loaded); a device the daemon
# may not use (no privileged helper); a BMC that stopped answering; one that answers
# errors (or a helper that went away).
ABSENT = "absent"
NO_DRIVER = "no_driver"
NO_HELPER = "no_helper"
TIMEOUT = "timeout"
ERROR = "error"

THRESHOLD_REFRESH_SECONDS = 3600.0
# Timeouts a round tolerates (a sensor the BMC cannot read right now) before it ends.
MAX_TIMEOUTS_PER_ROUND = 1

SelKey = tuple[str, str, str]  # (sensor type, direction, state)


def presence(sysfs: str, device: str = "ipmi0") -> str | None:
    """None when the kernel has an IPMI device; else why not: `no_driver` when the
    firmware declares a BMC (SMBIOS type 38, ACPI IPI0001) the kernel has not bound,
    `absent` when nothing does (a VM). Readable unprivileged, asks the BMC nothing."""
    if os.path.isdir(os.path.join(sysfs, "class", "ipmi", device)):
        return None
    if glob.glob(os.path.join(sysfs, "firmware", "dmi", "entries", "38-*")) or glob.glob(
        os.path.join(sysfs, "bus", "acpi", "devices", "IPI0001:*")
    ):
        return NO_DRIVER
    return ABSENT


@dataclass(frozen=True)
class Snapshot:
    up: bool
    reason: str  # "" while up
    last_success: float | None
    device: DeviceId | None
    chassis: ChassisStatus | None
    sensors: tuple[sensor.SensorState, ...]
    sel: sel.SelInfo | None
    # Counts of every SEL entry read since start, by (type, direction, state); None
    # until the log's backlog was read to its end, so the counter never leaps.
    sel_events: tuple[tuple[SelKey, int], ...] | None
    round_seconds: float | None


EMPTY = Snapshot(False, "", None, None, None, (), None, None, None)


@dataclass
class _Cache:
    device: DeviceId | None = None
    sdr_key: tuple[int, int, int] | None = None
    sensors: tuple[sdr.SensorRecord, ...] = ()
    thresholds: dict[tuple[int, int], tuple[tuple[str, float], ...]] = field(default_factory=dict)
    thresholds_read_at: float | None = None
    sel_key: tuple[int, int, int] | None = None
    sel_last_id: int | None = None
    sel_complete: bool = False
    sel_counts: Counter[SelKey] = field(default_factory=Counter)


class Poller:
    def __init__(
        self,
        transport: Transport | None,
        *,
        interval: float,
        timeout: float,
        errors: OnceLog,
        presence: Callable[[], str | None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.transport = transport
        self.bmc = Bmc(transport, timeout) if transport is not None else None
        self.interval = interval
        self.timeout = timeout
        self.errors = errors
        self._presence = presence
        self._clock = clock
        self._cache = _Cache()
        self._snapshot = EMPTY
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._first_round = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the scrape's side ---------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        with self._lock:
            return self._snapshot

    # -- the poller's side ---------------------------------------------------------------

    def start(self, wait: float = 0.0) -> None:
        """Decide at once whether there is a BMC to ask; then poll in the background,
        waiting up to `wait` seconds for the first round so the first scrape has it."""
        reason = self._unavailable()
        if reason is not None:
            self._down(reason, None)
        self._thread = threading.Thread(target=self._loop, name="bmc-poller", daemon=True)
        self._thread.start()
        self._first_round.wait(wait)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        if self.transport is not None:
            self.transport.close()

    def wake(self) -> None:
        """Poll now (the interval changed, a test wants a fresh round)."""
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.poll_round()
            except Exception as exc:  # a decoder bug must not end the poller
                log.exception("bmc: poll round failed", extra={"fields": {"collector": "bmc"}})
                self._down(ERROR, f"{type(exc).__name__}: {exc}")
            self._first_round.set()
            delay = max(0.0, self.interval - (time.monotonic() - started))
            self._wake.wait(delay)
            self._wake.clear()

    def _unavailable(self) -> str | None:
        reason = self._presence()
        if reason is None and self.transport is None:
            return NO_HELPER
        return reason

    def poll_round(self) -> None:
        """One round, in the calling thread (the background loop, `nodeslo check`)."""
        reason = self._unavailable()
        if reason is not None:
            self._down(reason, None)
            return
        started = time.monotonic()
        try:
            published = self._read(started)
        except Timeout as exc:
            self._down(TIMEOUT, f"{exc}: values kept, marked stale")
        except NoDevice as exc:
            self._down(self._presence() or NO_DRIVER, str(exc))
        except (IpmiError, DecodeError) as exc:
            self._down(ERROR, str(exc))
        else:
            if self.errors.clear("bmc:read"):
                log.info("bmc: answering again", extra={"fields": {"collector": "bmc"}})
            with self._lock:
                self._snapshot = published

    def _down(self, reason: str, detail: str | None) -> None:
        message = {
            ABSENT: "bmc: no BMC on this machine (no IPMI device, none in SMBIOS or ACPI)",
            NO_DRIVER: "bmc: the firmware declares a BMC but there is no /dev/ipmi0: "
            "load ipmi_si and ipmi_devintf",
            NO_HELPER: "bmc: /dev/ipmi0 needs the privileged helper: start the daemon as "
            "root (it forks the helper; add --run-as-user) or use --collector.bmc.helper-socket",
        }.get(reason, "bmc: not answering")
        level = logging.INFO if reason == ABSENT else logging.WARNING
        # Once per reason: the command that failed first differs from round to round.
        err = {"err": detail} if detail else None
        self.errors.log(level, "bmc:read", message, err, collector="bmc", reason=reason)
        with self._lock:
            self._snapshot = Snapshot(
                False,
                reason,
                self._snapshot.last_success,
                self._snapshot.device,
                self._snapshot.chassis,
                self._snapshot.sensors,
                self._snapshot.sel,
                self._snapshot.sel_events,
                self._snapshot.round_seconds,
            )

    def _read(self, started: float) -> Snapshot:
        bmc = self.bmc
        assert bmc is not None
        cache = self._cache
        if cache.device is None:
            cache.device = bmc.device_id()
        info = bmc.repository_info()
        key = (info.record_count, info.addition_timestamp, info.erase_timestamp)
        if key != cache.sdr_key:
            self._load_repository(bmc, key)
        now = time.monotonic()
        if (
            cache.thresholds_read_at is None
            or now - cache.thresholds_read_at > THRESHOLD_REFRESH_SECONDS
        ):
            self._read_thresholds(bmc)
            cache.thresholds_read_at = now
        states = self._read_sensors(bmc)
        try:
            chassis: ChassisStatus | None = bmc.chassis_status()
        except CompletionCode as exc:
            if exc.code != CC_INVALID_COMMAND:
                raise
            chassis = None  # no chassis device: a blade's BMC
        sel_info = self._read_sel(bmc) if cache.device.has_sel else None
        events = tuple(sorted(cache.sel_counts.items())) if cache.sel_complete else None
        return Snapshot(
            True,
            "",
            self._clock(),
            cache.device,
            chassis,
            states,
            sel_info,
            events,
            time.monotonic() - started,
        )

    def _load_repository(self, bmc: Bmc, key: tuple[int, int, int]) -> None:
        cache = self._cache
        if cache.sdr_key is not None:
            cache.device = bmc.device_id()  # new firmware comes with a new repository
        walk = bmc.walk_repository()
        for reason in walk.skipped:
            self.errors.warn(
                f"bmc:sdr:{reason}", "bmc: SDR record skipped", collector="bmc", err=reason
            )
        bridged = [s for s in walk.sensors if not s.on_bmc]
        if bridged:
            self.errors.log(
                logging.INFO,
                "bmc:bridged",
                "bmc: sensors owned by other controllers are not read (bridging is not on "
                "the helper's whitelist)",
                collector="bmc",
                sensors=",".join(s.name for s in bridged[:10]),
                count=len(bridged),
            )
        for record in walk.sensors:
            conversion = record.conversion
            if conversion is not None and not sdr.linear_supported(conversion.linearization):
                self.errors.warn(
                    f"bmc:linearization:{record.name}",
                    "bmc: non-linear sensor with an OEM curve: value not exported",
                    collector="bmc",
                    sensor=record.name,
                    linearization=f"{conversion.linearization:#04x}",
                )
        cache.sensors = tuple(s for s in walk.sensors if s.on_bmc)
        cache.sdr_key = key
        cache.thresholds = {}
        cache.thresholds_read_at = None
        self.errors.log(
            logging.INFO,
            "bmc:sdr",
            "bmc: sensor data records read",
            collector="bmc",
            records=walk.records,
            sensors=len(cache.sensors),
        )

    def _read_thresholds(self, bmc: Bmc) -> None:
        cache = self._cache
        for record in cache.sensors:
            if not record.readable_thresholds:
                continue
            raw = record.thresholds
            try:
                live = bmc.thresholds(record)
            except CompletionCode:
                pass  # the record's thresholds stand
            except Timeout:
                raise
            except DecodeError as exc:
                self.errors.warn(f"bmc:thresholds:{record.name}", str(exc), collector="bmc")
            else:
                raw = live.raw
            cache.thresholds[(record.number, record.lun)] = sensor.threshold_values(record, raw)

    def _read_sensors(self, bmc: Bmc) -> tuple[sensor.SensorState, ...]:
        cache = self._cache
        states = []
        timeouts = 0
        unavailable = sensor.Reading(0, 0, 0)
        for record in cache.sensors:
            thresholds = cache.thresholds.get(
                (record.number, record.lun), sensor.threshold_values(record, record.thresholds)
            )
            try:
                reading = bmc.reading(record)
            except Timeout:
                timeouts += 1
                if timeouts > MAX_TIMEOUTS_PER_ROUND:
                    raise
                reading = unavailable
            except (CompletionCode, DecodeError) as exc:
                # Not present (CBh), illegal for this sensor (CDh): no reading this round.
                self.errors.log(
                    logging.DEBUG, f"bmc:reading:{record.name}", str(exc), collector="bmc"
                )
                reading = unavailable
            states.append(sensor.evaluate(record, reading, thresholds))
        return tuple(states)

    def _read_sel(self, bmc: Bmc) -> sel.SelInfo:
        cache = self._cache
        info = bmc.sel_info()
        key = (info.entries, info.addition_timestamp, info.erase_timestamp)
        if key == cache.sel_key and cache.sel_complete:
            return info
        if cache.sel_key is not None and info.erase_timestamp != cache.sel_key[2]:
            cache.sel_last_id = None  # cleared: every entry there now is new
        batch = bmc.sel_after(cache.sel_last_id)
        for entry in batch.entries:
            cache.sel_counts[(entry.type_name, entry.direction, entry.state)] += 1
        cache.sel_last_id = batch.last_id
        cache.sel_complete = cache.sel_complete or batch.complete
        if batch.complete:
            cache.sel_key = key
        return info
