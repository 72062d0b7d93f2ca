"""The profile's inventory against the host's facts: one result per line of the spec.

Pure functions of (Inventory, Facts). A result's `compliant` is True or False; a host
that does not report what a line needs (no cache sizes, no MemTotal) does not conform.
The DIMM lines are None without EDAC: nothing to judge, and the missing ECC reporting is
its own finding (ECCReportingAbsent, `nodeslo check`'s ecc_reporting), so the collector
exports no verdict for them and `nodeslo check` skips them. A line the profile leaves
out (null) gives no result.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from nodeslo.inventory.facts import Facts
from nodeslo.profile import Inventory
from nodeslo.units import human_bit_rate, human_bytes, human_transfer_rate


@dataclass(frozen=True)
class InventoryResult:
    item: str
    expected: str
    actual: str
    compliant: bool | None


def evaluate(inventory: Inventory, facts: Facts) -> list[InventoryResult]:
    results: list[InventoryResult | None] = [
        _sockets(inventory, facts),
        _per_socket(inventory.cores_per_socket, "cores_per_socket", facts, "cores"),
        _per_socket(inventory.threads_per_socket, "threads_per_socket", facts, "threads"),
        _llc(inventory, facts),
        _memory(inventory, facts),
        _balance(inventory, facts),
        _dimms(inventory, facts),
        _dimm_size(inventory, facts),
        *_nvme(inventory, facts),
        _network(inventory, facts),
        _rdma(inventory, facts),
    ]
    return [r for r in results if r is not None]


def _join(parts: Iterable[str], limit: int = 6) -> str:
    items = list(parts)
    shown = ", ".join(items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def _sockets(inventory: Inventory, facts: Facts) -> InventoryResult | None:
    if inventory.sockets is None:
        return None
    count = len(facts.sockets)
    wanted = inventory.sockets
    return InventoryResult("sockets", str(wanted), str(count), count == wanted)


def _per_socket(minimum: int | None, item: str, facts: Facts, field: str) -> InventoryResult | None:
    if minimum is None:
        return None
    values = [getattr(s, field) for s in facts.sockets]
    actual = _join(f"{v} on socket {s.socket}" for v, s in zip(values, facts.sockets, strict=True))
    compliant = bool(values) and min(values) >= minimum
    return InventoryResult(item, f"at least {minimum} per socket", actual or "none", compliant)


def _llc(inventory: Inventory, facts: Facts) -> InventoryResult | None:
    minimum = inventory.llc_per_socket_bytes
    if minimum is None:
        return None
    expected = f"at least {human_bytes(minimum)} per socket"
    sizes = [s.llc_bytes for s in facts.sockets]
    if not sizes or None in sizes:
        return InventoryResult("llc_per_socket", expected, "not reported by the kernel", False)
    actual = _join(f"{human_bytes(s.llc_bytes or 0)} on socket {s.socket}" for s in facts.sockets)
    return InventoryResult(
        "llc_per_socket", expected, actual, min(s or 0 for s in sizes) >= minimum
    )


def _memory(inventory: Inventory, facts: Facts) -> InventoryResult | None:
    floor = inventory.memory_floor_bytes
    if floor is None or inventory.memory_bytes is None:
        return None
    expected = f"{human_bytes(inventory.memory_bytes)} (MemTotal at least {human_bytes(floor)})"
    if facts.memory_bytes is None:
        return InventoryResult("memory", expected, "MemTotal not reported", False)
    installed = ""
    if facts.dimms:
        installed = f", {human_bytes(sum(d.size_bytes for d in facts.dimms))} in DIMMs"
    actual = f"MemTotal {human_bytes(facts.memory_bytes)}{installed}"
    return InventoryResult("memory", expected, actual, facts.memory_bytes >= floor)


def _balance(inventory: Inventory, facts: Facts) -> InventoryResult | None:
    if inventory.memory_bytes is None:
        return None  # balance is part of the memory line of the spec
    tolerance = inventory.numa_balance_tolerance_ratio
    expected = f"NUMA nodes within {tolerance:.0%} of each other"
    nodes = facts.node_memory_bytes
    if not nodes:
        return InventoryResult("memory_balance", expected, "no NUMA node memory reported", False)
    largest, smallest = max(nodes.values()), min(nodes.values())
    spread = (largest - smallest) / largest if largest else 0.0
    actual = _join(f"node{n} {human_bytes(b)}" for n, b in nodes.items())
    return InventoryResult(
        "memory_balance", expected, f"{actual} ({spread:.1%} apart)", spread <= tolerance
    )


def _dimms(inventory: Inventory, facts: Facts) -> InventoryResult | None:
    per_socket = inventory.dimms_per_socket
    if per_socket is None:
        return None
    expected = f"{per_socket} per socket"
    if facts.dimms is None:
        return InventoryResult("dimms_per_socket", expected, "no EDAC: DIMMs not reported", None)
    sockets = [s.socket for s in facts.sockets] or ["0"]
    if any(d.socket is None for d in facts.dimms):
        total, wanted = len(facts.dimms), per_socket * len(sockets)
        actual = f"{total} in total (sockets not reported)"
        return InventoryResult("dimms_per_socket", expected, actual, total == wanted)
    counts = {s: 0 for s in sockets}
    for dimm in facts.dimms:
        counts[dimm.socket or ""] = counts.get(dimm.socket or "", 0) + 1
    actual = _join(f"{n} on socket {s}" for s, n in sorted(counts.items()))
    return InventoryResult(
        "dimms_per_socket", expected, actual, all(n == per_socket for n in counts.values())
    )


def _dimm_size(inventory: Inventory, facts: Facts) -> InventoryResult | None:
    if inventory.dimms_per_socket is None and inventory.dimm_size_bytes is None:
        return None
    minimum = inventory.dimm_size_bytes
    expected = "all the same size" + (f", at least {human_bytes(minimum)}" if minimum else "")
    if facts.dimms is None:
        return InventoryResult("dimm_size", expected, "no EDAC: DIMMs not reported", None)
    sizes: dict[int, int] = {}
    for dimm in facts.dimms:
        sizes[dimm.size_bytes] = sizes.get(dimm.size_bytes, 0) + 1
    actual = _join(f"{n} x {human_bytes(size)}" for size, n in sorted(sizes.items()))
    compliant = len(sizes) == 1 and (minimum is None or min(sizes) >= minimum)
    return InventoryResult("dimm_size", expected, actual or "none", compliant and bool(sizes))


def _nvme(inventory: Inventory, facts: Facts) -> list[InventoryResult]:
    nvme = inventory.nvme
    capacity = nvme.capacity_bytes or 0
    data = [d for d in facts.drives if d.capacity_bytes >= capacity]
    out = []
    if nvme.drives is not None:
        expected = f"at least {nvme.drives}" + (
            f" of at least {human_bytes(capacity, binary=False)}" if capacity else ""
        )
        smaller = len(facts.drives) - len(data)
        actual = f"{len(data)}" + (f" (+{smaller} smaller)" if smaller else "")
        out.append(InventoryResult("nvme_drives", expected, actual, len(data) >= nvme.drives))
    speed, width = nvme.link_speed_transfers_per_second, nvme.link_width
    if speed is not None or width is not None:
        wanted = " ".join(
            part
            for part in (
                human_transfer_rate(speed) if speed is not None else "",
                f"x{width}" if width is not None else "",
            )
            if part
        )
        expected = f"at least {wanted} on each data drive"
        short = [
            d
            for d in data
            if d.link_speed is None
            or d.link_width is None
            or (speed is not None and d.link_speed < speed)
            or (width is not None and d.link_width < width)
        ]
        if not data:
            actual = "no data drives"
        elif short:
            actual = _join(
                f"{d.controller} {_link_text(d.link_speed, d.link_width)}" for d in short
            )
        else:
            actual = f"{len(data)} at {wanted} or more"
        out.append(InventoryResult("nvme_link", expected, actual, bool(data) and not short))
    return out


def _link_text(speed: float | None, width: int | None) -> str:
    if speed is None or width is None:
        return "not answering"
    return f"{human_transfer_rate(speed)} x{width}"


def _network(inventory: Inventory, facts: Facts) -> InventoryResult | None:
    network = inventory.network
    speed = network.speed_bytes_per_second
    if speed is None and network.ports is None and not network.interfaces:
        return None
    wanted = network.ports if network.ports is not None else len(network.interfaces)
    at = f" at {human_bit_rate(speed)} or more" if speed is not None else ""
    if network.interfaces:
        expected = f"{', '.join(network.interfaces)} up{at}"
    else:
        expected = f"at least {wanted} interfaces up{at}"
    good = [
        n
        for n in facts.nics
        if n.carrier
        and (
            speed is None
            or (n.speed_bytes_per_second is not None and n.speed_bytes_per_second >= speed)
        )
    ]
    shown = []
    for nic in facts.nics:
        if not nic.carrier:
            shown.append(f"{nic.interface} no carrier")
        elif nic.speed_bytes_per_second is None:
            shown.append(f"{nic.interface} speed unknown")
        else:
            shown.append(f"{nic.interface} {human_bit_rate(nic.speed_bytes_per_second)}")
    actual = _join(shown) if shown else "no physical interfaces"
    if network.interfaces:
        compliant = len(good) == len(facts.nics) and len(good) >= wanted
    else:
        compliant = len(good) >= wanted
    return InventoryResult("network_speed", expected, actual, compliant)


def _rdma(inventory: Inventory, facts: Facts) -> InventoryResult | None:
    wanted = inventory.rdma_ports_active
    if wanted is None:
        return None
    actual = f"{len(facts.rdma_active)}" + (
        f" ({_join(facts.rdma_active)})" if facts.rdma_active else ""
    )
    return InventoryResult(
        "rdma_ports", f"at least {wanted} active", actual, len(facts.rdma_active) >= wanted
    )
