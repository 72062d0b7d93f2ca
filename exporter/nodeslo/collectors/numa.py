"""NUMA locality of memory allocations, per node, from nodeN/numastat.

numastat counts pages allocated on the node (Documentation/admin-guide/numastat.rst):
- local_node: a task running on this node's CPUs got memory from this node;
- other_node: a task running on another node's CPUs got memory from this node;
- numa_miss: memory came from this node although the task preferred another one
  (its preferred node was full).
The remote share sum(other_node) / sum(local_node + other_node) is the NUMA placement
SLI of the profile (< 5 % remote). The node set is re-listed every scrape (a handful of
entries); the per-node paths are built once per node.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from prometheus_client.core import Metric

from nodeslo.collectors.base import Collector, CollectorContext
from nodeslo.collectors.registry import register
from nodeslo.metrics import Desc, add
from nodeslo.readers import MalformedValue, ReadError, list_dir, read_all, to_u64

LOCAL_PAGES = Desc(
    "nodeslo_numa_local_pages_total",
    "counter",
    "Pages allocated on this node for tasks running on this node (numastat local_node).",
    ("node",),
)
REMOTE_PAGES = Desc(
    "nodeslo_numa_remote_pages_total",
    "counter",
    "Pages allocated on this node for tasks running on another node (numastat other_node).",
    ("node",),
)
MISS_PAGES = Desc(
    "nodeslo_numa_miss_pages_total",
    "counter",
    "Pages allocated on this node although another node was preferred (numastat numa_miss).",
    ("node",),
)

NODE_DIR = "devices/system/node"
_NODE = re.compile(r"^node(\d+)$")
# numastat field -> metric
FIELDS = {"local_node": LOCAL_PAGES, "other_node": REMOTE_PAGES, "numa_miss": MISS_PAGES}


def parse_numastat(text: str) -> dict[str, int]:
    """`name value` lines -> {name: pages}; ValueError on a line that does not parse."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise ValueError(f"expected 'name value', got {line.strip()[:60]!r}")
        try:
            values[parts[0]] = to_u64(parts[1])
        except ValueError:
            raise ValueError(f"{parts[0]}: not an integer: {parts[1][:40]!r}") from None
    return values


@register
class NumaCollector(Collector):
    name = "numa"
    help = "NUMA allocation locality per node (nodeN/numastat)."

    def __init__(self, ctx: CollectorContext) -> None:
        super().__init__(ctx)
        self._root = ctx.roots.sys(NODE_DIR)
        self._paths: dict[str, str] = {}

    def _nodes(self) -> list[tuple[str, str]]:
        nodes = []
        for entry in list_dir(self._root):
            match = _NODE.match(entry)
            if match is None:
                continue
            path = self._paths.get(entry)
            if path is None:
                path = self._paths[entry] = f"{self._root}/{entry}/numastat"
            nodes.append((match.group(1), path))
        return sorted(nodes, key=lambda n: int(n[0]))

    def collect(self) -> Iterator[Metric]:
        families = {field: desc.family() for field, desc in FIELDS.items()}
        for node, path in self._nodes():
            try:
                raw = read_all(path)
                if raw is None:  # node taken offline between listing and reading
                    continue
                try:
                    values = parse_numastat(raw.decode("ascii", "replace"))
                except ValueError as exc:
                    raise MalformedValue(path, str(exc)) from None
            except ReadError as exc:
                self.skip(f"node{node}", exc)
                continue
            for field, family in families.items():
                if field in values:
                    add(family, [node], values[field])
        yield from families.values()
