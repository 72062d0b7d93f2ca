"""Network interfaces in sysfs: link state, speed, carrier changes, error counters.

Layout (Documentation/ABI/testing/sysfs-class-net, net/core/net-sysfs.c):
    class/net/IF/{operstate,carrier,speed,duplex,flags,carrier_changes,address}
    class/net/IF/device -> the bus device (virtio: virtioN, one level below the PCI one)
    class/net/IF/device/physfn   an SR-IOV virtual function
    class/net/IF/statistics/{rx,tx}_{packets,errors,dropped}, rx_crc_errors, ...

Facts that shape the readers:
- `carrier` and `speed` answer EINVAL while the interface is administratively down: the
  link is down then, so carrier reads as 0; the speed is unknown.
- `speed` is in Mb/s, -1 when the driver does not know it, and keeps its last value
  when the carrier drops (QEMU's virtio-net after `set_link off` still says 25000): a
  speed means something only with carrier.
- Physical interfaces are the ones on a PCI function (virtio included); bridges, bonds,
  VLANs, veths, tunnels and the BMC's USB NIC have none. SR-IOV virtual functions are
  left out too: they come and go with the workloads they are handed to.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from nodeslo.links.pci import driver_name, pci_chain
from nodeslo.paths import Roots
from nodeslo.readers import (
    MalformedValue,
    ReadError,
    ValueUnavailable,
    list_dir,
    read_small,
    to_int,
    to_u64,
)

NET_CLASS = "class/net"
MEGABIT_BYTES = 125_000  # 1 Mb/s in bytes per second
IFF_UP = 0x1
MAX_FLAGS = 0xFFFFFFFF
OPERSTATES = ("unknown", "notpresent", "down", "lowerlayerdown", "testing", "dormant", "up")

# statistics/ files: (direction, file) for the totals; then the error counters that
# point at a cause (a cable or optic: crc; ring overflow: missed, fifo; ...).
PACKETS = (("receive", "rx_packets"), ("transmit", "tx_packets"))
ERRORS = (("receive", "rx_errors"), ("transmit", "tx_errors"))
DROPS = (("receive", "rx_dropped"), ("transmit", "tx_dropped"))
ERROR_DETAILS = (
    "rx_crc_errors",
    "rx_frame_errors",
    "rx_length_errors",
    "rx_missed_errors",
    "rx_fifo_errors",
    "rx_over_errors",
    "tx_carrier_errors",
    "tx_aborted_errors",
    "tx_fifo_errors",
)

OnError = Callable[[str, Exception], None]


@dataclass(frozen=True)
class Interface:
    """What does not change while the interface exists."""

    name: str
    path: str  # class/net/NAME: reads follow the name, as users do
    device: str  # PCI address, "" when none
    driver: str
    physical: bool
    virtual_function: bool


@dataclass(frozen=True)
class InterfaceState:
    admin_up: bool | None
    carrier: int | None
    operstate: str | None
    speed_bytes_per_second: float | None
    carrier_changes: int | None
    statistics: dict[str, int]


def parse_flags(text: str) -> int:
    """'0x1003' -> 0x1003; the kernel prints an unsigned int."""
    try:
        flags = int(text, 16)
    except ValueError:
        raise ValueError(f"not interface flags: {text.strip()[:40]!r}") from None
    if not 0 <= flags <= MAX_FLAGS:
        raise ValueError(f"not interface flags: {text.strip()[:40]!r}")
    return flags


def speed_bytes_per_second(megabits: int) -> float | None:
    """Mb/s -> bytes/s; None for the driver's 'unknown' (-1, or any negative)."""
    return None if megabits < 0 else float(megabits * MEGABIT_BYTES)


def describe(roots: Roots, name: str) -> Interface | None:
    """The static facts of one interface; None when it vanished meanwhile."""
    path = roots.sys(NET_CLASS, name)
    real = os.path.realpath(path)
    if not os.path.isdir(real):
        return None
    device_link = f"{path}/device"
    chain = pci_chain(os.path.realpath(device_link)) if os.path.exists(device_link) else []
    # virtio: the netdev hangs off virtioN, whose driver is virtio_net.
    driver = driver_name(device_link) if os.path.exists(device_link) else ""
    virtual_function = os.path.lexists(f"{device_link}/physfn")
    return Interface(
        name=name,
        path=path,
        device=chain[-1] if chain else "",
        driver=driver,
        physical=bool(chain) and not virtual_function,
        virtual_function=virtual_function,
    )


def names(roots: Roots) -> tuple[str, ...]:
    return tuple(list_dir(roots.sys(NET_CLASS)))


class InterfaceReader:
    """Per-scrape reads of one interface, on prebuilt paths."""

    def __init__(self, interface: Interface, statistics: bool = True) -> None:
        """`statistics=False`: the link only (flags, carrier, speed), for the inventory."""
        base = interface.path
        self.interface = interface
        self._flags = f"{base}/flags"
        self._carrier = f"{base}/carrier"
        self._operstate = f"{base}/operstate"
        self._speed = f"{base}/speed"
        self._changes = f"{base}/carrier_changes"
        self._link_only = not statistics
        files = (*(f for _, f in (*PACKETS, *ERRORS, *DROPS)), *ERROR_DETAILS)
        self._statistics = (
            () if self._link_only else tuple((f, f"{base}/statistics/{f}") for f in files)
        )

    def read(self, on_error: OnError) -> InterfaceState | None:
        """None when the interface vanished (its `flags` is gone). A file the driver does
        not provide (statistics of a minimal driver) is left out."""
        name = self.interface.name
        try:
            flags = _int(self._flags, name, on_error, parse_flags)
        except _Vanished:
            return None
        admin_up = None if flags is None else bool(flags & IFF_UP)
        carrier = _optional(self._carrier, name, on_error, to_int, quiet_unavailable=True)
        if carrier is None and admin_up is False:
            carrier = 0  # EINVAL while down: no link
        megabits = _optional(self._speed, name, on_error, to_int, quiet_unavailable=True)
        statistics: dict[str, int] = {}
        for key, path in self._statistics:
            value = _optional(path, name, on_error, to_u64)
            if value is not None:
                statistics[key] = value
        operstate = changes = None
        if not self._link_only:
            try:
                operstate = _text(self._operstate, name, on_error)
            except _Vanished:
                operstate = None
            changes = _optional(self._changes, name, on_error, to_u64)
        return InterfaceState(
            admin_up=admin_up,
            carrier=carrier,
            operstate=operstate,
            speed_bytes_per_second=None if megabits is None else speed_bytes_per_second(megabits),
            carrier_changes=changes,
            statistics=statistics,
        )


class _Vanished(Exception):
    """A file of the interface is gone: so is the interface."""


def _int(
    path: str,
    name: str,
    on_error: OnError,
    parse: Callable[[str], int],
    quiet_unavailable: bool = False,
) -> int | None:
    """The file's number; None (logged once) when unreadable; _Vanished when absent.
    `quiet_unavailable`: EINVAL is an answer (carrier and speed of a downed interface)."""
    try:
        raw = read_small(path)
    except ValueUnavailable as exc:
        if not quiet_unavailable:
            on_error(f"{name}:{os.path.basename(path)}", exc)
        return None
    except ReadError as exc:
        on_error(f"{name}:{os.path.basename(path)}", exc)
        return None
    if raw is None:
        raise _Vanished(path)
    try:
        return parse(raw.decode("ascii", "replace").strip())
    except ValueError as exc:
        on_error(f"{name}:{os.path.basename(path)}", MalformedValue(path, str(exc)))
        return None


def _optional(
    path: str,
    name: str,
    on_error: OnError,
    parse: Callable[[str], int],
    quiet_unavailable: bool = False,
) -> int | None:
    try:
        return _int(path, name, on_error, parse, quiet_unavailable)
    except _Vanished:
        return None


def _text(path: str, name: str, on_error: OnError) -> str | None:
    try:
        raw = read_small(path)
    except ReadError as exc:
        on_error(f"{name}:{os.path.basename(path)}", exc)
        return None
    if raw is None:
        raise _Vanished(path)
    return raw.decode("ascii", "replace").strip()
