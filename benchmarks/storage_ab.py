"""The storage probe's own timings, this checkout against another version, interleaved.

    .venv/bin/python benchmarks/storage_ab.py --baseline-src /tmp/nodeslo-main/exporter \\
        [--rounds 10] [--samples 200] [--dir /var/tmp]

Each round runs both versions' sampler (a Target and its two Lanes, as
`probe_accuracy.py storage` drives them: each operation alone, 5 ms apart) for --samples
samples, in a fresh process with PYTHONPATH set to that version, alternating which goes
first, on the same probe file. Prints P50/P99 per operation and version and the ratio
this / baseline: a change to the code around the timed system call shows here, without
ioping's own run-to-run noise in the comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import REPO, machine, percentile

CHILD = r"""
import json, random, sys, time
from nodeslo.probes.histogram import latency_bounds
from nodeslo.probes.storage import OPS, Lane, Schedule, Target
directory, samples = sys.argv[1], int(sys.argv[2])
target = Target(directory, 64 << 20)
schedule = Schedule(time.monotonic_ns(), 100.0, OPS, random.Random())
lanes = {op: Lane(target, op, schedule, bounds=latency_bounds(), overdue_seconds=60.0)
         for op in OPS}
for lane in lanes.values():
    lane.run_once()
    lane.drain()
out = {op: [] for op in OPS}
for _ in range(samples):
    for op in OPS:
        lanes[op].run_once()
        out[op].append(lanes[op].drain().histogram.sum_ns)
        time.sleep(0.005)
print(json.dumps(out))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline-src", type=Path, required=True, help="an exporter/ tree")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--dir", default="/var/tmp")
    args = parser.parse_args()
    sources = {"baseline": args.baseline_src, "this": REPO / "exporter"}
    got: dict[str, dict[str, list[float]]] = {v: {"write_sync": [], "read": []} for v in sources}
    directory = tempfile.mkdtemp(prefix="nodeslo-storage-ab-", dir=args.dir)
    print(f"# {machine()}")
    try:
        for i in range(args.rounds):
            order = ("baseline", "this") if i % 2 == 0 else ("this", "baseline")
            for version in order:
                env = {**os.environ, "PYTHONPATH": str(sources[version])}
                out = subprocess.run(
                    [sys.executable, "-c", CHILD, directory, str(args.samples)],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                for op, values in json.loads(out).items():
                    got[version][op] += values
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    for op in ("write_sync", "read"):
        row = []
        for q in (0.5, 0.99):
            base = percentile(got["baseline"][op], q) / 1e3
            this = percentile(got["this"][op], q) / 1e3
            row.append(f"P{q * 100:g} {base:.1f} -> {this:.1f} us (x{this / base:.2f})")
        print(f"{op:<10} " + "  ".join(row))
    print(f"# load after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
