"""cpufreq collector: per-package frequency, governors, turbo, and what a VM lacks."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from fixtures import cpufreq as fx
from fixtures.spec import SEED_SPEC, cpus
from nodeslo import readers
from nodeslo.collectors.base import CollectorContext, CollectorSet
from nodeslo.collectors.cpufreq import CpufreqCollector
from nodeslo.paths import Roots
from support.areas import partial_tree
from support.exposition import names, value
from support.syscalls import CountingOs

CPU = "sys/devices/system/cpu"


def scrape_with(collector: CpufreqCollector) -> str:
    registry = CollectorRegistry()
    registry.register(CollectorSet([collector], collector.ctx.errors))
    return generate_latest(registry).decode()


def make(roots: Roots) -> CpufreqCollector:
    return CpufreqCollector(CollectorContext(roots=roots))


def write(root: Path, rel: str, content: str | int) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{content}\n")


def shared_policy_tree(root: Path) -> Roots:
    """acpi-cpufreq style: 4 CPUs, 2 packages, one policy per package (CPUs 0,1 / 2,3)."""
    write(root, f"{CPU}/online", "0-3")
    for cpu in range(4):
        write(root, f"{CPU}/cpu{cpu}/topology/physical_package_id", cpu // 2)
        write(root, f"{CPU}/cpu{cpu}/topology/core_id", cpu % 2)
        policy = root / f"{CPU}/cpufreq/policy{cpu // 2 * 2}"
        link = root / f"{CPU}/cpu{cpu}/cpufreq"
        link.symlink_to(f"../cpufreq/{policy.name}")
    for number, (khz, governor) in {
        0: (2_000_000, "ondemand"),
        2: (3_000_000, "performance"),
    }.items():
        policy = f"{CPU}/cpufreq/policy{number}"
        write(root, f"{policy}/scaling_cur_freq", khz)
        write(root, f"{policy}/scaling_governor", governor)
        write(root, f"{policy}/cpuinfo_max_freq", 3_400_000 + number)
    write(root, f"{CPU}/cpufreq/boost", 0)
    return Roots(sysfs=str(root / "sys"))


def test_seed_spec_per_package(tmp_path: Path) -> None:
    text = scrape_with(make(partial_tree(tmp_path, "seed-spec", fx.write)))
    for package in (0, 1):
        khz = [fx.cur_khz(SEED_SPEC, c) for c in cpus(SEED_SPEC) if c.package == package]
        labels = {"package": str(package)}
        assert value(text, "nodeslo_cpu_frequency_average_hertz", **labels) == pytest.approx(
            sum(khz) / len(khz) * 1000
        )
        assert value(text, "nodeslo_cpu_frequency_min_hertz", **labels) == min(khz) * 1000
        assert value(text, "nodeslo_cpu_frequency_max_hertz", **labels) == 3.9e9
    assert value(text, "nodeslo_cpu_governor_cpus", governor="performance") == 256
    assert value(text, "nodeslo_cpu_turbo_enabled") == 1


def test_amd_boost(tmp_path: Path) -> None:
    text = scrape_with(make(partial_tree(tmp_path, "seed-spec-amd", fx.write)))
    assert value(text, "nodeslo_cpu_turbo_enabled") == 1
    assert value(text, "nodeslo_cpu_frequency_max_hertz", package="1") == 3.75e9


def test_throttled_cores_pull_the_minimum_down(tmp_path: Path) -> None:
    text = scrape_with(make(partial_tree(tmp_path, "thermal-throttling", fx.write)))
    assert value(text, "nodeslo_cpu_frequency_min_hertz", package="0") == 2.2e9


def test_shared_policies_count_each_cpu(tmp_path: Path) -> None:
    text = scrape_with(make(shared_policy_tree(tmp_path)))
    assert value(text, "nodeslo_cpu_frequency_average_hertz", package="0") == 2e9
    assert value(text, "nodeslo_cpu_frequency_min_hertz", package="1") == 3e9
    assert value(text, "nodeslo_cpu_frequency_max_hertz", package="1") == 3_400_002_000
    assert value(text, "nodeslo_cpu_governor_cpus", governor="ondemand") == 2
    assert value(text, "nodeslo_cpu_governor_cpus", governor="performance") == 2
    assert value(text, "nodeslo_cpu_turbo_enabled") == 0


def test_turbo_switched_off_rereads_the_hardware_maximum(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """intel_pstate lowers cpuinfo_max_freq when no_turbo is set; otherwise the maximum
    is static and not read again."""
    roots = shared_policy_tree(tmp_path)
    write(tmp_path, f"{CPU}/intel_pstate/no_turbo", 0)
    collector = make(roots)
    scrape_with(collector)
    counting = CountingOs()
    monkeypatch.setattr(readers, "os", counting)
    scrape_with(collector)
    assert counting.opened["cpuinfo_max_freq"] == 0
    assert counting.opened["scaling_cur_freq"] == 2  # one per policy, not per CPU
    write(tmp_path, f"{CPU}/intel_pstate/no_turbo", 1)
    write(tmp_path, f"{CPU}/cpufreq/policy0/cpuinfo_max_freq", 2_100_000)
    text = scrape_with(collector)
    assert value(text, "nodeslo_cpu_turbo_enabled") == 0
    assert value(text, "nodeslo_cpu_frequency_max_hertz", package="0") == 2.1e9


def test_vm_without_cpufreq_exports_nothing(tmp_path: Path) -> None:
    write(tmp_path, f"{CPU}/online", "0-1")
    text = scrape_with(make(Roots(sysfs=str(tmp_path / "sys"))))
    assert names(text) == {"nodeslo_collector_success", "nodeslo_collector_duration_seconds"}
    assert value(text, "nodeslo_collector_success", collector="cpufreq") == 1


def test_bad_and_vanishing_policies(tmp_path: Path) -> None:
    """A non-numeric frequency skips its policy (logged); a policy torn down mid-scrape
    (CPU offlined, driver switched) is skipped and the plan rebuilt."""
    roots = shared_policy_tree(tmp_path)
    collector = make(roots)
    write(tmp_path, f"{CPU}/cpufreq/policy0/scaling_cur_freq", "<unknown>")
    text = scrape_with(collector)
    assert value(text, "nodeslo_collector_success", collector="cpufreq") == 1
    assert 'package="0"' not in "".join(
        line for line in text.splitlines() if "average_hertz{" in line
    )
    assert value(text, "nodeslo_cpu_frequency_average_hertz", package="1") == 3e9
    (tmp_path / f"{CPU}/cpufreq/policy2/scaling_cur_freq").unlink()
    text = scrape_with(collector)
    assert value(text, "nodeslo_collector_success", collector="cpufreq") == 1
    assert "nodeslo_cpu_frequency_average_hertz" not in names(text)
    assert value(text, "nodeslo_cpu_frequency_max_hertz", package="1") == 3_400_002_000
