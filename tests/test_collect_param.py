"""The collect[] URL parameter, through HTTP on the real daemon (node_exporter's rules):
only the named collectors run; an unknown, empty or flag-disabled name is a 400."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import daemon as d
from support.exposition import names, samples

SELF_METRICS = {"nodeslo_build_info", "process_cpu_seconds_total"}


@pytest.fixture(scope="module")
def daemon(seed_tree: Path) -> Iterator[d.Daemon]:
    # thermal disabled by flag: a URL must not turn it back on.
    with d.running(seed_tree, "--no-collector.thermal") as running:
        yield running


def collectors_run(body: str) -> set[str]:
    return {dict(ls)["collector"] for n, ls in samples(body) if n == "nodeslo_collector_success"}


def test_without_collect_every_enabled_collector_runs(daemon: d.Daemon) -> None:
    status, body = daemon.get("/metrics")
    assert status == 200
    ran = collectors_run(body)
    assert {"diskstats", "cpufreq", "scheduler"} <= ran and "thermal" not in ran


def test_other_parameters_are_ignored(daemon: d.Daemon) -> None:
    status, body = daemon.get("/metrics?foo=bar&collect=diskstats")
    assert status == 200 and collectors_run(body) == collectors_run(daemon.scrape())


def test_collect_runs_only_the_named_collectors(daemon: d.Daemon) -> None:
    status, body = daemon.get("/metrics?collect[]=diskstats&collect[]=cpufreq")
    assert status == 200, body
    assert collectors_run(body) == {"diskstats", "cpufreq"}
    metric_names = names(body)
    assert metric_names >= SELF_METRICS  # the exporter's own metrics stay, as node_exporter's
    assert any(n.startswith("nodeslo_disk_") for n in metric_names)
    assert not any(n.startswith(("nodeslo_cpuidle_", "nodeslo_edac_")) for n in metric_names)


def test_a_repeated_and_an_encoded_name_count_once(daemon: d.Daemon) -> None:
    status, body = daemon.get("/metrics?collect%5B%5D=diskstats&collect[]=diskstats")
    assert status == 200, body
    assert collectors_run(body) == {"diskstats"}
    assert len(re.findall(r'nodeslo_collector_success\{collector="diskstats"\}', body)) == 1


@pytest.mark.parametrize(
    ("query", "answer"),
    [
        # an unknown name: 400 naming it and the collectors there are
        ("collect[]=nope", "missing collector: nope (enabled: "),
        # an empty value (collect[]=): no such collector either
        ("collect[]=", "missing collector:  (enabled: "),
        # one good, one bad: the whole scrape is refused, not half served
        ("collect[]=diskstats&collect[]=nope", "missing collector: nope"),
        # disabled by flag: a URL cannot enable it
        ("collect[]=thermal", "disabled collector: thermal"),
        # a case that is not the collector's name
        ("collect[]=DISKSTATS", "missing collector: DISKSTATS"),
    ],
)
def test_a_bad_collect_value_is_a_400_with_a_message(
    daemon: d.Daemon, query: str, answer: str
) -> None:
    status, body = daemon.get(f"/metrics?{query}")
    assert status == 400
    assert body.startswith("Couldn't create filtered metrics handler: ")
    assert answer in body


def test_a_bad_value_leaves_the_daemon_serving(daemon: d.Daemon) -> None:
    assert daemon.get("/metrics?collect[]=nope")[0] == 400
    assert "diskstats" in collectors_run(daemon.scrape())
    assert daemon.proc.poll() is None
