"""Inventory: facts read from the tree, each line's verdict, the collector, the profile."""

from __future__ import annotations

import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from fixtures import block, edac, memory, network, nvme, pci
from fixtures.make_fixtures import build, variant
from nodeslo.collectors.base import CollectorContext, CollectorSet
from nodeslo.collectors.inventory import InventoryCollector
from nodeslo.inventory.evaluate import InventoryResult, evaluate
from nodeslo.inventory.facts import (
    Dimm,
    Drive,
    FactReader,
    Facts,
    Nic,
    Socket,
    dimm_socket,
    parse_cache_size,
    parse_memtotal,
)
from nodeslo.paths import Roots
from nodeslo.profile import NetworkInventory, NvmeInventory, ProfileError, load_profile
from nodeslo.units import parse_bit_rate, parse_size, parse_transfer_rate
from support.areas import partial_tree
from support.exposition import samples, value

GIB = 1024**3
SPEC = load_profile().inventory


def seed_facts(**changes: object) -> Facts:
    """The seed spec as facts: every line passes."""
    facts = Facts(
        sockets=(Socket("0", 64, 128, 320 * 2**20), Socket("1", 64, 128, 320 * 2**20)),
        memory_bytes=int(1.47 * 1024**4),
        node_memory_bytes={"0": 750 * GIB, "1": 751 * GIB},
        dimms=tuple(
            Dimm(str(s), f"dimm{n}", "", 64 * GIB, str(s)) for s in (0, 1) for n in range(12)
        ),
        drives=tuple(
            Drive(f"nvme{n}", f"S{n}", "M", f"0000:{n + 0x31:02x}:00.0", int(7.68e12), 16e9, 4)
            for n in range(16)
        ),
        nics=(Nic("ens1f0np0", True, 3.125e9), Nic("ens1f1np1", True, 3.125e9)),
        rdma_active=("mlx5_0/1", "mlx5_1/1"),
    )
    return replace(facts, **changes)  # type: ignore[arg-type]


def by_item(results: list[InventoryResult]) -> dict[str, InventoryResult]:
    return {r.item: r for r in results}


# --- decoders -------------------------------------------------------------------------------


def test_decoders() -> None:
    assert parse_cache_size("32768K") == 32 * 2**20
    assert parse_cache_size("2M\n") == 2 * 2**20
    with pytest.raises(ValueError):
        parse_cache_size("lots")
    assert parse_memtotal(b"MemTotal:       16303464 kB\nMemFree: 1 kB\n") == 16303464 * 1024
    assert parse_memtotal(b"Node 1 MemTotal:  792345600 kB\n") == 792345600 * 1024
    assert parse_memtotal(b"MemFree: 1 kB\n") is None
    assert dimm_socket("Intel_10nm Socket#1 IMC#2", "") == "1"
    assert dimm_socket("F19h_M10h", "CPU_SrcID#1_MC#0_Chan#3_DIMM#0") == "1"
    assert dimm_socket("F19h_M10h", "P1-DIMMA1") is None


def test_units_of_the_inventory() -> None:
    assert parse_size("1.5TiB") == 1649267441664
    assert parse_size("3.84TB") == 3840000000000
    assert parse_bit_rate("25Gb/s") == 3.125e9
    assert parse_bit_rate("100 Gbps") == 12.5e9
    assert parse_transfer_rate("16GT/s") == 16e9
    for parse, bad in (
        (parse_size, "1.5B"),
        (parse_bit_rate, "25GB/s"),
        (parse_transfer_rate, "16"),
    ):
        with pytest.raises(ValueError):
            parse(bad)


# --- every line of the spec -------------------------------------------------------------------


def test_the_seed_spec_conforms() -> None:
    results = evaluate(SPEC, seed_facts())
    assert [r.item for r in results] == [
        "sockets",
        "cores_per_socket",
        "threads_per_socket",
        "llc_per_socket",
        "memory",
        "memory_balance",
        "dimms_per_socket",
        "dimm_size",
        "nvme_drives",
        "nvme_link",
        "network_speed",
        "rdma_ports",
    ]
    assert all(r.compliant for r in results), [r for r in results if not r.compliant]


@pytest.mark.parametrize(
    ("change", "item", "actual"),
    [
        ({"sockets": (Socket("0", 64, 128, 320 * 2**20),)}, "sockets", "1"),
        (
            {"sockets": (Socket("0", 64, 64, 320 * 2**20), Socket("1", 64, 64, 320 * 2**20))},
            "threads_per_socket",
            "64 on socket 0, 64 on socket 1",
        ),
        (
            {"sockets": (Socket("0", 64, 128, 96 * 2**20), Socket("1", 64, 128, 96 * 2**20))},
            "llc_per_socket",
            "96MiB on socket 0, 96MiB on socket 1",
        ),
        (
            {"sockets": (Socket("0", 64, 128, None), Socket("1", 64, 128, None))},
            "llc_per_socket",
            "not reported by the kernel",
        ),
        ({"memory_bytes": 1400 * GIB}, "memory", "MemTotal 1.37TiB, 1.5TiB in DIMMs"),
        ({"memory_bytes": None}, "memory", "MemTotal not reported"),
        (
            {"node_memory_bytes": {"0": 750 * GIB, "1": 686 * GIB}},
            "memory_balance",
            "node0 750GiB, node1 686GiB (8.5% apart)",
        ),
        (
            {
                "dimms": tuple(
                    Dimm(str(s), f"dimm{n}", "", 64 * GIB, str(s))
                    for s in (0, 1)
                    for n in range(12 - s)
                )
            },
            "dimms_per_socket",
            "12 on socket 0, 11 on socket 1",
        ),
        (
            {"dimms": tuple(Dimm("0", f"dimm{n}", "", 64 * GIB, None) for n in range(23))},
            "dimms_per_socket",
            "23 in total (sockets not reported)",
        ),
        (
            {
                "dimms": (
                    *(Dimm("0", f"dimm{n}", "", 64 * GIB, "0") for n in range(12)),
                    *(Dimm("1", f"dimm{n}", "", 32 * GIB, "1") for n in range(12)),
                )
            },
            "dimm_size",
            "12 x 32GiB, 12 x 64GiB",
        ),
        (
            {
                "drives": (
                    *seed_facts().drives[:7],
                    Drive("nvme7", "B", "M", "0000:b1:00.0", int(9.6e11), 16e9, 4),
                )
            },
            "nvme_drives",
            "7 (+1 smaller)",
        ),
        (
            {
                "drives": (
                    *seed_facts().drives[1:],
                    Drive("nvme0", "S0", "M", "0000:31:00.0", int(7.68e12), 16e9, 2),
                )
            },
            "nvme_link",
            "nvme0 16GT/s (Gen4) x2",
        ),
        (
            {"nics": (Nic("ens1f0np0", True, 3.125e9), Nic("ens1f1np1", True, 1.25e9))},
            "network_speed",
            "ens1f0np0 25Gb/s, ens1f1np1 10Gb/s",
        ),
        ({"rdma_active": ("mlx5_0/1",)}, "rdma_ports", "1 (mlx5_0/1)"),
    ],
)
def test_each_line_fails_on_its_own(change: dict[str, object], item: str, actual: str) -> None:
    results = by_item(evaluate(SPEC, seed_facts(**change)))
    failing = {name for name, r in results.items() if not r.compliant}
    assert failing == {item}
    assert results[item].actual == actual
    assert results[item].compliant is False


def test_a_host_without_edac_gives_the_dimm_lines_nothing_to_judge() -> None:
    results = by_item(evaluate(SPEC, seed_facts(dimms=None)))
    for item in ("dimms_per_socket", "dimm_size"):
        assert results[item].compliant is None
        assert results[item].actual == "no EDAC: DIMMs not reported"
    assert results["memory"].actual == "MemTotal 1.47TiB"  # no DIMM sum to show


def test_listed_data_plane_interfaces() -> None:
    inventory = replace(
        SPEC,
        network=NetworkInventory(("ens1f0np0", "bond0"), None, 3.125e9),
    )
    facts = seed_facts(nics=(Nic("ens1f0np0", True, 3.125e9), Nic("bond0", False, None)))
    result = by_item(evaluate(inventory, facts))["network_speed"]
    assert result.expected == "ens1f0np0, bond0 up at 25Gb/s or more"
    assert (result.actual, result.compliant) == ("ens1f0np0 25Gb/s, bond0 no carrier", False)


def test_lines_the_profile_leaves_out_are_not_judged() -> None:
    assert evaluate(load_profile().inventory.__class__(), seed_facts(sockets=())) == []
    partial = replace(
        SPEC, nvme=NvmeInventory(drives=8), network=NetworkInventory(), rdma_ports_active=None
    )
    items = {r.item for r in evaluate(partial, seed_facts())}
    assert "nvme_link" not in items and "network_speed" not in items and "rdma_ports" not in items


# --- facts from the trees -----------------------------------------------------------------------


def tree(root: Path, name: str) -> Roots:
    areas = (edac.write, memory.write, nvme.write, pci.write, network.write, block.write)
    return partial_tree(root, name, *areas)


def test_facts_of_the_seed_spec(tmp_path: Path) -> None:
    facts = FactReader(tree(tmp_path, "seed-spec")).read((), lambda key, exc: pytest.fail(str(exc)))
    assert facts == seed_facts(
        memory_bytes=facts.memory_bytes,
        node_memory_bytes=facts.node_memory_bytes,
        dimms=facts.dimms,
        drives=facts.drives,
        nics=facts.nics,
    )
    assert len(facts.drives) == 16 and facts.drives[0].capacity_bytes == 15_002_931_888 * 512
    assert [d.socket for d in facts.dimms or ()] == ["0"] * 12 + ["1"] * 12
    assert [n.interface for n in facts.nics] == ["eno1", "eno2", "ens1f0np0", "ens1f1np1"]


def test_amd_caches_are_summed_per_ccx(tmp_path: Path) -> None:
    roots = partial_tree(tmp_path, "seed-spec-amd", memory.write)
    sockets = FactReader(roots).sockets()
    assert [s.llc_bytes for s in sockets] == [256 * 2**20, 256 * 2**20]


def test_the_collector(tmp_path: Path) -> None:
    ctx = CollectorContext(roots=tree(tmp_path, "dimm-missing"))
    registry = CollectorRegistry()
    registry.register(CollectorSet([InventoryCollector(ctx)], ctx.errors))
    text = generate_latest(registry).decode()
    assert value(text, "nodeslo_collector_success", collector="inventory") == 1
    assert value(text, "nodeslo_inventory_dimms", socket="1") == 11
    assert value(text, "nodeslo_inventory_memory_installed_bytes") == 23 * 64 * GIB
    for item in ("memory", "memory_balance", "dimms_per_socket"):
        assert value(text, "nodeslo_inventory_compliant", item=item) == 0, item
    assert value(text, "nodeslo_inventory_compliant", item="nvme_drives") == 1
    assert (
        value(
            text,
            "nodeslo_inventory_info",
            item="dimms_per_socket",
            expected="12 per socket",
            actual="12 on socket 0, 11 on socket 1",
        )
        == 1
    )
    assert value(text, "nodeslo_inventory_nvme_capacity_bytes", controller="nvme3") == (
        15_002_931_888 * 512
    )


def test_no_edac_exports_no_dimm_verdicts(tmp_path: Path) -> None:
    ctx = CollectorContext(roots=tree(tmp_path, "ecc-absent"))
    registry = CollectorRegistry()
    registry.register(CollectorSet([InventoryCollector(ctx)], ctx.errors))
    text = generate_latest(registry).decode()
    items = {dict(ls)["item"] for (n, ls) in samples(text) if n == "nodeslo_inventory_compliant"}
    assert "dimms_per_socket" not in items and "dimm_size" not in items
    assert "nodeslo_inventory_dimms{" not in text
    assert (
        value(
            text, "nodeslo_inventory_info", item="dimm_size", actual="no EDAC: DIMMs not reported"
        )
        == 1
    )


def test_real_captures(real_captures: dict[str, Path]) -> None:
    for name, root in real_captures.items():
        ctx = CollectorContext(roots=Roots.under(str(root)))
        registry = CollectorRegistry()
        registry.register(CollectorSet([InventoryCollector(ctx)], ctx.errors))
        text = generate_latest(registry).decode()
        assert value(text, "nodeslo_collector_success", collector="inventory") == 1, name
        assert value(text, "nodeslo_inventory_compliant", item="sockets") in (0, 1), name


# --- the profile ------------------------------------------------------------------------------


def site(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text("extends: process-management\nprofile: site\n" + textwrap.dedent(body))
    return path


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("inventory: {memory: lots}\n", "site.yaml:3: inventory.memory: not a size: 'lots'"),
        ("inventory: {nvme: {link_speed: 16}}\n", "inventory.nvme.link_speed: not a transfer rate"),
        ("inventory: {network: {speed: 25GB/s}}\n", "inventory.network.speed: not a bit rate"),
        ("inventory: {network: {interfaces: [eth/0]}}\n", "not a network interface name"),
        ("inventory: {sockets: 1.5}\n", "inventory.sockets: must be a whole number"),
        ("inventory: {cpus: 2}\n", "inventory.cpus: unknown key"),
        ("health: {links: {pcie_devices: [0000:3B:00.0x]}}\n", "neither a PCI address"),
        ("health: {links: {network_errors_max: 2}}\n", "must be between 0 and 1"),
        ("health: {links: {pcie_degraded_for: 10}}\n", None),
    ],
)
def test_profile_validation(tmp_path: Path, body: str, message: str | None) -> None:
    path = site(tmp_path, body)
    if message is None:
        assert load_profile(str(path)).health.links.pcie_degraded_for_seconds == 10
        return
    with pytest.raises(ProfileError, match=message.replace(".", r"\.").replace("(", r"\(")):
        load_profile(str(path))


def test_a_site_switches_lines_off(tmp_path: Path) -> None:
    profile = load_profile(
        str(site(tmp_path, "inventory: {rdma_ports_active: null, nvme: {link_width: null}}\n"))
    )
    assert profile.inventory.rdma_ports_active is None
    assert profile.inventory.nvme.link_width is None
    assert profile.inventory.nvme.link_speed_transfers_per_second == 16e9


def test_the_whole_seed_spec_tree_passes(tmp_path: Path) -> None:
    build(tmp_path, variant("seed-spec", cpus=8))
    facts = FactReader(Roots.under(str(tmp_path))).read((), lambda key, exc: pytest.fail(str(exc)))
    results = by_item(evaluate(SPEC, facts))
    # An 8-CPU tree is a smaller SKU: only the CPU lines fail.
    assert {n for n, r in results.items() if not r.compliant} == {
        "cores_per_socket",
        "threads_per_socket",
    }
