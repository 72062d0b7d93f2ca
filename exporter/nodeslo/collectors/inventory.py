"""The box as specified: the host's inventory and its verdict against the profile.

One `inventory_compliant{item}` (1/0) and `inventory_info{item,expected,actual}` per
line of the profile's `inventory:` section (the lines `nodeslo check` prints), so a
fleet dashboard lists the hosts that differ; and the raw values behind them, so an
alert can compare a host with itself over time (a DIMM that failed to train at the
last boot): sockets, cores and threads and last-level cache per socket, memory in
total (MemTotal) and per NUMA node, DIMMs per socket and their installed size (EDAC),
NVMe capacity per drive. A line the host cannot report (no cache sizes, no MemTotal) is
exported as 0: a host that cannot be shown to conform does not. The DIMM lines without
EDAC have no verdict at all: ECCReportingAbsent is that finding.

The profile is read on every scrape, so a SIGHUP reload changes the expectations at
once. Topology, cache sizes, DIMMs and drive identities are read once per change of
the online CPUs, the EDAC controllers, or the NVMe controllers and block devices; per
scrape: MemTotal, node meminfo, namespace sizes, NVMe links, the data-plane NICs'
carrier and speed, RDMA port states.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from prometheus_client.core import Metric

from nodeslo.collectors.base import Collector, CollectorContext
from nodeslo.collectors.registry import register
from nodeslo.inventory.evaluate import InventoryResult, evaluate
from nodeslo.inventory.facts import FactReader, Facts
from nodeslo.metrics import Desc, add

COMPLIANT = Desc(
    "nodeslo_inventory_compliant",
    "gauge",
    "1 when the host matches the profile's inventory line, 0 when it differs or cannot tell.",
    ("item",),
)
INFO = Desc(
    "nodeslo_inventory_info",
    "gauge",
    "Always 1; what the profile's inventory line expects and what the host has.",
    ("item", "expected", "actual"),
)
SOCKETS = Desc("nodeslo_inventory_sockets", "gauge", "CPU sockets with an online CPU.")
CORES = Desc("nodeslo_inventory_cores", "gauge", "Physical cores online per socket.", ("socket",))
THREADS = Desc("nodeslo_inventory_threads", "gauge", "Logical CPUs online per socket.", ("socket",))
LLC = Desc(
    "nodeslo_inventory_llc_bytes",
    "gauge",
    "Last-level cache per socket, every instance counted once.",
    ("socket",),
)
MEMORY = Desc("nodeslo_inventory_memory_bytes", "gauge", "Memory the kernel manages (MemTotal).")
NODE_MEMORY = Desc(
    "nodeslo_inventory_memory_node_bytes",
    "gauge",
    "Memory the kernel manages per NUMA node (nodeN/meminfo MemTotal).",
    ("node",),
)
DIMMS = Desc(
    "nodeslo_inventory_dimms",
    "gauge",
    "Populated DIMMs EDAC reports, per socket ('unknown' when it does not say which).",
    ("socket",),
)
INSTALLED = Desc(
    "nodeslo_inventory_memory_installed_bytes",
    "gauge",
    "Sum of the sizes of the DIMMs EDAC reports.",
)
NVME_CAPACITY = Desc(
    "nodeslo_inventory_nvme_capacity_bytes",
    "gauge",
    "Capacity of an NVMe drive on PCIe: the sum of its namespaces.",
    ("controller", "serial"),
)


def inventory_families(facts: Facts, results: list[InventoryResult]) -> Iterator[Metric]:
    compliant, info = COMPLIANT.family(), INFO.family()
    for result in results:
        if result.compliant is not None:  # DIMMs without EDAC: ECCReportingAbsent's case
            add(compliant, [result.item], 1 if result.compliant else 0)
        add(info, [result.item, result.expected, result.actual], 1)
    yield compliant
    yield info
    yield SOCKETS.single(len(facts.sockets))
    cores, threads, llc = CORES.family(), THREADS.family(), LLC.family()
    for socket in facts.sockets:
        add(cores, [socket.socket], socket.cores)
        add(threads, [socket.socket], socket.threads)
        if socket.llc_bytes is not None:
            add(llc, [socket.socket], socket.llc_bytes)
    yield from (cores, threads, llc)
    if facts.memory_bytes is not None:
        yield MEMORY.single(facts.memory_bytes)
    nodes = NODE_MEMORY.family()
    for node, size in facts.node_memory_bytes.items():
        add(nodes, [node], size)
    yield nodes
    if facts.dimms is not None:
        counts: dict[str, int] = {}
        for dimm in facts.dimms:
            where = dimm.socket if dimm.socket is not None else "unknown"
            counts[where] = counts.get(where, 0) + 1
        dimms = DIMMS.family()
        for where, count in sorted(counts.items()):
            add(dimms, [where], count)
        yield dimms
        yield INSTALLED.single(sum(d.size_bytes for d in facts.dimms))
    capacity = NVME_CAPACITY.family()
    for drive in facts.drives:
        add(capacity, [drive.controller, drive.serial], drive.capacity_bytes)
    yield capacity


@register
class InventoryCollector(Collector):
    name = "inventory"
    help = "Sockets, cores, cache, memory, DIMMs, drives, NICs against the profile's inventory."

    def __init__(self, ctx: CollectorContext) -> None:
        super().__init__(ctx)
        # Benchmark-only switch (no flag): re-read topology, caches, DIMMs every scrape.
        self._reader = FactReader(ctx.roots, cache=bool(ctx.option("cache_static", True)))
        self._lock = threading.Lock()  # concurrent scrapes share the reader's caches

    def collect(self) -> Iterator[Metric]:
        inventory = self.ctx.profile().inventory
        with self._lock:
            facts = self._reader.read(inventory.network.interfaces, self.skip)
        yield from inventory_families(facts, evaluate(inventory, facts))
