"""`nodeslo check`: each finding, the table and JSON, exit codes, goldens per variant."""

from __future__ import annotations

import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from fixtures.make_fixtures import build, variant
from nodeslo.check import (
    Finding,
    SmartHealth,
    ecc_findings,
    md_finding,
    microcode_findings,
    nvme_findings,
    passed,
    redundancy_findings,
    render_json,
    render_table,
    run,
    throttle_finding,
    zfs_finding,
)
from nodeslo.cli import build_parser
from nodeslo.collectors.edac import ControllerCounts, DimmCounts, EdacSnapshot
from nodeslo.collectors.firmware import Microcode
from nodeslo.collectors.mdraid import MdArray, MdMember
from nodeslo.collectors.redundancy import ZfsPool
from nodeslo.profile import load_profile
from support import daemon as d

GOLDEN = Path(__file__).parent / "golden" / "check"
VARIANTS = (
    "seed-spec",
    "seed-spec-tuned",
    "tuning-drift",
    "raid-degraded",
    "raid-resyncing",
    "zfs-degraded",
    "microcode-mixed",
    "ecc-ue",
    "ecc-absent",
    "bmc-faults",
    "bmc-no-driver",
    "pcie-degraded",
    "nic-degraded",
    "link-down",
    "dimm-missing",
)


def verdicts(findings: list[Finding]) -> dict[str, str]:
    return {f.setting: f.verdict for f in findings}


# --- findings -----------------------------------------------------------------------------


def dimm(name: str, ue: int = 0, mode: str = "S4ECD4ED") -> DimmCounts:
    return DimmCounts(name, f"LABEL_{name}", "Registered-DDR5", mode, 0, ue)


def controller(n: str, *dimms: DimmCounts, ue: int = 0) -> ControllerCounts:
    return ControllerCounts(
        n, f"mc{n}", 0, ue + sum(x.uncorrectable or 0 for x in dimms), 0, 0, dimms
    )


def test_ecc_absent_fails_and_leaves_ue_unknown() -> None:
    reporting, uncorrectable = ecc_findings(EdacSnapshot(()))
    assert (reporting.verdict, reporting.actual) == ("fail", "none: ECC errors go unreported")
    assert uncorrectable.verdict == "skip"


def test_ecc_uncorrectable_names_the_dimm() -> None:
    snapshot = EdacSnapshot((controller("0", dimm("dimm0")), controller("1", dimm("dimm7", ue=2))))
    reporting, uncorrectable = ecc_findings(snapshot)
    assert reporting.verdict == "pass" and reporting.actual == "2 controllers"
    assert uncorrectable.verdict == "fail"
    assert uncorrectable.actual == "2 (mc1/dimm7 LABEL_dimm7)"


def test_ecc_uncorrectable_without_dimm_attribution() -> None:
    _, uncorrectable = ecc_findings(EdacSnapshot((controller("0", ue=1),)))
    assert (uncorrectable.verdict, uncorrectable.actual) == ("fail", "1 (mc0)")


def test_ecc_off_on_a_dimm_fails_reporting() -> None:
    reporting, _ = ecc_findings(EdacSnapshot((controller("0", dimm("dimm0", mode="None")),)))
    assert reporting.verdict == "fail"
    assert reporting.actual == "ECC off on 1 DIMM: mc0/dimm0"


def md(
    *,
    state: str = "clean",
    level: str = "raid10",
    raid_disks: int | None = 2,
    degraded: int | None = 0,
    members: tuple[tuple[str, str], ...] = (("a", "in_sync"), ("b", "in_sync")),
    sync: tuple[str, float] | None = None,
    problems: tuple[str, ...] = (),
) -> MdArray:
    return MdArray(
        device="md0",
        state=state,
        level=level,
        raid_disks=raid_disks,
        degraded=degraded,
        sync_action=sync[0] if sync else None,
        sync_progress=sync[1] if sync else None,
        mismatched_sectors=0,
        members=tuple(MdMember(n, frozenset(s.split(","))) for n, s in members),
        problems=problems,
    )


@pytest.mark.parametrize(
    ("array", "verdict", "actual"),
    [
        (md(), "pass", "2/2 in sync"),
        (
            md(degraded=1, members=(("a", "in_sync"), ("b", "faulty"))),
            "fail",
            "1/2 in sync, failed: b",
        ),
        (
            md(degraded=1, members=(("a", "in_sync"), ("c", "spare")), sync=("recover", 0.5)),
            "fail",
            "1/2 in sync, recover 50.0%",
        ),
        (md(sync=("resync", 0.0)), "pass", "2/2 in sync, resync 0.0%"),
        (
            md(state="inactive", level="", raid_disks=None, degraded=None),
            "fail",
            "inactive (assembled, not started)",
        ),
        (md(state="broken", level="raid0", degraded=None), "fail", "broken (not running)"),
        (md(state=""), "fail", "unreadable (not running)"),
        (
            md(problems=("/sys/block/md0/md/dev-b/state: not a member state list",)),
            "error",
            "2/2 in sync, /sys/block/md0/md/dev-b/state: not a member state list",
        ),
        (md(level="raid0", degraded=None), "pass", "2 members"),
        # A spare that took over rebuilt the array: in sync, but a member is faulty.
        (
            md(members=(("a", "in_sync"), ("b", "in_sync"), ("c", "faulty"))),
            "fail",
            "2/2 in sync, failed: c",
        ),
    ],
)
def test_md_findings(array: MdArray, verdict: str, actual: str) -> None:
    result = md_finding(array)
    assert (result.setting, result.verdict, result.actual) == ("md:md0", verdict, actual)


def test_zfs_and_no_redundancy_at_all() -> None:
    assert zfs_finding(ZfsPool("pdds", "DEGRADED")).verdict == "fail"
    assert zfs_finding(ZfsPool("pdds", "ONLINE")).verdict == "pass"
    (none,) = redundancy_findings(None, [])
    assert (none.setting, none.verdict) == ("redundancy", "skip")


def test_microcode() -> None:
    (mixed,) = microcode_findings(Microcode({"0x10": 2, "0x0f": 1}, "sysfs"), None)
    assert (mixed.verdict, mixed.actual) == ("fail", "0x0f on 1 CPU, 0x10 on 2 CPUs")
    same, current = microcode_findings(Microcode({"0x10": 4}, "cpuinfo"), True)
    assert same.verdict == "pass" and (current.verdict, current.actual) == ("fail", "older")
    (unknown,) = microcode_findings(None, None)
    assert unknown.verdict == "skip"


@dataclass(frozen=True)
class Page:
    critical_warning: int = 0
    available_spare_percent: int = 100
    available_spare_threshold_percent: int = 10


def test_nvme_findings() -> None:
    pages: dict[str, SmartHealth | None] = {
        "nvme10": Page(),
        "nvme2": Page(critical_warning=0b1100),
        "nvme3": Page(available_spare_percent=5),
    }
    warning, spare = nvme_findings(pages)
    assert (warning.verdict, warning.actual) == ("fail", "nvme2 reliability+read_only")
    assert (spare.verdict, spare.actual) == ("fail", "nvme3 5% < 10%")
    healthy = nvme_findings({"nvme0": Page(), "nvme1": Page()})
    assert [(f.verdict, f.actual) for f in healthy] == [
        ("pass", "none on 2 controllers"),
        ("pass", "above threshold on 2 controllers"),
    ]
    unread = nvme_findings({"nvme0": Page(), "nvme1": None})
    assert [f.verdict for f in unread] == ["error", "error"]
    assert [f.verdict for f in nvme_findings({})] == ["skip", "skip"]


def test_throttle_finding() -> None:
    assert throttle_finding(None).verdict == "skip"
    assert throttle_finding({"core": 0, "package": 0}).verdict == "pass"
    hot = throttle_finding({"core": 120, "package": 3})
    assert (hot.verdict, hot.actual) == ("fail", "120 core events, 3 package events")


def test_render_table_and_json() -> None:
    profile = load_profile()
    findings = [
        Finding("a", "1", "1", "pass", "why a"),
        Finding("longer_setting", "2", "3", "fail", "why b"),
    ]
    table = render_table(profile, findings).splitlines()
    assert table[1].split() == ["SETTING", "EXPECTED", "ACTUAL", "VERDICT", "WHY"]
    assert table[2].index("1") == table[1].index("EXPECTED")  # columns line up
    assert table[3].split() == ["longer_setting", "2", "3", "FAIL", "why", "b"]
    assert table[-1] == "FAIL: 2 checks: 1 pass, 1 fail, 0 skip, 0 error"
    document = json.loads(render_json(profile, findings))
    assert document["passed"] is False and document["profile"] == profile.name
    assert document["summary"] == {"pass": 1, "fail": 1, "skip": 0, "error": 0}
    assert document["checks"][1] == {
        "setting": "longer_setting",
        "expected": "2",
        "actual": "3",
        "verdict": "fail",
        "why": "why b",
    }
    assert passed([Finding("a", "", "", "skip", "")])
    assert not passed([Finding("a", "", "", "error", "")])


# --- the command ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The check's variants at full seed-spec size (256 CPUs), built once."""
    out = {}
    for name in VARIANTS:
        root = tmp_path_factory.mktemp(name)
        build(root, variant(name))
        out[name] = root
    return out


def check(tree: Path, *flags: str) -> tuple[int, str, str]:
    args = build_parser().parse_args(
        [
            "check",
            f"--path.sysfs={tree}/sys",
            f"--path.procfs={tree}/proc",
            f"--path.rootfs={tree}",
            *flags,
        ]
    )
    out, err = io.StringIO(), io.StringIO()
    status = run(args, out, err)
    return status, out.getvalue(), err.getvalue()


def replay(tree: Path) -> list[str]:
    directory = tree / "nvme-replay"
    flags = [f"--collector.nvme.replay-dir={directory}"] if directory.is_dir() else []
    recording = tree / "bmc-replay.json"
    return flags + ([f"--collector.bmc.replay={recording}"] if recording.is_file() else [])


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("fmt", ["table", "json"])
def test_golden_check_output(
    trees: dict[str, Path], update_golden: bool, name: str, fmt: str
) -> None:
    status, out, err = check(trees[name], f"--format={fmt}", *replay(trees[name]))
    assert err == "", err
    document = json.loads(out) if fmt == "json" else None
    if document is not None:
        assert status == (0 if document["passed"] else 1)
    sha256 = load_profile().sha256
    stable = out.replace(sha256, "<sha256>").replace(sha256[:12], "<sha256>")
    path = GOLDEN / f"{name}.{'json' if fmt == 'json' else 'txt'}"
    if update_golden:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(stable)
    assert path.exists(), f"{path} missing: run pytest --update-golden"
    assert stable == path.read_text(), f"{path} differs: review, then pytest --update-golden"


@pytest.mark.parametrize(
    ("name", "failing"),
    [
        ("seed-spec-tuned", set()),
        (
            "seed-spec",
            {
                "deep_cstates",
                "transparent_hugepage",
                "kernel.numa_balancing",
                "kernel.timer_migration",
                "vm.swappiness",
            },
        ),
        ("tuning-drift", {"transparent_hugepage", "kernel.numa_balancing", "vm.swappiness"}),
        ("raid-degraded", {"md:md0"}),
        ("raid-resyncing", set()),
        ("zfs-degraded", {"zfs:pdds"}),
        ("microcode-mixed", {"microcode"}),
        ("ecc-ue", {"ecc_uncorrectable"}),
        ("ecc-absent", {"ecc_reporting"}),
        # Without its recording the BMC is not read: nothing to judge (skip)...
        ("bmc-faults", set()),
        # ...but a BMC the firmware declares and the kernel has no device for fails.
        ("bmc-no-driver", {"bmc"}),
        ("pcie-degraded", {"pcie_links", "pcie_errors", "nvme_link"}),
        ("nic-degraded", {"network_speed"}),
        ("link-down", {"network_speed", "rdma_ports"}),
        ("dimm-missing", {"memory", "memory_balance", "dimms_per_socket"}),
    ],
)
def test_each_variant_fails_exactly_its_own_checks(
    trees: dict[str, Path], name: str, failing: set[str]
) -> None:
    """Without NVMe pages (skipped), each fault is the only thing that fails."""
    status, out, _ = check(trees[name], "--format=json")
    document = json.loads(out)
    found = {c["setting"] for c in document["checks"] if c["verdict"] in ("fail", "error")}
    assert found == failing
    assert status == (1 if failing else 0)


@pytest.mark.parametrize(
    ("name", "failing"),
    [
        ("seed-spec-tuned", set()),
        (
            "bmc-faults",
            {"psu", "psu_redundancy:PS Redundancy", "fans", "inlet", "bmc_sensors"},
        ),
    ],
)
def test_the_bmc_recording_fails_exactly_its_faults(
    trees: dict[str, Path], name: str, failing: set[str]
) -> None:
    """The faults the QEMU test injects, recorded from the simulated BMC, replayed."""
    status, out, _ = check(trees[name], "--format=json", *replay(trees[name]))
    checks = {c["setting"]: c for c in json.loads(out)["checks"]}
    assert {s for s, c in checks.items() if c["verdict"] in ("fail", "error")} == failing
    assert status == (1 if failing else 0)
    if failing:
        assert (
            checks["psu"]["actual"] == "1 of 2 healthy (PSU2 Status: failure_detected+input_lost)"
        )
        assert checks["fans"]["actual"] == "FAN1 800 RPM <= 1000"
        assert checks["inlet"]["actual"] == "Inlet Temp 42 °C >= 27"
        assert checks["bmc_sensors"]["actual"] == "DIMM C (memory)"


def test_exit_status_end_to_end(trees: dict[str, Path], tmp_path: Path) -> None:
    tuned, seed = trees["seed-spec-tuned"], trees["seed-spec"]
    flags = [f"--path.sysfs={tuned}/sys", f"--path.procfs={tuned}/proc"]
    passing = d.run_cli("check", *flags)
    assert passing.returncode == 0, passing.stdout + passing.stderr
    assert passing.stdout.splitlines()[-1].startswith("PASS: ")
    failing = d.run_cli("check", f"--path.sysfs={seed}/sys", f"--path.procfs={seed}/proc")
    assert failing.returncode == 1
    bad_profile = tmp_path / "bad.yaml"
    bad_profile.write_text("profile: bad\ntuning:\n  turbo: maybe\n")
    for args, complaint in (
        ([*flags, f"--profile={bad_profile}"], "bad.yaml:3: tuning.turbo: must be true or false"),
        (["--path.sysfs=/nonexistent/sys"], "--path.sysfs: /nonexistent/sys is not a directory"),
        ([*flags, "--format=yaml"], "invalid choice: 'yaml'"),
        ([*flags, "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (
            [*flags, "--collector.nvme.replay-dir=/nonexistent"],
            "--collector.nvme.replay-dir: /nonexistent is not a directory",
        ),
        (
            [*flags, "--collector.bmc.replay=/nonexistent.json"],
            "--collector.bmc.replay: /nonexistent.json is not a file",
        ),
    ):
        result = d.run_cli("check", *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert complaint in result.stderr
        assert result.stdout == ""


def test_unreadable_host_file_is_an_error_verdict(tmp_path: Path) -> None:
    build(tmp_path, variant("seed-spec-tuned", cpus=8))
    member_state = tmp_path / "sys/devices/virtual/block/md0/md/dev-nvme3n1/state"
    member_state.unlink()
    member_state.mkdir()  # EISDIR
    shutil.rmtree(tmp_path / "proc/sys/vm")
    (tmp_path / "proc/sys/vm/swappiness").mkdir(parents=True)  # EISDIR
    status, out, err = check(tmp_path, "--format=json")
    by_setting = {c["setting"]: c for c in json.loads(out)["checks"]}
    assert status == 1
    assert by_setting["md:md0"]["verdict"] == "error"
    assert "dev-nvme3n1/state" in by_setting["md:md0"]["actual"]
    assert by_setting["vm.swappiness"]["verdict"] == "error"
    assert "swappiness" in err  # the reason, once, on stderr


def test_real_captures(real_captures: dict[str, Path]) -> None:
    """A VM is not the server the profile describes: it fails, cleanly, with no errors."""
    for name, root in real_captures.items():
        status, out, err = check(root, "--format=json")
        assert status == 1, name
        by_setting = {c["setting"]: c for c in json.loads(out)["checks"]}
        assert by_setting["ecc_reporting"]["verdict"] == "fail", name
        assert by_setting["deep_cstates"]["verdict"] == "pass", name
        assert by_setting["cpu_throttling"]["verdict"] == "skip", name
        assert not [s for s, c in by_setting.items() if c["verdict"] == "error"], name
        assert err == "", name
