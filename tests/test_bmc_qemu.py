"""The BMC collector against the real kernel IPMI driver and a simulated BMC.

One boot (../shared/tools/qemu-nvme with ../shared/tools/qemu-ipmi's KCS interface wired
to OpenIPMI's ipmi_sim on this machine) runs tests/support/bmc_guest.sh: the guest's
own ipmi_si and ipmi_devintf drivers make /dev/ipmi0; `nodeslo serve`, started as root,
forks its IPMI helper and drops to nobody. The test drives the simulator between
phases: healthy; PSU2 failed with its input lost, redundancy lost, FAN1 at 800 RPM,
inlet at 42 °C, DIMM C uncorrectable; inlet at 46 °C; the simulator killed. Each phase's
exposition is compared with ipmitool's view from the same guest (state bits, not its
"ok" column), and the captured expositions page and ticket through a real Prometheus
and Alertmanager with the rules `nodeslo generate` makes.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, missing
from nodeslo.ipmi import codes
from support import bmc_chassis, qemu
from support import daemon as d
from support import stack as st
from support.exposition import samples, value

pytestmark = pytest.mark.qemu

GUEST_SCRIPT = Path(__file__).parent / "support" / "bmc_guest.sh"
DATA = Path(__file__).parent / "data" / "bmc"
TOOLS = {
    "ipmi_sim": "openipmi",
    "ipmitool": "ipmitool",
}
# What the host changes in the simulator before each phase (ipmi_sim console commands:
# sensor_set_bit MC LUN SENSOR BIT VALUE GEN_EVENT, sensor_set_value MC LUN SENSOR RAW
# GEN_EVENT; the last argument logs a SEL entry).
FAULTS = (
    "sensor_set_bit 0x20 0 2 1 1 1",  # PSU2: failure detected
    "sensor_set_bit 0x20 0 2 3 1 1",  # PSU2: input lost
    "sensor_set_bit_clr_rest 0x20 0 3 1 1 1",  # PS Redundancy: redundancy lost
    "sensor_set_value 0x20 0 4 8 1",  # FAN1: 800 RPM, below LC 1000
    "sensor_set_value 0x20 0 5 42 1",  # Inlet Temp: 42 °C, over UNC 40
    "sensor_set_bit 0x20 0 12 1 1 1",  # DIMM C: uncorrectable ECC
    "sensor_set_value 0x20 0 8 185 0",  # 12V: 11.655 V, still normal (the last change)
)
HOT = ("sensor_set_value 0x20 0 5 46 1",)  # Inlet Temp: 46 °C, over UC 45
PHASES = ("healthy", "faults", "hot")


def _free_port() -> int:
    return st.free_port()


def _console(port: int, commands: tuple[str, ...], tools: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(tools / "sim_console.py"), *commands],
        env={**os.environ, "SIM_CONSOLE_PORT": str(port)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def guest(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    ipmi_tools = shared / "tools" / "qemu-ipmi"
    if not (ipmi_tools / "bmc.emu").is_file():
        pytest.skip("../shared/tools/qemu-ipmi is not present")
    qemu.check_host(TOOLS)  # before the simulator starts; boot() checks them again
    work = tmp_path_factory.mktemp("qemu-bmc")
    emu = work / "bmc.emu"
    emu.write_text(bmc_chassis.emu_file(ipmi_tools / "bmc.emu"))
    si_port, console_port = _free_port(), _free_port()
    sim_env = {**os.environ, "SIM_SI_PORT": str(si_port), "SIM_CONSOLE_PORT": str(console_port)}
    started = subprocess.run(
        ["bash", str(ipmi_tools / "start-sim.sh"), str(work / "sim"), str(emu)],
        env=sim_env,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    sim_pid = int(started.stdout.split()[-1])

    def bmc(share: Path) -> str:
        return (
            f"-chardev socket,id=ipmi0,host=127.0.0.1,port={si_port},reconnect=10 "
            "-device ipmi-bmc-extern,id=bmc0,chardev=ipmi0 -device isa-ipmi-kcs,bmc=bmc0"
        )

    def phases(share: Path, guest: subprocess.Popen[bytes]) -> None:
        qemu.wait_for(share / "phase-healthy", guest, 1200)
        _console(console_port, FAULTS, ipmi_tools)
        (share / "go-faults").touch()
        qemu.wait_for(share / "phase-faults", guest, 600)
        _console(console_port, HOT, ipmi_tools)
        (share / "go-hot").touch()
        qemu.wait_for(share / "phase-hot", guest, 600)
        os.kill(sim_pid, signal.SIGSTOP)  # the BMC stops answering (its connection stays)
        (share / "go-stale").touch()

    try:
        return qemu.boot(
            shared,
            work,
            GUEST_SCRIPT.read_text(),
            TOOLS,
            qemu_extra=bmc,
            drive=phases,
            timeout=1500,
        )
    finally:
        if os.path.exists(f"/proc/{sim_pid}"):
            os.kill(sim_pid, signal.SIGKILL)


# The simulated chassis (tests/support/bmc_chassis.py and ../shared's bmc.emu): sensor
# number -> (name, reading type, sensor type) of its discrete sensors, and the type of
# every sensor (what `ipmitool sel list` names by number only).
DISCRETE = {
    1: ("PSU1 Status", 0x6F, 0x08),
    2: ("PSU2 Status", 0x6F, 0x08),
    3: ("PS Redundancy", 0x0B, 0x09),
    10: ("DIMM A", 0x6F, 0x0C),
    11: ("DIMM B", 0x6F, 0x0C),
    12: ("DIMM C", 0x6F, 0x0C),
    13: ("DIMM D", 0x6F, 0x0C),
    14: ("Drive 0", 0x6F, 0x0D),
    15: ("Fan Redundancy", 0x0B, 0x04),
}
SENSOR_TYPES = {1: "power_supply", 2: "power_supply", 3: "power_unit", 4: "fan",
                5: "temperature", 6: "other_units", 7: "other_units", 8: "voltage",
                9: "temperature", 10: "memory", 11: "memory", 12: "memory", 13: "memory",
                14: "drive_slot", 15: "fan"}  # fmt: skip
# ipmitool's words for the events the test causes -> the exporter's state names.
IPMITOOL_EVENTS = {
    "Presence detected": "presence_detected",
    "Presence Detected": "presence_detected",
    "Drive Present": "presence_detected",
    "Failure detected": "failure_detected",
    "Power Supply AC lost": "input_lost",
    "Fully Redundant": "fully_redundant",
    "Redundancy Lost": "redundancy_lost",
    "Uncorrectable ECC": "uncorrectable_ecc",
    "Lower Non-critical going low": "lower_non_critical_going_low",
    "Lower Critical going low": "lower_critical_going_low",
    "Upper Non-critical going high": "upper_non_critical_going_high",
    "Upper Critical going high": "upper_critical_going_high",
}
IPMITOOL_STATUS = {"ok": 0, "nc": 1, "cr": 2, "nr": 3}
IPMITOOL_LEVELS = (
    "lower_non_recoverable",
    "lower_critical",
    "lower_non_critical",
    "upper_non_critical",
    "upper_critical",
    "upper_non_recoverable",
)
BMC_ALERTS = (
    "PowerSupplyFailed",
    "PowerRedundancyLost",
    "FanFailed",
    "InletTemperatureHigh",
    "BMCSensorCritical",
    "BMCUnreachable",
)


def exposition(guest: Path, phase: str) -> str:
    return (guest / f"{phase}.prom").read_text()


def status(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def test_the_daemon_reads_the_bmc_through_its_helper_and_holds_nothing(guest: Path) -> None:
    log = (guest / "daemon.log").read_text()
    assert '"msg": "dropped privileges"' in log and '"user": "nobody"' in log
    assert '"transport": "helper:forked"' in log
    assert log.rstrip().endswith("exit 0")
    assert value(exposition(guest, "healthy"), "nodeslo_bmc_up", reason="") == 1
    # The kernel's node: root's, 0600; whoever opens it could power the server off.
    assert (guest / "devnode.txt").read_text().startswith("crw------- 1 0 0")
    daemon = status(guest / "daemon.status")
    assert daemon["Uid"].split() == ["65534"] * 4
    for key in ("CapInh", "CapPrm", "CapEff", "CapAmb", "CapBnd"):
        assert int(daemon[key], 16) == 0, key
    for name in ("helper.status", "standalone-helper.status"):
        helper = status(guest / name)
        assert helper["Uid"].split()[0] == "0", name
        for key in ("CapInh", "CapPrm", "CapEff", "CapAmb", "CapBnd"):
            assert int(helper[key], 16) == 0, (name, key)
        assert helper["NoNewPrivs"] == "1"


def test_the_helper_refuses_every_write_and_control(guest: Path) -> None:
    result = json.loads((guest / "refusals.json").read_text())
    refused = {
        "chassis_control_power_down",
        "chassis_control_power_cycle",
        "set_sensor_thresholds",
        "set_sensor_reading",
        "clear_sel",
        "set_sel_time",
        "add_sel_entry",
        "cold_reset",
        "master_write_read",
        "send_message",
        "get_sdr_wrong_length",
    }
    for name in refused:
        assert result[name]["errno"] == errno.EPERM, name
        reason = bytes.fromhex(result[name]["data"]).decode()
        assert "whitelist" in reason or "takes 6" in reason, (name, reason)
    for name in ("get_device_id", "get_chassis_status"):
        assert result[name]["errno"] == 0 and result[name]["data"].startswith("00"), name
    assert result["uid"] == 65534
    assert result["open_as_nobody"] == errno.EACCES
    # And nothing happened: still powered on, the SEL neither cleared nor added to.
    before = (guest / "chassis-before.txt").read_text()
    after = (guest / "chassis-after.txt").read_text()
    assert re.search(r"System Power\s+: on", before) and before == after
    entries = [
        re.search(r"Entries\s+: (\d+)", (guest / name).read_text())
        for name in ("ipmitool-selinfo-healthy.txt", "selinfo-after-refusals.txt")
    ]
    assert entries[0] and entries[1] and entries[0][1] == entries[1][1]


def _ipmitool_sensors(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) == 10:
            rows[cells[0]] = cells[1:]
    return rows


@pytest.mark.parametrize("phase", PHASES)
def test_threshold_sensors_equal_ipmitool(guest: Path, phase: str) -> None:
    text = exposition(guest, phase)
    rows = _ipmitool_sensors((guest / f"ipmitool-sensor-{phase}.txt").read_text())
    threshold_rows = {n: r for n, r in rows.items() if r[1] != "discrete"}
    assert len(threshold_rows) == 6 + 0  # FAN1, inlet, two PSU powers, 12V, exhaust
    for name, (reading, _unit, ipmi_status, *levels) in threshold_rows.items():
        assert value(text, "nodeslo_bmc_sensor_value", sensor=name) == pytest.approx(
            float(reading), abs=1e-3
        ), (phase, name)
        assert (
            value(text, "nodeslo_bmc_sensor_severity", sensor=name) == IPMITOOL_STATUS[ipmi_status]
        ), (phase, name)
        exported = {
            dict(labels)["level"]: v
            for (metric, labels), v in samples(text).items()
            if metric == "nodeslo_bmc_sensor_threshold" and dict(labels)["sensor"] == name
        }
        shown = {
            level: float(cell)
            for level, cell in zip(IPMITOOL_LEVELS, levels, strict=True)
            if cell != "na"
        }
        assert exported == pytest.approx(shown), (phase, name)


def _raw_states(text: str) -> dict[int, int]:
    """Sensor number -> asserted state bits, from `ipmitool raw 0x04 0x2d N` lines."""
    out = {}
    for line in text.splitlines():
        number, *data = line.split()
        raw = [int(b, 16) for b in data]
        out[int(number)] = raw[2] | ((raw[3] & 0x7F) << 8 if len(raw) > 3 else 0)
    return out


@pytest.mark.parametrize("phase", PHASES)
def test_discrete_states_equal_the_bits_ipmitool_reads(guest: Path, phase: str) -> None:
    """ipmitool's status column says "ok" for a failed PSU: compare the state bits."""
    text = exposition(guest, phase)
    bits = _raw_states((guest / f"ipmitool-raw-{phase}.txt").read_text())
    for number, (sensor, reading_type, sensor_type) in DISCRETE.items():
        exported = {
            dict(labels)["state"]: v
            for (metric, labels), v in samples(text).items()
            if metric == "nodeslo_bmc_sensor_state" and dict(labels)["sensor"] == sensor
        }
        names = codes.state_names(reading_type, sensor_type)
        expected = {
            names[offset]: float(bits[number] >> offset & 1)
            for offset in names
            if names[offset] in exported or bits[number] >> offset & 1
        }
        assert exported == expected, (phase, sensor)


@pytest.mark.parametrize("phase", PHASES)
def test_sel_counts_equal_ipmitool(guest: Path, phase: str) -> None:
    text = exposition(guest, phase)
    entries = re.search(r"Entries\s+: (\d+)", (guest / f"ipmitool-selinfo-{phase}.txt").read_text())
    assert entries
    assert value(text, "nodeslo_bmc_sel_entries") == int(entries[1])
    counted: dict[tuple[str, str, str], float] = {}
    for line in (guest / f"ipmitool-sel-{phase}.txt").read_text().splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) != 6:
            continue
        number = int(cells[3].rsplit("#", 1)[1], 16)
        key = (
            SENSOR_TYPES[number],
            "assertion" if cells[5] == "Asserted" else "deassertion",
            IPMITOOL_EVENTS[cells[4]],
        )
        counted[key] = counted.get(key, 0) + 1
    exported = {
        (dict(labels)["type"], dict(labels)["direction"], dict(labels)["state"]): v
        for (metric, labels), v in samples(text).items()
        if metric == "nodeslo_bmc_sel_events_total"
    }
    assert exported == counted
    assert sum(counted.values()) == int(entries[1])


def test_chassis_status_equals_ipmitool(guest: Path) -> None:
    text = exposition(guest, "healthy")
    shown = dict(
        (k.strip(), v.strip())
        for k, _, v in (
            line.partition(":") for line in (guest / "chassis-before.txt").read_text().splitlines()
        )
    )
    for flag, key, on in (
        ("power_on", "System Power", "on"),
        ("power_overload", "Power Overload", "true"),
        ("power_fault", "Main Power Fault", "true"),
        ("power_control_fault", "Power Control Fault", "true"),
        ("intrusion", "Chassis Intrusion", "active"),
        ("drive_fault", "Drive Fault", "true"),
        ("cooling_fault", "Cooling/Fan Fault", "true"),
    ):
        assert value(text, "nodeslo_bmc_chassis_status", flag=flag) == float(shown[key] == on)


def test_a_bmc_that_stops_answering_is_a_metric_not_a_stuck_scrape(guest: Path) -> None:
    stale, hot = exposition(guest, "stale"), exposition(guest, "hot")
    assert value(stale, "nodeslo_bmc_up", reason="timeout") == 0
    assert value(stale, "nodeslo_collector_success", collector="bmc") == 1
    # The scrape only copies the poller's snapshot, even while it waits on the BMC.
    assert value(stale, "nodeslo_collector_duration_seconds", collector="bmc") < 0.5
    # The last values stay, so alerts on them do not resolve because the BMC went quiet.
    for metric in ("nodeslo_bmc_sensor_value", "nodeslo_bmc_sensor_state"):
        kept = {k: v for k, v in samples(stale).items() if k[0] == metric}
        assert kept == {k: v for k, v in samples(hot).items() if k[0] == metric}
    # ...and say how old they are: the last success is still exported.
    assert value(stale, "nodeslo_bmc_last_success_timestamp_seconds") > 0
    log = (guest / "daemon.log").read_text()
    assert log.count('"reason": "timeout"') == 1  # one line, not one per poll
    wall = [int(v) for v in (guest / "stale-scrape-ms.txt").read_text().split()]
    print(f"scrapes while the BMC is stopped (emulated guest): {wall} ms")


def test_the_committed_recordings_are_of_this_chassis(guest: Path) -> None:
    """tests/data/bmc/ was recorded by this test: the live recordings decode the same."""
    import logging

    from nodeslo.ipmi.cli import poll_until_complete
    from nodeslo.ipmi.poller import Poller
    from nodeslo.ipmi.recording import ReplayTransport
    from nodeslo.log import OnceLog

    def decoded(path: Path) -> list[tuple[object, ...]]:
        poller = Poller(
            ReplayTransport(str(path)),
            interval=60.0,
            timeout=1.0,
            errors=OnceLog(logging.getLogger("test")),
        )
        snap = poll_until_complete(poller)
        return [(s.record, s.value, s.states, s.severity, s.thresholds) for s in snap.sensors]

    for name in ("healthy.json", "faults.json"):
        assert (guest / f"{name.split('.')[0]}-dump.err").read_text().rstrip().endswith("exit 0")
        assert decoded(guest / name) == decoded(DATA / name), name


def test_faults_page_and_ticket_through_prometheus_and_alertmanager(
    guest: Path, tmp_path: Path
) -> None:
    """What the guest's daemon exported, scraped by a real Prometheus with the generated
    rules of the e2e profile: each fault pages or tickets; the healthy chassis stays
    silent; a BMC that stops answering tickets while the PSU page stays."""
    prometheus = st.tool("prometheus")
    alertmanager = st.tool("prometheus-alertmanager", "alertmanager")
    if not (prometheus and alertmanager):
        missing("prometheus / prometheus-alertmanager are not installed (Debian packages)")
    profile = REPO / "tests" / "scenarios" / "profiles" / "e2e.yaml"
    generated = d.run_cli("generate", f"--profile={profile}", f"--out={tmp_path / 'pack'}")
    assert generated.returncode == 0, generated.stderr
    rules = str(tmp_path / "pack" / "alerts" / "nodeslo.rules.yaml")
    with (
        st.serving(guest / "healthy.prom") as healthy,
        st.serving(guest / "faults.prom") as faults,
        st.serving(guest / "hot.prom") as hot,
        st.serving(guest / "stale.prom") as stale,
        st.running(tmp_path, [healthy, faults, hot, stale], [rules]) as stack,
    ):
        stack.wait_scraped(min_targets=4)
        hook = stack.webhook
        for labels, receiver in (
            ({"alertname": "PowerSupplyFailed", "instance": faults, "sensor": "PSU2 Status",
              "state": "failure_detected"}, "pager"),
            ({"alertname": "PowerSupplyFailed", "instance": faults, "state": "input_lost"},
             "pager"),
            ({"alertname": "PowerRedundancyLost", "instance": faults,
              "cause": "redundancy_sensor", "sensor": "PS Redundancy"}, "pager"),
            ({"alertname": "PowerRedundancyLost", "instance": faults, "cause": "healthy_psus"},
             "pager"),
            ({"alertname": "BMCSensorCritical", "instance": faults, "sensor": "DIMM C"},
             "pager"),
            ({"alertname": "FanFailed", "instance": faults, "sensor": "FAN1"}, "ticket"),
            ({"alertname": "InletTemperatureHigh", "instance": faults, "sensor": "Inlet Temp",
              "severity": "warning"}, "ticket"),
            ({"alertname": "InletTemperatureHigh", "instance": hot, "sensor": "Inlet Temp",
              "severity": "critical"}, "pager"),
            ({"alertname": "BMCUnreachable", "instance": stale, "reason": "timeout"}, "ticket"),
            # The BMC went quiet, the failed PSU did not come back: still paging.
            ({"alertname": "PowerSupplyFailed", "instance": stale, "state": "failure_detected"},
             "pager"),
        ):  # fmt: skip
            notification = hook.wait_for(90, **labels)
            assert notification.receiver == receiver, labels
            assert notification.annotations["runbook_url"].endswith(f"/{labels['alertname']}.md")
        # The hot inlet pages at its critical line, not at its warning only.
        assert not hook.firing(alertname="InletTemperatureHigh", instance=faults,
                               severity="critical")  # fmt: skip
        time.sleep(5)  # past every `for` the healthy chassis could have met
        noise = [
            n.labels
            for n in hook.notifications
            if n.labels.get("instance") == healthy and n.labels["alertname"] in BMC_ALERTS
        ]
        assert noise == []
