"""The fleet dashboard: which servers miss their SLOs, burn budget, page, wear out, drift.

Tables are sorted worst first and link each server to its node dashboard; alerts link
to their runbooks. Colour steps are the profile's: the objectives and error budgets,
the burn rates of the alert tiers (derived from the period), the NVMe wear warning
and wear-out horizon, the firmware components compared and how hosts are grouped.
"""

from __future__ import annotations

from typing import Any

from nodeslo.burnrate import TIERS
from nodeslo.pack import promql
from nodeslo.pack import slo as slo_rules
from nodeslo.pack.catalog import fleet
from nodeslo.pack.dashboards import bmc as bmc_panels
from nodeslo.pack.dashboards import common as c
from nodeslo.pack.dashboards import links
from nodeslo.pack.dashboards import model as m
from nodeslo.profile import Profile

# A count that is "any" at all: one alert, one other firmware version.
ANY = 1
# A table column shown as plain text: a number without a threshold of its own.
PLAIN = ("custom.cellOptions", {"type": "auto"})


def dashboard(profile: Profile) -> m.Dashboard:
    return c.dashboard(
        profile,
        uid=c.FLEET_UID,
        title="nodeslo / Fleet",
        description=(
            f"Every server against the profile {profile.name!r}: SLO compliance and burn, "
            "firing alerts, NVMe wear, firmware skew, tuning drift."
        ),
        rows=(
            # First: one cause on many hosts outranks every single host below.
            m.Row("Fleet regressions", _fleet_regression_panels(profile)),
            m.Row("SLOs", _slo_panels(profile)),
            m.Row("Alerts", _alert_panels(profile)),
            m.Row("NVMe wear", _wear_panels(profile)),
            m.Row("BMC", (bmc_panels.fleet_panel(profile),)),
            m.Row("Firmware and tuning", (_firmware_panel(profile), _tuning_panel(profile))),
            links.fleet_row(profile),
        ),
    )


def _rename(names: dict[str, str], exclude: tuple[str, ...] = ("Time",)) -> m.Transformation:
    return m.Transformation(
        "organize",
        {
            "excludeByName": {name: True for name in exclude},
            "renameByName": names,
            "indexByName": {},
        },
    )


def _values(*names: str) -> dict[str, str]:
    """Grafana's names for the value column of each table query, A first."""
    if len(names) == 1:
        return {"Value": names[0]}
    return {f"Value #{chr(ord('A') + i)}": name for i, name in enumerate(names)}


def _per_slo(profile: Profile, expr_for: dict[str, str]) -> str:
    """One expression per SLO joined with `or`: each SLO has its own budget."""
    return "\nor\n".join(expr_for[s.name] for s in profile.slos)


def _runbook_links(profile: Profile) -> tuple[str, Any]:
    """A column of alert names, each linking to its runbook."""
    url = f"{profile.alerting.runbook_base_url}/${{__value.text}}.md"
    return ("links", [{"title": "Runbook", "url": url, "targetBlank": True}])


# --- fleet regressions -----------------------------------------------------------------


def _fleet_regression_panels(profile: Profile) -> tuple[m.AnyPanel, ...]:
    """Per cluster: the alerts on a share of its hosts, against the profile's share. The
    recordings are per cluster, not per server: the instance variable does not filter."""
    settings = profile.alerting.fleet_regression
    share, resolve = settings.share, settings.resolve_share
    firing = f'ALERTS{{alertname="{fleet.NAME}", alertstate="firing"}}'
    legend = " ".join(
        f"{{{{{n}}}}}"
        for n in (*profile.alerting.instance_labels, fleet.REGRESSED)
        if n != "instance"
    )
    steps = (m.Step(None, m.GREEN), m.Step(resolve, m.ORANGE), m.Step(share, m.RED))
    names = ("Share of hosts", "Hosts alerting")
    runbooks = c.runbooks(profile, fleet.NAME)
    return (
        m.Stat(
            title="Fleet regressions now",
            description=f"{fleet.NAME} pages: an alert on more than {c.percent(share)} of a "
            f"cluster's hosts (at least {settings.min_hosts} hosts). Each is one page; "
            "Alertmanager holds back its per-host pages in that cluster.",
            queries=(m.Query(f"count({firing})\nor vector(0)", "regressions"),),
            steps=m.above(ANY),
            width=4,
            height=8,
            links=runbooks,
        ),
        m.Table(
            title="Alerts on a share of a cluster's hosts (largest share first)",
            description="Per cluster and alert: the share of its hosts where the alert is "
            f"pending or firing (severities {', '.join(settings.severities)}), each host "
            f"once. Red above {c.percent(share)} ({fleet.NAME} pages), orange above "
            f"{c.percent(resolve)} (a page already open holds). The alert name links to "
            "its runbook.",
            queries=(
                # Without the recordings' names, the two rows of a cluster and alert merge.
                m.Query(f"max without (__name__) ({fleet.SHARE})", instant=True, format="table"),
                m.Query(f"max without (__name__) ({fleet.ALERTING})", instant=True, format="table"),
            ),
            transformations=(m.Transformation("merge"), _rename(_values(*names))),
            overrides=(
                m.Override(
                    "byName",
                    names[0],
                    (("unit", "percentunit"), ("decimals", 1), m.thresholds_property(steps)),
                ),
                m.Override("byName", names[1], (PLAIN,)),
                m.Override("byName", fleet.REGRESSED, (_runbook_links(profile),)),
            ),
            sort_by=((names[0], True),),
            width=10,
            height=8,
            links=runbooks,
        ),
        m.TimeSeries(
            title="Share of hosts per cluster and alert",
            description="How the share grew (a roll-out's waves) and falls (its roll-back); "
            f"dashed: {c.percent(resolve)} and {c.percent(share)}.",
            queries=(m.Query(fleet.SHARE, legend),),
            unit="percentunit",
            min=0,
            steps=steps,
            width=10,
            height=8,
            links=runbooks,
        ),
    )


# --- SLOs ----------------------------------------------------------------------------


def _slo_panels(profile: Profile) -> tuple[m.AnyPanel, ...]:
    if not profile.slos:
        return (
            m.Text(
                title="SLOs",
                description="",
                content=f"The profile {profile.name!r} defines no SLOs.",
                width=24,
                height=3,
            ),
        )
    period = promql.duration(profile.period_seconds)
    period_record = slo_rules.ratio_record(profile.period_seconds)
    objective = _per_slo(
        profile,
        {
            s.name: f"0 * {c.recorded(slo_rules.BUDGET_REMAINING, s)} "
            f"+ {promql.number(s.objective)}"
            for s in profile.slos
        },
    )
    compliance_names = (f"SLI over {period}", "Objective", "Budget remaining")
    percent = (("unit", "percentunit"), ("decimals", 3))
    compliance = m.Table(
        title="SLO compliance per server (least budget left first)",
        description=f"Per server and SLO: the SLI over the {period} period, the objective, "
        "and the error budget left (red once spent). Click a server for its node "
        "dashboard.",
        queries=(
            m.Query(f"1 - {c.recorded(period_record)}", instant=True, format="table"),
            m.Query(objective, instant=True, format="table"),
            m.Query(c.recorded(slo_rules.BUDGET_REMAINING), instant=True, format="table"),
        ),
        transformations=(m.Transformation("merge"), _rename(_values(*compliance_names))),
        overrides=(
            # The objective differs per row: the budget column carries the colour.
            m.Override("byName", compliance_names[0], (*percent, PLAIN)),
            m.Override("byName", compliance_names[1], (*percent, PLAIN)),
            m.Override(
                "byName",
                compliance_names[2],
                (("unit", "percentunit"), ("decimals", 1), m.thresholds_property(m.below(0))),
            ),
        ),
        sort_by=((compliance_names[2], False),),
        data_links=(
            c.to_dashboard(c.NODE_UID, "Node dashboard of ${__data.fields.instance}"),
            c.to_dashboard(c.SLOS_UID, "SLOs of ${__data.fields.instance}"),
        ),
        width=12,
        height=10,
        links=c.runbooks(profile, slo_rules.ALERT_NAME),
    )
    tier_names = tuple(
        f"{t.long}/{t.short} ({t.severity} ≥ {promql.number(t.factor(profile.period_seconds))}x)"
        for t in TIERS
    )
    burn_queries = []
    for tier in TIERS:
        windows = "|".join(
            slo_rules.ratio_record(w) for w in (tier.long_seconds, tier.short_seconds)
        )
        # The alert wants both windows above the factor: their minimum is what it compares.
        burn_queries.append(
            m.Query(
                _per_slo(
                    profile,
                    {
                        s.name: f'min without (__name__) ({{__name__=~"{windows}", '
                        f'{c.RECORDED}, slo="{s.name}"}}) / {promql.number(s.error_budget)}'
                        for s in profile.slos
                    },
                ),
                instant=True,
                format="table",
            )
        )
    burn = m.Table(
        title="Burn rate per alert tier (the lower of both windows)",
        description="Per server and SLO, for each alert tier: the error ratio over its long "
        "and short window divided by the error budget, the lower of the two (the alert "
        "fires when both exceed the tier's burn rate). Red: a page burns; orange: a "
        "ticket burns.",
        queries=tuple(burn_queries),
        transformations=(m.Transformation("merge"), _rename(_values(*tier_names))),
        overrides=tuple(
            m.Override(
                "byName",
                name,
                (
                    ("decimals", 2),
                    m.thresholds_property(
                        m.above(
                            tier.factor(profile.period_seconds),
                            m.RED if tier.severity == "critical" else m.ORANGE,
                        )
                    ),
                ),
            )
            for name, tier in zip(tier_names, TIERS, strict=True)
        ),
        sort_by=((tier_names[0], True),),
        data_links=(c.to_dashboard(c.SLOS_UID, "SLOs of ${__data.fields.instance}"),),
        width=12,
        height=10,
        links=c.runbooks(profile, slo_rules.ALERT_NAME),
    )
    return (compliance, burn)


# --- alerts --------------------------------------------------------------------------


def _alert_panels(profile: Profile) -> tuple[m.AnyPanel, ...]:
    critical, warning = c.severities()
    severity = f'severity=~"{critical}|{warning}"'
    per_node = f"count by (instance, severity) ({c.alert_selector(profile, c.RECORDED, severity)})"
    # Fleet-wide alerts (firmware skew across hosts) have no instance label.
    fleet_wide = c.alert_selector(profile, 'instance=""')
    firing = f"{c.alert_selector(profile, c.RECORDED)}\nor\n{fleet_wide}"
    paging = c.alert_selector(profile, c.RECORDED, f"severity={promql.quote(critical)}")
    return (
        m.Stat(
            title="Servers paging now",
            description=f"Servers with at least one firing {critical} nodeslo alert.",
            queries=(m.Query(f"count(count by (instance) ({paging}))\nor vector(0)", "paging"),),
            steps=m.above(ANY),
            width=4,
            height=10,
        ),
        m.Table(
            title="Servers with firing alerts",
            description="Firing nodeslo alerts per server and severity: critical pages, "
            "warning opens a ticket. Click a server for its node dashboard.",
            queries=(m.Query(per_node, instant=True, format="table"),),
            transformations=(
                m.Transformation(
                    "groupingToMatrix",
                    {
                        "rowField": "instance",
                        "columnField": "severity",
                        "valueField": "Value",
                        "emptyValue": "zero",
                    },
                ),
                _rename({"instance\\severity": "instance"}, exclude=()),
            ),
            overrides=(
                m.Override("byName", critical, (m.thresholds_property(m.above(ANY)),)),
                m.Override("byName", warning, (m.thresholds_property(m.above(ANY, m.ORANGE)),)),
            ),
            sort_by=((critical, True),),
            data_links=(c.to_dashboard(c.NODE_UID, "Node dashboard of ${__data.fields.instance}"),),
            width=8,
            height=10,
        ),
        m.Table(
            title="Firing alerts",
            description="Every firing nodeslo alert; the alert name links to its runbook.",
            queries=(m.Query(firing, instant=True, format="table"),),
            transformations=(
                _rename(
                    {},
                    exclude=("Time", "Value", "__name__", "alertstate", "job"),
                ),
            ),
            overrides=(m.Override("byName", "alertname", (_runbook_links(profile),)),),
            sort_by=(("severity", False),),
            colored_cells=False,
            width=12,
            height=10,
        ),
    )


# --- NVMe wear -----------------------------------------------------------------------


def _wear_panels(profile: Profile) -> tuple[m.AnyPanel, ...]:
    nvme = profile.health.nvme
    warning = nvme.wear_warning_ratio
    used = c.raw("nodeslo_nvme_percentage_used_ratio")
    bands = (
        (f"below {c.percent(warning)}", f"count({used} < {promql.number(warning)})"),
        (
            f"{c.percent(warning)} to 100%",
            f"count({used} >= {promql.number(warning)} < 1)",
        ),
        ("worn out (100%+)", f"count({used} >= 1)"),
    )
    horizon = nvme.wearout_horizon_seconds
    lookback = promql.duration(nvme.wearout_lookback_seconds)
    power_on = c.raw("nodeslo_nvme_power_on_seconds_total")
    keep = c.by(profile, "controller")
    info = f"max by ({keep}, model, serial) ({c.raw('nodeslo_nvme_info')})"

    def per_drive(expr: str) -> str:
        return f"max by ({keep}) ({expr})\n* on ({keep}) group_left (model, serial)\n{info}"

    # Drives that wore nothing yet have no rate to project.
    lifetime_left = f"clamp_min({power_on} * (1 - {used}) / ({used} > 0), 0)"
    # The alert's own projection: the hourly recording of wear over the lookback.
    hourly = c.raw(c.catalog_record(profile, "nodeslo_nvme_percentage_used_ratio"))
    recent_rate = f"(deriv({hourly}[{lookback}]) > 0)"
    # The hourly wear is kept by serial (its history survives renames): joined by serial.
    recent_left = f"clamp_min((1 - {used}) / ignoring (controller) group_left () {recent_rate}, 0)"
    table_names = (
        "Wear",
        "Time left (lifetime rate)",
        "Worn out by (lifetime rate)",
        f"Time left ({lookback} rate)",
        f"Worn out by ({lookback} rate)",
    )
    time_left_steps = m.thresholds_property(m.below(horizon))
    return (
        m.BarGauge(
            title="NVMe drives per wear band",
            description="Drives of the selected servers by percentage used: below the "
            f"profile's health.nvme.wear_warning ({c.percent(warning)}), between it and "
            "the rated endurance, and past it.",
            queries=tuple(
                m.Query(f"{expr} or vector(0)", name, instant=True) for name, expr in bands
            ),
            unit="none",
            overrides=(
                m.Override("byFrameRefID", "B", (m.thresholds_property(m.above(ANY, m.ORANGE)),)),
                m.Override("byFrameRefID", "C", (m.thresholds_property(m.above(ANY)),)),
            ),
            width=6,
            height=10,
            links=c.runbooks(profile, "NVMeWearHigh"),
        ),
        m.Stat(
            title="Fleet wear: median, P90, most worn",
            description="Percentage used across the selected drives. Orange at the wear "
            "warning, red at the rated endurance.",
            queries=(
                m.Query(f"quantile(0.5, {used})", "median", instant=True),
                m.Query(f"quantile(0.9, {used})", "P90", instant=True),
                m.Query(f"max({used})", "most worn", instant=True),
            ),
            unit="percentunit",
            steps=(m.Step(None, m.GREEN), m.Step(warning, m.ORANGE), m.Step(1, m.RED)),
            sparkline=False,
            width=6,
            height=10,
        ),
        m.Table(
            title="NVMe projected wear-out (soonest first)",
            description="When each drive reaches its rated endurance: at its lifetime "
            "average rate (percentage used over power-on time; needs no history) and at the "
            f"rate of the last {lookback} (the hourly wear recording the NVMeWearOutPredicted "
            "alert projects; empty while the drive does not wear or the history is short). Red: "
            f"within the profile's health.nvme.wearout_horizon "
            f"({promql.duration(horizon)}).",
            queries=(
                m.Query(per_drive(used), instant=True, format="table"),
                m.Query(per_drive(lifetime_left), instant=True, format="table"),
                m.Query(per_drive(f"time() + {lifetime_left}"), instant=True, format="table"),
                m.Query(per_drive(recent_left), instant=True, format="table"),
                m.Query(per_drive(f"time() + {recent_left}"), instant=True, format="table"),
            ),
            transformations=(m.Transformation("merge"), _rename(_values(*table_names))),
            overrides=(
                m.Override(
                    "byName",
                    table_names[0],
                    (
                        ("unit", "percentunit"),
                        m.thresholds_property(
                            (m.Step(None, m.GREEN), m.Step(warning, m.ORANGE), m.Step(1, m.RED))
                        ),
                    ),
                ),
                m.Override("byName", table_names[1], (("unit", "s"), time_left_steps)),
                m.Override(
                    "byName",
                    table_names[2],
                    (("unit", "dateTimeAsIso"), PLAIN),
                ),
                m.Override("byName", table_names[3], (("unit", "s"), time_left_steps)),
                m.Override(
                    "byName",
                    table_names[4],
                    (("unit", "dateTimeAsIso"), PLAIN),
                ),
            ),
            sort_by=((table_names[1], False),),
            data_links=(c.to_dashboard(c.NODE_UID, "Node dashboard of ${__data.fields.instance}"),),
            width=12,
            height=10,
            links=c.runbooks(profile, "NVMeWearHigh", "NVMeWearOutPredicted"),
        ),
    )


# --- firmware and tuning -------------------------------------------------------------


def _firmware_panel(profile: Profile) -> m.Table:
    firmware = profile.health.firmware
    fleet = tuple(n for n in profile.alerting.instance_labels if n != "instance")
    components = promql.quote("|".join(firmware.host_components))
    # Rows: (component, vendor, model, version) for hosts, (component="nvme", model,
    # version) for drives, each with the servers or drives that run it.
    host_group = promql.by((*fleet, "component", *firmware.host_group_by))
    host_rows = (
        f"count by ({host_group}, model, version) "
        f"({c.raw('nodeslo_firmware_info', f'component=~{components}')})"
    )
    nvme_group = promql.by((*fleet, "component", "model"))
    nvme_rows = (
        f"sum by ({nvme_group}, version) (\n"
        "  label_replace(label_replace(\n"
        f"    count by ({promql.by((*fleet, 'model', 'firmware'))}) "
        f"({c.raw('nodeslo_nvme_info')}),\n"
        '    "component", "nvme", "", ""), "version", "$1", "firmware", "(.*)")\n'
        ")"
    )

    def others(rows: str, group: str) -> str:
        # The versions the FirmwareSkew alert counts in this row's group, but this one.
        versions = f"count by ({group}) (count by ({group}, version) ({rows}))"
        return f"0 * ({rows})\n+ on ({group}) group_left ()\n({versions} - 1)"

    names = ("Servers or drives", "Other versions in the group")
    return m.Table(
        title="Firmware versions by model",
        description="Each firmware version in use, per component "
        f"({', '.join(firmware.host_components)} and NVMe drives) and model, with how "
        "many servers (drives) run it. Other versions in the group: the versions the "
        "FirmwareSkew alert counts besides this one (hosts compared within "
        f"{', '.join(firmware.host_group_by) or 'the fleet'} and component, drives within "
        "a model).",
        queries=(
            m.Query(f"{host_rows}\nor\n{nvme_rows}", instant=True, format="table"),
            m.Query(
                f"{others(host_rows, host_group)}\nor\n{others(nvme_rows, nvme_group)}",
                instant=True,
                format="table",
            ),
        ),
        transformations=(m.Transformation("merge"), _rename(_values(*names))),
        overrides=(
            m.Override("byName", names[0], (PLAIN,)),
            m.Override("byName", names[1], (m.thresholds_property(m.above(ANY, m.ORANGE)),)),
        ),
        sort_by=((names[1], True),),
        width=12,
        height=10,
        links=c.runbooks(profile, "FirmwareSkew", "CPUMicrocodeOutdated"),
    )


def _tuning_panel(profile: Profile) -> m.Table:
    return m.Table(
        title="Tuning compliance",
        description="Per server (rows) and setting (columns): whether the kernel holds what "
        "the profile's tuning section expects. The node's /metrics `nodeslo_tuning_info` "
        "says what it found instead.",
        queries=(m.Query(c.raw("nodeslo_tuning_compliant"), instant=True, format="table"),),
        transformations=(
            m.Transformation(
                "groupingToMatrix",
                {"rowField": "instance", "columnField": "setting", "valueField": "Value"},
            ),
            _rename({"instance\\setting": "instance"}, exclude=()),
        ),
        mappings=(
            m.ValueText("1", "ok", m.GREEN),
            m.ValueText("0", "drift", m.RED),
        ),
        data_links=(c.to_dashboard(c.NODE_UID, "Node dashboard of ${__data.fields.instance}"),),
        width=12,
        height=10,
        links=c.runbooks(
            profile,
            "KernelTuningDrift",
            "DeepCStatesEnabled",
            "CPUGovernorNotPerformance",
            "CPUTurboDisabled",
        ),
    )
