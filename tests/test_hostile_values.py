"""Hostile values and blocking reads (issue 19, items 2 and 6).

What each gets: a number no kernel prints (over 64 bits, negative where unsigned) is
skipped where it is read and logged once, the rest of the collector's output stands,
counter state never keeps it, and the collector is whole again once the file is fixed;
a value no float can hold never fails a scrape. A collector whose read blocks fails
that scrape with a timeout reason, the other collectors are served, later scrapes skip
it at once until the read returns; the collectors hold one worker thread plus one per
collector stuck in a read.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from fixtures import network as network_fixture
from fixtures import pci as pci_fixture
from nodeslo import cli, readers
from nodeslo.collectors import mdraid
from nodeslo.collectors.base import Collector, CollectorContext, CollectorSet
from nodeslo.collectors.cpuidle import CpuidleCollector
from nodeslo.collectors.network import NetworkCollector
from nodeslo.collectors.pcie import PcieCollector
from nodeslo.collectors.redundancy import RedundancyCollector
from nodeslo.collectors.resctrl import ResctrlCollector
from nodeslo.cpus import parse_cpu_list
from nodeslo.daemon import Daemon
from nodeslo.inventory import facts
from nodeslo.links import netclass, pci, rdma
from nodeslo.log import OnceLog
from nodeslo.paths import Roots
from nodeslo.profile import load_profile
from nodeslo.web.exposition import OpenMetricsRenderer, TextRenderer
from support import webserver as w
from support.areas import partial_tree
from support.exposition import samples, value
from test_cpuidle import small_tree
from test_resctrl import mbm

HUGE = "9" * 400
BEYOND_U64 = "123456789012345678901"  # 21 digits: > 2**64


# --- the shared parse helper ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "unsigned", "ok"),
    [
        ("0", True, True),
        (str(2**64 - 1), True, True),
        (str(2**64), True, False),
        (BEYOND_U64, True, False),
        (HUGE, True, False),
        ("-1", True, False),
        ("-1", False, True),
        (str(-(2**63)), False, True),
        (str(-(2**63) - 1), False, False),
        ("9" * 5000, False, False),  # past Python's own 4300-digit guard
        (" 12\n", True, True),
    ],
)
def test_kernel_numbers_are_64_bit(text: str, unsigned: bool, ok: bool) -> None:
    parse = readers.to_u64 if unsigned else readers.to_int
    if ok:
        assert parse(text) == int(text)
    else:
        with pytest.raises(ValueError):
            parse(text)
        with pytest.raises(readers.MalformedValue, match="/x"):
            (readers.parse_u64 if unsigned else readers.parse_int)("/x", text)


@pytest.mark.parametrize("text", ["0-99999999999", "4294967296", "0-3,-1", "9" * 400])
def test_a_cpu_list_reaching_past_any_kernel_is_refused_not_expanded(text: str) -> None:
    with pytest.raises(ValueError):
        parse_cpu_list(text)


# --- one bad value never fails a scrape ------------------------------------------------------


class _Huge:
    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily("nodeslo_test", "Two series, one unrenderable.", labels=["k"])
        family.add_metric(["bad"], 10**400)
        family.add_metric(["good"], 5)
        yield family
        yield GaugeMetricFamily("nodeslo_test_after", "After it.", value=1)


@pytest.mark.parametrize("renderer", [TextRenderer, OpenMetricsRenderer])
def test_a_value_no_float_holds_leaves_its_series_out_not_the_scrape(
    renderer: type[TextRenderer], caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    registry.register(_Huge())
    render = renderer()
    for _ in range(3):
        text = render(registry).decode()
        assert 'k="good"' in text and 'k="bad"' not in text
        assert "nodeslo_test_after 1.0" in text
    assert len([r for r in caplog.records if r.getMessage() == "value left out"]) == 1


# --- cpuidle, resctrl, mdstat: skipped where read, never kept --------------------------------


def _cpuidle(tmp_path: Path) -> tuple[CollectorRegistry, Path]:
    roots = small_tree(tmp_path)
    options = argparse.Namespace(cpuidle_per_cpu=False, cpuidle_mispredictions=False)
    ctx = CollectorContext(roots=roots, options=options)
    registry = CollectorRegistry()
    registry.register(CollectorSet([CpuidleCollector(ctx)], ctx.errors))
    return registry, tmp_path / "sys/devices/system/cpu/cpu0/cpuidle/state2"


def _scrape(registry: CollectorRegistry) -> str:
    return TextRenderer()(registry).decode()


@pytest.mark.parametrize("file", ["usage", "time"])
@pytest.mark.parametrize("bad", [HUGE, BEYOND_U64, "-7"])
def test_cpuidle_skips_an_impossible_counter_and_keeps_nothing_of_it(
    file: str, bad: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry, state = _cpuidle(tmp_path)
    before = _scrape(registry)
    entries = value(before, "nodeslo_cpuidle_entries_total", state="C6")
    residency = value(before, "nodeslo_cpuidle_residency_seconds_total", state="C6")
    (state / file).write_text(bad + "\n")
    for _ in range(3):
        text = _scrape(registry)
        assert value(text, "nodeslo_collector_success", collector="cpuidle") == 1
        # The bad CPU's last reading stands in: the sum neither jumps nor drops.
        assert value(text, "nodeslo_cpuidle_entries_total", state="C6") == entries
        assert value(text, "nodeslo_cpuidle_residency_seconds_total", state="C6") == residency
    assert len([r for r in caplog.records if f"state2/{file}" in str(r.__dict__)]) == 1
    # Fixed: the counter moves on from where it was, with no trace of the bad value.
    (state / file).write_text(("301" if file == "usage" else "3000001") + "\n")
    text = _scrape(registry)
    assert value(text, "nodeslo_cpuidle_entries_total", state="C6") == entries + (file == "usage")
    assert value(text, "nodeslo_cpuidle_residency_seconds_total", state="C6") == pytest.approx(
        residency + (1e-6 if file == "time" else 0)
    )


def test_resctrl_skips_an_impossible_byte_count_and_recovers(tmp_path: Path) -> None:
    mbm(tmp_path, "", 0, 1000, 10)
    ctx = CollectorContext(roots=Roots.under(str(tmp_path)))
    registry = CollectorRegistry()
    registry.register(CollectorSet([ResctrlCollector(ctx)], ctx.errors))
    assert value(_scrape(registry), "nodeslo_memory_bandwidth_bytes_total", domain="0") == 1000
    for bad in (HUGE, BEYOND_U64):
        mbm(tmp_path, "", 0, bad, 20)
        text = _scrape(registry)
        assert value(text, "nodeslo_memory_bandwidth_bytes_total", domain="0") == 1000
        assert value(text, "nodeslo_memory_bandwidth_local_bytes_total", domain="0") == 20
    mbm(tmp_path, "", 0, 1500, 30)
    text = _scrape(registry)
    assert value(text, "nodeslo_memory_bandwidth_bytes_total", domain="0") == 1500


def test_md_attributes_with_impossible_numbers_are_refused() -> None:
    """md is read from sysfs (mdraid.py): a count or a sync position no kernel prints is
    a ValueError, which the reader keeps as a problem of that attribute alone."""
    for text in (HUGE, BEYOND_U64, "-1"):
        with pytest.raises(ValueError):
            mdraid.parse_count(text)
    with pytest.raises(ValueError):
        mdraid.parse_sync_completed(f"{HUGE} / {BEYOND_U64}")
    assert mdraid.parse_count("4") == 4
    assert mdraid.parse_sync_completed("512 / 1024") == 0.5


# --- links and inventory: PCIe, NICs, RDMA ports, memory --------------------------------------


def test_link_decoders_refuse_what_no_kernel_prints() -> None:
    for bad in (HUGE, BEYOND_U64, "-1"):
        with pytest.raises(ValueError):
            pci.parse_aer(f"RxErr {bad}\nTOTAL_ERR_COR 1\n")
        with pytest.raises(ValueError):
            rdma.parse_counter(bad)
    # Speeds come from the kernel's table: not infinite, not NaN, not negative or zero,
    # nothing far past any PCIe generation.
    for bad in (
        f"{HUGE} GT/s PCIe",
        "inf GT/s PCIe",
        "nan GT/s",
        "-8.0 GT/s",
        "0 GT/s",
        "2048 GT/s",
    ):
        with pytest.raises(ValueError):
            pci.parse_link_speed(bad)
    for bad in ("inf Gb/sec", "nan Gb/sec (4X EDR)", "-100 Gb/sec"):
        with pytest.raises(ValueError):
            rdma.parse_rate(bad)
    with pytest.raises(ValueError):
        pci.parse_link_width(HUGE)
    for bad in ("0x1000000", "-0x1", "0x" + "f" * 400):
        with pytest.raises(ValueError):
            pci.parse_class(bad)
    with pytest.raises(ValueError):
        netclass.parse_flags("0x100000000")
    with pytest.raises(ValueError):
        rdma.parse_state(f"{HUGE}: ACTIVE")
    for bad in (HUGE, BEYOND_U64):
        with pytest.raises(ValueError):
            facts.parse_memtotal(f"MemTotal: {bad} kB\n".encode())
        with pytest.raises(ValueError):
            facts.parse_cache_size(f"{bad}K")
    assert facts.parse_memtotal(b"MemTotal: -1 kB\n") is None  # no MemTotal line at all
    # What the kernel does print still reads.
    assert pci.parse_aer(f"RxErr {2**64 - 1}\n") == (2**64 - 1, {"RxErr": 2**64 - 1})
    assert pci.parse_link_speed("64.0 GT/s PCIe") == 64e9
    assert pci.parse_class("0xffffff") == 0xFFFFFF
    assert netclass.parse_flags("0x1003") == 0x1003
    assert rdma.parse_counter(str(2**64 - 1)) == 2**64 - 1
    assert facts.parse_memtotal(b"MemTotal:       1024 kB\n") == 1024 * 1024


def _links(tmp_path: Path, collector: type[Collector]) -> CollectorRegistry:
    partial_tree(tmp_path, "seed-spec", pci_fixture.write, network_fixture.write)
    ctx = CollectorContext(roots=Roots.under(str(tmp_path)), options=argparse.Namespace())
    registry = CollectorRegistry()
    registry.register(CollectorSet([collector(ctx)], ctx.errors))
    return registry


def test_pcie_skips_an_impossible_aer_count_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = _links(tmp_path, PcieCollector)
    drive = tmp_path / "sys" / pci_fixture.nvme_devpath(5)
    port = drive.parent
    device = pci_fixture.nvme_endpoint(5)
    before = _scrape(registry)
    correctable = value(before, AER, device=device, aer_severity="correctable")
    fatal = value(before, AER, device=device, aer_severity="fatal")
    original = (drive / "aer_dev_correctable").read_text()
    (drive / "aer_dev_correctable").write_text(f"RxErr {HUGE}\nTOTAL_ERR_COR {BEYOND_U64}\n")
    (port / "aer_rootport_total_err_fatal").write_text(f"{HUGE}\n")
    for _ in range(3):
        text = _scrape(registry)
        assert value(text, "nodeslo_collector_success", collector="pcie") == 1
        # That file's severity is left out; the rest of the device stands.
        assert _count(text, AER, device=device, aer_severity="correctable") == 0
        assert value(text, AER, device=device, aer_severity="fatal") == fatal
        assert _count(text, ROOTPORT, device=port.name, aer_severity="fatal") == 0
        assert value(text, ROOTPORT, device=port.name, aer_severity="correctable") >= 0
        assert value(text, "nodeslo_pcie_device_responding", device=device) == 1
    for name in ("aer_dev_correctable", "aer_rootport_total_err_fatal"):
        assert len([r for r in caplog.records if name in str(r.__dict__)]) == 1, name
    (drive / "aer_dev_correctable").write_text(original)
    (port / "aer_rootport_total_err_fatal").write_text("0\n")
    text = _scrape(registry)
    assert value(text, AER, device=device, aer_severity="correctable") == correctable
    assert value(text, ROOTPORT, device=port.name, aer_severity="fatal") == 0


def test_network_skips_impossible_counters_and_speed_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = _links(tmp_path, NetworkCollector)
    nic = tmp_path / "sys/class/net/ens1f0np0"
    port = tmp_path / "sys/class/infiniband/mlx5_0/ports/1"
    before = _scrape(registry)
    errors = "nodeslo_network_errors_total"
    originals = {
        path: path.read_text()
        for path in (
            nic / "statistics/rx_errors",
            nic / "speed",
            nic / "carrier_changes",
            port / "counters/symbol_error",
        )
    }
    (nic / "statistics/rx_errors").write_text(f"{HUGE}\n")
    (nic / "speed").write_text(f"{BEYOND_U64}\n")
    (nic / "carrier_changes").write_text("-3\n")
    (port / "counters/symbol_error").write_text(f"{BEYOND_U64}\n")
    for _ in range(3):
        text = _scrape(registry)
        assert value(text, "nodeslo_collector_success", collector="network") == 1
        assert _count(text, errors, interface="ens1f0np0", direction="receive") == 0
        assert value(text, errors, interface="ens1f0np0", direction="transmit") == value(
            before, errors, interface="ens1f0np0", direction="transmit"
        )
        assert _count(text, "nodeslo_network_speed_bytes_per_second", interface="ens1f0np0") == 0
        assert _count(text, "nodeslo_network_carrier_changes_total", interface="ens1f0np0") == 0
        assert value(text, "nodeslo_network_carrier", interface="ens1f0np0") == 1
        assert _count(text, "nodeslo_rdma_port_symbol_errors_total", rdma="mlx5_0") == 0
        assert value(text, "nodeslo_rdma_port_active", rdma="mlx5_0") == 1
    for name in ("rx_errors", "speed", "carrier_changes", "symbol_error"):
        assert len([r for r in caplog.records if f"/{name}" in str(r.__dict__)]) == 1, name
    for path, original in originals.items():
        path.write_text(original)
    assert _links_samples(_scrape(registry)) == _links_samples(before)


def test_inventory_leaves_an_impossible_memtotal_out(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/meminfo").write_text(f"MemTotal:       {HUGE} kB\n")
    node = tmp_path / "sys/devices/system/node/node0"
    node.mkdir(parents=True)
    (node / "meminfo").write_text(f"Node 0 MemTotal:       {BEYOND_U64} kB\n")
    errors: list[tuple[str, Exception]] = []
    reader = facts.FactReader(Roots.under(str(tmp_path)))
    on_error = lambda key, exc: errors.append((key, exc))  # noqa: E731
    assert reader.memory(on_error) is None
    assert reader.node_memory(on_error) == {}
    assert [type(e) for _, e in errors] == [readers.MalformedValue] * 2
    assert "proc/meminfo" in str(errors[0][1]) and "node0/meminfo" in str(errors[1][1])


AER = "nodeslo_pcie_aer_errors_total"
ROOTPORT = "nodeslo_pcie_aer_rootport_errors_total"


def _links_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {k: v for k, v in samples(text).items() if k[0] != "nodeslo_collector_duration_seconds"}


def _count(text: str, name: str, **labels: str) -> int:
    return len(
        [
            v
            for (n, ls), v in samples(text).items()
            if n == name and all(dict(ls).get(k) == want for k, want in labels.items())
        ]
    )


def test_a_fifo_in_place_of_a_file_reads_as_empty_at_once(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    os.mkfifo(tmp_path / "proc/mdstat")
    registry, state = _cpuidle(tmp_path / "cpu")
    (state / "usage").unlink()
    os.mkfifo(state / "usage")
    ctx = CollectorContext(roots=Roots.under(str(tmp_path)))
    registry.register(CollectorSet([RedundancyCollector(ctx)], ctx.errors))
    text = _scrape(registry)  # would block for ever without O_NONBLOCK
    assert value(text, "nodeslo_collector_success", collector="redundancy") == 1
    assert value(text, "nodeslo_collector_success", collector="cpuidle") == 1


# --- item 6: a blocking read never wedges the scrapes ----------------------------------------


class _Stuck(Collector):
    name = "stuck"
    help = "Blocks in collect() until released, like a read of a hung sysfs attribute."

    def __init__(self) -> None:
        super().__init__(CollectorContext())
        self.release = threading.Event()
        self.calls = 0

    def collect(self) -> Iterator[Metric]:
        self.calls += 1
        assert self.release.wait(30)
        yield GaugeMetricFamily("nodeslo_test_stuck", "Released.", value=1)


class _Fine(Collector):
    name = "fine"
    help = "Always answers."

    def __init__(self) -> None:
        super().__init__(CollectorContext())

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("nodeslo_test_fine", "Here.", value=1)


def test_a_stuck_collector_fails_its_scrape_and_is_skipped_until_it_returns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="nodeslo.collector")
    stuck, fine = _Stuck(), _Fine()
    others = set(threading.enumerate())  # other tests' collector sets may still idle
    cset = CollectorSet([stuck, fine], OnceLog(logging.getLogger("nodeslo.collector")), 0.2)
    registry = CollectorRegistry()
    registry.register(cset)
    try:
        for _ in range(5):
            text = _scrape(registry)
            assert value(text, "nodeslo_collector_success", collector="stuck") == 0
            assert value(text, "nodeslo_collector_success", collector="fine") == 1
            assert "nodeslo_test_fine 1.0" in text
        assert stuck.calls == 1  # never re-entered while its read hangs
        assert "no result within 0.2s" in cset.status["stuck"].error
        # The worker given up on stays with the read, named after its collector; one
        # worker runs the rest: two threads however many scrapes.
        threads = [t.name for t in set(threading.enumerate()) - others]
        assert sorted(threads) == ["collector-stuck", "collectors"]
        failed = [r for r in caplog.records if r.getMessage() == "collector failed"]
        assert len(failed) == 1 and failed[0].__dict__["fields"]["reason"] == "timeout"
        stuck.release.set()
        assert w.wait_until(lambda: "nodeslo_test_stuck 1.0" in _scrape(registry))
        assert value(_scrape(registry), "nodeslo_collector_success", collector="stuck") == 1
        assert any(r.getMessage() == "collector recovered" for r in caplog.records)
    finally:
        stuck.release.set()
        cset.close()


def _stuck(name: str) -> _Stuck:
    return type(f"Stuck_{name}", (_Stuck,), {"name": name})()


class _Counting(_Fine):
    """Answers, counting its collections; a gate holds the first one when given."""

    def __init__(self, name: str, gate: threading.Event | None = None) -> None:
        super().__init__()
        self.name = name  # type: ignore[misc]
        self.calls = 0
        self.gate = gate

    def collect(self) -> Iterator[Metric]:
        self.calls += 1
        if self.gate is not None:
            assert self.gate.wait(30)
        yield GaugeMetricFamily(f"nodeslo_test_{self.name}", "Here.", value=self.calls)


def _collector_threads(others: set[threading.Thread]) -> list[str]:
    return sorted(
        t.name for t in set(threading.enumerate()) - others if t.name.startswith("collector")
    )


def test_two_stuck_collectors_in_one_scrape_each_fail_and_the_rest_is_served() -> None:
    """Each overrun hands the queue to a new worker: the collectors queued behind two
    hung reads (before, between and after them) are all served by the first scrape."""
    first, second = _stuck("stuck-a"), _stuck("stuck-b")
    before, between, after = _Counting("before"), _Counting("between"), _Counting("after")
    others = set(threading.enumerate())  # other tests' collector sets may still idle
    cset = CollectorSet(
        [before, first, between, second, after],
        OnceLog(logging.getLogger("nodeslo.collector")),
        0.2,
    )
    registry = CollectorRegistry()
    registry.register(cset)
    try:
        for scrape in range(1, 4):
            text = _scrape(registry)
            for name in ("stuck-a", "stuck-b"):
                assert value(text, "nodeslo_collector_success", collector=name) == 0
                assert "no result within 0.2s" in cset.status[name].error
            for name in ("before", "between", "after"):
                assert value(text, "nodeslo_collector_success", collector=name) == 1
                assert value(text, f"nodeslo_test_{name}") == scrape
        assert first.calls == second.calls == 1
        assert _collector_threads(others) == [
            "collector-stuck-a",
            "collector-stuck-b",
            "collectors",
        ]
        first.release.set()
        second.release.set()
        assert w.wait_until(lambda: _scrape(registry).count("nodeslo_test_stuck 1.0") == 2)
        text = _scrape(registry)
        assert 'nodeslo_collector_success{collector="stuck-a"} 1.0' in text
        assert 'nodeslo_collector_success{collector="stuck-b"} 1.0' in text
        # The workers given up on end once their reads return: one thread is left.
        assert w.wait_until(lambda: _collector_threads(others) == ["collectors"])
    finally:
        first.release.set()
        second.release.set()
        cset.close()
    assert w.wait_until(lambda: _collector_threads(others) == [])  # close() ends the worker


def test_concurrent_scrapes_share_a_collection_in_flight() -> None:
    """A scrape (another format, another collect[]) that comes while a collector runs
    shares that run: the collector is not entered twice at once."""
    gate = threading.Event()
    slow, other = _Counting("slow", gate), _Counting("other")
    cset = CollectorSet([slow, other], OnceLog(logging.getLogger("nodeslo.collector")), 10)
    results: list[list[Metric]] = []
    scrapes = [
        threading.Thread(target=lambda: results.append(list(cset.collect()))),
        threading.Thread(target=lambda: results.append(list(cset.collect(frozenset({"slow"}))))),
    ]
    try:
        scrapes[0].start()
        assert w.wait_until(lambda: slow.calls == 1)
        scrapes[1].start()
        gate.set()
        for thread in scrapes:
            thread.join(10)
        assert slow.calls == 1 and other.calls == 1
        assert len(results) == 2
        for families in results:
            served = {s.name: s.value for f in families for s in f.samples}
            assert served["nodeslo_test_slow"] == 1
        # The next scrape is a new collection.
        assert {s.name: s.value for f in cset.collect() for s in f.samples}[
            "nodeslo_test_slow"
        ] == 2
    finally:
        gate.set()
        cset.close()


def test_the_daemon_serves_and_stays_healthy_around_a_stuck_collector(seed_tree: Path) -> None:
    args = cli.build_parser().parse_args(
        [
            "serve",
            "--web.listen-address=127.0.0.1:0",
            "--collector.timeout=300ms",
            f"--path.sysfs={seed_tree}/sys",
            f"--path.procfs={seed_tree}/proc",
            f"--path.rootfs={seed_tree}",
            "--collector.disable-defaults",
            "--collector.redundancy",
            "--collector.scheduler",
            "--no-probe.storage",
            "--no-probe.wakeup",
        ]
    )
    daemon = Daemon(args, load_profile())
    release = threading.Event()
    redundancy = next(c for c in daemon.collectors.collectors if c.name == "redundancy")
    real = redundancy.collect

    def hung() -> list[Metric]:  # the read of /proc/mdstat blocks in the kernel
        assert release.wait(30)
        return list(real())

    redundancy.collect = hung  # type: ignore[method-assign]
    server = daemon.bind()
    daemon._ready.set()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        for _ in range(10):
            reply = w.get(w.port(server))
            assert reply.status == 200
            assert value(reply.body, "nodeslo_collector_success", collector="redundancy") == 0
            assert value(reply.body, "nodeslo_collector_success", collector="scheduler") == 1
        assert len(server.connections) <= 1  # no scrape left holding a slot
        assert w.get(w.port(server), "/-/healthy").status == 200
        release.set()
        assert w.wait_until(lambda: "nodeslo_md_disks{" in w.get(w.port(server)).body, timeout=10)
    finally:
        release.set()
        server.shutdown()
        server.server_close()
        daemon.collectors.close()
        thread.join(5)
