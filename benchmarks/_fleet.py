"""A fleet of synthetic hosts in a real Prometheus: what benchmarks/fleet_rules.py builds on.

- Synthetic hosts: the real `nodeslo serve` on the seed-spec fixture tree (16 NVMe, 24
  DIMMs, 256 CPUs aggregated as the exporter does) gives the template of one host's
  exposition, kept to the families a rule file reads, plus the two probes' histograms
  with the profile's buckets (the fixture run turns the probes off). Counters move at a
  plausible rate; every 10th host has a failing drive, every 20th a wearing one, every
  25th a slow namespace, so some alerts fire as in a real fleet. One HTTP server serves
  every host (`?host=`), rendered at scrape time.
- History, written through Prometheus' remote-write receiver in time order (promtool's
  OpenMetrics backfill rescans its input for every 2h block: hours for 30 days): raw
  series only as far back as the longest range or offset a rule reads them, recorded
  series (SLO 5m rates, hourly recordings) as the rule groups would have written them.
- `Server`: a Prometheus 2.42 on a free loopback port and its own data directory.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import signal
import struct
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

import _common  # noqa: F401  (puts tests/ on sys.path)
from nodeslo.pack import slo
from nodeslo.probes.histogram import latency_bounds, le_label
from nodeslo.profile import LatencySLI, Profile, TimeSLI, load_profile
from support.stack import tool

STEP = 60  # seconds between samples: the scrape and the rule evaluation interval
MINUTE, HOUR, DAY = 60, 3600, 86400

# How much history each family gets: the longest range or offset a rule reads it over
# (main's rules and this branch's: the same raw series). Families read only at the
# current instant need none: their cost does not depend on what lies behind them.
HISTORY = {
    "nodeslo_nvme_data_written_bytes_total": DAY,
    "nodeslo_nvme_media_written_bytes_total": DAY,
    "nodeslo_nvme_info": DAY,
    "nodeslo_edac_correctable_errors_total": DAY,
    "nodeslo_md_info": DAY,
    "nodeslo_zfs_pool_state": DAY,
    "nodeslo_disk_reads_completed_total": 6 * HOUR,
    "nodeslo_disk_writes_completed_total": 6 * HOUR,
    "nodeslo_disk_read_time_seconds_total": 6 * HOUR,
    "nodeslo_disk_write_time_seconds_total": 6 * HOUR,
    "nodeslo_nvme_media_errors_total": HOUR,
    "nodeslo_edac_uncorrectable_errors_total": HOUR,
    "nodeslo_numa_local_pages_total": HOUR,
    "nodeslo_numa_remote_pages_total": HOUR,
    "nodeslo_pcie_aer_errors_total": HOUR,
    "nodeslo_pcie_aer_rootport_errors_total": HOUR,
    "nodeslo_network_speed_bytes_per_second": HOUR,
    "nodeslo_probe_io_latency_seconds_bucket": HOUR,
    "nodeslo_probe_io_latency_seconds_count": HOUR,
    "nodeslo_probe_io_errors_total": HOUR,
    "nodeslo_probe_wakeup_latency_seconds_bucket": HOUR,
    "nodeslo_probe_wakeup_latency_seconds_count": HOUR,
    "nodeslo_cpu_throttle_events_total": 10 * MINUTE,
    "nodeslo_nvme_state_live": 10 * MINUTE,
    "nodeslo_probe_up": 10 * MINUTE,
    "nodeslo_network_carrier_changes_total": 15 * MINUTE,
    "nodeslo_network_errors_total": 15 * MINUTE,
    "nodeslo_network_packets_total": 15 * MINUTE,
}
# Recordings read over long ranges, as their groups would have written them: name ->
# (the raw family they summarise, how they group it, span, step). Values come from the
# host's template (`count`: one per series; `max`: the series' value).
RECORDED = {
    "instance:nodeslo_nvme_controllers:count": ("nodeslo_nvme_info", "count", DAY, STEP),
    "instance:nodeslo_md_arrays:count": ("nodeslo_md_info", "count", DAY, STEP),
    "instance:nodeslo_nvme_controllers:max1h": ("nodeslo_nvme_info", "count", DAY, HOUR),
    "instance_serial:nodeslo_nvme_percentage_used_ratio:predict_linear30d": (
        "nodeslo_nvme_percentage_used_ratio",
        "serial",
        2 * HOUR,
        HOUR,
    ),
    "instance_serial:nodeslo_nvme_percentage_used_ratio:hourly": (
        "nodeslo_nvme_percentage_used_ratio",
        "serial",
        7 * DAY,
        HOUR,
    ),
    "instance_interface:nodeslo_network_speed_bytes_per_second:max1h": (
        "nodeslo_network_speed_bytes_per_second",
        "interface",
        7 * DAY,
        HOUR,
    ),
}
# Per-second increase of counters on a busy, healthy host (per series).
RATES = {
    "nodeslo_disk_reads_completed_total": 2000.0,
    "nodeslo_disk_writes_completed_total": 1500.0,
    "nodeslo_disk_read_time_seconds_total": 2000 * 40e-6,
    "nodeslo_disk_write_time_seconds_total": 1500 * 60e-6,
    "nodeslo_disk_read_bytes_total": 2000 * 4096.0,
    "nodeslo_disk_written_bytes_total": 1500 * 4096.0,
    "nodeslo_nvme_data_written_bytes_total": 6e6,
    "nodeslo_nvme_media_written_bytes_total": 9e6,
    "nodeslo_numa_local_pages_total": 20000.0,
    "nodeslo_numa_remote_pages_total": 400.0,
    "nodeslo_context_switches_total": 300000.0,
}


@dataclass(frozen=True)
class Series:
    """One series of a synthetic host: value(t) = base + rate * (t - origin)."""

    name: str
    labels: tuple[tuple[str, str], ...]
    base: float
    rate: float = 0.0

    def value(self, t: float, origin: float) -> float:
        return self.base + self.rate * (t - origin)


# --- the synthetic hosts ------------------------------------------------------------


_NAME = re.compile(r"\b(?:nodeslo_[a-z0-9_]+|up)\b")


def names_read(*rule_files: Path) -> set[str]:
    """Every raw metric name the rule files mention (expressions and templates)."""
    return {n for path in rule_files for n in _NAME.findall(path.read_text())}


def _read(sample: str, family: str, read: set[str] | None) -> bool:
    return read is None or sample in read or family in read


def template(exposition: str, read: set[str] | None = None) -> list[Series]:
    """The real exporter's series, counters given a plausible rate; only the families in
    `read` (every one when None)."""
    out: list[Series] = []
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name.startswith(("process_", "python_")):
                continue
            if not _read(sample.name, family.name, read):
                continue
            labels = tuple(sorted(sample.labels.items()))
            rate = RATES.get(sample.name, 1.0 if family.type == "counter" else 0.0)
            if any(w in sample.name for w in ("error", "throttle", "unsafe", "changes")):
                rate = 0.0  # healthy: no new errors, no throttling, no link flaps
            out.append(Series(sample.name, labels, sample.value, rate))
    return out


def _histogram(name: str, labels: dict[str, str], rate: float, median: float) -> list[Series]:
    """A probe histogram whose observations are lognormal around `median` seconds."""
    out = []
    for bound in (*latency_bounds(_thresholds()), math.inf):
        share = 1.0 if bound == math.inf else 0.5 * math.erfc(-math.log(bound / median) / 0.9)
        le = "+Inf" if bound == math.inf else le_label(bound)
        out.append(
            Series(f"{name}_bucket", tuple(sorted({**labels, "le": le}.items())), 0, rate * share)
        )
    out.append(Series(f"{name}_count", tuple(sorted(labels.items())), 0, rate))
    out.append(Series(f"{name}_sum", tuple(sorted(labels.items())), 0, rate * median * 1.2))
    return out


def _thresholds() -> tuple[float, ...]:
    profile = load_profile()
    return tuple(s.sli.threshold_seconds for s in profile.slos if isinstance(s.sli, LatencySLI))


def probes(read: set[str] | None = None) -> list[Series]:
    target = {"target": "/var/lib/nodeslo"}
    out = [
        *_histogram("nodeslo_probe_io_latency_seconds", {**target, "op": "write_sync"}, 10, 30e-6),
        *_histogram("nodeslo_probe_io_latency_seconds", {**target, "op": "read"}, 10, 15e-6),
        *_histogram(
            "nodeslo_probe_wakeup_latency_seconds",
            {"engine": "python", "policy": "other"},
            100,
            8e-6,
        ),
    ]
    for op in ("write_sync", "read"):
        out.append(
            Series("nodeslo_probe_io_errors_total", (("op", op), *sorted(target.items())), 0)
        )
    for probe in ("storage", "wakeup"):
        out.append(Series("nodeslo_probe_up", (("probe", probe),), 1))
    return [s for s in out if _read(s.name, s.name.rsplit("_", 1)[0], read)]


def host_series(base: list[Series], index: int, origin: float) -> list[Series]:
    """Host `index`: the template, healthy, except a few hosts with a worn, failing or
    slow drive so that some alerts fire, as in a real fleet."""
    broken = index % 10 == 0
    out = []
    for series in base:
        name, labels = series.name, series.labels
        device = dict(labels).get("device")
        if name.endswith("_timestamp_seconds"):
            out.append(Series(name, labels, origin, 1.0))  # "now", always fresh
        elif name == "nodeslo_nvme_percentage_used_ratio" and index % 20 == 0:
            out.append(Series(name, labels, 0.78, 0.01 / DAY))  # wears out
        elif name == "nodeslo_disk_read_time_seconds_total" and index % 25 == 0:
            slow = series.rate * 8 if device == "nvme3n1" else series.rate
            out.append(Series(name, labels, series.base, slow))
        elif name.startswith("nodeslo_nvme_critical_warning") and not broken:
            out.append(Series(name, labels, 0.0))
        elif name == "nodeslo_nvme_available_spare_ratio" and not broken:
            out.append(Series(name, labels, 1.0))
        else:
            out.append(series)
    return out


@dataclass(frozen=True)
class Host:
    instance: str
    series: list[Series]


_heads: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}


def render(host: Host, now: float, origin: float) -> bytes:
    lines = []
    for series in host.series:
        key = (series.name, series.labels)
        head = _heads.get(key)
        if head is None:
            labels = ",".join(f'{k}="{v}"' for k, v in series.labels)
            head = _heads[key] = f"{series.name}{{{labels}}} "
        lines.append(f"{head}{series.value(now, origin)!r}\n")
    return "".join(lines).encode()


def serve_hosts(hosts: dict[str, Host], origin: float) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
            host = hosts.get(query.get("host", [""])[0])
            if host is None:
                self.send_error(404)
                return
            body = render(host, time.time(), origin)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            # A scrape that timed out under load: Prometheus counts it, nothing to say.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# --- history through remote write ---------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _snappy(data: bytes) -> bytes:
    """Snappy block format holding one literal: valid, uncompressed (loopback only)."""
    n = len(data) - 1
    if n < 60:
        tag = bytes([n << 2])
    elif n < 1 << 8:
        tag = bytes([60 << 2, n])
    elif n < 1 << 16:
        tag = bytes([61 << 2]) + struct.pack("<H", n)
    elif n < 1 << 24:
        tag = bytes([62 << 2]) + struct.pack("<I", n)[:3]
    else:
        tag = bytes([63 << 2]) + struct.pack("<I", n)
    return _varint(len(data)) + tag + data


def _labels(name: str, labels: tuple[tuple[str, str], ...]) -> bytes:
    pairs = sorted((("__name__", name), *labels))
    return b"".join(_field(1, _field(1, k.encode()) + _field(2, v.encode())) for k, v in pairs)


History = list[tuple[bytes, Series, float, int]]  # labels, series, span, step


def backfill(url: str, history: History, end: float, origin: float) -> int:
    """Send every series' samples over its history, in 30-minute windows in time order.

    A prompb.WriteRequest is encoded by hand (TimeSeries = labels + samples; Sample =
    double value, int64 milliseconds), so the benchmark needs no protobuf or snappy
    package. Windows go forward in time: the head accepts samples up to 1h older
    than its newest one.
    """
    window = 30 * MINUTE
    by_span: dict[tuple[float, int], list[tuple[bytes, Series]]] = {}
    for labels, series, span, step in history:
        by_span.setdefault((span, step), []).append((labels, series))
    start = end - max(span for span, _ in by_span)
    sent = 0
    t0 = start - start % window
    while t0 < end:
        stamps = [t for t in range(int(t0), int(min(t0 + window, end)), STEP) if t >= start]
        # Sample = 0x09 double, 0x10 varint(ms): the same timestamp bytes for every series.
        tails = {t: b"\x10" + _varint(t * 1000) for t in stamps}
        heads = {t: b"\x12" + _varint(9 + len(tails[t])) + b"\x09" for t in stamps}
        parts = []
        for (span, step), members in by_span.items():
            mine = [t for t in stamps if t >= end - span and t % step == 0]
            if not mine:
                continue
            for labels, series in members:
                if series.rate == 0:
                    value = struct.pack("<d", series.base)
                    samples = b"".join(heads[t] + value + tails[t] for t in mine)
                else:
                    samples = b"".join(
                        heads[t] + struct.pack("<d", series.value(t, origin)) + tails[t]
                        for t in mine
                    )
                parts.append(_field(1, labels + samples))
                sent += len(mine)
        if parts:
            request = urllib.request.Request(
                url,
                data=_snappy(b"".join(parts)),
                method="POST",
                headers={
                    "Content-Encoding": "snappy",
                    "Content-Type": "application/x-protobuf",
                    "X-Prometheus-Remote-Write-Version": "0.1.0",
                },
            )
            with urllib.request.urlopen(request, timeout=300) as response:
                assert response.status in (200, 204), response.status
        t0 += window
    return sent


def wait_compacted(server: Server, timeout: float = 900) -> float:
    """Wait until the head holds at most a few hours: history sits in blocks, as in
    production. Returns the seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        m = server.metrics()
        span = (
            m[("prometheus_tsdb_head_max_time_seconds", ())]
            - m[("prometheus_tsdb_head_min_time_seconds", ())]
        )
        if span <= 4 * HOUR:
            break
        time.sleep(5)
    return time.monotonic() - start


def history_series(hosts: dict[str, Host], profile: Profile, read: set[str]) -> History:
    """Every series' history: raw families per HISTORY, `up`, the recordings read over
    long ranges (RECORDED, when the rules read them), and the SLO groups' recordings."""
    out: History = []
    for instance, host in hosts.items():
        common = (("instance", instance), ("job", "nodeslo"))
        up = Series("up", common, 1.0)
        out.append((_labels("up", common), up, float(DAY), STEP))
        for series in host.series:
            labels = tuple(sorted((*series.labels, *common)))
            span = HISTORY.get(series.name)
            if span:
                out.append((_labels(series.name, labels), series, float(span), STEP))
        for name, (family, how, span, step) in RECORDED.items():
            if name not in read:
                continue
            members = [s for s in host.series if s.name == family]
            if how == "count":
                value = Series(name, (("instance", instance),), float(len(members)))
                out.append((_labels(name, value.labels), value, float(span), step))
                continue
            for series in members:
                labels = dict(series.labels)
                keep = {"instance": instance, how: labels.get(how, "")}
                if how == "serial":
                    keep["model"] = labels.get("model", "")
                recorded = Series(name, tuple(sorted(keep.items())), series.base, series.rate)
                out.append((_labels(name, recorded.labels), recorded, float(span), step))
        # What the SLO groups recorded: 0.2% bad events, every minute for the 3d
        # windows, every hour (the hourly group: the sum of the hour's 60 per-minute
        # 5m rates) for the period.
        for objective in profile.slos:
            slo_labels = [("instance", instance), ("slo", objective.name)]
            slo_labels += [("target", "/var/lib/nodeslo")] * ("target" in objective.sli.by)
            events = 128.0 if isinstance(objective.sli, TimeSLI) else 10.0
            for name, value, span, step in (
                ("instance_slo:nodeslo_sli_errors:rate5m", events * 0.002, 3 * DAY, STEP),
                ("instance_slo:nodeslo_sli_events:rate5m", events, 3 * DAY, STEP),
                (slo.HOURLY_ERRORS, events * 0.002 * 60, 30 * DAY, HOUR),
                (slo.HOURLY_EVENTS, events * 60, 30 * DAY, HOUR),
            ):
                series = Series(name, tuple(slo_labels), value)
                out.append((_labels(name, tuple(slo_labels)), series, float(span), step))
    return out


# --- Prometheus ----------------------------------------------------------------------


@dataclass
class Server:
    name: str
    port: int
    data: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, config: Path, *flags: str) -> None:
        binary = tool("prometheus")
        assert binary, "the prometheus package is not installed"
        log = open(self.data.parent / f"{self.name}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.data}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=60d",
                *flags,
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"{self.name} exited; see {log.name}"
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise AssertionError(f"{self.name} not ready")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        with urllib.request.urlopen(self.url + "/metrics", timeout=30) as response:
            text = response.read().decode()
        out = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return out

    def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.query_stats(expr)[0]
        return result

    def query_time(self, expr: str, at: float) -> float:
        """Seconds the engine spent on one instant query at `at` (its execTotalTime:
        queueing, preparation, evaluation and sorting; no HTTP or JSON)."""
        query = {"query": expr, "time": f"{at:.3f}", "stats": "all"}
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode(query)
        with urllib.request.urlopen(url, timeout=600) as response:
            data = json.loads(response.read())["data"]
        return float(data["stats"]["timings"]["execTotalTime"])

    def query_stats(self, expr: str) -> tuple[list[dict[str, Any]], int]:
        """(result, samples the query read: the engine's totalQueryableSamples)."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr, "stats": "all"})
        with urllib.request.urlopen(url, timeout=300) as response:
            data = json.loads(response.read())["data"]
        samples = data.get("stats", {}).get("samples", {}).get("totalQueryableSamples", 0)
        return data["result"], int(samples)


def config(
    path: Path, exporter: str, hosts_port: int, hosts: list[str], rule_file: Path | None
) -> Path:
    static = [{"targets": [exporter], "labels": {}}]
    static += [
        {"targets": [f"127.0.0.1:{hosts_port}"], "labels": {"instance": h, "__param_host": h}}
        for h in hosts
    ]
    document: dict[str, Any] = {
        "global": {"scrape_interval": f"{STEP}s", "evaluation_interval": f"{STEP}s"},
        "scrape_configs": [{"job_name": "nodeslo", "static_configs": static}],
    }
    if rule_file is not None:
        document["rule_files"] = [str(rule_file)]
    path.write_text(yaml.safe_dump(document))
    return path


@dataclass(frozen=True)
class GroupState:
    """One rule group's own metrics, as Prometheus exports them."""

    interval: float
    last_duration: float
    last_samples: float  # samples the last evaluation returned (its output)
    missed: float
    evaluations: float


def groups(server: Server) -> dict[str, GroupState]:
    fields: dict[str, dict[str, float]] = {}
    wanted = {
        "prometheus_rule_group_interval_seconds": "interval",
        "prometheus_rule_group_last_duration_seconds": "last_duration",
        "prometheus_rule_group_last_evaluation_samples": "last_samples",
        "prometheus_rule_group_iterations_missed_total": "missed",
        "prometheus_rule_group_iterations_total": "evaluations",
    }
    for (name, labels), value in server.metrics().items():
        if name in wanted:
            group = dict(labels)["rule_group"].split(";")[-1]
            fields.setdefault(group, {})[wanted[name]] = value
    return {g: GroupState(**{k: f.get(k, 0.0) for k in wanted.values()}) for g, f in fields.items()}


def rule_times(server: Server) -> dict[tuple[str, str], float]:
    """Per rule: (group, record or alert name + its distinguishing labels) -> seconds."""
    with urllib.request.urlopen(server.url + "/api/v1/rules", timeout=60) as response:
        groups = json.loads(response.read())["data"]["groups"]
    out: dict[tuple[str, str], float] = {}
    for group in groups:
        for rule in group["rules"]:
            labels = rule.get("labels", {})
            tag = ",".join(
                f"{k}={labels[k]}"
                for k in ("slo", "long_window", "probe", "component")
                if k in labels
            )
            key = (group["name"], f"{rule['name']}{{{tag}}}" if tag else rule["name"])
            out[key] = out.get(key, 0.0) + rule["evaluationTime"]
    return out
