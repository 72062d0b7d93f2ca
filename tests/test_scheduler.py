"""scheduler collector: schedstat sums, /proc/stat, PSI, and bad or missing files."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from nodeslo.collectors.base import CollectorContext, CollectorSet
from nodeslo.collectors.scheduler import (
    MalformedFile,
    SchedulerCollector,
    parse_pressure,
    parse_schedstat,
    parse_stat,
)
from nodeslo.paths import Roots
from support.exposition import samples, value

DOMAIN = "domain0 00000003" + " 0" * 45
SCHEDSTAT = f"""version 15
timestamp 4295032768
cpu0 0 0 100 50 200 80 123456789 1000000000 5000
{DOMAIN}
cpu1 0 0 100 50 200 80 123456789 500000000 7000
"""

STAT = """cpu  10 0 10 100 0 0 0 0 0 0
cpu0 5 0 5 50 0 0 0 0 0 0
intr 12345 0 0
ctxt 987654
btime 1700000000
processes 4321
procs_running 3
procs_blocked 1
"""

PSI_CPU = (
    "some avg10=0.00 avg60=0.00 avg300=0.00 total=2500000\n"
    "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
)
PSI_IRQ = "full avg10=0.00 avg60=0.00 avg300=0.00 total=1000\n"


def tree(tmp_path: Path, files: dict[str, str]) -> Roots:
    for rel, content in files.items():
        path = tmp_path / "proc" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return Roots(procfs=str(tmp_path / "proc"))


def scrape(roots: Roots) -> str:
    ctx = CollectorContext(roots=roots)
    registry = CollectorRegistry()
    registry.register(CollectorSet([SchedulerCollector(ctx)], ctx.errors))
    return generate_latest(registry).decode()


def test_parse_schedstat_sums_cpus() -> None:
    stats = parse_schedstat(SCHEDSTAT)
    assert (stats.run_delay_ns, stats.timeslices, stats.cpus) == (1_500_000_000, 12000, 2)


def test_parse_schedstat_rejects_short_cpu_line() -> None:
    with pytest.raises(MalformedFile, match="cpu0"):
        parse_schedstat("version 15\ncpu0 1 2 3\n")


def test_parse_stat() -> None:
    assert parse_stat(STAT) == {
        "ctxt": 987654,
        "processes": 4321,
        "procs_running": 3,
        "procs_blocked": 1,
    }


def test_parse_pressure_seconds() -> None:
    assert parse_pressure(PSI_CPU) == {"some": 2.5, "full": 0.0}
    assert parse_pressure(PSI_IRQ) == {"full": 0.001}


def test_full_scrape(tmp_path: Path) -> None:
    roots = tree(
        tmp_path,
        {
            "schedstat": SCHEDSTAT,
            "stat": STAT,
            "pressure/cpu": PSI_CPU,
            "pressure/irq": PSI_IRQ,
        },
    )
    text = scrape(roots)
    assert value(text, "nodeslo_schedstat_runqueue_wait_seconds_total") == 1.5
    assert value(text, "nodeslo_schedstat_timeslices_total") == 12000
    assert value(text, "nodeslo_context_switches_total") == 987654
    assert value(text, "nodeslo_forks_total") == 4321
    assert value(text, "nodeslo_procs_running") == 3
    assert value(text, "nodeslo_procs_blocked") == 1
    assert value(text, "nodeslo_pressure_stalled_seconds_total", resource="cpu", kind="some") == 2.5
    assert (
        value(text, "nodeslo_pressure_stalled_seconds_total", resource="irq", kind="full") == 0.001
    )
    assert value(text, "nodeslo_collector_success", collector="scheduler") == 1


def test_missing_sources_export_nothing_and_succeed(tmp_path: Path) -> None:
    """No schedstat (CONFIG_SCHEDSTATS=n, as on the real VM captures), no PSI."""
    text = scrape(tree(tmp_path, {"stat": STAT}))
    names = {n for n, _ in samples(text)}
    assert "nodeslo_schedstat_runqueue_wait_seconds_total" not in names
    assert "nodeslo_pressure_stalled_seconds_total" not in names
    assert "nodeslo_context_switches_total" in names
    assert value(text, "nodeslo_collector_success", collector="scheduler") == 1


def test_malformed_schedstat_keeps_the_rest(tmp_path: Path) -> None:
    text = scrape(
        tree(tmp_path, {"schedstat": "cpu0 1 2 x\n", "stat": STAT, "pressure/cpu": PSI_CPU})
    )
    names = {n for n, _ in samples(text)}
    assert "nodeslo_schedstat_runqueue_wait_seconds_total" not in names
    assert "nodeslo_context_switches_total" in names
    assert value(text, "nodeslo_collector_success", collector="scheduler") == 1


def test_malformed_pressure_skips_that_resource(tmp_path: Path) -> None:
    text = scrape(tree(tmp_path, {"pressure/cpu": PSI_CPU, "pressure/io": "some total=abc\n"}))
    resources = {
        dict(ls).get("resource")
        for n, ls in samples(text)
        if n == "nodeslo_pressure_stalled_seconds_total"
    }
    assert resources == {"cpu"}


def test_malformed_stat_value(tmp_path: Path) -> None:
    text = scrape(tree(tmp_path, {"stat": "ctxt lots\n", "pressure/cpu": PSI_CPU}))
    assert "nodeslo_context_switches_total" not in {n for n, _ in samples(text)}
    assert value(text, "nodeslo_collector_success", collector="scheduler") == 1
