"""The profile: the shipped numbers, and what every kind of bad input gets.

Every error must name the file, the key path and the line, so each bad-input case
below states all three.
"""

from __future__ import annotations

import textwrap
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodeslo.profile import (
    LatencySLI,
    Profile,
    ProfileError,
    TimeSLI,
    load_profile,
    shipped_profile_path,
)
from nodeslo.units import (
    human_seconds,
    parse_duration,
    parse_percent,
    parse_ratio,
    parse_size,
    prom_duration,
)


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def site(tmp_path: Path, text: str) -> Path:
    """A site profile over the shipped one."""
    body = textwrap.dedent(text).lstrip("\n")
    return write(tmp_path, "site.yaml", "extends: process-management\nprofile: site\n" + body)


def error_of(path: Path) -> ProfileError:
    with pytest.raises(ProfileError) as info:
        load_profile(str(path))
    return info.value


# --- the shipped profile ------------------------------------------------------------


def test_the_shipped_profile_carries_the_seed_numbers() -> None:
    profile = load_profile()
    assert profile.name == "process-management"
    assert profile.period_seconds == 30 * 86400
    assert [s.name for s in profile.slos] == [
        "storage-write-latency",
        "storage-read-latency",
        "scheduler-wakeup-latency",
        "cpu-unthrottled",
    ]
    write_slo = profile.slo("storage-write-latency")
    assert write_slo.objective == 0.99 and write_slo.probe == "storage"
    assert isinstance(write_slo.sli, LatencySLI)
    # Exactly the float a histogram bucket of 100 µs holds, not 9.999999999999999e-05.
    assert write_slo.sli.threshold_seconds == 0.0001
    assert write_slo.sli.matchers == (("op", "write_sync"),)
    assert write_slo.sli.by == ("target",)
    assert write_slo.sli.errors == "nodeslo_probe_io_errors_total"
    read_sli = profile.slo("storage-read-latency").sli
    assert isinstance(read_sli, LatencySLI) and read_sli.threshold_seconds == 50e-6
    wakeup = profile.slo("scheduler-wakeup-latency")
    assert isinstance(wakeup.sli, LatencySLI) and wakeup.sli.threshold_seconds == 50e-6
    cpu = profile.slo("cpu-unthrottled")
    assert cpu.objective == 0.999 and cpu.probe is None
    assert cpu.sli == TimeSLI(
        bad_seconds="nodeslo_cpu_throttle_seconds_total",
        capacity="nodeslo_cpu_physical_cores",
        matchers=(("scope", "core"),),
        fallback_bad_seconds="nodeslo_cpu_below_target_frequency_seconds_total",
    )
    assert profile.histogram_thresholds("nodeslo_probe_io_latency_seconds") == (50e-6, 100e-6)
    nvme, memory, power = profile.health.nvme, profile.health.memory, profile.health.power
    assert nvme.wear_warning_ratio == 0.8
    assert nvme.wearout_horizon_seconds == 30 * 86400
    assert nvme.write_amplification_max == 3
    assert nvme.write_amplification_min_written_bytes == 10 * 1024**3
    assert memory.numa_remote_ratio_max == 0.05
    assert (power.psu_capacity_watts, power.psu_count) == (2200, 2)
    assert power.redundant_capacity_watts == 2200
    assert profile.capacity.iops == 3_000_000
    assert profile.capacity.memory_bandwidth_bytes_per_second == 921.6e9
    assert profile.capacity.memory_bandwidth_target_ratio == 0.85
    assert profile.capacity.threads == 256
    assert profile.alerting.for_scale == 1
    assert profile.alerting.instance_labels == ("cluster", "instance")
    assert profile.alerting.exporter_selector == 'job="nodeslo"'
    assert profile.alerting.exporter_lookback_seconds == 86400
    assert profile.health.cpu.temperature_max_celsius == (("amd", 85), ("intel", 90))
    assert profile.health.cpu.temperature_crit_celsius == (("amd", 95), ("intel", 100))
    assert profile.alerting.prometheus_selector == 'job="prometheus"'


def test_the_digest_covers_the_effective_profile(tmp_path: Path) -> None:
    shipped = load_profile()
    same = load_profile(str(site(tmp_path, "")))
    assert same.sha256 != shipped.sha256  # the name differs
    again = load_profile(str(site(tmp_path, "")))
    assert again.sha256 == same.sha256
    changed = load_profile(str(site(tmp_path, "health: {nvme: {wear_warning: 85%}}\n")))
    assert changed.sha256 != same.sha256


# --- extends, merging, null -----------------------------------------------------------


def test_a_site_profile_overrides_single_values(tmp_path: Path) -> None:
    profile = load_profile(
        str(
            site(
                tmp_path,
                """
                period: 28d
                slos:
                  storage-read-latency:
                    sli: {latency: {threshold: 25us}}
                health:
                  nvme: {wear_warning: 0.9}
                alerting:
                  labels: {team: infra}
                """,
            )
        )
    )
    read = profile.slo("storage-read-latency")
    assert isinstance(read.sli, LatencySLI)
    assert read.sli.threshold_seconds == 25e-6
    # Everything else of that SLO is inherited.
    assert read.sli.histogram == "nodeslo_probe_io_latency_seconds"
    assert read.sli.matchers == (("op", "read"),) and read.objective == 0.99
    assert profile.period_seconds == 28 * 86400
    assert profile.health.nvme.wear_warning_ratio == 0.9
    assert profile.health.nvme.write_amplification_max == 3
    assert profile.alerting.labels == (("team", "infra"),)


def test_cpu_temperature_limits_one_for_all_vendors_or_per_vendor(tmp_path: Path) -> None:
    one = load_profile(str(site(tmp_path, "health: {cpu: {temperature_max: 80}}\n")))
    assert one.health.cpu.temperature_max_celsius == (("amd", 80), ("intel", 80))
    # A site overrides one vendor; the other is inherited.
    per = load_profile(str(site(tmp_path, "health: {cpu: {temperature_crit: {amd: 100}}}\n")))
    assert per.health.cpu.temperature_crit_celsius == (("amd", 100), ("intel", 100))


def test_null_removes_an_inherited_key(tmp_path: Path) -> None:
    profile = load_profile(
        str(
            site(
                tmp_path,
                """
                slos:
                  cpu-unthrottled: null
                  scheduler-wakeup-latency: ~
                tuning:
                  sysctl: {vm.swappiness: null}
                """,
            )
        )
    )
    assert [s.name for s in profile.slos] == ["storage-write-latency", "storage-read-latency"]
    assert "vm.swappiness" not in dict(profile.tuning.sysctl)
    assert "kernel.numa_balancing" in dict(profile.tuning.sysctl)


def test_lists_replace_rather_than_merge(tmp_path: Path) -> None:
    profile = load_profile(str(site(tmp_path, "probes: {storage: {targets: [/srv/a, /srv/b]}}\n")))
    assert profile.probes.storage.targets == ("/srv/a", "/srv/b")


def test_an_extends_chain_of_three_files(tmp_path: Path) -> None:
    write(tmp_path, "team.yaml", "extends: process-management\nprofile: team\nperiod: 28d\n")
    write(
        tmp_path,
        "host.yaml",
        "extends: team.yaml\nprofile: host\nhealth: {nvme: {wear_warning: 70%}}\n",
    )
    profile = load_profile(str(tmp_path / "host.yaml"))
    assert profile.name == "host"
    assert profile.period_seconds == 28 * 86400  # from the middle file
    assert profile.health.nvme.wear_warning_ratio == 0.7
    assert len(profile.slos) == 4  # from the shipped one


def test_an_inherited_bad_value_is_reported_where_it_is_written(tmp_path: Path) -> None:
    base = write(tmp_path, "base.yaml", "profile: base\nperiod: 2d\n")
    child = write(tmp_path, "child.yaml", "extends: base.yaml\nprofile: child\n")
    error = error_of(child)
    assert (error.file, error.line, error.key) == (str(base), 2, "period")


@pytest.mark.parametrize(
    ("files", "start", "line", "message"),
    [
        ({"a.yaml": "extends: b.yaml\nprofile: a\n", "b.yaml": "extends: a.yaml\n"}, "a.yaml", 1,
         "cycle through"),
        ({"a.yaml": "extends: a.yaml\nprofile: a\n"}, "a.yaml", 1, "cycle through"),
        ({"a.yaml": "profile: a\nextends: nowhere.yaml\n"}, "a.yaml", 2,
         "no profile 'nowhere.yaml'"),
        ({"a.yaml": "profile: a\nextends: no-such-shipped-profile\n"}, "a.yaml", 2,
         "no profile 'no-such-shipped-profile'"),
        ({"a.yaml": "profile: a\nextends: [x]\n"}, "a.yaml", 2, "must be a profile name or path"),
    ],
)  # fmt: skip
def test_bad_extends(
    tmp_path: Path, files: dict[str, str], start: str, line: int, message: str
) -> None:
    for name, text in files.items():
        write(tmp_path, name, text)
    error = error_of(tmp_path / start)
    assert error.key == "extends"
    assert error.line == line
    assert message in error.message
    assert error.file.endswith(".yaml")


# --- bad input: every error names file, key path and line ---------------------------

# (YAML of a site profile after its first two lines, key path, line in the file, message)
BAD = [
    ("nonsense: 1\n", "nonsense", 3, "unknown key (allowed: profile, description, period"),
    ("slos:\n  x:\n    objective: 99%\n    objectiv: 9\n    sli: {}\n", "slos.x.objectiv", 6,
     "unknown key"),
    ("health:\n  nvme:\n    wear: 80%\n", "health.nvme.wear", 5, "unknown key (allowed: "),
    ("health:\n  gpu: {}\n", "health.gpu", 4, "unknown key (allowed: nvme, cpu, memory"),
    ("period: 30d\nperiod: 28d\n", "period", 4, "duplicate key"),
    ("slos:\n  x: {objective: 99%}\n  x: {objective: 99%}\n", "slos.x", 5, "duplicate key"),
    ("slos:\n  x:\n    objective: 120%\n", "slos.x.objective", 5,
     "must be between 0% and 100% exclusive, got '120%'"),
    ("slos:\n  x:\n    objective: 100%\n", "slos.x.objective", 5, "exclusive"),
    ("slos:\n  x:\n    objective: high\n", "slos.x.objective", 5, "not a percentage: 'high'"),
    ("slos:\n  x:\n    objective: 90%\n    sli: {time: {bad_seconds: a, capacity: b}}\n",
     "slos.x.objective", 5, "could never page; use at least 93.0556% or a shorter period"),
    # A mapping's own errors point at its first line.
    ("slos:\n  x:\n    objective: 99%\n", "slos.x", 5, "missing key 'sli'"),
    ("slos:\n  Bad_Name:\n    objective: 99%\n", "slos.Bad_Name", 5, "lower-case letters"),
    ("slos:\n  x:\n    objective: 99%\n    sli: {}\n", "slos.x.sli", 6,
     "must hold exactly one of: latency, time"),
    ("slos:\n  x:\n    objective: 99%\n    sli:\n      latency: {histogram: h}\n"
     "      time: {bad_seconds: a, capacity: b}\n", "slos.x.sli", 7, "exactly one of"),
    ("slos:\n  x:\n    objective: 99%\n    sli:\n      latency: {histogram: h}\n",
     "slos.x.sli.latency", 7, "missing key 'threshold'"),
    ("slos:\n  x:\n    objective: 99%\n    sli:\n      latency:\n        histogram: h_bucket\n"
     "        threshold: 1ms\n", "slos.x.sli.latency.histogram", 8,
     "without its suffix, e.g. 'h'"),
    ("slos:\n  x:\n    objective: 99%\n    sli:\n      latency:\n        histogram: 9lives\n"
     "        threshold: 1ms\n", "slos.x.sli.latency.histogram", 8, "not a Prometheus metric"),
    ("slos:\n  x:\n    objective: 99%\n    sli:\n      latency:\n        histogram: h\n"
     "        threshold: 0us\n", "slos.x.sli.latency.threshold", 9, "positive duration"),
    ("slos:\n  x:\n    objective: 99%\n    sli:\n      latency:\n        histogram: h\n"
     "        threshold: -5us\n", "slos.x.sli.latency.threshold", 9, "not a duration: '-5us'"),
    ("slos:\n  x:\n    objective: 99%\n    sli:\n      latency:\n        histogram: h\n"
     "        threshold: 100 microseconds\n", "slos.x.sli.latency.threshold", 9,
     "use e.g. 100us"),
    ("slos:\n  x:\n    objective: 99%\n    sli:\n      latency:\n        histogram: h\n"
     "        threshold: 1ms\n        matchers: {bad-label: x}\n",
     "slos.x.sli.latency.matchers.bad-label", 10, "not a Prometheus label name"),
    ("slos:\n  x:\n    objective: 99%\n    sli:\n      latency:\n        histogram: h\n"
     "        threshold: 1ms\n        by: [target, target]\n", "slos.x.sli.latency.by", 10,
     "lists a label twice"),
    ("slos:\n  x:\n    objective: 99%\n    sli:\n      latency:\n        histogram: h\n"
     "        threshold: 1ms\n        by: [instance]\n", "slos.x.sli.latency.by", 10,
     "instance is kept already"),
    ("slos:\n  x:\n    objective: 99%\n    sli:\n      time: {bad_seconds: a}\n",
     "slos.x.sli.time", 7, "missing key 'capacity'"),
    ("slos:\n  x:\n    objective: 99%\n    probe: disk\n    sli: {time: {bad_seconds: a, "
     "capacity: b}}\n", "slos.x.probe", 6, "must be one of storage, wakeup, got 'disk'"),
    ("probes: {storage: {targets: []}}\n", "slos.storage-write-latency.probe", 0,
     "the storage probe has no targets"),
    ("probes: {wakeup: {enabled: false}}\n", "slos.scheduler-wakeup-latency.probe", 0,
     "the wakeup probe is disabled"),
    ("period: 3d\n", "period", 3, "must be longer than 3d"),
    ("period: 1.5ms\n", "period", 3, "not a whole number of milliseconds"),
    ("period: monthly\n", "period", 3, "not a duration: 'monthly'"),
    ("health:\n  cpu:\n    throttling_window: 100us\n", "health.cpu.throttling_window", 5,
     "not a whole number of milliseconds"),
    ("health:\n  cpu:\n    temperature_max: {arm: 80}\n", "health.cpu.temperature_max.arm", 5,
     "unknown key (allowed: intel, amd)"),
    ("health:\n  cpu:\n    temperature_crit: {amd: hot}\n", "health.cpu.temperature_crit.amd",
     5, "must be a number"),
    ("health:\n  cpu:\n    temperature_max: {amd: 96}\n", "health.cpu.temperature_max", 5,
     "amd: temperature_max (96) must be below temperature_crit (95)"),
    ("health:\n  cpu:\n    temperature_crit: 0\n", "health.cpu.temperature_crit", 5,
     "must be positive"),
    ("health:\n  nvme:\n    wear_warning: 180%\n", "health.nvme.wear_warning", 5,
     "must be between 0 and 1"),
    ("health:\n  nvme:\n    write_amplification_max: -3\n",
     "health.nvme.write_amplification_max", 5, "must be positive"),
    ("health:\n  nvme:\n    write_amplification_min_written: lots\n",
     "health.nvme.write_amplification_min_written", 5, "not a size"),
    ("health:\n  memory:\n    correctable_errors_max: many\n",
     "health.memory.correctable_errors_max", 5, "must be a number, got str 'many'"),
    ("health:\n  power:\n    psu_count: 2.5\n", "health.power.psu_count", 5,
     "must be a whole number"),
    ("health:\n  power:\n    psu_count: 0\n", "health.power.psu_count", 5, "at least 1"),
    ("health:\n  firmware:\n    host_group_by: [vendor, 1x]\n",
     "health.firmware.host_group_by[1]", 5, "not a Prometheus label name"),
    ("health:\n  firmware:\n    host_components: bios\n", "health.firmware.host_components", 5,
     "must be a list"),
    ("health:\n  firmware:\n    host_components: [bios, 'micro|code']\n",
     "health.firmware.host_components[1]", 5, "a component is letters, digits"),
    ("capacity:\n  threads: 255.5\n", "capacity.threads", 4, "must be a whole number"),
    ("capacity:\n  iops: []\n", "capacity.iops", 4, "must be a number, got a list"),
    ("alerting:\n  labels: {severity: low}\n", "alerting.labels.severity", 4,
     "the generated alerts set this label themselves"),
    ("alerting:\n  for_scale: 0\n", "alerting.for_scale", 4, "must be positive"),
    ("alerting:\n  exporter_selector: nodeslo\n", "alerting.exporter_selector", 4,
     "not a list of label matchers"),
    ("alerting:\n  exporter_selector: '{job=\"nodeslo\"}'\n", "alerting.exporter_selector", 4,
     "not a list of label matchers"),
    ("alerting:\n  prometheus_selector: prometheus\n", "alerting.prometheus_selector", 4,
     "not a list of label matchers"),
    ("alerting:\n  exporter_lookback: 0s\n", "alerting.exporter_lookback", 4,
     "must be a positive duration"),
    ("alerting:\n  instance_labels: []\n", "alerting.instance_labels", 4,
     "must name at least one label"),
    ("alerting:\n  runbook_base_url: 42\n", "alerting.runbook_base_url", 4,
     "must be a non-empty string, got int 42"),
    ("slos: [a, b]\n", "slos", 3, "must be a mapping, got a list"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "key", "line", "message"), BAD)
def test_bad_input_names_file_key_and_line(
    tmp_path: Path, text: str, key: str, line: int, message: str
) -> None:
    path = site(tmp_path, text)
    error = error_of(path)
    assert error.key == key
    assert message in error.message
    if line:
        assert error.file == str(path)
        assert error.line == line
        assert str(error).startswith(f"{path}:{line}: {key}: ")
    else:
        # The error is in the inherited SLO; the shipped file and its line are named.
        assert error.file == shipped_profile_path("process-management")
        assert error.line is not None and error.line > 1


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.yaml", "profile: x\nslos:\n  a: [\n")
    error = error_of(path)
    assert error.file == str(path) and error.line == 4
    assert "invalid YAML" in error.message


def test_a_profile_needs_a_name(tmp_path: Path) -> None:
    error = error_of(write(tmp_path, "anon.yaml", "period: 30d\n"))
    assert error.key == "" and "missing key 'profile'" in error.message


def test_a_missing_file_is_an_error_not_a_crash(tmp_path: Path) -> None:
    error = error_of(tmp_path / "nope.yaml")
    assert error.file == str(tmp_path / "nope.yaml")
    assert "No such file" in error.message


def test_an_empty_site_profile_is_only_missing_its_name(tmp_path: Path) -> None:
    error = error_of(write(tmp_path, "empty.yaml", ""))
    assert "missing key 'profile'" in str(error)


def test_a_minimal_profile_gets_every_default(tmp_path: Path) -> None:
    profile = load_profile(str(write(tmp_path, "min.yaml", "profile: bare\n")))
    assert isinstance(profile, Profile)
    assert profile.slos == ()
    assert profile.period_seconds == 30 * 86400
    assert profile.health.nvme.wear_warning_ratio == 0.8
    assert profile.alerting.runbook_base_url.endswith("/alerts/runbooks")


def test_a_28_day_period_admits_a_lower_objective(tmp_path: Path) -> None:
    # 14.4 x 30d / 28d = 13.44: a 7% budget pages at 94.08% errors, still possible.
    text = "period: 28d\nslos:\n  storage-read-latency: {objective: 93%}\n"
    assert load_profile(str(site(tmp_path, text))).slo("storage-read-latency").objective == 0.93


# --- units: property tests ----------------------------------------------------------

UNITS = {"ns": "e-9", "us": "e-6", "µs": "e-6", "ms": "e-3"}


@given(st.integers(min_value=1, max_value=10**9), st.sampled_from(sorted(UNITS)))
def test_sub_second_durations_are_the_exact_float_of_their_decimal(n: int, unit: str) -> None:
    # 100us must be 0.0001 (the float a bucket bound holds), not 100 * 1e-6.
    assert parse_duration(f"{n}{unit}") == float(f"{n}{UNITS[unit]}")


@given(st.integers(min_value=0, max_value=10**7), st.sampled_from(["s", "m", "h", "d", "w"]))
def test_whole_durations(n: int, unit: str) -> None:
    size = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit]
    assert parse_duration(f"{n}{unit}") == n * size
    assert parse_duration(f" {n} {unit} ") == n * size


@given(st.integers(min_value=1, max_value=10**13))
def test_prom_duration_round_trips_whole_milliseconds(millis: int) -> None:
    seconds = millis / 1000
    text = prom_duration(seconds)
    assert parse_duration(text) == seconds
    # The shortest unit that is exact: no "60s" where "1m" fits.
    number = int("".join(c for c in text if c.isdigit()))
    unit = text.lstrip("0123456789")
    bigger = {"ms": 1000, "s": 60, "m": 60, "h": 24, "d": None}[unit]
    assert bigger is None or number % bigger != 0


@given(st.floats(min_value=1e-9, max_value=1e6, allow_nan=False))
def test_prom_duration_refuses_what_it_cannot_write_exactly(seconds: float) -> None:
    millis = seconds * 1000
    if abs(round(millis) - millis) > 1e-6:
        with pytest.raises(ValueError, match="whole number of milliseconds"):
            prom_duration(seconds)


@given(st.decimals(min_value=Decimal("0.001"), max_value=Decimal("99.999"), places=3))
def test_percentages(percent: Decimal) -> None:
    ratio = parse_percent(f"{percent}%")
    assert ratio == float(percent / 100)
    assert parse_percent(str(percent)) == ratio  # the % sign is optional
    assert 0 < ratio < 1


@given(st.decimals(min_value=Decimal(0), max_value=Decimal(100), places=2))
def test_ratios_accept_percent_or_fraction(percent: Decimal) -> None:
    assert parse_ratio(f"{percent}%") == float(percent / 100)
    assert parse_ratio(str(percent / 100)) == float(percent / 100)


@pytest.mark.parametrize("text", ["-1%", "101%", "1.5", "nan", "inf", "lots", True])
def test_ratios_out_of_range_or_not_numbers(text: object) -> None:
    with pytest.raises(ValueError):
        parse_ratio(text)


@given(st.integers(min_value=0, max_value=2**40), st.sampled_from(["", "B", "KiB", "MiB", "GB"]))
def test_sizes(n: int, unit: str) -> None:
    scale = {"": 1, "B": 1, "KiB": 1024, "MiB": 1024**2, "GB": 1000**3}[unit]
    assert parse_size(f"{n}{unit}") == n * scale


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(50e-6, "50µs"), (100e-6, "100µs"), (1e-3, "1ms"), (90, "1.5m"), (86400, "1d"), (5e-9, "5ns")],
)
def test_human_seconds(seconds: float, text: str) -> None:
    assert human_seconds(seconds) == text
