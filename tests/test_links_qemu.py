"""The links collectors on a real kernel: QEMU's q35 PCIe root ports, an NVMe drive,
virtio-net with AER and e1000e, soft-RoCE (rdma_rxe), and faults injected through
QEMU's monitor.

One boot (../shared/tools/qemu-nvme, QEMU_EXTRA for the devices, GUEST_TMP_DIRS for a
checkout under /tmp) runs tests/support/links_guest.sh: `nodeslo serve` with the pcie,
network and inventory collectors scrapes the healthy links; then the test injects an
unsupported request into the first NIC (`pcie_aer_inject_error`) and takes the RDMA
NIC's link down (`set_link`), and the guest scrapes again. Here: the expositions equal
the kernel's files the guest dumped, the faults show, and a real Prometheus and
Alertmanager fed the two expositions page PCIeUncorrectableErrors, NetworkLinkDown and
RDMAPortDown.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, missing
from support import daemon as d
from support import qemu
from support import stack as st
from support.exposition import samples, value

pytestmark = pytest.mark.qemu

GUEST_SCRIPT = Path(__file__).parent / "support" / "links_guest.sh"
AER_MAC, SLOW_MAC, RDMA_MAC = "52:54:00:15:00:01", "52:54:00:15:00:02", "52:54:00:15:00:03"
TOOLS = {"rdma": "iproute2"}
GT = 1e9


def devices(share: Path) -> str:
    """Root ports as a server has them (Gen4 x4 for the drive, Gen3 x16 and Gen1 x1 for
    NICs, Gen4 x2 for the RDMA NIC); QEMU 7.2's endpoints all train at 2.5 GT/s x1."""
    return " ".join(
        (
            f"-monitor unix:{share}/monitor.sock,server,nowait",
            "-device pcie-root-port,id=rp1,chassis=1,slot=1,x-speed=16,x-width=4",
            f"-drive file={share}/drive.img,if=none,id=nv0,format=raw",
            "-device nvme,id=nvme0,drive=nv0,serial=LINKS0001,bus=rp1",
            "-device pcie-root-port,id=rp2,chassis=2,slot=2,x-speed=8,x-width=16",
            "-netdev user,id=n0,restrict=on",
            f"-device virtio-net-pci,id=net0,netdev=n0,bus=rp2,aer=on,speed=25000,duplex=full,"
            f"mac={AER_MAC}",
            "-device pcie-root-port,id=rp3,chassis=3,slot=3,x-speed=2_5,x-width=1",
            "-netdev user,id=n1,restrict=on",
            f"-device e1000e,id=net1,netdev=n1,bus=rp3,mac={SLOW_MAC}",
            "-device pcie-root-port,id=rp4,chassis=4,slot=4,x-speed=16,x-width=2",
            "-netdev user,id=n2,restrict=on",
            "-device virtio-net-pci,id=net2,netdev=n2,bus=rp4,speed=25000,duplex=full,"
            f"mac={RDMA_MAC}",
        )
    )


def monitor(path: Path, command: str) -> str:
    """One HMP command over QEMU's monitor socket; its echo and answer."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(path))
        sock.settimeout(10)
        time.sleep(0.5)
        sock.recv(65536)  # the banner and prompt
        sock.sendall(command.encode() + b"\n")
        time.sleep(1.0)
        return sock.recv(65536).decode(errors="replace")


def with_drive(share: Path) -> str:
    """The QEMU arguments, once the NVMe drive's image exists in the share."""
    with open(share / "drive.img", "wb") as image:
        image.truncate(64 * 2**20)
    return devices(share)


def inject_faults(share: Path, guest: subprocess.Popen[bytes]) -> None:
    """Once the guest scraped the healthy links: an AER error and the RDMA link down."""
    qemu.wait_for(share / "ready-for-faults", guest, 1200)
    (share / "monitor.log").write_text(
        monitor(share / "monitor.sock", "pcie_aer_inject_error net0 UNSUP")
        + monitor(share / "monitor.sock", "set_link n2 off")
    )
    (share / "faults-injected").touch()


@pytest.fixture(scope="module")
def guest(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    script = (
        f"AER_MAC={AER_MAC}\nSLOW_MAC={SLOW_MAC}\nRDMA_MAC={RDMA_MAC}\n" + GUEST_SCRIPT.read_text()
    )
    work = tmp_path_factory.mktemp("qemu-links")
    return qemu.boot(shared, work, script, TOOLS, qemu_extra=with_drive, drive=inject_faults)


def interfaces(guest: Path) -> tuple[str, str, str]:
    aer, slow, rdma = (guest / "interfaces.txt").read_text().split()
    return aer, slow, rdma


def functions(guest: Path) -> dict[str, tuple[str, str]]:
    """interface -> (its PCI function, the root port above it)."""
    out = {}
    for line in (guest / "functions.txt").read_text().splitlines():
        name, function, port = line.split()
        out[name] = (function, port)
    return out


def files(guest: Path, phase: str) -> dict[tuple[str, str], str]:
    out = {}
    for line in (guest / f"{phase}.files").read_text().splitlines():
        where, name, rest = [*line.split(" ", 2), ""][:3]
        out[(where, name)] = rest.strip()
    return out


def aer_total(text: str) -> int:
    """The TOTAL_ERR_* count of an aer_dev_* file the guest dumped on one line."""
    tokens = text.split()
    return int(next(tokens[i + 1] for i, t in enumerate(tokens) if t.startswith("TOTAL_ERR")))


def test_the_kernel_files_as_exported(guest: Path) -> None:
    """Every link register and AER total the kernel shows is what the exposition says."""
    assert (guest / "serve.log").read_text().rstrip().endswith("exit 0")
    for phase in ("before", "after"):
        text = (guest / f"{phase}.prom").read_text()
        assert value(text, "nodeslo_collector_success", collector="pcie") == 1
        assert value(text, "nodeslo_collector_success", collector="network") == 1
        assert value(text, "nodeslo_collector_success", collector="inventory") == 1
        exported = {
            dict(ls)["device"] for (n, ls) in samples(text) if n == "nodeslo_pcie_device_info"
        }
        checked = 0
        for (device, name), raw in files(guest, phase).items():
            if device not in exported:
                continue
            if name == "current_link_width":
                assert value(text, "nodeslo_pcie_link_width", device=device) == int(raw)
            elif name == "current_link_speed":
                got = value(text, "nodeslo_pcie_link_speed_transfers_per_second", device=device)
                assert got == float(raw.split()[0]) * GT
            elif name == "max_link_speed" and raw != "Unknown":
                got = value(text, "nodeslo_pcie_link_max_speed_transfers_per_second", device=device)
                assert got == float(raw.split()[0]) * GT
            elif name.startswith("aer_dev_"):
                severity = name.removeprefix("aer_dev_")
                got = value(
                    text, "nodeslo_pcie_aer_errors_total", device=device, aer_severity=severity
                )
                assert got == aer_total(raw), (device, name)
            elif name.startswith("aer_rootport_total_err_"):
                severity = {"cor": "correctable"}.get(
                    name.rsplit("_", 1)[1], name.rsplit("_", 1)[1]
                )
                got = value(
                    text,
                    "nodeslo_pcie_aer_rootport_errors_total",
                    device=device,
                    aer_severity=severity,
                )
                assert got == int(raw), (device, name)
            else:
                continue
            checked += 1
        assert checked >= 30, (phase, checked)


def test_healthy_links_are_judged_against_both_ends(guest: Path) -> None:
    text = (guest / "before.prom").read_text()
    aer_if, slow_if, rdma_if = interfaces(guest)
    where = functions(guest)
    (controller,) = (guest / "controllers.txt").read_text().split()
    # Every QEMU 7.2 endpoint trains at 2.5 GT/s x1; its root port can do more. The
    # link can reach the lower of the two maxima: the endpoint's own. Not degraded.
    for labels in (
        {"controller": controller},
        *({"interface": i} for i in (aer_if, slow_if, rdma_if)),
    ):
        assert value(text, "nodeslo_pcie_link_speed_transfers_per_second", **labels) == 2.5 * GT
        assert (
            value(text, "nodeslo_pcie_link_expected_speed_transfers_per_second", **labels)
            == 2.5 * GT
        )
        assert value(text, "nodeslo_pcie_link_expected_width", **labels) == 1
        assert value(text, "nodeslo_pcie_device_responding", **labels) == 1
    assert value(text, "nodeslo_pcie_device_info", controller=controller, serial="LINKS0001") == 1
    # The root ports: their own max and current, never an expected link.
    port = where[aer_if][1]
    assert value(text, "nodeslo_pcie_link_max_width", device=port, kind="root_port") == 16
    assert value(text, "nodeslo_pcie_link_width", device=port) == 1
    expected = {
        dict(ls)["device"] for (n, ls) in samples(text) if n.startswith("nodeslo_pcie_link_exp")
    }
    assert port not in expected
    # QEMU's NVMe has no AER capability; its root port counts what it reports.
    assert ("nodeslo_pcie_aer_errors_total", controller) not in {
        (n, dict(ls).get("controller")) for (n, ls) in samples(text)
    }
    # The NICs: virtio at its configured 25000 Mb/s, e1000e at 1000.
    assert value(text, "nodeslo_network_speed_bytes_per_second", interface=aer_if) == 3.125e9
    assert value(text, "nodeslo_network_speed_bytes_per_second", interface=slow_if) == 1.25e8
    for name in (aer_if, slow_if, rdma_if):
        assert value(text, "nodeslo_network_carrier", interface=name) == 1
        assert value(text, "nodeslo_network_expected_up", interface=name) == 1
    # Soft-RoCE on the third NIC: no counters/, its link_downed in hw_counters/.
    assert value(text, "nodeslo_rdma_port_info", rdma="rxe0", port="1", interface=rdma_if) == 1
    assert value(text, "nodeslo_rdma_port_active", rdma="rxe0") == 1
    assert value(text, "nodeslo_rdma_port_link_downed_total", rdma="rxe0") == 0
    # rxe takes its rate from its netdev: virtio's 25000 Mb/s is "25 Gb/sec (1X EDR)".
    assert files(guest, "before")[("rxe0/1", "rate")] == "25 Gb/sec (1X EDR)"
    assert value(text, "nodeslo_rdma_port_rate_bytes_per_second", rdma="rxe0") == 3.125e9
    # The inventory of a 2-CPU guest: one drive of 64 MiB, below the spec's 3.84 TB.
    assert value(text, "nodeslo_inventory_nvme_capacity_bytes", controller=controller) == 64 * 2**20
    assert value(text, "nodeslo_inventory_compliant", item="nvme_drives") == 0


def test_injected_error_and_link_down_show(guest: Path) -> None:
    text = (guest / "after.prom").read_text()
    aer_if, _, rdma_if = interfaces(guest)
    where = functions(guest)
    function, port = where[aer_if]
    assert (
        value(text, "nodeslo_pcie_aer_errors_total", device=function, aer_severity="nonfatal") == 1
    )
    assert (
        value(text, "nodeslo_pcie_aer_rootport_errors_total", device=port, aer_severity="nonfatal")
        == 1
    )
    # Its config space stopped answering: max link Unknown / 255, a state of its own.
    assert value(text, "nodeslo_pcie_device_responding", device=function) == 0
    assert files(guest, "after")[(function, "max_link_speed")] == "Unknown"
    # set_link off: no carrier, one more change, the speed the kernel keeps.
    before = (guest / "before.prom").read_text()
    assert value(text, "nodeslo_network_carrier", interface=rdma_if) == 0
    changes = "nodeslo_network_carrier_changes_total"
    assert value(text, changes, interface=rdma_if) == value(before, changes, interface=rdma_if) + 1
    assert value(text, "nodeslo_network_speed_bytes_per_second", interface=rdma_if) == 3.125e9
    assert value(text, "nodeslo_network_expected_up", interface=rdma_if) == 1
    # The soft-RoCE port followed its netdev down.
    assert value(text, "nodeslo_rdma_port_active", rdma="rxe0") == 0
    assert value(text, "nodeslo_rdma_port_state_id", rdma="rxe0") == 1
    assert value(text, "nodeslo_rdma_port_expected_active", rdma="rxe0") == 1


@contextlib.contextmanager
def serving(first: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """A scrape target that serves one exposition until told to serve another."""
    current: dict[str, Any] = {"body": first.read_bytes()}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = current["body"]
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_port}", current
    finally:
        server.shutdown()
        server.server_close()


def test_real_kernel_faults_page(guest: Path, tmp_path: Path) -> None:
    """The guest's healthy exposition, then the faulted one, scraped by a real Prometheus
    with the rules generated from the e2e profile: three pages through Alertmanager."""
    prometheus = st.tool("prometheus")
    alertmanager = st.tool("prometheus-alertmanager", "alertmanager")
    if not (prometheus and alertmanager):
        missing("prometheus / prometheus-alertmanager are not installed (Debian packages)")
    profile = REPO / "tests" / "scenarios" / "profiles" / "e2e.yaml"
    generated = d.run_cli("generate", f"--profile={profile}", f"--out={tmp_path / 'pack'}")
    assert generated.returncode == 0, generated.stderr
    rules = str(tmp_path / "pack" / "alerts" / "nodeslo.rules.yaml")
    aer_if, _, rdma_if = interfaces(guest)
    function, _ = functions(guest)[aer_if]
    with (
        serving(guest / "before.prom") as (target, current),
        st.running(tmp_path, [target], [rules]) as stack,
    ):
        stack.wait_scraped()
        time.sleep(5)  # healthy history before the faults
        current["body"] = (guest / "after.prom").read_bytes()
        aer = stack.webhook.wait_for(
            90, alertname="PCIeUncorrectableErrors", device=function, reason="device_errors"
        )
        assert (aer.receiver, aer.labels["aer_severity"]) == ("pager", "nonfatal")
        down = stack.webhook.wait_for(90, alertname="NetworkLinkDown", interface=rdma_if)
        assert down.receiver == "pager"
        rdma = stack.webhook.wait_for(90, alertname="RDMAPortDown", rdma="rxe0", port="1")
        assert rdma.receiver == "pager"
        assert "has no carrier" in down.annotations["description"]
