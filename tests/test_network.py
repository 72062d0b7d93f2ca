"""network collector: physical interfaces only (plus the profile's), carrier and speed
facts of the kernel, expected links that vanish, RDMA ports, bad files."""

from __future__ import annotations

import argparse
import errno
import logging
import shutil
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from fixtures import network as fixture_network
from fixtures import pci
from fixtures.tree import Tree
from nodeslo import readers
from nodeslo.collectors.base import CollectorContext, CollectorSet
from nodeslo.collectors.network import NetworkCollector
from nodeslo.links.rdma import parse_counter, parse_rate, parse_state
from nodeslo.paths import Roots
from nodeslo.profile import Profile, load_profile
from support.areas import partial_tree
from support.exposition import samples, value
from support.syscalls import FaultyOs

SPEED = "nodeslo_network_speed_bytes_per_second"


def collector(root: Path, profile: Profile | None = None, **options: object) -> tuple:
    ctx = CollectorContext(roots=Roots.under(str(root)), options=argparse.Namespace(**options))
    if profile is not None:
        ctx.profile = lambda: profile
    c = NetworkCollector(ctx)
    registry = CollectorRegistry()
    registry.register(CollectorSet([c], ctx.errors))
    return c, registry


def scrape(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


def listing(profile: Profile, *interfaces: str) -> Profile:
    network = profile.inventory.network.__class__(
        interfaces=interfaces, ports=2, speed_bytes_per_second=3.125e9
    )
    inventory = profile.inventory.__class__(network=network)
    return profile.__class__(**{**profile.__dict__, "inventory": inventory})


def tree(root: Path, name: str = "seed-spec") -> Path:
    """The PCI functions and NICs of a variant, nothing else: a fraction of a full tree."""
    partial_tree(root, name, pci.write, fixture_network.write)
    return root


def interfaces_in(text: str) -> set[str]:
    return {dict(ls)["interface"] for (n, ls) in samples(text) if n == "nodeslo_network_info"}


# --- decoders -------------------------------------------------------------------------------


def test_rdma_decoders() -> None:
    assert parse_state("4: ACTIVE\n") == (4, "ACTIVE")
    assert parse_state("5: LinkUp") == (5, "LinkUp")
    assert parse_rate("100 Gb/sec (4X EDR)") == 1.25e10
    assert parse_rate("2.5 Gb/sec (1X SDR)\n") == 312_500_000
    assert parse_counter("N/A (no PMA)\n") is None
    assert parse_counter("4294967295") == 4294967295
    for parse, bad in ((parse_state, "ACTIVE"), (parse_rate, "fast"), (parse_counter, "x")):
        with pytest.raises(ValueError):
            parse(bad)


# --- the collector on the seed-spec tree ------------------------------------------------------


def test_seed_spec(tmp_path: Path) -> None:
    _, registry = collector(tree(tmp_path))
    text = scrape(registry)
    assert value(text, "nodeslo_collector_success", collector="network") == 1
    # lo, docker0 and the veth are left alone.
    assert interfaces_in(text) == {"eno1", "eno2", "ens1f0np0", "ens1f1np1"}
    assert value(text, "nodeslo_network_info", interface="ens1f0np0", device="0000:3b:00.0") == 1
    assert value(text, SPEED, interface="ens1f0np0") == 3.125e9
    assert value(text, SPEED, interface="eno1") == 1.25e8
    # eno2 has no cable: carrier 0, speed -1 is not exported; it never had carrier, so
    # nothing expects it up.
    assert value(text, "nodeslo_network_carrier", interface="eno2") == 0
    assert (SPEED, (("interface", "eno2"),)) not in samples(text)
    expected = {
        dict(ls)["interface"] for (n, ls) in samples(text) if n == "nodeslo_network_expected_up"
    }
    assert expected == {"eno1", "ens1f0np0", "ens1f1np1"}
    assert value(text, "nodeslo_network_operstate", interface="eno2", state="down") == 1
    assert value(text, "nodeslo_network_operstate", interface="eno2", state="up") == 0
    assert (
        value(
            text,
            "nodeslo_network_error_details_total",
            interface="ens1f0np0",
            counter="rx_crc_errors",
        )
        == 10
    )
    assert value(text, "nodeslo_network_packets_total", interface="eno1", direction="receive") == (
        200 * 864000
    )
    # RoCE ports of the ConnectX-6 Dx.
    for rdma, netdev in (("mlx5_0", "ens1f0np0"), ("mlx5_1", "ens1f1np1")):
        assert value(
            text, "nodeslo_rdma_port_info", rdma=rdma, port="1", link_layer="Ethernet",
            interface=netdev,
        ) == 1  # fmt: skip
        assert value(text, "nodeslo_rdma_port_active", rdma=rdma) == 1
        assert value(text, "nodeslo_rdma_port_rate_bytes_per_second", rdma=rdma) == 3.125e9
        assert value(text, "nodeslo_rdma_port_expected_active", rdma=rdma) == 1


def test_degraded_variants(tmp_path: Path) -> None:
    _, registry = collector(tree(tmp_path / "nic", "nic-degraded"))
    text = scrape(registry)
    assert value(text, SPEED, interface="ens1f1np1") == 1.25e9
    assert value(text, "nodeslo_network_carrier_changes_total", interface="ens1f1np1") == 14402
    _, registry = collector(tree(tmp_path / "down", "link-down"))
    text = scrape(registry)
    # The kernel keeps the last speed when the carrier drops: exported, carrier says 0.
    assert value(text, "nodeslo_network_carrier", interface="ens1f1np1") == 0
    assert value(text, SPEED, interface="ens1f1np1") == 3.125e9
    assert value(text, "nodeslo_rdma_port_state_id", rdma="mlx5_1") == 1
    assert value(text, "nodeslo_rdma_port_physical_state_id", rdma="mlx5_1") == 3
    assert value(text, "nodeslo_rdma_port_link_downed_total", rdma="mlx5_1") == 1
    # Seen down from the start: neither expected up nor expected active.
    assert ("nodeslo_network_expected_up", (("interface", "ens1f1np1"),)) not in samples(text)
    assert 'nodeslo_rdma_port_expected_active{port="1",rdma="mlx5_1"}' not in text


# --- expectations over time ---------------------------------------------------------------------


def test_a_link_that_had_carrier_stays_expected_when_it_vanishes(tmp_path: Path) -> None:
    root = tree(tmp_path)
    c, registry = collector(root)
    scrape(registry)
    (root / "sys/class/net/ens1f1np1").unlink()
    device = root / "sys/devices/pci0000:3a/0000:3a:02.0/0000:3b:00.1/infiniband/mlx5_1"
    shutil.rmtree(device)
    (root / "sys/class/infiniband/mlx5_1").unlink()
    text = scrape(registry)
    assert value(text, "nodeslo_network_expected_up", interface="ens1f1np1") == 1
    assert 'nodeslo_network_carrier{interface="ens1f1np1"}' not in text
    assert value(text, "nodeslo_rdma_port_expected_active", rdma="mlx5_1", port="1") == 1
    assert 'nodeslo_rdma_port_active{port="1",rdma="mlx5_1"}' not in text
    c.profile_changed()  # SIGHUP: forget what was meant to go
    text = scrape(registry)
    assert ("nodeslo_network_expected_up", (("interface", "ens1f1np1"),)) not in samples(text)
    assert "mlx5_1" not in text


def test_listed_interfaces(tmp_path: Path) -> None:
    """The data plane as the profile lists it: a bond is watched, a missing name expected."""
    root = tree(tmp_path)
    fixture_network.write_interface(
        Tree(root),
        "sys/devices/virtual/net/bond0",
        "bond0",
        {"flags": "0x1403", "carrier": 1, "operstate": "up", "speed": 50000, "carrier_changes": 1},
        {"rx_packets": 7, "tx_packets": 9},
    )
    profile = listing(load_profile(), "bond0", "ens9f0")
    _, registry = collector(root, profile)
    text = scrape(registry)
    assert "bond0" in interfaces_in(text)
    assert value(text, SPEED, interface="bond0") == 6.25e9
    for name in ("bond0", "ens9f0"):
        assert value(text, "nodeslo_network_data_plane", interface=name) == 1
        assert value(text, "nodeslo_network_expected_up", interface=name) == 1
    assert "ens9f0" not in interfaces_in(text)


def test_exclude_flag(tmp_path: Path) -> None:
    _, registry = collector(tree(tmp_path), network_interface_exclude="^eno")
    assert interfaces_in(scrape(registry)) == {"ens1f0np0", "ens1f1np1"}


# --- what the kernel answers ----------------------------------------------------------------------


def test_carrier_and_speed_answer_einval_while_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tree(tmp_path)
    (root / "sys/class/net/eno2/flags").write_text("0x1002\n")  # set down
    _, registry = collector(root)
    faults = {"eno2/carrier": errno.EINVAL, "eno2/speed": errno.EINVAL}
    monkeypatch.setattr(readers, "os", FaultyOs(faults))
    text = scrape(registry)
    assert value(text, "nodeslo_network_admin_up", interface="eno2") == 0
    assert value(text, "nodeslo_network_carrier", interface="eno2") == 0
    assert (SPEED, (("interface", "eno2"),)) not in samples(text)
    assert value(text, "nodeslo_collector_success", collector="network") == 1


def test_bad_files_are_skipped_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tree(tmp_path)
    (root / "sys/class/net/eno1/carrier_changes").write_text("many\n")
    (root / "sys/class/net/eno1/statistics/rx_crc_errors").write_text("\n")
    port = root / "sys/class/infiniband/mlx5_0/ports/1"
    (port / "rate").write_text("fast\n")
    (port / "counters/symbol_error").write_text("N/A (no PMA)\n")
    _, registry = collector(root)
    monkeypatch.setattr(readers, "os", FaultyOs({"eno1/statistics/rx_errors": errno.EIO}))
    with caplog.at_level(logging.WARNING):
        text = scrape(registry)
        scrape(registry)
    assert value(text, "nodeslo_collector_success", collector="network") == 1
    assert value(text, "nodeslo_network_carrier", interface="eno1") == 1
    assert 'nodeslo_network_carrier_changes_total{interface="eno1"}' not in text
    assert value(text, "nodeslo_network_errors_total", interface="eno1", direction="transmit") == 0
    assert value(text, "nodeslo_rdma_port_active", rdma="mlx5_0") == 1
    assert 'nodeslo_rdma_port_rate_bytes_per_second{port="1",rdma="mlx5_0"}' not in text
    assert 'nodeslo_rdma_port_symbol_errors_total{port="1",rdma="mlx5_0"}' not in text
    for what in ("carrier_changes", "rx_crc_errors", "rx_errors", "rate"):
        assert len([r for r in caplog.records if what in r.getMessage()]) == 1, what


def test_soft_roce_keeps_link_downed_in_hw_counters(tmp_path: Path) -> None:
    """rdma_rxe: a virtual device, no counters/, link_downed in hw_counters/, the netdev in
    `parent`."""
    rxe = Tree(tmp_path)
    base = "sys/devices/virtual/infiniband/rxe0"
    rxe.write(f"{base}/parent", "eth1")
    rxe.write(f"{base}/ports/1/state", "1: DOWN")
    rxe.write(f"{base}/ports/1/phys_state", "3: Disabled")
    rxe.write(f"{base}/ports/1/rate", "2.5 Gb/sec (1X SDR)")
    rxe.write(f"{base}/ports/1/link_layer", "Ethernet")
    rxe.write(f"{base}/ports/1/hw_counters/link_downed", 1)
    rxe.write(f"{base}/ports/1/hw_counters/retry_exceeded_err", 0)
    rxe.symlink("sys/class/infiniband/rxe0", "../../devices/virtual/infiniband/rxe0")
    _, registry = collector(tmp_path)
    text = scrape(registry)
    assert value(text, "nodeslo_rdma_port_info", rdma="rxe0", interface="eth1", device="") == 1
    assert value(text, "nodeslo_rdma_port_link_downed_total", rdma="rxe0") == 1
    assert value(text, "nodeslo_rdma_port_active", rdma="rxe0") == 0


def test_real_captures(real_captures: dict[str, Path]) -> None:
    for name, root in real_captures.items():
        _, registry = collector(root)
        text = scrape(registry)
        assert value(text, "nodeslo_collector_success", collector="network") == 1, name
