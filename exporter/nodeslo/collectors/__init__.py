"""Collectors, one module per area. Importing this package registers all of them."""

from nodeslo.collectors import cpufreq, cpuidle, diskstats, power, scheduler, thermal
from nodeslo.collectors.registry import COLLECTORS

__all__ = [
    "COLLECTORS",
    "cpufreq",
    "cpuidle",
    "diskstats",
    "power",
    "scheduler",
    "thermal",
]
