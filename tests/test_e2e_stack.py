"""The end-to-end harness itself: a real Prometheus (or vmagent → victoria-metrics →
vmalert) scrapes the daemon, evaluates a rule, and Alertmanager delivers the page to the
test's webhook receiver."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import daemon as d
from support import stack as s

pytestmark = pytest.mark.e2e


def test_a_rule_on_scraped_data_reaches_the_pager(
    engine: str, seed_tree: Path, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "groups:\n- name: smoke\n  rules:\n"
        "  - alert: SmokeDiskSeen\n"
        '    expr: nodeslo_disk_reads_completed_total{device="nvme0n1"} > 0\n'
        "    labels: {severity: critical}\n"
        "  - alert: SmokeTicket\n"
        "    expr: nodeslo_procs_blocked > 0\n"
        "    labels: {severity: warning}\n"
    )
    with (
        d.running(seed_tree) as daemon,
        s.running(tmp_path, [f"127.0.0.1:{daemon.port}"], [str(rules)], engine=engine) as stack,
    ):
        stack.wait_scraped()
        page = stack.webhook.wait_for(60, alertname="SmokeDiskSeen")
        ticket = stack.webhook.wait_for(60, alertname="SmokeTicket")
    assert page.receiver == "pager"
    assert ticket.receiver == "ticket"
    assert page.labels["cluster"] == "e2e"
    assert page.labels["instance"] == f"127.0.0.1:{daemon.port}"
