"""cpuidle collector and the read_idle_states API: fixtures, aggregation, bad input."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from fixtures import cpuidle as fx
from fixtures.spec import SEED_SPEC, cpus
from nodeslo.collectors.base import CollectorContext, CollectorSet
from nodeslo.collectors.cpuidle import (
    CpuidleCollector,
    IdleDriver,
    read_idle_driver,
    read_idle_states,
    state_labels,
)
from nodeslo.paths import Roots
from nodeslo.readers import MalformedValue, ReadError
from support.exposition import samples, value

CPU = "sys/devices/system/cpu"


def write(root: Path, rel: str, content: str | int) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{content}\n")


def small_tree(root: Path, ncpus: int = 2, **overrides: str | int) -> Roots:
    """Two CPUs with POLL/C1/C6; `overrides` maps 'cpuN/stateK/file' to content."""
    write(root, f"{CPU}/online", f"0-{ncpus - 1}")
    write(root, f"{CPU}/cpuidle/current_driver", "intel_idle")
    write(root, f"{CPU}/cpuidle/current_governor", "menu")
    for cpu in range(ncpus):
        write(root, f"{CPU}/cpu{cpu}/topology/physical_package_id", 0)
        write(root, f"{CPU}/cpu{cpu}/topology/core_id", cpu)
        for k, (name, latency, residency) in enumerate(
            [("POLL", 0, 0), ("C1", 1, 1), ("C6", 290, 800)]
        ):
            state = f"{CPU}/cpu{cpu}/cpuidle/state{k}"
            files: dict[str, str | int] = {
                "name": name,
                "desc": f"desc {name}",
                "latency": latency,
                "residency": residency,
                "usage": 100 * (k + 1) + cpu,
                "time": 1_000_000 * (k + 1),
                "above": k,
                "below": 2 * k,
                "disable": 0,
            }
            for file, content in files.items():
                write(root, f"{state}/{file}", content)
    for rel, content in overrides.items():
        write(root, f"{CPU}/{rel}", content)
    return Roots(sysfs=str(root / "sys"))


def scrape_with(collector: CpuidleCollector) -> str:
    registry = CollectorRegistry()
    registry.register(CollectorSet([collector], collector.ctx.errors))
    return generate_latest(registry).decode()


def make(roots: Roots, per_cpu: bool = False) -> CpuidleCollector:
    options = argparse.Namespace(cpuidle_per_cpu=per_cpu)
    return CpuidleCollector(CollectorContext(roots=roots, options=options))


def test_state_labels_fall_back_to_index_on_collision() -> None:
    assert state_labels([(0, "POLL"), (1, "C1"), (2, "C1"), (3, "")]) == [
        "POLL",
        "state1",
        "state2",
        "state3",
    ]


def test_read_idle_states_api(tmp_path: Path) -> None:
    roots = small_tree(tmp_path, **{"cpu1/cpuidle/state2/disable": 1})
    states = read_idle_states(roots)
    assert sorted(states) == [0, 1]
    c6 = states[1][2]
    assert (c6.cpu, c6.index, c6.name, c6.label, c6.desc) == (1, 2, "C6", "C6", "desc C6")
    assert c6.exit_latency_seconds == 290e-6
    assert c6.target_residency_seconds == 0.0008
    assert c6.disabled is True
    assert states[0][2].disabled is False
    assert read_idle_driver(roots) == IdleDriver("intel_idle", "menu")


def test_read_idle_states_reports_bad_values(tmp_path: Path) -> None:
    """Unreadable latency is None (unknown, not 0) and the error is handed back."""
    roots = small_tree(tmp_path, **{"cpu0/cpuidle/state2/latency": "n/a"})
    errors: list[ReadError] = []
    states = read_idle_states(roots, errors=errors)
    assert states[0][2].exit_latency_seconds is None
    assert states[1][2].exit_latency_seconds == 290e-6
    assert len(errors) == 1 and isinstance(errors[0], MalformedValue)
    assert "cpu0/cpuidle/state2/latency" in str(errors[0])


def test_seed_spec_aggregates_per_state(seed_tree: Path) -> None:
    text = scrape_with(make(Roots.under(str(seed_tree))))
    assert value(text, "nodeslo_cpuidle_cpus") == 256
    assert value(text, "nodeslo_cpuidle_driver_info", driver="intel_idle", governor="menu") == 1
    c6 = fx.INTEL_IDLE[3]
    want_time = sum(fx.counters(SEED_SPEC, cpu, c6).time_us for cpu in cpus(SEED_SPEC))
    assert value(text, "nodeslo_cpuidle_residency_seconds_total", state="C6") == pytest.approx(
        want_time / 1e6
    )
    assert value(text, "nodeslo_cpuidle_exit_latency_seconds", state="C6") == 290e-6
    assert value(text, "nodeslo_cpuidle_target_residency_seconds", state="C6") == 0.0008
    assert value(text, "nodeslo_cpuidle_enabled_cpus", state="C6") == 256
    # 4 states: bounded cardinality, nothing per CPU by default.
    found = samples(text)
    assert len([k for k in found if k[0] == "nodeslo_cpuidle_residency_seconds_total"]) == 4
    assert not any("cpu" in dict(labels) for _, labels in found)
