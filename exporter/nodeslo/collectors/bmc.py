"""The BMC over local IPMI: sensors (PSUs, fans, inlet air, ...), chassis status, the SEL.

/dev/ipmi0 lets whoever opens it send any command to the BMC, power off included; this
process never opens it. Requests go through the privileged IPMI helper (forked at
start-up when started as root, or its own unit behind `--collector.bmc.helper-socket`),
which forwards only read-only commands, or come from a recording
(`--collector.bmc.replay`). A background poller asks the BMC every
`health.bmc.poll_interval` (or `--collector.bmc.poll-interval`); a scrape only reads
its last snapshot. A BMC that stops answering keeps its last values with
`nodeslo_bmc_up` 0 and a reason; where there is no BMC only `nodeslo_bmc_up{reason}` 0
is exported.

Labels: `sensor` is the SDR's name (suffixed " #N" with the sensor number when two
sensors of one type and entity share a name), `type` the sensor type (power_supply,
fan, temperature...), `entity` what it measures and its instance (power_supply.2,
air_inlet.1), `unit` the Prometheus base unit the value was converted to.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import Metric

from nodeslo.collectors.base import Collector, CollectorContext
from nodeslo.collectors.registry import register
from nodeslo.flagtypes import duration
from nodeslo.ipmi import helper, poller
from nodeslo.ipmi.client import HelperTransport
from nodeslo.ipmi.recording import ReplayTransport
from nodeslo.ipmi.requests import Transport
from nodeslo.ipmi.sensor import SensorState
from nodeslo.metrics import Desc, add

log = logging.getLogger("nodeslo.collector")

SENSOR = ("sensor", "type", "entity")
UP = Desc(
    "nodeslo_bmc_up",
    "gauge",
    "1 when the BMC answered the last poll; 0 with the reason: absent (no BMC), "
    "no_driver (no /dev/ipmi0 for a BMC the firmware declares), no_helper, timeout, error.",
    ("reason",),
)
LAST_SUCCESS = Desc(
    "nodeslo_bmc_last_success_timestamp_seconds",
    "gauge",
    "When the BMC last answered a whole poll (Unix time); older values are stale.",
)
INFO = Desc(
    "nodeslo_bmc_info",
    "gauge",
    "BMC identity from Get Device ID (always 1).",
    ("manufacturer", "manufacturer_id", "product", "firmware", "ipmi_version"),
)
SENSOR_VALUE = Desc(
    "nodeslo_bmc_sensor_value",
    "gauge",
    "Threshold sensor reading, in the base unit of the unit label (celsius, rpm, watts, "
    "volts, amperes, ratio...).",
    (*SENSOR, "unit"),
)
SENSOR_THRESHOLD = Desc(
    "nodeslo_bmc_sensor_threshold",
    "gauge",
    "A threshold sensor's threshold as the BMC compares with it (Get Sensor Thresholds, "
    "else the SDR's), in the unit of the unit label.",
    (*SENSOR, "unit", "level"),
)
SENSOR_STATE = Desc(
    "nodeslo_bmc_sensor_state",
    "gauge",
    "1 when a discrete sensor asserts the state, 0 when it can but does not "
    "(presence_detected, failure_detected, input_lost, redundancy_lost...).",
    (*SENSOR, "state"),
)
SENSOR_SEVERITY = Desc(
    "nodeslo_bmc_sensor_severity",
    "gauge",
    "Severity the reading reached: 0 ok, 1 non-critical, 2 critical, 3 non-recoverable "
    "(threshold comparisons, or the asserted states' meaning).",
    SENSOR,
)
CHASSIS = Desc(
    "nodeslo_bmc_chassis_status",
    "gauge",
    "Get Chassis Status flags: power_on, power_overload, power_interlock, power_fault, "
    "power_control_fault, intrusion, front_panel_lockout, drive_fault, cooling_fault.",
    ("flag",),
)
SEL_ENTRIES = Desc("nodeslo_bmc_sel_entries", "gauge", "Entries in the System Event Log.")
SEL_FREE = Desc(
    "nodeslo_bmc_sel_free_bytes",
    "gauge",
    "Free space in the System Event Log; at 0 the BMC drops (or overwrites) events.",
)
SEL_EVENTS = Desc(
    "nodeslo_bmc_sel_events_total",
    "counter",
    "SEL entries read since start (the log's content at start included), by sensor type, "
    "direction (assertion, deassertion; none for OEM records) and state.",
    ("type", "direction", "state"),
)
POLL_DURATION = Desc(
    "nodeslo_bmc_poll_duration_seconds",
    "gauge",
    "How long the last successful poll of the BMC took (the scrape never waits for it).",
)

ALL_DESCS: tuple[Desc, ...] = (
    UP,
    LAST_SUCCESS,
    INFO,
    SENSOR_VALUE,
    SENSOR_THRESHOLD,
    SENSOR_STATE,
    SENSOR_SEVERITY,
    CHASSIS,
    SEL_ENTRIES,
    SEL_FREE,
    SEL_EVENTS,
    POLL_DURATION,
)

DEFAULT_COMMAND_TIMEOUT = 5.0


def transport(options: argparse.Namespace) -> tuple[Transport | None, str]:
    """The transport the flags ask for, and how to name it in the log."""
    replay = getattr(options, "bmc_replay", None)
    if replay:
        return ReplayTransport(replay), f"replay:{replay}"
    path = getattr(options, "bmc_helper_socket", None)
    if path:
        return HelperTransport(path=path), f"helper:{path}"
    channel = getattr(options, "bmc_helper_channel", None)
    if isinstance(channel, socket.socket):
        return HelperTransport(sock=channel), "helper:forked"
    return None, "none"


def sensor_labels(sensors: tuple[SensorState, ...]) -> list[tuple[str, str, str]]:
    """(sensor, type, entity) per sensor; names repeated within a type and entity (some
    BMCs call every DIMM "Temp") get " #number" so each series stays distinct."""
    keys = [(s.record.name, s.record.type_name, s.record.entity) for s in sensors]
    counts = Counter(keys)
    labels = []
    for state, key in zip(sensors, keys, strict=True):
        name, kind, entity = key
        labels.append((f"{name} #{state.record.number}", kind, entity) if counts[key] > 1 else key)
    return labels


@register
class BmcCollector(Collector):
    name = "bmc"
    help = "BMC sensors, chassis status and SEL over local IPMI (via the privileged helper)."

    @classmethod
    def add_arguments(cls, parser: argparse._ArgumentGroup) -> None:
        parser.add_argument(
            "--collector.bmc.poll-interval",
            dest="bmc_poll_interval",
            type=duration,
            default=None,
            metavar="DURATION",
            help="how often the BMC is polled (default: the profile's health.bmc.poll_interval)",
        )
        parser.add_argument(
            "--collector.bmc.command-timeout",
            dest="bmc_command_timeout",
            type=duration,
            default=DEFAULT_COMMAND_TIMEOUT,
            metavar="DURATION",
            help="timeout of one IPMI command; past it the BMC is marked stale (default: 5s)",
        )
        parser.add_argument(
            "--collector.bmc.helper-socket",
            dest="bmc_helper_socket",
            default=None,
            metavar="PATH",
            help="connect to `nodeslo bmc-helper` on this Unix socket instead of forking "
            f"the helper (its default: {helper.DEFAULT_SOCKET})",
        )
        parser.add_argument(
            "--collector.bmc.replay",
            dest="bmc_replay",
            default=None,
            metavar="FILE",
            help="answer from a recording (as `nodeslo bmc dump` writes it) instead of the BMC",
        )

    @classmethod
    def prepare_privileged(cls, options: argparse.Namespace) -> None:
        """Fork the IPMI helper while the daemon is still root, if there may be a BMC."""
        if getattr(options, "bmc_replay", None) or getattr(options, "bmc_helper_socket", None):
            return
        if os.geteuid() != 0:
            return
        sysfs = getattr(options, "path_sysfs", "/sys")
        if poller.presence(sysfs) == poller.ABSENT:
            return  # a VM: nothing to ask, no process to keep
        options.bmc_helper_channel = helper.fork_helper(sysfs)

    def __init__(self, ctx: CollectorContext) -> None:
        super().__init__(ctx)
        self.transport, self.transport_name = transport(ctx.options)
        sysfs = ctx.roots.sysfs
        replaying = isinstance(self.transport, ReplayTransport)
        self.poller = poller.Poller(
            self.transport,
            interval=self._interval(),
            timeout=float(ctx.option("bmc_command_timeout", DEFAULT_COMMAND_TIMEOUT)),  # type: ignore[arg-type]
            errors=ctx.errors,
            presence=(lambda: None) if replaying else (lambda: poller.presence(sysfs)),
        )
        self._labels_for: tuple[SensorState, ...] | None = None
        self._labels: list[tuple[str, str, str]] = []

    def _interval(self) -> float:
        flag = self.ctx.option("bmc_poll_interval")
        if isinstance(flag, int | float):
            return float(flag)
        return self.ctx.profile().health.bmc.poll_interval_seconds

    def start(self) -> None:
        if self.transport is not None:
            log.info("bmc: transport", extra={"fields": {"transport": self.transport_name}})
        # The first round within one command timeout, as the NVMe poller does: a replay
        # or a quick BMC is in the first scrape; a slow SDR walk goes on in the background.
        self.poller.start(wait=self.poller.timeout)

    def profile_changed(self) -> None:
        interval = self._interval()
        if interval != self.poller.interval:
            self.poller.interval = interval
            self.poller.wake()

    def close(self) -> None:
        self.poller.close()

    def collect(self) -> Iterator[Metric]:
        snap = self.poller.snapshot()
        families = {d: d.family() for d in ALL_DESCS}
        if snap.up or snap.reason:
            add(families[UP], [snap.reason], 1.0 if snap.up else 0.0)
        if snap.last_success is not None:
            add(families[LAST_SUCCESS], [], snap.last_success)
        if snap.round_seconds is not None:
            add(families[POLL_DURATION], [], snap.round_seconds)
        d = snap.device
        if d is not None:
            labels = [
                d.manufacturer,
                str(d.manufacturer_id & 0xFFFFF),
                d.product,
                d.firmware,
                d.ipmi,
            ]
            add(families[INFO], labels, 1.0)
        if snap.chassis is not None:
            for flag, on in snap.chassis.flags():
                add(families[CHASSIS], [flag], 1.0 if on else 0.0)
        self._sensors(families, snap.sensors)
        if snap.sel is not None:
            add(families[SEL_ENTRIES], [], snap.sel.entries)
            add(families[SEL_FREE], [], snap.sel.free_bytes)
        if snap.sel_events is not None:
            for (kind, direction, state), count in snap.sel_events:
                add(families[SEL_EVENTS], [kind, direction, state], count)
        yield from families.values()

    def _sensors(self, families: dict[Desc, Metric], sensors: tuple[SensorState, ...]) -> None:
        if sensors is not self._labels_for:  # a new snapshot: names may have changed
            self._labels = sensor_labels(sensors)
            self._labels_for = sensors
        for state, labels in zip(sensors, self._labels, strict=True):
            if state.record.is_threshold:
                unit = state.record.units.label()
                for level, value in state.thresholds:
                    add(families[SENSOR_THRESHOLD], [*labels, unit, level], value)
                if state.value is not None:
                    add(families[SENSOR_VALUE], [*labels, unit], state.value)
            for name, asserted in state.states:
                add(families[SENSOR_STATE], [*labels, name], 1.0 if asserted else 0.0)
            if state.severity is not None:
                add(families[SENSOR_SEVERITY], labels, state.severity)
