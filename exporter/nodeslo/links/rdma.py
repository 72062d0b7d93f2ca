"""RDMA ports (InfiniBand, RoCE, iWARP) in sysfs: state, rate, link errors.

Layout (drivers/infiniband/core/sysfs.c):
    class/infiniband/DEV/ports/N/state        "4: ACTIVE"  (1 DOWN, 2 INIT, 3 ARMED, 4 ACTIVE,
                                                            5 ACTIVE_DEFER)
    class/infiniband/DEV/ports/N/phys_state   "5: LinkUp"  (2 Polling, 3 Disabled, ...)
    class/infiniband/DEV/ports/N/rate         "100 Gb/sec (4X EDR)"
    class/infiniband/DEV/ports/N/link_layer   InfiniBand | Ethernet (RoCE)
    class/infiniband/DEV/ports/N/counters/*   the IB PortCounters (symbol_error, link_downed,
                                              ...); "N/A (no PMA)" where the HCA has none
    class/infiniband/DEV/ports/N/hw_counters/*   driver counters; soft-RoCE (rdma_rxe) has
                                              only these, link_downed among them
    class/infiniband/DEV/ports/N/gid_attrs/ndevs/0   the netdev of a RoCE port
    class/infiniband/DEV/parent               the netdev soft-RoCE runs on

The IB counters saturate at their width (link_downed at 255) instead of wrapping;
increase() over them is right until they saturate, which is itself a sign.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from nodeslo.links.pci import pci_chain
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

INFINIBAND = "class/infiniband"
STATE_ACTIVE = 4
GIGABIT_BYTES = 125_000_000  # 1 Gb/s in bytes per second

# The port counters that mean trouble: (metric stem, counter file). Read from counters/,
# else from hw_counters/ (where soft-RoCE keeps link_downed).
ERROR_COUNTERS = (
    ("link_downed", "link_downed"),
    ("symbol_errors", "symbol_error"),
    ("link_error_recovery", "link_error_recovery"),
    ("receive_errors", "port_rcv_errors"),
    ("receive_remote_physical_errors", "port_rcv_remote_physical_errors"),
    ("transmit_discards", "port_xmit_discards"),
    ("local_link_integrity_errors", "local_link_integrity_errors"),
    ("excessive_buffer_overrun_errors", "excessive_buffer_overrun_errors"),
)

OnError = Callable[[str, Exception], None]


def parse_state(text: str) -> tuple[int, str]:
    """'4: ACTIVE' -> (4, 'ACTIVE')."""
    number, _, name = text.partition(":")
    try:
        return to_int(number), name.strip()
    except ValueError:
        raise ValueError(f"not a port state: {text.strip()[:40]!r}") from None


def parse_rate(text: str) -> float:
    """'100 Gb/sec (4X EDR)' -> bytes per second (1.25e10)."""
    parts = text.split()
    if len(parts) < 2 or parts[1] != "Gb/sec":
        raise ValueError(f"not a port rate: {text.strip()[:40]!r}")
    try:
        gigabits = float(parts[0])
    except ValueError:
        raise ValueError(f"not a port rate: {text.strip()[:40]!r}") from None
    if not (math.isfinite(gigabits) and gigabits >= 0):
        raise ValueError(f"not a port rate: {text.strip()[:40]!r}")
    return gigabits * GIGABIT_BYTES


def parse_counter(text: str) -> int | None:
    """A counter; None for "N/A (no PMA)" (the HCA keeps no such counter)."""
    text = text.strip()
    if text.startswith("N/A"):
        return None
    try:
        return to_u64(text)
    except ValueError:
        raise ValueError(f"not a counter: {text[:40]!r}") from None


@dataclass(frozen=True)
class RdmaPort:
    """What does not change while the port exists."""

    rdma: str  # mlx5_0, rxe0
    port: str  # 1
    path: str
    link_layer: str
    interface: str  # the netdev of a RoCE port; "" for InfiniBand
    device: str  # PCI address; "" for soft-RoCE


@dataclass(frozen=True)
class PortState:
    state: tuple[int, str] | None
    physical_state: tuple[int, str] | None
    rate_bytes_per_second: float | None
    counters: dict[str, int]

    @property
    def active(self) -> bool | None:
        return None if self.state is None else self.state[0] == STATE_ACTIVE


def _text(path: str) -> str:
    try:
        return read_text(path) or ""
    except ReadError:
        return ""


def ports(roots: Roots) -> tuple[RdmaPort, ...]:
    """Every port of every RDMA device (cold path: once per change of the device set)."""
    base = roots.sys(INFINIBAND)
    found = []
    for rdma in list_dir(base):
        device_dir = f"{base}/{rdma}"
        device_link = f"{device_dir}/device"
        chain = pci_chain(os.path.realpath(device_link)) if os.path.exists(device_link) else []
        parent = _text(f"{device_dir}/parent")
        for port in list_dir(f"{device_dir}/ports"):
            path = f"{device_dir}/ports/{port}"
            found.append(
                RdmaPort(
                    rdma=rdma,
                    port=port,
                    path=path,
                    link_layer=_text(f"{path}/link_layer"),
                    interface=_text(f"{path}/gid_attrs/ndevs/0") or parent,
                    device=chain[-1] if chain else "",
                )
            )
    return tuple(found)


def device_names(roots: Roots) -> tuple[str, ...]:
    return tuple(list_dir(roots.sys(INFINIBAND)))


class PortReader:
    def __init__(self, port: RdmaPort) -> None:
        self.port = port
        self._state = f"{port.path}/state"
        self._physical = f"{port.path}/phys_state"
        self._rate = f"{port.path}/rate"
        self._counters = tuple(
            (stem, f"{port.path}/counters/{name}", f"{port.path}/hw_counters/{name}")
            for stem, name in ERROR_COUNTERS
        )

    def active(self, on_error: OnError) -> bool:
        """The state alone: ACTIVE or not (gone, unreadable: not)."""
        try:
            state = _value(self._state, f"{self.port.rdma}/{self.port.port}", on_error, parse_state)
        except _Absent:
            return False
        return state is not None and state[0] == STATE_ACTIVE

    def read(self, on_error: OnError) -> PortState | None:
        """None when the port vanished."""
        key = f"{self.port.rdma}/{self.port.port}"
        try:
            state = _value(self._state, key, on_error, parse_state)
        except _Absent:
            return None
        physical = _optional(self._physical, key, on_error, parse_state)
        rate = _optional(self._rate, key, on_error, parse_rate)
        counters: dict[str, int] = {}
        for stem, path, fallback in self._counters:
            try:
                value = _value(path, key, on_error, parse_counter)
            except _Absent:
                value = _optional(fallback, key, on_error, parse_counter)
            if value is not None:
                counters[stem] = value
        return PortState(state, physical, rate, counters)


class _Absent(Exception):
    pass


T = TypeVar("T")


def _value(path: str, key: str, on_error: OnError, parse: Callable[[str], T]) -> T | None:
    """The parsed file; None (logged once) when unreadable or malformed; _Absent if absent."""
    try:
        raw = read_small(path)
    except ReadError as exc:
        on_error(f"{key}:{os.path.basename(path)}", exc)
        return None
    if raw is None:
        raise _Absent(path)
    try:
        return parse(raw.decode("ascii", "replace"))
    except ValueError as exc:
        on_error(f"{key}:{os.path.basename(path)}", MalformedValue(path, str(exc)))
        return None


def _optional(path: str, key: str, on_error: OnError, parse: Callable[[str], T]) -> T | None:
    try:
        return _value(path, key, on_error, parse)
    except _Absent:
        return None
