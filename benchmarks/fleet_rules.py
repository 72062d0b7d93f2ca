"""The alerting pack at fleet scale: per rule group cost in a real Prometheus, N hosts.

    .venv/bin/python benchmarks/fleet_rules.py --hosts 100,300,1000 \\
        [--rules before=/work/main/alerts/nodeslo.rules.yaml] [--rules after=alerts/...]

For each N (Debian's prometheus 2.42, loopback, temp data dirs; `_fleet.py` builds it):

1. 1 real exporter + N synthetic hosts at the seed-spec shape (16 NVMe, 24 DIMMs, 256 CPUs
   aggregated as the exporter does, 2 probe targets), every family the rule files read;
2. history through remote write, once, into a data directory each server gets a copy of;
3. a baseline Prometheus without rules scrapes the 1 + N targets every minute for the
   whole run; beside it, one rule file at a time (`--rules NAME=PATH`, repeatable; the
   generated file by default) on its own Prometheus with the same data and scrapes;
4. after the warm-up, per group: the median last evaluation duration, its share of the
   group's interval, samples read (every rule of the group run once as a query with
   `stats=all`: totalQueryableSamples), samples written (last_evaluation_samples) and
   iterations missed; Prometheus CPU and RSS against the baseline over the same minutes.
   Groups with an interval longer than the measurement (1h) may not run in it: their
   duration is that of their rules run as queries, once.
5. per group, a least-squares line through (N, duration) and its value at 10,000 hosts.
6. with `--quiet-passes K` (default 3): once every run is over and nothing else runs (no
   scrapes, no rule evaluation, the synthetic hosts stopped), a Prometheus on the last
   variant's data (its own recordings included) runs every variant's rules as instant
   queries at the end of that run, one at a time: an untimed pass, then K passes with
   the variants taking turns group by group; per group the sum of its rules' median
   engine time (execTotalTime). That is what a group costs a Prometheus
   with a core to spare, the figure to hold against the 10 % budget: the durations of
   step 4 also hold every wait for a CPU while ~20 groups, the scrapes, the baseline and
   the synthetic hosts share two cores.

History is as short as the per-evaluation cost allows: a raw family goes back as far as
the longest range or offset a rule reads it over (1d, 6h, 1h, 15m, 10m) and no further;
families read only at the current instant get none (their cost does not depend on what
lies behind them); one sample per minute (scrape interval 60 s; a 15 s scrape reads 4x
the samples in every range). Recorded series read over ranges are written as their
group would have (the SLO 5m rates 3d at one per minute, the hourly ones 30d or 7d at
one per hour). Figures are printed; nothing is asserted. CPU figures on a shared
machine are noisy: the baseline runs at the same time, so the ratio is the figure.
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

import _fleet as fleet
from _common import REPO, fixture_tree, machine
from nodeslo.pack import rules
from nodeslo.profile import load_profile
from support import daemon as d  # on sys.path through _common
from support.stack import free_port, tool

TARGET_HOSTS = 10_000
BUDGET = 0.10  # of a group's interval


@dataclass
class GroupResult:
    interval: float
    rules: int
    durations: list[float] = field(default_factory=list)
    samples_read: int = 0
    samples_written: float = 0.0
    missed: float = 0.0
    queried: bool = False  # duration from its rules run as queries (did not run)

    @property
    def duration(self) -> float:
        return statistics.median(self.durations) if self.durations else float("nan")


@dataclass
class Run:
    name: str
    hosts: int
    groups: dict[str, GroupResult]
    cpu: float
    cpu_baseline: float
    rss: float
    rss_baseline: float
    seconds: float
    series_per_host: dict[str, float]
    firing: list[str]
    costliest: list[tuple[tuple[str, str], float]]


def rule_document(path: Path) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(path.read_text())["groups"]
    return groups


def interval_of(group: dict[str, Any]) -> float:
    text = str(group.get("interval", "1m"))
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return float(text[:-1]) * units[text[-1]]


def measure(
    name: str,
    rule_file: Path,
    a: fleet.Server,
    b: fleet.Server,
    *,
    hosts: int,
    warmup: float,
    minutes: float,
    top: int,
) -> Run:
    document = rule_document(rule_file)
    time.sleep(warmup * 60)
    before = fleet.groups(a)
    cpu_a, cpu_b = cpu(a), cpu(b)
    start = time.monotonic()
    results = {g["name"]: GroupResult(interval_of(g), len(g["rules"])) for g in document}
    while time.monotonic() - start < minutes * 60:
        time.sleep(fleet.STEP / 2)
        for group, state in fleet.groups(a).items():
            # Only evaluations that happened since the warm-up ended.
            if state.evaluations > before[group].evaluations and group in results:
                results[group].durations.append(state.last_duration)
                results[group].samples_written = state.last_samples
    seconds = time.monotonic() - start
    cpu_a, cpu_b = cpu(a) - cpu_a, cpu(b) - cpu_b
    costliest = sorted(fleet.rule_times(a).items(), key=lambda kv: -kv[1])[:top]
    after = fleet.groups(a)
    for group, result in results.items():
        result.missed = after[group].missed - before[group].missed
    metrics_a, metrics_b = a.metrics(), b.metrics()
    rss = metrics_a[("process_resident_memory_bytes", ())]
    rss_b = metrics_b[("process_resident_memory_bytes", ())]
    # Samples read, and the duration of groups that did not run: their rules as queries.
    per_host: dict[str, float] = {}
    for group in document:
        result = results[group["name"]]
        elapsed = 0.0
        for rule in group["rules"]:
            t0 = time.perf_counter()
            rows, samples = a.query_stats(rule["expr"])
            elapsed += time.perf_counter() - t0
            result.samples_read += samples
            if "record" in rule:
                per_host[rule["record"]] = per_host.get(rule["record"], 0) + len(rows) / (hosts + 1)
        if not result.durations:
            result.durations.append(elapsed)
            result.queried = True
    firing = [
        f"{r['metric']['alertname']} x{r['value'][1]}"
        for r in a.query('count by (alertname) (ALERTS{alertstate="firing"})')
    ]
    return Run(name, hosts, results, cpu_a, cpu_b, rss, rss_b, seconds, per_host, firing, costliest)


def cpu(server: fleet.Server) -> float:
    return server.metrics()[("process_cpu_seconds_total", ())]


def run_hosts(
    count: int, variants: dict[str, Path], base_exposition: str, work: Path, args: Any
) -> list[Run]:
    profile = load_profile()
    read = fleet.names_read(*variants.values())
    base = [*fleet.template(base_exposition, read), *fleet.probes(read)]
    end = time.time() - 2 * fleet.MINUTE
    end -= end % fleet.STEP
    origin = end - 30 * fleet.DAY
    names = [f"h{i:04d}:10131" for i in range(count)]
    hosts = {n: fleet.Host(n, fleet.host_series(base, i, origin)) for i, n in enumerate(names)}
    print(f"\n=== {count} hosts: {len(base)} series each (the families the rules read)")
    seed = fleet.Server("seed", free_port(), work / "seed")
    empty = work / "empty.yml"
    empty.write_text(yaml.safe_dump({"global": {"scrape_interval": "1h"}}))
    seed.start(empty, "--web.enable-remote-write-receiver")
    every_recording = set().union(*(fleet.names_read(p) | _records(p) for p in variants.values()))
    history = fleet.history_series(hosts, profile, every_recording)
    t0 = time.perf_counter()
    try:
        sent = fleet.backfill(seed.url + "/api/v1/write", history, end, origin)
        written = time.perf_counter() - t0
        compaction = fleet.wait_compacted(seed)
    finally:
        seed.stop()
    print(
        f"history: {len(history):,} series, {sent:,} samples in {written:.0f} s, "
        f"compacted in {compaction:.0f} s"
    )
    hosts_server = fleet.serve_hosts(hosts, origin)
    runs = []
    servers: list[fleet.Server] = []
    try:
        shutil.copytree(work / "seed", work / "baseline")
        b = fleet.Server("baseline", free_port(), work / "baseline")
        servers.append(b)
        port = hosts_server.server_port
        b.start(fleet.config(work / "b.yml", args.exporter, port, names, None))
        last = list(variants)[-1]
        for name, rule_file in variants.items():
            shutil.copytree(work / "seed", work / name)
            a = fleet.Server(name, free_port(), work / name)
            servers.append(a)
            a.start(fleet.config(work / f"{name}.yml", args.exporter, port, names, rule_file))
            run = measure(
                name,
                rule_file,
                a,
                b,
                hosts=count,
                warmup=args.warmup,
                minutes=args.minutes,
                top=args.top,
            )
            a.stop()
            if name != last or not args.quiet_passes:
                shutil.rmtree(work / name, ignore_errors=True)
            report(run)
            runs.append(run)
        at = time.time() - 30  # inside the last run: its scrapes and recordings are there
        b.stop()
        hosts_server.shutdown()
        if args.quiet_passes:
            quiet = fleet.Server("quiet", free_port(), work / last)
            servers.append(quiet)
            quiet.start(empty)
            print(f"\n--- quiet: {last}'s costliest rules as queries")
            costs = quiet_costs(quiet, variants, at, args.quiet_passes, args.top)
            report_quiet(count, costs)
    finally:
        for server in servers:
            server.stop()
        hosts_server.shutdown()
        for name in ("seed", "baseline", *variants):
            shutil.rmtree(work / name, ignore_errors=True)
    return runs


def quiet_costs(
    server: fleet.Server, variants: dict[str, Path], at: float, passes: int, top: int
) -> dict[str, dict[str, tuple[float, float]]]:
    """variant -> group -> (interval, seconds: the sum of its rules' median query time);
    prints the last variant's `top` costliest rules.

    One untimed pass first (chunks into the page cache), then `passes` timed ones; within
    a pass the variants take turns group by group, so neither gains from going second."""
    documents = {name: rule_document(path) for name, path in variants.items()}
    times: dict[tuple[str, str, int], list[float]] = {}
    order = list(dict.fromkeys(g["name"] for doc in documents.values() for g in doc))
    for timed in [False] + [True] * passes:
        for group_name in order:
            for name, doc in documents.items():
                for group in (g for g in doc if g["name"] == group_name):
                    for i, rule in enumerate(group["rules"]):
                        spent = server.query_time(rule["expr"], at)
                        if timed:
                            times.setdefault((name, group_name, i), []).append(spent)
    last = list(documents)[-1]
    groups = {g["name"]: g for g in documents[last]}
    ranked = sorted(
        (
            (statistics.median(spent), group, groups[group]["rules"][i])
            for (name, group, i), spent in times.items()
            if name == last
        ),
        key=lambda r: -r[0],
    )
    for seconds, group, rule in ranked[:top]:
        print(f"  {seconds * 1e3:8.1f} ms  {group:40} {rule.get('alert') or rule['record']}")
    return {
        name: {
            g["name"]: (
                interval_of(g),
                sum(statistics.median(times[(name, g["name"], i)]) for i in range(len(g["rules"]))),
            )
            for g in doc
        }
        for name, doc in documents.items()
    }


def report_quiet(hosts: int, costs: dict[str, dict[str, tuple[float, float]]]) -> None:
    names = list(costs)
    print(f"\n--- quiet: each group's rules as instant queries, one at a time, {hosts} hosts")
    head = "".join(f"{n:>12} {'of intvl':>8}" for n in names)
    print(f"{'group':40} {'intvl':>5}{head}" + (f" {'ratio':>7}" if len(names) > 1 else ""))
    groups = list(dict.fromkeys(g for n in names for g in costs[n]))
    totals = dict.fromkeys(names, 0.0)
    for group in groups:
        cells, values = "", []
        interval = next(costs[n][group][0] for n in names if group in costs[n])
        for n in names:
            if group in costs[n]:
                seconds = costs[n][group][1]
                totals[n] += seconds * 60 / interval
                values.append(seconds)
                flag = "*" if seconds / interval > BUDGET else " "
                cells += f"{seconds * 1e3:9.0f} ms {seconds / interval:7.2%}{flag}"
            else:
                values.append(float("nan"))
                cells += f"{'-':>12} {'':>8}"
        both = len(values) > 1 and values[0] > 0 and not math.isnan(values[-1])
        tail = f" {values[-1] / values[0]:6.2f}x" if both else ""
        print(f"{group:40} {_dur(interval):>5}{cells}{tail}")
    print(
        "all groups, seconds per minute: "
        + ", ".join(f"{n} {t:.2f} s" for n, t in totals.items())
        + f" (* above {BUDGET:.0%} of the interval)"
    )


def _records(path: Path) -> set[str]:
    return {r["record"] for g in rule_document(path) for r in g["rules"] if "record" in r}


def report(run: Run) -> None:
    print(f"\n--- {run.name}, {run.hosts} hosts")
    print(
        f"{'group':40} {'intvl':>5} {'rules':>5} {'median eval':>11} {'of intvl':>8} "
        f"{'samples read':>13} {'written':>8} {'missed':>6}"
    )
    per_minute = 0.0
    for group, r in run.groups.items():
        share = r.duration / r.interval
        per_minute += r.duration * 60 / r.interval
        mark = " (q)" if r.queried else ""
        print(
            f"{group:40} {_dur(r.interval):>5} {r.rules:5} {r.duration * 1e3:8.0f} ms "
            f"{share:8.2%} {r.samples_read:13,} {r.samples_written:8.0f} {r.missed:6.0f}{mark}"
        )
    print(f"rule evaluation per minute, all groups: {per_minute:.2f} s")
    print(
        f"Prometheus CPU over {run.seconds:.0f} s: {run.cpu:.1f} s, baseline without rules "
        f"{run.cpu_baseline:.1f} s: ratio {run.cpu / run.cpu_baseline:.2f}; RSS "
        f"{run.rss / 2**20:.0f} MiB vs {run.rss_baseline / 2**20:.0f} MiB: ratio "
        f"{run.rss / run.rss_baseline:.2f}"
    )
    total = sum(run.series_per_host.values())
    print(f"recorded series per host: {total:.1f}")
    print("firing: " + ", ".join(run.firing))
    for (group, rule), seconds in run.costliest:
        print(f"  {seconds * 1e3:8.1f} ms  {group:40} {rule}")


def _dur(seconds: float) -> str:
    return f"{seconds / 3600:g}h" if seconds >= 3600 else f"{seconds / 60:g}m"


def fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least squares y = a + b x."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    b = sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0
    return my - b * mx, b


def extrapolate(runs: list[Run]) -> None:
    by_variant: dict[str, list[Run]] = {}
    for run in runs:
        by_variant.setdefault(run.name, []).append(run)
    for name, mine in by_variant.items():
        if len({r.hosts for r in mine}) < 2:
            continue
        print(f"\n=== {name}: growth (least squares over N = {[r.hosts for r in mine]})")
        print(
            f"{'group':40} {'intvl':>5} {'ms/1000 hosts':>13} {f'at {TARGET_HOSTS:,}':>10} "
            f"{'of intvl':>8}"
        )
        total_a = total_b = 0.0
        for group in mine[0].groups:
            r0 = mine[0].groups[group]
            points = [(r.hosts, r.groups[group].duration) for r in mine]
            a, b = fit(points)
            at = a + b * TARGET_HOSTS
            total_a += a * 60 / r0.interval
            total_b += b * 60 / r0.interval
            flag = "  OVER 10%" if at / r0.interval > BUDGET else ""
            print(
                f"{group:40} {_dur(r0.interval):>5} {b * 1e6:13.0f} {at:9.2f}s "
                f"{at / r0.interval:8.1%}{flag}"
            )
        at = total_a + total_b * TARGET_HOSTS
        print(
            f"{'all groups, seconds per minute':40} {'':5} {total_b * 1e6:13.0f} {at:9.2f}s "
            f"{at / 60:8.1%} of one core"
        )
        cpu = fit([(r.hosts, (r.cpu - r.cpu_baseline) / r.seconds) for r in mine])
        rss = fit([(r.hosts, (r.rss - r.rss_baseline) / 2**20) for r in mine])
        print(
            f"CPU above the baseline at {TARGET_HOSTS:,} hosts: "
            f"{cpu[0] + cpu[1] * TARGET_HOSTS:.2f} cores; RSS above it: "
            f"{rss[0] + rss[1] * TARGET_HOSTS:,.0f} MiB"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", default="100", help="comma-separated host counts")
    parser.add_argument(
        "--rules",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help=f"a rule file to measure (repeatable; default {rules.RULES_PATH})",
    )
    parser.add_argument("--minutes", type=float, default=3.0, help="measured, per rule file")
    parser.add_argument("--warmup", type=float, default=2.0, help="minutes not measured")
    parser.add_argument("--top", type=int, default=0, help="list the N costliest rules (last run)")
    parser.add_argument(
        "--quiet-passes",
        type=int,
        default=3,
        help="passes of every rule as a query on an otherwise idle Prometheus (0: none)",
    )
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    variants = {}
    for spec in args.rules or [f"current={REPO / rules.RULES_PATH}"]:
        name, _, path = spec.partition("=")
        variants[name] = Path(path).resolve()
    print(f"machine: {machine()}")
    version = subprocess.run(
        [tool("prometheus") or "prometheus", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    print(f"prometheus: {version.stdout.splitlines()[0]}")
    print(f"command: {' '.join(sys.argv)}")
    for name, path in variants.items():
        groups = rule_document(path)
        count = sum(len(g["rules"]) for g in groups)
        print(f"rules {name}: {path} ({len(groups)} groups, {count} rules)")
    work = Path(tempfile.mkdtemp(prefix="nodeslo-fleet-rules-"))
    tree = fixture_tree("seed-spec")
    runs: list[Run] = []
    try:
        with d.running(tree, f"--collector.nvme.replay-dir={tree}/nvme-replay") as exporter:
            time.sleep(2)  # one NVMe poll
            exposition = exporter.scrape()
            args.exporter = f"{exporter.host}:{exporter.port}"
            for count in (int(n) for n in args.hosts.split(",")):
                runs += run_hosts(count, variants, exposition, work, args)
        extrapolate(runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(tree, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
