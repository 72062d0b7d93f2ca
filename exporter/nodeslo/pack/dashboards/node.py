"""The node dashboard: one server (or a few) against every target of the profile.

Each panel answers one question of the seed document with its target drawn on it:
probe latency against the SLO thresholds, IOPS against the capacity target, C-states
against the tuning limit, frequency against the all-core target, power against one
PSU fewer, NUMA and memory bandwidth against their limits, NVMe health against the
drive's own and the profile's thresholds. Limits a device reports itself (hwmon
max/crit, WCTEMP/CCTEMP, the spare threshold, the hardware max frequency) are drawn
from their series as dashed lines; every other line or colour step is a number of
the profile.
"""

from __future__ import annotations

from nodeslo.pack import catalog, promql
from nodeslo.pack.catalog import cpu
from nodeslo.pack.dashboards import bmc as bmc_panels
from nodeslo.pack.dashboards import common as c
from nodeslo.pack.dashboards import links
from nodeslo.pack.dashboards import model as m
from nodeslo.profile import SLO, LatencySLI, Profile, TimeSLI
from nodeslo.units import human_seconds

# An integer count that is "any" at all: one event, one CPU, one missing member.
ANY = 1
NVME_NAMESPACE = f'device=~"{catalog.NVME_NAMESPACE}"'
CPU_CHIPS = f'chip_name=~"{catalog.CPU_CHIPS}"'


def dashboard(profile: Profile) -> m.Dashboard:
    return c.dashboard(
        profile,
        uid=c.NODE_UID,
        title="nodeslo / Node",
        description=(
            f"One server against the profile {profile.name!r}: latency SLOs measured by the "
            "probes, storage, CPU determinism, memory, NVMe health and redundancy."
        ),
        rows=(
            _probe_row(profile),
            _storage_row(profile),
            _cpu_row(profile),
            _power_row(profile),
            bmc_panels.node_row(profile),
            _memory_row(profile),
            _nvme_row(profile),
            _redundancy_row(profile),
            links.node_row(profile),
            _exporter_row(profile),
        ),
        all_instances=False,
    )


# --- probes ------------------------------------------------------------------------


def _histogram(sli: LatencySLI, suffix: str) -> str:
    return c.raw(f"{sli.histogram}{suffix}", *_matchers(sli))


def _matchers(sli: LatencySLI) -> tuple[str, ...]:
    return tuple(f"{name}={promql.quote(value)}" for name, value in sli.matchers)


def _latency_panels(profile: Profile, slo: SLO) -> tuple[m.AnyPanel, ...]:
    assert isinstance(slo.sli, LatencySLI)
    sli = slo.sli
    threshold = human_seconds(sli.threshold_seconds)
    buckets = f"rate({_histogram(sli, '_bucket')}[{c.RATE}])"
    keep = c.by(profile, *sli.by, "le")
    quantile = c.quantile_name(slo.objective)
    series = c.legend(*sli.by)

    def percentile(q: float, name: str) -> m.Query:
        expr = f"histogram_quantile({promql.number(q)}, sum by ({keep}) ({buckets}))"
        return m.Query(expr, f"{series} {name}".replace("  ", " "))

    return (
        m.Heatmap(
            title=f"{slo.name}: latency distribution",
            description=f"{slo.description} Every probe sample of the selected servers, "
            "per histogram bucket.",
            queries=(m.Query(f"sum by (le) ({buckets})", "{{le}}", format="heatmap"),),
            width=12,
            links=c.runbooks(profile, "NodeSLOErrorBudgetBurn", "NodeSLOProbeDown"),
        ),
        m.TimeSeries(
            title=f"{slo.name}: P50 and {quantile} against {threshold}",
            description=f"{slo.description} The SLO holds while {c.percent(slo.objective)} "
            f"of samples complete within {threshold}, i.e. while {quantile} stays under "
            "the line. Quantiles are interpolated within a bucket; the threshold is a "
            "bucket bound, so the line itself is exact.",
            queries=(percentile(0.5, "P50"), percentile(slo.objective, quantile)),
            unit="s",
            steps=m.above(sli.threshold_seconds),
            width=12,
            links=c.runbooks(profile, "NodeSLOErrorBudgetBurn"),
        ),
    )


def _probe_row(profile: Profile) -> m.Row:
    panels: list[m.AnyPanel] = []
    for slo in c.latency_slos(profile):
        panels.extend(_latency_panels(profile, slo))
    panels.append(
        m.StateTimeline(
            title="Probes up",
            description="1 while a probe runs and its last sample succeeded. A probe that is "
            "down gives its SLOs no events: their budgets neither burn nor recover.",
            queries=(m.Query(c.raw("nodeslo_probe_up"), c.legend("probe")),),
            mappings=(
                m.ValueText("1", "up", m.GREEN),
                m.ValueText("0", "down", m.RED),
            ),
            steps=m.below(ANY),
            width=12,
            height=6,
            links=c.runbooks(profile, "NodeSLOProbeDown", "NodeSLOProbeFlapping"),
        )
    )
    panels.append(
        m.TimeSeries(
            title="Probe I/O errors",
            description="Probe I/Os that failed outright (target missing, full, read-only, "
            "I/O error); each counts as a bad event of the storage SLOs.",
            queries=(
                m.Query(
                    f"sum by ({c.by(profile, 'target', 'op')}) "
                    f"(rate({c.raw('nodeslo_probe_io_errors_total')}[{c.RATE}]))",
                    c.legend("target", "op"),
                ),
            ),
            unit="ops",
            width=12,
            height=6,
        )
    )
    return m.Row("Latency SLOs, measured by the probes", tuple(panels))


# --- storage -----------------------------------------------------------------------


def _storage_slo(profile: Profile, op: str) -> SLO | None:
    """The storage probe's latency SLO for one operation (read, write_sync), if any."""
    for slo in c.latency_slos(profile):
        assert isinstance(slo.sli, LatencySLI)
        if slo.probe == "storage" and ("op", op) in slo.sli.matchers:
            return slo
    return None


def _iops(profile: Profile, keep: str) -> str:
    return (
        f"sum by ({keep}) (\n"
        f"  rate({c.raw('nodeslo_disk_reads_completed_total', NVME_NAMESPACE)}[{c.RATE}])\n"
        f"  + rate({c.raw('nodeslo_disk_writes_completed_total', NVME_NAMESPACE)}[{c.RATE}])\n"
        ")"
    )


def _average_latency(profile: Profile, op: str, time: str, count: str) -> m.TimeSeries:
    slo = _storage_slo(profile, op)
    reference = ""
    steps: tuple[m.Step, ...] = ()
    if slo is not None:
        assert isinstance(slo.sli, LatencySLI)
        steps = m.above(slo.sli.threshold_seconds, m.ORANGE)
        reference = (
            f" The line is the {slo.name} SLO threshold ({human_seconds(slo.sli.threshold_seconds)}"
            f" for {c.percent(slo.objective)} of probe samples): an average above it means "
            "many I/Os are slower still."
        )
    noun = "read" if op == "read" else "write"
    return m.TimeSeries(
        title=f"Average {noun} latency per I/O (diskstats)",
        description=f"Time the kernel spent per completed {noun} on each NVMe namespace, "
        "queueing included, from /proc/diskstats: every I/O of the host, not only the "
        f"probe's.{reference}",
        queries=(
            m.Query(
                f"rate({c.raw(time, NVME_NAMESPACE)}[{c.RATE}])\n/\n"
                f"rate({c.raw(count, NVME_NAMESPACE)}[{c.RATE}])",
                c.legend("device"),
            ),
        ),
        unit="s",
        steps=steps,
        legend_calcs=("mean", "max"),
        width=12,
        links=c.runbooks(profile, "NVMeLatencyOutlier"),
    )


def _storage_row(profile: Profile) -> m.Row:
    iops_target = profile.capacity.iops
    return m.Row(
        "Storage I/O",
        (
            m.TimeSeries(
                title="IOPS per NVMe namespace",
                description="Reads and writes completed per second on each NVMe namespace "
                "(/proc/diskstats).",
                queries=(m.Query(_iops(profile, c.by(profile, "device")), c.legend("device")),),
                unit="iops",
                legend_calcs=("mean", "max"),
                width=12,
            ),
            m.TimeSeries(
                title="Aggregate NVMe IOPS against the capacity target",
                description="Reads and writes completed per second over all NVMe namespaces "
                "of the server. The line is the profile's capacity target "
                "(capacity.iops): the load the server was bought to carry.",
                queries=(m.Query(_iops(profile, c.by(profile)), c.legend()),),
                unit="iops",
                steps=() if iops_target is None else m.above(iops_target, m.ORANGE),
                legend_calcs=("mean", "max"),
                width=12,
            ),
            _average_latency(
                profile,
                "read",
                "nodeslo_disk_read_time_seconds_total",
                "nodeslo_disk_reads_completed_total",
            ),
            _average_latency(
                profile,
                "write_sync",
                "nodeslo_disk_write_time_seconds_total",
                "nodeslo_disk_writes_completed_total",
            ),
        ),
    )


# --- CPU -----------------------------------------------------------------------------


def _cstate_panels(profile: Profile) -> tuple[m.AnyPanel, ...]:
    keep = c.by(profile)
    residency = (
        f"sum by ({c.by(profile, 'state')}) "
        f"(rate({c.raw('nodeslo_cpuidle_residency_seconds_total')}[{c.RATE}]))\n"
        f"/ on ({keep}) group_left ()\n"
        f"sum by ({keep}) ({c.raw('nodeslo_cpuidle_cpus')})"
    )
    panels: list[m.AnyPanel] = [
        m.TimeSeries(
            title="C-state residency share",
            description="Share of CPU time spent in each idle state, averaged over the "
            "server's CPUs. Time in a deep state is time a wake-up pays its exit latency "
            "for.",
            queries=(m.Query(residency, c.legend("state")),),
            unit="percentunit",
            stacked=True,
            fill_opacity=40,
            legend_calcs=("mean",),
            width=12,
        )
    ]
    limit = profile.tuning.max_cstate_exit_latency_seconds
    if limit is not None:
        deep = (
            f"{c.raw('nodeslo_cpuidle_enabled_cpus')}\n"
            f"and\n{c.raw('nodeslo_cpuidle_exit_latency_seconds')} > {promql.number(limit)}"
        )
        panels.append(
            m.BarGauge(
                title=f"CPUs with deep C-states enabled (exit latency > {human_seconds(limit)})",
                description="For each idle state whose exit latency exceeds the profile's "
                f"tuning.max_cstate_exit_latency ({human_seconds(limit)}): the CPUs that may "
                "still enter it. The profile wants none.",
                queries=(m.Query(deep, c.legend("state"), instant=True),),
                unit="none",
                steps=m.above(ANY),
                min=0,
                width=12,
                links=c.runbooks(profile, "DeepCStatesEnabled"),
            )
        )
    return tuple(panels)


def _frequency_panel(profile: Profile) -> m.TimeSeries:
    target = profile.capacity.all_core_frequency_hertz
    line = (
        ""
        if target is None
        else f" The threshold is the profile's all-core target "
        f"(capacity.all_core_frequency_hertz, {target / 1e9:g} GHz): red below it."
    )
    return m.TimeSeries(
        title="CPU frequency per package",
        description="Average and lowest current frequency of each package's CPUs; the "
        f"dashed line is the hardware maximum (turbo included).{line}",
        **c.against_limits(
            (
                m.Query(c.raw("nodeslo_cpu_frequency_average_hertz"), c.legend("package") + " avg"),
                m.Query(c.raw("nodeslo_cpu_frequency_min_hertz"), c.legend("package") + " min"),
            ),
            (
                m.Query(c.raw("nodeslo_cpu_frequency_max_hertz"), c.legend("package") + " hw max"),
                m.BLUE,
            ),
        ),
        unit="hertz",
        steps=() if target is None else m.below(target),
        width=12,
        links=c.runbooks(profile, "CPUGovernorNotPerformance", "CPUTurboDisabled"),
    )


def _throttle_panels(profile: Profile) -> tuple[m.AnyPanel, ...]:
    window = promql.duration(profile.health.cpu.throttling_window_seconds)
    events = (
        f"ceil(sum by ({c.by(profile, 'package', 'scope')}) "
        f"(increase({c.raw('nodeslo_cpu_throttle_events_total')}[{window}])))"
    )
    panels: list[m.AnyPanel] = [
        m.TimeSeries(
            title=f"Thermal throttle events over the last {window}",
            description="Throttle events per package (core and package scope) in the "
            f"profile's health.cpu.throttling_window ({window}); the alert fires on any.",
            queries=(m.Query(events, c.legend("package", "scope")),),
            unit="none",
            steps=m.above(ANY),
            bars=True,
            fill_opacity=60,
            width=12,
            links=c.runbooks(profile, "CPUThermalThrottling"),
        )
    ]
    for slo in profile.slos:
        if not isinstance(slo.sli, TimeSLI):
            continue
        sli = slo.sli
        matchers = tuple(f"{n}={promql.quote(v)}" for n, v in sli.matchers)
        keep = c.by(profile, *sli.by)
        bad = f"sum by ({keep}) (rate({c.raw(sli.bad_seconds, *matchers)}[{c.RATE}]))"
        bad_text = sli.bad_seconds
        if sli.fallback_bad_seconds is not None:
            fallback = f"sum by ({keep}) (rate({c.raw(sli.fallback_bad_seconds)}[{c.RATE}]))"
            bad = f"(\n  {bad}\n  or\n  {fallback}\n)"
            bad_text += f", else {sli.fallback_bad_seconds}"
        expr = f"{bad}\n/\nsum by ({keep}) ({c.raw(sli.capacity)})"
        panels.append(
            m.TimeSeries(
                title=f"{slo.name}: share of time lost "
                f"(error budget {c.percent(slo.error_budget)})",
                description=f"{slo.description} Bad time ({bad_text}) over the "
                f"capacity ({sli.capacity}). The line is the SLO's error budget: above it, "
                "the budget burns faster than the period allows.",
                queries=(m.Query(expr, c.legend(*sli.by)),),
                unit="percentunit",
                steps=m.above(slo.error_budget),
                width=12,
                links=c.runbooks(
                    profile,
                    "NodeSLOErrorBudgetBurn",
                    "CPUThermalThrottling",
                    "CPUThrottleSignalMissing",
                ),
            )
        )
    return tuple(panels)


def _temperature_panel(profile: Profile) -> m.TimeSeries:
    keep = c.by(profile, "chip")
    return m.TimeSeries(
        title="CPU temperatures against max and crit",
        description="Hottest sensor of each CPU hwmon chip; dashed, the lowest max (orange) "
        "and crit (red) limits of the chip's sensors: their own, else the profile's for the "
        "CPU vendor (health.cpu.temperature_max / temperature_crit; k10temp on AMD Zen "
        "reports none). The alerts compare each sensor with its own limits.",
        **c.against_limits(
            (
                m.Query(
                    f"max by ({keep}) ({c.raw('nodeslo_hwmon_temperature_celsius', CPU_CHIPS)})",
                    c.legend("chip") + " hottest",
                ),
            ),
            (
                m.Query(
                    f"min by ({keep}) (\n{cpu.temperature_limit(profile, 'max', c.raw)}\n)",
                    c.legend("chip") + " max",
                ),
                m.ORANGE,
            ),
            (
                m.Query(
                    f"min by ({keep}) (\n{cpu.temperature_limit(profile, 'crit', c.raw)}\n)",
                    c.legend("chip") + " crit",
                ),
                m.RED,
            ),
        ),
        unit="celsius",
        width=12,
        links=c.runbooks(
            profile, "CPUTemperatureHigh", "CPUTemperatureCritical", "CPUTemperatureUnmonitored"
        ),
    )


def _cpu_row(profile: Profile) -> m.Row:
    return m.Row(
        "CPU determinism",
        (
            *_cstate_panels(profile),
            _frequency_panel(profile),
            _temperature_panel(profile),
            *_throttle_panels(profile),
        ),
    )


# --- power ---------------------------------------------------------------------------


def _power_row(profile: Profile) -> m.Row:
    power = profile.health.power
    steps: list[m.Step] = [m.Step(None, m.GREEN)]
    lines = []
    if profile.capacity.peak_power_watts is not None:
        steps.append(m.Step(profile.capacity.peak_power_watts, m.ORANGE))
        lines.append(
            f"Orange: the expected peak, {profile.capacity.peak_power_watts:g} W "
            "(capacity.peak_power_watts)."
        )
    if power.psu_count >= 2:
        steps.append(m.Step(power.redundant_capacity_watts, m.RED))
        lines.append(
            f"Red: what {power.psu_count - 1} PSU(s) of {power.psu_capacity_watts:g} W carry "
            f"when one of the {power.psu_count} fails (health.power): above it, a PSU failure "
            "takes the server down."
        )
    meter = promql.quote(power.meter_chip_name)
    bmc_input = f'unit="watts", sensor=~{promql.quote(power.bmc_input_power_sensors)}'
    return m.Row(
        "Power",
        (
            m.TimeSeries(
                title="System input power against one PSU fewer",
                description=" ".join(
                    (
                        f"Input power from the {power.meter_chip_name} hwmon chip, else the "
                        "sum of the BMC's PSU input power sensors "
                        "(health.power.bmc_input_power_sensors).",
                        *lines,
                    )
                ),
                queries=(
                    m.Query(
                        f"sum by ({c.by(profile)}) "
                        f"({c.raw('nodeslo_hwmon_power_watts', f'chip_name={meter}')})\nor\n"
                        f"sum by ({c.by(profile)}) "
                        f"({c.raw('nodeslo_bmc_sensor_value', bmc_input)})",
                        c.legend(),
                    ),
                ),
                unit="watt",
                steps=tuple(sorted(steps, key=lambda s: -1 if s.value is None else s.value)),
                width=12,
                links=c.runbooks(profile, "PowerRedundancyLost"),
            ),
            m.TimeSeries(
                title="CPU package and DRAM power (RAPL)",
                description="Energy counters of the RAPL zones per second.",
                queries=(
                    m.Query(
                        f"sum by ({c.by(profile, 'name')}) "
                        f"(rate({c.raw('nodeslo_rapl_energy_joules_total')}[{c.RATE}]))",
                        c.legend("name"),
                    ),
                ),
                unit="watt",
                width=12,
            ),
        ),
    )


# --- memory --------------------------------------------------------------------------


def _memory_row(profile: Profile) -> m.Row:
    memory = profile.health.memory
    ce_window = promql.duration(memory.correctable_errors_window_seconds)
    keep = c.by(profile)
    remote = f"sum by ({keep}) ({c.rate('nodeslo_numa_remote_pages_total')})"
    local = f"sum by ({keep}) ({c.rate('nodeslo_numa_local_pages_total')})"
    dimm = c.by(profile, "controller", "dimm", "label")
    panels: list[m.AnyPanel] = [
        m.BarGauge(
            title=f"Correctable ECC errors per DIMM over the last {ce_window}",
            description="Corrected memory errors per DIMM in the profile's "
            f"health.memory.correctable_errors_window; the alert fires when a server "
            f"corrects more than {memory.correctable_errors_max:g} in that window.",
            queries=(
                m.Query(
                    f"sum by ({dimm}) (increase("
                    f"{c.raw('nodeslo_edac_dimm_correctable_errors_total')}[{ce_window}]))",
                    c.legend("label"),
                    instant=True,
                ),
            ),
            unit="none",
            steps=m.above(memory.correctable_errors_max, m.ORANGE),
            min=0,
            height=10,
            width=8,
            links=c.runbooks(profile, "MemoryCorrectableErrorsHigh"),
        ),
        m.BarGauge(
            title="Uncorrectable ECC errors per DIMM since boot",
            description="Memory errors ECC could not correct, per DIMM: any is a page.",
            queries=(
                m.Query(
                    f"sum by ({dimm}) ({c.raw('nodeslo_edac_dimm_uncorrectable_errors_total')})",
                    c.legend("label"),
                    instant=True,
                ),
            ),
            unit="none",
            steps=m.above(ANY),
            min=0,
            height=10,
            width=8,
            links=c.runbooks(profile, "MemoryUncorrectableErrors"),
        ),
        m.Stat(
            title="Memory controllers reporting ECC",
            description="EDAC memory controllers the kernel exposes; with none, memory errors "
            "go unreported.",
            queries=(
                m.Query(
                    f"sum by ({keep}) ({c.raw('nodeslo_edac_memory_controllers')})",
                    c.legend(),
                ),
            ),
            unit="none",
            steps=m.below(ANY),
            sparkline=False,
            height=10,
            width=8,
            links=c.runbooks(profile, "ECCReportingAbsent"),
        ),
        m.TimeSeries(
            title=f"NUMA remote allocations (limit {c.percent(memory.numa_remote_ratio_max)})",
            description="Share of page allocations that went to tasks running on another NUMA "
            "node (numastat other_node / (local_node + other_node)). The line is the "
            "profile's health.memory.numa_remote_max.",
            queries=(m.Query(f"{remote}\n/\n({local} + {remote})", c.legend()),),
            unit="percentunit",
            steps=m.above(memory.numa_remote_ratio_max),
            width=12,
            links=c.runbooks(profile, "NUMARemoteAccessHigh"),
        ),
    ]
    peak = profile.capacity.memory_bandwidth_bytes_per_second
    if peak is not None:
        target = profile.capacity.memory_bandwidth_target_ratio
        steps = [m.Step(None, m.GREEN), m.Step(peak, m.RED)]
        if target is not None:
            steps.insert(1, m.Step(peak * target, m.ORANGE))
        panels.append(
            m.TimeSeries(
                title="Memory bandwidth against the sustained target and peak",
                description="Memory traffic of all tasks (resctrl MBM, summed over L3 "
                f"domains). Red: the theoretical peak ({peak / 1e9:g} GB/s, "
                "capacity.memory_bandwidth_bytes_per_second)"
                + (
                    ""
                    if target is None
                    else f"; orange: {c.percent(target)} of it "
                    "(capacity.memory_bandwidth_target), above which latency suffers"
                )
                + ".",
                queries=(
                    m.Query(
                        f"sum by ({keep}) ({c.rate('nodeslo_memory_bandwidth_bytes_total')})",
                        c.legend(),
                    ),
                ),
                unit="Bps",
                steps=tuple(steps),
                width=12,
            )
        )
    return m.Row("Memory", tuple(panels))


# --- NVMe ----------------------------------------------------------------------------


def _per_controller(profile: Profile, expr: str) -> str:
    """`expr` per controller, labelled with the drive's model, firmware and serial."""
    keep = c.by(profile, "controller")
    info = f"max by ({keep}, model, firmware, serial) ({c.raw('nodeslo_nvme_info')})"
    return f"max by ({keep}) ({expr})\n* on ({keep}) group_left (model, firmware, serial)\n{info}"


def _waf_record(profile: Profile) -> str:
    return c.catalog_record(profile, "nodeslo_nvme_write_amplification")


def _nvme_table(profile: Profile) -> m.Table:
    nvme = profile.health.nvme
    errors_window = promql.duration(nvme.media_errors_window_seconds)
    composite = c.raw("nodeslo_nvme_temperature_celsius", 'sensor="composite"')

    def over(level: str) -> str:
        limit = c.raw("nodeslo_nvme_temperature_threshold_celsius", f'level="{level}"')
        return f"{composite}\n- on ({c.by(profile, 'controller')}) group_left ()\n({limit} > 0)"

    columns = (
        ("Wear", c.raw("nodeslo_nvme_percentage_used_ratio")),
        (
            "Spare above threshold",
            f"{c.raw('nodeslo_nvme_available_spare_ratio')}\n- "
            f"{c.raw('nodeslo_nvme_available_spare_threshold_ratio')}",
        ),
        ("Over WCTEMP", over("warning")),
        ("Over CCTEMP", over("critical")),
        (
            f"Media errors ({errors_window})",
            f"ceil(increase({c.raw('nodeslo_nvme_media_errors_total')}[{errors_window}]))",
        ),
        (
            f"WAF ({promql.duration(nvme.write_amplification_window_seconds)})",
            c.raw(_waf_record(profile)),
        ),
        ("Critical warning", c.raw("nodeslo_nvme_critical_warning")),
        ("Live", c.raw("nodeslo_nvme_state_live")),
        ("SMART read", c.raw("nodeslo_nvme_smart_up")),
    )
    queries = tuple(
        m.Query(_per_controller(profile, expr), instant=True, format="table") for _, expr in columns
    )
    names = {f"Value #{chr(ord('A') + i)}": name for i, (name, _) in enumerate(columns)}
    waf_name = columns[5][0]
    errors_name = columns[4][0]
    return m.Table(
        title="NVMe controllers",
        description="One row per controller, now. Wear: percentage used (orange at the "
        f"profile's {c.percent(nvme.wear_warning_ratio)}, red at the rated endurance). "
        "Spare above threshold: available spare minus the drive's own threshold (red "
        "below 0). Over WCTEMP / CCTEMP: composite temperature minus the drive's limits "
        f"(at or above 0 the drive throttles / may shut down). Media errors in the last "
        f"{errors_window} (any is a ticket). WAF: NAND bytes per host byte over "
        f"{promql.duration(nvme.write_amplification_window_seconds)} (red above "
        f"{nvme.write_amplification_max:g}; empty until the host wrote enough). Critical "
        "warning: the SMART bitmask (0 = none). Live: the controller's state. SMART read: "
        "whether the last poll read the SMART page (0: failed, timed out, or never read "
        "without the privileged helper; the other columns are then stale or empty).",
        queries=queries,
        transformations=(
            m.Transformation("merge"),
            m.Transformation(
                "organize",
                {
                    "excludeByName": {"Time": True},
                    "renameByName": names,
                    "indexByName": {},
                },
            ),
        ),
        overrides=(
            m.Override(
                "byName",
                "Wear",
                (
                    ("unit", "percentunit"),
                    m.thresholds_property(
                        (
                            m.Step(None, m.GREEN),
                            m.Step(nvme.wear_warning_ratio, m.ORANGE),
                            m.Step(1, m.RED),
                        )
                    ),
                ),
            ),
            m.Override(
                "byName",
                "Spare above threshold",
                (("unit", "percentunit"), m.thresholds_property(m.below(0))),
            ),
            m.Override(
                "byName",
                "Over WCTEMP",
                (("unit", "celsius"), m.thresholds_property(m.above(0, m.ORANGE))),
            ),
            m.Override(
                "byName",
                "Over CCTEMP",
                (("unit", "celsius"), m.thresholds_property(m.above(0))),
            ),
            m.Override("byName", errors_name, (m.thresholds_property(m.above(ANY)),)),
            m.Override(
                "byName",
                waf_name,
                (("decimals", 2), m.thresholds_property(m.above(nvme.write_amplification_max))),
            ),
            m.Override("byName", "Critical warning", (m.thresholds_property(m.above(ANY)),)),
            m.Override("byName", "Live", (m.thresholds_property(m.below(ANY)),)),
            m.Override("byName", "SMART read", (m.thresholds_property(m.below(ANY)),)),
        ),
        sort_by=(("Wear", True),),
        width=24,
        height=10,
        links=c.runbooks(
            profile,
            "NVMeCriticalWarning",
            "NVMeSpareBelowThreshold",
            "NVMeControllerNotLive",
            "NVMeWearHigh",
            "NVMeTemperatureHigh",
            "NVMeTemperatureCritical",
            "NVMeMediaErrorsIncreasing",
            "NVMeWriteAmplificationHigh",
            "NVMeSmartStale",
        ),
    )


def _nvme_row(profile: Profile) -> m.Row:
    nvme = profile.health.nvme
    keep = c.by(profile)
    composite = c.raw("nodeslo_nvme_temperature_celsius", 'sensor="composite"')
    errors_window = promql.duration(nvme.media_errors_window_seconds)
    waf_window = promql.duration(nvme.write_amplification_window_seconds)

    def limit(metric: str, *matchers: str) -> str:
        return f"min by ({keep}) ({c.raw(metric, *matchers)} > 0)"

    return m.Row(
        "NVMe health",
        (
            _nvme_table(profile),
            _present_panel(
                profile,
                title="NVMe controllers present against the last "
                + promql.duration(nvme.missing_lookback_seconds),
                record=c.catalog_record(profile, "nodeslo_nvme_controllers"),
                lookback=nvme.missing_lookback_seconds,
                what="NVMe controllers (/sys/class/nvme)",
                alert="NVMeControllerMissing",
                width=24,
            ),
            m.TimeSeries(
                title="NVMe wear (percentage used)",
                description="The drive's estimate of its rated endurance used. Orange: the "
                f"profile's health.nvme.wear_warning ({c.percent(nvme.wear_warning_ratio)}); "
                "red: rated endurance reached.",
                queries=(
                    m.Query(c.raw("nodeslo_nvme_percentage_used_ratio"), c.legend("controller")),
                ),
                unit="percentunit",
                steps=(
                    m.Step(None, m.GREEN),
                    m.Step(nvme.wear_warning_ratio, m.ORANGE),
                    m.Step(1, m.RED),
                ),
                legend_calcs=("lastNotNull",),
                width=12,
                links=c.runbooks(profile, "NVMeWearHigh", "NVMeWearOutPredicted"),
            ),
            m.TimeSeries(
                title="NVMe available spare against the drive's threshold",
                description="Spare blocks left; dashed, the highest threshold the drives set "
                "for themselves. Below it a drive can no longer remap failing blocks.",
                **c.against_limits(
                    (m.Query(c.raw("nodeslo_nvme_available_spare_ratio"), c.legend("controller")),),
                    (
                        m.Query(
                            f"max by ({keep}) "
                            f"({c.raw('nodeslo_nvme_available_spare_threshold_ratio')})",
                            c.legend() + " threshold",
                        ),
                        m.RED,
                    ),
                ),
                unit="percentunit",
                legend_calcs=("lastNotNull",),
                width=12,
                links=c.runbooks(profile, "NVMeSpareBelowThreshold"),
            ),
            m.TimeSeries(
                title="NVMe composite temperature against WCTEMP and CCTEMP",
                description="Composite temperature per controller; dashed, the lowest warning "
                "(WCTEMP, orange) and critical (CCTEMP, red) threshold of the drives.",
                **c.against_limits(
                    (m.Query(composite, c.legend("controller")),),
                    (
                        m.Query(
                            limit("nodeslo_nvme_temperature_threshold_celsius", 'level="warning"'),
                            c.legend() + " WCTEMP",
                        ),
                        m.ORANGE,
                    ),
                    (
                        m.Query(
                            limit("nodeslo_nvme_temperature_threshold_celsius", 'level="critical"'),
                            c.legend() + " CCTEMP",
                        ),
                        m.RED,
                    ),
                ),
                unit="celsius",
                legend_calcs=("lastNotNull", "max"),
                width=12,
                links=c.runbooks(profile, "NVMeTemperatureHigh", "NVMeTemperatureCritical"),
            ),
            m.TimeSeries(
                title=f"NVMe media errors over the last {errors_window}",
                description="New unrecovered data integrity errors per controller in the "
                f"profile's health.nvme.media_errors_window ({errors_window}): any is a "
                "ticket.",
                queries=(
                    m.Query(
                        f"ceil(increase({c.raw('nodeslo_nvme_media_errors_total')}"
                        f"[{errors_window}]))",
                        c.legend("controller"),
                    ),
                ),
                unit="none",
                steps=m.above(ANY),
                bars=True,
                fill_opacity=60,
                width=12,
                links=c.runbooks(profile, "NVMeMediaErrorsIncreasing"),
            ),
            m.TimeSeries(
                title=f"NVMe write amplification over {waf_window}",
                description="NAND bytes written per host byte written (OCP C0h page), once "
                "the host wrote enough for the ratio to mean something. The line is the "
                "profile's health.nvme.write_amplification_max "
                f"({nvme.write_amplification_max:g}).",
                queries=(m.Query(c.raw(_waf_record(profile)), c.legend("controller")),),
                unit="none",
                decimals=2,
                steps=m.above(nvme.write_amplification_max),
                legend_calcs=("lastNotNull",),
                width=12,
                links=c.runbooks(profile, "NVMeWriteAmplificationHigh"),
            ),
            m.StateTimeline(
                title="NVMe critical warnings",
                description="The SMART critical warning bitmask per controller: 0 is none; "
                "bit 0 spare, 1 temperature, 2 reliability, 3 read-only, 4 volatile backup, "
                "5 PMR read-only.",
                queries=(m.Query(c.raw("nodeslo_nvme_critical_warning"), c.legend("controller")),),
                mappings=(m.ValueText("0", "none", m.GREEN),),
                steps=m.above(ANY),
                width=12,
                links=c.runbooks(profile, "NVMeCriticalWarning", "NVMeSpareBelowThreshold"),
            ),
        ),
    )


# --- redundancy and the exporter -------------------------------------------------------


def _present_panel(
    profile: Profile,
    *,
    title: str,
    record: str,
    lookback: float,
    what: str,
    alert: str,
    width: int,
) -> m.TimeSeries:
    """How many of a host's devices it has now, against the most it had in the lookback."""
    keep = c.by(profile)
    window = promql.duration(lookback)
    return m.TimeSeries(
        title=title,
        description=f"{what} the host has now, and (dashed) the most it had within the last "
        f"{window}: a gap between the two lines is a device that disappeared, and pages "
        f"({alert}) until it is back or the {window} have passed.",
        **c.against_limits(
            (m.Query(f"max by ({keep}) ({c.recorded(record)})", c.legend() + " now"),),
            (
                m.Query(
                    f"max by ({keep}) (max_over_time({c.recorded(record)}[{window}]))",
                    c.legend() + f" most within {window}",
                ),
                m.RED,
            ),
        ),
        unit="none",
        decimals=0,
        legend_calcs=("lastNotNull",),
        width=width,
        links=c.runbooks(profile, alert),
    )


def _redundancy_row(profile: Profile) -> m.Row:
    keep = c.by(profile, "pool")
    not_online = "state!~" + promql.quote("(?i)online")
    lookback = profile.health.redundancy.missing_lookback_seconds
    return m.Row(
        "Redundancy",
        (
            m.StateTimeline(
                title="md arrays: running",
                description="Whether the kernel runs each md array (sysfs array_state "
                "readonly, read-auto, clean, active, write-pending, active-idle). Not "
                "running: assembled short of members (inactive), broken after a failure "
                "too many, or unreadable; the state itself is nodeslo_md_state.",
                queries=(m.Query(c.raw("nodeslo_md_active"), c.legend("device")),),
                mappings=(
                    m.ValueText("1", "running", m.GREEN),
                    m.ValueText("0", "not running", m.RED),
                ),
                steps=m.below(ANY),
                width=8,
                links=c.runbooks(profile, "RAIDArrayInactive"),
            ),
            m.StateTimeline(
                title="md arrays: members missing",
                description="Members each md array is missing, the kernel's own count "
                "(sysfs degraded): 0 is full redundancy, anything else a degraded array. "
                "Arrays without redundancy (raid0, linear) and arrays that do not run "
                "have no such count.",
                queries=(m.Query(c.raw("nodeslo_md_degraded"), c.legend("device")),),
                mappings=(
                    m.ValueText("0", "in sync", m.GREEN),
                    m.RangeText(ANY, None, "degraded", m.RED),
                ),
                steps=m.above(ANY),
                width=8,
                links=c.runbooks(profile, "RAIDArrayDegraded"),
            ),
            m.StateTimeline(
                title="md arrays: failed members",
                description="Members in the kernel's faulty state per md array; they stay "
                "until removed, even after a hot spare has rebuilt the array.",
                queries=(
                    m.Query(
                        c.raw("nodeslo_md_disks", "state=" + promql.quote("failed")),
                        c.legend("device"),
                    ),
                ),
                mappings=(
                    m.ValueText("0", "none", m.GREEN),
                    m.RangeText(ANY, None, "failed", m.RED),
                ),
                steps=m.above(ANY),
                width=8,
                links=c.runbooks(profile, "RAIDDiskFailed"),
            ),
            m.TimeSeries(
                title="md resync / recovery progress",
                description="Progress of a running resync, recover, check, repair or "
                "reshape (sysfs sync_action, sync_completed); no series while the arrays "
                "are idle.",
                queries=(
                    m.Query(c.raw("nodeslo_md_sync_progress_ratio"), c.legend("device", "action")),
                ),
                unit="percentunit",
                min=0,
                max=1,
                legend_calcs=("lastNotNull",),
                width=8,
            ),
            _present_panel(
                profile,
                title="md arrays present against the last " + promql.duration(lookback),
                record=c.catalog_record(profile, "nodeslo_md_arrays"),
                lookback=lookback,
                what="md arrays (/sys/block/md*/md)",
                alert="RAIDArrayMissing",
                width=8,
            ),
            m.StateTimeline(
                title="ZFS pools",
                description="1 while a pool is in any state but ONLINE (DEGRADED, FAULTED, "
                "OFFLINE, REMOVED, UNAVAIL, SUSPENDED, or a state the exporter does not "
                "know). A pool that is not imported has no state and no line here: see "
                "the ZFSPoolMissing alert.",
                queries=(
                    m.Query(
                        f"max by ({keep}) ({c.raw('nodeslo_zfs_pool_state', not_online)})",
                        c.legend("pool"),
                    ),
                ),
                mappings=(
                    m.ValueText("0", "ONLINE", m.GREEN),
                    m.ValueText("1", "not ONLINE", m.RED),
                ),
                steps=m.above(ANY),
                width=8,
                links=c.runbooks(profile, "ZFSPoolDegraded", "ZFSPoolMissing"),
            ),
        ),
    )


def _exporter_row(profile: Profile) -> m.Row:
    return m.Row(
        "Exporter",
        (
            m.StateTimeline(
                title="Collectors",
                description="1 while a collector succeeds. A failing collector's metrics, and "
                "the alerts that read them, are missing: its error is on the exporter's "
                "landing page.",
                queries=(m.Query(c.raw("nodeslo_collector_success"), c.legend("collector")),),
                mappings=(
                    m.ValueText("1", "ok", m.GREEN),
                    m.ValueText("0", "failing", m.RED),
                ),
                steps=m.below(ANY),
                width=24,
                height=10,
                links=c.runbooks(
                    profile,
                    "NodeSLOCollectorFailing",
                    "NodeSLOExporterDown",
                    "NodeSLOExporterFlapping",
                    "NodeSLOExporterAbsent",
                ),
            ),
        ),
    )
