"""nodeslo's links against node_exporter's on the files both read.

node_exporter 1.5 (Debian's prometheus-node-exporter) runs with its netclass and
infiniband collectors on (a) the shapes of its own sysfs fixture (fixtures/
node_exporter_sys.py) and (b) the seed-spec tree and its link-down variant; for every
interface and RDMA port nodeslo exports, every value both export must be equal. 1.5 has
no pcidevice collector: the PCIe values are compared with what its pcidevice collector
reports for the same fixture shapes (its e2e output, transfers/s and lanes).

Known differences, asserted too: node_exporter exports every interface (bonds, lo) and
exports speed -1 as -125000 bytes/s; nodeslo leaves virtual interfaces and unknown
speeds out.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from conftest import missing
from fixtures import network, node_exporter_sys, pci
from fixtures.tree import Tree
from nodeslo.collectors.base import CollectorContext, CollectorSet
from nodeslo.collectors.network import NetworkCollector
from nodeslo.collectors.pcie import PcieCollector
from nodeslo.paths import Roots
from support.areas import partial_tree
from support.exposition import samples, value
from support.stack import free_port

# nodeslo metric -> node_exporter metric, per interface (label `interface` / `device`).
NETCLASS = {
    "nodeslo_network_carrier": "node_network_carrier",
    "nodeslo_network_speed_bytes_per_second": "node_network_speed_bytes",
    "nodeslo_network_carrier_changes_total": "node_network_carrier_changes_total",
}
# nodeslo metric -> node_exporter metric, per RDMA port (labels rdma/device and port).
INFINIBAND = {
    "nodeslo_rdma_port_state_id": "node_infiniband_state_id",
    "nodeslo_rdma_port_physical_state_id": "node_infiniband_physical_state_id",
    "nodeslo_rdma_port_rate_bytes_per_second": "node_infiniband_rate_bytes_per_second",
    "nodeslo_rdma_port_link_downed_total": "node_infiniband_link_downed_total",
    "nodeslo_rdma_port_symbol_errors_total": "node_infiniband_symbol_error_total",
    "nodeslo_rdma_port_link_error_recovery_total": "node_infiniband_link_error_recovery_total",
    "nodeslo_rdma_port_receive_errors_total": "node_infiniband_port_errors_received_total",
    "nodeslo_rdma_port_receive_remote_physical_errors_total": (
        "node_infiniband_port_receive_remote_physical_errors_total"
    ),
    "nodeslo_rdma_port_transmit_discards_total": "node_infiniband_port_discards_transmitted_total",
    "nodeslo_rdma_port_local_link_integrity_errors_total": (
        "node_infiniband_local_link_integrity_errors_total"
    ),
    "nodeslo_rdma_port_excessive_buffer_overrun_errors_total": (
        "node_infiniband_excessive_buffer_overrun_errors_total"
    ),
}


@pytest.fixture(scope="module")
def node_exporter() -> str:
    path = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
    if path is None:
        missing("node_exporter is not installed (Debian package prometheus-node-exporter)")
    assert path is not None
    return path


def scrape_node_exporter(binary: str, tree: Path) -> str:
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--collector.disable-defaults",
            "--collector.netclass",
            "--collector.infiniband",
            f"--path.sysfs={tree}/sys",
            f"--path.procfs={tree}/proc",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    return str(r.read().decode())
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(10)


def scrape_nodeslo(tree: Path) -> str:
    ctx = CollectorContext(roots=Roots.under(str(tree)))
    registry = CollectorRegistry()
    registry.register(CollectorSet([NetworkCollector(ctx), PcieCollector(ctx)], ctx.errors))
    return generate_latest(registry).decode()


@pytest.fixture(scope="module")
def node_exporter_shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("node-exporter-shapes")
    node_exporter_sys.write(Tree(root))
    (root / "proc").mkdir()
    return root


def trees(node_exporter_shapes: Path, root: Path) -> Iterator[tuple[str, Path]]:
    yield "node_exporter's shapes", node_exporter_shapes
    for variant in ("seed-spec", "link-down"):
        partial_tree(root / variant, variant, pci.write, network.write)
        (root / variant / "proc").mkdir(exist_ok=True)
        yield variant, root / variant


def compared(ours: str, theirs: str) -> tuple[int, int]:
    """Assert every value both export is equal; (interfaces, ports) compared."""
    mine, other = samples(ours), samples(theirs)
    interfaces = sorted(
        dict(labels)["interface"] for (n, labels) in mine if n == "nodeslo_network_info"
    )
    for interface in interfaces:
        for ours_name, theirs_name in NETCLASS.items():
            a = [
                v
                for (n, ls), v in mine.items()
                if n == ours_name and dict(ls)["interface"] == interface
            ]
            b = [
                v
                for (n, ls), v in other.items()
                if n == theirs_name and dict(ls)["device"] == interface
            ]
            if a:
                assert a == b, (interface, ours_name)
        up = value(ours, "nodeslo_network_operstate", interface=interface, state="up")
        assert up == value(theirs, "node_network_up", device=interface), interface
        flags = int(value(theirs, "node_network_flags", device=interface))
        assert value(ours, "nodeslo_network_admin_up", interface=interface) == flags & 1
    ports = sorted(
        (dict(ls)["rdma"], dict(ls)["port"]) for (n, ls) in mine if n == "nodeslo_rdma_port_info"
    )
    for rdma, port in ports:
        for ours_name, theirs_name in INFINIBAND.items():
            a = [
                v
                for (n, ls), v in mine.items()
                if n == ours_name and dict(ls)["rdma"] == rdma and dict(ls)["port"] == port
            ]
            b = [
                v
                for (n, ls), v in other.items()
                if n == theirs_name and dict(ls)["device"] == rdma and dict(ls)["port"] == port
            ]
            assert a == b, (rdma, port, ours_name, a, b)
    return len(interfaces), len(ports)


def test_netclass_and_infiniband_equal_node_exporters(
    node_exporter: str, node_exporter_shapes: Path, tmp_path: Path
) -> None:
    seen = {}
    for name, tree in trees(node_exporter_shapes, tmp_path):
        seen[name] = compared(scrape_nodeslo(tree), scrape_node_exporter(node_exporter, tree))
    # Every physical interface and every port was compared, on every tree.
    assert seen == {
        "node_exporter's shapes": (2, 3),
        "seed-spec": (4, 2),
        "link-down": (4, 2),
    }


def test_the_known_differences(node_exporter: str, node_exporter_shapes: Path) -> None:
    ours = scrape_nodeslo(node_exporter_shapes)
    theirs = scrape_node_exporter(node_exporter, node_exporter_shapes)
    # node_exporter: every interface, bonds included; nodeslo: the physical ones.
    assert {dict(ls)["device"] for (n, ls) in samples(theirs) if n == "node_network_up"} == {
        "bond0",
        "dmz",
        "eth0",
        "ens10f0",
        "int",
    }
    assert {dict(ls)["interface"] for (n, ls) in samples(ours) if n == "nodeslo_network_info"} == {
        "eth0",
        "ens10f0",
    }
    # An unknown speed: node_exporter 1.5 says -125000 bytes/s, nodeslo says nothing.
    assert value(theirs, "node_network_speed_bytes", device="bond0") == -125000
    # "N/A (no PMA)": neither exports the counter.
    assert not [
        ls
        for (n, ls) in samples(theirs)
        if n == "node_infiniband_link_downed_total" and ("device", "i40iw0") in ls
    ]
    assert not [
        ls
        for (n, ls) in samples(ours)
        if n == "nodeslo_rdma_port_link_downed_total" and ("rdma", "i40iw0") in ls
    ]


def test_pcie_equals_node_exporters_pcidevice(node_exporter_shapes: Path) -> None:
    ours = scrape_nodeslo(node_exporter_shapes)
    for device, want in node_exporter_sys.PCIDEVICE_EXPECTED.items():
        speed, width = want["current"]
        max_speed, max_width = want["max"]
        got = (
            value(ours, "nodeslo_pcie_link_speed_transfers_per_second", device=device),
            value(ours, "nodeslo_pcie_link_width", device=device),
            value(ours, "nodeslo_pcie_link_max_speed_transfers_per_second", device=device),
            value(ours, "nodeslo_pcie_link_max_width", device=device),
        )
        assert got == (speed, width, max_speed, max_width), device
    # And what node_exporter does not say: the drive, at 8 GT/s of the 16 it can do, sits
    # below a port that can do 8: its link is as fast as it can be.
    assert (
        value(ours, "nodeslo_pcie_link_expected_speed_transfers_per_second", device="0000:01:00.0")
        == 8e9
    )
    assert (
        value(ours, "nodeslo_pcie_device_info", controller="nvme0", serial="S680HF8N190894I") == 1
    )
