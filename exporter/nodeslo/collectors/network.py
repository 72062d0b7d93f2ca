"""NICs and RDMA ports: is the link there, at the speed bought, and clean?

Interfaces: the physical ones (on a PCI function, virtio included; SR-IOV virtual
functions left out) and those the profile lists as the data plane
(inventory.network.interfaces, which may name a bond). Nothing per bridge, veth, VLAN
or tunnel: a Kubernetes node's hundreds of veths would drown the few links that
matter. `--collector.network.interface-exclude` drops more.

Per interface: administrative state (IFF_UP), carrier, operstate (one-hot), speed in
bytes per second, carrier changes, packets, errors and drops per direction and the error
counters that name a cause (rx_crc_errors: a cable or optic; rx_missed_errors and
rx_fifo_errors: the host did not drain the ring in time; ...). Speed follows the
Prometheus base unit, bytes, as node_exporter's node_network_speed_bytes does: 25 Gb/s
is 3.125e9. A speed of -1 (unknown) is not exported; a speed is exported with the
carrier down, since the kernel keeps the last one (the alerts look at carrier first).

`nodeslo_network_expected_up` marks the interfaces that must have carrier: those the
profile lists (present or not) and those that had carrier since the exporter started or
reloaded its profile, including ones that vanished from sysfs since. `..._data_plane`
marks the listed ones, held to the inventory's speed.

RDMA ports (InfiniBand, RoCE, soft-RoCE): state and physical state (the kernel's
numbers, as node_exporter's state_id), active, rate in bytes per second, and the IB
error counters (from counters/, else hw_counters/ where soft-RoCE keeps link_downed).
`nodeslo_rdma_port_expected_active` marks ports seen active since start or reload.
"""

from __future__ import annotations

import argparse
import re
import threading
from collections.abc import Iterator

from prometheus_client.core import Metric

from nodeslo.collectors.base import Collector, CollectorContext
from nodeslo.collectors.registry import register
from nodeslo.links import netclass, rdma
from nodeslo.links.netclass import OPERSTATES, Interface, InterfaceReader
from nodeslo.links.rdma import ERROR_COUNTERS, PortReader
from nodeslo.metrics import Desc, add
from nodeslo.readers import ReadError

IF = ("interface",)
INFO = Desc(
    "nodeslo_network_info",
    "gauge",
    "Always 1; a watched interface, its PCI function and driver.",
    ("interface", "device", "driver"),
)
ADMIN_UP = Desc("nodeslo_network_admin_up", "gauge", "1 when the interface is set up (IFF_UP).", IF)
CARRIER = Desc(
    "nodeslo_network_carrier",
    "gauge",
    "1 when the interface has a link (carrier); 0 without, or while set down.",
    IF,
)
OPERSTATE = Desc(
    "nodeslo_network_operstate",
    "gauge",
    "1 for the interface's RFC 2863 operational state, 0 for the others.",
    ("interface", "state"),
)
SPEED = Desc(
    "nodeslo_network_speed_bytes_per_second",
    "gauge",
    "Negotiated link speed in bytes per second (absent when the driver does not know it). "
    "Kept by the kernel when the carrier drops.",
    IF,
)
CARRIER_CHANGES = Desc(
    "nodeslo_network_carrier_changes_total",
    "counter",
    "Times the carrier came or went (carrier_changes).",
    IF,
)
PACKETS = Desc(
    "nodeslo_network_packets_total",
    "counter",
    "Packets received or transmitted.",
    ("interface", "direction"),
)
ERRORS = Desc(
    "nodeslo_network_errors_total",
    "counter",
    "Packets received or transmitted with errors (rx_errors, tx_errors).",
    ("interface", "direction"),
)
DROPS = Desc(
    "nodeslo_network_drops_total",
    "counter",
    "Packets dropped by the interface or its driver (rx_dropped, tx_dropped).",
    ("interface", "direction"),
)
ERROR_DETAILS = Desc(
    "nodeslo_network_error_details_total",
    "counter",
    "Error counters that name a cause, by statistics file (rx_crc_errors, rx_missed_errors, "
    "rx_fifo_errors, tx_carrier_errors, ...).",
    ("interface", "counter"),
)
EXPECTED_UP = Desc(
    "nodeslo_network_expected_up",
    "gauge",
    "1 for an interface that must have carrier: listed in the profile, or had carrier since "
    "the exporter started or reloaded (vanished ones included).",
    IF,
)
DATA_PLANE = Desc(
    "nodeslo_network_data_plane",
    "gauge",
    "1 for an interface the profile lists as data plane (inventory.network.interfaces).",
    IF,
)

P = ("rdma", "port")
RDMA_INFO = Desc(
    "nodeslo_rdma_port_info",
    "gauge",
    "Always 1; an RDMA port, its link layer, network interface (RoCE) and PCI function.",
    ("rdma", "port", "link_layer", "interface", "device"),
)
RDMA_STATE = Desc(
    "nodeslo_rdma_port_state_id",
    "gauge",
    "Port state: 1 DOWN, 2 INIT, 3 ARMED, 4 ACTIVE, 5 ACTIVE_DEFER.",
    P,
)
RDMA_PHYSICAL_STATE = Desc(
    "nodeslo_rdma_port_physical_state_id",
    "gauge",
    "Physical port state: 1 Sleep, 2 Polling, 3 Disabled, 4 PortConfigurationTraining, "
    "5 LinkUp, 6 LinkErrorRecovery, 7 PhyTest.",
    P,
)
RDMA_ACTIVE = Desc("nodeslo_rdma_port_active", "gauge", "1 when the port is ACTIVE.", P)
RDMA_RATE = Desc(
    "nodeslo_rdma_port_rate_bytes_per_second",
    "gauge",
    "Port rate (rate) in bytes per second.",
    P,
)
RDMA_EXPECTED = Desc(
    "nodeslo_rdma_port_expected_active",
    "gauge",
    "1 for a port seen ACTIVE since the exporter started or reloaded (vanished ones included).",
    P,
)
RDMA_COUNTERS = {
    stem: Desc(
        f"nodeslo_rdma_port_{stem}_total",
        "counter",
        f"IB port counter {name} (counters/, else hw_counters/).",
        P,
    )
    for stem, name in ERROR_COUNTERS
}

INTERFACE_DESCS = (
    INFO,
    ADMIN_UP,
    CARRIER,
    OPERSTATE,
    SPEED,
    CARRIER_CHANGES,
    PACKETS,
    ERRORS,
    DROPS,
    ERROR_DETAILS,
    EXPECTED_UP,
    DATA_PLANE,
)
RDMA_DESCS = (
    RDMA_INFO,
    RDMA_STATE,
    RDMA_PHYSICAL_STATE,
    RDMA_ACTIVE,
    RDMA_RATE,
    RDMA_EXPECTED,
    *RDMA_COUNTERS.values(),
)
DIRECTIONS = (
    (PACKETS, netclass.PACKETS),
    (ERRORS, netclass.ERRORS),
    (DROPS, netclass.DROPS),
)


@register
class NetworkCollector(Collector):
    name = "network"
    help = "NIC carrier, speed, flaps and errors; RDMA port state, rate and link errors."

    @classmethod
    def add_arguments(cls, parser: argparse._ArgumentGroup) -> None:
        parser.add_argument(
            "--collector.network.interface-exclude",
            dest="network_interface_exclude",
            default="^$",
            metavar="REGEX",
            help="interfaces to leave out even when physical (default: none)",
        )

    def __init__(self, ctx: CollectorContext) -> None:
        super().__init__(ctx)
        self._exclude = re.compile(str(ctx.option("network_interface_exclude", "^$")))
        self._cache = bool(ctx.option("cache_static", True))
        self._interfaces: dict[str, InterfaceReader] = {}
        self._not_watched: set[str] = set()
        self._had_carrier: set[str] = set()
        self._rdma_key: tuple[str, ...] | None = None
        self._ports: tuple[PortReader, ...] = ()
        self._was_active: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def profile_changed(self) -> None:
        with self._lock:
            self._interfaces.clear()
            self._not_watched.clear()
            self._had_carrier.clear()
            self._was_active.clear()

    def collect(self) -> Iterator[Metric]:
        listed = self.ctx.profile().inventory.network.interfaces
        with self._lock:
            yield from self._interface_families(listed)
            yield from self._rdma_families()

    # --- interfaces ---------------------------------------------------------------------

    def _watched(self, listed: tuple[str, ...]) -> list[InterfaceReader]:
        names = netclass.names(self.ctx.roots)
        if not self._cache:
            self._interfaces.clear()
            self._not_watched.clear()
        for gone in set(self._interfaces) - set(names):
            del self._interfaces[gone]
        self._not_watched &= set(names)
        for name in names:
            if name in self._interfaces or name in self._not_watched:
                continue
            interface = netclass.describe(self.ctx.roots, name)
            if interface is None:
                continue
            if (interface.physical and not self._exclude.search(name)) or name in listed:
                self._interfaces[name] = InterfaceReader(interface)
            else:
                self._not_watched.add(name)
        return [self._interfaces[n] for n in names if n in self._interfaces]

    def _interface_families(self, listed: tuple[str, ...]) -> Iterator[Metric]:
        families = {d: d.family() for d in INTERFACE_DESCS}
        for reader in self._watched(listed):
            interface = reader.interface
            state = reader.read(self.skip)
            if state is None:
                continue  # vanished between listing and reading
            self._interface(families, interface, state)
        for name in sorted(self._had_carrier | set(listed)):
            add(families[EXPECTED_UP], [name], 1)
        for name in listed:
            add(families[DATA_PLANE], [name], 1)
        yield from families.values()

    def _interface(
        self,
        families: dict[Desc, Metric],
        interface: Interface,
        state: netclass.InterfaceState,
    ) -> None:
        name = interface.name
        add(families[INFO], [name, interface.device, interface.driver], 1)
        if state.admin_up is not None:
            add(families[ADMIN_UP], [name], 1 if state.admin_up else 0)
        if state.carrier is not None:
            add(families[CARRIER], [name], 1 if state.carrier else 0)
            if state.carrier:
                self._had_carrier.add(name)
        if state.operstate is not None:
            for candidate in OPERSTATES:
                add(families[OPERSTATE], [name, candidate], state.operstate == candidate)
        if state.speed_bytes_per_second is not None:
            add(families[SPEED], [name], state.speed_bytes_per_second)
        if state.carrier_changes is not None:
            add(families[CARRIER_CHANGES], [name], state.carrier_changes)
        stats = state.statistics
        for desc, files in DIRECTIONS:
            for direction, file in files:
                if file in stats:
                    add(families[desc], [name, direction], stats[file])
        for file in netclass.ERROR_DETAILS:
            if file in stats:
                add(families[ERROR_DETAILS], [name, file], stats[file])

    # --- RDMA ports ---------------------------------------------------------------------

    def _rdma_readers(self) -> tuple[PortReader, ...]:
        key = rdma.device_names(self.ctx.roots)
        if key != self._rdma_key or not self._cache:
            self._ports = tuple(PortReader(p) for p in rdma.ports(self.ctx.roots))
            self._rdma_key = key
        return self._ports

    def _rdma_families(self) -> Iterator[Metric]:
        families = {d: d.family() for d in RDMA_DESCS}
        for reader in self._rdma_readers():
            port = reader.port
            try:
                state = reader.read(self.skip)
            except ReadError as exc:
                self.skip(f"{port.rdma}/{port.port}", exc)
                continue
            if state is None:
                continue
            labels = [port.rdma, port.port]
            add(
                families[RDMA_INFO],
                [*labels, port.link_layer, port.interface, port.device],
                1,
            )
            if state.state is not None:
                add(families[RDMA_STATE], labels, state.state[0])
                add(families[RDMA_ACTIVE], labels, 1 if state.active else 0)
                if state.active:
                    self._was_active.add((port.rdma, port.port))
            if state.physical_state is not None:
                add(families[RDMA_PHYSICAL_STATE], labels, state.physical_state[0])
            if state.rate_bytes_per_second is not None:
                add(families[RDMA_RATE], labels, state.rate_bytes_per_second)
            for stem, value in state.counters.items():
                add(families[RDMA_COUNTERS[stem]], labels, value)
        for rdma_name, port_name in sorted(self._was_active):
            add(families[RDMA_EXPECTED], [rdma_name, port_name], 1)
        yield from families.values()
