"""The NVMe collector against the real kernel driver: QEMU's emulated controllers.

One boot (../shared/tools/qemu-nvme) runs tests/support/nvme_guest.sh inside the guest:
`nodeslo serve` started as root forks its helper and drops to nobody; its SMART values
are compared here with `nvme smart-log -o json` for the same controllers; `nodeslo nvme
dump` captures the pages and `--collector.nvme.replay-dir` replays them; a process
that dropped privileges the way the daemon does is refused the ioctl; the real md
driver degrades, stops and re-assembles an array inactive over the namespaces; and a
controller is removed from the bus. What the guest's daemons exported pages through a
real Prometheus and Alertmanager on this side.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import REPO, missing
from support import daemon as d
from support import qemu
from support import stack as st
from support.exposition import samples, value

pytestmark = pytest.mark.qemu

GUEST_SCRIPT = Path(__file__).parent / "support" / "nvme_guest.sh"
# One controller carries critical warning bit 2 (reliability degraded); the four
# namespaces make the RAID10 md0, whose member on that controller is failed.
CONTROLLERS = (
    "serial=GOOD0001",
    "serial=BAD00002,smart_critical_warning=4",
    "serial=GOOD0003",
    "serial=GOOD0004",
)
TOOLS = {
    "nvme": "nvme-cli",
    "mdadm": "mdadm",
    "mkfs.ext4": "e2fsprogs",
}


@pytest.fixture(scope="module")
def guest(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("qemu-nvme")
    return qemu.boot(shared, work, GUEST_SCRIPT.read_text(), TOOLS, controllers=CONTROLLERS)


def test_a_checkout_under_tmp_is_shared_into_the_guest() -> None:
    """Where the clone lives is no reason to skip: /tmp paths go to GUEST_TMP_DIRS."""
    clone = Path("/tmp/ci-clone")
    assert qemu.tmp_dirs([clone, clone / ".venv", Path("/usr/bin")]) == ["/tmp/ci-clone"]
    assert qemu.tmp_dirs([Path("/work/main"), Path("/root/.pyenv/bin")]) == []
    assert qemu.tmp_dirs([clone, Path("/tmp/venv/bin")]) == ["/tmp/ci-clone", "/tmp/venv/bin"]


def controllers(guest: Path) -> list[str]:
    names = (guest / "controllers.txt").read_text().split()
    assert len(names) == len(CONTROLLERS), names
    return names


def serials(text: str) -> dict[str, str]:
    return {
        dict(labels)["controller"]: dict(labels)["serial"]
        for (m, labels) in samples(text)
        if m == "nodeslo_nvme_info"
    }


def test_daemon_reads_every_controller_through_its_helper(guest: Path) -> None:
    live = (guest / "live.prom").read_text()
    log = (guest / "live.log").read_text()
    assert '"msg": "dropped privileges"' in log and '"user": "nobody"' in log
    assert log.rstrip().endswith("exit 0")
    for name in controllers(guest):
        assert value(live, "nodeslo_nvme_smart_up", controller=name) == 1
        assert value(live, "nodeslo_nvme_state_live", controller=name) == 1
    assert value(live, "nodeslo_collector_success", collector="nvme") == 1


# nvme-cli JSON key -> (metric, factor from the page's unit to the metric's).
SMART_FIELDS = {
    "critical_warning": ("nodeslo_nvme_critical_warning", 1),
    "avail_spare": ("nodeslo_nvme_available_spare_ratio", 0.01),
    "spare_thresh": ("nodeslo_nvme_available_spare_threshold_ratio", 0.01),
    "percent_used": ("nodeslo_nvme_percentage_used_ratio", 0.01),
    "data_units_read": ("nodeslo_nvme_data_read_bytes_total", 512000),
    "data_units_written": ("nodeslo_nvme_data_written_bytes_total", 512000),
    "host_read_commands": ("nodeslo_nvme_host_read_commands_total", 1),
    "host_write_commands": ("nodeslo_nvme_host_write_commands_total", 1),
    "controller_busy_time": ("nodeslo_nvme_controller_busy_seconds_total", 60),
    "power_cycles": ("nodeslo_nvme_power_cycles_total", 1),
    "power_on_hours": ("nodeslo_nvme_power_on_seconds_total", 3600),
    "unsafe_shutdowns": ("nodeslo_nvme_unsafe_shutdowns_total", 1),
    "media_errors": ("nodeslo_nvme_media_errors_total", 1),
    "num_err_log_entries": ("nodeslo_nvme_error_log_entries_total", 1),
    "warning_temp_time": ("nodeslo_nvme_warning_temperature_seconds_total", 60),
    "critical_comp_time": ("nodeslo_nvme_critical_temperature_seconds_total", 60),
}


def test_each_smart_field_equals_nvme_cli(guest: Path) -> None:
    live = (guest / "live.prom").read_text()
    for name in controllers(guest):
        cli = json.loads((guest / f"smart-log-{name}.json").read_text())
        for key, (metric, factor) in SMART_FIELDS.items():
            expected = int(cli[key]) * factor  # nvme-cli prints 128-bit counters as strings
            assert value(live, metric, controller=name) == pytest.approx(expected), (name, key)
        composite = value(
            live, "nodeslo_nvme_temperature_celsius", controller=name, sensor="composite"
        )
        assert composite == round(cli["temperature"] - 273.15, 2)
        for n in range(1, 9):
            kelvin = cli.get(f"temperature_sensor_{n}")
            exported = [
                v
                for (m, labels), v in samples(live).items()
                if m == "nodeslo_nvme_temperature_celsius"
                and dict(labels) == {"controller": name, "sensor": f"sensor{n}"}
            ]
            assert exported == ([round(kelvin - 273.15, 2)] if kelvin else []), (name, n)
        bits = int(cli["critical_warning"])
        for bit, flag in enumerate(("spare", "temperature", "reliability", "read_only")):
            got = value(live, "nodeslo_nvme_critical_warning_flag", controller=name, flag=flag)
            assert got == (bits >> bit) & 1


def test_thresholds_and_identity_equal_nvme_cli(guest: Path) -> None:
    live = (guest / "live.prom").read_text()
    for name in controllers(guest):
        ident = json.loads((guest / f"id-ctrl-{name}.json").read_text())
        for level, key in (("warning", "wctemp"), ("critical", "cctemp")):
            got = value(
                live, "nodeslo_nvme_temperature_threshold_celsius", controller=name, level=level
            )
            assert got == round(ident[key] - 273.15, 2)
        info = value(
            live,
            "nodeslo_nvme_info",
            controller=name,
            serial=ident["sn"].strip(),
            model=ident["mn"].strip(),
            firmware=ident["fr"].strip(),
            transport="pcie",
        )
        assert info == 1


def test_the_degraded_controller_is_flagged(guest: Path) -> None:
    live = (guest / "live.prom").read_text()
    bad = [
        dict(labels)["controller"]
        for (m, labels) in samples(live)
        if m == "nodeslo_nvme_info" and dict(labels)["serial"] == "BAD00002"
    ]
    assert len(bad) == 1
    assert value(live, "nodeslo_nvme_critical_warning", controller=bad[0]) == 4
    assert (
        value(live, "nodeslo_nvme_critical_warning_flag", controller=bad[0], flag="reliability")
        == 1
    )


def test_dump_replays_to_identical_metrics(guest: Path) -> None:
    report = json.loads((guest / "dump.json").read_text())
    assert (guest / "dump.err").read_text().rstrip().endswith("exit 0")
    for name in controllers(guest):
        assert report[name]["log-02.bin"] == "ok"
        assert report[name]["identify-ctrl.bin"] == "ok"
        # QEMU 7.2 has no C0h page: it answers Invalid Field, and the dump leaves it out.
        assert report[name]["log-c0.bin"].startswith("not supported")
        assert (guest / "dump" / name / "log-02.bin").stat().st_size == 512

    def nvme_samples(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {
            key: v
            for key, v in samples(path.read_text()).items()
            if key[0].startswith("nodeslo_nvme_")
            and key[0] != "nodeslo_nvme_smart_last_success_timestamp_seconds"
        }

    live, replayed = nvme_samples(guest / "live.prom"), nvme_samples(guest / "replay.prom")
    assert len(live) > 20 * len(CONTROLLERS)
    assert replayed == live


def test_unprivileged_process_cannot_issue_the_ioctl(guest: Path) -> None:
    def status(path: Path) -> dict[str, str]:
        lines = path.read_text().splitlines()
        return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}

    main = status(guest / "main.status")
    assert main["Uid"].split()[0] == main["Uid"].split()[1] == "65534"
    for key in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert int(main[key], 16) == 0, key
    helper = status(guest / "helper.status")
    assert helper["Uid"].split()[0] == "0"
    assert int(helper["CapEff"], 16) == 1 << 21  # CAP_SYS_ADMIN and nothing else
    assert int(helper["CapPrm"], 16) == 1 << 21
    assert helper["NoNewPrivs"] == "1"

    result = json.loads((guest / "unprivileged.json").read_text())
    assert result["uid"] == 65534
    assert result["ioctl_errno"] in (errno.EACCES, errno.EPERM)
    assert result["open_errno"] == errno.EACCES


def test_md_over_the_nvme_namespaces_healthy_then_degraded(guest: Path) -> None:
    """The real md driver: RAID10 over the four namespaces, then `mdadm --fail`."""
    assert (guest / "md-create.log").read_text().rstrip().endswith("exit 0")
    assert "[4/4] [UUUU]" in (guest / "mdstat-healthy.txt").read_text()
    failed_member = (guest / "md-members.txt").read_text().split()[1]
    assert f"set /dev/{failed_member} faulty" in (guest / "md-fail.log").read_text()
    # The member failed is the namespace of the drive that reports reliability degraded.
    live = (guest / "live.prom").read_text()
    bad_controller = failed_member.rsplit("n", 1)[0]  # nvme1n1 -> nvme1
    assert value(live, "nodeslo_nvme_critical_warning", controller=bad_controller) == 4
    mdstat = (guest / "mdstat-failed.txt").read_text()
    assert "[4/3]" in mdstat and f"{failed_member}[1](F)" in mdstat, mdstat

    healthy = (guest / "md-healthy.prom").read_text()
    degraded = (guest / "md-degraded.prom").read_text()
    for text in (healthy, degraded):
        assert value(text, "nodeslo_md_info", device="md0", level="raid10") == 1
        assert value(text, "nodeslo_md_active", device="md0") == 1
        assert value(text, "nodeslo_md_disks_required", device="md0") == 4
        assert value(text, "nodeslo_collector_success", collector="redundancy") == 1
    states = {"active": (4, 3), "failed": (0, 1), "spare": (0, 0)}
    for state, (before, after) in states.items():
        assert value(healthy, "nodeslo_md_disks", device="md0", state=state) == before, state
        assert value(degraded, "nodeslo_md_disks", device="md0", state=state) == after, state
    # The kernel's own count and the member's state, from sysfs.
    assert value(healthy, "nodeslo_md_degraded", device="md0") == 0
    assert value(degraded, "nodeslo_md_degraded", device="md0") == 1
    member = {"device": "md0", "member": failed_member}
    assert value(degraded, "nodeslo_md_member_state", state="faulty", **member) == 1
    assert value(healthy, "nodeslo_md_member_state", state="in_sync", **member) == 1
    log = (guest / "md.log").read_text()
    assert log.rstrip().endswith("exit 0")


def test_md_stopped_then_reassembled_inactive(guest: Path) -> None:
    """`mdadm --stop` removes the array from sysfs; `mdadm --incremental` with two of its
    four members (no --run) assembles it without starting it: what RAIDArrayInactive
    and RAIDArrayMissing read, from the real md driver."""
    assert "stopped /dev/md0" in (guest / "md-stop.log").read_text()
    stopped = (guest / "md-stopped.prom").read_text()
    assert value(stopped, "nodeslo_collector_success", collector="redundancy") == 1
    assert "nodeslo_md_" not in stopped
    assert "not enough to start" in (guest / "md-incremental.log").read_text()
    mdstat = (guest / "mdstat-inactive.txt").read_text()
    assert " : inactive " in mdstat, mdstat
    inactive = (guest / "md-inactive.prom").read_text()
    (device,) = {dict(ls)["device"] for (n, ls) in samples(inactive) if n == "nodeslo_md_info"}
    assert value(inactive, "nodeslo_md_state", device=device, state="inactive") == 1
    assert value(inactive, "nodeslo_md_active", device=device) == 0
    assert value(inactive, "nodeslo_md_info", device=device, level="") == 1
    for state, count in {"active": 0, "failed": 0, "spare": 2}.items():
        assert value(inactive, "nodeslo_md_disks", device=device, state=state) == count, state
    # The kernel knows neither its size nor how degraded it is while it does not run.
    assert "nodeslo_md_degraded{" not in inactive
    assert "nodeslo_md_disks_required{" not in inactive
    assert value(inactive, "nodeslo_collector_success", collector="redundancy") == 1


def test_a_controller_removed_from_the_bus_is_gone(guest: Path) -> None:
    before = serials((guest / "late-before.prom").read_text())
    after = serials((guest / "nvme-removed.prom").read_text())
    gone = (guest / "removed.txt").read_text().strip()
    assert set(before) == set(controllers(guest))
    assert set(after) == set(before) - {gone}
    assert {c: before[c] for c in after} == after  # the others keep their identity
    assert (guest / "late.log").read_text().rstrip().endswith("exit 0")


def test_storage_probe_measures_through_md(guest: Path) -> None:
    text = (guest / "md-degraded.prom").read_text()
    target = "/tmp/state/nodeslo"
    info = value(
        text,
        "nodeslo_probe_storage_target_info",
        target=target,
        kind="file",
        mode="direct",
        device="md0",
    )
    assert info == 1
    assert value(text, "nodeslo_probe_up", probe="storage") == 1
    for op in ("write_sync", "read"):
        count = value(text, "nodeslo_probe_io_latency_seconds_count", target=target, op=op)
        assert count > 0, op
        assert value(text, "nodeslo_probe_io_errors_total", target=target, op=op) == 0, op


def test_real_kernel_faults_page(guest: Path, tmp_path: Path) -> None:
    """What the guest's daemons exported, scraped by a real Prometheus with the generated
    rules of the e2e profile: the failed md member and the drive reporting reliability
    degraded each page through Alertmanager, and so do the array re-assembled inactive,
    and, once the target's exposition moves on from before to after, the array stopped
    and the controller removed."""
    prometheus = st.tool("prometheus")
    alertmanager = st.tool("prometheus-alertmanager", "alertmanager")
    if not (prometheus and alertmanager):
        missing("prometheus / prometheus-alertmanager are not installed (Debian packages)")
    profile = REPO / "tests" / "scenarios" / "profiles" / "e2e.yaml"
    generated = d.run_cli("generate", f"--profile={profile}", f"--out={tmp_path / 'pack'}")
    assert generated.returncode == 0, generated.stderr
    rules = str(tmp_path / "pack" / "alerts" / "nodeslo.rules.yaml")
    # One host whose exposition changes: md0 and four controllers, then neither md0 nor
    # the removed controller (the stop and the removal, as Prometheus sees them).
    changing = tmp_path / "changing.prom"
    shutil.copyfile(guest / "late-before.prom", changing)
    inactive = (guest / "md-inactive.prom").read_text()
    (device,) = {dict(ls)["device"] for (n, ls) in samples(inactive) if n == "nodeslo_md_info"}
    gone = (guest / "removed.txt").read_text().strip()
    gone_serial = serials((guest / "late-before.prom").read_text())[gone]
    with (
        st.serving(guest / "md-degraded.prom") as md_target,
        st.serving(guest / "live.prom") as nvme_target,
        st.serving(guest / "md-inactive.prom") as inactive_target,
        st.serving(changing) as changing_target,
        st.running(
            tmp_path, [md_target, nvme_target, inactive_target, changing_target], [rules]
        ) as stack,
    ):
        stack.wait_scraped(min_targets=4)
        raid = stack.webhook.wait_for(60, alertname="RAIDArrayDegraded", instance=md_target)
        assert (raid.receiver, raid.labels["device"]) == ("pager", "md0")
        failed = stack.webhook.wait_for(60, alertname="RAIDDiskFailed", instance=md_target)
        assert failed.receiver == "pager" and failed.labels["device"] == "md0"
        nvme = stack.webhook.wait_for(
            60,
            alertname="NVMeCriticalWarning",
            instance=nvme_target,
            serial="BAD00002",
            flag="reliability",
        )
        assert nvme.receiver == "pager"
        down = stack.webhook.wait_for(60, alertname="RAIDArrayInactive", instance=inactive_target)
        assert (down.receiver, down.labels["device"]) == ("pager", device)
        assert "array_state inactive" in down.annotations["description"]
        # Replaced whole, never seen half written by a scrape.
        shutil.copyfile(guest / "nvme-removed.prom", tmp_path / "next.prom")
        os.replace(tmp_path / "next.prom", changing)
        array = stack.webhook.wait_for(60, alertname="RAIDArrayMissing", instance=changing_target)
        assert array.receiver == "pager" and "Gone: md0" in array.annotations["description"]
        drive = stack.webhook.wait_for(
            60, alertname="NVMeControllerMissing", instance=changing_target
        )
        assert drive.receiver == "pager"
        assert f"Gone, by serial: {gone_serial}" in drive.annotations["description"]
