"""CPU enumeration and topology caching."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fixtures.tree import cpu_list
from nodeslo.cpus import Topology, parse_cpu_list
from nodeslo.paths import Roots
from nodeslo.readers import MalformedValue


@given(st.sets(st.integers(min_value=0, max_value=1023), max_size=64))
def test_cpu_list_round_trip(cpus: set[int]) -> None:
    assert parse_cpu_list(cpu_list(sorted(cpus))) == sorted(cpus)


@pytest.mark.parametrize("bad", ["a", "1-", "3-1", "1,,2", "-4"])
def test_bad_cpu_list(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_cpu_list(bad)


def test_seed_spec_topology(seed_tree: Path) -> None:
    topo = Topology(Roots.under(str(seed_tree)))
    cpus = topo.online()
    assert len(cpus) == 256
    assert len({c.core_key for c in cpus}) == 128
    assert {p: len(c) for p, c in topo.packages().items()} == {"0": 128, "1": 128}
    # SMT siblings share a core: cpu0 and cpu128 on Linux's enumeration.
    assert cpus[0].core_key == cpus[128].core_key


def test_topology_follows_hotplug(tmp_path: Path) -> None:
    base = tmp_path / "sys/devices/system/cpu"
    for cpu in range(4):
        (base / f"cpu{cpu}/topology").mkdir(parents=True)
        (base / f"cpu{cpu}/topology/physical_package_id").write_text("0\n")
        (base / f"cpu{cpu}/topology/core_id").write_text(f"{cpu}\n")
    (base / "online").write_text("0-3\n")
    topo = Topology(Roots(sysfs=str(tmp_path / "sys")))
    assert [c.cpu for c in topo.online()] == [0, 1, 2, 3]
    (base / "online").write_text("0-1,3\n")
    assert [c.cpu for c in topo.online()] == [0, 1, 3]


def test_malformed_online_names_the_file(tmp_path: Path) -> None:
    base = tmp_path / "sys/devices/system/cpu"
    base.mkdir(parents=True)
    (base / "online").write_text("zero\n")
    with pytest.raises(MalformedValue, match="online"):
        Topology(Roots(sysfs=str(tmp_path / "sys"))).online()


def test_vm_without_topology_files(tmp_path: Path) -> None:
    base = tmp_path / "sys/devices/system/cpu"
    (base / "cpu0").mkdir(parents=True)
    (base / "cpu1").mkdir()
    cpus = Topology(Roots(sysfs=str(tmp_path / "sys"))).online()
    assert [(c.cpu, c.package, c.core) for c in cpus] == [(0, "0", "0"), (1, "0", "1")]
