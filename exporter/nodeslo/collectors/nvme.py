"""NVMe health: SMART / Health (02h) and OCP extended (C0h) log pages, sysfs, hwmon.

Reading a log page needs CAP_SYS_ADMIN; this process holds none. Pages come from the
privileged helper (forked at start-up when started as root, or its own unit behind
`--collector.nvme.helper-socket`), or from files (`--collector.nvme.replay-dir`). A
background poller reads them every `--collector.nvme.poll-interval`; a scrape only
reads the poller's cache, the controller directory and each controller's `state`.
A controller whose last round failed or timed out keeps its last values with
`nodeslo_nvme_smart_up` 0, so an alert on a critical warning does not resolve because
the drive stopped answering; `..._last_success_timestamp_seconds` says how old they are.
Without any page source the collector exports nvme_info, nvme_state_live, the
temperatures of the NVMe hwmon chip, and `nodeslo_nvme_smart_up` 0 (SMART never read).

Identity: every per-drive series carries the drive's `model` and `serial` besides its
`controller` name, so that a rename across a reboot (nvme0 <-> nvme1) or another drive
hot-swapped into a slot starts new series instead of continuing another drive's. The
serial is read again at each scrape: when it differs from the poller's, the drive in
that slot changed since its last round, and its series wait for the next read rather
than carry the previous drive's values under the new drive's name.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
from collections.abc import Iterator

from prometheus_client.core import Metric

from nodeslo import privileges
from nodeslo.collectors.base import Collector, CollectorContext
from nodeslo.collectors.registry import register
from nodeslo.flagtypes import duration
from nodeslo.metrics import Desc, add
from nodeslo.nvme import helper
from nodeslo.nvme.client import HelperClient
from nodeslo.nvme.poller import Poller, Snapshot
from nodeslo.nvme.replay import ReplaySource
from nodeslo.nvme.requests import PageSource
from nodeslo.nvme.smart import CRITICAL_WARNING_FLAGS, DATA_UNIT_BYTES, SmartLog
from nodeslo.readers import ReadError, read_text

log = logging.getLogger("nodeslo.collector")

# Every per-drive series: the controller's name now, and the drive's identity.
C = ("controller", "model", "serial")
INFO = Desc(
    "nodeslo_nvme_info",
    "gauge",
    "NVMe controller identity from sysfs (always 1).",
    ("controller", "model", "serial", "firmware", "transport"),
)
STATE_LIVE = Desc(
    "nodeslo_nvme_state_live", "gauge", "1 when the controller's sysfs state is live.", C
)
CRITICAL_WARNING = Desc(
    "nodeslo_nvme_critical_warning", "gauge", "SMART critical warning bitmask (byte 0).", C
)
CRITICAL_WARNING_FLAG = Desc(
    "nodeslo_nvme_critical_warning_flag",
    "gauge",
    "One SMART critical warning bit: spare, temperature, reliability, read_only, "
    "volatile_backup, pmr_read_only.",
    (*C, "flag"),
)
TEMPERATURE = Desc(
    "nodeslo_nvme_temperature_celsius",
    "gauge",
    "Composite and sensor temperatures (SMART page, or the NVMe hwmon chip without it).",
    (*C, "sensor"),
)
TEMPERATURE_THRESHOLD = Desc(
    "nodeslo_nvme_temperature_threshold_celsius",
    "gauge",
    "Warning (WCTEMP) and critical (CCTEMP) composite temperature thresholds.",
    (*C, "level"),
)
AVAILABLE_SPARE = Desc(
    "nodeslo_nvme_available_spare_ratio", "gauge", "Remaining spare capacity, 0-1.", C
)
AVAILABLE_SPARE_THRESHOLD = Desc(
    "nodeslo_nvme_available_spare_threshold_ratio",
    "gauge",
    "Spare level below which the drive raises the spare critical warning, 0-1.",
    C,
)
PERCENTAGE_USED = Desc(
    "nodeslo_nvme_percentage_used_ratio",
    "gauge",
    "Vendor estimate of rated endurance used (may exceed 1, capped at 2.55).",
    C,
)
DATA_READ = Desc(
    "nodeslo_nvme_data_read_bytes_total", "counter", "Bytes read by the host (data units).", C
)
DATA_WRITTEN = Desc(
    "nodeslo_nvme_data_written_bytes_total",
    "counter",
    "Bytes written by the host (data units).",
    C,
)
HOST_READS = Desc("nodeslo_nvme_host_read_commands_total", "counter", "Read commands completed.", C)
HOST_WRITES = Desc(
    "nodeslo_nvme_host_write_commands_total", "counter", "Write commands completed.", C
)
BUSY = Desc(
    "nodeslo_nvme_controller_busy_seconds_total",
    "counter",
    "Time the controller was busy with I/O commands (minute resolution).",
    C,
)
POWER_CYCLES = Desc("nodeslo_nvme_power_cycles_total", "counter", "Power cycles.", C)
POWER_ON = Desc(
    "nodeslo_nvme_power_on_seconds_total", "counter", "Power-on time (hour resolution).", C
)
UNSAFE_SHUTDOWNS = Desc(
    "nodeslo_nvme_unsafe_shutdowns_total", "counter", "Shutdowns without notification.", C
)
MEDIA_ERRORS = Desc(
    "nodeslo_nvme_media_errors_total",
    "counter",
    "Unrecovered data integrity errors (media and data integrity errors).",
    C,
)
ERROR_LOG_ENTRIES = Desc(
    "nodeslo_nvme_error_log_entries_total", "counter", "Error information log entries.", C
)
WARNING_TEMPERATURE_TIME = Desc(
    "nodeslo_nvme_warning_temperature_seconds_total",
    "counter",
    "Time the composite temperature was at or above WCTEMP (minute resolution).",
    C,
)
CRITICAL_TEMPERATURE_TIME = Desc(
    "nodeslo_nvme_critical_temperature_seconds_total",
    "counter",
    "Time the composite temperature was at or above CCTEMP (minute resolution).",
    C,
)
MEDIA_WRITTEN = Desc(
    "nodeslo_nvme_media_written_bytes_total",
    "counter",
    "Bytes written to the NAND (OCP C0h physical media units written).",
    C,
)
MEDIA_READ = Desc(
    "nodeslo_nvme_media_read_bytes_total",
    "counter",
    "Bytes read from the NAND (OCP C0h physical media units read).",
    C,
)
BAD_BLOCKS = Desc(
    "nodeslo_nvme_bad_blocks",
    "gauge",
    "Bad NAND blocks (OCP C0h raw count), user or system.",
    (*C, "kind"),
)
UNCORRECTABLE_READ_ERRORS = Desc(
    "nodeslo_nvme_uncorrectable_read_errors_total",
    "counter",
    "Reads the drive could not correct (OCP C0h).",
    C,
)
PCIE_CORRECTABLE_ERRORS = Desc(
    "nodeslo_nvme_pcie_correctable_errors_total",
    "counter",
    "PCIe correctable errors seen by the drive (OCP C0h).",
    C,
)
SMART_UP = Desc(
    "nodeslo_nvme_smart_up",
    "gauge",
    "1 when the last poll read the SMART page; 0 when it failed or timed out (values "
    "stale), or when there is no privileged helper to read it (never read).",
    C,
)
SMART_LAST_SUCCESS = Desc(
    "nodeslo_nvme_smart_last_success_timestamp_seconds",
    "gauge",
    "When the SMART page was last read successfully (Unix time).",
    C,
)

KELVIN_OFFSET = 273.15
MINUTE = 60.0
HOUR = 3600.0
DEFAULT_POLL_INTERVAL = 60.0
DEFAULT_COMMAND_TIMEOUT = 10.0


def celsius(kelvin: int) -> float:
    # Rounded so 323 K exports as 49.85, the value hwmon gives, not 49.85000000000002.
    return round(kelvin - KELVIN_OFFSET, 2)


# SMART counters: (descriptor, field, factor to base units).
SMART_COUNTERS: tuple[tuple[Desc, str, float], ...] = (
    (DATA_READ, "data_units_read", DATA_UNIT_BYTES),
    (DATA_WRITTEN, "data_units_written", DATA_UNIT_BYTES),
    (HOST_READS, "host_read_commands", 1),
    (HOST_WRITES, "host_write_commands", 1),
    (BUSY, "controller_busy_minutes", MINUTE),
    (POWER_CYCLES, "power_cycles", 1),
    (POWER_ON, "power_on_hours", HOUR),
    (UNSAFE_SHUTDOWNS, "unsafe_shutdowns", 1),
    (MEDIA_ERRORS, "media_errors", 1),
    (ERROR_LOG_ENTRIES, "error_log_entries", 1),
    (WARNING_TEMPERATURE_TIME, "warning_temperature_minutes", MINUTE),
    (CRITICAL_TEMPERATURE_TIME, "critical_temperature_minutes", MINUTE),
)

ALL_DESCS: tuple[Desc, ...] = (
    INFO,
    STATE_LIVE,
    CRITICAL_WARNING,
    CRITICAL_WARNING_FLAG,
    TEMPERATURE,
    TEMPERATURE_THRESHOLD,
    AVAILABLE_SPARE,
    AVAILABLE_SPARE_THRESHOLD,
    PERCENTAGE_USED,
    *(desc for desc, _, _ in SMART_COUNTERS),
    MEDIA_WRITTEN,
    MEDIA_READ,
    BAD_BLOCKS,
    UNCORRECTABLE_READ_ERRORS,
    PCIE_CORRECTABLE_ERRORS,
    SMART_UP,
    SMART_LAST_SUCCESS,
)


def page_source(options: argparse.Namespace) -> tuple[PageSource | None, str]:
    """The source the flags ask for, and how to name it in the log."""
    replay = getattr(options, "nvme_replay_dir", None)
    if replay:
        return ReplaySource(replay), f"replay:{replay}"
    path = getattr(options, "nvme_helper_socket", None)
    if path:
        return HelperClient(path=path), f"helper:{path}"
    channel = getattr(options, "nvme_helper_channel", None)
    if isinstance(channel, socket.socket):
        return HelperClient(sock=channel), "helper:forked"
    return None, "none"


@register
class NvmeCollector(Collector):
    name = "nvme"
    help = "NVMe SMART / OCP health log pages (via the privileged helper), sysfs, hwmon."

    @classmethod
    def add_arguments(cls, parser: argparse._ArgumentGroup) -> None:
        parser.add_argument(
            "--collector.nvme.poll-interval",
            dest="nvme_poll_interval",
            type=duration,
            default=DEFAULT_POLL_INTERVAL,
            metavar="DURATION",
            help="how often the log pages are read (default: 60s)",
        )
        parser.add_argument(
            "--collector.nvme.command-timeout",
            dest="nvme_command_timeout",
            type=duration,
            default=DEFAULT_COMMAND_TIMEOUT,
            metavar="DURATION",
            help="timeout of one admin command; past it the controller is stale (default: 10s)",
        )
        parser.add_argument(
            "--collector.nvme.replay-dir",
            dest="nvme_replay_dir",
            default=None,
            metavar="DIR",
            help="read DIR/<controller>/log-02.bin, log-c0.bin, identify-ctrl.bin "
            "instead of the devices (as `nodeslo nvme dump` writes them)",
        )
        parser.add_argument(
            "--collector.nvme.helper-socket",
            dest="nvme_helper_socket",
            default=None,
            metavar="PATH",
            help="connect to `nodeslo nvme-helper` on this Unix socket instead of forking "
            f"the helper (its default: {helper.DEFAULT_SOCKET})",
        )

    @classmethod
    def prepare_privileged(cls, options: argparse.Namespace) -> None:
        """Fork the helper while the daemon is still root, before it drops privileges."""
        if getattr(options, "nvme_replay_dir", None) or getattr(
            options, "nvme_helper_socket", None
        ):
            return
        if os.geteuid() != 0:
            return
        caps = privileges.capabilities()
        if not caps.get("CapEff", 0) >> privileges.CAP_SYS_ADMIN & 1:
            log.warning(
                "nvme: running as root without CAP_SYS_ADMIN: no helper, no SMART pages",
                extra={"fields": {"collector": "nvme"}},
            )
            return
        options.nvme_helper_channel = helper.fork_helper(getattr(options, "path_sysfs", "/sys"))

    def __init__(self, ctx: CollectorContext) -> None:
        super().__init__(ctx)
        options = ctx.options
        self.source, self.source_name = page_source(options)
        replay = self.source if isinstance(self.source, ReplaySource) else None
        self.class_dir = ctx.roots.sys("class", "nvme")
        self.poller = Poller(
            ctx.roots.sysfs,
            self.source,
            interval=float(ctx.option("nvme_poll_interval", DEFAULT_POLL_INTERVAL)),  # type: ignore[arg-type]
            timeout=float(ctx.option("nvme_command_timeout", DEFAULT_COMMAND_TIMEOUT)),  # type: ignore[arg-type]
            errors=ctx.errors,
            extra_controllers=replay.controllers if replay is not None else None,
        )
        # (controller, attribute) -> path, built once per name.
        self._paths: dict[tuple[str, str], str] = {}

    def start(self) -> None:
        if self.source is None:
            log.warning(
                "nvme: no privileged helper: exporting nvme_info, nvme_state_live and hwmon "
                "temperatures only, and nvme_smart_up 0; SMART and OCP pages need the daemon "
                "started as root (it forks the helper; add --run-as-user) or "
                "--collector.nvme.helper-socket",
                extra={"fields": {"collector": "nvme"}},
            )
        else:
            log.info("nvme: page source", extra={"fields": {"source": self.source_name}})
        self.poller.start()

    def close(self) -> None:
        self.poller.close()

    def _sysfs(self, controller: str, attribute: str) -> str | None:
        """One attribute of the controller, read at scrape time (state, serial)."""
        path = self._paths.get((controller, attribute))
        if path is None:
            path = os.path.join(self.class_dir, controller, attribute)
            self._paths[(controller, attribute)] = path
        try:
            return read_text(path)
        except ReadError as exc:
            self.skip(f"{controller}:{attribute}", exc)
            return None

    def _same_drive(self, snap: Snapshot) -> bool:
        """Whether the drive behind the name is still the one the poller last read."""
        if snap.attributes is None:
            return True  # no serial in sysfs to compare with
        serial = self._sysfs(snap.controller, "serial")
        if serial is None or serial == snap.attributes.serial:
            return True
        self.poller.refresh(snap.controller)
        return False

    def collect(self) -> Iterator[Metric]:
        present = self.poller.controllers()
        if len(self._paths) > 8 * len(present) + 64:
            self._paths.clear()
        families = {d: d.family() for d in ALL_DESCS}
        for snap in self.poller.snapshot(present):
            if not self._same_drive(snap):
                continue
            identity = snap.identity
            if identity is None:
                # Neither sysfs nor Identify named the drive: its series cannot be told
                # from another drive's, and it does not count as present.
                self.skip(
                    f"{snap.controller}:identity",
                    ValueError(f"{self.class_dir}/{snap.controller}: no model or serial"),
                )
                continue
            ctrl = [snap.controller, *identity]
            state = self._sysfs(snap.controller, "state")
            if state is not None:
                add(families[STATE_LIVE], ctrl, 1.0 if state == "live" else 0.0)
            a = snap.attributes
            if a is not None:
                add(
                    families[INFO],
                    [snap.controller, a.model, a.serial, a.firmware, a.transport],
                    1.0,
                )
            elif snap.identify is not None:
                add(families[INFO], [*ctrl, snap.identify.firmware, ""], 1.0)
            self._temperatures(families, ctrl, snap)
            if snap.smart is not None:
                self._smart(families, ctrl, snap.smart)
            if snap.ocp is not None:
                o = snap.ocp
                add(families[MEDIA_WRITTEN], ctrl, float(o.physical_media_units_written))
                add(families[MEDIA_READ], ctrl, float(o.physical_media_units_read))
                add(families[BAD_BLOCKS], [*ctrl, "user"], o.bad_user_nand_blocks_raw)
                add(families[BAD_BLOCKS], [*ctrl, "system"], o.bad_system_nand_blocks_raw)
                add(families[UNCORRECTABLE_READ_ERRORS], ctrl, o.uncorrectable_read_errors)
                add(families[PCIE_CORRECTABLE_ERRORS], ctrl, o.pcie_correctable_errors)
            if snap.up is not None:
                add(families[SMART_UP], ctrl, 1.0 if snap.up else 0.0)
            if snap.last_success is not None:
                add(families[SMART_LAST_SUCCESS], ctrl, snap.last_success)
        yield from families.values()

    def _smart(self, families: dict[Desc, Metric], ctrl: list[str], s: SmartLog) -> None:
        add(families[CRITICAL_WARNING], ctrl, s.critical_warning)
        for bit, flag in CRITICAL_WARNING_FLAGS:
            add(families[CRITICAL_WARNING_FLAG], [*ctrl, flag], s.critical_warning >> bit & 1)
        add(families[AVAILABLE_SPARE], ctrl, s.available_spare_percent / 100)
        add(families[AVAILABLE_SPARE_THRESHOLD], ctrl, s.available_spare_threshold_percent / 100)
        add(families[PERCENTAGE_USED], ctrl, s.percentage_used / 100)
        for desc, attr, factor in SMART_COUNTERS:
            add(families[desc], ctrl, float(getattr(s, attr)) * factor)

    def _temperatures(self, families: dict[Desc, Metric], ctrl: list[str], snap: Snapshot) -> None:
        family = families[TEMPERATURE]
        if snap.smart is not None:
            if snap.smart.composite_temperature_kelvin:
                kelvin = snap.smart.composite_temperature_kelvin
                add(family, [*ctrl, "composite"], celsius(kelvin))
            for number, kelvin in enumerate(snap.smart.temperature_sensors_kelvin, 1):
                if kelvin:  # 0 K: the sensor is not implemented
                    add(family, [*ctrl, f"sensor{number}"], celsius(kelvin))
        elif snap.hwmon is not None:
            for sensor, value in snap.hwmon.temperatures:
                add(family, [*ctrl, sensor], value)
        thresholds = families[TEMPERATURE_THRESHOLD]
        if snap.identify is not None:
            if snap.identify.warning_temperature_kelvin:
                kelvin = snap.identify.warning_temperature_kelvin
                add(thresholds, [*ctrl, "warning"], celsius(kelvin))
            if snap.identify.critical_temperature_kelvin:
                kelvin = snap.identify.critical_temperature_kelvin
                add(thresholds, [*ctrl, "critical"], celsius(kelvin))
        elif snap.hwmon is not None and snap.hwmon.critical_celsius is not None:
            # hwmon's temp1_crit is CCTEMP; its temp1_max is a settable feature, not WCTEMP.
            add(thresholds, [*ctrl, "critical"], snap.hwmon.critical_celsius)
