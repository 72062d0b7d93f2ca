"""`nodeslo check`: is this server fit to join the fleet? One pass, one verdict.

It evaluates the profile's tuning expectations (the tuning collector's own code) and
the health findings the exporter alerts on, reading the same files through the
collectors' public readers: ECC reporting present and no uncorrectable error, md
arrays and ZFS pools not degraded, NVMe drives without a critical warning and above
their spare threshold, no CPU throttled since boot, one microcode revision on every
CPU, and the BMC's view (reachable, PSUs healthy and redundant, fans turning, inlet air
below its limits, no other sensor critical). Each finding is a small function from what
a reader returned to a `Finding`.

Verdicts: pass; fail; skip (nothing to judge: no NVMe, no thermal_throttle on AMD);
error (the host's files could not be read, so the server cannot be certified).
Exit status: 0 when nothing failed or errored, 1 otherwise, 2 on bad input (flags,
profile, a --path.* that is not a directory) before anything is read.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Literal, Protocol, TextIO

from nodeslo.collectors.edac import EdacReader, EdacSnapshot
from nodeslo.collectors.firmware import FirmwareReader, Microcode
from nodeslo.collectors.mdraid import MdArray, MdReader
from nodeslo.collectors.redundancy import ZfsPool, ZfsReader
from nodeslo.collectors.thermal import throttle_sources
from nodeslo.collectors.tuning import TuningReader, TuningResult
from nodeslo.cpus import Topology
from nodeslo.inventory.evaluate import InventoryResult, evaluate
from nodeslo.inventory.facts import FactReader
from nodeslo.ipmi import poller as bmc_poller
from nodeslo.ipmi.ioctl import DeviceTransport
from nodeslo.ipmi.recording import ReplayTransport
from nodeslo.ipmi.requests import Transport
from nodeslo.ipmi.sensor import SensorState
from nodeslo.links.survey import PcieSurvey, survey
from nodeslo.log import OnceLog
from nodeslo.nvme.direct import DirectSource
from nodeslo.nvme.poller import Poller
from nodeslo.nvme.replay import ReplaySource
from nodeslo.nvme.requests import PageSource
from nodeslo.pack.catalog.bmc import (
    PSU_FAILURE_STATES,
    PSU_STATES,
    REDUNDANCY_DEGRADED_STATES,
    REDUNDANCY_LOST_STATES,
)
from nodeslo.paths import Roots
from nodeslo.profile import BMCHealth, PowerHealth, Profile, ProfileError, load_profile
from nodeslo.readers import ReadError, read_int

Verdict = Literal["pass", "fail", "skip", "error"]
VERDICTS: tuple[Verdict, ...] = ("pass", "fail", "skip", "error")


@dataclass(frozen=True)
class Finding:
    setting: str
    expected: str
    actual: str
    verdict: Verdict
    why: str


# Why each check matters, in one line, with the seed document's section.
WHY = {
    "deep_cstates": "waking from a deep C-state puts its exit latency on every wake-up "
    "[1.5: disable deep C-states]",
    "governor": "other governors drop the clock between bursts and ramp up late [1.1: "
    "sustained all-core boost]",
    "turbo": "without turbo the cores never reach the sustained all-core boost the "
    "capacity plan assumes [1.1]",
    "transparent_hugepage": "khugepaged compaction and huge-page faults stall tasks for "
    "milliseconds [5.3: OS kernel tuning]",
    "isolated_cpus": "housekeeping work scheduled on latency-critical CPUs preempts the "
    "process manager [5.3]",
    "nohz_full": "the scheduler tick interrupts the latency-critical CPUs every few "
    "milliseconds [5.3]",
    "kernel.numa_balancing": "NUMA balancing unmaps pages to sample accesses: extra page "
    "faults and migrations [2.1.2: NUMA locality]",
    "kernel.timer_migration": "timers migrate onto busy CPUs and fire inside "
    "latency-critical work [5.3]",
    "vm.swappiness": "a swapped-out page turns a memory access into a disk read [5.3]",
    "ecc_reporting": "without EDAC, the corrected errors that predict a DIMM failure go "
    "unseen [1.2: ECC mandatory]",
    "ecc_uncorrectable": "an uncorrectable error has crashed or corrupted a process; the "
    "DIMM must be replaced [1.2]",
    "md": "a degraded array has lost redundancy: one more drive failure loses the process "
    "state [1.3.2: RAID 10]",
    "md_resync": "a resync competes with the workload for NVMe bandwidth until it ends [1.3.2]",
    "zfs": "a degraded pool has lost redundancy: one more drive failure loses the process "
    "state [1.3.2: ZFS mirroring]",
    "redundancy": "process state needs RAID 10 or ZFS mirrors over the NVMe pool [1.3.2]",
    "nvme_critical_warning": "a drive raising a critical warning is failing or about to go "
    "read-only [5.4: S.M.A.R.T.]",
    "nvme_spare": "a drive below its spare threshold has run out of blocks to remap "
    "failures to [5.4]",
    "cpu_throttling": "throttled cores run below the all-core frequency and stretch every "
    "deadline [5.1: thermal throttling]",
    "microcode": "CPUs on different microcode differ in errata and power-state behaviour "
    "[5.3: microcode applied immediately]",
    "microcode_current": "the kernel knows a newer microcode for this CPU [5.3: microcode "
    "applied immediately]",
    "bmc": "without the BMC, failed PSUs, stopped fans and hot inlet air go unseen [5.2]",
    "psu": "with a PSU failed or missing, the next failure stops the server [5.2: dual "
    "hot-swappable PSUs]",
    "psu_redundancy": "the BMC itself says one more PSU or feed failure stops the server [5.2]",
    "fans": "a failed fan takes the cooling margin that keeps the CPUs out of throttling "
    "[5.2: airflow, 5.1]",
    "inlet": "warm inlet air leads to throttling and thermal shutdown [5.2: hot/cold aisle "
    "containment]",
    "bmc_sensors": "the BMC judges a component critical (a voltage rail, a DIMM, a CPU) [5.2]",
}
# The inventory and links rows: the spec's reason in words.
WHY |= {
    "sockets": "the spec is a dual-socket server: two sockets give the core count while "
    "keeping NUMA boundaries manageable",
    "cores_per_socket": "the scheduler's parallelism is sized on 64 physical cores per socket; "
    "fewer cores queue the work",
    "threads_per_socket": "128 threads per socket need SMT on: without it half of the 256 "
    "dispatch slots are gone",
    "llc_per_socket": "at least 128 MB of last-level cache per socket keeps process state tables "
    "close to the cores",
    "memory": "1.5 TB holds the state of every managed process; with less, the host swaps or "
    "evicts under load",
    "memory_balance": "memory must be balanced across NUMA nodes: the smaller node runs out first "
    "and sends its tasks' memory remote",
    "dimms_per_socket": "12 DIMMs per socket fill every memory channel; an empty channel (a DIMM "
    "that failed to train) cuts memory bandwidth",
    "dimm_size": "DIMMs of one size interleave evenly; mixed sizes leave some channels with more "
    "to serve than others",
    "nvme_drives": "the process data pool needs at least 8 enterprise NVMe drives of 3.84 TB for "
    "its capacity and RAID 10 striping",
    "nvme_link": "a data drive on fewer lanes or an older PCIe generation delivers a fraction of "
    "its bandwidth: the spec asks for Gen4 or newer at x4",
    "network_speed": "the control plane and state synchronisation need both 25 GbE ports up at "
    "full speed",
    "rdma_ports": "RoCE offload keeps network processing off the cores: its ports must be active",
    "pcie_links": "a link trained below what the device and its slot can do loses bandwidth "
    "without a single error",
    "pcie_errors": "an uncorrectable PCIe error since boot means a device lost transactions or "
    "was reset",
}
SYSCTL_WHY = "a kernel setting the profile pins; drift changes behaviour without a deploy [5.3]"


def why(setting: str) -> str:
    key = setting.split(":", 1)[0]
    return WHY.get(key, SYSCTL_WHY)


def finding(setting: str, expected: str, actual: str, verdict: Verdict) -> Finding:
    return Finding(setting, expected, actual, verdict, why(setting))


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


# --- findings: pure functions of what the readers returned -------------------------


def tuning_finding(result: TuningResult) -> Finding:
    verdict: Verdict = (
        "error" if result.compliant is None else "pass" if result.compliant else "fail"
    )
    return finding(result.setting, result.expected, result.actual, verdict)


def ecc_findings(edac: EdacSnapshot) -> list[Finding]:
    controllers = len(edac.controllers)
    if controllers == 0:
        return [
            finding(
                "ecc_reporting",
                "EDAC memory controllers",
                "none: ECC errors go unreported",
                "fail",
            ),
            finding("ecc_uncorrectable", "0", "unknown (no EDAC)", "skip"),
        ]
    without_ecc = edac.dimms_without_ecc()
    if without_ecc:
        reporting = finding(
            "ecc_reporting",
            "EDAC memory controllers, ECC on every DIMM",
            f"ECC off on {_plural(len(without_ecc), 'DIMM')}: {', '.join(without_ecc[:4])}",
            "fail",
        )
    else:
        reporting = finding(
            "ecc_reporting",
            "EDAC memory controllers",
            _plural(controllers, "controller"),
            "pass",
        )
    where = []
    for c in edac.controllers:
        bad = [d for d in c.dimms if d.uncorrectable]
        where += [f"mc{c.controller}/{d.dimm} {d.label}".rstrip() for d in bad]
        if not bad and c.uncorrectable:
            where.append(f"mc{c.controller}")
    count = edac.uncorrectable
    actual = str(count) if not where else f"{count} ({', '.join(where[:4])})"
    return [reporting, finding("ecc_uncorrectable", "0", actual, "fail" if count else "pass")]


def md_finding(array: MdArray) -> Finding:
    """The kernel's verdict on the array: its state, its degraded count, failed members."""
    setting = f"md:{array.device}"
    if not array.running:
        state = array.state or "unreadable"
        what = "assembled, not started" if state == "inactive" else "not running"
        return finding(setting, "active", f"{state} ({what})", "fail")
    total = array.raid_disks
    expected = f"{total}/{total} in sync" if total else "active"
    if total and array.degraded is not None:
        parts = [f"{total - array.degraded}/{total} in sync"]
    else:
        parts = [f"{array.active_members} members"]
    failed = [m.name for m in array.members if m.faulty]
    if failed:
        parts.append(f"failed: {', '.join(failed)}")
    if array.sync_action and array.sync_progress is not None:
        parts.append(f"{array.sync_action} {array.sync_progress:.1%}")
    if array.problems:
        parts.append("; ".join(array.problems))
    verdict: Verdict = "fail" if array.degraded or failed else "pass"
    if array.problems and verdict == "pass":
        verdict = "error"  # part of the array could not be read: no verdict on it
    return finding(setting, expected, ", ".join(parts), verdict)


def zfs_finding(pool: ZfsPool) -> Finding:
    return finding(
        f"zfs:{pool.name}", "ONLINE", pool.state, "pass" if pool.state == "ONLINE" else "fail"
    )


def redundancy_findings(
    arrays: Sequence[MdArray] | None, pools: Sequence[ZfsPool]
) -> list[Finding]:
    found = [md_finding(a) for a in arrays or ()] + [zfs_finding(p) for p in pools]
    if not found:
        return [finding("redundancy", "md arrays or ZFS pools", "none", "skip")]
    return found


def microcode_findings(microcode: Microcode | None, outdated: bool | None) -> list[Finding]:
    out = []
    if microcode is None:
        out.append(finding("microcode", "one revision on every CPU", "not reported", "skip"))
    elif len(microcode.revisions) == 1:
        (revision,) = microcode.revisions
        out.append(finding("microcode", "one revision on every CPU", revision, "pass"))
    else:
        actual = ", ".join(
            f"{rev} on {_plural(n, 'CPU')}" for rev, n in sorted(microcode.revisions.items())
        )
        out.append(finding("microcode", "one revision on every CPU", actual, "fail"))
    if outdated is not None:
        out.append(
            finding(
                "microcode_current",
                "newest the kernel knows",
                "older" if outdated else "current",
                "fail" if outdated else "pass",
            )
        )
    return out


class SmartHealth(Protocol):
    """What the NVMe findings need of a decoded SMART / Health page."""

    @property
    def critical_warning(self) -> int: ...
    @property
    def available_spare_percent(self) -> int: ...
    @property
    def available_spare_threshold_percent(self) -> int: ...


WARNING_FLAGS = ("spare", "temperature", "reliability", "read_only", "volatile_backup", "pmr")


def nvme_findings(pages: dict[str, SmartHealth | None]) -> list[Finding]:
    """{controller: its SMART page, None when it could not be read}."""
    if not pages:
        return [
            finding("nvme_critical_warning", "none", "no NVMe SMART data", "skip"),
            finding("nvme_spare", "above threshold", "no NVMe SMART data", "skip"),
        ]
    warnings, low, unread = [], [], []
    for controller, page in sorted(pages.items(), key=lambda kv: _number(kv[0])):
        if page is None:
            unread.append(controller)
            continue
        if page.critical_warning:
            flags = [n for bit, n in enumerate(WARNING_FLAGS) if page.critical_warning >> bit & 1]
            warnings.append(f"{controller} {'+'.join(flags) or hex(page.critical_warning)}")
        if page.available_spare_percent < page.available_spare_threshold_percent:
            low.append(
                f"{controller} {page.available_spare_percent}% < "
                f"{page.available_spare_threshold_percent}%"
            )
    read = len(pages) - len(unread)
    out = []
    for setting, expected, bad, ok in (
        ("nvme_critical_warning", "none", warnings, f"none on {_plural(read, 'controller')}"),
        ("nvme_spare", "above threshold", low, f"above threshold on {_plural(read, 'controller')}"),
    ):
        if bad:
            out.append(finding(setting, expected, ", ".join(bad), "fail"))
        elif unread:
            out.append(finding(setting, expected, f"unreadable: {', '.join(unread)}", "error"))
        else:
            out.append(finding(setting, expected, ok, "pass"))
    return out


def throttle_finding(events: dict[str, int] | None) -> Finding:
    """{scope: events since boot summed over cores or packages}; None when not reported."""
    if events is None:
        return finding("cpu_throttling", "none since boot", "not reported by this CPU", "skip")
    total = sum(events.values())
    if not total:
        return finding("cpu_throttling", "none since boot", "none", "pass")
    actual = ", ".join(f"{n} {scope} events" for scope, n in sorted(events.items()) if n)
    return finding("cpu_throttling", "none since boot", actual, "fail")


_PSU_STATES = frozenset(PSU_STATES.split("|"))
_PSU_FAILURE_STATES = frozenset(PSU_FAILURE_STATES.split("|"))
_REDUNDANCY_LOST = frozenset(REDUNDANCY_LOST_STATES.split("|"))
_REDUNDANCY_DEGRADED = frozenset(REDUNDANCY_DEGRADED_STATES.split("|"))
_BMC_REASONS: dict[str, tuple[Verdict, str]] = {
    bmc_poller.ABSENT: ("skip", "no BMC on this machine"),
    bmc_poller.NO_DRIVER: ("fail", "declared by the firmware, no /dev/ipmi0 (load ipmi_si, "
                           "ipmi_devintf)"),
    bmc_poller.NO_HELPER: ("skip", "not read: run as root, or with --collector.bmc.replay"),
    bmc_poller.TIMEOUT: ("error", "not answering"),
    bmc_poller.ERROR: ("error", "answering errors"),
}  # fmt: skip


def _asserted(state: SensorState) -> set[str]:
    return {name for name, on in state.states if on}


def _states(state: SensorState) -> set[str]:
    return {name for name, _ in state.states}


def _is_inlet(state: SensorState, pattern: re.Pattern[str]) -> bool:
    record = state.record
    if record.type_name != "temperature" or record.units.label() != "celsius":
        return False
    return record.entity.startswith("air_inlet.") or bool(pattern.fullmatch(record.name))


def bmc_findings(snap: bmc_poller.Snapshot, power: PowerHealth, health: BMCHealth) -> list[Finding]:
    """The BMC's verdicts, as the bmc alerts judge them (pack/catalog/bmc.py)."""
    if not snap.up:
        down, actual = _BMC_REASONS.get(snap.reason, ("error", snap.reason))
        return [finding("bmc", "answering", actual, down)]
    out = [finding("bmc", "answering", f"answering, {len(snap.sensors)} sensors", "pass")]
    sensors = [s for s in snap.sensors if s.available]
    psus = [s for s in sensors if s.record.type_name == "power_supply" and _states(s) & _PSU_STATES]
    unhealthy = []
    for psu in psus:
        asserted = _asserted(psu)
        absent = any(n == "presence_detected" and not on for n, on in psu.states)
        bad = sorted(asserted & _PSU_FAILURE_STATES) + (["absent"] if absent else [])
        if bad:
            unhealthy.append(f"{psu.record.name}: {'+'.join(bad)}")
    healthy = len(psus) - len(unhealthy)
    expected = f"{power.psu_count} healthy"
    if not psus:
        out.append(finding("psu", expected, "no PSU status sensor", "fail"))
    else:
        actual = f"{healthy} of {len(psus)} healthy" + (
            f" ({', '.join(unhealthy)})" if unhealthy else ""
        )
        ok = healthy >= power.psu_count and not unhealthy
        out.append(finding("psu", expected, actual, "pass" if ok else "fail"))
    redundancy = [
        s
        for s in sensors
        if s.record.type_name in ("power_supply", "power_unit")
        and _states(s) & (_REDUNDANCY_LOST | {"fully_redundant"})
    ]
    if not redundancy:
        out.append(finding("psu_redundancy", "fully redundant", "no redundancy sensor", "skip"))
    for sensor in redundancy:
        asserted = _asserted(sensor)
        lost = asserted & (_REDUNDANCY_LOST | _REDUNDANCY_DEGRADED)
        actual = ", ".join(sorted(lost)) if lost else ", ".join(sorted(asserted)) or "no state"
        setting = f"psu_redundancy:{sensor.record.name}"
        out.append(finding(setting, "fully redundant", actual, "fail" if lost else "pass"))
    out.append(_fans_finding(sensors, health))
    out.append(_inlet_finding(sensors, health))
    pattern = re.compile(health.inlet_sensors)
    ignored = re.compile(health.ignore_sensors) if health.ignore_sensors else None
    critical = [
        f"{s.record.name} ({s.record.type_name})"
        for s in sensors
        if (s.severity or 0) >= 2
        and s.record.type_name not in ("power_supply", "power_unit", "fan")
        and not _is_inlet(s, pattern)
        and not (ignored and ignored.fullmatch(s.record.name))
    ]
    actual = ", ".join(critical) or "none critical"
    out.append(finding("bmc_sensors", "none critical", actual, "fail" if critical else "pass"))
    return out


def _fans_finding(sensors: Sequence[SensorState], health: BMCHealth) -> Finding:
    fans = [s for s in sensors if s.record.type_name == "fan"]
    if not fans:
        return finding("fans", "turning", "no fan sensor", "skip")
    failed = []
    for fan in fans:
        if fan.value is not None and fan.record.units.label() == "rpm":
            floor = dict(fan.thresholds).get("lower_critical", health.fan_min_rpm)
            if fan.value <= floor:
                failed.append(f"{fan.record.name} {fan.value:g} RPM <= {floor:g}")
        elif fan.value is None and (fan.severity or 0) >= 2:
            failed.append(f"{fan.record.name}: {', '.join(sorted(_asserted(fan)))}")
    actual = ", ".join(failed) or f"{_plural(len(fans), 'fan sensor')} normal"
    return finding("fans", "above lower critical", actual, "fail" if failed else "pass")


def _inlet_finding(sensors: Sequence[SensorState], health: BMCHealth) -> Finding:
    pattern = re.compile(health.inlet_sensors)
    inlets = [s for s in sensors if _is_inlet(s, pattern) and s.value is not None]
    if not inlets:
        return finding("inlet", "an inlet temperature", "no inlet sensor", "skip")
    hot = []
    for inlet in inlets:
        assert inlet.value is not None
        limits = dict(inlet.thresholds)
        limit = min(
            limits.get("upper_non_critical", health.inlet_warning_celsius),
            health.inlet_warning_celsius,
        )
        if inlet.value >= limit:
            hot.append(f"{inlet.record.name} {inlet.value:g} °C >= {limit:g}")
    expected = f"below {health.inlet_warning_celsius:g} °C and the sensor's limits"
    actual = ", ".join(hot) or ", ".join(f"{i.record.name} {i.value:g} °C" for i in inlets)
    return finding("inlet", expected, actual, "fail" if hot else "pass")


def inventory_finding(result: InventoryResult) -> Finding:
    """A line the host gives nothing to judge by (DIMMs without EDAC, which ecc_reporting
    fails already) is skipped."""
    verdict: Verdict = (
        "skip" if result.compliant is None else "pass" if result.compliant else "fail"
    )
    return finding(result.item, result.expected, result.actual, verdict)


def pcie_findings(report: PcieSurvey) -> list[Finding]:
    if not report.endpoints:
        return [
            finding("pcie_links", "at min(device max, port max)", "no watched devices", "skip"),
            finding("pcie_errors", "none since boot", "no watched devices", "skip"),
        ]
    bad = [f"{n} not answering" for n in report.unresponsive] + report.degraded
    links = finding(
        "pcie_links",
        "at min(device max, port max)",
        ", ".join(bad[:4]) if bad else f"{_plural(report.endpoints, 'device')} at full link",
        "fail" if bad else "pass",
    )
    errors = finding(
        "pcie_errors",
        "none since boot",
        ", ".join(report.uncorrectable[:4]) if report.uncorrectable else "none",
        "fail" if report.uncorrectable else "pass",
    )
    return [links, errors]


def error_finding(setting: str, expected: str, exc: Exception) -> Finding:
    return finding(setting, expected, f"unreadable: {exc}", "error")


def _number(name: str) -> tuple[str, int]:
    digits = name.rstrip("0123456789")
    tail = name[len(digits) :]
    return (digits, int(tail) if tail else -1)


# --- reading the host ----------------------------------------------------------------


@dataclass
class Host:
    """The readers `nodeslo check` uses, over one set of roots."""

    roots: Roots
    nvme_replay_dir: str | None = None
    bmc_replay: str | None = None

    def __post_init__(self) -> None:
        self.topology = Topology(self.roots)
        self.warnings: list[str] = []

    def warn(self, key: str, exc: Exception) -> None:
        message = str(exc)
        if message not in self.warnings:
            self.warnings.append(message)

    def findings(self, profile: Profile) -> list[Finding]:
        out = [
            tuning_finding(r)
            for r in TuningReader(self.roots, self.topology).evaluate(profile.tuning, self.warn)
        ]
        out += self._guard("ecc_reporting", "EDAC memory controllers", self._ecc)
        out += self._guard("redundancy", "md arrays or ZFS pools", self._redundancy)
        out += self._guard("nvme_critical_warning", "none", self._nvme)
        out += self._guard("cpu_throttling", "none since boot", self._throttling)
        out += self._guard("microcode", "one revision on every CPU", self._microcode)
        out += bmc_findings(
            read_bmc(self.roots, self.bmc_replay), profile.health.power, profile.health.bmc
        )
        out += self._guard(
            "pcie_links", "at min(device max, port max)", lambda: self._pcie(profile)
        )
        out += self._guard("inventory", "the profile's inventory", lambda: self._inventory(profile))
        return out

    def _guard(
        self, setting: str, expected: str, read: Callable[[], list[Finding]]
    ) -> list[Finding]:
        try:
            return read()
        except ReadError as exc:
            return [error_finding(setting, expected, exc)]

    def _ecc(self) -> list[Finding]:
        return ecc_findings(EdacReader(self.roots).read(self.warn))

    def _redundancy(self) -> list[Finding]:
        arrays = MdReader(self.roots).arrays()
        return redundancy_findings(arrays, ZfsReader(self.roots).pools(self.warn))

    def _microcode(self) -> list[Finding]:
        reader = FirmwareReader(self.roots, self.topology)
        return microcode_findings(reader.microcode(self.warn), reader.microcode_outdated())

    def _throttling(self) -> list[Finding]:
        return [throttle_finding(read_throttle_events(self.roots, self.topology))]

    def _pcie(self, profile: Profile) -> list[Finding]:
        return pcie_findings(survey(self.roots, profile.health.links.pcie_devices, self.warn))

    def _inventory(self, profile: Profile) -> list[Finding]:
        reader = FactReader(self.roots, self.topology)
        facts = reader.read(profile.inventory.network.interfaces, self.warn)
        return [inventory_finding(r) for r in evaluate(profile.inventory, facts)]

    def _nvme(self) -> list[Finding]:
        return nvme_findings(read_nvme_pages(self.roots, self.nvme_replay_dir, self.warn))


def read_throttle_events(roots: Roots, topology: Topology) -> dict[str, int] | None:
    """Throttle events since boot per scope, each core and package counted once."""
    _, pairs = throttle_sources(topology.online())
    events: dict[str, int] = {}
    found = False
    for cpu, scope in pairs:
        count = read_int(topology.cpu_path(cpu.cpu, "thermal_throttle", f"{scope}_throttle_count"))
        if count is None:
            continue
        found = True
        events[scope] = events.get(scope, 0) + count
    return events if found else None


def read_nvme_pages(
    roots: Roots, replay_dir: str | None, on_error: Callable[[str, Exception], None]
) -> dict[str, SmartHealth | None]:
    """SMART pages of every controller, from a replay directory or, as root on the host
    itself, straight from the devices; {} when neither is possible."""
    source: PageSource | None = None
    extra = None
    if replay_dir is not None:
        replay = ReplaySource(replay_dir)
        source, extra = replay, replay.controllers
    elif os.geteuid() == 0 and os.path.realpath(roots.sysfs) == "/sys":
        source = DirectSource(roots.sysfs)
    if source is None:
        return {}
    # What the poller would log as the daemon (a page the drive lacks, ...) is noise here;
    # what matters ends up in the findings.
    logger = logging.getLogger("nodeslo.check.nvme")
    logger.setLevel(logging.WARNING)
    poller = Poller(
        roots.sysfs,
        source,
        interval=3600.0,
        timeout=10.0,
        errors=OnceLog(logger),
        extra_controllers=extra,
    )
    poller.poll_round(wait=30.0)
    pages: dict[str, SmartHealth | None] = {}
    for snap in poller.snapshot(poller.controllers()):
        pages[snap.controller] = snap.smart
        if snap.smart is None:
            on_error(snap.controller, ReadError(snap.controller, "no SMART page"))
    source.close()
    return pages


def read_bmc(roots: Roots, replay: str | None) -> bmc_poller.Snapshot:
    """One poll of the BMC: from a recording, or as root on the host itself."""
    transport: Transport | None = None
    presence: Callable[[], str | None] = lambda: None  # noqa: E731
    if replay is not None:
        transport = ReplayTransport(replay)
    else:
        presence = lambda: bmc_poller.presence(roots.sysfs)  # noqa: E731
        if os.geteuid() == 0 and os.path.realpath(roots.sysfs) == "/sys":
            transport = DeviceTransport(sysfs=roots.sysfs)
    logger = logging.getLogger("nodeslo.check.bmc")
    logger.setLevel(logging.ERROR)
    poller = bmc_poller.Poller(
        transport, interval=3600.0, timeout=5.0, errors=OnceLog(logger), presence=presence
    )
    poller.poll_round()
    if transport is not None:
        transport.close()
    return poller.snapshot()


# --- output --------------------------------------------------------------------------


def summary(findings: Iterable[Finding]) -> dict[str, int]:
    counts: dict[str, int] = dict.fromkeys(VERDICTS, 0)
    for f in findings:
        counts[f.verdict] += 1
    return counts


def passed(findings: Sequence[Finding]) -> bool:
    return not any(f.verdict in ("fail", "error") for f in findings)


def render_table(profile: Profile, findings: Sequence[Finding]) -> str:
    header = ("SETTING", "EXPECTED", "ACTUAL", "VERDICT", "WHY")
    rows = [(f.setting, f.expected, f.actual, f.verdict.upper(), f.why) for f in findings]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    lines = [f"nodeslo check: profile {profile.name} (sha256 {profile.sha256[:12]})"]
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True)]
        lines.append("  ".join([*cells, row[4]]).rstrip())
    counts = summary(findings)
    verdict = "PASS" if passed(findings) else "FAIL"
    tally = ", ".join(f"{counts[v]} {v}" for v in VERDICTS)
    lines.append(f"{verdict}: {_plural(len(findings), 'check')}: {tally}")
    return "\n".join(lines) + "\n"


def render_json(profile: Profile, findings: Sequence[Finding]) -> str:
    document = {
        "profile": profile.name,
        "sha256": profile.sha256,
        "passed": passed(findings),
        "summary": summary(findings),
        "checks": [asdict(f) for f in findings],
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


# --- the command -----------------------------------------------------------------------


def _bad_input(message: str, err: TextIO) -> int:
    err.write(f"nodeslo check: {message}\n")
    return 2


def run(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    for flag, path in (("--path.sysfs", args.path_sysfs), ("--path.procfs", args.path_procfs)):
        if not os.path.isdir(path):
            return _bad_input(f"{flag}: {path} is not a directory", err)
    replay = getattr(args, "nvme_replay_dir", None)
    if replay is not None and not os.path.isdir(replay):
        return _bad_input(f"--collector.nvme.replay-dir: {replay} is not a directory", err)
    bmc_replay = getattr(args, "bmc_replay", None)
    if bmc_replay is not None and not os.path.isfile(bmc_replay):
        return _bad_input(f"--collector.bmc.replay: {bmc_replay} is not a file", err)
    try:
        profile = load_profile(args.profile)
    except ProfileError as exc:
        return _bad_input(str(exc), err)
    roots = Roots(
        sysfs=args.path_sysfs,
        procfs=args.path_procfs,
        rootfs=args.path_rootfs,
        udev_data=args.path_udev_data,
    )
    host = Host(roots, replay, bmc_replay)
    findings = host.findings(profile)
    for warning in host.warnings:
        err.write(f"warning: {warning}\n")
    render = render_json if args.format == "json" else render_table
    out.write(render(profile, findings))
    return 0 if passed(findings) else 1
