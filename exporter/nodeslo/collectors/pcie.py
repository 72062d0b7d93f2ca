"""PCIe links of the devices the server is bought for, and the ports above them.

Watched: every NVMe controller, network and RDMA function (by driver or PCI class, so
that a drive whose driver failed to bind is watched too) and the devices the profile
names (health.links.pcie_devices); then every port on the way up to the root complex.
SR-IOV virtual functions are left out: they share their physical function's link.
Per function: link speed and width now, the most it can do, and, for functions whose
registers describe the link towards the root (endpoints, switch upstream ports), the
most the link can do: min(its max, its upstream port's max). AER counters per severity
(aer_dev_*) for every function with the AER capability, and a root port's totals of the
errors reported to it from below (aer_rootport_total_err_*), which also covers devices
without AER of their own (QEMU's NVMe).

`device` is the PCI address; `controller`, `serial`, `interface` and `rdma` say what
users call the function, `kind` what it is (nvme, network, rdma, device, root_port,
switch_port). A function whose link registers stop answering ("Unknown", width 255)
exports `nodeslo_pcie_device_responding 0` and no speed it cannot know. A watched
function that vanishes from sysfs keeps exporting `responding 0` with its last labels
until the exporter restarts or reloads its profile (SIGHUP): a drive that fell off the
bus stays visible until someone says it was meant to go.

Static attributes (what is watched, its labels, which port is above it) are read once
per change of the set of PCI devices, NVMe controllers, interfaces or RDMA devices.
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.core import Metric

from nodeslo.collectors.base import Collector, CollectorContext
from nodeslo.collectors.registry import register
from nodeslo.links.pci import (
    ENDPOINT_KINDS,
    IDENTITY_LABELS,
    Discovery,
    Identity,
    LinkReader,
    LinkState,
    PciFunction,
    Selection,
    expected_link,
)
from nodeslo.metrics import Desc, add
from nodeslo.readers import MalformedValue, ReadError, list_dir

L = IDENTITY_LABELS
DEVICE_INFO = Desc(
    "nodeslo_pcie_device_info",
    "gauge",
    "Always 1; a watched PCI function: its port above, driver, vendor, device and class ids.",
    (*L, "upstream", "driver", "vendor_id", "device_id", "class_id"),
)
RESPONDING = Desc(
    "nodeslo_pcie_device_responding",
    "gauge",
    "1 when the function's link registers answer; 0 when they read Unknown / width 255 "
    "(config space not answering) or the function vanished from sysfs.",
    L,
)
SPEED = Desc(
    "nodeslo_pcie_link_speed_transfers_per_second",
    "gauge",
    "Current link speed (current_link_speed), in transfers per second.",
    L,
)
MAX_SPEED = Desc(
    "nodeslo_pcie_link_max_speed_transfers_per_second",
    "gauge",
    "Highest link speed the function supports (max_link_speed), in transfers per second.",
    L,
)
EXPECTED_SPEED = Desc(
    "nodeslo_pcie_link_expected_speed_transfers_per_second",
    "gauge",
    "Speed the link can reach: the lower of the function's and its upstream port's maximum.",
    L,
)
WIDTH = Desc("nodeslo_pcie_link_width", "gauge", "Current link width in lanes.", L)
MAX_WIDTH = Desc(
    "nodeslo_pcie_link_max_width", "gauge", "Widest link the function supports, in lanes.", L
)
EXPECTED_WIDTH = Desc(
    "nodeslo_pcie_link_expected_width",
    "gauge",
    "Width the link can reach: the lower of the function's and its upstream port's maximum.",
    L,
)
AER_ERRORS = Desc(
    "nodeslo_pcie_aer_errors_total",
    "counter",
    "AER errors the function detected, by severity (correctable, nonfatal, fatal).",
    (*L, "aer_severity"),
)
AER_ROOTPORT_ERRORS = Desc(
    "nodeslo_pcie_aer_rootport_errors_total",
    "counter",
    "AER error messages a root port received from the devices below it, by severity.",
    (*L, "aer_severity"),
)
AER_TYPE_ERRORS = Desc(
    "nodeslo_pcie_aer_type_errors_total",
    "counter",
    "AER errors by severity and error type (with --collector.pcie.aer-types).",
    (*L, "aer_severity", "type"),
)

ALL_DESCS = (
    DEVICE_INFO,
    RESPONDING,
    SPEED,
    MAX_SPEED,
    EXPECTED_SPEED,
    WIDTH,
    MAX_WIDTH,
    EXPECTED_WIDTH,
    AER_ERRORS,
    AER_ROOTPORT_ERRORS,
    AER_TYPE_ERRORS,
)


@dataclass(frozen=True)
class _Layout:
    key: tuple[object, ...]
    functions: tuple[tuple[PciFunction, LinkReader], ...]


@register
class PcieCollector(Collector):
    name = "pcie"
    help = "PCIe link speed/width against what the link can reach, and AER errors."

    @classmethod
    def add_arguments(cls, parser: argparse._ArgumentGroup) -> None:
        parser.add_argument(
            "--collector.pcie.aer-types",
            dest="pcie_aer_types",
            action="store_true",
            default=False,
            help="also export AER errors per error type (about 40 series per function)",
        )

    def __init__(self, ctx: CollectorContext) -> None:
        super().__init__(ctx)
        self._discovery = Discovery(ctx.roots)
        self._class_dirs = tuple(
            ctx.roots.sys("class", name) for name in ("nvme", "net", "infiniband")
        )
        self._types = bool(ctx.option("pcie_aer_types", False))
        # Benchmark-only switch (no flag): rediscover the functions every scrape.
        self._cache = bool(ctx.option("cache_static", True))
        self._layout: _Layout | None = None
        # Endpoints seen since start (or the last profile reload): a vanished one stays.
        self._seen: dict[str, Identity] = {}
        self._lock = threading.Lock()

    def profile_changed(self) -> None:
        with self._lock:
            self._layout = None
            self._seen.clear()

    def _current_layout(self) -> _Layout:
        selection = Selection.of(self.ctx.profile().health.links.pcie_devices)
        key = (
            self._discovery.listing(),
            *(tuple(list_dir(d)) for d in self._class_dirs),
            selection,
        )
        if self._layout is None or key != self._layout.key or not self._cache:
            functions = self._discovery.functions(selection, self.skip)
            self._layout = _Layout(key, tuple((f, LinkReader.of(f)) for f in functions))
        return self._layout

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            layout = self._current_layout()
            families = {d: d.family() for d in ALL_DESCS}
            states: dict[str, LinkState | None] = {}
            present: set[str] = set()
            for function, reader in layout.functions:
                if not function.has_link:
                    present.add(function.address)
                    continue
                try:
                    state = reader.link()
                except MalformedValue as exc:
                    self.skip(f"{function.address}:link", exc)
                    present.add(function.address)
                    continue
                if state is not None:
                    present.add(function.address)
                states[function.address] = state
            for function, reader in layout.functions:
                if function.address not in present:
                    continue  # vanished since the layout was read: reported below
                if function.identity.kind in ENDPOINT_KINDS:
                    self._seen[function.address] = function.identity
                self._function(families, function, reader, states)
            for address, identity in sorted(self._seen.items()):
                if address not in present:
                    add(families[RESPONDING], identity.labels(address), 0)
        yield from families.values()

    def _function(
        self,
        families: dict[Desc, Metric],
        function: PciFunction,
        reader: LinkReader,
        states: dict[str, LinkState | None],
    ) -> None:
        labels = function.identity.labels(function.address)
        add(
            families[DEVICE_INFO],
            [
                *labels,
                function.upstream or "",
                function.driver,
                function.vendor_id,
                function.device_id,
                function.class_id,
            ],
            1,
        )
        state = states.get(function.address)
        if state is not None:
            add(families[RESPONDING], labels, 1 if state.responding else 0)
            for desc, value in (
                (SPEED, state.speed),
                (MAX_SPEED, state.max_speed),
                (WIDTH, state.width),
                (MAX_WIDTH, state.max_width),
            ):
                if value is not None:
                    add(families[desc], labels, value)
            if function.faces_up and function.upstream is not None:
                speed, width = expected_link(state, states.get(function.upstream))
                if speed is not None:
                    add(families[EXPECTED_SPEED], labels, speed)
                if width is not None:
                    add(families[EXPECTED_WIDTH], labels, width)
        try:
            aer = reader.aer(self.skip, self._types)
            rootport = reader.rootport_totals(self.skip)
        except ReadError as exc:
            self.skip(f"{function.address}:aer", exc)
            return
        if aer is not None:
            for severity, total in aer.totals.items():
                add(families[AER_ERRORS], [*labels, severity], total)
            if self._types:
                for severity, counts in aer.types.items():
                    for error, count in counts.items():
                        add(families[AER_TYPE_ERRORS], [*labels, severity, error], count)
        if rootport is not None:
            for severity, total in rootport.items():
                add(families[AER_ROOTPORT_ERRORS], [*labels, severity], total)
