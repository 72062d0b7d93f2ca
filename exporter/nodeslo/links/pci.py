"""PCI functions in sysfs: where each sits, what users call it, its link and AER counters.

Layout (drivers/pci/pci-sysfs.c, drivers/pci/pcie/aer.c):
    bus/pci/devices/DDDD:BB:DD.F -> ../../../devices/pciDDDD:BB/<root port>/.../DDDD:BB:DD.F
    {current,max}_link_speed   "16.0 GT/s PCIe" ("Unknown" when the register reads garbage)
    {current,max}_link_width   "4" (255, 63 or 0 when the register reads garbage)
    aer_dev_{correctable,nonfatal,fatal}   "Name count" lines ending in TOTAL_ERR_*
    aer_rootport_total_err_{cor,nonfatal,fatal}   root ports: errors reported from below
    class "0x010802", driver -> .../drivers/nvme, physfn (an SR-IOV virtual function)
    nvme/nvmeN/serial, net/ethN (virtioN/net/ethN for virtio), infiniband/mlx5_0

Where a function sits decides which link its registers describe. A root port or a switch
downstream port faces down: its link status is the link to the device below it. An
endpoint or a switch upstream port faces up: its link status is the link towards the
root. The link an up-facing function can reach is min(its max, its upstream port's max);
a port's own current-versus-max is no fault (QEMU's root ports advertise 16 GT/s x4
above endpoints that can do 2.5 GT/s x1).

A function whose config space stopped answering (surprise removal, a fatal error, a dead
link) reads "Unknown" and width 255: a state of its own, never a speed. QEMU 7.2 after an
injected uncorrectable error shows it in max_link_* while current_link_* still reads
2.5 GT/s x1, so every scrape reads all four.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from nodeslo.paths import Roots
from nodeslo.readers import (
    MalformedValue,
    ReadError,
    list_dir,
    read_small,
    read_text,
    to_int,
    to_u64,
)

PCI_DEVICES = "bus/pci/devices"
PCI_ADDRESS = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
# Lane counts a link can train at (PCIe base spec); anything else is a garbage read.
VALID_WIDTHS = frozenset({1, 2, 4, 8, 12, 16, 32})
# The kernel prints a speed from a table (2.5 to 64 GT/s today); far past any PCIe
# generation, or not a finite number, is no reading.
MAX_GIGATRANSFERS = 1024.0
# A class register is 24 bits (base class, subclass, programming interface).
MAX_CLASS = 0xFFFFFF
CLASS_NVME = 0x010802
CLASS_NETWORK = 0x02  # base class: Ethernet, InfiniBand, ...

# Kinds of watched function; ports carry the kind of port they are.
NVME, NETWORK, RDMA, DEVICE = "nvme", "network", "rdma", "device"
ROOT_PORT, SWITCH_PORT = "root_port", "switch_port"
ENDPOINT_KINDS = (NVME, NETWORK, RDMA, DEVICE)

# AER severities: file suffix -> label; the root port's own totals name them differently.
AER_FILES = (("correctable", "aer_dev_correctable"), ("nonfatal", "aer_dev_nonfatal"),
             ("fatal", "aer_dev_fatal"))  # fmt: skip
AER_ROOTPORT_FILES = (
    ("correctable", "aer_rootport_total_err_cor"),
    ("nonfatal", "aer_rootport_total_err_nonfatal"),
    ("fatal", "aer_rootport_total_err_fatal"),
)

OnError = Callable[[str, Exception], None]


# --- pure decoders ---------------------------------------------------------------------


def parse_link_speed(text: str) -> float | None:
    """'16.0 GT/s PCIe' (or '8 GT/s' on kernels before 4.17) -> 1.6e10 transfers/s;
    None for 'Unknown': the register did not answer. ValueError on anything else."""
    parts = text.split()
    if not parts or parts[0].lower().startswith("unknown"):
        return None
    if len(parts) < 2 or parts[1] != "GT/s":
        raise ValueError(f"not a link speed: {text.strip()[:40]!r}")
    try:
        gigatransfers = float(parts[0])
    except ValueError:
        raise ValueError(f"not a link speed: {text.strip()[:40]!r}") from None
    if not (math.isfinite(gigatransfers) and 0 < gigatransfers <= MAX_GIGATRANSFERS):
        raise ValueError(f"not a link speed any PCIe link has: {text.strip()[:40]!r}")
    return gigatransfers * 1e9


def parse_link_width(text: str) -> int | None:
    """'4' -> 4; None for what no link trains at (0, 63, 255: a register read as garbage)."""
    try:
        width = to_int(text)
    except ValueError:
        raise ValueError(f"not a link width: {text.strip()[:40]!r}") from None
    return width if width in VALID_WIDTHS else None


def parse_aer(text: str) -> tuple[int, dict[str, int]]:
    """An aer_dev_* file -> (total, {error name: count}). The kernel ends the list with
    TOTAL_ERR_*; without it (a truncated read) the total is the sum of the lines."""
    counts: dict[str, int] = {}
    total: int | None = None
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise ValueError(f"expected 'Name count', got {line.strip()[:60]!r}")
        try:
            count = to_u64(parts[1])
        except ValueError:
            raise ValueError(f"{parts[0][:40]}: not a count: {parts[1][:40]!r}") from None
        if parts[0].startswith("TOTAL_ERR_"):
            total = count
        else:
            counts[parts[0]] = count
    return (sum(counts.values()) if total is None else total), counts


def parse_aer_total(text: str) -> int:
    """An aer_dev_* file's TOTAL_ERR_* count without splitting the 9 to 19 lines before
    it (a tenth to a fifth of parse_aer's time): all that is exported unless per-type
    counts are asked for. No total line (a truncated read): the sum, as parse_aer."""
    start = text.rfind("TOTAL_ERR_")
    if start < 0 or (start > 0 and text[start - 1] != "\n"):
        return parse_aer(text)[0]
    return parse_aer(text[start:])[0]


def parse_class(text: str) -> int:
    """'0x010802' -> 0x010802 (base class, subclass, programming interface)."""
    try:
        value = int(text, 16)
    except ValueError:
        raise ValueError(f"not a PCI class: {text.strip()[:40]!r}") from None
    if not 0 <= value <= MAX_CLASS:
        raise ValueError(f"not a PCI class: {text.strip()[:40]!r}")
    return value


def pci_chain(path: str) -> list[str]:
    """The PCI addresses from the root bus down to the function a real sysfs path names:
    '.../devices/pci0000:00/0000:00:01.1/0000:01:00.0/virtio1/net/eth0' ->
    ['0000:00:01.1', '0000:01:00.0']."""
    chain: list[str] = []
    for part in path.split(os.sep):
        if PCI_ADDRESS.match(part):
            chain.append(part)
        elif chain:
            break
    return chain


# --- what a function is --------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """What users know a function by. Several names join with ',' (a function with two
    controllers or ports); a port has none of them."""

    kind: str
    controller: str = ""  # nvme0
    serial: str = ""  # the controller's serial: it follows the drive, not the slot
    interface: str = ""  # eth2
    rdma: str = ""  # mlx5_0

    def labels(self, address: str) -> list[str]:
        return [address, self.kind, self.controller, self.serial, self.interface, self.rdma]


IDENTITY_LABELS = ("device", "kind", "controller", "serial", "interface", "rdma")


@dataclass(frozen=True)
class PciFunction:
    address: str
    path: str  # the function's real sysfs directory
    identity: Identity
    upstream: str | None  # the bridge above it; None on a root bus
    # Its link status describes the link towards the root (endpoints, switch upstream
    # ports): only these are judged against an expected speed and width.
    faces_up: bool
    driver: str
    vendor_id: str
    device_id: str
    class_id: str
    has_link: bool  # PCI Express: conventional PCI functions have no link files
    has_aer: bool
    has_rootport_aer: bool


@dataclass(frozen=True)
class LinkState:
    """One read of the four link registers; None where the register did not answer."""

    speed: float | None
    width: int | None
    max_speed: float | None
    max_width: int | None

    @property
    def responding(self) -> bool:
        return None not in (self.speed, self.width, self.max_speed, self.max_width)


@dataclass(frozen=True)
class Aer:
    """Errors per severity since boot; `types` holds each error's own count (read only
    when asked for: empty otherwise)."""

    totals: dict[str, int]
    types: dict[str, dict[str, int]]


def expected_link(own: LinkState, upstream: LinkState | None) -> tuple[float | None, int | None]:
    """The speed and width a link can train at: the lower of both ends' maximums. Unknown
    when either end's maximum is."""
    if upstream is None:
        return None, None
    speed = (
        min(own.max_speed, upstream.max_speed)
        if own.max_speed is not None and upstream.max_speed is not None
        else None
    )
    width = (
        min(own.max_width, upstream.max_width)
        if own.max_width is not None and upstream.max_width is not None
        else None
    )
    return speed, width


# --- discovery (cold path: once per change of the device set) -------------------------------


@dataclass(frozen=True)
class Selection:
    """Which functions to watch besides NVMe, network and RDMA ones (the profile's
    health.links.pcie_devices: addresses or driver names)."""

    addresses: frozenset[str] = frozenset()
    drivers: frozenset[str] = frozenset()

    @classmethod
    def of(cls, names: Iterable[str]) -> Selection:
        names = tuple(names)
        return cls(
            frozenset(n for n in names if PCI_ADDRESS.match(n)),
            frozenset(n for n in names if not PCI_ADDRESS.match(n)),
        )


def driver_name(device_dir: str) -> str:
    """The kernel driver bound to a device ('' when none): the `driver` link's name."""
    try:
        return os.path.basename(os.readlink(f"{device_dir}/driver"))
    except OSError:
        return ""


def _text(path: str) -> str:
    try:
        return read_text(path) or ""
    except ReadError:
        return ""


def _names(directory: str) -> list[str]:
    try:
        return list_dir(directory)
    except ReadError:
        return []


def _interfaces(path: str) -> list[str]:
    """net/ of the function, or of its virtio child device."""
    names = _names(f"{path}/net")
    for child in _names(path):
        if child.startswith("virtio") and child[6:].isdigit():
            names += _names(f"{path}/{child}/net")
    return sorted(names)


@dataclass
class _Candidate:
    address: str
    path: str
    chain: list[str]
    pci_class: int
    driver: str
    identity: Identity | None  # None: not watched (yet: it may be a port of one that is)


class Discovery:
    """Walks bus/pci/devices once and returns the watched functions and their ports."""

    def __init__(self, roots: Roots) -> None:
        self.roots = roots
        self.devices_dir = roots.sys(PCI_DEVICES)

    def listing(self) -> tuple[str, ...]:
        return tuple(list_dir(self.devices_dir))

    def functions(self, selection: Selection, on_error: OnError) -> tuple[PciFunction, ...]:
        candidates: dict[str, _Candidate] = {}
        for address in self.listing():
            if not PCI_ADDRESS.match(address):
                continue
            link = f"{self.devices_dir}/{address}"
            path = os.path.realpath(link)
            if not os.path.isdir(path) or os.path.lexists(f"{path}/physfn"):
                continue  # gone meanwhile; or an SR-IOV VF, which shares its PF's link
            try:
                pci_class = parse_class(_text(f"{path}/class") or "0")
            except ValueError as exc:
                on_error(f"{address}:class", MalformedValue(f"{path}/class", str(exc)))
                pci_class = 0
            driver = driver_name(path)
            candidates[address] = _Candidate(
                address,
                path,
                pci_chain(path) or [address],
                pci_class,
                driver,
                _identity(path, address, pci_class, driver, selection),
            )
        watched = [c for c in candidates.values() if c.identity is not None]
        ports: dict[str, _Candidate] = {}
        for candidate in watched:
            for upstream in candidate.chain[:-1]:
                port = candidates.get(upstream)
                if port is not None and port.identity is None:
                    ports[upstream] = port
        functions = [self._function(c, candidates) for c in (*watched, *ports.values())]
        return tuple(sorted(functions, key=lambda f: f.address))

    def _function(self, c: _Candidate, candidates: dict[str, _Candidate]) -> PciFunction:
        upstream = c.chain[-2] if len(c.chain) > 1 else None
        depth = len(c.chain) - 1  # 0: on a root bus
        identity = c.identity
        if identity is None:  # a port above a watched function
            identity = Identity(ROOT_PORT if depth == 0 else SWITCH_PORT)
        # Down the chain, ports alternate: root port (down), switch upstream port (up),
        # switch downstream port (down), ... and whatever sits below a down-facing port
        # faces up. A function on a root bus that is not a bridge is an integrated
        # endpoint: no link to judge.
        faces_up = depth > 0 and depth % 2 == 1
        if identity.kind not in (ROOT_PORT, SWITCH_PORT) and depth > 0:
            faces_up = True
        parent = candidates.get(upstream) if upstream else None
        return PciFunction(
            address=c.address,
            path=c.path,
            identity=identity,
            upstream=upstream if parent is not None else None,
            faces_up=faces_up and parent is not None,
            driver=c.driver,
            vendor_id=_text(f"{c.path}/vendor"),
            device_id=_text(f"{c.path}/device"),
            class_id=f"0x{c.pci_class:06x}",
            has_link=os.path.exists(f"{c.path}/current_link_speed"),
            has_aer=os.path.exists(f"{c.path}/aer_dev_correctable"),
            has_rootport_aer=os.path.exists(f"{c.path}/aer_rootport_total_err_cor"),
        )


def _identity(
    path: str, address: str, pci_class: int, driver: str, selection: Selection
) -> Identity | None:
    """What a function is to its users, or None when it is not watched."""
    controllers = _names(f"{path}/nvme")
    interfaces = _interfaces(path)
    rdma = _names(f"{path}/infiniband")
    serials = [_text(f"{path}/nvme/{c}/serial") for c in controllers]
    names = {
        "controller": ",".join(controllers),
        "serial": ",".join(s for s in serials if s),
        "interface": ",".join(interfaces),
        "rdma": ",".join(rdma),
    }
    if controllers or pci_class == CLASS_NVME:
        return Identity(NVME, **names)
    if interfaces or pci_class >> 16 == CLASS_NETWORK:
        return Identity(NETWORK, **names)
    if rdma:
        return Identity(RDMA, **names)
    if address in selection.addresses or (driver and driver in selection.drivers):
        return Identity(DEVICE, **names)
    return None


# --- per-scrape reads ---------------------------------------------------------------------


class LinkReader:
    """Reads one function's link registers and AER counters on prebuilt paths."""

    def __init__(
        self, address: str, path: str, aer: bool = False, rootport_aer: bool = False
    ) -> None:
        self.address = address
        self._has_aer = aer
        self._has_rootport_aer = rootport_aer
        self._speed = f"{path}/current_link_speed"
        self._width = f"{path}/current_link_width"
        self._max_speed = f"{path}/max_link_speed"
        self._max_width = f"{path}/max_link_width"
        self._aer = tuple((severity, f"{path}/{name}") for severity, name in AER_FILES)
        self._rootport = tuple(
            (severity, f"{path}/{name}") for severity, name in AER_ROOTPORT_FILES
        )

    @classmethod
    def of(cls, function: PciFunction) -> LinkReader:
        return cls(function.address, function.path, function.has_aer, function.has_rootport_aer)

    def link(self) -> LinkState | None:
        """The four registers; None when the function vanished (its files are gone).
        MalformedValue when a file holds what the kernel never writes."""
        try:
            return LinkState(
                _register(self._speed, parse_link_speed),
                _register(self._width, parse_link_width),
                _register(self._max_speed, parse_link_speed),
                _register(self._max_width, parse_link_width),
            )
        except _Vanished:
            return None

    def aer(self, on_error: OnError, types: bool = False) -> Aer | None:
        """Totals per severity; with `types`, each error's own count too."""
        return self._read_aer(self._aer, on_error, types) if self._has_aer else None

    def rootport_totals(self, on_error: OnError) -> dict[str, int] | None:
        if not self._has_rootport_aer:
            return None
        totals: dict[str, int] = {}
        for severity, path in self._rootport:
            try:
                raw = read_small(path)
            except ReadError as exc:
                on_error(f"{self.address}:{severity}", exc)
                continue
            if raw is None:
                return None
            try:
                totals[severity] = to_u64(raw)
            except ValueError:
                on_error(
                    f"{self.address}:{severity}",
                    MalformedValue(path, f"not a count: {raw.strip()[:40]!r}"),
                )
        return totals

    def _read_aer(
        self, files: Sequence[tuple[str, str]], on_error: OnError, with_types: bool
    ) -> Aer | None:
        totals: dict[str, int] = {}
        types: dict[str, dict[str, int]] = {}
        for severity, path in files:
            try:
                raw = read_small(path)
                if raw is None:
                    return None
                text = raw.decode("ascii", "replace")
                if with_types:
                    totals[severity], types[severity] = parse_aer(text)
                else:
                    totals[severity] = parse_aer_total(text)
            except ReadError as exc:
                on_error(f"{self.address}:{severity}", exc)
            except ValueError as exc:
                on_error(f"{self.address}:{severity}", MalformedValue(path, str(exc)))
        return Aer(totals, types)


class _Vanished(Exception):
    pass


T = TypeVar("T")


def _register(path: str, parse: Callable[[str], T]) -> T | None:
    """A link register; None when it did not answer (the kernel's "Unknown", or EIO /
    EINVAL from a config read that failed); _Vanished when the file is gone."""
    try:
        raw = read_small(path)
    except ReadError:
        return None
    if raw is None:
        raise _Vanished(path)
    try:
        return parse(raw.decode("ascii", "replace"))
    except ValueError as exc:
        raise MalformedValue(path, str(exc)) from None
