"""Golden-output tests in node_exporter's manner: the real daemon on a fixture tree.

Each case runs `nodeslo serve` on a generated tree with a fixed set of collectors,
scrapes /metrics and compares the exposition (volatile families filtered) with a
committed file under tests/golden. After an intended change, regenerate with

    pytest tests/test_golden.py --update-golden

and review the diff like any other change.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from support import daemon as d
from support.exposition import samples, stable

GOLDEN = Path(__file__).parent / "golden"

# (golden file, fixture variant, collectors)
CASES = [
    ("seed-spec-foundation", "seed-spec", ("diskstats", "scheduler")),
    ("seed-spec-memory", "seed-spec", ("edac", "numa", "resctrl")),
    ("seed-spec-redundancy", "seed-spec", ("redundancy",)),
    ("seed-spec-firmware", "seed-spec", ("firmware",)),
    ("seed-spec-tuning", "seed-spec", ("tuning",)),
    ("seed-spec-tuned-tuning", "seed-spec-tuned", ("tuning",)),
    ("tuning-drift", "tuning-drift", ("tuning",)),
    ("raid-degraded", "raid-degraded", ("redundancy",)),
    ("raid-resyncing", "raid-resyncing", ("redundancy",)),
    ("zfs-degraded", "zfs-degraded", ("redundancy",)),
    ("raid-inactive", "raid-inactive", ("redundancy",)),
    ("md-shapes", "md-shapes", ("redundancy",)),
    ("microcode-mixed", "microcode-mixed", ("firmware",)),
    ("ecc-ue", "ecc-ue", ("edac",)),
    ("ecc-absent", "ecc-absent", ("edac",)),
    ("seed-spec-cpu", "seed-spec", ("cpuidle", "cpufreq", "thermal", "power")),
    ("seed-spec-amd-cpu", "seed-spec-amd", ("cpuidle", "cpufreq", "thermal", "power")),
    ("thermal-throttling-amd", "thermal-throttling-amd", ("cpufreq", "thermal")),
    ("amd-no-cpufreq", "amd-no-cpufreq", ("cpufreq", "thermal")),
    ("seed-spec-nvme", "seed-spec", ("nvme",)),
    ("nvme-failing", "nvme-failing", ("nvme",)),
    ("seed-spec-bmc", "seed-spec", ("bmc",)),
    ("bmc-faults", "bmc-faults", ("bmc",)),
    # No recording and no BMC in the tree: only bmc_up{reason="absent"} 0.
    ("bmc-absent", "seed-spec", ("bmc",)),
    ("bmc-no-driver", "bmc-no-driver", ("bmc",)),
    ("seed-spec-links", "seed-spec", ("pcie", "network")),
    ("seed-spec-inventory", "seed-spec", ("inventory",)),
    ("pcie-degraded", "pcie-degraded", ("pcie",)),
    ("nic-degraded", "nic-degraded", ("network",)),
    ("link-down", "link-down", ("pcie", "network")),
    ("dimm-missing", "dimm-missing", ("inventory",)),
]
# Per-case flags beyond the collectors; "{tree}" is the fixture tree's path.
EXTRA_FLAGS: dict[str, tuple[str, ...]] = {
    "seed-spec-cpu": ("--collector.cpuidle.mispredictions",),
    "seed-spec-amd-cpu": ("--collector.cpuidle.mispredictions",),
    "seed-spec-nvme": ("--collector.nvme.replay-dir={tree}/nvme-replay",),
    "nvme-failing": ("--collector.nvme.replay-dir={tree}/nvme-replay",),
    "seed-spec-bmc": ("--collector.bmc.replay={tree}/bmc-replay.json",),
    "bmc-faults": ("--collector.bmc.replay={tree}/bmc-replay.json",),
}


def collector_flags(collectors: tuple[str, ...]) -> list[str]:
    return ["--collector.disable-defaults", *(f"--collector.{c}" for c in collectors)]


@pytest.mark.parametrize(("golden", "variant", "collectors"), CASES, ids=[c[0] for c in CASES])
def test_golden(
    make_tree, update_golden: bool, golden: str, variant: str, collectors: tuple[str, ...]
) -> None:
    tree = make_tree(variant)
    extra = [flag.format(tree=tree) for flag in EXTRA_FLAGS.get(golden, ())]
    with d.running(tree, *collector_flags(collectors), *extra) as daemon:
        text = daemon.scrape()
    for name in collectors:
        assert samples(text)[("nodeslo_collector_success", (("collector", name),))] == 1
    got = stable(text)
    path = GOLDEN / f"{golden}.prom"
    if update_golden:
        path.write_text(got)
    assert path.exists(), f"{path} missing: run pytest --update-golden"
    assert got == path.read_text(), f"{path} differs: review, then pytest --update-golden"


def test_scrape_passes_promtool_check_metrics(seed_tree: Path, promtool: str) -> None:
    with d.running(seed_tree) as daemon:
        text = daemon.scrape()
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stderr
