"""Accuracy of the probes against the reference tools, on this host, same conditions.

    .venv/bin/python benchmarks/probe_accuracy.py wakeup  [--interval 1ms] [--samples 10000]
                                                          [--rounds 3] [--policy other|fifo]
                                                          [--loads idle,cpu,io]
    .venv/bin/python benchmarks/probe_accuracy.py storage [--dir /var/tmp] [--samples 1000]
                                                          [--interval 10ms] [--rounds 3]

wakeup: the python engine (the probe's own loop, in its own process, timer slack 1 ns,
GC off) against cyclictest (the probe's cyclictest command line), alternating, the
same number of samples each, idle and under `stress-ng --cpu 2` and `stress-ng --hdd 1`,
both pinned to the same CPU (cyclictest 2.x pins its one thread to CPU 0 by itself).
Both are binned in whole µs the way cyclictest bins (truncated), so percentiles compare
like for like. Prints P50/P99/P99.9 per engine and the ratio python / cyclictest,
medians over rounds.

storage: the probe's sampler (one 4 KiB O_DIRECT|O_DSYNC write, then half an interval
later one O_DIRECT read, as the probe schedules them) against ioping on the very same
probe file (`-D -WWW -y` for writes, `-D` for reads, 4 KiB, working set = the file);
ioping prints no percentiles, so they are taken from its per-request JSON (`-J`).
Prints P50/P99 and the ratio probe / ioping.

Baselines: cyclictest and ioping. The machine is shared: the load average is printed
with every round, and figures are medians over rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from _common import REPO, machine

sys.path.insert(0, str(REPO / "exporter"))

from nodeslo.probes import wakeup
from nodeslo.probes.histogram import latency_bounds
from nodeslo.probes.storage import OPS, PROBE_FILE, Lane, Schedule, Target
from nodeslo.units import parse_duration

QUANTILES = (0.5, 0.99, 0.999)
LOADS = {
    "idle": None,
    "cpu": ["stress-ng", "--cpu", "2", "--cpu-method", "matrixprod"],
    "io": ["stress-ng", "--hdd", "1", "--hdd-bytes", "64m"],
}


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def quantile_from_bins(bins: dict[int, int], q: float) -> int:
    total = sum(bins.values())
    need = q * total
    running = 0
    for k in sorted(bins):
        running += bins[k]
        if running >= need:
            return k
    return max(bins)


def quantile(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))]


@contextlib.contextmanager
def load(kind: str, workdir: str) -> Iterator[None]:
    command = LOADS[kind]
    if command is None:
        yield
        return
    proc = subprocess.Popen(
        [*command, "--temp-path", workdir, "--timeout", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(2)  # let it ramp up
    try:
        yield
    finally:
        proc.terminate()
        proc.wait()


# --- wake-up ---------------------------------------------------------------------------------


BIN_LIMIT_US = 1_000_000  # whole-µs bins up to 1 s; later wake-ups in the last bin


class BinRecorder:
    """Stands in for the probe's histogram: whole-µs bins, truncated, as cyclictest bins.

    The python engine counts into buckets over `bounds_ns` and merges them with `add`:
    bound k is k µs + 999 ns, so bucket k holds [k, k + 1) µs. (`observe` for engines
    that record one sample at a time.)"""

    bounds_ns = tuple(k * 1000 + 999 for k in range(BIN_LIMIT_US))

    def __init__(self) -> None:
        self.bins: dict[int, int] = {}

    def observe(self, latency_ns: int) -> None:
        k = min(latency_ns // 1000, BIN_LIMIT_US)
        self.bins[k] = self.bins.get(k, 0) + 1

    def add(self, counts: list[int], sum_ns: int) -> None:
        for k, n in enumerate(counts):
            if n:
                self.bins[k] = self.bins.get(k, 0) + n


def python_child(interval_ns: int, samples: int, policy: str, cpu: int) -> None:
    """The python engine exactly as the probe process sets it up, raw bins on stdout."""
    if cpu >= 0:
        os.sched_setaffinity(0, {cpu})
    wakeup.prctl(wakeup.PR_SET_TIMERSLACK, 1)
    wakeup.set_policy(policy)
    recorder = BinRecorder()
    gc.disable()
    wakeup.run_python(
        interval_ns,
        histogram=recorder,  # type: ignore[arg-type]
        report=lambda: None,
        report_every_ns=10**12,
        cycles=samples,
    )
    print(json.dumps(recorder.bins))


def run_python_engine(interval_ns: int, samples: int, policy: str, cpu: int) -> dict[int, int]:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "_python-child",
            str(interval_ns),
            str(samples),
            policy,
            str(cpu),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {int(k): v for k, v in json.loads(out).items()}


def run_cyclictest(
    interval_ns: int, samples: int, policy: str, workdir: str, cpu: int
) -> dict[int, int]:
    binary = shutil.which("cyclictest")
    assert binary, "cyclictest is not installed (rt-tests)"
    path = os.path.join(workdir, "ct.json")
    command = wakeup.cyclictest_command(binary, interval_ns, samples, policy, path)
    # Bins up to 2 s: the probe's 10 ms limit lumps overflows at the max, which would
    # decide P99 here whenever more than 1 % of wake-ups on this busy VM exceed 10 ms.
    command = [a if not a.startswith("--histogram=") else "--histogram=2000000" for a in command]
    if cpu >= 0:
        command.append(f"--affinity={cpu}")
    # as in the probe: forked from a process whose timer slack is 1 ns
    wakeup.prctl(wakeup.PR_SET_TIMERSLACK, 1)
    subprocess.run(command, check=True, capture_output=True)
    thread = json.loads(Path(path).read_text())["thread"]["0"]
    bins = {int(k): int(v) for k, v in thread["histogram"].items()}
    overflow = int(thread["cycles"]) - sum(bins.values())
    if overflow:
        bins[int(thread["max"])] = bins.get(int(thread["max"]), 0) + overflow
    return bins


def bench_wakeup(args: argparse.Namespace) -> None:
    interval_ns = round(parse_duration(args.interval) * 1e9)
    print(
        f"wake-up: interval {args.interval}, policy {args.policy}, {args.samples} samples "
        f"per engine per round, {args.rounds} rounds, engines alternated, "
        + (f"both pinned to CPU {args.cpu}" if args.cpu >= 0 else "python unpinned")
    )
    workdir = tempfile.mkdtemp(prefix="nodeslo-bench-")
    try:
        for kind in args.loads.split(","):
            per: dict[str, list[list[int]]] = {"python": [], "cyclictest": []}
            loads = []
            with load(kind, workdir):
                for r in range(args.rounds):
                    order = ("python", "cyclictest") if r % 2 == 0 else ("cyclictest", "python")
                    for engine in order:
                        if engine == "python":
                            bins = run_python_engine(
                                interval_ns, args.samples, args.policy, args.cpu
                            )
                        else:
                            bins = run_cyclictest(
                                interval_ns, args.samples, args.policy, workdir, args.cpu
                            )
                        per[engine].append([quantile_from_bins(bins, q) for q in QUANTILES])
                    loads.append(loadavg())
            print(f"  load: {kind:5s} (loadavg after each round: {' | '.join(loads)})")
            medians = {
                e: [statistics.median(r[i] for r in rows) for i in range(len(QUANTILES))]
                for e, rows in per.items()
            }
            for engine, values in medians.items():
                shown = "  ".join(
                    f"P{q * 100:g} {v:6.0f} us" for q, v in zip(QUANTILES, values, strict=True)
                )
                print(f"    {engine:10s} {shown}")
            ratios = "  ".join(
                f"P{q * 100:g} {p / c:5.2f}x (+{p - c:.0f} us)"
                for q, p, c in zip(QUANTILES, medians["python"], medians["cyclictest"], strict=True)
            )
            print(f"    python / cyclictest: {ratios}")
            rows = "; ".join(
                f"{e} " + ",".join("/".join(str(v) for v in row) for row in rows)
                for e, rows in per.items()
            )
            print(f"    per round (P50/P99/P99.9 us): {rows}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# --- storage ---------------------------------------------------------------------------------


def probe_samples(directory: str, samples: int, interval_s: float) -> dict[str, list[int]]:
    """The probe's own operations, timed as it times them, one at a time."""
    target = Target(directory, 64 << 20)
    schedule = Schedule(time.monotonic_ns(), 1 / interval_s, OPS, random.Random())
    lanes = {
        op: Lane(target, op, schedule, bounds=latency_bounds(), overdue_seconds=60.0) for op in OPS
    }
    out: dict[str, list[int]] = {op: [] for op in OPS}
    for lane in lanes.values():  # warm-up (and the one-time file creation)
        lane.run_once()
        lane.drain()
    for _ in range(samples):
        for op in OPS:  # as the probe does: each op alone, half a period apart
            lanes[op].run_once()
            drained = lanes[op].drain()
            assert drained.errors == 0 and drained.histogram.count == 1, drained
            out[op].append(drained.histogram.sum_ns)
            time.sleep(interval_s / 2)
    for lane in lanes.values():
        lane.close()
    return out


def ioping_samples(path: str, samples: int, interval: str, write: bool) -> list[int]:
    command = ["ioping", "-D", "-s", "4k", "-S", "64m", "-c", str(samples + 1), "-i", interval]
    command += ["-J", path]
    if write:
        command[1:1] = ["-WWW", "-y"]
    text = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    records = json.loads(text)
    return [
        int(r["io"]["time"])
        for r in records
        if "io" in r and not r["io"].get("ignored") and "request" in r["io"]
    ]


def bench_storage(args: argparse.Namespace) -> None:
    interval_s = parse_duration(args.interval)
    directory = tempfile.mkdtemp(prefix="nodeslo-bench-storage-", dir=args.dir)
    fs = subprocess.run(
        ["df", "--output=source,fstype", directory], capture_output=True, text=True, check=False
    ).stdout.split("\n")[1]
    print(
        f"storage: {directory} ({fs.strip()}), {args.samples} samples per tool per round, "
        f"interval {args.interval}, {args.rounds} rounds, alternated"
    )
    rows: dict[tuple[str, str], list[tuple[int, int]]] = {}
    try:
        Target(directory, 64 << 20).check()  # create the probe file once
        probe_file = os.path.join(directory, PROBE_FILE)
        loads = []
        for r in range(args.rounds):
            tools = ("probe", "ioping") if r % 2 == 0 else ("ioping", "probe")
            for tool in tools:
                if tool == "probe":
                    got = probe_samples(directory, args.samples, interval_s)
                else:
                    got = {
                        "write_sync": ioping_samples(probe_file, args.samples, args.interval, True),
                        "read": ioping_samples(probe_file, args.samples, args.interval, False),
                    }
                for op, values in got.items():
                    rows.setdefault((tool, op), []).append(
                        (quantile(values, 0.5), quantile(values, 0.99))
                    )
            loads.append(loadavg())
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print(f"  loadavg after each round: {' | '.join(loads)}")
    for op in ("write_sync", "read"):
        med = {
            tool: (
                statistics.median(p50 for p50, _ in rows[(tool, op)]),
                statistics.median(p99 for _, p99 in rows[(tool, op)]),
            )
            for tool in ("probe", "ioping")
        }
        for tool, (p50, p99) in med.items():
            print(f"    {op:10s} {tool:6s}  P50 {p50 / 1e3:8.1f} us   P99 {p99 / 1e3:8.1f} us")
        print(
            f"    {op:10s} probe / ioping: P50 {med['probe'][0] / med['ioping'][0]:.2f}x   "
            f"P99 {med['probe'][1] / med['ioping'][1]:.2f}x"
        )


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_python-child":
        python_child(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="what", required=True)
    w = commands.add_parser("wakeup")
    w.add_argument("--interval", default="1ms")
    w.add_argument("--samples", type=int, default=10000)
    w.add_argument("--rounds", type=int, default=3)
    w.add_argument("--policy", choices=("other", "fifo"), default="other")
    w.add_argument("--loads", default="idle,cpu,io")
    w.add_argument(
        "--cpu",
        type=int,
        default=0,
        help="pin both engines to this CPU (cyclictest pins itself to CPU 0 anyway); -1: "
        "leave python unpinned",
    )
    s = commands.add_parser("storage")
    s.add_argument("--dir", default="/var/tmp")
    s.add_argument("--samples", type=int, default=1000)
    s.add_argument("--interval", default="10ms")
    s.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    if args.what == "wakeup":
        bench_wakeup(args)
    else:
        bench_storage(args)
    print(f"  finished {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
