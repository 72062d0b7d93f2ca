"""The node_exporter comparison harness runs end to end (tiny counts: a smoke run, not a
measurement; the figures are in benchmarks/RESULTS.md)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import missing

REPO = Path(__file__).resolve().parents[1]
NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"


def test_compare_node_exporter_harness_runs_every_mode() -> None:
    if not os.access(NODE_EXPORTER, os.X_OK):
        missing("prometheus-node-exporter is not installed")
    argv = [
        sys.executable,
        str(REPO / "benchmarks/compare_node_exporter.py"),
        "--rounds=1",
        "--scrapes=2",
        "--cpus=8",
        "--scaling-cpus=8",
        "--idle-seconds=1",
        "--idle-interval=0.5",
    ]
    run = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    # Both exporters did their full work on the tree (the harness completes it for
    # node_exporter), so the comparison is between working collectors.
    assert "  nodeslo collectors failed: none" in out
    assert "  node_exporter collectors failed: none" in out
    assert re.search(r"ratio nodeslo : node_exporter  p50 \d+\.\d\dx", out), out
    series = {
        m.group(1): int(m.group(2)) for m in re.finditer(r"  (\S+) +p50 .* series +(\d+)", out)
    }
    assert series["nodeslo"] > 0 and series["node_exporter"] > 0, out
    assert "nodeslo all" in out and "8 CPUs" in out
    assert re.search(r"8 CPUs: daemon CPU +\d+\.\d\d % of one core", out), out


def test_unknown_mode_is_refused() -> None:
    argv = [sys.executable, str(REPO / "benchmarks/compare_node_exporter.py"), "--modes=bogus"]
    run = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert run.returncode == 2
    assert "unknown modes: bogus" in run.stderr


def test_sizes_mode_runs_a_tree_and_this_host_with_a_before_version() -> None:
    if not os.access(NODE_EXPORTER, os.X_OK):
        missing("prometheus-node-exporter is not installed")
    argv = [
        sys.executable,
        str(REPO / "benchmarks/compare_node_exporter.py"),
        "--modes=sizes",
        "--sizes=2,host",
        f"--before={REPO}",  # this checkout again: the harness path, not a measurement
        "--rounds=1",
        "--scrapes=2",
    ]
    run = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=180, cwd=REPO)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    tree = out.split("-- 2 CPUs", 1)[1].split("-- this host", 1)[0]
    for name in ("nodeslo", "before", "node_exporter"):
        assert f"  {name} collectors failed: none" in tree, out
    assert re.search(r"\| 2 CPUs \| .* \| nodeslo \d+\.\d\dx, \d+\.\d\dx; before ", out), out
    assert re.search(r"\| this host \| ", out), out
