"""Firmware and kernel versions: BIOS (DMI), CPU microcode, kernel release.

- BIOS: /sys/class/dmi/id/{bios_vendor,bios_version,bios_date}; the SMBIOS date
  (MM/DD/YYYY) is exported as ISO 8601 so dashboards sort it; `model` is the DMI
  product_name, since a BIOS version means something only for its board. Static for
  a boot.
- Microcode: /sys/devices/system/cpu/cpuN/microcode/version per online CPU (the
  microcode driver's view, updated by a late load), else the `microcode` lines of
  /proc/cpuinfo (guests and kernels without the driver). CPUs on different revisions
  (a late load that reached only some CPUs, a socket swapped with another board's
  CPU) is a finding of its own: `nodeslo_firmware_microcode_revisions` > 1.
  The kernel's own verdict on the revision (6.15+, vulnerabilities/old_microcode:
  older than the newest one it knows of) is exported when present. A revision means
  something only for its CPU signature, so `vendor` is the CPU vendor and `model` the
  signature family-model-stepping in the form microcode files are named by
  (`06-8f-08` for /lib/firmware/intel-ucode/06-8f-08), from the first processor of
  /proc/cpuinfo: hosts are comparable when both match.
- Kernel: /proc/sys/kernel/osrelease. Static for a boot.
NVMe firmware is a label of nodeslo_nvme_info.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import Metric

from nodeslo.collectors.base import Collector, CollectorContext
from nodeslo.collectors.registry import register
from nodeslo.cpus import Topology
from nodeslo.metrics import Desc, add
from nodeslo.paths import Roots
from nodeslo.readers import ReadError, read_all, read_small, read_text

FIRMWARE_INFO = Desc(
    "nodeslo_firmware_info",
    "gauge",
    "Always 1; one series per firmware component (bios, microcode, kernel) and version. "
    "Microcode has one series per distinct revision across CPUs.",
    ("component", "vendor", "model", "version", "date"),
)
MICROCODE_REVISIONS = Desc(
    "nodeslo_firmware_microcode_revisions",
    "gauge",
    "Distinct microcode revisions across online CPUs; more than 1 means an incomplete update.",
)
MICROCODE_OUTDATED = Desc(
    "nodeslo_firmware_microcode_outdated",
    "gauge",
    "1 when the kernel knows a newer microcode for this CPU (vulnerabilities/old_microcode).",
)

DMI_DIR = "class/dmi/id"
_SMBIOS_DATE = re.compile(r"^(\d{2})/(\d{2})/(\d{4})$")
_CPUINFO_MICROCODE = re.compile(r"^microcode\s*:\s*(\S+)", re.MULTILINE)
_CPUINFO_FIELD = re.compile(r"^(vendor_id|cpu family|model|stepping)\s*:\s*(\S+)", re.MULTILINE)

OnError = Callable[[str, Exception], None]


def iso_date(smbios_date: str) -> str:
    """'03/15/2024' -> '2024-03-15'; anything else is returned as it is."""
    match = _SMBIOS_DATE.match(smbios_date)
    if match is None:
        return smbios_date
    month, day, year = match.groups()
    return f"{year}-{month}-{day}"


def normalize_revision(text: str) -> str:
    """'0x2b000603', '0x2B000603' and '2b000603' are one revision: lower-case 0x form."""
    value = text.strip().lower()
    try:
        return hex(int(value, 16))
    except ValueError:
        return value


def parse_cpuinfo_microcode(text: str) -> list[str]:
    """The microcode revision of each processor in /proc/cpuinfo (x86 only)."""
    return [normalize_revision(m) for m in _CPUINFO_MICROCODE.findall(text)]


def parse_cpu_signature(text: str) -> tuple[str, str]:
    """(vendor_id, 'family-model-stepping' in hex) of the first processor in cpuinfo."""
    fields: dict[str, str] = {}
    for name, value in _CPUINFO_FIELD.findall(text):
        fields.setdefault(name, value)
    try:
        signature = "-".join(
            f"{int(fields[key]):02x}" for key in ("cpu family", "model", "stepping")
        )
    except (KeyError, ValueError):
        signature = ""
    return fields.get("vendor_id", ""), signature


@dataclass(frozen=True)
class Bios:
    vendor: str
    model: str
    version: str
    date: str


@dataclass(frozen=True)
class Microcode:
    revisions: dict[str, int]  # revision -> CPUs running it
    source: str  # "sysfs" or "cpuinfo"


class FirmwareReader:
    def __init__(self, roots: Roots, topology: Topology | None = None) -> None:
        self._roots = roots
        self._topology = topology or Topology(roots)
        self._cpuinfo = roots.proc("cpuinfo")
        self._old_microcode = roots.sys("devices/system/cpu/vulnerabilities/old_microcode")
        self._microcode_paths: dict[int, str] = {}
        self._bios: Bios | None = None
        self._kernel: str | None = None
        self._signature: tuple[str, str] | None = None

    def bios(self) -> Bios | None:
        """DMI BIOS identification; None on hosts without DMI (some VMs, most ARM)."""
        if self._bios is None:
            base = self._roots.sys(DMI_DIR)
            version = read_text(f"{base}/bios_version")
            if version is None:
                return None
            self._bios = Bios(
                vendor=read_text(f"{base}/bios_vendor") or "",
                model=read_text(f"{base}/product_name") or "",
                version=version,
                date=iso_date(read_text(f"{base}/bios_date") or ""),
            )
        return self._bios

    def cpu_signature(self) -> tuple[str, str]:
        """(vendor, signature) of the CPUs; ('', '') where cpuinfo does not tell (ARM)."""
        if self._signature is None:
            # The first processor's block is enough: one small read, once.
            raw = read_small(self._cpuinfo)
            text = raw.decode("utf-8", "replace") if raw else ""
            self._signature = parse_cpu_signature(text)
        return self._signature

    def kernel_release(self) -> str | None:
        if self._kernel is None:
            self._kernel = read_text(self._roots.proc("sys/kernel/osrelease"))
        return self._kernel

    def microcode(self, on_error: OnError) -> Microcode | None:
        """Revisions of the online CPUs: from sysfs, else from /proc/cpuinfo."""
        revisions = self._sysfs_revisions(on_error)
        if revisions:
            return Microcode(revisions, "sysfs")
        raw = read_all(self._cpuinfo)
        if raw is None:
            return None
        for revision in parse_cpuinfo_microcode(raw.decode("utf-8", "replace")):
            revisions[revision] = revisions.get(revision, 0) + 1
        # No microcode lines at all: an architecture that does not report it.
        return Microcode(revisions, "cpuinfo") if revisions else None

    def _sysfs_revisions(self, on_error: OnError) -> dict[str, int]:
        revisions: dict[str, int] = {}
        for cpu in self._topology.online():
            path = self._microcode_paths.get(cpu.cpu)
            if path is None:
                path = self._topology.cpu_path(cpu.cpu, "microcode", "version")
                self._microcode_paths[cpu.cpu] = path
            try:
                text = read_text(path)
            except ReadError as exc:
                on_error(f"microcode:cpu{cpu.cpu}", exc)
                continue
            if text is None:
                if not revisions:
                    return {}  # no microcode driver: no CPU has the file
                continue  # went offline while we read
            revision = normalize_revision(text)
            revisions[revision] = revisions.get(revision, 0) + 1
        return revisions

    def microcode_outdated(self) -> bool | None:
        text = read_text(self._old_microcode)
        if text is None:
            return None
        return text.startswith("Vulnerable")


@register
class FirmwareCollector(Collector):
    name = "firmware"
    help = "BIOS, CPU microcode and kernel versions; microcode consistency across CPUs."

    def __init__(self, ctx: CollectorContext) -> None:
        super().__init__(ctx)
        self._reader = FirmwareReader(ctx.roots)

    def collect(self) -> Iterator[Metric]:
        info = FIRMWARE_INFO.family()
        try:
            bios = self._reader.bios()
        except ReadError as exc:
            self.skip("dmi", exc)
            bios = None
        if bios is not None:
            add(info, ["bios", bios.vendor, bios.model, bios.version, bios.date], 1)
        try:
            microcode = self._reader.microcode(self.skip)
        except ReadError as exc:
            self.skip("cpuinfo", exc)
            microcode = None
        if microcode is not None:
            try:
                vendor, signature = self._reader.cpu_signature()
            except ReadError as exc:
                self.skip("cpuinfo", exc)
                vendor, signature = "", ""
            for revision in sorted(microcode.revisions):
                add(info, ["microcode", vendor, signature, revision, ""], 1)
        try:
            kernel = self._reader.kernel_release()
        except ReadError as exc:
            self.skip("osrelease", exc)
            kernel = None
        if kernel is not None:
            add(info, ["kernel", "", "", kernel, ""], 1)
        yield info
        if microcode is not None:
            yield MICROCODE_REVISIONS.single(len(microcode.revisions))
        try:
            outdated = self._reader.microcode_outdated()
        except ReadError as exc:
            self.skip("old_microcode", exc)
            outdated = None
        if outdated is not None:
            yield MICROCODE_OUTDATED.single(1 if outdated else 0)
