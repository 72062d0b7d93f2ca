"""The Debian package under a real systemd: Debian 12 booted under QEMU, the .deb installed.

One boot per module. The guest is this host's kernel and initrd (as ../shared/tools/
qemu-nvme uses them) with a Debian 12 root file system image built by debootstrap from
Debian's packages (tests/support/debian-rootfs.sh), cached under
~/.cache/nodeslo/rootfs-<hash>.img (the hash covers the script, the package list and the
kernel; ~1.5-3 min to build when missing). systemd is PID 1; QEMU's -snapshot keeps the
cached image unchanged. The guest gets one emulated NVMe controller and QEMU's simulated
BMC behind a KCS interface (declared in ACPI and SMBIOS like a server's), so both
helpers have work. tests/support/systemd_guest.py runs inside: it installs the package with dpkg and
records what the units did; the tests below read that record.

The package comes from $NODESLO_DEB (.ci/run builds it with `make deb`) or is built here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, missing
from support.exposition import value

pytestmark = [pytest.mark.qemu, pytest.mark.slow]

SUPPORT = REPO / "tests" / "support"
ROOTFS_SCRIPT = SUPPORT / "debian-rootfs.sh"
GUEST_CHECKER = SUPPORT / "systemd_guest.py"
# What the package depends on and recommends (debian/control) plus the tools the checker
# uses; all from Debian 12, so dpkg -i needs no network in the guest.
GUEST_PACKAGES = (
    "python3",
    "python3-yaml",
    "python3-bcrypt",
    "rt-tests",
    "procps",
    "util-linux",
)
TOOLS = {
    "qemu-system-x86_64": "qemu-system-x86",
    "debootstrap": "debootstrap",
    "mkfs.ext4": "e2fsprogs",
    "dpkg-buildpackage": "dpkg-dev",
}
CAP_SYS_ADMIN = 1 << 21
CAP_SYS_NICE = 1 << 23
GUEST_TIMEOUT = 1200


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "nodeslo"


def kernel() -> tuple[str, Path, Path]:
    versions = sorted(
        os.listdir("/lib/modules"),
        key=lambda v: [int(x) if x.isdigit() else x for x in re.split(r"[.-]", v)],
    )
    if not versions:
        missing("no kernel modules in /lib/modules (Debian package linux-image-amd64)")
    kver = versions[-1]
    image, initrd = Path(f"/boot/vmlinuz-{kver}"), Path(f"/boot/initrd.img-{kver}")
    if not image.is_file() or not initrd.is_file():
        missing(f"{image} or {initrd} is missing (Debian package linux-image-amd64)")
    return kver, image, initrd


def rootfs_image(kver: str) -> Path:
    """The cached root file system image, built once per script/package list/kernel."""
    key = hashlib.sha256()
    key.update(ROOTFS_SCRIPT.read_bytes())
    key.update(" ".join(GUEST_PACKAGES).encode())
    key.update(kver.encode())
    image = cache_dir() / f"rootfs-{key.hexdigest()[:16]}.img"
    if image.is_file():
        return image
    if os.geteuid() != 0:
        missing("building the guest's root file system needs root (debootstrap, chroot)")
    image.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["bash", str(ROOTFS_SCRIPT), str(image), *GUEST_PACKAGES],
        capture_output=True,
        text=True,
        check=False,
        timeout=1200,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return image


def package(work: Path) -> Path:
    given = os.environ.get("NODESLO_DEB")
    if given:
        return Path(given)
    out = work / "deb"
    result = subprocess.run(
        ["make", "deb", f"DEB_BUILD={out}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (deb,) = out.glob("nodeslo_*_all.deb")
    return deb


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    for tool, debian_package in TOOLS.items():
        if shutil.which(tool) is None:
            missing(f"{tool} is not installed (Debian package {debian_package})")
    kver, vmlinuz, initrd = kernel()
    work = tmp_path_factory.mktemp("deb-systemd")
    deb = package(work)
    image = rootfs_image(kver)
    share = work / "share"
    share.mkdir()
    shutil.copy(deb, share / deb.name)
    shutil.copy(GUEST_CHECKER, share / GUEST_CHECKER.name)
    (share / "guest-script").write_text(
        f"exec python3 /mnt/share/{GUEST_CHECKER.name} /mnt/share\n"
    )
    nvme = share / "nvme0.img"
    with open(nvme, "wb") as f:
        f.truncate(64 << 20)
    command = [
        "qemu-system-x86_64",
        "-machine",
        "q35",
        "-cpu",
        "max",
        "-m",
        "2048",
        "-smp",
        "2",
        "-kernel",
        str(vmlinuz),
        "-initrd",
        str(initrd),
        "-append",
        "root=/dev/vda rw console=ttyS0 panic=-1 loglevel=4 systemd.show_status=0 "
        "systemd.journald.forward_to_console=1",
        "-drive",
        f"file={image},if=virtio,format=raw,snapshot=on",
        "-drive",
        f"file={nvme},if=none,id=nvm0,format=raw",
        "-device",
        "nvme,drive=nvm0,serial=NODESLO0001",
        # A BMC: the guest's ipmi_si binds it by its ACPI IPI0001 entry, as on a server.
        "-device",
        "ipmi-bmc-sim,id=bmc0",
        "-device",
        "isa-ipmi-kcs,bmc=bmc0",
        "-virtfs",
        f"local,path={share},mount_tag=share,security_model=none",
        "-nographic",
        "-no-reboot",
        "-net",
        "none",
    ]
    console = work / "console.log"
    with open(console, "wb") as out:
        result = subprocess.run(
            command, stdout=out, stderr=subprocess.STDOUT, check=False, timeout=GUEST_TIMEOUT
        )
    results_file = share / "results.json"
    exit_code = (share / "exit-code").read_text().strip() if (share / "exit-code").exists() else "?"
    if result.returncode != 0 or exit_code != "0" or not results_file.exists():
        logs = [
            f"{p.name}:\n{p.read_text(errors='replace')[-4000:]}"
            for p in (console, share / "out.log")
            if p.exists()
        ]
        pytest.fail(
            f"guest failed (qemu {result.returncode}, script {exit_code}):\n" + "\n".join(logs)
        )
    results: dict[str, Any] = json.loads(results_file.read_text())
    results["console"] = console.read_text(errors="replace")
    return results


def caps(status: dict[str, str], key: str) -> int:
    return int(status[key], 16)


def test_the_package_installs_and_every_unit_starts(guest: dict[str, Any]) -> None:
    assert guest["install"]["rc"] == 0, guest["install"]["err"]
    assert guest["started"], guest["show"]
    for unit, shown in guest["show"].items():
        assert (shown["ActiveState"], shown["SubState"]) == ("active", "running"), unit
    print(f"\ndpkg -i in the guest: {guest['install_seconds']:.1f} s")


def test_the_exporter_runs_as_nodeslo_with_no_capabilities_after_ready(
    guest: dict[str, Any],
) -> None:
    # Type=notify: systemd reports "active"/"running" only once READY=1 arrived.
    shown = guest["show"]["nodeslo.service"]
    assert shown["User"] == "nodeslo"
    status = guest["status"]["nodeslo.service"]
    assert status["Uid"].split() == [str(guest["user"]["nodeslo"])] * 4
    for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert caps(status, key) == 0, (key, status)
    assert status["NoNewPrivs"] == "1"


def test_the_nvme_helper_holds_cap_sys_admin_only_and_serves_the_exporter(
    guest: dict[str, Any],
) -> None:
    status = guest["status"]["nodeslo-nvme-helper.service"]
    assert status["Uid"].split()[0] == "0"
    assert caps(status, "CapEff") == CAP_SYS_ADMIN
    assert caps(status, "CapPrm") == CAP_SYS_ADMIN
    assert caps(status, "CapBnd") == CAP_SYS_ADMIN
    assert caps(status, "CapAmb") == 0
    metrics = guest["metrics"]
    assert value(metrics, "nodeslo_nvme_smart_up", controller="nvme0") == 1
    assert (
        value(metrics, "nodeslo_nvme_temperature_celsius", controller="nvme0", sensor="composite")
        > 0
    )


def test_the_bmc_helper_is_root_with_no_capability_and_serves_the_exporter(
    guest: dict[str, Any],
) -> None:
    """The unit's chain on a real systemd: ipmi_devintf loaded (the package's
    modules-load.d file, and postinst for this boot), the device cgroup letting the
    helper open /dev/ipmi0 (DeviceAllow=char-ipmidev), its socket, the exporter reading
    the BMC through it."""
    status = guest["status"]["nodeslo-bmc-helper.service"]
    assert status["Uid"].split()[0] == "0"
    for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert caps(status, key) == 0, (key, status)
    assert status["NoNewPrivs"] == "1"
    ipmi = guest["ipmi"]
    assert "ipmi_devintf" in ipmi["modules"] and "ipmi_si" in ipmi["modules"], ipmi
    assert ipmi["device"]["rc"] == 0, ipmi
    metrics = guest["metrics"]
    assert value(metrics, "nodeslo_bmc_up", reason="") == 1, ipmi["helper_journal"]
    assert value(metrics, "nodeslo_collector_success", collector="bmc") == 1
    assert "nodeslo_bmc_info{" in metrics
    # QEMU's simulated BMC has one sensor in its SDR, the watchdog, read through the helper.
    assert value(metrics, "nodeslo_bmc_sensor_severity", sensor="Watchdog") == 0


def test_the_wakeup_probe_runs_cyclictest_as_nodeslo_with_cap_sys_nice_only(
    guest: dict[str, Any],
) -> None:
    relay = guest["status"]["nodeslo-wakeup-probe.service"]
    uid = str(guest["user"]["nodeslo"])
    assert relay["Uid"].split() == [uid] * 4
    assert caps(relay, "CapEff") == CAP_SYS_NICE
    assert caps(relay, "CapAmb") == CAP_SYS_NICE
    assert caps(relay, "CapBnd") == CAP_SYS_NICE
    cyclictest = [p for p in guest["processes"] if p["Name"] == "cyclictest"]
    assert cyclictest, [p["cmdline"] for p in guest["processes"]]
    for proc in cyclictest:
        assert proc["Uid"].split() == [uid] * 4
        assert caps(proc, "CapEff") == CAP_SYS_NICE
        assert "--default-system" in proc["cmdline"]
    metrics = guest["metrics"]
    assert (
        value(
            metrics,
            "nodeslo_probe_wakeup_engine_info",
            requested="auto",
            engine="cyclictest",
            policy="other",
        )
        == 1
    )
    assert (
        value(
            metrics,
            "nodeslo_probe_wakeup_latency_seconds_count",
            engine="cyclictest",
            policy="other",
        )
        > 0
    )
    assert value(metrics, "nodeslo_probe_up", probe="wakeup") == 1
    # Only the probe's processes hold a capability among nodeslo's.
    for proc in guest["processes"]:
        if caps(proc, "CapEff"):
            assert re.search(r"nodeslo\.probes\.(relay|wakeup)|cyclictest", proc["cmdline"]), proc


def test_the_metrics_endpoint_serves_every_collector(guest: dict[str, Any], promtool: str) -> None:
    metrics = guest["metrics"]
    assert value(metrics, "nodeslo_build_info") == 1
    assert value(metrics, "nodeslo_probe_up", probe="storage") == 1
    assert value(metrics, "nodeslo_collector_success", collector="nvme") == 1
    result = subprocess.run(
        [promtool, "check", "metrics"], input=metrics, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_daemon_writes_only_to_its_state_and_runtime_directories(guest: dict[str, Any]) -> None:
    writes = guest["writes"]
    assert writes["/var/lib/nodeslo/written-by-test"]["out"].strip() == "written"
    for path in (
        "/etc/nodeslo-test",
        "/usr/nodeslo-test",
        "/run/nodeslo-test",
        "/root/nodeslo-test",
    ):
        assert writes[path]["rc"] != 0, (path, writes[path])
        assert re.search(
            r"Read-only file system|Permission denied|No such file", writes[path]["err"]
        ), writes[path]


def test_reload_rereads_the_profile_in_the_same_process(guest: dict[str, Any]) -> None:
    assert guest["reload"]["rc"] == 0, guest["reload"]
    after = guest["reload_after"]
    assert after["show"]["MainPID"] == guest["show"]["nodeslo.service"]["MainPID"]
    assert after["journal"].count("profile reloaded") == 2, after["journal"]
    assert after["before"] != after["after"], after


def test_a_hung_daemon_is_killed_by_the_watchdog_and_restarted(guest: dict[str, Any]) -> None:
    watchdog = guest["watchdog"]
    assert watchdog["restarted"], watchdog["after"]
    assert "Watchdog timeout" in watchdog["journal"], watchdog["journal"][-3000:]
    assert int(watchdog["after"]["NRestarts"]) == int(watchdog["before"]["NRestarts"]) + 1
    assert watchdog["metrics_after"].startswith("# HELP")
    assert watchdog["probe_up_after"], "the wake-up probe did not reconnect to the new daemon"
    print(f"\nSIGSTOP to restarted: {watchdog['seconds']:.1f} s (WatchdogSec=30s, RestartSec=5s)")


def test_stop_is_clean_and_takes_the_probe_unit_along(guest: dict[str, Any]) -> None:
    assert guest["stop"]["rc"] == 0
    after = guest["stop_after"]
    main = after["show"]["nodeslo.service"]
    assert (main["ActiveState"], main["Result"]) == ("inactive", "success"), main
    assert after["show"]["nodeslo-wakeup-probe.service"]["ActiveState"] == "inactive"
    assert "shutting down" in after["journal"]
    assert after["processes"] == [], after["processes"]
    assert after["metrics"].startswith("ERROR")
    assert guest["stop_seconds"] < 10, guest["stop_seconds"]
