"""Collectors, one module per area. Importing this package registers all of them."""

from nodeslo.collectors import cpuidle, diskstats, scheduler
from nodeslo.collectors.registry import COLLECTORS

__all__ = ["COLLECTORS", "cpuidle", "diskstats", "scheduler"]
