"""deploy/systemd: the units parse, verify, stay locked down, and agree with the code.

`systemd-analyze security --offline=yes` scores each unit's exposure (0 = locked down,
10 = fully exposed); the bounds below are the scores the units have when this test was
written plus a small margin, so a change that weakens the hardening fails here."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, missing
from nodeslo import cli
from nodeslo.profile import load_profile

UNITS = REPO / "deploy" / "systemd"
MAIN = UNITS / "nodeslo.service"
HELPER = UNITS / "nodeslo-nvme-helper.service"
WAKEUP = UNITS / "nodeslo-wakeup-probe.service"
BMC_HELPER = UNITS / "nodeslo-bmc-helper.service"
MODULES_LOAD = REPO / "deploy" / "modules-load.d" / "nodeslo-ipmi.conf"
# Measured with systemd 252: nodeslo.service 1.2, nodeslo-nvme-helper.service 1.3,
# nodeslo-wakeup-probe.service 0.8, nodeslo-bmc-helper.service 1.0.
EXPOSURE_BOUND = {MAIN.name: 1.5, HELPER.name: 1.5, WAKEUP.name: 1.0, BMC_HELPER.name: 1.2}
INSTALLED_BINARY = "/usr/bin/nodeslo"


def parse_unit(path: Path) -> dict[str, list[str]]:
    """{"Section.Key": [values in order]}; backslash continuations joined."""
    out: dict[str, list[str]] = {}
    section = ""
    pending = ""
    for raw in path.read_text().splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return out


def one(unit: dict[str, list[str]], key: str) -> str:
    values = unit.get(key, [])
    assert len(values) == 1, f"{key}: {values}"
    return values[0]


def exec_args(unit: dict[str, list[str]]) -> list[str]:
    words = one(unit, "Service.ExecStart").split()
    assert words[0] == INSTALLED_BINARY
    return [w for w in words[1:] if not w.startswith("$")]


def flag(args: list[str], name: str) -> list[str]:
    return [a.split("=", 1)[1] for a in args if a.startswith(f"{name}=")]


@pytest.fixture(scope="module")
def analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        missing("systemd-analyze is not installed (Debian package systemd)")
    return tool


def test_main_unit_has_what_the_issue_asks() -> None:
    unit = parse_unit(MAIN)
    assert one(unit, "Service.Type") == "notify"
    assert one(unit, "Service.WatchdogSec")
    assert one(unit, "Service.User") == "nodeslo"
    assert one(unit, "Service.CapabilityBoundingSet") == ""
    assert one(unit, "Service.AmbientCapabilities") == ""
    for key, want in [
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
        ("StateDirectory", "nodeslo"),
    ]:
        assert one(unit, f"Service.{key}") == want, key
    assert unit["Service.SystemCallFilter"][0] == "@system-service"
    assert set(one(unit, "Service.RestrictAddressFamilies").split()) == {
        "AF_UNIX",
        "AF_INET",
        "AF_INET6",
    }
    assert re.fullmatch(r"\d+[KMG]", one(unit, "Service.MemoryMax"))
    # The state directory is the only writable path on disk; /run/nodeslo (tmpfs) holds
    # the wake-up probe's socket.
    for key in ("ReadWritePaths", "LogsDirectory", "CacheDirectory"):
        assert f"Service.{key}" not in unit, key
    assert one(unit, "Service.RuntimeDirectory") == "nodeslo"


def test_the_probe_writes_where_the_unit_lets_it() -> None:
    unit = parse_unit(MAIN)
    writable = f"/var/lib/{one(unit, 'Service.StateDirectory')}"
    assert load_profile().probes.storage.targets == (writable,)


def test_helper_holds_exactly_cap_sys_admin_and_no_network() -> None:
    unit = parse_unit(HELPER)
    assert one(unit, "Service.CapabilityBoundingSet") == "CAP_SYS_ADMIN"
    assert one(unit, "Service.AmbientCapabilities") == ""
    assert one(unit, "Service.PrivateNetwork") == "yes"
    assert one(unit, "Service.RestrictAddressFamilies") == "AF_UNIX"
    assert one(unit, "Service.NoNewPrivileges") == "yes"
    assert one(unit, "Service.DevicePolicy") == "closed"
    assert one(unit, "Service.DeviceAllow") == "char-nvme r"


def test_bmc_helper_holds_no_capability_no_network_and_the_ipmi_device_only() -> None:
    unit = parse_unit(BMC_HELPER)
    assert one(unit, "Service.User") == "root"  # /dev/ipmi0 is root's 0600
    assert one(unit, "Service.CapabilityBoundingSet") == ""
    assert one(unit, "Service.AmbientCapabilities") == ""
    assert one(unit, "Service.NoNewPrivileges") == "yes"
    assert one(unit, "Service.PrivateNetwork") == "yes"
    assert one(unit, "Service.RestrictAddressFamilies") == "AF_UNIX"
    assert one(unit, "Service.DevicePolicy") == "closed"
    assert one(unit, "Service.DeviceAllow") == "char-ipmidev rw"
    assert "Service.PrivateDevices" not in unit  # it would hide /dev/ipmi0
    # Started where the collector's presence test may find a BMC: the same three paths.
    conditions = unit["Unit.ConditionPathExistsGlob"]
    assert all(c.startswith("|") for c in conditions)  # any one of them
    assert {c[1:] for c in conditions} == {
        "/sys/class/ipmi/ipmi*",
        "/sys/bus/acpi/devices/IPI0001:*",
        "/sys/firmware/dmi/entries/38-*",
    }
    # The ipmidev major exists only once ipmi_devintf is loaded (DeviceAllow by name).
    modules = [line for line in MODULES_LOAD.read_text().splitlines() if line and line[0] != "#"]
    assert modules == ["ipmi_devintf"]
    assert "systemd-modules-load.service" in one(unit, "Unit.After").split()


def test_the_bmc_helper_unit_and_the_exporter_agree_on_socket_user_and_flags() -> None:
    main, helper = parse_unit(MAIN), parse_unit(BMC_HELPER)
    main_args, helper_args = exec_args(main), exec_args(helper)
    parser = cli.build_parser()
    assert parser.parse_args(helper_args).command == "bmc-helper"
    socket_path = flag(helper_args, "--socket")[0]
    assert flag(main_args, "--collector.bmc.helper-socket") == [socket_path]
    assert parser.parse_args(main_args).bmc_helper_socket == socket_path
    assert Path(socket_path).parent == Path("/run") / one(helper, "Service.RuntimeDirectory")
    user = one(main, "Service.User")
    assert flag(helper_args, "--allow-user") == [user]
    assert flag(helper_args, "--socket-group") == [user]
    assert one(helper, "Service.Group") == user  # the socket's directory is root:nodeslo
    assert one(helper, "Service.Type") == "notify"  # READY=1 once the socket listens
    assert one(helper, "Unit.Before") == MAIN.name
    assert BMC_HELPER.name in one(main, "Unit.Wants").split()
    assert BMC_HELPER.name in one(main, "Unit.After").split()


def test_the_wakeup_probe_holds_exactly_cap_sys_nice_as_the_nodeslo_user() -> None:
    unit, main = parse_unit(WAKEUP), parse_unit(MAIN)
    assert one(unit, "Service.User") == one(main, "Service.User")
    assert one(unit, "Service.CapabilityBoundingSet") == "CAP_SYS_NICE"
    assert one(unit, "Service.AmbientCapabilities") == "CAP_SYS_NICE"
    assert one(unit, "Service.NoNewPrivileges") == "yes"
    # cyclictest's own check sets SCHED_FIFO; the capability must count in the host's
    # user namespace.
    assert one(unit, "Service.RestrictRealtime") == "no"
    assert one(unit, "Service.PrivateUsers") == "no"
    assert one(unit, "Service.PrivateNetwork") == "yes"
    assert one(unit, "Service.RestrictAddressFamilies") == "AF_UNIX"
    assert one(unit, "Service.Type") == "notify" and one(unit, "Service.WatchdogSec")
    assert one(unit, "Unit.PartOf") == MAIN.name
    assert WAKEUP.name in one(main, "Unit.Wants").split()
    probe = cli.build_parser().parse_args(exec_args(unit))
    served = cli.build_parser().parse_args(exec_args(main))
    assert (probe.command, probe.probe) == ("probe", "wakeup")
    assert probe.connect == served.probe_wakeup_socket
    assert Path(probe.connect).parent == Path("/run") / one(main, "Service.RuntimeDirectory")


def test_units_agree_on_socket_user_and_flags() -> None:
    main, helper = parse_unit(MAIN), parse_unit(HELPER)
    main_args, helper_args = exec_args(main), exec_args(helper)
    parser = cli.build_parser()
    served = parser.parse_args(main_args)
    assert served.command == "serve"
    helped = parser.parse_args(helper_args)
    assert helped.command == "nvme-helper"
    socket_path = flag(helper_args, "--socket")[0]
    assert flag(main_args, "--collector.nvme.helper-socket") == [socket_path]
    runtime_dir = one(helper, "Service.RuntimeDirectory")
    assert Path(socket_path).parent == Path("/run") / runtime_dir
    user = one(main, "Service.User")
    assert flag(helper_args, "--allow-user") == [user]
    assert flag(helper_args, "--socket-group") == [user]
    assert one(helper, "Service.Group") == user  # the socket's directory is root:nodeslo
    assert one(helper, "Unit.Before") == MAIN.name
    assert HELPER.name in one(main, "Unit.Wants").split()
    sysusers = (UNITS / "nodeslo.sysusers").read_text()
    assert re.search(rf"^u {user} ", sysusers, re.MULTILINE)


def _local_copy(unit: Path, out: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's nodeslo, which exists here."""
    binary = Path(sys.executable).parent / "nodeslo"
    if not binary.exists():
        pytest.skip(f"{binary} is not installed (pip install -e .)")
    copy = out / unit.name
    copy.write_text(unit.read_text().replace(INSTALLED_BINARY, str(binary)))
    return copy


@pytest.mark.parametrize("unit", [MAIN, HELPER, WAKEUP, BMC_HELPER], ids=lambda p: p.name)
def test_systemd_analyze_verify_is_clean(analyze: str, unit: Path, tmp_path: Path) -> None:
    copy = _local_copy(unit, tmp_path)
    result = subprocess.run(
        # --man=no: Documentation= names nodeslo(1), which the package installs, not a checkout.
        [analyze, "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    # verify exits 0 on unknown keys and bad values; it only says so.
    complaints = [line for line in result.stderr.splitlines() if str(copy) in line]
    assert complaints == [], complaints


@pytest.mark.parametrize("unit", [MAIN, HELPER, WAKEUP, BMC_HELPER], ids=lambda p: p.name)
def test_exposure_stays_below_the_bound(analyze: str, unit: Path) -> None:
    result = subprocess.run(
        [analyze, "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    exposure = float(match.group(1))
    print(f"\n{unit.name}: exposure {exposure}")
    assert exposure < EXPOSURE_BOUND[unit.name], result.stdout
