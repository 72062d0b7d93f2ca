"""Links and inventory on the dashboards: the node's PCIe links, NICs and RDMA ports, and
the fleet's hosts that differ from the profile's inventory.

Every drive and NIC gets its link state: the share of the bandwidth its link can reach
that it runs at (speed / expected speed x width / expected width: 1 is full, 0.5 a
drive at x2 of x4), 0 when its config space does not answer. Colour steps and lines
are the profile's numbers (health.links, inventory.network.speed).
"""

from __future__ import annotations

from nodeslo.pack import promql
from nodeslo.pack.dashboards import common as c
from nodeslo.pack.dashboards import model as m
from nodeslo.profile import Profile

ANY = 1
FULL = 1  # a link at what it can reach
ENDPOINTS = 'kind!~"root_port|switch_port"'
DEVICE_LABELS = ("device", "kind", "controller", "serial", "interface", "rdma")


def link_state(profile: Profile) -> str:
    """Per drive and NIC: the share of its reachable link bandwidth (0 when silent)."""
    keep = c.by(profile, *DEVICE_LABELS)
    return (
        f"max by ({keep}) (\n"
        f"  {c.raw('nodeslo_pcie_link_speed_transfers_per_second', ENDPOINTS)}\n"
        f"  / {c.raw('nodeslo_pcie_link_expected_speed_transfers_per_second', ENDPOINTS)}\n"
        f"  * {c.raw('nodeslo_pcie_link_width', ENDPOINTS)}\n"
        f"  / {c.raw('nodeslo_pcie_link_expected_width', ENDPOINTS)}\n"
        f"  or {c.raw('nodeslo_pcie_device_responding', ENDPOINTS)} == 0\n"
        ")"
    )


def _who() -> str:
    return c.legend("controller", "interface", "device")


def _pcie_table(profile: Profile) -> m.Table:
    h = profile.health.links
    keep = c.by(profile, *DEVICE_LABELS)
    window = promql.duration(h.pcie_uncorrectable_window_seconds)
    correctable_window = promql.duration(h.pcie_correctable_window_seconds)

    def aer(severities: str, window: str) -> str:
        counter = c.raw("nodeslo_pcie_aer_errors_total", ENDPOINTS, f'aer_severity=~"{severities}"')
        return f"sum by ({keep}) (increase({counter}[{window}]))"

    columns = (
        ("Link", link_state(profile)),
        (
            "Speed",
            f"max by ({keep}) ({c.raw('nodeslo_pcie_link_speed_transfers_per_second', ENDPOINTS)})",
        ),
        ("Width", f"max by ({keep}) ({c.raw('nodeslo_pcie_link_width', ENDPOINTS)})"),
        (f"Uncorrectable ({window})", aer("nonfatal|fatal", window)),
        (f"Correctable ({correctable_window})", aer("correctable", correctable_window)),
    )
    names = {f"Value #{chr(ord('A') + i)}": name for i, (name, _) in enumerate(columns)}
    return m.Table(
        title="PCIe links of the drives and NICs",
        description="One row per watched PCI function, now. Link: the share of the bandwidth "
        "its link can reach that it runs at, i.e. speed / min(its max, its port's max) x "
        "width / the same for lanes (red below 1: trained low; 0: its config space does not "
        f"answer). Speed in transfers/s and width in lanes. AER errors: uncorrectable over "
        f"{window} (any is a page), correctable over {correctable_window} (red above the "
        f"profile's {h.pcie_correctable_errors_max:g}).",
        queries=tuple(m.Query(expr, instant=True, format="table") for _, expr in columns),
        transformations=(
            m.Transformation("merge"),
            m.Transformation(
                "organize",
                {
                    "excludeByName": {"Time": True, "job": True, "cluster": True},
                    "renameByName": names,
                    "indexByName": {},
                },
            ),
        ),
        overrides=(
            m.Override(
                "byName", "Link", (("unit", "percentunit"), m.thresholds_property(m.below(FULL)))
            ),
            m.Override("byName", "Speed", (("unit", "none"), ("decimals", 1))),
            m.Override("byName", names["Value #D"], (m.thresholds_property(m.above(ANY)),)),
            m.Override(
                "byName",
                names["Value #E"],
                (m.thresholds_property(m.above(h.pcie_correctable_errors_max)),),
            ),
        ),
        sort_by=(("Link", False),),
        width=24,
        height=10,
        links=c.runbooks(
            profile, "PCIeLinkDegraded", "PCIeUncorrectableErrors", "PCIeCorrectableErrorsHigh"
        ),
    )


def _nic_table(profile: Profile) -> m.Table:
    h = profile.health.links
    speed = profile.inventory.network.speed_bytes_per_second
    keep = c.by(profile, "interface")
    flap_window = promql.duration(h.network_flap_window_seconds)
    errors_window = promql.duration(h.network_errors_window_seconds)
    errors = f"sum by ({keep}) (rate({c.raw('nodeslo_network_errors_total')}[{errors_window}]))"
    packets = f"sum by ({keep}) (rate({c.raw('nodeslo_network_packets_total')}[{errors_window}]))"
    columns = (
        (
            "Carrier",
            f"max by ({keep}) ({c.raw('nodeslo_network_carrier')}"
            f" or 0 * {c.raw('nodeslo_network_expected_up')})",
        ),
        ("Expected up", f"max by ({keep}) ({c.raw('nodeslo_network_expected_up')})"),
        ("Speed", f"max by ({keep}) ({c.raw('nodeslo_network_speed_bytes_per_second')})"),
        (
            f"Carrier changes ({flap_window})",
            f"sum by ({keep}) (increase({c.raw('nodeslo_network_carrier_changes_total')}"
            f"[{flap_window}]))",
        ),
        (f"Errored ({errors_window})", f"{errors}\n/\n({packets} + {errors})"),
    )
    names = {f"Value #{chr(ord('A') + i)}": name for i, (name, _) in enumerate(columns)}
    speed_steps = m.below(speed) if speed is not None else ()
    return m.Table(
        title="Network interfaces",
        description="One row per physical or listed interface, now. Carrier (red: none; an "
        "expected interface that is gone shows 0). Expected up: listed in the profile or had "
        "carrier since the exporter started. Speed in bytes/s "
        + (f"(red below the profile's {speed:g}, 25 Gb/s in the seed spec). " if speed else ". ")
        + f"Carrier changes over {flap_window} (red above {h.network_flap_changes_max:g}). "
        f"Errored: share of packets with errors over {errors_window} (red above "
        f"{c.percent(h.network_errors_max_ratio)}).",
        queries=tuple(m.Query(expr, instant=True, format="table") for _, expr in columns),
        transformations=(
            m.Transformation("merge"),
            m.Transformation(
                "organize",
                {
                    "excludeByName": {"Time": True, "job": True, "cluster": True},
                    "renameByName": names,
                    "indexByName": {},
                },
            ),
        ),
        overrides=(
            m.Override("byName", "Carrier", (m.thresholds_property(m.below(ANY)),)),
            m.Override("byName", "Speed", (("unit", "Bps"), m.thresholds_property(speed_steps))),
            m.Override(
                "byName",
                names["Value #D"],
                (m.thresholds_property(m.above(h.network_flap_changes_max)),),
            ),
            m.Override(
                "byName",
                names["Value #E"],
                (
                    ("unit", "percentunit"),
                    ("decimals", 4),
                    m.thresholds_property(m.above(h.network_errors_max_ratio)),
                ),
            ),
        ),
        width=24,
        height=8,
        links=c.runbooks(
            profile,
            "NetworkLinkDown",
            "NetworkLinkSpeedDegraded",
            "NetworkLinkFlapping",
            "NetworkErrorsHigh",
        ),
    )


def node_row(profile: Profile) -> m.Row:
    h = profile.health.links
    speed = profile.inventory.network.speed_bytes_per_second
    keep = c.by(profile, "interface")
    correctable = c.raw("nodeslo_pcie_aer_errors_total", 'aer_severity="correctable"')
    correctable_window = promql.duration(h.pcie_correctable_window_seconds)
    return m.Row(
        "Links: PCIe, NICs, RDMA",
        (
            m.StateTimeline(
                title="Link state of every drive and NIC",
                description="Per watched PCI function: the share of the bandwidth its link can "
                "reach that it runs at (speed and width against min(its max, its port's max)). "
                "Full is 1; a drive at x2 of x4 shows 0.5; 0 is a device whose config space "
                "does not answer or that vanished.",
                queries=(m.Query(link_state(profile), _who()),),
                mappings=(
                    m.ValueText("1", "full", m.GREEN),
                    m.ValueText("0", "not answering", m.RED),
                    m.RangeText(0.0001, 0.9999, "trained low", m.ORANGE),
                ),
                steps=m.below(FULL),
                width=12,
                height=10,
                links=c.runbooks(profile, "PCIeLinkDegraded"),
            ),
            m.StateTimeline(
                title="Carrier of every NIC that must have it",
                description="1 while an interface that must have carrier (listed in the "
                "profile, or had carrier since the exporter started) has it; 0 without, or "
                "gone. A port without a cable that never had carrier is not shown.",
                queries=(
                    m.Query(
                        f"max by ({keep}) (\n"
                        f"  {c.raw('nodeslo_network_carrier')}\n"
                        f"  and on ({keep}) {c.raw('nodeslo_network_expected_up')} == 1\n"
                        f"  or 0 * {c.raw('nodeslo_network_expected_up')}\n)",
                        c.legend("interface"),
                    ),
                ),
                mappings=(
                    m.ValueText("1", "up", m.GREEN),
                    m.ValueText("0", "no carrier", m.RED),
                ),
                steps=m.below(ANY),
                width=12,
                height=10,
                links=c.runbooks(profile, "NetworkLinkDown", "NetworkLinkFlapping"),
            ),
            _pcie_table(profile),
            _nic_table(profile),
            m.TimeSeries(
                title="NIC speed against the profile's",
                description="Negotiated speed per interface with carrier, in bytes/s; the line "
                "is the profile's inventory.network.speed.",
                queries=(
                    m.Query(
                        f"{c.raw('nodeslo_network_speed_bytes_per_second')}"
                        f" and on ({keep}) {c.raw('nodeslo_network_carrier')} == 1",
                        c.legend("interface"),
                    ),
                ),
                unit="Bps",
                steps=m.below(speed) if speed is not None else (),
                width=12,
                links=c.runbooks(profile, "NetworkLinkSpeedDegraded"),
            ),
            m.TimeSeries(
                title="PCIe correctable errors per hour",
                description="Correctable AER errors per device over the profile's "
                f"health.links.pcie_correctable_window ({correctable_window}); the line is "
                f"pcie_correctable_errors_max ({h.pcie_correctable_errors_max:g}).",
                queries=(m.Query(f"increase({correctable}[{correctable_window}])", _who()),),
                unit="none",
                steps=m.above(h.pcie_correctable_errors_max),
                width=12,
                links=c.runbooks(profile, "PCIeCorrectableErrorsHigh"),
            ),
            m.StateTimeline(
                title="RDMA ports",
                description="1 while a port is ACTIVE. A port seen active since the exporter "
                "started that is gone shows 0.",
                queries=(
                    m.Query(
                        f"max by ({c.by(profile, 'rdma', 'port')}) "
                        f"({c.raw('nodeslo_rdma_port_active')}"
                        f" or 0 * {c.raw('nodeslo_rdma_port_expected_active')})",
                        c.legend("rdma", "port"),
                    ),
                ),
                mappings=(
                    m.ValueText("1", "ACTIVE", m.GREEN),
                    m.ValueText("0", "not active", m.RED),
                ),
                steps=m.below(ANY),
                width=12,
                links=c.runbooks(profile, "RDMAPortDown"),
            ),
        ),
    )


def fleet_row(profile: Profile) -> m.Row:
    return m.Row(
        "Inventory",
        (
            m.Table(
                title="Hosts that differ from the profile's inventory",
                description="Per server and line of the profile's inventory: what it expects "
                "and what the host has, for every line the host does not meet now "
                "(`nodeslo check` on the host prints them all).",
                queries=(
                    m.Query(
                        f"{c.raw('nodeslo_inventory_info')}\n"
                        f"and on ({c.by(profile, 'item')})\n"
                        f"{c.raw('nodeslo_inventory_compliant')} == 0",
                        instant=True,
                        format="table",
                    ),
                ),
                transformations=(
                    m.Transformation(
                        "organize",
                        {
                            "excludeByName": {
                                "Time": True,
                                "Value": True,
                                "__name__": True,
                                "job": True,
                            },
                            "renameByName": {},
                            "indexByName": {"instance": 0, "item": 1, "expected": 2, "actual": 3},
                        },
                    ),
                ),
                data_links=(
                    c.to_dashboard(c.NODE_UID, "Node dashboard of ${__data.fields.instance}"),
                ),
                width=12,
                height=10,
                links=c.runbooks(profile, "InventoryNonConforming", "MemoryCapacityDegraded"),
            ),
            m.Table(
                title="Inventory compliance",
                description="Per server (rows) and line of the profile's inventory (columns): "
                "whether the host has what the profile specifies.",
                queries=(
                    m.Query(c.raw("nodeslo_inventory_compliant"), instant=True, format="table"),
                ),
                transformations=(
                    m.Transformation(
                        "groupingToMatrix",
                        {"rowField": "instance", "columnField": "item", "valueField": "Value"},
                    ),
                    m.Transformation(
                        "organize",
                        {
                            "excludeByName": {},
                            "renameByName": {"instance\\item": "instance"},
                            "indexByName": {},
                        },
                    ),
                ),
                mappings=(
                    m.ValueText("1", "ok", m.GREEN),
                    m.ValueText("0", "differs", m.RED),
                ),
                data_links=(
                    c.to_dashboard(c.NODE_UID, "Node dashboard of ${__data.fields.instance}"),
                ),
                width=12,
                height=10,
                links=c.runbooks(profile, "InventoryNonConforming", "MemoryCapacityDegraded"),
            ),
        ),
    )
