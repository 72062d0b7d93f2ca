"""One pass over the watched PCIe functions for `nodeslo check`: which links trained
below what they can reach, which functions do not answer, which counted uncorrectable
AER errors since boot. The same discovery and readers as the pcie collector."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from nodeslo.links.pci import (
    ENDPOINT_KINDS,
    Discovery,
    LinkReader,
    LinkState,
    PciFunction,
    Selection,
    expected_link,
)
from nodeslo.paths import Roots
from nodeslo.readers import MalformedValue
from nodeslo.units import human_transfer_rate

OnError = Callable[[str, Exception], None]


@dataclass
class PcieSurvey:
    endpoints: int = 0
    degraded: list[str] = field(default_factory=list)  # "nvme3 (0000:34:00.0) x2 < x4"
    unresponsive: list[str] = field(default_factory=list)
    uncorrectable: list[str] = field(default_factory=list)


def name(function: PciFunction) -> str:
    identity = function.identity
    known = identity.controller or identity.interface or identity.rdma
    return f"{known} ({function.address})" if known else function.address


def _shortfall(state: LinkState, upstream: LinkState | None) -> str | None:
    speed, width = expected_link(state, upstream)
    parts = []
    if speed is not None and state.speed is not None and state.speed < speed:
        parts.append(f"{human_transfer_rate(state.speed)} < {human_transfer_rate(speed)}")
    if width is not None and state.width is not None and state.width < width:
        parts.append(f"x{state.width} < x{width}")
    return ", ".join(parts) or None


def survey(roots: Roots, devices: tuple[str, ...], on_error: OnError) -> PcieSurvey:
    functions = Discovery(roots).functions(Selection.of(devices), on_error)
    readers = {f.address: LinkReader.of(f) for f in functions}
    states: dict[str, LinkState | None] = {}
    for function in functions:
        if function.has_link:
            try:
                states[function.address] = readers[function.address].link()
            except MalformedValue as exc:
                on_error(function.address, exc)
    report = PcieSurvey()
    for function in functions:
        reader = readers[function.address]
        state = states.get(function.address)
        if function.identity.kind in ENDPOINT_KINDS:
            report.endpoints += 1
        if state is not None and not state.responding:
            report.unresponsive.append(name(function))
        elif state is not None and function.faces_up and function.upstream:
            shortfall = _shortfall(state, states.get(function.upstream))
            if shortfall:
                report.degraded.append(f"{name(function)} {shortfall}")
        aer = reader.aer(on_error)
        errors = sum((aer.totals if aer else {}).get(s, 0) for s in ("nonfatal", "fatal"))
        rootport = reader.rootport_totals(on_error) or {}
        errors += rootport.get("nonfatal", 0) + rootport.get("fatal", 0)
        if errors:
            report.uncorrectable.append(f"{name(function)} {errors}")
    return report
