"""numa collector: numastat per node, bad lines, nodes that vanish."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from nodeslo.collectors.base import CollectorContext, CollectorSet
from nodeslo.collectors.numa import NumaCollector, parse_numastat
from nodeslo.paths import Roots
from support.exposition import value

NODE = "sys/devices/system/node"
NUMASTAT = """numa_hit 1403311
numa_miss 12
numa_foreign 0
interleave_hit 1132
local_node 1403300
other_node 23
"""


def scrape(root: Path) -> str:
    ctx = CollectorContext(roots=Roots.under(str(root)))
    registry = CollectorRegistry()
    registry.register(CollectorSet([NumaCollector(ctx)], ctx.errors))
    return generate_latest(registry).decode()


def node(root: Path, n: int, text: str) -> None:
    path = root / NODE / f"node{n}" / "numastat"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_parse_numastat() -> None:
    values = parse_numastat(NUMASTAT)
    assert values["local_node"] == 1403300
    assert values["other_node"] == 23
    assert values["numa_miss"] == 12


@pytest.mark.parametrize("bad", ["local_node\n", "local_node 12 13\n", "local_node x\n"])
def test_parse_numastat_rejects_bad_lines(bad: str) -> None:
    with pytest.raises(ValueError, match="local_node"):
        parse_numastat(bad)


def test_nodes_are_counters_per_node(tmp_path: Path) -> None:
    node(tmp_path, 0, NUMASTAT)
    node(tmp_path, 10, NUMASTAT.replace("other_node 23", "other_node 99"))
    (tmp_path / NODE / "online").write_text("0,10\n")
    text = scrape(tmp_path)
    assert value(text, "nodeslo_numa_local_pages_total", node="0") == 1403300
    assert value(text, "nodeslo_numa_remote_pages_total", node="10") == 99
    assert value(text, "nodeslo_numa_miss_pages_total", node="0") == 12
    assert text.index('node="0"') < text.index('node="10"')


def test_malformed_node_is_skipped_others_kept(tmp_path: Path) -> None:
    node(tmp_path, 0, NUMASTAT)
    node(tmp_path, 1, "local_node lots\n")
    text = scrape(tmp_path)
    assert value(text, "nodeslo_collector_success", collector="numa") == 1
    assert value(text, "nodeslo_numa_local_pages_total", node="0") == 1403300
    assert 'node="1"' not in text


def test_no_numa_support_exports_nothing(tmp_path: Path) -> None:
    text = scrape(tmp_path)
    assert value(text, "nodeslo_collector_success", collector="numa") == 1
    assert "nodeslo_numa_" not in text


def test_node_directory_without_numastat(tmp_path: Path) -> None:
    """A memory-less node being hot-removed: listed, then gone."""
    (tmp_path / NODE / "node3").mkdir(parents=True)
    node(tmp_path, 0, NUMASTAT)
    text = scrape(tmp_path)
    assert value(text, "nodeslo_collector_success", collector="numa") == 1
    assert 'node="3"' not in text


def test_seed_spec_remote_share_is_two_percent(seed_tree: Path) -> None:
    text = scrape(seed_tree)
    local = sum(value(text, "nodeslo_numa_local_pages_total", node=n) for n in "01")
    remote = sum(value(text, "nodeslo_numa_remote_pages_total", node=n) for n in "01")
    assert remote / (local + remote) == pytest.approx(0.02, rel=1e-3)


def test_real_captures(real_captures: dict[str, Path]) -> None:
    for name, root in real_captures.items():
        text = scrape(root)
        assert value(text, "nodeslo_collector_success", collector="numa") == 1, name
        assert value(text, "nodeslo_numa_local_pages_total", node="0") > 0, name
