"""The background poller: reads every controller's pages so a scrape never waits on one.

Every `interval` seconds (and at once when a scrape sees a new controller) each idle
controller gets a short-lived thread that reads, in order: its sysfs attributes;
Identify Controller and, when CTRATT says it is supported, Identify UUID List (both
once per drive and firmware, they do not change); the OCP C0h page (until the drive
shows it has none); and the SMART / Health page last, so the SMART counters include
any error-log entry an unsupported C0h request caused. Each command has its own
timeout. A controller whose command times out, or whose thread is still busy from an
earlier round, is stale: `up` is False, its last values and last-success timestamp
stay, and the other controllers go on. Without a page source (no helper: plain
unprivileged run) only sysfs attributes and the NVMe hwmon temperatures are read — in
this thread too, because each hwmon read makes the driver send the drive a Get Log Page.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from nodeslo.log import OnceLog
from nodeslo.nvme import identify, ocp, requests, smart
from nodeslo.nvme.identify import IdentifyController
from nodeslo.nvme.layout import PageError
from nodeslo.nvme.ocp import NotOcpPage, OcpExtendedLog
from nodeslo.nvme.requests import CommandTimeout, PageSource, SourceError, Unsupported
from nodeslo.nvme.smart import SmartLog
from nodeslo.readers import ReadError, list_dir, read_int, read_text

# One log key for every read of a controller: a missing device node or a dead helper
# fails identify, C0h and SMART alike, and is worth one line, not three.
READ_KEY = "read"


@dataclass(frozen=True)
class Attributes:
    """sysfs strings of /sys/class/nvme/nvmeN, stripped of their padding."""

    model: str
    serial: str
    firmware: str
    transport: str


@dataclass(frozen=True)
class HwmonReading:
    # (sensor label value, celsius): "composite", "sensor1", ...
    temperatures: tuple[tuple[str, float], ...]
    critical_celsius: float | None


@dataclass(frozen=True)
class Snapshot:
    """What the scrape exports for one controller: the last values read and their age."""

    controller: str
    attributes: Attributes | None
    smart: SmartLog | None
    ocp: OcpExtendedLog | None
    identify: IdentifyController | None
    hwmon: HwmonReading | None
    # None until the first round ends, else whether its SMART page is current: False
    # without a page source (no helper: never read), after a failed or timed-out read.
    up: bool | None
    last_success: float | None

    @property
    def identity(self) -> tuple[str, str] | None:
        """(model, serial) of the drive: sysfs, else Identify Controller, else None."""
        if self.attributes is not None and self.attributes.serial:
            return self.attributes.model, self.attributes.serial
        if self.identify is not None and self.identify.serial:
            return self.identify.model, self.identify.serial
        return None


@dataclass
class _State:
    busy_since: float | None = None
    attributes: Attributes | None = None
    identity: tuple[str, str] | None = None
    identify: IdentifyController | None = None
    identify_read: bool = False
    uuid_index: int = 0
    ocp_supported: bool | None = None
    smart: SmartLog | None = None
    ocp: OcpExtendedLog | None = None
    hwmon: HwmonReading | None = None
    up: bool | None = None
    last_success: float | None = None
    threads: list[threading.Thread] = field(default_factory=list)


class Poller:
    def __init__(
        self,
        sysfs: str,
        source: PageSource | None,
        *,
        interval: float,
        timeout: float,
        errors: OnceLog,
        extra_controllers: Callable[[], list[str]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.class_dir = os.path.join(sysfs, "class", "nvme")
        self.source = source
        self.interval = interval
        self.timeout = timeout
        self.errors = errors
        self._extra = extra_controllers
        self._clock = clock
        self._states: dict[str, _State] = {}
        # Controllers whose drive changed under their name: polled at the next wake-up.
        self._refresh: set[str] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the scrape's side ---------------------------------------------------------

    def controllers(self) -> list[str]:
        """Controllers present now: sysfs, plus the replay's when replaying."""
        names = set(n for n in list_dir(self.class_dir) if requests.CONTROLLER_NAME.match(n))
        if self._extra is not None:
            names.update(self._extra())
        return sorted(names)

    def snapshot(self, present: list[str]) -> list[Snapshot]:
        """The cached values of `present` controllers; new ones wake the poller."""
        out = []
        new = False
        now = time.monotonic()
        with self._lock:
            for name in present:
                state = self._states.get(name)
                if state is None:
                    new = True
                    continue
                up = state.up
                overdue = state.busy_since is not None and now - state.busy_since > self._budget()
                if overdue and self.source is not None:
                    up = False
                out.append(
                    Snapshot(
                        name,
                        state.attributes,
                        state.smart,
                        state.ocp,
                        state.identify,
                        state.hwmon,
                        up,
                        state.last_success,
                    )
                )
        if new:
            self._wake.set()
        return out

    def refresh(self, name: str) -> None:
        """Another drive answers under `name` (hot swap, or a rename the poller has not
        seen yet): read it again now instead of at the next round."""
        with self._lock:
            self._refresh.add(name)
        self._wake.set()

    # -- the poller's side ---------------------------------------------------------

    def start(self) -> None:
        """Run a first round (waited for at most one command timeout), then poll on."""
        self.poll_round(wait=self.timeout)
        self._thread = threading.Thread(target=self._loop, name="nvme-poller", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        if self.source is not None:
            self.source.close()

    def _loop(self) -> None:
        next_round = time.monotonic() + self.interval
        while not self._stop.is_set():
            woken = self._wake.wait(max(0.0, next_round - time.monotonic()))
            if self._stop.is_set():
                return
            if woken:
                self._wake.clear()
                self.poll_round(only_new=True)
            if time.monotonic() >= next_round:
                self.poll_round()
                next_round += self.interval
                if next_round < time.monotonic():  # suspended or overloaded: do not catch up
                    next_round = time.monotonic() + self.interval

    def _budget(self) -> float:
        """How long one controller's reads may take: every command timing out in turn."""
        return self.timeout * 4 + 1.0

    def poll_round(self, only_new: bool = False, wait: float | None = None) -> None:
        """Start a thread per idle controller; with `wait`, join them up to that long."""
        try:
            present = self.controllers()
        except ReadError as exc:  # the scrape reports it as a collector failure
            self.errors.warn("nvme:list", str(exc), collector="nvme")
            return
        started = []
        now = time.monotonic()
        with self._lock:
            for gone in set(self._states) - set(present):
                del self._states[gone]
            for name in present:
                state = self._states.get(name)
                if state is None:
                    state = self._states[name] = _State()
                elif only_new and name not in self._refresh:
                    continue
                if state.busy_since is not None:
                    if now - state.busy_since > self._budget() and self.source is not None:
                        state.up = False
                        self.errors.warn(
                            f"nvme:{name}:hung",
                            "controller still busy from an earlier round: marked stale",
                            collector="nvme",
                            controller=name,
                        )
                    continue
                state.busy_since = now
                self._refresh.discard(name)
                thread = threading.Thread(
                    target=self._poll_controller, args=(name,), name=f"nvme-poll-{name}"
                )
                thread.daemon = True
                started.append(thread)
        for thread in started:
            thread.start()
        if wait is not None:
            deadline = time.monotonic() + wait
            for thread in started:
                thread.join(max(0.0, deadline - time.monotonic()))

    def _state(self, name: str) -> _State | None:
        with self._lock:
            return self._states.get(name)

    def _poll_controller(self, name: str) -> None:
        try:
            self._read_controller(name)
        except Exception as exc:  # a decoder or source bug must not kill the poller
            self._warn(name, "poll", f"{type(exc).__name__}: {exc}")
            self._update(name, up=False)
        finally:
            with self._lock:
                state = self._states.get(name)
                if state is not None:
                    state.busy_since = None

    def _update(self, name: str, **values: object) -> None:
        with self._lock:
            state = self._states.get(name)
            if state is not None:
                for key, value in values.items():
                    setattr(state, key, value)

    def _warn(self, name: str, what: str, message: str) -> None:
        self.errors.warn(f"nvme:{name}:{what}", message, collector="nvme", controller=name)

    def _recovered(self, name: str, what: str) -> None:
        self.errors.clear(f"nvme:{name}:{what}")

    def _read_controller(self, name: str) -> None:
        attributes = self._read_attributes(name)
        self._update(name, attributes=attributes)
        state = self._state(name)
        if state is None:
            return
        if self.source is None:
            self._update(name, hwmon=self._read_hwmon(name), up=False)
            return
        identity = (attributes.serial, attributes.firmware) if attributes else None
        if identity != state.identity:
            # Another drive in the slot, or new firmware: its pages may differ, and the
            # last drive's values must never be exported under this one's serial.
            self._update(
                name,
                identity=identity,
                identify=None,
                identify_read=False,
                uuid_index=0,
                ocp_supported=None,
                ocp=None,
                smart=None,
                up=None,
                last_success=None,
            )
            state = self._state(name)
            if state is None:
                return
        try:
            if not state.identify_read:
                self._read_identify(name)
            state = self._state(name)
            if state is None:
                return
            if state.ocp_supported is not False:
                self._read_ocp(name, state.uuid_index)
            page = self._fetch(requests.smart_log(name))
            decoded = smart.decode(page)
        except CommandTimeout as exc:
            self._warn(name, READ_KEY, f"{exc}: marked stale")
            self._update(name, up=False)
            return
        except (SourceError, PageError) as exc:
            self._warn(name, READ_KEY, str(exc))
            self._update(name, up=False, hwmon=self._read_hwmon(name))
            return
        self._recovered(name, READ_KEY)
        self._update(name, smart=decoded, up=True, last_success=self._clock(), hwmon=None)

    def _fetch(self, request: requests.PageRequest) -> bytes:
        assert self.source is not None
        return self.source.fetch(request, self.timeout)

    def _read_identify(self, name: str) -> None:
        try:
            controller = identify.decode_controller(self._fetch(requests.identify_controller(name)))
        except CommandTimeout:
            raise
        except (Unsupported, PageError) as exc:
            # Without it there are no WCTEMP/CCTEMP thresholds and no UUID index; SMART goes on.
            self._warn(name, READ_KEY, str(exc))
            self._update(name, identify_read=True)
            return
        except SourceError as exc:  # transient (helper restarting...): ask again next round
            self._warn(name, READ_KEY, str(exc))
            return
        uuid_index = 0
        if controller.uuid_list_supported:
            try:
                uuids = identify.decode_uuid_list(self._fetch(requests.identify_uuid_list(name)))
                uuid_index = identify.ocp_uuid_index(uuids)
            except CommandTimeout:
                raise
            except (SourceError, PageError) as exc:
                self._warn(name, READ_KEY, str(exc))
        self._update(name, identify=controller, identify_read=True, uuid_index=uuid_index)

    def _read_ocp(self, name: str, uuid_index: int) -> None:
        try:
            page = ocp.decode(self._fetch(requests.ocp_log(name, uuid_index)))
        except Unsupported:
            self._update(name, ocp_supported=False, ocp=None)
            return
        except NotOcpPage as exc:
            # A vendor layout at C0h: asking again would only give the same page.
            self.errors.log(
                logging.INFO,
                f"nvme:{name}:ocp",
                f"{exc}: ignored",
                collector="nvme",
                controller=name,
            )
            self._update(name, ocp_supported=False, ocp=None)
            return
        except CommandTimeout:
            raise
        except (SourceError, PageError) as exc:
            self._warn(name, READ_KEY, str(exc))
            return
        self._update(name, ocp_supported=True, ocp=page)

    def _read_attributes(self, name: str) -> Attributes | None:
        directory = os.path.join(self.class_dir, name)
        try:
            values = [
                read_text(os.path.join(directory, attr))
                for attr in ("model", "serial", "firmware_rev", "transport")
            ]
        except ReadError as exc:
            self._warn(name, "sysfs", str(exc))
            return None
        if values[0] is None:
            return None
        model, serial, firmware, transport = (v or "" for v in values)
        return Attributes(model, serial, firmware, transport)

    def _hwmon_dir(self, name: str) -> str | None:
        # 5.11+ registers the chip on the controller (nvme0/hwmonN); 5.5-5.10 on its
        # PCI device (nvme0/device/hwmon/hwmonN).
        directory = os.path.join(self.class_dir, name)
        for parent in (directory, os.path.join(directory, "device", "hwmon")):
            for entry in list_dir(parent):
                if entry.startswith("hwmon"):
                    path = os.path.join(parent, entry)
                    if read_text(os.path.join(path, "name")) == "nvme":
                        return path
        return None

    def _read_hwmon(self, name: str) -> HwmonReading | None:
        try:
            path = self._hwmon_dir(name)
            if path is None:
                return None
            temperatures = []
            for entry in list_dir(path):
                if not (entry.startswith("temp") and entry.endswith("_input")):
                    continue
                index = entry[4 : -len("_input")]
                try:
                    millis = read_int(os.path.join(path, entry))
                except ReadError as exc:  # a sensor the drive cannot read right now
                    self._warn(name, f"hwmon:{entry}", str(exc))
                    continue
                if millis is None:
                    continue
                label = read_text(os.path.join(path, f"temp{index}_label")) or ""
                temperatures.append((_sensor(label, index), millis / 1000.0))
            critical = read_int(os.path.join(path, "temp1_crit"))
        except ReadError as exc:
            self._warn(name, "hwmon", str(exc))
            return None
        self._recovered(name, "hwmon")
        return HwmonReading(
            tuple(sorted(temperatures)), None if critical is None else critical / 1000.0
        )


def _sensor(label: str, index: str) -> str:
    """hwmon labels "Composite", "Sensor 1".. -> the SMART page's sensor names."""
    if label == "Composite" or (not label and index == "1"):
        return "composite"
    if label.startswith("Sensor "):
        return "sensor" + label.removeprefix("Sensor ").strip()
    return f"sensor{int(index) - 1}" if index.isdigit() else f"temp{index}"
