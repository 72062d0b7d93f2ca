"""The probes' effective settings: the profile's `probes:` section, overridden by flags.

Flags win over the profile, key by key, and keep winning across SIGHUP reloads; what a
flag does not set follows the profile in force.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from nodeslo.flagtypes import duration, positive_float
from nodeslo.profile import WAKEUP_ENGINES, WAKEUP_POLICIES, LatencySLI, Profile

IO_HISTOGRAM = "nodeslo_probe_io_latency_seconds"
IO_OPS = ("write_sync", "read")
WAKEUP_HISTOGRAM = "nodeslo_probe_wakeup_latency_seconds"
MAX_STORAGE_RATE = 1000.0
MIN_WAKEUP_INTERVAL = 100e-6
MAX_WAKEUP_INTERVAL = 1.0


@dataclass(frozen=True)
class StorageSettings:
    enabled: bool
    targets: tuple[str, ...]
    rate: float
    file_size: int
    thresholds: tuple[float, ...]
    # (target, op, seconds): the largest latency SLO threshold on each operation of
    # each target; an operation in flight longer than that is bad for every SLO on it.
    overdue: tuple[tuple[str, str, float], ...] = ()


@dataclass(frozen=True)
class WakeupSettings:
    enabled: bool
    engine: str
    interval_seconds: float
    policy: str
    thresholds: tuple[float, ...]


def _option(options: argparse.Namespace, name: str) -> object:
    return getattr(options, name, None)


def storage_settings(profile: Profile, options: argparse.Namespace) -> StorageSettings:
    section = profile.probes.storage
    flag_targets = _option(options, "probe_storage_targets")
    targets = tuple(flag_targets) if isinstance(flag_targets, list) else section.targets
    rate = _option(options, "probe_storage_rate")
    switch = _option(options, "probe_storage")
    unique = tuple(dict.fromkeys(targets))
    return StorageSettings(
        enabled=(switch is not False) and bool(targets),
        targets=unique,
        rate=float(rate) if isinstance(rate, float) else section.rate,
        file_size=section.file_size_bytes,
        thresholds=profile.histogram_thresholds(IO_HISTOGRAM),
        overdue=tuple(
            (target, op, seconds)
            for target in unique
            for op in IO_OPS
            if (seconds := io_threshold(profile, target, op)) is not None
        ),
    )


def io_threshold(profile: Profile, target: str, op: str) -> float | None:
    """The largest threshold of the latency SLOs on the I/O histogram that judge this
    operation of this target (their matchers on `op` and `target` agree; matchers on
    other labels do not exclude it); None when no SLO judges it."""
    seen = {"op": op, "target": target}
    thresholds = [
        slo.sli.threshold_seconds
        for slo in profile.slos
        if isinstance(slo.sli, LatencySLI)
        and slo.sli.histogram == IO_HISTOGRAM
        and all(seen.get(label, value) == value for label, value in slo.sli.matchers)
    ]
    return max(thresholds, default=None)


def wakeup_settings(profile: Profile, options: argparse.Namespace) -> WakeupSettings:
    section = profile.probes.wakeup
    switch = _option(options, "probe_wakeup")
    engine = _option(options, "probe_wakeup_engine")
    interval = _option(options, "probe_wakeup_interval")
    policy = _option(options, "probe_wakeup_policy")
    return WakeupSettings(
        enabled=section.enabled if switch is None else bool(switch),
        engine=engine if isinstance(engine, str) else section.engine,
        interval_seconds=float(interval)
        if isinstance(interval, float)
        else section.interval_seconds,
        policy=policy if isinstance(policy, str) else section.policy,
        thresholds=profile.histogram_thresholds(WAKEUP_HISTOGRAM),
    )


# --- flags ---------------------------------------------------------------------------------


def absolute_path(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("empty path")
    return os.path.normpath(os.path.abspath(text))


def storage_rate(text: str) -> float:
    value = positive_float(text)
    if value > MAX_STORAGE_RATE:
        raise argparse.ArgumentTypeError(f"at most {MAX_STORAGE_RATE:g} samples/s: {text!r}")
    return value


def wakeup_interval(text: str) -> float:
    seconds = duration(text)
    if not MIN_WAKEUP_INTERVAL <= seconds <= MAX_WAKEUP_INTERVAL:
        raise argparse.ArgumentTypeError(f"must be between 100us and 1s: {text!r}")
    return seconds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`--probe.*` flags; unset flags (None) leave the profile in force."""
    group = parser.add_argument_group("probes (flags override the profile's probes: section)")
    group.add_argument(
        "--probe.storage",
        dest="probe_storage",
        default=None,
        action=argparse.BooleanOptionalAction,
        help="storage I/O latency probe (default: on when the profile or a flag names a target)",
    )
    group.add_argument(
        "--probe.storage.target",
        dest="probe_storage_targets",
        action="append",
        type=absolute_path,
        default=None,
        metavar="PATH",
        help="directory (probe file inside) or block device (read only); repeatable",
    )
    group.add_argument(
        "--probe.storage.rate",
        dest="probe_storage_rate",
        type=storage_rate,
        default=None,
        metavar="PER_SECOND",
        help="samples per second per target (default: profile, 10)",
    )
    group.add_argument(
        "--probe.wakeup",
        dest="probe_wakeup",
        default=None,
        action=argparse.BooleanOptionalAction,
        help="scheduler wake-up latency probe (default: profile, on)",
    )
    group.add_argument(
        "--probe.wakeup.engine",
        dest="probe_wakeup_engine",
        choices=WAKEUP_ENGINES,
        default=None,
        help="python, cyclictest (rt-tests), or auto = cyclictest when installed "
        "(default: profile, auto)",
    )
    group.add_argument(
        "--probe.wakeup.interval",
        dest="probe_wakeup_interval",
        type=wakeup_interval,
        default=None,
        metavar="DURATION",
        help="timer period, 100us..1s (default: profile, 10ms)",
    )
    group.add_argument(
        "--probe.wakeup.socket",
        dest="probe_wakeup_socket",
        type=absolute_path,
        default=None,
        metavar="PATH",
        help="do not start the wake-up probe: listen on PATH for `nodeslo probe wakeup "
        "--connect PATH`, run where cyclictest may have CAP_SYS_NICE (its own unit or "
        "container) while this process holds no capability",
    )
    group.add_argument(
        "--probe.wakeup.policy",
        dest="probe_wakeup_policy",
        choices=WAKEUP_POLICIES,
        default=None,
        help="SCHED_OTHER or SCHED_FIFO (needs CAP_SYS_NICE) (default: profile, other)",
    )
