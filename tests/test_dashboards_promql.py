"""Every PromQL expression of the generated dashboards, run by a real Prometheus.

A Prometheus (Debian package) scrapes two `nodeslo serve` every second: one on the
seed-spec fixture with both probes running, one on a degraded host (the tuned seed
spec with a degraded and resyncing RAID, a degraded ZFS pool, an uncorrectable ECC
error, a failing NVMe drive, thermal throttling, tuning drift, mixed microcode, and a
BMC recording with a failed PSU, a stopped fan and hot inlet air). The
generated recording and alerting rules are loaded and evaluated every second, time
compressed: `for:` through the profile's `alerting.for_scale` (the knob for such
tests) so alerts fire within the test, and the hourly group (the period's ratio) every
second too. The fixture trees' counters are rate x uptime; a clock thread advances
uptime at SPEED x wall time and rewrites the trees, so rates and increases have data
within seconds.

Grafana variables are substituted as Grafana would ($job, $instance escaped as for a
multi-value variable, $__rate_interval for a 1 s scrape interval). Each query must
parse and return at least one finite value for the healthy server; the one that needs
an unhealthy host runs against the degraded one instead (UNHEALTHY_ONLY); those that
compare with days ago must parse here and are evaluated by `promtool test rules` over
synthetic history, with the generated rules, instead (LONG_HISTORY). Panels that show
a fault must reach their red threshold step on the degraded host (TURNS_RED).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import missing
from fixtures import cpuidle, topology
from fixtures.make_fixtures import AREAS, build, variant
from fixtures.spec import ServerSpec
from fixtures.tree import Tree
from nodeslo.pack import dashboards, rules
from nodeslo.profile import load_profile
from support import daemon as d
from support import grafana as g
from support import stack as s

pytestmark = pytest.mark.e2e

SPEED = 10.0  # fixture seconds per wall-clock second
SCRAPE = "1s"
# Grafana: max(4 x the data source's scrape interval, $__interval + scrape interval).
RATE_INTERVAL = "10s"
SETTLE_SECONDS = 12.0  # a few rate windows of history before the first check
DEADLINE_SECONDS = 90.0  # then retry what is still empty until this much has passed

DEGRADED_FAULTS = (
    "raid-degraded",
    "raid-resyncing",
    "zfs-degraded",
    "ecc-ue",
    "nvme-failing",
    "thermal-throttling",
    "tuning-drift",
    "microcode-mixed",
    "bmc-faults",
    "pcie-degraded",
    "nic-degraded",
    "dimm-missing",
)

# (dashboard uid, panel title, refId) -> why a healthy host shows nothing: these run
# against the degraded host, where they must return data.
UNHEALTHY_ONLY = {
    ("nodeslo-node", "md resync / recovery progress", "A"): "no series while no array syncs",
    ("nodeslo-node", "Sensors not ok", "A"): "no BMC sensor above ok",
    ("nodeslo-fleet", "BMC: power supplies, fans, inlet air", "B"): "no fan at its LC",
    ("nodeslo-fleet", "BMC: power supplies, fans, inlet air", "D"): "no critical sensor",
    ("nodeslo-fleet", "Hosts that differ from the profile's inventory", "A"): "the seed spec "
    "conforms",
}
# Queries that compare with days ago, which a test cannot wait for: they must parse
# here (an empty result is expected) and are evaluated over synthetic history by
# test_long_history_queries.
LONG_HISTORY = {
    ("nodeslo-fleet", "NVMe projected wear-out (soonest first)", "D"): "7d of hourly wear",
    ("nodeslo-fleet", "NVMe projected wear-out (soonest first)", "E"): "7d of hourly wear",
    ("nodeslo-node", "NVMe controllers", "F"): "WAF: written bytes now minus 1d ago",
    ("nodeslo-node", "NVMe write amplification over 1d", "A"): "WAF: bytes now minus 1d ago",
}
# Panels that show one fault each: on the degraded host some value reaches the
# panel's highest threshold step (the red one); on the healthy host none does, unless
# the seed spec has that fault itself (value: why).
TURNS_RED: dict[tuple[str, str], str | None] = {
    ("nodeslo-node", "md arrays: members missing"): None,
    ("nodeslo-node", "md arrays: failed members"): None,
    ("nodeslo-node", "ZFS pools"): None,
    ("nodeslo-node", "Uncorrectable ECC errors per DIMM since boot"): None,
    ("nodeslo-node", "NVMe critical warnings"): "the seed spec's nvme11 and nvme12 warn",
    ("nodeslo-node", "cpu-unthrottled: share of time lost (error budget 0.1%)"): None,
    ("nodeslo-node", "Thermal throttle events over the last 10m"): None,
}


@dataclass
class Live:
    stack: s.Stack
    healthy: str  # instance label values
    degraded: str
    started: float

    def values(self, instance: str) -> dict[str, str]:
        return {
            "job": "nodeslo",
            # Grafana escapes a multi-value variable's regex characters for a PromQL
            # string literal: 127.0.0.1 -> 127\\.0\\.0\\.1 in the query text.
            "instance": re.escape(instance).replace("\\", "\\\\"),
            "datasource": "prometheus",
            "__rate_interval": RATE_INTERVAL,
        }

    def query(self, expr: str) -> tuple[str | None, list[dict[str, Any]]]:
        """(error or None, result): a query Prometheus refuses is an error, not a raise."""
        url = f"{self.stack.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return json.loads(exc.read()).get("error", str(exc)), []
        if body["status"] != "success":
            return body.get("error", "failed"), []
        return None, body["data"]["result"]


def _finite(result: list[dict[str, Any]]) -> list[float]:
    out = []
    for sample in result:
        value = float(sample["value"][1])
        if math.isfinite(value):
            out.append(value)
    return out


@pytest.fixture(scope="module")
def generated() -> list[dict[str, Any]]:
    return [json.loads(text) for _, text in dashboards.dashboard_files(load_profile())]


class Clock:
    """Advances fixture trees: uptime = base + SPEED x elapsed, rewritten every second."""

    def __init__(self, trees: list[tuple[Path, ServerSpec, tuple[Callable[..., None], ...]]]):
        self.trees = trees
        self.stop = threading.Event()
        self.start = time.monotonic()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.errors: list[BaseException] = []

    def run(self) -> None:
        tick = 0
        while not self.stop.wait(1.0):
            elapsed = time.monotonic() - self.start
            try:
                for root, spec, areas in self.trees:
                    now = replace(spec, uptime_seconds=spec.uptime_seconds + SPEED * elapsed)
                    tree = Tree(root)
                    for area in areas:
                        # cpuidle rewrites thousands of files: every third tick is plenty.
                        if area is cpuidle.write and tick % 3:
                            continue
                        area(tree, now)
            except BaseException as exc:  # the test reports it; the thread must not die silently
                self.errors.append(exc)
                return
            tick += 1


@contextlib.contextmanager
def _clock(
    trees: list[tuple[Path, ServerSpec, tuple[Callable[..., None], ...]]],
) -> Iterator[Clock]:
    clock = Clock(trees)
    clock.thread.start()
    try:
        yield clock
    finally:
        clock.stop.set()
        clock.thread.join(timeout=30)


def _rule_file(tmp: Path) -> Path:
    """The generated rules, time compressed: every `for:` through alerting.for_scale,
    and the hourly group (the period's ratio, the wear history) every scrape."""
    profile_file = tmp / "profile.yaml"
    profile_file.write_text(
        yaml.safe_dump(
            {
                "extends": "process-management",
                "profile": "dashboards-e2e",
                "alerting": {"for_scale": 0.001},
            }
        )
    )
    profile = load_profile(str(profile_file))
    groups = rules.rule_groups(profile)
    for group in groups:
        if "interval" in group:
            group["interval"] = SCRAPE
    out = tmp / "nodeslo.rules.yaml"
    out.write_text(rules.render(profile, groups))
    return out


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    if not s.tool("prometheus") or not s.tool("prometheus-alertmanager", "alertmanager"):
        missing("prometheus / prometheus-alertmanager are not installed (Debian packages)")
    work = tmp_path_factory.mktemp("dashboards-e2e")
    healthy_spec = variant("seed-spec")
    degraded_spec = variant("seed-spec-tuned").with_faults(*DEGRADED_FAULTS, name="degraded")
    healthy_root, degraded_root = work / "healthy", work / "degraded"
    build(healthy_root, healthy_spec)
    build(degraded_root, degraded_spec)
    probe_dir = work / "probe"
    probe_dir.mkdir()
    advancing = tuple(a for a in AREAS if a is not topology.write)
    nvme = ("--collector.nvme.poll-interval=1s",)
    with (
        _clock(
            [
                (healthy_root, healthy_spec, advancing),
                (
                    degraded_root,
                    degraded_spec,
                    tuple(a for a in advancing if a is not cpuidle.write),
                ),
            ]
        ) as clock,
        d.running(
            healthy_root,
            f"--collector.nvme.replay-dir={healthy_root}/nvme-replay",
            f"--collector.bmc.replay={healthy_root}/bmc-replay.json",
            *nvme,
            "--probe.storage",
            f"--probe.storage.target={probe_dir}",
            "--probe.storage.rate=100",
            "--probe.wakeup",
            "--probe.wakeup.engine=python",
        ) as healthy,
        d.running(
            degraded_root,
            f"--collector.nvme.replay-dir={degraded_root}/nvme-replay",
            f"--collector.bmc.replay={degraded_root}/bmc-replay.json",
            *nvme,
        ) as degraded,
        s.running(
            work,
            [f"127.0.0.1:{healthy.port}", f"127.0.0.1:{degraded.port}"],
            [str(_rule_file(work))],
            interval=SCRAPE,
        ) as stack,
    ):
        stack.wait_scraped()
        started = time.monotonic()
        time.sleep(SETTLE_SECONDS)
        yield Live(stack, f"127.0.0.1:{healthy.port}", f"127.0.0.1:{degraded.port}", started)
        assert not clock.errors, f"the fixture clock failed: {clock.errors[0]!r}"


def _check(live: Live, q: g.PanelQuery, instance: str) -> str | None:
    """None when the query parses and returns a finite value, else what went wrong."""
    expr = g.substitute(q.expr, live.values(instance))
    error, result = live.query(expr)
    if error is not None:
        return f"Prometheus refused it: {error}\n{expr}"
    if not _finite(result):
        return f"no finite value ({len(result)} series)\n{expr}"
    return None


def _retry(live: Live, checks: dict[Any, Callable[[], str | None]]) -> dict[Any, str]:
    """Run the checks until all pass or the deadline passes; what still fails, and why."""
    failures: dict[Any, str] = {}
    pending = dict(checks)
    while True:
        failures = {}
        for key, check in pending.items():
            problem = check()
            if problem is not None:
                failures[key] = problem
        if not failures or time.monotonic() - live.started > DEADLINE_SECONDS:
            return failures
        # Parse errors never heal: report them at once.
        if all("refused" in p for p in failures.values()):
            return failures
        pending = {k: checks[k] for k in failures}
        time.sleep(2)


def test_every_panel_query_returns_data(live: Live, generated: list[dict[str, Any]]) -> None:
    checks: dict[Any, Callable[[], str | None]] = {}
    seen = set()
    for doc in generated:
        for q in g.queries(doc):
            seen.add(q.key)
            instance = live.degraded if q.key in UNHEALTHY_ONLY else live.healthy
            if q.key in LONG_HISTORY:
                checks[q.unique] = lambda q=q: _parses(live, q)
            else:
                checks[q.unique] = lambda q=q, i=instance: _check(live, q, i)
    assert set(UNHEALTHY_ONLY) | set(LONG_HISTORY) <= seen, "an exception names no query"
    assert len(checks) == sum(1 for doc in generated for _ in g.queries(doc))
    failures = _retry(live, checks)
    assert not failures, "\n\n".join(f"{k}: {v}" for k, v in sorted(failures.items()))


def _parses(live: Live, q: g.PanelQuery) -> str | None:
    error, _ = live.query(g.substitute(q.expr, live.values(live.healthy)))
    return None if error is None else f"Prometheus refused it: {error}"


def test_variables_list_both_servers(live: Live, generated: list[dict[str, Any]]) -> None:
    for doc in generated:
        for variable in doc["templating"]["list"]:
            if variable["type"] != "query":
                continue
            selector, label = g.label_values(variable["query"])
            expr = g.substitute(selector, {"job": "nodeslo"})
            error, result = live.query(expr)
            assert error is None, f"{doc['uid']} ${variable['name']}: {error}"
            found = {r["metric"].get(label) for r in result}
            assert {"nodeslo"} <= found or {live.healthy, live.degraded} <= found, (
                f"{doc['uid']} ${variable['name']} lists {found}"
            )


def test_alert_annotations_and_tables_see_firing_alerts(
    live: Live, generated: list[dict[str, Any]]
) -> None:
    """With `for:` compressed, the seed spec's own faults fire (a drive near wear-out,
    a critical warning, deep C-states): the annotation query sees them."""
    for doc in generated:
        for annotation in doc["annotations"]["list"]:
            if "expr" not in annotation:
                continue
            expr = g.substitute(annotation["expr"], live.values(live.healthy))
            failures = _retry(live, {annotation["name"]: lambda e=expr: _finite_or_why(live, e)})
            assert not failures, f"{doc['uid']} annotation {annotation['name']}: {failures}"


def _finite_or_why(live: Live, expr: str) -> str | None:
    error, result = live.query(expr)
    if error is not None:
        return f"Prometheus refused it: {error}"
    return None if _finite(result) else f"no data\n{expr}"


@pytest.mark.parametrize(("uid", "title"), list(TURNS_RED), ids=[t for _, t in TURNS_RED])
def test_fault_panels_turn_red_on_the_degraded_host(
    live: Live, generated: list[dict[str, Any]], uid: str, title: str
) -> None:
    doc = next(doc for doc in generated if doc["uid"] == uid)
    panel = next(p for p in g.panels(doc) if p["title"] == title)
    red = max(g.threshold_values(panel))
    targets = [q for q in g.queries(doc) if q.panel == title]

    def reaches() -> str | None:
        values: list[float] = []
        for q in targets:
            error, result = live.query(g.substitute(q.expr, live.values(live.degraded)))
            assert error is None, error
            values += _finite(result)
        return None if values and max(values) >= red else f"max {values and max(values)} < {red}"

    failures = _retry(live, {title: reaches})
    assert not failures, failures
    # ... and the healthy host stays below it.
    healthy = []
    for q in targets:
        _, result = live.query(g.substitute(q.expr, live.values(live.healthy)))
        healthy += _finite(result)
    if TURNS_RED[(uid, title)] is None:
        assert healthy and max(healthy) < red, f"{title}: healthy host at {healthy}"


# --- long histories: promtool evaluates them over synthetic series ---------------------

HOURS = 8 * 24
LABELS = 'job="nodeslo", instance="pm1:10131"'
DRIVE = 'instance="pm1:10131", controller="nvme0", model="M", serial="S0"'
# What each LONG_HISTORY query gives for nvme0 after 8 days: round(value / divisor)
# is compared, as (divisor, labels, expected).
LONG_HISTORY_EXPECTED = {
    # 1 % a day from 50 %: 58 % now, 42 days left, worn out on day 50.
    ("nodeslo-fleet", "NVMe projected wear-out (soonest first)", "D"): (86400, DRIVE, 42),
    ("nodeslo-fleet", "NVMe projected wear-out (soonest first)", "E"): (86400, DRIVE, 50),
    # 20 GB a day from the host, 30 GB a day to the NAND.
    ("nodeslo-node", "NVMe controllers", "F"): (0.01, DRIVE + ', firmware="F"', 150),
    ("nodeslo-node", "NVMe write amplification over 1d", "A"): (
        0.01,
        'job="nodeslo", instance="pm1:10131", controller="nvme0", model="M", serial="S0"',
        150,
    ),
}


def _series(name: str, labels: str, values: str) -> dict[str, str]:
    return {"series": f"{name}{{{LABELS}, {labels}}}", "values": values}


def test_long_history_queries(
    generated: list[dict[str, Any]], tmp_path: Path, promtool: str
) -> None:
    """The LONG_HISTORY queries over 8 days of hourly samples, with the generated rules:
    nvme0 wears 1 % a day and writes 1.5 NAND bytes per host byte; nvme1 wears
    nothing (no projection) and wrote too little to judge (no WAF)."""
    assert set(LONG_HISTORY_EXPECTED) == set(LONG_HISTORY)
    profile = load_profile()
    rule_file = tmp_path / "rules.yaml"
    groups = rules.rule_groups(profile)
    rule_file.write_text(rules.render(profile, groups))
    # The hourly recordings first, so each hour's projection sees that hour's point.
    order = sorted(
        (g["name"] for g in groups),
        key=lambda name: "interval" not in next(g for g in groups if g["name"] == name),
    )
    queries = {q.key: q for doc in generated for q in g.queries(doc) if q.key in LONG_HISTORY}
    values = {"job": "nodeslo", "instance": ".+", "__rate_interval": RATE_INTERVAL}
    gb = 10**9
    test = {
        "rule_files": [str(rule_file)],
        "evaluation_interval": "1h",
        "group_eval_order": order,
        "tests": [
            {
                "interval": "1h",
                "input_series": [
                    _series(
                        "nodeslo_nvme_percentage_used_ratio",
                        'controller="nvme0", model="M", serial="S0"',
                        " ".join(f"{0.5 + h / 2400:.6f}" for h in range(HOURS + 1)),
                    ),
                    _series(
                        "nodeslo_nvme_percentage_used_ratio",
                        'controller="nvme1", model="M", serial="S1"',
                        f"0.3x{HOURS}",
                    ),
                    _series(
                        "nodeslo_nvme_data_written_bytes_total",
                        'controller="nvme0", model="M", serial="S0"',
                        f"0+{20 * gb // 24}x{HOURS}",
                    ),
                    _series(
                        "nodeslo_nvme_media_written_bytes_total",
                        'controller="nvme0", model="M", serial="S0"',
                        f"0+{30 * gb // 24}x{HOURS}",
                    ),
                    _series(
                        "nodeslo_nvme_data_written_bytes_total",
                        'controller="nvme1", model="M", serial="S1"',
                        f"0+1000x{HOURS}",
                    ),
                    _series(
                        "nodeslo_nvme_media_written_bytes_total",
                        'controller="nvme1", model="M", serial="S1"',
                        f"0+1000x{HOURS}",
                    ),
                    *(
                        _series(
                            "nodeslo_nvme_info",
                            f'controller="nvme{i}", model="M", serial="S{i}", firmware="F"',
                            f"1x{HOURS}",
                        )
                        for i in (0, 1)
                    ),
                ],
                "promql_expr_test": [
                    {
                        "expr": f"round(({g.substitute(queries[key].expr, values)}) / {scale})",
                        "eval_time": f"{HOURS}h",
                        "exp_samples": [{"labels": f"{{{labels}}}", "value": expected}],
                    }
                    for key, (scale, labels, expected) in LONG_HISTORY_EXPECTED.items()
                ],
            }
        ],
    }
    path = tmp_path / "long-history.yaml"
    path.write_text(yaml.safe_dump(test, sort_keys=False, width=10_000))
    result = subprocess.run(
        [promtool, "test", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
