"""Cost of the alerting pack in a real Prometheus: 1 exporter + N synthetic hosts.

    .venv/bin/python benchmarks/rules_eval.py [--hosts 100] [--minutes 8]

What runs (Debian's prometheus 2.42, loopback, free ports, temp data dirs):

1. the real `nodeslo serve` on the seed-spec fixture tree; its exposition is the
   template of a synthetic host (plus the probe histograms with the profile's buckets,
   which the fixture run turns off);
2. history, so the long windows read as much data as in production: the raw series
   the rules read over ranges or offsets (NVMe write counters 1d, disk counters 6h,
   memory, NUMA and throttle counters 1h, one sample per minute), the SLO 5m recordings
   for the longest window that reads them (3d, one per minute), and the hourly
   recordings for what reads them (SLO rates 30d, NVMe wear 7d, one per hour), written
   through Prometheus' remote-write receiver in time order (promtool's OpenMetrics
   backfill rescans its input for every 2h block: hours for 30 days of data);
3. two Prometheus servers on copies of that data, scraping the same 1 + N targets every
   minute: A with alerts/nodeslo.rules.yaml (evaluation every minute), B without rules
   (the baseline);
4. after a warm-up, the median of prometheus_rule_group_last_duration_seconds per
   group over the measurement, the rules' series per node, and A's CPU against B's.

Figures are printed; nothing is asserted. On a shared machine CPU figures are noisy.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
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

from _common import REPO, fixture_tree, machine
from nodeslo.pack import rules, slo
from nodeslo.probes.histogram import latency_bounds, le_label
from nodeslo.profile import LatencySLI, Profile, TimeSLI, load_profile
from support import daemon as d  # on sys.path through _common
from support.stack import free_port, tool

STEP = 60  # seconds between samples: the scrape and the rule evaluation interval
MINUTE, HOUR, DAY = 60, 3600, 86400

# How much history each family gets: the longest range a rule reads it over.
HISTORY = {
    "nodeslo_nvme_data_written_bytes_total": DAY,
    "nodeslo_nvme_media_written_bytes_total": DAY,
    "nodeslo_edac_correctable_errors_total": DAY,
    "nodeslo_disk_reads_completed_total": 6 * HOUR,
    "nodeslo_disk_writes_completed_total": 6 * HOUR,
    "nodeslo_disk_read_time_seconds_total": 6 * HOUR,
    "nodeslo_disk_write_time_seconds_total": 6 * HOUR,
    "nodeslo_nvme_media_errors_total": HOUR,
    "nodeslo_edac_uncorrectable_errors_total": HOUR,
    "nodeslo_numa_local_pages_total": HOUR,
    "nodeslo_numa_remote_pages_total": HOUR,
    "nodeslo_cpu_throttle_events_total": HOUR,
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


def template(exposition: str) -> list[Series]:
    """The real exporter's series, counters given a plausible rate."""
    out: list[Series] = []
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name.startswith(("process_", "python_")):
                continue
            labels = tuple(sorted(sample.labels.items()))
            rate = RATES.get(sample.name, 1.0 if family.type == "counter" else 0.0)
            if "error" in sample.name or "throttle" in sample.name or "unsafe" in sample.name:
                rate = 0.0  # healthy: no new errors, no throttling
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


def probes() -> list[Series]:
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
    return out


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


def render(host: Host, now: float, origin: float) -> bytes:
    lines = []
    for series in host.series:
        labels = ",".join(f'{k}="{v}"' for k, v in series.labels)
        lines.append(f"{series.name}{{{labels}}} {series.value(now, origin)!r}\n")
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


def history_series(hosts: dict[str, Host], profile: Profile) -> History:
    out: History = []
    for instance, host in hosts.items():
        common = (("instance", instance), ("job", "nodeslo"))
        for series in host.series:
            labels = tuple(sorted((*series.labels, *common)))
            span = HISTORY.get(series.name)
            if span:
                out.append((_labels(series.name, labels), series, float(span), STEP))
            if series.name == "nodeslo_nvme_percentage_used_ratio":
                name = "instance_controller:nodeslo_nvme_percentage_used_ratio:hourly"
                out.append((_labels(name, labels), series, 7.0 * DAY, HOUR))
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
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=120) as response:
            result: list[dict[str, Any]] = json.loads(response.read())["data"]["result"]
        return result


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


def group_durations(server: Server) -> dict[str, float]:
    return {
        dict(labels)["rule_group"].split(";")[-1]: value
        for (name, labels), value in server.metrics().items()
        if name == "prometheus_rule_group_last_duration_seconds"
    }


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


def cpu(server: Server) -> float:
    return server.metrics()[("process_cpu_seconds_total", ())]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--minutes", type=float, default=8.0, help="scraping with rules, total")
    parser.add_argument("--warmup", type=float, default=3.0, help="minutes not measured")
    parser.add_argument("--keep", action="store_true", help="keep the temp directory")
    parser.add_argument("--top", type=int, default=12, help="rules listed by cost")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    work = Path(tempfile.mkdtemp(prefix="nodeslo-rules-bench-"))
    profile = load_profile()
    rule_file = REPO / rules.RULES_PATH
    print(f"machine: {machine()}")
    version = subprocess.run(
        [tool("prometheus") or "prometheus", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    print(f"prometheus: {version.stdout.splitlines()[0]}")
    servers: list[Server] = []
    hosts_server = None
    tree = fixture_tree("seed-spec")
    try:
        with d.running(tree, f"--collector.nvme.replay-dir={tree}/nvme-replay") as exporter:
            time.sleep(2)  # one NVMe poll
            base = [*template(exporter.scrape()), *probes()]

            # History, written into A while it has neither scrapes nor rules.
            a = Server("with-rules", free_port(), work / "a")
            servers.append(a)
            empty = work / "empty.yml"
            empty.write_text(yaml.safe_dump({"global": {"scrape_interval": "1h"}}))
            a.start(empty, "--web.enable-remote-write-receiver")
            end = time.time() - 2 * MINUTE
            end -= end % STEP
            origin = end - 30 * DAY
            names = [f"h{i:03d}:10131" for i in range(args.hosts)]
            hosts = {n: Host(n, host_series(base, i, origin)) for i, n in enumerate(names)}
            print(f"synthetic host: {len(base)} series; {args.hosts} hosts + 1 real exporter")
            history = history_series(hosts, profile)
            start = time.perf_counter()
            sent = backfill(a.url + "/api/v1/write", history, end, origin)
            backfill_time = time.perf_counter() - start
            compaction = wait_compacted(a)
            a.stop()
            print(
                f"history: {len(history)} series, {sent:,} samples written in "
                f"{backfill_time:.0f} s, compacted into blocks in {compaction:.0f} s"
            )
            shutil.copytree(work / "a", work / "b")

            hosts_server = serve_hosts(hosts, origin)
            target = f"{exporter.host}:{exporter.port}"
            b = Server("baseline", free_port(), work / "b")
            servers.append(b)
            a.start(config(work / "a.yml", target, hosts_server.server_port, names, rule_file))
            b.start(config(work / "b.yml", target, hosts_server.server_port, names, None))
            time.sleep(args.warmup * 60)
            cpu_a, cpu_b = cpu(a), cpu(b)
            measured_from = time.monotonic()
            durations: dict[str, list[float]] = {}
            per_rule: dict[tuple[str, str], list[float]] = {}
            while time.monotonic() - measured_from < (args.minutes - args.warmup) * 60:
                time.sleep(STEP / 2)
                for group, seconds in group_durations(a).items():
                    durations.setdefault(group, []).append(seconds)
                for key, seconds in rule_times(a).items():
                    per_rule.setdefault(key, []).append(seconds)
            elapsed = time.monotonic() - measured_from
            cpu_a, cpu_b = cpu(a) - cpu_a, cpu(b) - cpu_b
            report(a, durations, elapsed, cpu_a, cpu_b)
            print("\ncostliest rules (median evaluation time):")
            ranked = sorted(per_rule.items(), key=lambda kv: -statistics.median(kv[1]))
            for (group, name), values in ranked[: args.top]:
                print(f"  {statistics.median(values) * 1e3:8.1f} ms  {group:38} {name}")
    finally:
        for server in servers:
            server.stop()
        if hosts_server is not None:
            hosts_server.shutdown()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(tree, ignore_errors=True)
    return 0


def report(
    a: Server, durations: dict[str, list[float]], elapsed: float, cpu_a: float, cpu_b: float
) -> None:
    metrics = a.metrics()
    rules_per_group = {
        dict(labels)["rule_group"].split(";")[-1]: int(value)
        for (name, labels), value in metrics.items()
        if name == "prometheus_rule_group_rules"
    }
    document = yaml.safe_load((REPO / rules.RULES_PATH).read_text())
    records = sum(1 for g in document["groups"] for r in g["rules"] if "record" in r)
    alerts = sum(1 for g in document["groups"] for r in g["rules"] if "alert" in r)
    print(f"rules: {records} recording, {alerts} alerting, {len(document['groups'])} groups")
    print()
    print(f"{'group':38} {'rules':>5} {'median last_duration':>21} {'max':>9}")
    total = 0.0
    hourly_series: dict[str, int] = {}
    for group in sorted(durations):
        values = durations[group]
        median = statistics.median(values)
        if group.endswith("-hourly"):
            # Runs once an hour, maybe not during the measurement: time its expressions
            # as queries, and count a sixtieth of that per minute.
            hourly = next(g for g in document["groups"] if g["name"] == group)["rules"]
            start = time.perf_counter()
            results = [a.query(rule["expr"]) for rule in hourly]
            seconds = time.perf_counter() - start
            for result in results:
                for row in result:
                    instance = row["metric"].get("instance", "")
                    hourly_series[instance] = hourly_series.get(instance, 0) + 1
            print(f"{group:38} {len(hourly):5} {seconds * 1e3:18.1f} ms  once an hour (queries)")
            total += seconds / 60
            continue
        total += median
        count = rules_per_group.get(group, 0)
        print(f"{group:38} {count:5} {median * 1e3:18.1f} ms {max(values) * 1e3:6.1f} ms")
    print(f"{'all groups, per evaluation (1m)':38} {'':5} {total * 1e3:18.1f} ms")
    # Series of the per-minute groups, plus those the hourly group writes (stale
    # between its runs, so counted from its queries above).
    per_node = [
        int(r["value"][1]) + hourly_series.get(r["metric"]["instance"], 0)
        for r in a.query('count by (instance) ({__name__=~"instance_.+:.+"})')
    ]
    firing = a.query('count by (alertname) (ALERTS{alertstate="firing"})')
    print()
    print(
        f"recording-rule series per node: median {statistics.median(per_node):.0f}, "
        f"max {max(per_node)} over {len(per_node)} nodes"
    )
    print(
        "firing alerts: "
        + ", ".join(f"{r['metric']['alertname']} x{r['value'][1]}" for r in firing)
    )
    print(
        f"Prometheus CPU over {elapsed:.0f} s: with the pack {cpu_a:.1f} s, without "
        f"{cpu_b:.1f} s (baseline, same data and scrapes): ratio {cpu_a / cpu_b:.2f}"
    )
    print(f"rule evaluation, all groups: {total / STEP:.2%} of the 1m evaluation interval")


if __name__ == "__main__":
    raise SystemExit(main())
