"""edac collector: dimm/rank and legacy csrow layouts, EDAC absent, bad and vanishing files."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from nodeslo.collectors.base import CollectorContext, CollectorSet
from nodeslo.collectors.edac import EdacCollector, EdacReader
from nodeslo.paths import Roots
from support.exposition import samples, value

MC = "sys/devices/system/edac/mc"


def write(root: Path, files: dict[str, str | int]) -> Roots:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{content}\n")
    return Roots.under(str(root))


def controller(n: int, ce: int, ue: int, ce_noinfo: int = 0, ue_noinfo: int = 0) -> dict:
    base = f"{MC}/mc{n}"
    return {
        f"{base}/ce_count": ce,
        f"{base}/ue_count": ue,
        f"{base}/ce_noinfo_count": ce_noinfo,
        f"{base}/ue_noinfo_count": ue_noinfo,
        f"{base}/mc_name": f"Test MC{n}",
    }


def dimm(where: str, ce: int, ue: int, label: str, mode: str = "SECDED") -> dict:
    base = f"{MC}/{where}"
    return {
        f"{base}/dimm_ce_count": ce,
        f"{base}/dimm_ue_count": ue,
        f"{base}/dimm_label": label,
        f"{base}/dimm_mem_type": "Registered-DDR4",
        f"{base}/dimm_edac_mode": mode,
    }


def scrape(roots: Roots) -> str:
    ctx = CollectorContext(roots=roots)
    registry = CollectorRegistry()
    registry.register(CollectorSet([EdacCollector(ctx)], ctx.errors))
    return generate_latest(registry).decode()


def test_controllers_and_dimms(tmp_path: Path) -> None:
    roots = write(
        tmp_path,
        controller(0, ce=5, ue=1, ce_noinfo=2)
        | dimm("mc0/dimm0", 3, 1, "A1")
        | dimm("mc0/dimm10", 0, 0, "A2")
        | controller(1, ce=0, ue=0)
        | dimm("mc1/rank0", 0, 0, "B1"),
    )
    text = scrape(roots)
    assert value(text, "nodeslo_edac_memory_controllers") == 2
    assert value(text, "nodeslo_edac_correctable_errors_total", controller="0") == 5
    assert value(text, "nodeslo_edac_uncorrectable_errors_total", controller="0") == 1
    assert value(text, "nodeslo_edac_noinfo_correctable_errors_total", controller="0") == 2
    assert value(text, "nodeslo_edac_noinfo_uncorrectable_errors_total", controller="0") == 0
    assert (
        value(text, "nodeslo_edac_dimm_correctable_errors_total", controller="0", dimm="dimm0") == 3
    )
    assert (
        value(text, "nodeslo_edac_dimm_uncorrectable_errors_total", controller="0", dimm="dimm0")
        == 1
    )
    assert (
        value(
            text,
            "nodeslo_edac_dimm_correctable_errors_total",
            controller="1",
            dimm="rank0",
            label="B1",
        )
        == 0
    )
    assert (
        samples(text)[("nodeslo_edac_controller_info", (("controller", "1"), ("name", "Test MC1")))]
        == 1
    )
    info = value(
        text,
        "nodeslo_edac_dimm_info",
        controller="0",
        dimm="dimm10",
        label="A2",
        mem_type="Registered-DDR4",
        edac_mode="SECDED",
    )
    assert info == 1
    # dimm10 sorts after dimm0 numerically, not as a string after dimm1.
    dimms = [
        dict(labels)["dimm"]
        for (name, labels) in samples(text)
        if name == "nodeslo_edac_dimm_correctable_errors_total"
    ]
    assert dimms == ["dimm0", "dimm10", "rank0"]
    assert value(text, "nodeslo_collector_success", collector="edac") == 1


def test_edac_absent_is_zero_controllers_not_an_error(tmp_path: Path) -> None:
    text = scrape(Roots.under(str(tmp_path)))
    assert value(text, "nodeslo_edac_memory_controllers") == 0
    assert value(text, "nodeslo_collector_success", collector="edac") == 1
    assert "nodeslo_edac_correctable_errors_total" not in text


def test_controller_without_dimm_directories(tmp_path: Path) -> None:
    """Some drivers (ghes_edac on old firmware) report per controller only."""
    text = scrape(write(tmp_path, controller(0, ce=7, ue=0)))
    assert value(text, "nodeslo_edac_memory_controllers") == 1
    assert value(text, "nodeslo_edac_correctable_errors_total", controller="0") == 7
    assert "nodeslo_edac_dimm_correctable_errors_total{" not in text
    assert "nodeslo_edac_dimm_info{" not in text
    assert value(text, "nodeslo_collector_success", collector="edac") == 1


def test_legacy_csrow_layout(tmp_path: Path) -> None:
    base = f"{MC}/mc0/csrow1"
    files = controller(0, ce=4, ue=1) | {
        f"{base}/ch0_ce_count": 3,
        f"{base}/ch1_ce_count": 1,
        f"{base}/ch0_dimm_label": "DIMM_A0",
        f"{base}/ch1_dimm_label": "DIMM_B0",
        f"{base}/ce_count": 4,
        f"{base}/ue_count": 1,
        f"{base}/mem_type": "Unbuffered-DDR3",
        f"{base}/edac_mode": "SECDED",
    }
    text = scrape(write(tmp_path, files))
    assert (
        value(
            text,
            "nodeslo_edac_dimm_correctable_errors_total",
            controller="0",
            dimm="csrow1_ch0",
            label="DIMM_A0",
        )
        == 3
    )
    assert value(text, "nodeslo_edac_dimm_correctable_errors_total", dimm="csrow1_ch1") == 1
    # No per-channel UE in the legacy layout: the controller total carries it.
    assert "nodeslo_edac_dimm_uncorrectable_errors_total{" not in text
    assert value(text, "nodeslo_edac_uncorrectable_errors_total", controller="0") == 1


def test_dimm_layout_wins_over_legacy_csrows(tmp_path: Path) -> None:
    """EDAC_LEGACY_SYSFS shows the same memory twice: count it once."""
    files = (
        controller(0, ce=3, ue=0)
        | dimm("mc0/dimm0", 3, 0, "A1")
        | {f"{MC}/mc0/csrow0/ch0_ce_count": 3, f"{MC}/mc0/csrow0/ch0_dimm_label": "A1"}
    )
    text = scrape(write(tmp_path, files))
    dimms = [
        dict(labels)["dimm"]
        for (name, labels) in samples(text)
        if name == "nodeslo_edac_dimm_correctable_errors_total"
    ]
    assert dimms == ["dimm0"]


def test_malformed_count_is_skipped_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    roots = write(tmp_path, controller(0, ce=1, ue=0) | dimm("mc0/dimm0", 1, 0, "A1"))
    (tmp_path / MC / "mc0/dimm0/dimm_ce_count").write_text("garbage\n")
    ctx = CollectorContext(roots=roots)
    registry = CollectorRegistry()
    registry.register(CollectorSet([EdacCollector(ctx)], ctx.errors))
    with caplog.at_level(logging.WARNING):
        text = generate_latest(registry).decode()
        generate_latest(registry)
    assert value(text, "nodeslo_collector_success", collector="edac") == 1
    assert value(text, "nodeslo_edac_correctable_errors_total", controller="0") == 1
    assert "nodeslo_edac_dimm_correctable_errors_total{" not in text
    assert value(text, "nodeslo_edac_dimm_uncorrectable_errors_total", dimm="dimm0") == 0
    complaints = [r for r in caplog.records if "dimm_ce_count" in r.getMessage()]
    assert len(complaints) == 1


def test_driver_unload_and_reload_rebuilds_the_layout(tmp_path: Path) -> None:
    roots = write(tmp_path, controller(0, ce=1, ue=0) | dimm("mc0/dimm0", 1, 0, "A1"))
    reader = EdacReader(roots)
    errors: list[tuple[str, Exception]] = []
    first = reader.read(lambda key, exc: errors.append((key, exc)))
    assert [d.label for d in first.controllers[0].dimms] == ["A1"]
    shutil.rmtree(tmp_path / MC)
    assert reader.read(lambda key, exc: errors.append((key, exc))).controllers == ()
    write(tmp_path, controller(0, ce=0, ue=0) | dimm("mc0/dimm0", 0, 0, "relabelled"))
    again = reader.read(lambda key, exc: errors.append((key, exc)))
    assert [d.label for d in again.controllers[0].dimms] == ["relabelled"]
    assert errors == []


def test_seed_spec_fixture(seed_tree: Path) -> None:
    text = scrape(Roots.under(str(seed_tree)))
    assert value(text, "nodeslo_edac_memory_controllers") == 2
    dimm_series = [
        n for (n, _) in samples(text) if n == "nodeslo_edac_dimm_correctable_errors_total"
    ]
    assert len(dimm_series) == 24


def test_real_captures_have_no_edac(real_captures: dict[str, Path]) -> None:
    """The VMs have no EDAC driver: zero controllers, a successful collector."""
    for name, root in real_captures.items():
        text = scrape(Roots.under(str(root)))
        assert value(text, "nodeslo_edac_memory_controllers") == 0, name
        assert value(text, "nodeslo_collector_success", collector="edac") == 1, name
