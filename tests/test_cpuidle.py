"""cpuidle collector and the read_idle_states API: fixtures, aggregation, bad input."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from fixtures import cpuidle as fx
from fixtures.spec import SEED_SPEC, cpus
from nodeslo import readers
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
from support.areas import partial_tree
from support.exposition import samples, value
from support.syscalls import CountingOs

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


def make(roots: Roots, per_cpu: bool = False, mispredictions: bool = True) -> CpuidleCollector:
    options = argparse.Namespace(cpuidle_per_cpu=per_cpu, cpuidle_mispredictions=mispredictions)
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


def test_seed_spec_aggregates_per_state(tmp_path: Path) -> None:
    text = scrape_with(make(partial_tree(tmp_path, "seed-spec", fx.write)))
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


def test_tuned_variant_has_deep_states_disabled_everywhere(tmp_path: Path) -> None:
    roots = partial_tree(tmp_path, "seed-spec-tuned", fx.write)
    text = scrape_with(make(roots))
    assert value(text, "nodeslo_cpuidle_enabled_cpus", state="C6") == 0
    assert value(text, "nodeslo_cpuidle_enabled_cpus", state="C1E") == 256
    assert value(text, "nodeslo_cpuidle_residency_seconds_total", state="C6") == 0
    states = read_idle_states(roots)
    deep = [s for per_cpu in states.values() for s in per_cpu if s.exit_latency_seconds > 10e-6]
    assert len(deep) == 256 and all(s.disabled for s in deep)


def test_per_cpu_flag_adds_a_cpu_label(tmp_path: Path) -> None:
    text = scrape_with(make(small_tree(tmp_path), per_cpu=True))
    assert value(text, "nodeslo_cpuidle_entries_total", state="C1", cpu="1") == 201
    assert value(text, "nodeslo_cpuidle_residency_seconds_total", state="C6", cpu="0") == 3.0
    assert value(text, "nodeslo_cpuidle_exit_latency_seconds", state="C6", cpu="1") == 290e-6
    assert (
        value(text, "nodeslo_cpuidle_mispredictions_total", state="C6", direction="below", cpu="0")
        == 4
    )
    assert value(text, "nodeslo_cpuidle_enabled_cpus", state="C6", cpu="0") == 1
    assert value(text, "nodeslo_cpuidle_cpus") == 2


def test_aggregation_sums_over_cpus(tmp_path: Path) -> None:
    text = scrape_with(make(small_tree(tmp_path, **{"cpu0/cpuidle/state2/disable": 1})))
    assert value(text, "nodeslo_cpuidle_entries_total", state="C6") == 301 + 300
    assert value(text, "nodeslo_cpuidle_residency_seconds_total", state="C6") == 6.0
    assert value(text, "nodeslo_cpuidle_enabled_cpus", state="C6") == 1
    assert value(text, "nodeslo_cpuidle_mispredictions_total", state="C1", direction="above") == 2


def test_old_kernel_without_disable_above_below(tmp_path: Path) -> None:
    """Before 3.10 there is no `disable` (nothing can disable a state: enabled); before
    5.1 no above/below: no misprediction series, everything else as usual."""
    roots = small_tree(tmp_path)
    for path in (tmp_path / "sys").rglob("state*/*"):
        if path.name in ("disable", "above", "below"):
            path.unlink()
    collector = make(roots)
    for _ in range(2):  # the second scrape runs on the cached plan
        text = scrape_with(collector)
        assert value(text, "nodeslo_cpuidle_enabled_cpus", state="C6") == 2
        assert value(text, "nodeslo_cpuidle_entries_total", state="C6") == 601
        assert "nodeslo_cpuidle_mispredictions_total" not in {n for n, _ in samples(text)}
        assert value(text, "nodeslo_collector_success", collector="cpuidle") == 1
    assert read_idle_states(roots)[0][2].disabled is False


def test_state_present_on_some_cpus_only(tmp_path: Path) -> None:
    """An ACPI _CST that differs per CPU: C6 only on cpu0. Counts cover the CPUs that
    have the state; cpuidle_cpus counts every CPU with idle states."""
    roots = small_tree(tmp_path)
    _remove(tmp_path / "sys/devices/system/cpu/cpu1/cpuidle/state2")
    text = scrape_with(make(roots))
    assert value(text, "nodeslo_cpuidle_enabled_cpus", state="C6") == 1
    assert value(text, "nodeslo_cpuidle_entries_total", state="C6") == 300
    assert value(text, "nodeslo_cpuidle_enabled_cpus", state="C1") == 2
    assert value(text, "nodeslo_cpuidle_cpus") == 2


def test_cpu_unplugged_mid_scrape_keeps_counters_monotonic(tmp_path: Path) -> None:
    """cpu1's cpuidle directory vanishes while cpu/online still lists it (the scrape
    raced the unplug): its states are skipped, its last values keep counting in the
    sums, the plan is rebuilt, and nothing fails."""
    roots = small_tree(tmp_path)
    collector = make(roots)
    before = scrape_with(collector)
    _remove(tmp_path / "sys/devices/system/cpu/cpu1/cpuidle")
    during = scrape_with(collector)
    assert value(during, "nodeslo_collector_success", collector="cpuidle") == 1
    for name in ("nodeslo_cpuidle_entries_total", "nodeslo_cpuidle_residency_seconds_total"):
        assert value(during, name, state="C6") == value(before, name, state="C6")
    # Next scrape: rebuilt on cpu0 alone; cpu1 goes on counting as retired.
    write(tmp_path, f"{CPU}/online", "0")
    write(tmp_path, f"{CPU}/cpu0/cpuidle/state2/usage", 310)
    after = scrape_with(collector)
    assert value(after, "nodeslo_cpuidle_cpus") == 1
    assert value(after, "nodeslo_cpuidle_entries_total", state="C6") == 310 + 301
    assert value(after, "nodeslo_cpuidle_enabled_cpus", state="C6") == 1


def test_non_numeric_values_skip_only_that_value(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    roots = small_tree(
        tmp_path,
        **{
            "cpu1/cpuidle/state2/usage": "garbage",
            "cpu0/cpuidle/state1/latency": "x",
            "cpu0/cpuidle/state1/above": "-",
        },
    )
    collector = make(roots)
    text = scrape_with(collector)
    text = scrape_with(collector)
    assert value(text, "nodeslo_collector_success", collector="cpuidle") == 1
    # cpu1's C6 was never read: only cpu0 counts; the other states of cpu1 are intact.
    assert value(text, "nodeslo_cpuidle_entries_total", state="C6") == 300
    assert value(text, "nodeslo_cpuidle_entries_total", state="C1") == 200 + 201
    # cpu1's C6 residency and enablement were read: only its entries are missing.
    assert value(text, "nodeslo_cpuidle_residency_seconds_total", state="C6") == 6.0
    assert value(text, "nodeslo_cpuidle_enabled_cpus", state="C6") == 2
    # A bad `above` costs only that value: cpu0's C1 still counts everywhere else.
    assert value(text, "nodeslo_cpuidle_mispredictions_total", state="C1", direction="above") == 1
    assert value(text, "nodeslo_cpuidle_mispredictions_total", state="C1", direction="below") == 4
    assert value(text, "nodeslo_cpuidle_enabled_cpus", state="C1") == 2
    # cpu0's C1 latency is unknown: the gauge comes from cpu1 alone.
    assert value(text, "nodeslo_cpuidle_exit_latency_seconds", state="C1") == 1e-6
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert sum("cpu1/cpuidle/state2/usage" in w for w in warnings) == 1, warnings
    assert sum("cpu0/cpuidle/state1/latency" in w for w in warnings) == 1, warnings


def test_duplicate_state_names_use_the_index(tmp_path: Path) -> None:
    roots = small_tree(tmp_path, **{f"cpu{c}/cpuidle/state2/name": "C1" for c in (0, 1)})
    text = scrape_with(make(roots))
    assert value(text, "nodeslo_cpuidle_exit_latency_seconds", state="state1") == 1e-6
    assert value(text, "nodeslo_cpuidle_exit_latency_seconds", state="state2") == 290e-6


def test_no_cpuidle_driver(tmp_path: Path) -> None:
    """A VM with current_driver 'none' (as in the real captures): driver info and 0 CPUs."""
    write(tmp_path, f"{CPU}/online", "0-1")
    write(tmp_path, f"{CPU}/cpuidle/current_driver", "none")
    write(tmp_path, f"{CPU}/cpuidle/current_governor_ro", "menu")
    text = scrape_with(make(Roots(sysfs=str(tmp_path / "sys"))))
    assert value(text, "nodeslo_cpuidle_driver_info", driver="none", governor="menu") == 1
    assert value(text, "nodeslo_cpuidle_cpus") == 0
    assert "nodeslo_cpuidle_residency_seconds_total" not in {n for n, _ in samples(text)}


def test_no_cpuidle_framework_exports_nothing(tmp_path: Path) -> None:
    write(tmp_path, f"{CPU}/online", "0")
    text = scrape_with(make(Roots(sysfs=str(tmp_path / "sys"))))
    assert not {n for n, _ in samples(text)} - {
        "nodeslo_collector_success",
        "nodeslo_collector_duration_seconds",
    }
    assert value(text, "nodeslo_collector_success", collector="cpuidle") == 1


def test_scrape_reads_only_changing_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Static attributes are read once; later scrapes open 5 files per state and list
    no directory, until the device set changes."""
    roots = small_tree(tmp_path)
    collector = make(roots)
    counting = CountingOs()
    monkeypatch.setattr(readers, "os", counting)
    scrape_with(collector)
    assert counting.opened["latency"] == 6 and counting.listed == 2
    counting.reset()
    scrape_with(collector)
    assert set(counting.opened) == {
        "online",
        "current_driver",
        "current_governor",
        "usage",
        "time",
        "above",
        "below",
        "disable",
    }
    assert counting.opened["usage"] == 6 and counting.files == 3 + 6 * 5
    assert counting.listed == 0
    # A new driver is a new device set: static attributes are read again.
    write(tmp_path, f"{CPU}/cpuidle/current_driver", "acpi_idle")
    counting.reset()
    scrape_with(collector)
    assert counting.opened["latency"] == 6


def _remove(path: Path) -> None:
    for child in sorted(path.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        child.unlink() if child.is_file() else child.rmdir()
    path.rmdir()


def test_mispredictions_are_not_read_by_default(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    """Without --collector.cpuidle.mispredictions, above/below are never opened: a
    garbage value there is neither exported nor logged."""
    roots = small_tree(tmp_path, **{"cpu0/cpuidle/state1/above": "garbage"})
    options = argparse.Namespace(cpuidle_per_cpu=False)
    text = scrape_with(CpuidleCollector(CollectorContext(roots=roots, options=options)))
    assert "nodeslo_cpuidle_mispredictions_total" not in {n for n, _ in samples(text)}
    assert value(text, "nodeslo_cpuidle_entries_total", state="C6") == 601
    assert not [r for r in caplog.records if "above" in r.getMessage()]
    flagged = scrape_with(make(roots, mispredictions=True))
    assert value(flagged, "nodeslo_cpuidle_mispredictions_total", state="C1", direction="above")
