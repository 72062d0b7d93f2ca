"""CPU enumeration and topology, shared by the CPU collectors and the tuning checks.

Topology (package, core) is static while the set of online CPUs is unchanged, so it is
read once per change of `cpu/online` and cached: a 256-CPU host would otherwise cost
512 file reads per scrape for the same answer.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from nodeslo.paths import Roots
from nodeslo.readers import MalformedValue, list_dir, read_int, read_text

CPU_DIR = "devices/system/cpu"
# Above any kernel's NR_CPUS (8192 on x86 MAXSMP): a list reaching past it is corrupt, and
# expanding `0-99999999999` would exhaust memory.
MAX_CPUS = 1 << 16


def parse_cpu_list(text: str) -> list[int]:
    """The kernel's CPU list notation ('0-3,8,10-11') -> sorted CPU numbers."""
    cpus: set[int] = set()
    text = text.strip()
    if not text:
        return []
    for part in text.split(","):
        low, sep, high = part.strip().partition("-")
        try:
            first = int(low)
            last = int(high) if sep else first
        except ValueError:
            raise ValueError(f"not a CPU list: {text!r}") from None
        if last < first:
            raise ValueError(f"descending range {part!r} in CPU list {text!r}")
        if first < 0 or last >= MAX_CPUS:
            raise ValueError(f"CPU number out of range (0-{MAX_CPUS - 1}) in {text[:40]!r}")
        cpus.update(range(first, last + 1))
    return sorted(cpus)


@dataclass(frozen=True)
class CpuTopology:
    cpu: int
    package: str
    core: str

    @property
    def core_key(self) -> tuple[str, str]:
        """A physical core: SMT siblings share it."""
        return (self.package, self.core)


class Topology:
    """Online CPUs and their package/core ids, refreshed when `cpu/online` changes."""

    def __init__(self, roots: Roots) -> None:
        self._roots = roots
        self._online_path = roots.sys(CPU_DIR, "online")
        self._lock = threading.Lock()
        self._online_text: str | None = None
        self._loaded = False
        self._cpus: tuple[CpuTopology, ...] = ()

    def cpu_path(self, cpu: int, *parts: str) -> str:
        return self._roots.sys(CPU_DIR, f"cpu{cpu}", *parts)

    def online(self) -> tuple[CpuTopology, ...]:
        """The online CPUs (one small read per call; topology re-read only on change)."""
        text = read_text(self._online_path)
        with self._lock:
            if not self._loaded or text != self._online_text:
                self._cpus = self._load(text)
                self._online_text = text
                self._loaded = True
            return self._cpus

    def _load(self, online: str | None) -> tuple[CpuTopology, ...]:
        if online is None:
            # No online file (some containers): every cpuN directory that exists.
            numbers = sorted(
                int(name[3:])
                for name in list_dir(self._roots.sys(CPU_DIR))
                if name.startswith("cpu") and name[3:].isdigit()
            )
        else:
            try:
                numbers = parse_cpu_list(online)
            except ValueError as exc:
                raise MalformedValue(self._online_path, str(exc)) from None
        result = []
        for cpu in numbers:
            package = read_int(self.cpu_path(cpu, "topology", "physical_package_id"))
            core = read_int(self.cpu_path(cpu, "topology", "core_id"))
            # A VM without topology files: each CPU its own core in package 0.
            result.append(
                CpuTopology(
                    cpu,
                    str(package if package is not None and package >= 0 else 0),
                    str(core if core is not None else cpu),
                )
            )
        return tuple(result)

    def packages(self) -> dict[str, list[CpuTopology]]:
        out: dict[str, list[CpuTopology]] = {}
        for cpu in self.online():
            out.setdefault(cpu.package, []).append(cpu)
        return out
