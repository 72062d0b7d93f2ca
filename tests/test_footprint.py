"""What the probe processes load: each is a Python interpreter of its own, so every module
it imports costs RSS once per probe (benchmarks/compare_node_exporter.py --modes idle)."""

from __future__ import annotations

import subprocess
import sys


def test_probe_processes_do_not_import_prometheus_client() -> None:
    code = (
        "import sys, nodeslo.probes.storage, nodeslo.probes.wakeup\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('prometheus_client', 'yaml')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
