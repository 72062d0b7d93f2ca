"""The profile: the one source of truth for SLOs, health thresholds, tuning and capacity.

Used by the daemon, the collectors, the probes, `nodeslo check` and the pack alike
(`pack/` depends on this package, never the other way round):

- `model.py`: the frozen dataclasses every reader uses;
- `validate.py`: YAML tree -> Profile, errors naming file, key and line;
- `loader.py`: shipped profiles, `extends:` chains, the digest;
- `yamlsource.py`: YAML with each value's file and line.
- `schema.py`: the JSON Schema editors use, from validate.py's key tables.
"""

from nodeslo.profile.loader import load_profile, shipped_profile_path
from nodeslo.profile.model import (
    CPU_VENDORS,
    DEFAULT_PROFILE,
    GOVERNORS,
    SLO,
    THP_MODES,
    WAKEUP_ENGINES,
    WAKEUP_POLICIES,
    Alerting,
    BMCHealth,
    Capacity,
    CPUHealth,
    FirmwareHealth,
    FleetRegression,
    Health,
    Inventory,
    LatencySLI,
    LinkHealth,
    MemoryHealth,
    NetworkInventory,
    NVMeHealth,
    NvmeInventory,
    PowerHealth,
    Probes,
    Profile,
    ProfileError,
    RedundancyHealth,
    StorageProbe,
    TimeSLI,
    Tuning,
    WakeupProbe,
)
from nodeslo.profile.validate import build, format_cpu_list

__all__ = [
    "CPU_VENDORS",
    "DEFAULT_PROFILE",
    "GOVERNORS",
    "SLO",
    "THP_MODES",
    "WAKEUP_ENGINES",
    "WAKEUP_POLICIES",
    "Alerting",
    "BMCHealth",
    "CPUHealth",
    "Capacity",
    "FirmwareHealth",
    "FleetRegression",
    "Health",
    "Inventory",
    "LatencySLI",
    "LinkHealth",
    "MemoryHealth",
    "NVMeHealth",
    "NetworkInventory",
    "NvmeInventory",
    "PowerHealth",
    "Probes",
    "Profile",
    "ProfileError",
    "RedundancyHealth",
    "StorageProbe",
    "TimeSLI",
    "Tuning",
    "WakeupProbe",
    "build",
    "format_cpu_list",
    "load_profile",
    "shipped_profile_path",
]
