"""tuning collector and the profile's tuning section: drift detection, bad input."""

from __future__ import annotations

import logging
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from fixtures.make_fixtures import build, variant
from nodeslo.collectors.base import CollectorContext, CollectorSet
from nodeslo.collectors.cpuidle import IdleState
from nodeslo.collectors.tuning import (
    TuningCollector,
    TuningReader,
    evaluate_cpu_list,
    evaluate_cstates,
    evaluate_governor,
    evaluate_sysctl,
    evaluate_thp,
    evaluate_turbo,
    selected_mode,
)
from nodeslo.paths import Roots
from nodeslo.profile import Profile, ProfileError, Tuning, load_profile
from nodeslo.sysctl import normalize_value, sysctl_relpath
from support.exposition import samples, value

CPU = "sys/devices/system/cpu"


def state(cpu: int, index: int, name: str, latency_us: float | None, disabled: bool | None):  # type: ignore[no-untyped-def]
    latency = None if latency_us is None else latency_us / 1e6
    return IdleState(cpu, index, name, name, "", latency, latency, disabled)


# --- the profile's tuning section -------------------------------------------------------


def write_profile(tmp_path: Path, body: str) -> str:
    path = tmp_path / "site.yaml"
    path.write_text("extends: process-management\nprofile: site\n" + textwrap.dedent(body))
    return str(path)


def test_shipped_tuning_section() -> None:
    tuning = load_profile().tuning
    assert tuning.max_cstate_exit_latency_seconds == pytest.approx(10e-6)
    assert (tuning.governor, tuning.turbo, tuning.transparent_hugepage) == (
        "performance",
        True,
        "never",
    )
    assert tuning.isolated_cpus is None and tuning.nohz_full is None
    assert dict(tuning.sysctl) == {
        "kernel.numa_balancing": "0",
        "kernel.timer_migration": "0",
        "vm.swappiness": "10",
    }


def test_site_tuning_overrides(tmp_path: Path) -> None:
    path = write_profile(
        tmp_path,
        """
        tuning:
          isolated_cpus: 2-63, 66-127
          nohz_full: "2-63,66-127"
          governor: null
          sysctl:
            net.core.busy_poll: 50
            net.ipv4.tcp_rmem: "4096 131072 6291456"
            kernel.sched_autogroup_enabled: false
        """,
    )
    tuning = load_profile(path).tuning
    assert tuning.isolated_cpus == "2-63,66-127" and tuning.nohz_full == "2-63,66-127"
    assert tuning.governor is None
    sysctls = dict(tuning.sysctl)
    assert sysctls["net.core.busy_poll"] == "50"
    assert sysctls["kernel.sched_autogroup_enabled"] == "0"
    assert sysctls["vm.swappiness"] == "10"  # inherited


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ("tuning:\n  governer: performance\n", r"site.yaml:4: tuning.governer: unknown key"),
        ("tuning:\n  governor: turbo\n", r"site.yaml:4: tuning.governor: must be one of"),
        ("tuning:\n  turbo: yes please\n", r"site.yaml:4: tuning.turbo: must be true or false"),
        (
            "tuning:\n  transparent_hugepage: sometimes\n",
            r"site.yaml:4: tuning.transparent_hugepage: must be one of always, madvise, never",
        ),
        (
            "tuning:\n  max_cstate_exit_latency: soon\n",
            r"site.yaml:4: tuning.max_cstate_exit_latency: not a duration",
        ),
        ("tuning:\n  isolated_cpus: 5-2\n", r"site.yaml:4: tuning.isolated_cpus: descending"),
        ("tuning:\n  nohz_full: all\n", r"site.yaml:4: tuning.nohz_full: not a CPU list"),
        (
            "tuning:\n  sysctl:\n    ../../etc/shadow: 1\n",
            r"site.yaml:5: tuning.sysctl.../../etc/shadow: not a sysctl name",
        ),
        (
            "tuning:\n  sysctl:\n    swappiness: 10\n",
            r"site.yaml:5: tuning.sysctl.swappiness: not a sysctl name",
        ),
        (
            "tuning:\n  sysctl:\n    vm.swappiness: [10]\n",
            r"site.yaml:5: tuning.sysctl.vm.swappiness: must be a scalar",
        ),
        ("tuning:\n  sysctl: 10\n", r"site.yaml:4: tuning.sysctl: must be a mapping"),
    ],
)
def test_bad_tuning_names_file_key_and_line(tmp_path: Path, body: str, where: str) -> None:
    with pytest.raises(ProfileError, match=where):
        load_profile(write_profile(tmp_path, body))


def test_sysctl_names_become_paths() -> None:
    assert sysctl_relpath("vm.swappiness") == "vm/swappiness"
    # A component with a dot of its own is written with a slash, as sysctl(8) does.
    assert sysctl_relpath("net.ipv4.conf.eth0/100.rp_filter") == "net/ipv4/conf/eth0.100/rp_filter"
    # "kernel.//.x" would be kernel/../x: no component may climb out of /proc/sys.
    for bad in ("vm", "vm..swappiness", "kernel.//.x", "vm.swap piness", ".vm.x", "vm.x."):
        with pytest.raises(ValueError, match="not a sysctl name"):
            sysctl_relpath(bad)
    assert normalize_value("4096\t131072\t6291456\n") == "4096 131072 6291456"


# --- pure evaluations -------------------------------------------------------------------


def test_deep_cstates_enabled_anywhere_do_not_comply() -> None:
    states = {
        0: [state(0, 1, "C1", 1, False), state(0, 3, "C6", 290, True)],
        1: [state(1, 1, "C1", 1, False), state(1, 3, "C6", 290, False)],
        2: [state(2, 1, "C1", 1, False), state(2, 2, "C1E", 11, False)],
    }
    result = evaluate_cstates(states, 10e-6, "intel_idle")
    assert result.compliant is False
    assert result.expected == "disabled above 10µs"
    # Shallowest first; C1 (1 µs) is allowed and not mentioned.
    assert result.actual == "C1E (11µs) enabled on 1 CPUs, C6 (290µs) enabled on 1 CPUs"


def test_deep_cstates_all_disabled_and_exactly_at_the_limit() -> None:
    states = {0: [state(0, 2, "C1E", 10, False), state(0, 3, "C6", 290, True)]}
    result = evaluate_cstates(states, 10e-6, "intel_idle")
    assert (result.actual, result.compliant) == ("all disabled", True)


def test_no_idle_states_complies() -> None:
    result = evaluate_cstates({}, 10e-6, "none")
    assert (result.actual, result.compliant) == ("no idle states (cpuidle driver none)", True)
    assert evaluate_cstates({}, 10e-6, None).actual == "no idle states (no cpuidle)"


def test_unreadable_deep_state_is_unknown_unless_another_fails() -> None:
    unknown = {0: [state(0, 3, "C6", 290, None)]}
    assert evaluate_cstates(unknown, 10e-6, "intel_idle").compliant is None
    unknown[1] = [state(1, 3, "C6", 290, False)]
    assert evaluate_cstates(unknown, 10e-6, "intel_idle").compliant is False
    no_latency = {0: [state(0, 3, "C6", None, True)]}
    assert evaluate_cstates(no_latency, 10e-6, "intel_idle").compliant is None


def test_governor() -> None:
    assert evaluate_governor({"performance": 256}, "performance").compliant is True
    mixed = evaluate_governor({"powersave": 6, "performance": 250}, "performance")
    assert mixed.compliant is False
    assert mixed.actual == "performance on 250 CPUs, powersave on 6 CPUs"
    missing = evaluate_governor(None, "performance")
    assert (missing.actual, missing.compliant) == ("no cpufreq driver", False)


def test_turbo() -> None:
    assert evaluate_turbo(True, True).compliant is True
    off = evaluate_turbo(False, True)
    assert (off.expected, off.actual, off.compliant) == ("on", "off", False)
    assert evaluate_turbo(None, True).actual == "no turbo control"


def test_transparent_hugepage() -> None:
    assert selected_mode("always [madvise] never") == "madvise"
    with pytest.raises(ValueError, match="no \\[selected\\] mode"):
        selected_mode("always madvise never")
    assert evaluate_thp("never", "never").compliant is True
    assert evaluate_thp(None, "never").compliant is True  # not built in: cannot be on
    assert evaluate_thp(None, "madvise").compliant is False


def test_cpu_lists() -> None:
    assert evaluate_cpu_list("nohz_full", "(null)", "").compliant is True
    assert evaluate_cpu_list("nohz_full", None, "").actual == "none"
    match = evaluate_cpu_list("isolated_cpus", "2-63,66-127\n", "2-63,66-127")
    assert match.compliant is True
    drift = evaluate_cpu_list("isolated_cpus", "2-63", "2-63,66-127")
    assert (drift.expected, drift.actual, drift.compliant) == ("2-63,66-127", "2-63", False)


def test_sysctl_values() -> None:
    assert evaluate_sysctl("net.ipv4.tcp_rmem", "4096\t131072\t6291456", "4096 131072 6291456")
    assert evaluate_sysctl("vm.swappiness", "60", "10").compliant is False
    absent = evaluate_sysctl("kernel.numa_balancing", None, "0")
    assert (absent.actual, absent.compliant) == ("absent", False)


# --- the collector on small trees -------------------------------------------------------


def write(root: Path, files: dict[str, str | int]) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{content}\n")


class Host:
    """A two-CPU host and a collector whose profile a test can swap, as SIGHUP does."""

    def __init__(self, root: Path, tuning: Tuning) -> None:
        write(root, {f"{CPU}/online": "0-1"})
        self.root = root
        self.profile: Profile = replace(load_profile(), tuning=tuning)
        self.ctx = CollectorContext(roots=Roots.under(str(root)), profile=lambda: self.profile)
        self.registry = CollectorRegistry()
        self.registry.register(CollectorSet([TuningCollector(self.ctx)], self.ctx.errors))

    def scrape(self) -> str:
        return generate_latest(self.registry).decode()


def info(text: str) -> dict[str, tuple[str, str]]:
    return {
        dict(ls)["setting"]: (dict(ls)["expected"], dict(ls)["actual"])
        for (name, ls) in samples(text)
        if name == "nodeslo_tuning_info"
    }


def test_settings_the_profile_leaves_out_are_not_exported(tmp_path: Path) -> None:
    text = Host(tmp_path, Tuning()).scrape()
    assert value(text, "nodeslo_collector_success", collector="tuning") == 1
    assert "nodeslo_tuning_compliant{" not in text


def test_sysctl_missing_on_this_kernel_does_not_comply(tmp_path: Path) -> None:
    host = Host(tmp_path, Tuning(sysctl=(("kernel.numa_balancing", "0"), ("vm.swappiness", "10"))))
    write(tmp_path, {"proc/sys/vm/swappiness": 10})  # CONFIG_NUMA_BALANCING=n
    text = host.scrape()
    assert value(text, "nodeslo_collector_success", collector="tuning") == 1
    assert value(text, "nodeslo_tuning_compliant", setting="kernel.numa_balancing") == 0
    assert info(text)["kernel.numa_balancing"] == ("0", "absent")
    assert value(text, "nodeslo_tuning_compliant", setting="vm.swappiness") == 1


def test_unreadable_setting_is_left_out_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    host = Host(tmp_path, Tuning(sysctl=(("vm.swappiness", "10"),), transparent_hugepage="never"))
    (tmp_path / "proc/sys/vm/swappiness").mkdir(parents=True)  # EISDIR: unreadable
    write(tmp_path, {"sys/kernel/mm/transparent_hugepage/enabled": "always madvise never"})
    with caplog.at_level(logging.WARNING):
        text = host.scrape()
        host.scrape()
    assert value(text, "nodeslo_collector_success", collector="tuning") == 1
    assert "vm.swappiness" not in text
    assert "transparent_hugepage" not in text  # no [selected] mode: malformed
    messages = [r.getMessage() for r in caplog.records]
    assert sum("swappiness" in m for m in messages) == 1
    assert sum("no [selected] mode" in m for m in messages) == 1


def test_cpu_lists_and_kernels_without_nohz_full(tmp_path: Path) -> None:
    host = Host(tmp_path, Tuning(isolated_cpus="1", nohz_full=""))
    write(tmp_path, {f"{CPU}/isolated": ""})
    text = host.scrape()
    assert info(text)["isolated_cpus"] == ("1", "none")
    assert value(text, "nodeslo_tuning_compliant", setting="isolated_cpus") == 0
    assert value(text, "nodeslo_tuning_compliant", setting="nohz_full") == 1  # no file: none
    write(tmp_path, {f"{CPU}/isolated": "1", f"{CPU}/nohz_full": "1"})
    text = host.scrape()
    assert value(text, "nodeslo_tuning_compliant", setting="isolated_cpus") == 1
    assert value(text, "nodeslo_tuning_compliant", setting="nohz_full") == 0
    assert info(text)["nohz_full"] == ("none", "1")


def test_governor_per_shared_policy_and_turbo_from_boost(tmp_path: Path) -> None:
    """acpi-cpufreq may put several CPUs under one policy; AMD says turbo in cpufreq/boost."""
    host = Host(tmp_path, Tuning(governor="performance", turbo=True))
    write(
        tmp_path,
        {f"{CPU}/cpufreq/policy0/scaling_governor": "schedutil", f"{CPU}/cpufreq/boost": 0},
    )
    for cpu in (0, 1):
        (tmp_path / CPU / f"cpu{cpu}").mkdir(parents=True, exist_ok=True)
        (tmp_path / CPU / f"cpu{cpu}" / "cpufreq").symlink_to("../cpufreq/policy0")
    text = host.scrape()
    assert info(text)["governor"] == ("performance", "schedutil")
    assert info(text)["turbo"] == ("on", "off")
    write(tmp_path, {f"{CPU}/cpufreq/policy0/scaling_governor": "performance"})
    write(tmp_path, {f"{CPU}/cpufreq/boost": 1})
    text = host.scrape()
    assert value(text, "nodeslo_tuning_compliant", setting="governor") == 1
    assert value(text, "nodeslo_tuning_compliant", setting="turbo") == 1


def test_a_reloaded_profile_changes_the_expectations_at_once(tmp_path: Path) -> None:
    host = Host(tmp_path, Tuning(sysctl=(("vm.swappiness", "10"),)))
    write(tmp_path, {"proc/sys/vm/swappiness": 60})
    assert value(host.scrape(), "nodeslo_tuning_compliant", setting="vm.swappiness") == 0
    host.profile = replace(host.profile, tuning=Tuning(sysctl=(("vm.swappiness", "60"),)))
    assert value(host.scrape(), "nodeslo_tuning_compliant", setting="vm.swappiness") == 1


def idle_state(root: Path, where: str, name: str, latency: int, disable: int) -> None:
    base = f"{CPU}/{where}"
    write(root, {f"{base}/name": name, f"{base}/desc": name, f"{base}/latency": latency})
    write(root, {f"{base}/residency": latency * 3, f"{base}/disable": disable})


def test_deep_cstate_disable_flags_are_read_every_scrape(tmp_path: Path) -> None:
    host = Host(tmp_path, Tuning(max_cstate_exit_latency_seconds=10e-6))
    write(tmp_path, {f"{CPU}/cpuidle/current_driver": "intel_idle"})
    for cpu in (0, 1):
        idle_state(tmp_path, f"cpu{cpu}/cpuidle/state0", "POLL", 0, 0)
        idle_state(tmp_path, f"cpu{cpu}/cpuidle/state1", "C1", 2, 0)
        idle_state(tmp_path, f"cpu{cpu}/cpuidle/state2", "C6", 133, 1)
    assert info(host.scrape())["deep_cstates"] == ("disabled above 10µs", "all disabled")
    idle_state(tmp_path, "cpu1/cpuidle/state2", "C6", 133, 0)  # someone re-enabled C6 on cpu1
    text = host.scrape()
    assert info(text)["deep_cstates"] == ("disabled above 10µs", "C6 (133µs) enabled on 1 CPUs")
    assert value(text, "nodeslo_tuning_compliant", setting="deep_cstates") == 0
    # A different limit (profile reload) re-plans which states are deep.
    host.profile = replace(host.profile, tuning=Tuning(max_cstate_exit_latency_seconds=200e-6))
    assert info(host.scrape())["deep_cstates"] == ("disabled above 200µs", "all disabled")


@pytest.mark.parametrize(
    ("name", "noncompliant"),
    [
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
        ("seed-spec-tuned", set()),
        ("tuning-drift", {"transparent_hugepage", "kernel.numa_balancing", "vm.swappiness"}),
    ],
)
def test_fixture_variants(tmp_path: Path, name: str, noncompliant: set[str]) -> None:
    build(tmp_path, variant(name, cpus=8))
    results = TuningReader(Roots.under(str(tmp_path))).evaluate(
        load_profile().tuning, lambda key, exc: pytest.fail(f"{key}: {exc}")
    )
    assert {r.setting for r in results if not r.compliant} == noncompliant
    assert all(r.compliant is not None for r in results)


def test_real_captures(real_captures: dict[str, Path]) -> None:
    """VMs: no cpuidle states, no cpufreq, Debian defaults; every setting is readable."""
    for name, root in real_captures.items():
        results = TuningReader(Roots.under(str(root))).evaluate(
            load_profile().tuning, lambda key, exc, host=name: pytest.fail(f"{host}: {key}: {exc}")
        )
        by_setting = {r.setting: r for r in results}
        assert by_setting["deep_cstates"].compliant is True, name
        assert by_setting["governor"].actual == "no cpufreq driver", name
        assert by_setting["transparent_hugepage"].actual == "madvise", name
        assert by_setting["vm.swappiness"].actual == "60", name


# --- shared reads: what the cpuidle and cpufreq collectors read is not read again -------


def test_a_scrape_reads_each_disable_governor_and_turbo_file_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With cpuidle and cpufreq on, the tuning collector gets their `disable`,
    `scaling_governor` and turbo reads of the same scrape, and reports what reading the
    files itself reports."""
    from nodeslo import readers
    from nodeslo.collectors.cpufreq import CpufreqCollector
    from nodeslo.collectors.cpuidle import CpuidleCollector

    build(tmp_path, variant("deep-cstates-enabled", 8))
    ctx = CollectorContext(roots=Roots(sysfs=str(tmp_path / "sys"), procfs=str(tmp_path / "proc")))
    together = CollectorSet(
        [CpufreqCollector(ctx), CpuidleCollector(ctx), TuningCollector(ctx)], ctx.errors
    )
    alone = CollectorSet([TuningCollector(ctx)], ctx.errors)
    reads: dict[str, int] = {}
    real, real_held = readers.read_small, readers.HeldFiles.read

    def counting(path: str) -> bytes | None:
        reads[path] = reads.get(path, 0) + 1
        return real(path)

    def counting_held(self: readers.HeldFiles, path: str) -> bytes | None:
        reads[path] = reads.get(path, 0) + 1
        return real_held(self, path)

    # Every read of a file: opened per read, or through a descriptor held open.
    monkeypatch.setattr(readers, "read_small", counting)
    monkeypatch.setattr(readers.HeldFiles, "read", counting_held)

    def tuning_samples(cset: CollectorSet) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        registry = CollectorRegistry()
        registry.register(cset)
        text = generate_latest(registry).decode()
        return {k: v for k, v in samples(text).items() if k[0].startswith("nodeslo_tuning_")}

    try:
        tuning_samples(together)  # plans built on the first scrape
        reads.clear()
        shared = tuning_samples(together)
        shared_files = [
            p for p in reads if p.endswith(("/disable", "/scaling_governor", "no_turbo"))
        ]
        assert len([p for p in shared_files if p.endswith("/disable")]) == 8 * 4
        assert len([p for p in shared_files if p.endswith("/scaling_governor")]) == 8
        assert {p: reads[p] for p in shared_files if reads[p] != 1} == {}  # not twice
        tuning_samples(alone)  # its own plan built on its first scrape
        reads.clear()
        own = tuning_samples(alone)
        assert value_of(own, "deep_cstates") == 0  # C6 enabled everywhere: drift
        assert shared == own
        assert {reads[p] for p in reads if p.endswith("/disable")} == {1}
    finally:
        together.close()
        alone.close()


def value_of(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], setting: str) -> float:
    return found[("nodeslo_tuning_compliant", (("setting", setting),))]
