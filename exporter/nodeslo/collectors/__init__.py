"""Collectors, one module per area. Importing this package registers all of them."""

from nodeslo.collectors import (
    cpufreq,
    cpuidle,
    diskstats,
    edac,
    firmware,
    inventory,
    network,
    numa,
    nvme,
    pcie,
    power,
    redundancy,
    resctrl,
    scheduler,
    textfile,
    thermal,
    tuning,
)
from nodeslo.collectors.registry import COLLECTORS

__all__ = [
    "COLLECTORS",
    "cpufreq",
    "cpuidle",
    "diskstats",
    "edac",
    "firmware",
    "inventory",
    "network",
    "numa",
    "nvme",
    "pcie",
    "power",
    "redundancy",
    "resctrl",
    "scheduler",
    "textfile",
    "thermal",
    "tuning",
]
