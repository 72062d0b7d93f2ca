"""The profile's model: frozen dataclasses for SLOs, health thresholds, tuning, capacity.

A profile is validated once, at the edge (`validate.py`), into these objects; the rule
and dashboard generators, the collectors, the probes and `nodeslo check` read them and
never the YAML.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nodeslo.profile.yamlsource import SourceError

DEFAULT_PROFILE = "process-management"
WAKEUP_POLICIES = ("other", "fifo")
WAKEUP_ENGINES = ("auto", "python", "cyclictest")
THP_MODES = ("always", "madvise", "never")
GOVERNORS = ("performance", "powersave", "schedutil", "ondemand", "conservative", "userspace")
# CPU vendors the profile may give temperature limits for (the pack maps each to its
# hwmon drivers: intel coretemp; amd k10temp, zenpower).
CPU_VENDORS = ("intel", "amd")


class ProfileError(SourceError):
    """A profile that cannot be used; the message names file, key and line."""


@dataclass(frozen=True)
class LatencySLI:
    """Good events = histogram observations at or below the threshold bucket.

    `errors` is an optional counter of events that failed outright (a probe I/O that
    returned an error and so was never observed in the histogram): they count as bad
    events and as events.
    """

    histogram: str
    threshold_seconds: float
    matchers: tuple[tuple[str, str], ...] = ()
    by: tuple[str, ...] = ()
    errors: str | None = None


@dataclass(frozen=True)
class TimeSLI:
    """Bad time over available time: rate(bad_seconds) / capacity (seconds per second).

    `fallback_bad_seconds` is read on the servers that do not export `bad_seconds` at all
    (e.g. AMD CPUs have no thermal_throttle counters); `matchers` select `bad_seconds`
    only.
    """

    bad_seconds: str
    capacity: str
    matchers: tuple[tuple[str, str], ...] = ()
    by: tuple[str, ...] = ()
    fallback_bad_seconds: str | None = None


@dataclass(frozen=True)
class SLO:
    name: str
    description: str
    objective: float  # ratio, e.g. 0.99
    sli: LatencySLI | TimeSLI
    # The probe that produces the SLI's events, if any: its absence is alerted on its own.
    probe: str | None = None

    @property
    def error_budget(self) -> float:
        return 1.0 - self.objective


@dataclass(frozen=True)
class NVMeHealth:
    wear_warning_ratio: float = 0.8
    wearout_lookback_seconds: float = 7 * 86400
    wearout_horizon_seconds: float = 30 * 86400
    write_amplification_max: float = 3.0
    write_amplification_window_seconds: float = 86400
    media_errors_window_seconds: float = 3600
    latency_outlier_factor: float = 3.0
    latency_outlier_window_seconds: float = 6 * 3600
    latency_outlier_min_iops: float = 100.0
    smart_stale_after_seconds: float = 300
    temperature_for_seconds: float = 300
    # Below this many host bytes written over the window, the WAF is too noisy to judge.
    write_amplification_min_written_bytes: int = 10 * 1024**3
    # Fewer controllers than the host had within this window: one vanished.
    missing_lookback_seconds: float = 86400
    # Leaving the `live` state this many times within the window is a reset loop.
    reset_loop_resets: int = 2
    reset_loop_window_seconds: float = 600


@dataclass(frozen=True)
class CPUHealth:
    throttling_window_seconds: float = 600
    # Temperatures alert against each sensor's own max / crit, as the firmware sets them,
    temperature_for_seconds: float = 300
    # or, for a sensor whose driver reports none (k10temp on AMD Zen has neither), these,
    # per vendor (CPU_VENDORS), in °C. A vendor left out: such sensors are not judged.
    temperature_max_celsius: tuple[tuple[str, float], ...] = (("amd", 85.0), ("intel", 90.0))
    temperature_crit_celsius: tuple[tuple[str, float], ...] = (("amd", 95.0), ("intel", 100.0))


@dataclass(frozen=True)
class MemoryHealth:
    uncorrectable_errors_window_seconds: float = 3600
    correctable_errors_max: float = 10
    correctable_errors_window_seconds: float = 86400
    numa_remote_ratio_max: float = 0.05
    numa_window_seconds: float = 3600
    # An idle host's few allocations say nothing about placement: judge only above this.
    numa_min_pages_per_second: float = 1000.0
    # MemoryCapacityDegraded: less memory than the host had within the lookback (a DIMM
    # that failed to train at the last boot), by more than the drop ratio.
    capacity_lookback_seconds: float = 7 * 86400
    capacity_drop_ratio: float = 0.01


@dataclass(frozen=True)
class PowerHealth:
    psu_capacity_watts: float = 2200
    psu_count: int = 2
    # hwmon chip that reports the whole system's input power (ACPI power meter).
    meter_chip_name: str = "power_meter"
    # BMC sensors (a regex on their names) whose watts add up to the system input power,
    # where there is no power meter chip: one per PSU.
    bmc_input_power_sensors: str = "(?i).*input power.*"

    @property
    def redundant_capacity_watts(self) -> float:
        """The load the PSUs carry with one of them failed: above it, redundancy is lost."""
        return self.psu_capacity_watts * (self.psu_count - 1)


@dataclass(frozen=True)
class BMCHealth:
    poll_interval_seconds: float = 30.0
    # Fans whose BMC sets no lower critical threshold count as failed at or below this.
    fan_min_rpm: float = 500.0
    # Inlet air: a warning at the sensor's upper non-critical threshold or at this,
    # whichever comes first (ASHRAE's recommended envelope ends at 27 °C)...
    inlet_warning_celsius: float = 27.0
    # ...critical at its upper critical threshold, or at this where it has none.
    inlet_critical_celsius: float = 35.0
    # Temperature sensors that measure inlet air besides those of entity air_inlet.
    inlet_sensors: str = "(?i).*(inlet|ambient).*"
    # Sensors BMCSensorCritical leaves alone (a known-faulty sensor, a vendor quirk).
    ignore_sensors: str = ""
    unreachable_for_seconds: float = 600.0
    # A BMC or sensor seen within this long that is gone now is missing, not healthy.
    absent_lookback_seconds: float = 86400.0


@dataclass(frozen=True)
class FirmwareHealth:
    # A rollout in progress is skew too: only alert when it lasts this long.
    skew_for_seconds: float = 86400
    # nodeslo_firmware_info components compared across hosts (NVMe drives always are).
    host_components: tuple[str, ...] = ("bios", "microcode")
    # nodeslo_firmware_info labels that make hosts comparable (besides the component):
    # a BIOS version means something only within one (vendor, product model).
    host_group_by: tuple[str, ...] = ("vendor", "model")


@dataclass(frozen=True)
class LinkHealth:
    """PCIe links, NICs and RDMA ports: what to watch beyond the defaults, and when to alert."""

    # PCI devices watched besides NVMe, network and RDMA functions: addresses
    # (0000:3b:00.0) or kernel driver names (nvidia, mlx5_core).
    pcie_devices: tuple[str, ...] = ()
    pcie_degraded_for_seconds: float = 600
    pcie_uncorrectable_window_seconds: float = 3600
    pcie_correctable_errors_max: float = 10
    pcie_correctable_window_seconds: float = 3600
    network_down_for_seconds: float = 120
    network_speed_for_seconds: float = 600
    # A NIC that ran at the inventory speed within this long is held to it even when the
    # profile does not list it (after a restart the exporter forgets; Prometheus does not).
    network_speed_lookback_seconds: float = 7 * 86400
    network_flap_changes_max: float = 4
    network_flap_window_seconds: float = 900
    network_errors_max_ratio: float = 0.0001
    network_errors_window_seconds: float = 900
    network_errors_min_packets_per_second: float = 100
    rdma_down_for_seconds: float = 120


@dataclass(frozen=True)
class RedundancyHealth:
    # An md array or ZFS pool the host had within this window and has no more: missing.
    missing_lookback_seconds: float = 86400


@dataclass(frozen=True)
class Health:
    nvme: NVMeHealth = field(default_factory=NVMeHealth)
    cpu: CPUHealth = field(default_factory=CPUHealth)
    memory: MemoryHealth = field(default_factory=MemoryHealth)
    power: PowerHealth = field(default_factory=PowerHealth)
    firmware: FirmwareHealth = field(default_factory=FirmwareHealth)
    links: LinkHealth = field(default_factory=LinkHealth)
    redundancy: RedundancyHealth = field(default_factory=RedundancyHealth)
    bmc: BMCHealth = field(default_factory=BMCHealth)


@dataclass(frozen=True)
class Tuning:
    """Expected kernel settings; None means "not checked"."""

    max_cstate_exit_latency_seconds: float | None = None
    governor: str | None = None
    turbo: bool | None = None
    transparent_hugepage: str | None = None
    isolated_cpus: str | None = None
    nohz_full: str | None = None
    sysctl: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Capacity:
    iops: float | None = None
    dispatches_per_second: float | None = None
    memory_bandwidth_bytes_per_second: float | None = None
    memory_bandwidth_target_ratio: float | None = None
    threads: int | None = None
    all_core_frequency_hertz: float | None = None
    peak_power_watts: float | None = None


@dataclass(frozen=True)
class NvmeInventory:
    """The process data drives: at least `drives` of at least `capacity_bytes`, each
    trained at or above the link speed and width. Smaller drives (the boot drive) are
    neither counted nor judged."""

    drives: int | None = None
    capacity_bytes: int | None = None
    link_speed_transfers_per_second: float | None = None
    link_width: int | None = None


@dataclass(frozen=True)
class NetworkInventory:
    """The data-plane NICs: the listed interfaces (which must exist, have carrier and run
    at `speed`), or without a list at least `ports` physical interfaces at `speed`."""

    interfaces: tuple[str, ...] = ()
    ports: int | None = None
    speed_bytes_per_second: float | None = None


@dataclass(frozen=True)
class Inventory:
    """The box as specified; None means "not checked". Counts of sockets and DIMMs are
    exact, everything else a minimum."""

    sockets: int | None = None
    cores_per_socket: int | None = None
    threads_per_socket: int | None = None
    llc_per_socket_bytes: int | None = None
    memory_bytes: int | None = None
    # MemTotal is what the kernel was left after firmware and its own page tables took
    # their share (~2 % of 1.5 TiB); one missing DIMM of 24 is 4 %.
    memory_tolerance_ratio: float = 0.03
    numa_balance_tolerance_ratio: float = 0.05
    dimms_per_socket: int | None = None
    dimm_size_bytes: int | None = None
    nvme: NvmeInventory = field(default_factory=NvmeInventory)
    network: NetworkInventory = field(default_factory=NetworkInventory)
    rdma_ports_active: int | None = None

    @property
    def memory_floor_bytes(self) -> float | None:
        """The least MemTotal that passes: the installed memory less what firmware and
        the kernel's page tables take (memory_tolerance)."""
        if self.memory_bytes is None:
            return None
        return self.memory_bytes * (1 - self.memory_tolerance_ratio)


@dataclass(frozen=True)
class StorageProbe:
    targets: tuple[str, ...] = ()
    rate: float = 10.0
    file_size_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True)
class WakeupProbe:
    enabled: bool = True
    interval_seconds: float = 0.01
    policy: str = "other"
    engine: str = "auto"


@dataclass(frozen=True)
class Probes:
    storage: StorageProbe = field(default_factory=StorageProbe)
    wakeup: WakeupProbe = field(default_factory=WakeupProbe)


@dataclass(frozen=True)
class FleetRegression:
    """NodeSLOFleetRegression: one page for a cluster where the same alert is on more
    than `share` of the hosts (a bad kernel or firmware roll-out), instead of one each."""

    share: float = 0.1
    # Once firing, it resolves only at or below this share (hysteresis): a roll-back in
    # progress does not release the remaining per-host pages one host at a time.
    # The validator sets it to share / 2 unless the profile gives it.
    resolve_share: float = 0.05
    # Fewer hosts than this (exporters scraped or known absent) is not a fleet.
    min_hosts: int = 10
    # The severities of the per-host alerts that are counted (and inhibited): pages
    # by default; a fleet of tickets (e.g. a VM cluster without CPU sensors) is not a page.
    severities: tuple[str, ...] = ("critical",)
    for_seconds: float = 120.0


@dataclass(frozen=True)
class Alerting:
    runbook_base_url: str = "https://github.com/nodeslo/nodeslo/blob/main/alerts/runbooks"
    # Multiplies every `for:` duration. Only for compressed end-to-end tests.
    for_scale: float = 1.0
    # Added to every alert (e.g. team: infra).
    labels: tuple[tuple[str, str], ...] = ()
    # Selects the exporter's scrape targets in `up` (exporter down, probe absent).
    exporter_selector: str = 'job="nodeslo"'
    # A target scraped within this long and gone now pages (NodeSLOExporterAbsent).
    exporter_lookback_seconds: float = 86400.0
    # Selects Prometheus' scrape of itself, whose prometheus_rule_* metrics tell whether
    # the nodeslo groups are evaluated. None (`false` in YAML): no rule-evaluation
    # alerts (the rules run where those metrics are not, e.g. a Mimir ruler).
    prometheus_selector: str | None = 'job="prometheus"'
    # The labels that identify one server; every aggregation keeps them, so a
    # `cluster` label (Thanos/Mimir external label or target label) is carried through.
    instance_labels: tuple[str, ...] = ("cluster", "instance")
    fleet_regression: FleetRegression = field(default_factory=FleetRegression)


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    period_seconds: float
    slos: tuple[SLO, ...]
    health: Health
    tuning: Tuning
    capacity: Capacity
    probes: Probes
    alerting: Alerting
    source: str
    sha256: str
    inventory: Inventory = field(default_factory=Inventory)

    def slo(self, name: str) -> SLO:
        for slo in self.slos:
            if slo.name == name:
                return slo
        raise KeyError(name)

    def histogram_thresholds(self, histogram: str) -> tuple[float, ...]:
        """Every latency SLO threshold on one histogram: its buckets must hold them exactly."""
        return tuple(
            sorted(
                {
                    s.sli.threshold_seconds
                    for s in self.slos
                    if isinstance(s.sli, LatencySLI) and s.sli.histogram == histogram
                }
            )
        )
