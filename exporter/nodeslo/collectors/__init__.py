"""Collectors, one module per area. Importing this package registers all of them."""

from nodeslo.collectors import diskstats, scheduler
from nodeslo.collectors.registry import COLLECTORS

__all__ = ["COLLECTORS", "diskstats", "scheduler"]
