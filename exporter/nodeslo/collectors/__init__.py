"""Collectors, one module per area. Importing this package registers all of them."""

from nodeslo.collectors import (
    bmc,
    cpufreq,
    cpuidle,
    diskstats,
    edac,
    firmware,
    numa,
    nvme,
    power,
    redundancy,
    resctrl,
    scheduler,
    thermal,
    tuning,
)
from nodeslo.collectors.registry import COLLECTORS

__all__ = [
    "COLLECTORS",
    "bmc",
    "cpufreq",
    "cpuidle",
    "diskstats",
    "edac",
    "firmware",
    "numa",
    "nvme",
    "power",
    "redundancy",
    "resctrl",
    "scheduler",
    "thermal",
    "tuning",
]
