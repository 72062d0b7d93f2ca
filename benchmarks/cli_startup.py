"""Start-up time of the `nodeslo` command: `--version` and `check --help`.

Every `nodeslo` invocation (serve included) builds the whole argument parser, so what
the CLI imports at the top is paid on every start. This runs the commands of this
checkout and, with `--baseline-src DIR` (the `exporter/` directory of another checkout,
e.g. `git archive main exporter | tar -x -C /tmp/base`), the same commands from that
source in the same interpreter, alternating A B A B so machine noise hits both alike.

    .venv/bin/python benchmarks/cli_startup.py --baseline-src /tmp/base/exporter

Prints the median wall time per command and the ratio this/baseline.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMANDS = {"--version": ["--version"], "check --help": ["check", "--help"]}


def run_once(src: Path, argv: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(src)}
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "nodeslo", *argv],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-src", type=Path, default=None, metavar="DIR")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    sources = {"this": REPO / "exporter"}
    if args.baseline_src is not None:
        sources["baseline"] = args.baseline_src
    for label, argv in COMMANDS.items():
        times: dict[str, list[float]] = {name: [] for name in sources}
        for _ in range(args.rounds):
            for name, src in sources.items():
                times[name].append(run_once(src, argv))
        medians = {name: statistics.median(t) for name, t in times.items()}
        line = f"nodeslo {label:14} this {medians['this'] * 1000:6.1f} ms"
        if "baseline" in medians:
            ratio = medians["this"] / medians["baseline"]
            line += f"  baseline {medians['baseline'] * 1000:6.1f} ms  ratio {ratio:.2f}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
