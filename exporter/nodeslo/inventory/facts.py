"""What the host has: sockets, cores, cache, memory, DIMMs, drives, NICs, RDMA ports.

Sources, all readable unprivileged:
- CPUs: the online CPUs' topology (package, core) and their last-level cache
  (cpuN/cache/indexK/{level,type,size,shared_cpu_list}: the highest level that holds
  data, each instance counted once; AMD has one L3 per CCX, so several per socket).
- Memory: MemTotal of /proc/meminfo and of each node's nodeN/meminfo.
- DIMMs: EDAC's mcN/dimmK/size (MiB; EDAC lists populated slots only), the socket from
  the controller's name ("Socket#1" on Intel) or the DIMM label ("CPU_SrcID#1").
- NVMe: class/nvme/nvmeX over PCIe, its namespaces' sizes (512-byte sectors) and the
  link of its PCI function.
- NICs: carrier and speed of the data-plane interfaces (links/netclass.py).
- RDMA: ports in state ACTIVE (links/rdma.py).
Static parts (topology, cache sizes, DIMMs, drive identities) are read once per change
of the CPUs online, the EDAC controllers or the NVMe controllers and block devices.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass

from nodeslo.cpus import Topology, parse_cpu_list
from nodeslo.links import netclass, rdma
from nodeslo.links.pci import LinkReader, pci_chain
from nodeslo.paths import Roots
from nodeslo.readers import (
    MalformedValue,
    ReadError,
    list_dir,
    read_all,
    read_int,
    read_text,
    to_int,
    to_u64,
)

OnError = Callable[[str, Exception], None]

EDAC_MC = "devices/system/edac/mc"
NODE_DIR = "devices/system/node"
SECTOR = 512
KIB = 1024
MIB = 1024**2
_CONTROLLER = re.compile(r"^mc(\d+)$")
_DIMM = re.compile(r"^(dimm|rank)(\d+)$")
_SOCKET_IN_NAME = re.compile(r"Socket#(\d+)")
_SOCKET_IN_LABEL = re.compile(r"SrcID#(\d+)")
_NAMESPACE = re.compile(r"^nvme\d+(?:c\d+)?n\d+$")
_CACHE_SIZE = re.compile(r"^(\d+)([KMG]?)$")
_MEMTOTAL = re.compile(rb"^(?:Node \d+ )?MemTotal:\s+(\d+) kB", re.MULTILINE)


@dataclass(frozen=True)
class Socket:
    socket: str
    cores: int
    threads: int
    llc_bytes: int | None  # None: the kernel reports no cache for these CPUs


@dataclass(frozen=True)
class Dimm:
    controller: str
    dimm: str
    label: str
    size_bytes: int
    socket: str | None  # None: no way to tell from the controller name or label


@dataclass(frozen=True)
class Drive:
    controller: str
    serial: str
    model: str
    device: str  # PCI address
    capacity_bytes: int
    link_speed: float | None  # current; None when the register did not answer
    link_width: int | None


@dataclass(frozen=True)
class Nic:
    interface: str
    carrier: bool
    speed_bytes_per_second: float | None


@dataclass(frozen=True)
class Facts:
    sockets: tuple[Socket, ...]
    memory_bytes: int | None
    node_memory_bytes: dict[str, int]
    dimms: tuple[Dimm, ...] | None  # None: no EDAC driver, DIMMs unknown
    drives: tuple[Drive, ...]
    nics: tuple[Nic, ...]
    rdma_active: tuple[str, ...]  # "mlx5_0/1" of every ACTIVE port


# --- pure decoders ---------------------------------------------------------------------


def parse_cache_size(text: str) -> int:
    """'32768K' -> bytes."""
    match = _CACHE_SIZE.match(text.strip())
    if not match:
        raise ValueError(f"not a cache size: {text.strip()[:40]!r}")
    scale = {"": 1, "K": KIB, "M": MIB, "G": 1024**3}[match.group(2)]
    return to_u64(match.group(1)) * scale


def parse_memtotal(text: bytes) -> int | None:
    """MemTotal of /proc/meminfo or nodeN/meminfo, in bytes; None when absent;
    ValueError for a number no kernel prints."""
    match = _MEMTOTAL.search(text)
    return to_u64(match.group(1)) * KIB if match else None


def dimm_socket(controller_name: str, label: str) -> str | None:
    for pattern, text in ((_SOCKET_IN_NAME, controller_name), (_SOCKET_IN_LABEL, label)):
        match = pattern.search(text)
        if match:
            return match.group(1)
    return None


# --- readers ----------------------------------------------------------------------------


def _text(path: str) -> str:
    try:
        return read_text(path) or ""
    except ReadError:
        return ""


def _memtotal(path: str, key: str, raw: bytes, on_error: OnError) -> int | None:
    try:
        return parse_memtotal(raw)
    except ValueError as exc:
        on_error(f"{key}:MemTotal", MalformedValue(path, str(exc)))
        return None


class FactReader:
    """Reads the host's facts; caches what does not change while the hardware does not."""

    def __init__(self, roots: Roots, topology: Topology | None = None, cache: bool = True) -> None:
        self.roots = roots
        self.topology = topology or Topology(roots)
        self._cache = cache
        self._cpu_key: object = None
        self._sockets: tuple[Socket, ...] = ()
        self._mc_key: tuple[str, ...] | None = None
        self._dimms: tuple[Dimm, ...] | None = None
        self._nvme_key: tuple[object, ...] | None = None
        self._drives: tuple[tuple[Drive, tuple[str, ...], LinkReader | None], ...] = ()
        self._nic_key: tuple[object, ...] | None = None
        self._nic_readers: tuple[tuple[str, netclass.InterfaceReader | None], ...] = ()
        self._rdma_key: tuple[str, ...] | None = None
        self._ports: tuple[rdma.PortReader, ...] = ()

    def read(self, interfaces: tuple[str, ...], on_error: OnError) -> Facts:
        if not self._cache:  # benchmarks: the cost of working it all out every time
            self._cpu_key = self._mc_key = self._nvme_key = self._nic_key = self._rdma_key = None
        return Facts(
            sockets=self.sockets(),
            memory_bytes=self.memory(on_error),
            node_memory_bytes=self.node_memory(on_error),
            dimms=self.dimms(),
            drives=self.drives(on_error),
            nics=self.nics(interfaces, on_error),
            rdma_active=self.rdma_active(on_error),
        )

    # CPUs and caches

    def sockets(self) -> tuple[Socket, ...]:
        cpus = self.topology.online()
        if cpus is not self._cpu_key:
            packages: dict[str, list[int]] = {}
            cores: dict[str, set[str]] = {}
            for cpu in cpus:
                packages.setdefault(cpu.package, []).append(cpu.cpu)
                cores.setdefault(cpu.package, set()).add(cpu.core)
            self._sockets = tuple(
                Socket(package, len(cores[package]), len(members), self._llc(members))
                for package, members in sorted(packages.items(), key=lambda kv: int(kv[0]))
            )
            self._cpu_key = cpus
        return self._sockets

    def _llc(self, cpus: list[int]) -> int | None:
        """Sum of the distinct last-level cache instances the CPUs use."""
        instances: dict[str, int] = {}
        covered: set[int] = set()
        for cpu in cpus:
            if cpu in covered:
                continue
            found = self._llc_of(cpu)
            if found is None:
                return None
            shared, size = found
            instances[shared] = size
            try:
                covered.update(parse_cpu_list(shared))
            except ValueError:
                covered.add(cpu)
        return sum(instances.values()) if instances else None

    def _llc_of(self, cpu: int) -> tuple[str, int] | None:
        """(shared_cpu_list, size) of the highest cache level holding data."""
        base = self.topology.cpu_path(cpu, "cache")
        best: tuple[int, str, int] | None = None
        for index in list_dir(base):
            if not index.startswith("index"):
                continue
            path = f"{base}/{index}"
            if _text(f"{path}/type") == "Instruction":
                continue
            try:
                level = to_int(_text(f"{path}/level") or "0")
                size = parse_cache_size(_text(f"{path}/size") or "0")
            except ValueError:
                continue
            if best is None or level > best[0]:
                best = (level, _text(f"{path}/shared_cpu_list") or str(cpu), size)
        return None if best is None else (best[1], best[2])

    # memory

    def memory(self, on_error: OnError) -> int | None:
        path = self.roots.proc("meminfo")
        try:
            raw = read_all(path)
        except ReadError as exc:
            on_error("meminfo", exc)
            return None
        return None if raw is None else _memtotal(path, "meminfo", raw, on_error)

    def node_memory(self, on_error: OnError) -> dict[str, int]:
        base = self.roots.sys(NODE_DIR)
        out: dict[str, int] = {}
        for entry in list_dir(base):
            if not (entry.startswith("node") and entry[4:].isdigit()):
                continue
            try:
                raw = read_all(f"{base}/{entry}/meminfo")
            except ReadError as exc:
                on_error(f"{entry}:meminfo", exc)
                continue
            total = (
                None if raw is None else _memtotal(f"{base}/{entry}/meminfo", entry, raw, on_error)
            )
            if total is not None:
                out[entry[4:]] = total
        return dict(sorted(out.items(), key=lambda kv: int(kv[0])))

    def dimms(self) -> tuple[Dimm, ...] | None:
        base = self.roots.sys(EDAC_MC)
        controllers = tuple(n for n in list_dir(base) if _CONTROLLER.match(n))
        if controllers != self._mc_key:
            self._mc_key = controllers
            if not controllers:
                self._dimms = None
            else:
                found = []
                for mc in sorted(controllers, key=lambda n: int(n[2:])):
                    name = _text(f"{base}/{mc}/mc_name")
                    for entry in list_dir(f"{base}/{mc}"):
                        if not _DIMM.match(entry):
                            continue
                        path = f"{base}/{mc}/{entry}"
                        label = _text(f"{path}/dimm_label")
                        try:
                            size = read_int(f"{path}/size")
                        except ReadError:
                            size = None
                        if size:
                            found.append(
                                Dimm(mc[2:], entry, label, size * MIB, dimm_socket(name, label))
                            )
                self._dimms = tuple(found)
        return self._dimms

    # drives

    def drives(self, on_error: OnError) -> tuple[Drive, ...]:
        key = (
            tuple(list_dir(self.roots.sys("class", "nvme"))),
            tuple(list_dir(self.roots.sys("class", "block"))),
        )
        if key != self._nvme_key:
            self._drives = tuple(self._describe(name) for name in key[0])
            self._nvme_key = key
        out = []
        for drive, namespaces, link in self._drives:
            capacity = 0
            for path in namespaces:
                try:
                    capacity += (read_int(path) or 0) * SECTOR
                except ReadError as exc:
                    on_error(f"{drive.controller}:size", exc)
            speed = width = None
            if link is not None:
                try:
                    state = link.link()
                except MalformedValue as exc:
                    on_error(f"{drive.controller}:link", exc)
                    state = None
                if state is not None:
                    speed, width = state.speed, state.width
            out.append(
                Drive(
                    drive.controller,
                    drive.serial,
                    drive.model,
                    drive.device,
                    capacity,
                    speed,
                    width,
                )
            )
        return tuple(d for d in out if d.device)

    def _describe(self, controller: str) -> tuple[Drive, tuple[str, ...], LinkReader | None]:
        path = self.roots.sys("class", "nvme", controller)
        transport = _text(f"{path}/transport")
        real = os.path.realpath(path)
        chain = pci_chain(real) if transport in ("pcie", "") else []
        namespaces = tuple(
            f"{path}/{entry}/size" for entry in list_dir(path) if _NAMESPACE.match(entry)
        )
        device = chain[-1] if chain else ""
        link = None
        if device:
            function_dir = real.split(f"/{device}/", 1)[0] + f"/{device}"
            link = LinkReader(device, function_dir)
        drive = Drive(
            controller,
            _text(f"{path}/serial"),
            _text(f"{path}/model"),
            device,
            0,
            None,
            None,
        )
        return drive, namespaces, link

    # NICs and RDMA ports

    def nics(self, interfaces: tuple[str, ...], on_error: OnError) -> tuple[Nic, ...]:
        """The listed interfaces (a missing one has no carrier), or every physical one."""
        names = netclass.names(self.roots)
        if (names, interfaces) != self._nic_key or not self._cache:
            wanted = interfaces or names
            described = {n: netclass.describe(self.roots, n) for n in wanted if n in names}
            self._nic_readers = tuple(
                (n, netclass.InterfaceReader(i, statistics=False) if i is not None else None)
                for n, i in ((n, described.get(n)) for n in wanted)
                if interfaces or (i is not None and i.physical)
            )
            self._nic_key = (names, interfaces)
        out = []
        for name, reader in self._nic_readers:
            state = reader.read(on_error) if reader is not None else None
            if state is None:
                out.append(Nic(name, False, None))
            else:
                out.append(Nic(name, bool(state.carrier), state.speed_bytes_per_second))
        return tuple(out)

    def rdma_active(self, on_error: OnError) -> tuple[str, ...]:
        key = rdma.device_names(self.roots)
        if key != self._rdma_key or not self._cache:
            self._ports = tuple(rdma.PortReader(p) for p in rdma.ports(self.roots))
            self._rdma_key = key
        return tuple(
            f"{reader.port.rdma}/{reader.port.port}"
            for reader in self._ports
            if reader.active(on_error)
        )
