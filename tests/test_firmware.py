"""firmware collector: DMI, microcode from sysfs or cpuinfo, mixed revisions, absences."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from fixtures.make_fixtures import build, variant
from nodeslo.collectors.base import CollectorContext, CollectorSet
from nodeslo.collectors.firmware import (
    FirmwareCollector,
    iso_date,
    normalize_revision,
    parse_cpu_signature,
    parse_cpuinfo_microcode,
)
from nodeslo.paths import Roots
from support.exposition import samples, value

CPU = "sys/devices/system/cpu"


def write(root: Path, files: dict[str, str]) -> Roots:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{content}\n")
    return Roots.under(str(root))


def scrape(roots: Roots) -> str:
    ctx = CollectorContext(roots=roots)
    registry = CollectorRegistry()
    registry.register(CollectorSet([FirmwareCollector(ctx)], ctx.errors))
    return generate_latest(registry).decode()


def info(text: str) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = {}
    for (name, labels), v in samples(text).items():
        if name == "nodeslo_firmware_info":
            assert v == 1
            fields = dict(labels)
            out.setdefault(fields["component"], []).append(fields)
    return out


def test_iso_date() -> None:
    assert iso_date("03/15/2024") == "2024-03-15"
    assert iso_date("2024-03-15") == "2024-03-15"
    assert iso_date("") == ""


def test_normalize_revision() -> None:
    assert normalize_revision("0x2B000603") == "0x2b000603"
    assert normalize_revision("2b000603\n") == "0x2b000603"
    assert normalize_revision("0x00000001") == "0x1"
    assert normalize_revision("weird") == "weird"


CPUINFO = (
    "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 143\n"
    "model name\t: Intel(R) Xeon(R) Platinum 8480+\nstepping\t: 8\nmicrocode\t: 0xd0003d1\n\n"
    "processor\t: 1\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 143\n"
)


def test_parse_cpu_signature() -> None:
    # The form microcode files are named by: /lib/firmware/intel-ucode/06-8f-08.
    assert parse_cpu_signature(CPUINFO) == ("GenuineIntel", "06-8f-08")
    amd = "vendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\nstepping\t: 1\n"
    assert parse_cpu_signature(amd) == ("AuthenticAMD", "19-11-01")
    # ARM cpuinfo names none of these: no signature, not an error.
    assert parse_cpu_signature("processor\t: 0\nBogoMIPS\t: 50.00\n") == ("", "")


def test_parse_cpuinfo_microcode() -> None:
    text = "processor\t: 0\nmicrocode\t: 0x1000065\n\nprocessor\t: 1\nmicrocode\t: 0x1000065\n"
    assert parse_cpuinfo_microcode(text) == ["0x1000065", "0x1000065"]
    assert parse_cpuinfo_microcode("processor : 0\nBogoMIPS : 50.00\n") == []


def test_bios_microcode_kernel(tmp_path: Path) -> None:
    files = {
        "sys/class/dmi/id/bios_vendor": "Dell Inc.",
        "sys/class/dmi/id/bios_version": "2.19.1",
        "sys/class/dmi/id/bios_date": "11/02/2023",
        "sys/class/dmi/id/product_name": "PowerEdge R760",
        "proc/cpuinfo": CPUINFO,
        f"{CPU}/online": "0-3",
        "proc/sys/kernel/osrelease": "6.1.0-28-amd64",
        f"{CPU}/vulnerabilities/old_microcode": "Vulnerable",
    }
    files |= {f"{CPU}/cpu{n}/microcode/version": "0xd0003d1" for n in range(4)}
    text = scrape(write(tmp_path, files))
    found = info(text)
    assert found["bios"] == [
        {
            "component": "bios",
            "vendor": "Dell Inc.",
            "model": "PowerEdge R760",
            "version": "2.19.1",
            "date": "2023-11-02",
        }
    ]
    assert found["microcode"] == [
        {
            "component": "microcode",
            "vendor": "GenuineIntel",
            "model": "06-8f-08",
            "version": "0xd0003d1",
            "date": "",
        }
    ]
    assert [f["version"] for f in found["kernel"]] == ["6.1.0-28-amd64"]
    assert value(text, "nodeslo_firmware_microcode_revisions") == 1
    assert value(text, "nodeslo_firmware_microcode_outdated") == 1


def test_mixed_microcode_revisions_are_a_finding(tmp_path: Path) -> None:
    files = {f"{CPU}/online": "0-3"}
    files |= {f"{CPU}/cpu{n}/microcode/version": "0x2b000603" for n in (0, 1)}
    files |= {f"{CPU}/cpu{n}/microcode/version": "0x2B000590" for n in (2, 3)}
    text = scrape(write(tmp_path, files))
    assert [f["version"] for f in info(text)["microcode"]] == ["0x2b000590", "0x2b000603"]
    assert value(text, "nodeslo_firmware_microcode_revisions") == 2


def test_microcode_from_cpuinfo_without_the_driver(tmp_path: Path) -> None:
    """Guests have no microcode driver: /proc/cpuinfo is the only source."""
    cpuinfo = "".join(f"processor\t: {n}\nmicrocode\t: 0x1000065\n\n" for n in range(2))
    text = scrape(write(tmp_path, {f"{CPU}/online": "0-1", "proc/cpuinfo": cpuinfo}))
    assert [f["version"] for f in info(text)["microcode"]] == ["0x1000065"]
    assert value(text, "nodeslo_firmware_microcode_revisions") == 1


def test_nothing_known_exports_only_what_exists(tmp_path: Path) -> None:
    """No DMI (some VMs, ARM), no microcode (ARM), no old_microcode (kernel < 6.15)."""
    text = scrape(write(tmp_path, {"proc/sys/kernel/osrelease": "6.18.0", "proc/cpuinfo": ""}))
    assert set(info(text)) == {"kernel"}
    assert "nodeslo_firmware_microcode_revisions" not in text
    assert "nodeslo_firmware_microcode_outdated" not in text
    assert value(text, "nodeslo_collector_success", collector="firmware") == 1


def test_unreadable_microcode_file_skips_that_cpu(tmp_path: Path) -> None:
    files = {f"{CPU}/online": "0-1", f"{CPU}/cpu0/microcode/version": "0x10"}
    roots = write(tmp_path, files)
    (tmp_path / CPU / "cpu1/microcode/version").mkdir(parents=True)  # EISDIR on read
    text = scrape(roots)
    assert value(text, "nodeslo_collector_success", collector="firmware") == 1
    assert [f["version"] for f in info(text)["microcode"]] == ["0x10"]


@pytest.mark.parametrize(("name", "revisions"), [("seed-spec", 1), ("microcode-mixed", 2)])
def test_fixture_variants(tmp_path: Path, name: str, revisions: int) -> None:
    build(tmp_path, variant(name, cpus=8))
    text = scrape(Roots.under(str(tmp_path)))
    assert value(text, "nodeslo_firmware_microcode_revisions") == revisions
    found = info(text)
    assert found["bios"][0]["date"] == "2024-03-15"
    assert {(f["vendor"], f["model"]) for f in found["microcode"]} == {("GenuineIntel", "06-8f-08")}


def test_real_captures_microcode_from_cpuinfo(real_captures: dict[str, Path]) -> None:
    """VMs: no DMI in the capture, no microcode driver; cpuinfo and osrelease remain."""
    for name, root in real_captures.items():
        text = scrape(Roots.under(str(root)))
        assert value(text, "nodeslo_collector_success", collector="firmware") == 1, name
        found = info(text)
        assert set(found) == {"microcode", "kernel"}, name
        vendor, model = found["microcode"][0]["vendor"], found["microcode"][0]["model"]
        assert vendor in ("AuthenticAMD", "GenuineIntel"), name
        assert re.fullmatch(r"[0-9a-f]{2}-[0-9a-f]{2}-[0-9a-f]{2}", model), name
        assert value(text, "nodeslo_firmware_microcode_revisions") == 1, name
        assert value(text, "nodeslo_firmware_microcode_outdated") == 0, name
