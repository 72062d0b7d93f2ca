"""ECC memory errors per memory controller and per DIMM, from the EDAC subsystem.

Layout (Documentation/admin-guide/ras.rst, drivers/edac/edac_mc_sysfs.c):
    /sys/devices/system/edac/mc/mcN/{ce_count,ue_count,ce_noinfo_count,ue_noinfo_count,mc_name}
    mcN/dimmK/ or mcN/rankK/ {dimm_ce_count,dimm_ue_count,dimm_label,dimm_mem_type,dimm_edac_mode}
    mcN/csrowK/{chJ_ce_count,chJ_dimm_label,ue_count,mem_type,edac_mode}  (legacy layout)
Kernels built with EDAC_LEGACY_SYSFS show both layouts for the same memory; the
dimm/rank entries win so no error is counted twice. noinfo counts are errors the
driver could not attribute to a DIMM; they are part of the controller's totals.

No controller at all is exported as `nodeslo_edac_memory_controllers 0`: a server
whose ECC errors nobody reports is itself a finding (DESIGN: "ECC reporting absent").
The per-controller layout (DIMM directories, labels, paths) is static while the driver
is loaded, so it is read once and rebuilt only when the set of controllers changes or
one of its files vanishes (driver reload).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import Metric

from nodeslo.collectors.base import Collector, CollectorContext
from nodeslo.collectors.registry import register
from nodeslo.metrics import Desc, add
from nodeslo.paths import Roots
from nodeslo.readers import ReadError, list_dir, read_int, read_text

MEMORY_CONTROLLERS = Desc(
    "nodeslo_edac_memory_controllers",
    "gauge",
    "EDAC memory controllers reporting ECC errors; 0 means ECC errors are not reported at all.",
)
CONTROLLER_INFO = Desc(
    "nodeslo_edac_controller_info",
    "gauge",
    "Always 1; the name the EDAC driver gives the memory controller.",
    ("controller", "name"),
)
CORRECTABLE = Desc(
    "nodeslo_edac_correctable_errors_total",
    "counter",
    "Correctable ECC errors on the memory controller (ce_count).",
    ("controller",),
)
UNCORRECTABLE = Desc(
    "nodeslo_edac_uncorrectable_errors_total",
    "counter",
    "Uncorrectable ECC errors on the memory controller (ue_count).",
    ("controller",),
)
CORRECTABLE_NOINFO = Desc(
    "nodeslo_edac_noinfo_correctable_errors_total",
    "counter",
    "Correctable ECC errors the driver could not attribute to a DIMM (ce_noinfo_count).",
    ("controller",),
)
UNCORRECTABLE_NOINFO = Desc(
    "nodeslo_edac_noinfo_uncorrectable_errors_total",
    "counter",
    "Uncorrectable ECC errors the driver could not attribute to a DIMM (ue_noinfo_count).",
    ("controller",),
)
DIMM_CORRECTABLE = Desc(
    "nodeslo_edac_dimm_correctable_errors_total",
    "counter",
    "Correctable ECC errors on one DIMM (or rank, or legacy csrow channel).",
    ("controller", "dimm", "label"),
)
DIMM_UNCORRECTABLE = Desc(
    "nodeslo_edac_dimm_uncorrectable_errors_total",
    "counter",
    "Uncorrectable ECC errors on one DIMM or rank (the legacy csrow layout has none per channel).",
    ("controller", "dimm", "label"),
)
DIMM_INFO = Desc(
    "nodeslo_edac_dimm_info",
    "gauge",
    "Always 1; the DIMM's memory type and the ECC mode the controller runs it in.",
    ("controller", "dimm", "label", "mem_type", "edac_mode"),
)

EDAC_MC_DIR = "devices/system/edac/mc"
_CONTROLLER = re.compile(r"^mc(\d+)$")
_DIMM = re.compile(r"^(dimm|rank)(\d+)$")
_CSROW = re.compile(r"^csrow(\d+)$")
_CHANNEL_CE = re.compile(r"^ch(\d+)_ce_count$")

# Called with (key, error) for a value that could not be read; the reader skips it.
OnError = Callable[[str, Exception], None]


@dataclass(frozen=True)
class DimmLayout:
    dimm: str  # "dimm3", "rank3" or "csrow1_ch0"
    label: str
    mem_type: str
    edac_mode: str
    ce_path: str
    ue_path: str | None  # the legacy per-channel layout counts no UE per channel


@dataclass(frozen=True)
class ControllerLayout:
    controller: str  # "0" for mc0
    name: str
    ce_path: str
    ue_path: str
    ce_noinfo_path: str
    ue_noinfo_path: str
    dimms: tuple[DimmLayout, ...]


@dataclass(frozen=True)
class DimmCounts:
    dimm: str
    label: str
    mem_type: str
    edac_mode: str
    correctable: int | None
    uncorrectable: int | None


@dataclass(frozen=True)
class ControllerCounts:
    controller: str
    name: str
    correctable: int | None
    uncorrectable: int | None
    correctable_noinfo: int | None
    uncorrectable_noinfo: int | None
    dimms: tuple[DimmCounts, ...]


@dataclass(frozen=True)
class EdacSnapshot:
    controllers: tuple[ControllerCounts, ...]

    @property
    def uncorrectable(self) -> int:
        return sum(c.uncorrectable or 0 for c in self.controllers)

    @property
    def correctable(self) -> int:
        return sum(c.correctable or 0 for c in self.controllers)

    def dimms_without_ecc(self) -> list[str]:
        """DIMMs the controller runs with no error correction at all (edac_mode None)."""
        return [
            f"mc{c.controller}/{d.dimm}"
            for c in self.controllers
            for d in c.dimms
            if d.edac_mode == "None"
        ]


def _text(path: str) -> str:
    try:
        return read_text(path) or ""
    except ReadError:
        return ""


def _number_key(name: str) -> tuple[str, int]:
    """dimm10 after dimm9: sort by prefix, then number."""
    match = re.match(r"^(\D*)(\d+)", name)
    return (match.group(1), int(match.group(2))) if match else (name, -1)


def read_layout(mc_dir: str, controller: str) -> ControllerLayout:
    """One controller's files and DIMMs (cold path: once per driver load)."""
    entries = list_dir(mc_dir)
    dimms: list[DimmLayout] = []
    for entry in sorted((e for e in entries if _DIMM.match(e)), key=_number_key):
        base = f"{mc_dir}/{entry}"
        dimms.append(
            DimmLayout(
                dimm=entry,
                label=_text(f"{base}/dimm_label"),
                mem_type=_text(f"{base}/dimm_mem_type"),
                edac_mode=_text(f"{base}/dimm_edac_mode"),
                ce_path=f"{base}/dimm_ce_count",
                ue_path=f"{base}/dimm_ue_count",
            )
        )
    if not dimms:
        for entry in sorted((e for e in entries if _CSROW.match(e)), key=_number_key):
            base = f"{mc_dir}/{entry}"
            mem_type, edac_mode = _text(f"{base}/mem_type"), _text(f"{base}/edac_mode")
            channels = sorted(
                (int(m.group(1)) for m in map(_CHANNEL_CE.match, list_dir(base)) if m),
            )
            for channel in channels:
                dimms.append(
                    DimmLayout(
                        dimm=f"{entry}_ch{channel}",
                        label=_text(f"{base}/ch{channel}_dimm_label"),
                        mem_type=mem_type,
                        edac_mode=edac_mode,
                        ce_path=f"{base}/ch{channel}_ce_count",
                        ue_path=None,
                    )
                )
    return ControllerLayout(
        controller=controller,
        name=_text(f"{mc_dir}/mc_name"),
        ce_path=f"{mc_dir}/ce_count",
        ue_path=f"{mc_dir}/ue_count",
        ce_noinfo_path=f"{mc_dir}/ce_noinfo_count",
        ue_noinfo_path=f"{mc_dir}/ue_noinfo_count",
        dimms=tuple(dimms),
    )


class EdacReader:
    """Reads every controller's counters; caches the layout between driver (re)loads."""

    def __init__(self, roots: Roots, cache_layout: bool = True) -> None:
        self._mc_root = roots.sys(EDAC_MC_DIR)
        self._cache_layout = cache_layout
        self._names: tuple[str, ...] | None = None
        self._layouts: tuple[ControllerLayout, ...] = ()
        self._stale = False

    def _layout(self) -> tuple[ControllerLayout, ...]:
        names = tuple(n for n in list_dir(self._mc_root) if _CONTROLLER.match(n))
        if names != self._names or self._stale or not self._cache_layout:
            ordered = sorted(names, key=_number_key)
            self._layouts = tuple(
                read_layout(f"{self._mc_root}/{name}", name[2:]) for name in ordered
            )
            self._names = names
            self._stale = False
        return self._layouts

    def _count(self, path: str, key: str, on_error: OnError) -> int | None:
        try:
            return read_int(path)
        except ReadError as exc:
            on_error(key, exc)
            return None

    def read(self, on_error: OnError) -> EdacSnapshot:
        controllers = []
        for layout in self._layout():
            mc = f"mc{layout.controller}"
            correctable = self._count(layout.ce_path, mc, on_error)
            if correctable is None and not os.path.isdir(f"{self._mc_root}/{mc}"):
                self._stale = True  # the driver went away under us: re-read the layout
                continue
            dimms = tuple(
                DimmCounts(
                    dimm=d.dimm,
                    label=d.label,
                    mem_type=d.mem_type,
                    edac_mode=d.edac_mode,
                    correctable=self._count(d.ce_path, f"{mc}/{d.dimm}", on_error),
                    uncorrectable=(
                        None
                        if d.ue_path is None
                        else self._count(d.ue_path, f"{mc}/{d.dimm}", on_error)
                    ),
                )
                for d in layout.dimms
            )
            controllers.append(
                ControllerCounts(
                    controller=layout.controller,
                    name=layout.name,
                    correctable=correctable,
                    uncorrectable=self._count(layout.ue_path, mc, on_error),
                    correctable_noinfo=self._count(layout.ce_noinfo_path, mc, on_error),
                    uncorrectable_noinfo=self._count(layout.ue_noinfo_path, mc, on_error),
                    dimms=dimms,
                )
            )
        return EdacSnapshot(tuple(controllers))


@register
class EdacCollector(Collector):
    name = "edac"
    help = "ECC memory errors per memory controller and DIMM (EDAC)."

    def __init__(self, ctx: CollectorContext) -> None:
        super().__init__(ctx)
        # Benchmark-only switch (no flag): re-read DIMM directories and labels every scrape.
        self._reader = EdacReader(ctx.roots, cache_layout=bool(ctx.option("cache_static", True)))
        self._lock = threading.Lock()  # concurrent scrapes share the cached layout

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            snapshot = self._reader.read(self.skip)
        yield MEMORY_CONTROLLERS.single(len(snapshot.controllers))
        info, ce, ue = CONTROLLER_INFO.family(), CORRECTABLE.family(), UNCORRECTABLE.family()
        ce_noinfo, ue_noinfo = CORRECTABLE_NOINFO.family(), UNCORRECTABLE_NOINFO.family()
        dimm_ce, dimm_ue = DIMM_CORRECTABLE.family(), DIMM_UNCORRECTABLE.family()
        dimm_info = DIMM_INFO.family()
        for c in snapshot.controllers:
            mc = [c.controller]
            add(info, [c.controller, c.name], 1)
            for family, count in (
                (ce, c.correctable),
                (ue, c.uncorrectable),
                (ce_noinfo, c.correctable_noinfo),
                (ue_noinfo, c.uncorrectable_noinfo),
            ):
                if count is not None:
                    add(family, mc, count)
            for d in c.dimms:
                labels = [c.controller, d.dimm, d.label]
                add(dimm_info, [*labels, d.mem_type, d.edac_mode], 1)
                if d.correctable is not None:
                    add(dimm_ce, labels, d.correctable)
                if d.uncorrectable is not None:
                    add(dimm_ue, labels, d.uncorrectable)
        yield from (info, ce, ue, ce_noinfo, ue_noinfo, dimm_ce, dimm_ue, dimm_info)
