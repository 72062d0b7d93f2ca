"""The exporter on real VM captures (no sensors, no NVMe): every collector reports
absence cleanly, none fails, and the scrape is valid exposition format."""

from __future__ import annotations

import subprocess
from pathlib import Path

from nodeslo.collectors import COLLECTORS
from support import daemon as d
from support.exposition import samples


def test_every_collector_succeeds_on_real_captures(
    real_captures: dict[str, Path], promtool: str
) -> None:
    for name, root in real_captures.items():
        flags = [f"--collector.{c}" for c in COLLECTORS]
        with d.running(root, *flags) as daemon:
            text = daemon.scrape()
        found = samples(text)
        status = {
            dict(labels)["collector"]: v
            for (metric, labels), v in found.items()
            if metric == "nodeslo_collector_success"
        }
        assert set(status) == set(COLLECTORS), name
        failed = sorted(c for c, v in status.items() if v != 1)
        assert not failed, f"{name}: collectors failed: {failed}\n" + "\n".join(daemon.log)
        result = subprocess.run(
            [promtool, "check", "metrics"],
            input=text,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"
        # diskstats is on every real host: the VM's virtio disk is there, its loop devices not.
        devices = {dict(ls).get("device") for m, ls in found if m.startswith("nodeslo_disk_")}
        assert devices and not any(dev.startswith("loop") for dev in devices if dev), name
