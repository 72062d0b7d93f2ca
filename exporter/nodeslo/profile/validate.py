"""Validation: a Located YAML tree -> a `Profile`, every error naming file, key and line.

A user profile may `extends:` a shipped one and override single values; a null value
removes an inherited key (an SLO, a sysctl). Cross-section rules (an SLO on a probe the
profile turns off, an objective no burn-rate tier can page on) are checked here too.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable
from typing import Any, TypeVar

from nodeslo.burnrate import LONGEST_WINDOW_SECONDS, highest_factor
from nodeslo.profile.model import (
    CPU_VENDORS,
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
from nodeslo.profile.yamlsource import Located
from nodeslo.sysctl import sysctl_relpath
from nodeslo.units import (
    BIT_RATE_PATTERN,
    DURATION_PATTERN,
    SIZE_PATTERN,
    TRANSFER_RATE_PATTERN,
    parse_bit_rate,
    parse_duration,
    parse_percent,
    parse_ratio,
    parse_size,
    parse_transfer_rate,
    prom_duration,
)

T = TypeVar("T")


class Node:
    """A cursor over a Located tree that knows its key path, for error messages."""

    def __init__(self, located: Located, key: str) -> None:
        self.located = located
        self.key = key

    @property
    def value(self) -> Any:
        return self.located.value

    def error(self, message: str) -> ProfileError:
        return ProfileError(self.located.file, self.located.line, self.key, message)

    def mapping(self, allowed: tuple[str, ...] | None = None) -> dict[str, Node]:
        if not isinstance(self.value, dict):
            raise self.error(f"must be a mapping, got {_kind(self.value)}")
        children = {k: Node(v, f"{self.key}.{k}" if self.key else k) for k, v in self.value.items()}
        if allowed is not None:
            for name, child in children.items():
                if name not in allowed:
                    raise child.error(f"unknown key (allowed: {', '.join(allowed)})")
        return children

    def convert(self, parse: Callable[[Any], T]) -> T:
        try:
            return parse(self.value)
        except (ValueError, TypeError) as exc:
            raise self.error(str(exc)) from None

    def string(self, choices: tuple[str, ...] | None = None) -> str:
        if not isinstance(self.value, str) or not self.value:
            raise self.error(f"must be a non-empty string, got {_kind(self.value)}")
        if choices is not None and self.value not in choices:
            raise self.error(f"must be one of {', '.join(choices)}, got {self.value!r}")
        return self.value

    def number(self, minimum: float | None = None, positive: bool = False) -> float:
        # YAML 1.1 reads 921.6e9 (no exponent sign) as a string: accept numeric strings.
        try:
            if isinstance(self.value, bool) or not isinstance(self.value, int | float | str):
                raise ValueError
            number = float(self.value)
        except ValueError:
            raise self.error(f"must be a number, got {_kind(self.value)}") from None
        if not math.isfinite(number):
            raise self.error(f"must be finite, got {self.value}")
        if positive and number <= 0:
            raise self.error(f"must be positive, got {self.value}")
        if minimum is not None and number < minimum:
            raise self.error(f"must be at least {minimum:g}, got {self.value}")
        return number

    def boolean(self) -> bool:
        if not isinstance(self.value, bool):
            raise self.error(f"must be true or false, got {_kind(self.value)}")
        return self.value

    def duration(self, positive: bool = True) -> float:
        seconds = self.convert(parse_duration)
        if positive and seconds <= 0:
            raise self.error("must be a positive duration")
        return seconds

    def string_list(self) -> tuple[str, ...]:
        if not isinstance(self.value, list):
            raise self.error(f"must be a list, got {_kind(self.value)}")
        return tuple(Node(item, f"{self.key}[{i}]").string() for i, item in enumerate(self.value))

    def string_map(self) -> tuple[tuple[str, str], ...]:
        out = []
        for name, child in self.mapping().items():
            if isinstance(child.value, bool):
                text = "1" if child.value else "0"
            elif isinstance(child.value, int | float | str):
                text = str(child.value)
            else:
                raise child.error(f"must be a scalar, got {_kind(child.value)}")
            out.append((name, text))
        return tuple(sorted(out))

    def integer(self, minimum: int) -> int:
        number = self.number(minimum=minimum)
        if not number.is_integer():
            raise self.error(f"must be a whole number, got {self.value}")
        return int(number)

    def metric_name(self) -> str:
        name = self.string()
        if not METRIC_NAME.match(name):
            raise self.error(f"not a Prometheus metric name: {name!r}")
        return name

    def label_names(self) -> tuple[str, ...]:
        names = self.string_list()
        for i, name in enumerate(names):
            if not LABEL_NAME.match(name) or name.startswith("__"):
                raise Node(self.value[i], f"{self.key}[{i}]").error(
                    f"not a Prometheus label name: {name!r}"
                )
        if len(set(names)) != len(names):
            raise self.error("lists a label twice")
        return names

    def label_map(self) -> tuple[tuple[str, str], ...]:
        pairs = self.string_map()
        for name, _ in pairs:
            if not LABEL_NAME.match(name) or name.startswith("__"):
                raise self.mapping()[name].error("not a Prometheus label name")
        return pairs

    def selector(self) -> str:
        """A PromQL matcher list such as job="nodeslo",env=~"prod.*" (no braces)."""
        text = self.string().strip()
        if not SELECTOR.match(text):
            raise self.error(f'not a list of label matchers like job="nodeslo": {text!r}')
        return text


METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_MATCHER = r'\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(?:=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"\s*'
SELECTOR = re.compile(rf"^{_MATCHER}(?:,{_MATCHER})*$")
# An SLO's name becomes a label value, a rule group name and part of file names.
SLO_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")
COMPONENT = re.compile(r"^[A-Za-z0-9_-]+$")

Parser = Callable[["Node"], Any]
# What each parser accepts, as JSON Schema: `profile/schema.py` builds the profile's
# schema from these and the key tables below, so schema and validator cannot drift.
# The schema checks each value alone; rules across keys (required after `extends:`,
# an SLO's probe on) stay the validator's.
PARSER_SCHEMAS: dict[Parser, dict[str, Any]] = {}


def accepts(schema: dict[str, Any], parse: Parser) -> Parser:
    PARSER_SCHEMAS[parse] = schema
    return parse


_NUMERIC = {
    "type": "string",
    "pattern": r"^\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\s*$",
}
_DECIMAL_PERCENT = r"^\s*[0-9]+(\.[0-9]+)?\s*%?\s*$"
# Above 0 and below 100, as a percentage ("99.9%" or "99.9").
_OBJECTIVE_PERCENT = (
    r"^\s*0*([1-9][0-9]?(\.[0-9]+)?|\.[0-9]*[1-9][0-9]*|0\.[0-9]*[1-9][0-9]*)\s*%?\s*$"
)
DURATION_SCHEMA = {
    "anyOf": [{"type": "number", "minimum": 0}, {"type": "string", "pattern": DURATION_PATTERN}]
}
POSITIVE_SCHEMA = {"anyOf": [{"type": "number", "exclusiveMinimum": 0}, _NUMERIC]}
RATIO_SCHEMA = {
    "anyOf": [
        {"type": "number", "minimum": 0, "maximum": 1},
        {"type": "string", "pattern": _DECIMAL_PERCENT},
    ]
}
STRING_SCHEMA = {"type": "string", "minLength": 1}
METRIC_SCHEMA = {"type": "string", "pattern": METRIC_NAME.pattern}
_LABEL = {"type": "string", "pattern": LABEL_NAME.pattern, "not": {"pattern": "^__"}}
LABEL_NAMES_SCHEMA = {"type": "array", "items": _LABEL, "uniqueItems": True}
_SCALAR = {"type": ["string", "number", "boolean"]}
LABEL_MAP_SCHEMA = {"type": "object", "propertyNames": _LABEL, "additionalProperties": _SCALAR}
SELECTOR_SCHEMA = {"type": "string", "pattern": SELECTOR.pattern}


def _integer_schema(minimum: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": minimum}


_string = accepts(STRING_SCHEMA, lambda n: n.string())
_metric = accepts(METRIC_SCHEMA, lambda n: n.metric_name())
_label_names = accepts(LABEL_NAMES_SCHEMA, lambda n: n.label_names())
_label_map = accepts(LABEL_MAP_SCHEMA, lambda n: n.label_map())
_boolean = accepts({"type": "boolean"}, lambda n: n.boolean())
_selector = accepts(SELECTOR_SCHEMA, lambda n: n.selector())
_at_least_one = accepts(_integer_schema(1), lambda n: n.integer(minimum=1))
_non_negative = accepts(
    {"anyOf": [{"type": "number", "minimum": 0}, _NUMERIC]}, lambda n: n.number(minimum=0)
)
_size = accepts(
    {"anyOf": [_integer_schema(0), {"type": "string", "pattern": SIZE_PATTERN}]},
    lambda n: n.convert(parse_size),
)


def _choice(choices: tuple[str, ...]) -> Parser:
    return accepts({"enum": list(choices)}, lambda n: n.string(choices))


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def _fields(node: Node, spec: dict[str, Callable[[Node], Any]]) -> dict[str, Any]:
    """Convert the keys present under `node` with their parsers; reject unknown keys."""
    children = node.mapping(tuple(spec))
    return {name: spec[name](child) for name, child in children.items()}


def _histogram_parse(node: Node) -> str:
    name = node.metric_name()
    if name.endswith(("_bucket", "_count", "_sum")):
        raise node.error(f"name the histogram without its suffix, e.g. {name.rsplit('_', 1)[0]!r}")
    return name


_histogram = accepts(
    {**METRIC_SCHEMA, "not": {"pattern": "_(bucket|count|sum)$"}}, _histogram_parse
)
_LATENCY: dict[str, Parser] = {
    "histogram": _histogram,
    "threshold": accepts(DURATION_SCHEMA, lambda n: n.duration()),
    "matchers": _label_map,
    "by": _label_names,
    "errors": _metric,
}
_TIME: dict[str, Parser] = {
    "bad_seconds": _metric,
    "fallback_bad_seconds": _metric,
    "capacity": _metric,
    "matchers": _label_map,
    "by": _label_names,
}
# The kinds of SLI; an `sli:` holds exactly one.
SLI_KINDS = {"latency": _LATENCY, "time": _TIME}


def _sli(node: Node) -> LatencySLI | TimeSLI:
    children = node.mapping(tuple(SLI_KINDS))
    if len(children) != 1:
        raise node.error("must hold exactly one of: latency, time")
    kind, body = next(iter(children.items()))
    if kind == "latency":
        values = _fields(body, _LATENCY)
        for required in ("histogram", "threshold"):
            if required not in values:
                raise body.error(f"missing key {required!r}")
        values["threshold_seconds"] = values.pop("threshold")
        return LatencySLI(**values)
    values = _fields(body, _TIME)
    for required in ("bad_seconds", "capacity"):
        if required not in values:
            raise body.error(f"missing key {required!r}")
    return TimeSLI(**values)


SLO_KEYS: dict[str, Parser] = {
    "description": _string,
    "objective": accepts(
        {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 100},
                {"type": "string", "pattern": _OBJECTIVE_PERCENT},
            ]
        },
        lambda n: n.convert(parse_percent),
    ),
    "sli": _sli,  # its schema is built from SLI_KINDS
    "probe": _choice(("storage", "wakeup")),
}


def _slo(name: str, node: Node) -> SLO:
    if not SLO_NAME.match(name):
        raise node.error("an SLO name is lower-case letters, digits and inner dashes")
    values = _fields(node, SLO_KEYS)
    for required in ("objective", "sli"):
        if required not in values:
            raise node.error(f"missing key {required!r}")
    return SLO(name=name, description=values.pop("description", name), **values)


def _section(
    node: Node | None, cls: type[T], spec: dict[str, tuple[str, Callable[[Node], Any]]]
) -> T:
    """A dataclass section: YAML key -> (dataclass field, parser); absent keys keep defaults."""
    if node is None:
        return cls()
    children = node.mapping(tuple(spec))
    return cls(**{spec[k][0]: spec[k][1](child) for k, child in children.items()})


_dur = accepts(DURATION_SCHEMA, lambda n: n.duration())
_pos = accepts(POSITIVE_SCHEMA, lambda n: n.number(positive=True))
_ratio = accepts(RATIO_SCHEMA, lambda n: n.convert(parse_ratio))


def _window_parse(n: Node) -> float:
    """A range or `for` duration: it must render as a Prometheus duration (whole ms)."""
    seconds = n.duration()
    n.convert(lambda _: prom_duration(seconds))
    return seconds


_window = accepts(DURATION_SCHEMA, _window_parse)


def _component_names_parse(node: Node) -> tuple[str, ...]:
    """firmware_info component values: they go into a regex, so plain words only."""
    names = node.string_list()
    for i, name in enumerate(names):
        if not COMPONENT.match(name):
            raise Node(node.value[i], f"{node.key}[{i}]").error(
                f"a component is letters, digits, '_' and '-', got {name!r}"
            )
    return names


def _per_vendor_celsius_parse(node: Node) -> tuple[tuple[str, float], ...]:
    """`95` (every vendor) or `{intel: 100, amd: 95}`, in °C, sorted by vendor."""
    if not isinstance(node.value, dict):
        celsius = node.number(positive=True)
        return tuple((vendor, celsius) for vendor in sorted(CPU_VENDORS))
    limits = {
        vendor: child.number(positive=True)
        for vendor, child in node.mapping(CPU_VENDORS).items()
        if child.value is not None
    }
    return tuple(sorted(limits.items()))


_component_names = accepts(
    {"type": "array", "items": {"type": "string", "pattern": COMPONENT.pattern}},
    _component_names_parse,
)
_per_vendor_celsius = accepts(
    {
        "anyOf": [
            POSITIVE_SCHEMA,
            {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    v: {"anyOf": [POSITIVE_SCHEMA, {"type": "null"}]} for v in CPU_VENDORS
                },
            },
        ]
    },
    _per_vendor_celsius_parse,
)


def _check_temperature_limits(cpu: CPUHealth, node: Node | None) -> None:
    crit = dict(cpu.temperature_crit_celsius)
    for vendor, celsius in cpu.temperature_max_celsius:
        if vendor in crit and celsius >= crit[vendor]:
            assert node is not None  # the defaults are consistent
            keys = node.mapping()
            where = keys.get("temperature_max") or keys["temperature_crit"]
            raise where.error(
                f"{vendor}: temperature_max ({celsius:g}) must be below temperature_crit "
                f"({crit[vendor]:g})"
            )


PCI_ADDRESS = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
DRIVER_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
# Linux interface names: up to 15 characters, no '/', ':' or whitespace.
INTERFACE_NAME = re.compile(r"^[^/:\s]{1,15}$")


def _pcie_devices_parse(node: Node) -> tuple[str, ...]:
    """PCI addresses (lower-case domain:bus:device.function) or driver names."""
    names = node.string_list()
    for i, name in enumerate(names):
        if not (PCI_ADDRESS.match(name) or DRIVER_NAME.match(name)):
            raise Node(node.value[i], f"{node.key}[{i}]").error(
                f"neither a PCI address like 0000:3b:00.0 nor a driver name: {name!r}"
            )
    return tuple(dict.fromkeys(names))


def _interfaces_parse(node: Node) -> tuple[str, ...]:
    names = node.string_list()
    for i, name in enumerate(names):
        if not INTERFACE_NAME.match(name):
            raise Node(node.value[i], f"{node.key}[{i}]").error(
                f"not a network interface name: {name!r}"
            )
    return tuple(dict.fromkeys(names))


_pcie_devices = accepts(
    {
        "type": "array",
        "items": {
            "type": "string",
            "anyOf": [{"pattern": PCI_ADDRESS.pattern}, {"pattern": DRIVER_NAME.pattern}],
        },
    },
    _pcie_devices_parse,
)
_interfaces = accepts(
    {"type": "array", "items": {"type": "string", "pattern": INTERFACE_NAME.pattern}},
    _interfaces_parse,
)
_count = accepts(_integer_schema(0), lambda n: n.integer(minimum=0))


def _regex_parse(n: Node) -> str:
    """A regex for a PromQL =~ matcher: checked here, quoted where it is used."""
    text = n.string()
    try:
        re.compile(text)
    except re.error as exc:
        raise n.error(f"invalid regular expression: {exc}") from None
    return text


_regex = accepts(STRING_SCHEMA, _regex_parse)
# Empty: nothing (health.bmc.ignore_sensors).
_regex_or_empty = accepts({"type": "string"}, lambda n: "" if n.value == "" else _regex_parse(n))
_celsius = accepts({"anyOf": [{"type": "number"}, _NUMERIC]}, lambda n: n.number())


def _check_inlet_limits(bmc: BMCHealth, node: Node | None) -> None:
    if bmc.inlet_critical_celsius >= bmc.inlet_warning_celsius:
        return
    assert node is not None  # the defaults are consistent
    keys = node.mapping()
    given = [keys[k] for k in ("inlet_warning_celsius", "inlet_critical_celsius") if k in keys]
    # Name the key of the file being loaded, not the one it inherited.
    here = [k for k in given if k.located.file == node.located.file]
    where = (here or given)[-1]
    raise where.error(
        f"inlet_critical_celsius ({bmc.inlet_critical_celsius:g}) must be at least "
        f"inlet_warning_celsius ({bmc.inlet_warning_celsius:g})"
    )


_LINKS: dict[str, tuple[str, Parser]] = {
    "pcie_devices": ("pcie_devices", _pcie_devices),
    "pcie_degraded_for": ("pcie_degraded_for_seconds", _window),
    "pcie_uncorrectable_window": ("pcie_uncorrectable_window_seconds", _window),
    "pcie_correctable_errors_max": ("pcie_correctable_errors_max", _non_negative),
    "pcie_correctable_window": ("pcie_correctable_window_seconds", _window),
    "network_down_for": ("network_down_for_seconds", _window),
    "network_speed_for": ("network_speed_for_seconds", _window),
    "network_speed_lookback": ("network_speed_lookback_seconds", _window),
    "network_flap_changes_max": ("network_flap_changes_max", _non_negative),
    "network_flap_window": ("network_flap_window_seconds", _window),
    "network_errors_max": ("network_errors_max_ratio", _ratio),
    "network_errors_window": ("network_errors_window_seconds", _window),
    "network_errors_min_packets_per_second": ("network_errors_min_packets_per_second", _pos),
    "rdma_down_for": ("rdma_down_for_seconds", _window),
}


_NVME: dict[str, tuple[str, Parser]] = {
    "wear_warning": ("wear_warning_ratio", _ratio),
    "wearout_lookback": ("wearout_lookback_seconds", _window),
    "wearout_horizon": ("wearout_horizon_seconds", _window),
    "write_amplification_max": ("write_amplification_max", _pos),
    "write_amplification_window": ("write_amplification_window_seconds", _window),
    "write_amplification_min_written": ("write_amplification_min_written_bytes", _size),
    "media_errors_window": ("media_errors_window_seconds", _window),
    "latency_outlier_factor": ("latency_outlier_factor", _pos),
    "latency_outlier_window": ("latency_outlier_window_seconds", _window),
    "latency_outlier_min_iops": ("latency_outlier_min_iops", _pos),
    "smart_stale_after": ("smart_stale_after_seconds", _window),
    "temperature_for": ("temperature_for_seconds", _window),
    "missing_lookback": ("missing_lookback_seconds", _window),
    "reset_loop_resets": ("reset_loop_resets", _at_least_one),
    "reset_loop_window": ("reset_loop_window_seconds", _window),
}
_CPU: dict[str, tuple[str, Parser]] = {
    "throttling_window": ("throttling_window_seconds", _window),
    "temperature_for": ("temperature_for_seconds", _window),
    "temperature_max": ("temperature_max_celsius", _per_vendor_celsius),
    "temperature_crit": ("temperature_crit_celsius", _per_vendor_celsius),
}
_MEMORY: dict[str, tuple[str, Parser]] = {
    "uncorrectable_errors_window": ("uncorrectable_errors_window_seconds", _window),
    "correctable_errors_max": ("correctable_errors_max", _non_negative),
    "correctable_errors_window": ("correctable_errors_window_seconds", _window),
    "numa_remote_max": ("numa_remote_ratio_max", _ratio),
    "numa_window": ("numa_window_seconds", _window),
    "numa_min_pages_per_second": ("numa_min_pages_per_second", _pos),
    "capacity_lookback": ("capacity_lookback_seconds", _window),
    "capacity_drop_max": ("capacity_drop_ratio", _ratio),
}
_POWER: dict[str, tuple[str, Parser]] = {
    "psu_capacity_watts": ("psu_capacity_watts", _pos),
    "psu_count": ("psu_count", _at_least_one),
    "meter_chip_name": ("meter_chip_name", _string),
    "bmc_input_power_sensors": ("bmc_input_power_sensors", _regex),
}
_FIRMWARE: dict[str, tuple[str, Parser]] = {
    "skew_for": ("skew_for_seconds", _window),
    "host_components": ("host_components", _component_names),
    "host_group_by": ("host_group_by", _label_names),
}
_REDUNDANCY: dict[str, tuple[str, Parser]] = {
    "missing_lookback": ("missing_lookback_seconds", _window),
}
_BMC: dict[str, tuple[str, Parser]] = {
    "poll_interval": ("poll_interval_seconds", _dur),
    "fan_min_rpm": ("fan_min_rpm", _non_negative),
    "inlet_warning_celsius": ("inlet_warning_celsius", _celsius),
    "inlet_critical_celsius": ("inlet_critical_celsius", _celsius),
    "inlet_sensors": ("inlet_sensors", _regex),
    "ignore_sensors": ("ignore_sensors", _regex_or_empty),
    "unreachable_for": ("unreachable_for_seconds", _window),
    "absent_lookback": ("absent_lookback_seconds", _window),
}
# health.<part>: the dataclass and its keys.
HEALTH_PARTS: dict[str, tuple[type, dict[str, tuple[str, Parser]]]] = {
    "nvme": (NVMeHealth, _NVME),
    "cpu": (CPUHealth, _CPU),
    "memory": (MemoryHealth, _MEMORY),
    "power": (PowerHealth, _POWER),
    "firmware": (FirmwareHealth, _FIRMWARE),
    "redundancy": (RedundancyHealth, _REDUNDANCY),
    "links": (LinkHealth, _LINKS),
    "bmc": (BMCHealth, _BMC),
}


def _health(node: Node | None) -> Health:
    if node is None:
        return Health()
    parts = node.mapping(tuple(HEALTH_PARTS))
    built: dict[str, Any] = {
        name: _section(parts.get(name), cls, spec) for name, (cls, spec) in HEALTH_PARTS.items()
    }
    _check_temperature_limits(built["cpu"], parts.get("cpu"))
    _check_inlet_limits(built["bmc"], parts.get("bmc"))
    return Health(**built)


def _optional(parse: Parser) -> Parser:
    schema = {"anyOf": [PARSER_SCHEMAS[parse], {"type": "null"}]}
    return accepts(schema, lambda n: None if n.value is None else parse(n))


def _positive_size_parse(n: Node) -> int:
    size = n.convert(parse_size)
    if size <= 0:
        raise n.error("must be a positive size")
    return size


_positive_size = accepts(
    {"anyOf": [_integer_schema(1), {"type": "string", "pattern": SIZE_PATTERN}]},
    _positive_size_parse,
)
_transfer_rate = accepts(
    {"type": "string", "pattern": TRANSFER_RATE_PATTERN},
    lambda n: n.convert(parse_transfer_rate),
)
_bit_rate = accepts(
    {"type": "string", "pattern": BIT_RATE_PATTERN}, lambda n: n.convert(parse_bit_rate)
)


def _subsection(cls: type[Any], spec: dict[str, tuple[str, Parser]]) -> Parser:
    """A section nested in another (inventory.nvme): parsed and described as a section."""
    properties = {k: {"anyOf": [PARSER_SCHEMAS[p], {"type": "null"}]} for k, (_, p) in spec.items()}
    schema = {"type": "object", "additionalProperties": False, "properties": properties}
    return accepts(schema, lambda n: _section(n, cls, spec))


_INVENTORY_NVME: dict[str, tuple[str, Parser]] = {
    "drives": ("drives", _optional(_count)),
    "capacity": ("capacity_bytes", _optional(_positive_size)),
    "link_speed": ("link_speed_transfers_per_second", _optional(_transfer_rate)),
    "link_width": ("link_width", _optional(_at_least_one)),
}
_INVENTORY_NETWORK: dict[str, tuple[str, Parser]] = {
    "interfaces": ("interfaces", _interfaces),
    "ports": ("ports", _optional(_count)),
    "speed": ("speed_bytes_per_second", _optional(_bit_rate)),
}
_INVENTORY: dict[str, tuple[str, Parser]] = {
    "sockets": ("sockets", _optional(_at_least_one)),
    "cores_per_socket": ("cores_per_socket", _optional(_at_least_one)),
    "threads_per_socket": ("threads_per_socket", _optional(_at_least_one)),
    "llc_per_socket": ("llc_per_socket_bytes", _optional(_positive_size)),
    "memory": ("memory_bytes", _optional(_positive_size)),
    "memory_tolerance": ("memory_tolerance_ratio", _ratio),
    "numa_balance_tolerance": ("numa_balance_tolerance_ratio", _ratio),
    "dimms_per_socket": ("dimms_per_socket", _optional(_at_least_one)),
    "dimm_size": ("dimm_size_bytes", _optional(_positive_size)),
    "nvme": ("nvme", _subsection(NvmeInventory, _INVENTORY_NVME)),
    "network": ("network", _subsection(NetworkInventory, _INVENTORY_NETWORK)),
    "rdma_ports_active": ("rdma_ports_active", _optional(_count)),
}


def _sysctls_parse(node: Node) -> tuple[tuple[str, str], ...]:
    """`name: value` pairs; names become paths under /proc/sys, so they are checked."""
    for name, child in node.mapping().items():
        try:
            sysctl_relpath(name)
        except ValueError as exc:
            raise child.error(str(exc)) from None
    return node.string_map()


_sysctls = accepts({"type": "object", "additionalProperties": _SCALAR}, _sysctls_parse)
_CPU_LIST_PATTERN = r"^\s*([0-9]+(-[0-9]+)?(\s*,\s*[0-9]+(-[0-9]+)?)*)?\s*$"
_cpus = accepts(
    {"anyOf": [{"type": "string", "pattern": _CPU_LIST_PATTERN}, _integer_schema(0)]},
    lambda n: n.convert(_cpu_list),
)

_TUNING: dict[str, tuple[str, Parser]] = {
    "max_cstate_exit_latency": ("max_cstate_exit_latency_seconds", _optional(_dur)),
    "governor": ("governor", _optional(_choice(GOVERNORS))),
    "turbo": ("turbo", _optional(_boolean)),
    "transparent_hugepage": ("transparent_hugepage", _optional(_choice(THP_MODES))),
    "isolated_cpus": ("isolated_cpus", _optional(_cpus)),
    "nohz_full": ("nohz_full", _optional(_cpus)),
    "sysctl": ("sysctl", _sysctls),
}

_CAPACITY: dict[str, tuple[str, Parser]] = {
    "iops": ("iops", _pos),
    "dispatches_per_second": ("dispatches_per_second", _pos),
    "memory_bandwidth_bytes_per_second": ("memory_bandwidth_bytes_per_second", _pos),
    "memory_bandwidth_target": ("memory_bandwidth_target_ratio", _ratio),
    "threads": ("threads", _at_least_one),
    "all_core_frequency_hertz": ("all_core_frequency_hertz", _pos),
    "peak_power_watts": ("peak_power_watts", _pos),
}


def _cpu_list(value: Any) -> str:
    """A kernel CPU list ('2-63,66-127'), normalised; '' means none."""
    text = str(value).strip()
    if text == "":
        return ""
    cpus: set[int] = set()
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            raise ValueError(f"not a CPU list: {text!r} (use e.g. 2-63,66-127)")
        first, last = int(low), int(high or low)
        if last < first:
            raise ValueError(f"descending range {part!r} in CPU list")
        cpus.update(range(first, last + 1))
    return format_cpu_list(cpus)


def format_cpu_list(cpus: set[int] | list[int]) -> str:
    """{0,1,2,5} -> '0-2,5', the kernel's own notation."""
    ordered = sorted(set(cpus))
    ranges: list[str] = []
    start = prev = None
    for cpu in [*ordered, None]:
        if start is not None and (cpu is None or cpu != (prev or 0) + 1):
            ranges.append(str(start) if start == prev else f"{start}-{prev}")
            start = None
        if cpu is not None and start is None:
            start = cpu
        prev = cpu
    return ",".join(ranges)


PROBE_BLOCK = 4096
MAX_PROBE_RATE = 1000.0  # samples/s per target
WAKEUP_INTERVAL_RANGE = (100e-6, 1.0)


def _probe_targets_parse(node: Node) -> tuple[str, ...]:
    """Absolute paths (a directory or a block device), normalised, duplicates dropped."""
    if node.value is None:
        return ()
    targets = []
    for i, path in enumerate(node.string_list()):
        if not os.path.isabs(path):
            item = Node(node.value[i], f"{node.key}[{i}]")
            raise item.error(f"must be an absolute path: {path!r}")
        targets.append(os.path.normpath(path))
    return tuple(dict.fromkeys(targets))


def _probe_rate_parse(node: Node) -> float:
    rate = node.number(positive=True)
    if rate > MAX_PROBE_RATE:
        raise node.error(f"at most {MAX_PROBE_RATE:g} samples/s per target, got {node.value}")
    return rate


def _probe_file_size_parse(node: Node) -> int:
    size = node.convert(parse_size)
    if size < PROBE_BLOCK or size % PROBE_BLOCK:
        raise node.error(f"must be a positive multiple of 4KiB, got {node.value!r}")
    return size


def _wakeup_interval_parse(node: Node) -> float:
    seconds = node.duration()
    low, high = WAKEUP_INTERVAL_RANGE
    if not low <= seconds <= high:
        raise node.error(f"must be between 100us and 1s, got {node.value!r}")
    return seconds


_probe_targets = accepts(
    {"anyOf": [{"type": "array", "items": {"type": "string", "pattern": "^/"}}, {"type": "null"}]},
    _probe_targets_parse,
)
_probe_rate = accepts(
    {"anyOf": [{"type": "number", "exclusiveMinimum": 0, "maximum": MAX_PROBE_RATE}, _NUMERIC]},
    _probe_rate_parse,
)
_probe_file_size = accepts(
    {
        "anyOf": [
            {"type": "integer", "minimum": PROBE_BLOCK, "multipleOf": PROBE_BLOCK},
            {"type": "string", "pattern": SIZE_PATTERN},
        ]
    },
    _probe_file_size_parse,
)
_wakeup_interval = accepts(DURATION_SCHEMA, _wakeup_interval_parse)
_STORAGE: dict[str, tuple[str, Parser]] = {
    "targets": ("targets", _probe_targets),
    "rate": ("rate", _probe_rate),
    "file_size": ("file_size_bytes", _probe_file_size),
}
_WAKEUP: dict[str, tuple[str, Parser]] = {
    "enabled": ("enabled", _boolean),
    "interval": ("interval_seconds", _wakeup_interval),
    "policy": ("policy", _choice(WAKEUP_POLICIES)),
    "engine": ("engine", _choice(WAKEUP_ENGINES)),
}
# probes.<probe>: the dataclass and its keys.
PROBE_PARTS: dict[str, tuple[type, dict[str, tuple[str, Parser]]]] = {
    "storage": (StorageProbe, _STORAGE),
    "wakeup": (WakeupProbe, _WAKEUP),
}


def _probes(node: Node | None) -> Probes:
    if node is None:
        return Probes()
    parts = node.mapping(tuple(PROBE_PARTS))
    built: dict[str, Any] = {
        name: _section(parts.get(name), cls, spec) for name, (cls, spec) in PROBE_PARTS.items()
    }
    return Probes(**built)


# Labels the generated alerts set themselves; `alerting.labels` must not shadow them.
RESERVED_ALERT_LABELS = ("alertname", "severity", "slo", "long_window", "short_window")


def _alert_labels_parse(node: Node) -> tuple[tuple[str, str], ...]:
    pairs = node.label_map()
    for name, _ in pairs:
        if name in RESERVED_ALERT_LABELS:
            raise node.mapping()[name].error("the generated alerts set this label themselves")
    return pairs


def _instance_labels_parse(node: Node) -> tuple[str, ...]:
    names = node.label_names()
    if not names:
        raise node.error("must name at least one label (e.g. instance)")
    return names


def _selector_or_off_parse(node: Node) -> str | None:
    """A selector, or false for "not there" (null would restore the inherited default)."""
    return None if node.value is False else node.selector()


_alert_labels = accepts(
    {**LABEL_MAP_SCHEMA, "propertyNames": {**_LABEL, "not": {"enum": list(RESERVED_ALERT_LABELS)}}},
    _alert_labels_parse,
)
_instance_labels = accepts({**LABEL_NAMES_SCHEMA, "minItems": 1}, _instance_labels_parse)
_selector_or_off = accepts({"anyOf": [{"const": False}, SELECTOR_SCHEMA]}, _selector_or_off_parse)

# The per-host severities a fleet regression counts: pages and tickets (never the
# always-firing Watchdog's "none", nor "info").
FLEET_SEVERITIES = ("critical", "warning")


def _fleet_severities_parse(node: Node) -> tuple[str, ...]:
    names = node.string_list()
    for i, name in enumerate(names):
        if name not in FLEET_SEVERITIES:
            raise Node(node.value[i], f"{node.key}[{i}]").error(
                f"must be one of {', '.join(FLEET_SEVERITIES)}, got {name!r}"
            )
    if not names:
        raise node.error("must name at least one severity")
    return tuple(s for s in FLEET_SEVERITIES if s in names)


_FLEET_REGRESSION: dict[str, tuple[str, Parser]] = {
    "share": ("share", _ratio),
    "resolve_share": ("resolve_share", _ratio),
    "min_hosts": ("min_hosts", _at_least_one),
    "severities": (
        "severities",
        accepts(
            {
                "type": "array",
                "items": {"enum": list(FLEET_SEVERITIES)},
                "minItems": 1,
                "uniqueItems": True,
            },
            _fleet_severities_parse,
        ),
    ),
    "for": ("for_seconds", _window),
}


def _fleet_regression_parse(node: Node) -> FleetRegression:
    fleet = _section(node, FleetRegression, _FLEET_REGRESSION)
    keys = node.mapping()
    if "resolve_share" not in keys:
        fleet = dataclasses.replace(fleet, resolve_share=fleet.share / 2)
    if not 0 < fleet.share < 1:
        raise keys["share"].error("must be above 0 and below 1 (100%)")
    if fleet.resolve_share > fleet.share:
        where = keys.get("resolve_share") or keys["share"]
        raise where.error(
            f"resolve_share ({fleet.resolve_share:g}) must not be above share ({fleet.share:g})"
        )
    return fleet


_fleet_regression = accepts(
    {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            key: {"anyOf": [PARSER_SCHEMAS[parse], {"type": "null"}]}
            for key, (_, parse) in _FLEET_REGRESSION.items()
        },
    },
    _fleet_regression_parse,
)

_ALERTING: dict[str, tuple[str, Parser]] = {
    "runbook_base_url": (
        "runbook_base_url",
        accepts(STRING_SCHEMA, lambda n: n.string().rstrip("/")),
    ),
    "for_scale": ("for_scale", _pos),
    "labels": ("labels", _alert_labels),
    "exporter_selector": ("exporter_selector", _selector),
    "exporter_lookback": ("exporter_lookback_seconds", _window),
    "prometheus_selector": ("prometheus_selector", _selector_or_off),
    "instance_labels": ("instance_labels", _instance_labels),
    "fleet_regression": ("fleet_regression", _fleet_regression),
}

TOP_LEVEL = (
    "profile",
    "description",
    "period",
    "slos",
    "health",
    "tuning",
    "capacity",
    "probes",
    "alerting",
    "inventory",
)


def build(tree: Located, source: str, sha256: str) -> Profile:
    """Validate a merged Located tree into a Profile."""
    root = Node(tree, "")
    parts = root.mapping(TOP_LEVEL)
    if "profile" not in parts:
        raise root.error("missing key 'profile' (the profile's name)")
    slos_node = parts.get("slos")
    slos: list[SLO] = []
    if slos_node is not None:
        for name, node in slos_node.mapping().items():
            slos.append(_slo(name, node))
    period = _window(parts["period"]) if "period" in parts else 30 * 86400.0
    profile = Profile(
        name=parts["profile"].string(),
        description=parts["description"].string() if "description" in parts else "",
        period_seconds=period,
        slos=tuple(slos),
        health=_health(parts.get("health")),
        tuning=_section(parts.get("tuning"), Tuning, _TUNING),
        capacity=_section(parts.get("capacity"), Capacity, _CAPACITY),
        probes=_probes(parts.get("probes")),
        alerting=_section(parts.get("alerting"), Alerting, _ALERTING),
        source=source,
        sha256=sha256,
        inventory=_section(parts.get("inventory"), Inventory, _INVENTORY),
    )
    _check_consistency(profile, parts)
    return profile


def _check_consistency(profile: Profile, parts: dict[str, Node]) -> None:
    """Cross-section rules: each names the key a user has to change."""
    if profile.period_seconds <= LONGEST_WINDOW_SECONDS:
        raise parts["period"].error("must be longer than 3d, the longest burn-rate window")
    if "slos" not in parts:
        return
    slo_nodes = parts["slos"].mapping()
    factor = highest_factor(profile.period_seconds)
    for slo in profile.slos:
        fields = slo_nodes[slo.name].mapping()
        if factor * slo.error_budget >= 1:
            raise fields["objective"].error(
                f"leaves an error budget of {slo.error_budget:.4%}: the fastest burn-rate "
                f"tier ({factor:g}x) would need more than 100% errors and could never page; "
                f"use at least {1 - 1 / factor:.4%} or a shorter period"
            )
        reserved = {*profile.alerting.instance_labels, "slo", "le"}
        clash = sorted(reserved.intersection(slo.sli.by))
        if clash:
            where = fields["sli"].mapping()
            body = next(iter(where.values())).mapping()
            raise body["by"].error(
                f"{', '.join(clash)} is kept already (instance labels, slo, le): drop it"
            )
        if slo.probe is not None:
            _check_probe(slo, fields["probe"], profile.probes)


def _check_probe(slo: SLO, node: Node, probes: Probes) -> None:
    # An SLO on a probe the profile turns off would raise NodeSLOProbeDown on every host.
    if slo.probe == "storage" and not probes.storage.targets:
        raise node.error(
            "the storage probe has no targets (probes.storage.targets), so nothing measures "
            "this SLO; give the probe a target or remove the SLO (slos.<name>: null)"
        )
    if slo.probe == "wakeup" and not probes.wakeup.enabled:
        raise node.error(
            "the wakeup probe is disabled (probes.wakeup.enabled), so nothing measures "
            "this SLO; enable the probe or remove the SLO (slos.<name>: null)"
        )
