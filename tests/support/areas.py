"""A fixture tree with only the areas a test reads: seconds cheaper than a whole tree."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from fixtures import topology
from fixtures.make_fixtures import variant
from fixtures.spec import ServerSpec
from fixtures.tree import Tree
from nodeslo.paths import Roots


def partial_tree(
    root: Path,
    name: str,
    *areas: Callable[[Tree, ServerSpec], None],
    uptime: float | None = None,
    cpus: int | None = None,
) -> Roots:
    """Write the CPU topology plus `areas` of variant `name` under root (again: a refresh),
    with `cpus` logical CPUs instead of the variant's if given."""
    spec = variant(name, cpus)
    if uptime is not None:
        spec = replace(spec, uptime_seconds=uptime)
    tree = Tree(root)
    for area in (topology.write, *areas):
        area(tree, spec)
    return Roots.under(str(root))
