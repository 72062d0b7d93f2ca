"""The BMC poller and collector: caching, incremental reads, a BMC that misbehaves or is
not there, and what each case exports. The BMC is tests/support/fakebmc.py, speaking the
real bytes of the extended simulated chassis (tests/support/bmc_chassis.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from nodeslo.collectors.base import CollectorContext
from nodeslo.collectors.bmc import BmcCollector
from nodeslo.ipmi import bmc as bmc_module
from nodeslo.ipmi import poller as poller_module
from nodeslo.ipmi import requests
from nodeslo.ipmi.poller import Poller
from nodeslo.ipmi.requests import Request, Timeout
from nodeslo.log import OnceLog
from nodeslo.paths import Roots
from support import bmc_chassis
from support.exposition import samples, value
from support.fakebmc import FakeBmc
from support.procs import children, status

PSU = 0x000F
RECORDS = [
    bmc_chassis.compact(1, "PSU1 Status", entity=0x0A, instance=1, sensor_type=0x08,
                        reading_type=0x6F, mask=PSU),
    bmc_chassis.compact(2, "PSU2 Status", entity=0x0A, instance=2, sensor_type=0x08,
                        reading_type=0x6F, mask=PSU),
    bmc_chassis.full(4, "FAN1", entity=0x1D, instance=1, sensor_type=0x04, unit=18,
                     thresholds={"lnc": 15, "lc": 10, "lnr": 5}, m=100),
    bmc_chassis.full(5, "Inlet Temp", entity=0x37, instance=1, sensor_type=0x01, unit=1,
                     thresholds={"unc": 40, "uc": 45, "unr": 50}, m=1),
    *bmc_chassis.EXTRA_RECORDS,
]  # fmt: skip
READINGS = {
    1: bytes([0, 0xC0, 0x01, 0x00]),
    2: bytes([0, 0xC0, 0x01, 0x00]),
    4: bytes([60, 0xC0, 0x00, 0x00]),
    5: bytes([24, 0xC0, 0x00, 0x00]),
    8: bytes([190, 0xC0, 0x00, 0x00]),
    9: bytes([60, 0xC0, 0x00, 0x00]),
    10: bytes([0, 0xC0, 0x40, 0x00]),
    11: bytes([0, 0xC0, 0x40, 0x00]),
    12: bytes([0, 0xC0, 0x40, 0x00]),
    13: bytes([0, 0xC0, 0x40, 0x00]),
    14: bytes([0, 0xC0, 0x01, 0x00]),
    15: bytes([0, 0xC0, 0x01, 0x00]),
}


def fake(**kwargs: object) -> FakeBmc:
    bmc = FakeBmc(records=list(RECORDS), readings=dict(READINGS), **kwargs)  # type: ignore[arg-type]
    for number, offset in ((1, 0), (2, 0), (10, 6), (11, 6), (12, 6), (13, 6)):
        bmc.add_sel(0x08 if number < 3 else 0x0C, number, offset)
    return bmc


def make_poller(transport: object, presence: str | None = None, timeout: float = 0.5) -> Poller:
    return Poller(
        transport,  # type: ignore[arg-type]
        interval=60.0,
        timeout=timeout,
        errors=OnceLog(logging.getLogger("nodeslo.collector")),
        presence=lambda: presence,
    )


def by_name(poller: Poller) -> dict[str, object]:
    return {s.record.name: s for s in poller.snapshot().sensors}


# -- caching and incremental reads ------------------------------------------------------


def test_sdr_is_walked_once_and_again_only_when_the_repository_changes() -> None:
    bmc = fake()
    poller = make_poller(bmc)
    poller.poll_round()
    walked = bmc.calls[requests.GET_SDR]
    assert walked >= len(RECORDS) * 2  # header, then the body in chunks
    assert poller.snapshot().up and len(poller.snapshot().sensors) == 12
    for _ in range(3):
        poller.poll_round()
    assert bmc.calls[requests.GET_SDR] == walked  # unchanged repository: cached
    assert bmc.calls[requests.GET_SENSOR_READING] == 4 * 12  # readings every round
    assert bmc.calls[requests.GET_SDR_REPOSITORY_INFO] == 4
    bmc.addition_timestamp += 1  # a sensor added by a firmware update
    poller.poll_round()
    assert bmc.calls[requests.GET_SDR] == 2 * walked
    assert bmc.calls[requests.GET_DEVICE_ID] == 2  # new firmware, new identity


def test_reservation_lost_mid_record_is_renewed() -> None:
    bmc = fake()
    bmc.cancel_reservation_once = {3, 7}  # FAN1's and the DIMMs' records
    poller = make_poller(bmc)
    poller.poll_round()
    assert poller.snapshot().up
    assert {"FAN1", "DIMM D"} <= set(by_name(poller))
    assert bmc.calls[requests.RESERVE_SDR_REPOSITORY] == 3


def test_a_bmc_that_cannot_return_16_bytes_gets_smaller_reads() -> None:
    bmc = fake(max_read=8)
    poller = make_poller(bmc)
    poller.poll_round()
    assert poller.snapshot().up and len(poller.snapshot().sensors) == 12
    sizes = [r.data[5] for r in bmc.log if (r.netfn, r.cmd) == requests.GET_SDR]
    # One refused 16-byte read, then 8 bytes at most for the whole walk.
    assert sizes.count(16) == 1 and max(sizes[sizes.index(16) + 1 :]) == 8


def test_sel_is_read_incrementally() -> None:
    bmc = fake()
    poller = make_poller(bmc)
    poller.poll_round()
    assert dict(poller.snapshot().sel_events or ()) == {
        ("power_supply", "assertion", "presence_detected"): 2,
        ("memory", "assertion", "presence_detected"): 4,
    }
    entries = bmc.calls[requests.GET_SEL_ENTRY]
    poller.poll_round()
    assert bmc.calls[requests.GET_SEL_ENTRY] == entries  # SEL Info unchanged: not read
    bmc.add_sel(0x08, 2, 1)  # PSU2 failed
    bmc.add_sel(0x08, 2, 3)  # and lost its input
    poller.poll_round()
    # The last entry seen (for its next-record pointer), then the two new ones.
    assert bmc.calls[requests.GET_SEL_ENTRY] == entries + 3
    events = dict(poller.snapshot().sel_events or ())
    assert events[("power_supply", "assertion", "failure_detected")] == 1
    assert events[("power_supply", "assertion", "input_lost")] == 1


def test_a_cleared_sel_counts_on_and_never_goes_down() -> None:
    bmc = fake()
    poller = make_poller(bmc)
    poller.poll_round()
    before = dict(poller.snapshot().sel_events or ())
    bmc.clear_sel()
    bmc.add_sel(0x10, 0x50, 2)  # the BMC logs "log area reset" after a clear
    poller.poll_round()
    after = dict(poller.snapshot().sel_events or ())
    assert after[("event_logging_disabled", "assertion", "log_area_reset")] == 1
    assert all(after[key] >= count for key, count in before.items())


def test_a_sel_whose_last_entry_vanished_is_read_from_its_start() -> None:
    bmc = fake()
    poller = make_poller(bmc)
    poller.poll_round()
    bmc.sel = bmc.sel[:2]  # entries deleted, the erase timestamp not kept by this BMC
    bmc.add_sel(0x08, 1, 1)
    poller.poll_round()
    events = dict(poller.snapshot().sel_events or ())
    assert events[("power_supply", "assertion", "failure_detected")] == 1


def test_a_sel_backlog_is_read_in_batches_and_counted_only_once_complete(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bmc_module, "SEL_BATCH", 4)
    bmc = fake()
    for _ in range(6):
        bmc.add_sel(0x01, 5, 7)
    poller = make_poller(bmc)
    poller.poll_round()
    assert poller.snapshot().sel_events is None  # 4 of 12 read: no counter yet
    poller.poll_round()
    assert poller.snapshot().sel_events is None
    poller.poll_round()
    assert sum(dict(poller.snapshot().sel_events or ()).values()) == 12


def test_a_bmc_that_wants_a_sel_reservation_gets_one() -> None:
    bmc = fake(wants_sel_reservation=True)
    poller = make_poller(bmc)
    poller.poll_round()
    assert sum(dict(poller.snapshot().sel_events or ()).values()) == 6
    assert bmc.calls[requests.RESERVE_SEL] >= 1


def test_live_thresholds_win_over_the_sdr() -> None:
    bmc = fake()
    bmc.thresholds[5] = bytes([0x38, 0, 0, 0, 30, 35, 40])  # the operator lowered them
    poller = make_poller(bmc)
    poller.poll_round()
    inlet = by_name(poller)["Inlet Temp"]
    assert dict(inlet.thresholds) == {  # type: ignore[attr-defined]
        "upper_non_critical": 30,
        "upper_critical": 35,
        "upper_non_recoverable": 40,
    }
    # FAN1's Get Sensor Thresholds is refused (CDh): the SDR's stand.
    assert dict(by_name(poller)["FAN1"].thresholds)["lower_critical"] == 1000  # type: ignore[attr-defined]


# -- misbehaviour ---------------------------------------------------------------------


def test_a_bmc_that_stops_answering_keeps_its_values_marked_stale(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bmc = fake()
    poller = make_poller(bmc)
    poller.poll_round()
    first = poller.snapshot()
    bmc.hang = True
    warnings = _not_answering_lines(poller, caplog, rounds=5)
    snap = poller.snapshot()
    assert (snap.up, snap.reason) == (False, "timeout")
    assert snap.sensors == first.sensors and snap.last_success == first.last_success
    assert len(warnings) == 1  # one line, not one per round
    bmc.hang = False
    poller.poll_round()
    assert poller.snapshot().up and poller.snapshot().last_success != first.last_success


def _not_answering_lines(
    poller: Poller, caplog: pytest.LogCaptureFixture, rounds: int
) -> list[str]:
    """The "not answering" warnings logged over `rounds` poll rounds."""
    with caplog.at_level(logging.WARNING, logger="nodeslo.collector"):
        for _ in range(rounds):
            poller.poll_round()
    return [r.getMessage() for r in caplog.records if "not answering" in r.getMessage()]


def test_a_bmc_stopping_mid_round_is_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    """The first round times out on a sensor reading, the next ones on their first
    command: a different error text each, still one problem and one line."""
    bmc = fake()
    asked: list[Request] = []

    class StopsAfterFive:
        armed = False

        def call(self, request: Request, timeout: float) -> bytes:
            if self.armed:
                asked.append(request)
                bmc.hang = bmc.hang or len(asked) > 5
            return bmc.call(request, timeout)

        def close(self) -> None:
            pass

    transport = StopsAfterFive()
    poller = make_poller(transport)
    poller.poll_round()
    first = poller.snapshot()
    transport.armed = True
    warnings = _not_answering_lines(poller, caplog, rounds=4)
    timed_out = {asked[5].describe(), asked[-1].describe()}
    assert len(timed_out) == 2  # the premise: two different commands timed out first
    assert len(warnings) == 1, warnings
    assert poller.snapshot().reason == "timeout"
    assert poller.snapshot().sensors == first.sensors
    transport.armed = bmc.hang = False
    poller.poll_round()
    assert poller.snapshot().up and poller.snapshot().last_success != first.last_success


def test_one_sensor_timing_out_is_unavailable_not_the_whole_bmc() -> None:
    bmc = fake()

    class SlowFan:
        def call(self, request: Request, timeout: float) -> bytes:
            if request.cmd == 0x2D and request.data == b"\x04":
                raise Timeout("Get Sensor Reading: no answer")
            return bmc.call(request, timeout)

        def close(self) -> None:
            pass

    poller = make_poller(SlowFan())
    poller.poll_round()
    assert poller.snapshot().up
    fan = by_name(poller)["FAN1"]
    assert (fan.available, fan.value) == (False, None)  # type: ignore[attr-defined]
    assert by_name(poller)["Inlet Temp"].value == 24.0  # type: ignore[attr-defined]


def test_a_sensor_the_bmc_does_not_have_is_unavailable() -> None:
    bmc = fake()
    del bmc.readings[14]  # CBh for Drive 0
    poller = make_poller(bmc)
    poller.poll_round()
    assert by_name(poller)["Drive 0"].available is False  # type: ignore[attr-defined]
    assert poller.snapshot().up


def test_an_sdr_chain_that_loops_is_an_error_not_a_hang() -> None:
    bmc = fake()
    real = bmc._get_sdr

    def looping(data: bytes) -> bytes:
        answer = real(data)
        if answer[0] == 0 and data[2:4] == b"\x03\x00":  # record 3 points back to record 2
            return answer[:1] + b"\x02\x00" + answer[3:]
        return answer

    bmc._get_sdr = looping  # type: ignore[method-assign]
    poller = make_poller(bmc)
    poller.poll_round()
    assert (poller.snapshot().up, poller.snapshot().reason) == (False, "error")


def test_a_record_that_cannot_be_decoded_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    bmc = fake()
    bmc.records.insert(2, bytes([0, 0, 0x51, 0x01, 10]) + bytes(10))  # a truncated full record
    poller = make_poller(bmc)
    with caplog.at_level(logging.WARNING, logger="nodeslo.collector"):
        poller.poll_round()
    assert poller.snapshot().up and len(poller.snapshot().sensors) == 12
    assert any("SDR record skipped" in r.getMessage() for r in caplog.records)


def test_sensors_of_other_controllers_are_not_bridged() -> None:
    bmc = fake()
    me = bytearray(bmc_chassis.compact(40, "ME Temp", entity=0x03, instance=1,
                                       sensor_type=0x01, reading_type=0x6F, mask=1))  # fmt: skip
    me[5] = 0x2C  # owned by the management engine
    bmc.records.append(bytes(me))
    poller = make_poller(bmc)
    poller.poll_round()
    assert "ME Temp" not in by_name(poller)
    assert not any(r.data[:1] == b"\x28" for r in bmc.log if r.cmd == 0x2D)


def test_the_scrape_never_waits_on_the_bmc() -> None:
    """The poller holds no lock while it talks to the BMC: a BMC taking its time (a
    round stuck in a command) costs a scrape nothing."""
    bmc = fake()
    release = threading.Event()

    class Stuck:
        def call(self, request: Request, timeout: float) -> bytes:
            if request.netfn == 0x04:
                release.wait(10)
            return bmc.call(request, timeout)

        def close(self) -> None:
            release.set()

    collector = BmcCollector(context(transport=Stuck()))
    collector.poller.poll_round  # noqa: B018
    thread = threading.Thread(target=collector.poller.poll_round, daemon=True)
    thread.start()
    time.sleep(0.2)  # the round is now stuck in Get Sensor Reading
    start = time.perf_counter()
    list(collector.collect())
    assert time.perf_counter() - start < 0.1
    release.set()
    thread.join(5)


# -- the collector --------------------------------------------------------------------


def context(
    transport: object = None, tmp: Path | None = None, **options: object
) -> CollectorContext:
    namespace = argparse.Namespace(**{"bmc_command_timeout": 0.5, "bmc_poll_interval": 60.0,
                                      **options})  # fmt: skip
    roots = Roots(sysfs=str(tmp / "sys") if tmp else "/nonexistent/sys")
    ctx = CollectorContext(roots=roots, options=namespace)
    if transport is not None:
        ctx.options.bmc_transport_for_test = transport
    return ctx


@pytest.fixture(autouse=True)
def _transport_hook(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Let a test hand the collector its transport (the flags only name real ones)."""
    from nodeslo.collectors import bmc as collector_module

    real = collector_module.transport

    def pick(options: argparse.Namespace) -> tuple[object, str]:
        given = getattr(options, "bmc_transport_for_test", None)
        return (given, "test") if given is not None else real(options)

    monkeypatch.setattr(collector_module, "transport", pick)
    yield


def scrape(collector: BmcCollector) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry).decode()


def test_collector_exports_what_the_bmc_says() -> None:
    collector = BmcCollector(context(transport=fake()))
    collector.poller._presence = lambda: None
    collector.poller.poll_round()
    text = scrape(collector)
    assert value(text, "nodeslo_bmc_up", reason="") == 1
    assert value(text, "nodeslo_bmc_sensor_value", sensor="12V", unit="volts") == 11.97
    assert (
        value(text, "nodeslo_bmc_sensor_threshold", sensor="FAN1", level="lower_critical") == 1000
    )
    assert value(text, "nodeslo_bmc_sensor_state", sensor="DIMM C", state="presence_detected") == 1
    assert value(text, "nodeslo_bmc_sensor_severity", sensor="Inlet Temp") == 0
    assert value(text, "nodeslo_bmc_chassis_status", flag="power_on") == 1
    assert value(text, "nodeslo_bmc_sel_entries") == 6
    assert value(text, "nodeslo_bmc_info", manufacturer="MontaVista", firmware="9.08") == 1


def test_duplicate_names_get_the_sensor_number() -> None:
    bmc = fake()
    for number in (41, 42):
        temp = bmc_chassis.full(
            number, "Temp", entity=0x03, instance=1, sensor_type=0x01, unit=1, thresholds={}, m=1
        )
        bmc.records.append(temp)
        bmc.readings[number] = bytes([50 + number - 41, 0xC0, 0, 0])
    collector = BmcCollector(context(transport=bmc))
    collector.poller._presence = lambda: None
    collector.poller.poll_round()
    text = scrape(collector)
    assert value(text, "nodeslo_bmc_sensor_value", sensor="Temp #41") == 50
    assert value(text, "nodeslo_bmc_sensor_value", sensor="Temp #42") == 51


@pytest.mark.parametrize(
    ("presence", "transport", "reason"),
    [
        ("absent", None, "absent"),
        ("no_driver", None, "no_driver"),
        (None, None, "no_helper"),
    ],
)
def test_no_bmc_to_read_exports_only_why(
    presence: str | None, transport: object, reason: str
) -> None:
    collector = BmcCollector(context(transport=transport))
    collector.poller._presence = lambda: presence
    collector.poller.start()
    try:
        got = {name for name, _ in samples(scrape(collector)) if not name.startswith("nodeslo_")}
        bmc_samples = {k: v for k, v in samples(scrape(collector)).items()
                       if k[0].startswith("nodeslo_bmc_")}  # fmt: skip
    finally:
        collector.close()
    assert got == set()
    assert bmc_samples == {("nodeslo_bmc_up", (("reason", reason),)): 0.0}


def test_presence_reads_sysfs_and_the_firmware_tables(tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    sysfs.mkdir()
    assert poller_module.presence(str(sysfs)) == "absent"
    (sysfs / "bus" / "acpi" / "devices" / "IPI0001:00").mkdir(parents=True)
    assert poller_module.presence(str(sysfs)) == "no_driver"
    (sysfs / "class" / "ipmi" / "ipmi0").mkdir(parents=True)
    assert poller_module.presence(str(sysfs)) is None


def test_replay_of_a_missing_file_is_an_error_not_a_crash(tmp_path: Path) -> None:
    collector = BmcCollector(context(bmc_replay=str(tmp_path / "none.json")))
    collector.poller.poll_round()
    assert (collector.poller.snapshot().up, collector.poller.snapshot().reason) == (False, "error")
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    collector = BmcCollector(context(bmc_replay=str(tmp_path / "bad.json")))
    collector.poller.poll_round()
    assert collector.poller.snapshot().reason == "error"


def test_the_profile_sets_the_interval_unless_the_flag_does() -> None:
    collector = BmcCollector(context(transport=fake(), bmc_poll_interval=None))
    assert collector.poller.interval == 30.0  # health.bmc.poll_interval
    flagged = BmcCollector(context(transport=fake(), bmc_poll_interval=5.0))
    assert flagged.poller.interval == 5.0


# -- privileges, as root: the forked helper holds nothing but uid 0, and comes back ----


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to fork and drop")
def test_daemon_forks_the_ipmi_helper_with_no_capability_and_restarts_it() -> None:
    import shutil
    import tempfile

    from support import daemon as d

    # Readable by nobody (pytest's tmp dirs are 0700): the daemon reads sysfs after the drop.
    tree = Path(tempfile.mkdtemp(prefix="nodeslo-bmc-privsep-"))
    tree.chmod(0o755)
    (tree / "sys" / "bus" / "acpi" / "devices" / "IPI0001:00").mkdir(parents=True)
    (tree / "proc").mkdir()
    try:
        _check_helper(d, tree)
    finally:
        shutil.rmtree(tree)


def _check_helper(d: object, tree: Path) -> None:
    flags = ("--collector.disable-defaults", "--collector.bmc", "--no-probe.storage",
             "--no-probe.wakeup", "--run-as-user=nobody")  # fmt: skip
    with d.running(tree, *flags) as daemon:  # type: ignore[attr-defined]
        text = daemon.scrape()
        daemon.wait_log("dropped privileges")
        (supervisor,) = children(daemon.proc.pid)
        worker = _only_child(supervisor, other_than=None)
        helpers = [status(supervisor), status(worker)]
        # A killed worker is restarted by the supervisor, as privileged as before.
        os.kill(worker, signal.SIGKILL)
        daemon.wait_log("ipmi helper died, restarting it")
        restarted = _only_child(supervisor, other_than=worker)
        helpers.append(status(restarted))
        # The supervisor killed: BMC readings end, loudly, and no zombie stays.
        os.kill(supervisor, signal.SIGKILL)
        daemon.wait_log("ipmi helper exited: no BMC readings")
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{supervisor}") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not os.path.exists(f"/proc/{supervisor}"), status(supervisor).get("State")
        assert value(daemon.scrape(), "nodeslo_collector_success", collector="bmc") == 1
    # The firmware declares a BMC, the kernel has no device for it: the helper says so.
    assert value(text, "nodeslo_bmc_up", reason="no_driver") == 0
    for helper in helpers:
        assert helper["Uid"].split()[0] == "0"
        assert int(helper["CapEff"], 16) == int(helper["CapPrm"], 16) == 0
        assert int(helper["CapBnd"], 16) == 0
        assert helper["NoNewPrivs"] == "1"


def _only_child(pid: int, other_than: int | None) -> int:
    """The one child of `pid` that is not `other_than`, waited for (a restart backs off)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = [c for c in children(pid) if c != other_than]
        if found:
            (child,) = found
            return child
        time.sleep(0.05)
    raise AssertionError(f"no new child of {pid}")


# -- the profile's health.bmc --------------------------------------------------------


@pytest.mark.parametrize(
    ("yaml_text", "complaint"),
    [
        ("health:\n  bmc:\n    inlet_sensors: '(unclosed'\n", "health.bmc.inlet_sensors: invalid"),
        (
            "health:\n  bmc:\n    inlet_warning_celsius: 40\n",
            "inlet_critical_celsius (35) must be at least inlet_warning_celsius (40)",
        ),
        ("health:\n  bmc:\n    fan_min_rpm: -1\n", "health.bmc.fan_min_rpm: must be at least 0"),
        ("health:\n  bmc:\n    poll_interval: soon\n", "health.bmc.poll_interval"),
        ("health:\n  bmc:\n    psu_count: 2\n", "unknown key"),
        ("health:\n  power:\n    bmc_input_power_sensors: '['\n", "invalid regular expression"),
    ],
)
def test_bad_bmc_profile_keys_name_file_key_and_line(
    tmp_path: Path, yaml_text: str, complaint: str
) -> None:
    from nodeslo.profile import ProfileError, load_profile

    path = tmp_path / "site.yaml"
    path.write_text("extends: process-management\nprofile: site\n" + yaml_text)
    with pytest.raises(ProfileError) as info:
        load_profile(str(path))
    assert complaint in str(info.value) and "site.yaml:" in str(info.value)


def test_a_site_profile_moves_the_bmc_thresholds(tmp_path: Path) -> None:
    from nodeslo.pack import rules
    from nodeslo.profile import load_profile

    path = tmp_path / "site.yaml"
    path.write_text(
        "extends: process-management\nprofile: site\nhealth:\n  bmc:\n"
        "    inlet_warning_celsius: 30\n    inlet_critical_celsius: 38\n    fan_min_rpm: 800\n"
        "    ignore_sensors: 'BIOS Progress'\n"
    )
    text = rules.rule_file(load_profile(str(path)))[0][1]
    assert ":value >= 30\n" in text and ">= 38\n" in text and "<= 800\n" in text
    assert 'sensor!~"BIOS Progress"' in text
