"""pcie collector: what is watched, expected links, switches, AER, devices that stop
answering or vanish, profile-named devices, bad files, the static-attribute cache."""

from __future__ import annotations

import errno
import logging
import shutil
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from fixtures import network, nvme, pci
from fixtures.pci import aer_text
from nodeslo import readers
from nodeslo.collectors.base import CollectorContext, CollectorSet
from nodeslo.collectors.pcie import PcieCollector
from nodeslo.links.pci import (
    LinkState,
    expected_link,
    parse_aer,
    parse_aer_total,
    parse_class,
    parse_link_speed,
    parse_link_width,
    pci_chain,
)
from nodeslo.paths import Roots
from nodeslo.profile import Profile, load_profile
from support.areas import partial_tree
from support.exposition import samples, value
from support.syscalls import CountingOs, FaultyOs

GT = 1e9
EXPECTED_SPEED = "nodeslo_pcie_link_expected_speed_transfers_per_second"
AER = "nodeslo_pcie_aer_errors_total"
ROOTPORT_AER = "nodeslo_pcie_aer_rootport_errors_total"
TYPE_AER = "nodeslo_pcie_aer_type_errors_total"


def function(  # noqa: PLR0917 - a sysfs function reads best positionally
    root: Path,
    devpath: str,
    pci_class: int,
    driver: str,
    link: tuple[str, int, str, int] | None = ("16.0 GT/s PCIe", 4, "16.0 GT/s PCIe", 4),
    aer: dict[str, dict[str, int]] | None = None,
    rootport: tuple[int, int, int] | None = None,
    extra: dict[str, str] | None = None,
) -> None:
    """One PCI function at sys/devices/<devpath> with its bus/pci/devices link."""
    base = root / "sys" / "devices" / devpath
    base.mkdir(parents=True, exist_ok=True)
    address = devpath.rsplit("/", 1)[1]
    files = {"class": f"0x{pci_class:06x}", "vendor": "0x8086", "device": "0x1234"}
    if link is not None:
        speed, width, max_speed, max_width = link
        files |= {
            "current_link_speed": speed,
            "current_link_width": str(width),
            "max_link_speed": max_speed,
            "max_link_width": str(max_width),
        }
    for severity, counts in (aer or {}).items():
        files[f"aer_dev_{severity}"] = aer_text(counts, severity)
    if rootport is not None:
        for name, count in zip(("cor", "nonfatal", "fatal"), rootport, strict=True):
            files[f"aer_rootport_total_err_{name}"] = str(count)
    files |= extra or {}
    for name, content in files.items():
        path = base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content + "\n")
    if driver:
        (base / "driver").symlink_to(f"/sys/bus/pci/drivers/{driver}")
    bus = root / "sys" / "bus" / "pci" / "devices"
    bus.mkdir(parents=True, exist_ok=True)
    (bus / address).symlink_to(f"../../../devices/{devpath}")


def nvme_controller(root: Path, devpath: str, name: str, serial: str) -> None:
    controller = root / "sys" / "devices" / devpath / "nvme" / name
    controller.mkdir(parents=True)
    (controller / "serial").write_text(f"{serial:<20}\n")
    (root / "sys" / "class" / "nvme").mkdir(parents=True, exist_ok=True)
    (root / "sys" / "class" / "nvme" / name).symlink_to(f"../../devices/{devpath}/nvme/{name}")


def netdev(root: Path, parent: str, name: str) -> None:
    """A netdev under sys/devices/<parent>/net/<name> (parent: a PCI function or virtioN)."""
    path = root / "sys" / "devices" / parent / "net" / name
    path.mkdir(parents=True)
    (path / "flags").write_text("0x1003\n")
    (root / "sys" / "class" / "net").mkdir(parents=True, exist_ok=True)
    (root / "sys" / "class" / "net" / name).symlink_to(f"../../devices/{parent}/net/{name}")


ZERO_AER = {
    "correctable": {"RxErr": 0, "BadTLP": 0},
    "nonfatal": {"UnsupReq": 0, "CmpltTO": 0},
    "fatal": {"SDES": 0, "MalfTLP": 0},
}
PORT = 0x060400
NVME = 0x010802
ETHERNET = 0x020000


def collector(roots: Roots, profile: Profile | None = None, **options: object) -> tuple:
    import argparse

    ctx = CollectorContext(roots=roots, options=argparse.Namespace(**options))
    if profile is not None:
        ctx.profile = lambda: profile
    c = PcieCollector(ctx)
    registry = CollectorRegistry()
    registry.register(CollectorSet([c], ctx.errors))
    return c, registry


def scrape(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


# --- decoders -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2.5 GT/s PCIe\n", 2.5e9),
        ("16.0 GT/s PCIe", 16e9),
        ("8 GT/s", 8e9),  # kernels before 4.17
        ("64.0 GT/s PCIe", 64e9),
        ("Unknown\n", None),
        ("Unknown speed", None),
    ],
)
def test_link_speed(text: str, expected: float | None) -> None:
    assert parse_link_speed(text) == expected


@pytest.mark.parametrize("text", ["fast", "16.0 Gb/s", "", "x GT/s"])
def test_link_speed_garbage(text: str) -> None:
    if text == "":
        assert parse_link_speed(text) is None  # an empty read: nothing answered
        return
    with pytest.raises(ValueError, match="not a link speed"):
        parse_link_speed(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("4", 4), ("16\n", 16), ("1", 1), ("255", None), ("63", None), ("0", None)],
)
def test_link_width(text: str, expected: int | None) -> None:
    assert parse_link_width(text) == expected


def test_link_width_garbage() -> None:
    with pytest.raises(ValueError, match="not a link width"):
        parse_link_width("x4")


def test_aer_file() -> None:
    total, counts = parse_aer("RxErr 3\nBadTLP 1\nTOTAL_ERR_COR 4\n")
    assert (total, counts) == (4, {"RxErr": 3, "BadTLP": 1})
    # A newer kernel's names are taken as they come; no total line: the sum.
    assert parse_aer("IDECheck 2\nUnsupReq 1\n") == (3, {"IDECheck": 2, "UnsupReq": 1})
    for bad in ("RxErr\n", "RxErr x\n", "RxErr 1 2\n"):
        with pytest.raises(ValueError):
            parse_aer(bad)


@pytest.mark.parametrize("severity", ["correctable", "nonfatal", "fatal"])
def test_aer_total_alone_is_the_full_parse_total(severity: str) -> None:
    names = {"correctable": ("RxErr", "BadTLP"), "nonfatal": ("UnsupReq", "CmpltTO")}
    counts = dict(zip(names.get(severity, ("Undefined", "DLP")), (3, 2**63), strict=True))
    for text in (aer_text(counts, severity), aer_text(counts, severity) + "\n", "UnsupReq 2\n"):
        assert parse_aer_total(text) == parse_aer(text)[0]
    # The total is still checked; with no total line every line is, as in the full parse.
    for bad in ("RxErr 1\nTOTAL_ERR_COR x\n", "RxErr x\n", "RxErr 1 TOTAL_ERR_COR 1\n"):
        with pytest.raises(ValueError):
            parse_aer_total(bad)


def test_class_and_chain() -> None:
    assert parse_class("0x010802") == 0x010802
    with pytest.raises(ValueError):
        parse_class("nvme")
    path = "/sys/devices/pci0000:00/0000:00:01.1/0000:01:00.0/virtio1/net/eth0"
    assert pci_chain(path) == ["0000:00:01.1", "0000:01:00.0"]
    assert pci_chain("/sys/devices/virtual/net/lo") == []


def test_expected_link_is_the_lower_of_both_maxima() -> None:
    drive = LinkState(16 * GT, 4, 16 * GT, 4)
    port = LinkState(16 * GT, 4, 32 * GT, 16)
    assert expected_link(drive, port) == (16 * GT, 4)
    assert expected_link(
        LinkState(2.5 * GT, 1, 32 * GT, 16), LinkState(2.5 * GT, 1, 8 * GT, 4)
    ) == (
        8 * GT,
        4,
    )
    assert expected_link(drive, None) == (None, None)
    assert expected_link(drive, LinkState(16 * GT, 4, None, 4)) == (None, 4)


# --- the collector on the seed-spec tree ------------------------------------------------------


def test_seed_spec_watches_drives_nics_and_their_ports(seed_tree: Path) -> None:
    _, registry = collector(Roots.under(str(seed_tree)))
    text = scrape(registry)
    assert value(text, "nodeslo_collector_success", collector="pcie") == 1
    info = [dict(labels) for (name, labels) in samples(text) if name == "nodeslo_pcie_device_info"]
    kinds = sorted(i["kind"] for i in info)
    assert kinds.count("nvme") == 16 and kinds.count("network") == 4
    assert kinds.count("root_port") == 18
    drive = next(i for i in info if i["controller"] == "nvme3")
    assert drive["serial"] == "FX7N0003A0103" and drive["upstream"] == "0000:30:04.0"
    nic = next(i for i in info if i["interface"] == "ens1f1np1")
    assert (nic["rdma"], nic["driver"], nic["device"]) == ("mlx5_1", "mlx5_core", "0000:3b:00.1")
    for name in ("nodeslo_pcie_link_speed_transfers_per_second", "nodeslo_pcie_link_width"):
        assert (
            value(text, name, controller="nvme3")
            == {
                "nodeslo_pcie_link_speed_transfers_per_second": 16 * GT,
                "nodeslo_pcie_link_width": 4,
            }[name]
        )
    assert value(text, EXPECTED_SPEED, controller="nvme3") == 16 * GT
    # The I350 (5 GT/s) behind the PCH port (8 GT/s): it can reach 5 GT/s.
    assert value(text, EXPECTED_SPEED, interface="eno1") == 5 * GT
    # Ports carry no expected link: their current against their own max is no fault.
    assert not [
        labels
        for (name, labels) in samples(text)
        if name.startswith("nodeslo_pcie_link_expected") and dict(labels)["kind"] == "root_port"
    ]
    assert value(text, AER, controller="nvme5", aer_severity="correctable") == 10
    assert (
        value(
            text,
            ROOTPORT_AER,
            device="0000:30:06.0",
            aer_severity="correctable",
        )
        == 10
    )
    assert all(
        v == 1 for (name, _), v in samples(text).items() if name == "nodeslo_pcie_device_responding"
    )


def test_pcie_degraded_fixture(tmp_path: Path) -> None:
    roots = partial_tree(tmp_path, "pcie-degraded", pci.write, nvme.write, network.write)
    _, registry = collector(roots)
    text = scrape(registry)
    assert value(text, "nodeslo_pcie_link_width", controller="nvme3") == 2
    assert value(text, "nodeslo_pcie_link_expected_width", controller="nvme3") == 4
    assert value(text, "nodeslo_pcie_link_speed_transfers_per_second", controller="nvme6") == 8 * GT
    assert value(text, "nodeslo_pcie_device_responding", controller="nvme12") == 0
    # The registers that did not answer are not exported; the one that did is.
    assert value(text, "nodeslo_pcie_link_width", controller="nvme12") == 4
    assert "nodeslo_pcie_link_max_width" not in [
        n for (n, labels) in samples(text) if dict(labels).get("controller") == "nvme12"
    ]
    assert value(text, AER, controller="nvme9", aer_severity="nonfatal") == 1


# --- topologies -------------------------------------------------------------------------------


def test_a_switch_between_root_port_and_drives(tmp_path: Path) -> None:
    """Root port (down) -> switch upstream port (up) -> downstream port (down) -> drive (up).
    The switch upstream port is judged against the root port; the drive against the
    downstream port; no port against itself."""
    rp = "pci0000:00/0000:00:01.0"
    up = f"{rp}/0000:01:00.0"
    down = f"{up}/0000:02:03.0"
    drive = f"{down}/0000:05:00.0"
    function(tmp_path, rp, PORT, "pcieport", ("16.0 GT/s PCIe", 8, "32.0 GT/s PCIe", 16))
    function(tmp_path, up, PORT, "pcieport", ("16.0 GT/s PCIe", 8, "16.0 GT/s PCIe", 16))
    function(tmp_path, down, PORT, "pcieport", ("16.0 GT/s PCIe", 4, "16.0 GT/s PCIe", 4))
    function(tmp_path, drive, NVME, "nvme", ("16.0 GT/s PCIe", 4, "16.0 GT/s PCIe", 4))
    nvme_controller(tmp_path, drive, "nvme0", "SW1")
    _, registry = collector(Roots.under(str(tmp_path)))
    text = scrape(registry)
    kinds = {
        dict(labels)["device"]: dict(labels)["kind"]
        for (name, labels) in samples(text)
        if name == "nodeslo_pcie_device_info"
    }
    assert kinds == {
        "0000:00:01.0": "root_port",
        "0000:01:00.0": "switch_port",
        "0000:02:03.0": "switch_port",
        "0000:05:00.0": "nvme",
    }
    expected = {
        dict(labels)["device"]: v
        for (name, labels), v in samples(text).items()
        if name == "nodeslo_pcie_link_expected_width"
    }
    # The switch's x16 uplink trained at x8 of min(16, 16): judged, and short.
    assert expected == {"0000:01:00.0": 16, "0000:05:00.0": 4}
    assert value(text, "nodeslo_pcie_link_width", device="0000:01:00.0") == 8


def test_virtio_nic_and_a_profile_named_device(tmp_path: Path) -> None:
    """virtio's netdev hangs one level below the PCI function; a GPU is watched only when
    the profile names it, by address or by driver; a conventional PCI NIC has no link."""
    rp = "pci0000:00/0000:00:02.0"
    nic = f"{rp}/0000:01:00.0"
    function(tmp_path, rp, PORT, "pcieport", ("2.5 GT/s PCIe", 1, "16.0 GT/s PCIe", 4))
    function(tmp_path, nic, ETHERNET, "virtio-pci", ("2.5 GT/s PCIe", 1, "2.5 GT/s PCIe", 1))
    netdev(tmp_path, f"{nic}/virtio1", "eth0")
    gpu_port = "pci0000:40/0000:40:01.0"
    gpu = f"{gpu_port}/0000:41:00.0"
    function(tmp_path, gpu_port, PORT, "pcieport", ("32.0 GT/s PCIe", 16, "32.0 GT/s PCIe", 16))
    function(tmp_path, gpu, 0x030200, "nvidia", ("32.0 GT/s PCIe", 8, "32.0 GT/s PCIe", 16))
    function(tmp_path, "pci0000:00/0000:00:03.0", ETHERNET, "virtio-pci", link=None)
    netdev(tmp_path, "pci0000:00/0000:00:03.0/virtio2", "eth1")
    roots = Roots.under(str(tmp_path))

    _, registry = collector(roots)
    text = scrape(registry)
    assert value(text, "nodeslo_pcie_link_width", interface="eth0") == 1
    assert value(text, "nodeslo_pcie_link_expected_width", interface="eth0") == 1
    assert "0000:41:00.0" not in text
    # No link files (conventional PCI, the VMs this runs on): described, never judged.
    assert value(text, "nodeslo_pcie_device_info", interface="eth1", upstream="") == 1
    assert 'nodeslo_pcie_device_responding{controller="",device="0000:00:03.0"' not in text

    shipped = load_profile()
    for names in (("0000:41:00.0",), ("nvidia",)):
        links = shipped.health.links.__class__(pcie_devices=names)
        health = shipped.health.__class__(links=links)
        profile = shipped.__class__(**{**shipped.__dict__, "health": health})
        _, registry = collector(roots, profile)
        text = scrape(registry)
        assert value(text, "nodeslo_pcie_link_width", device="0000:41:00.0", kind="device") == 8
        assert value(text, "nodeslo_pcie_link_expected_width", device="0000:41:00.0") == 16


def test_a_virtual_function_is_left_to_its_physical_function(tmp_path: Path) -> None:
    rp = "pci0000:00/0000:00:02.0"
    function(tmp_path, rp, PORT, "pcieport")
    function(tmp_path, f"{rp}/0000:01:00.0", ETHERNET, "mlx5_core")
    function(tmp_path, f"{rp}/0000:01:00.2", ETHERNET, "mlx5_core")
    (tmp_path / f"sys/devices/{rp}/0000:01:00.2/physfn").symlink_to("../0000:01:00.0")
    _, registry = collector(Roots.under(str(tmp_path)))
    text = scrape(registry)
    assert "0000:01:00.0" in text and "0000:01:00.2" not in text


# --- faults -----------------------------------------------------------------------------------


def small_tree(root: Path) -> tuple[str, str]:
    rp = "pci0000:00/0000:00:01.0"
    drive = f"{rp}/0000:01:00.0"
    function(root, rp, PORT, "pcieport", rootport=(0, 0, 0), aer=ZERO_AER)
    function(root, drive, NVME, "nvme", aer=ZERO_AER)
    nvme_controller(root, drive, "nvme0", "S0")
    return rp, drive


def test_config_space_that_stops_answering(tmp_path: Path) -> None:
    _, drive = small_tree(tmp_path)
    _, registry = collector(Roots.under(str(tmp_path)))
    assert value(scrape(registry), "nodeslo_pcie_device_responding", controller="nvme0") == 1
    base = tmp_path / "sys/devices" / drive
    (base / "max_link_speed").write_text("Unknown\n")
    (base / "max_link_width").write_text("255\n")
    (base / "aer_dev_nonfatal").write_text(aer_text({"UnsupReq": 1}, "nonfatal") + "\n")
    text = scrape(registry)
    assert value(text, "nodeslo_pcie_device_responding", controller="nvme0") == 0
    assert value(text, "nodeslo_pcie_link_width", controller="nvme0") == 4
    assert ("nodeslo_pcie_link_expected_width", (("controller", "nvme0"),)) not in {
        (n, tuple((k, v) for k, v in labels if k == "controller")) for (n, labels) in samples(text)
    }
    assert value(text, AER, controller="nvme0", aer_severity="nonfatal") == 1
    assert value(text, "nodeslo_collector_success", collector="pcie") == 1


def test_a_register_that_fails_to_read_is_not_answering(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small_tree(tmp_path)
    _, registry = collector(Roots.under(str(tmp_path)))
    monkeypatch.setattr(readers, "os", FaultyOs({"0000:01:00.0/max_link_width": errno.EIO}))
    text = scrape(registry)
    assert value(text, "nodeslo_pcie_device_responding", controller="nvme0") == 0
    assert value(text, "nodeslo_collector_success", collector="pcie") == 1


def test_a_vanished_drive_stays_until_reload(tmp_path: Path) -> None:
    _, drive = small_tree(tmp_path)
    c, registry = collector(Roots.under(str(tmp_path)))
    scrape(registry)
    shutil.rmtree(tmp_path / "sys/devices" / drive)
    (tmp_path / "sys/bus/pci/devices/0000:01:00.0").unlink()
    (tmp_path / "sys/class/nvme/nvme0").unlink()
    text = scrape(registry)
    # Gone from sysfs: responding 0 with its last labels; nothing else about it.
    assert value(text, "nodeslo_pcie_device_responding", controller="nvme0", serial="S0") == 0
    assert [n for (n, labels) in samples(text) if dict(labels).get("device") == "0000:01:00.0"] == [
        "nodeslo_pcie_device_responding"
    ]
    # Its root port has nothing watched below it any more: not watched either.
    assert "0000:00:01.0" not in text
    c.profile_changed()  # SIGHUP: the operator says it was meant to go
    assert "0000:01:00.0" not in scrape(registry)


def test_malformed_files_are_skipped_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rp, drive = small_tree(tmp_path)
    base = tmp_path / "sys/devices" / drive
    (base / "current_link_speed").write_text("very fast\n")
    (base / "aer_dev_correctable").write_text("RxErr lots\n")
    (tmp_path / "sys/devices" / rp / "aer_rootport_total_err_cor").write_text("many\n")
    _, registry = collector(Roots.under(str(tmp_path)))
    with caplog.at_level(logging.WARNING):
        text = scrape(registry)
        scrape(registry)
    assert value(text, "nodeslo_collector_success", collector="pcie") == 1
    assert "nodeslo_pcie_link_width{" in text  # the port's link is still read
    assert value(text, AER, controller="nvme0", aer_severity="fatal") == 0
    for what in ("current_link_speed", "aer_dev_correctable", "aer_rootport_total_err_cor"):
        complaints = [r for r in caplog.records if what in r.getMessage()]
        assert len(complaints) == 1, what


def test_aer_types_behind_a_flag(tmp_path: Path) -> None:
    small_tree(tmp_path)
    _, registry = collector(Roots.under(str(tmp_path)))
    assert "nodeslo_pcie_aer_type_errors_total{" not in scrape(registry)
    _, registry = collector(Roots.under(str(tmp_path)), pcie_aer_types=True)
    text = scrape(registry)
    assert (
        value(
            text,
            TYPE_AER,
            controller="nvme0",
            aer_severity="nonfatal",
            type="UnsupReq",
        )
        == 0
    )


# --- cost ---------------------------------------------------------------------------------------


def test_static_attributes_are_read_once(seed_tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After the first scrape: the four listings, four link registers per function and the
    AER files; no class, vendor, serial or driver again, no realpath walk."""
    _, registry = collector(Roots.under(str(seed_tree)))
    scrape(registry)
    counting = CountingOs()
    monkeypatch.setattr(readers, "os", counting)
    scrape(registry)
    assert counting.listed == 4
    for static in ("class", "vendor", "device", "serial"):
        assert counting.opened[static] == 0, static
    assert counting.opened["max_link_width"] == 38
    assert counting.opened["aer_dev_fatal"] == 38


def test_a_new_device_is_picked_up(tmp_path: Path) -> None:
    small_tree(tmp_path)
    _, registry = collector(Roots.under(str(tmp_path)))
    assert "0000:02:00.0" not in scrape(registry)
    rp2 = "pci0000:00/0000:00:02.0"
    function(tmp_path, rp2, PORT, "pcieport")
    function(tmp_path, f"{rp2}/0000:02:00.0", NVME, "nvme")
    nvme_controller(tmp_path, f"{rp2}/0000:02:00.0", "nvme1", "S1")
    assert value(scrape(registry), "nodeslo_pcie_device_responding", controller="nvme1") == 1


def test_real_captures(real_captures: dict[str, Path]) -> None:
    """The VMs have no bus/pci in the capture: nothing watched, a successful collector."""
    for name, root in real_captures.items():
        _, registry = collector(Roots.under(str(root)))
        text = scrape(registry)
        assert value(text, "nodeslo_collector_success", collector="pcie") == 1, name
