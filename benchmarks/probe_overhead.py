"""CPU and write cost of the probes at their default rates, as a user runs them.

    .venv/bin/python benchmarks/probe_overhead.py [--seconds 60] [--rounds 3]
                                                 [--dir /var/tmp] [--engine auto|python]
                                                 [--loop] [--compare-source DIR]
                                                 [--strace-seconds 10]

Runs `nodeslo serve --collector.disable-defaults` with the storage probe on a fresh
directory (default rate 10/s) and the wake-up probe (default 10 ms interval), then the
same daemon with both probes off (the baseline), each for --seconds, and prints:

- CPU of the probe processes (utime+stime, plus their reaped children: the cyclictest
  bursts) and the daemon's extra CPU over the baseline (the supervisor threads merging
  reports), as % of one core, from /proc/<pid>/stat;
- bytes written per storage sample, from the probe process's /proc/<pid>/io write_bytes
  (what it sent to the block layer) — and with --loop, also the sectors written on a
  dedicated loop-device ext4 holding the target (journal and metadata included).

With --compare-source DIR (an `exporter/` source tree of another version, e.g.
`git archive main exporter | tar -x -C DIR`), each round also runs that version's daemon
and probes (PYTHONPATH=DIR/exporter) for the same time, and the storage probe's CPU per
sample prints as a ratio to it; with strace installed, --strace-seconds of each
version's storage probe are traced (`strace -f -c`, a separate run: tracing slows the
process) and the system calls per sample print too.

Baselines, run for the same time in each round: the reference tools doing the same work
at the same rates — `cyclictest --default-system -i 10000` (100 wake-ups/s: the floor of
any 10 ms timer probe on this host) and two `ioping -D` on the probe file (10 reads/s,
10 O_DSYNC writes/s), CPU from getrusage(RUSAGE_CHILDREN) — so the probes' cost prints
as a ratio to theirs. Medians over rounds; the machine is shared, so the load average is
printed too.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from _common import children, cpu_with_children, machine
from support import daemon as d
from support.exposition import value


def write_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise ValueError("no write_bytes")


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")


@contextlib.contextmanager
def loop_ext4() -> Iterator[tuple[str, str]]:
    """A fresh ext4 on a loop device: (mount point, loop device name)."""
    work = Path(tempfile.mkdtemp(prefix="nodeslo-bench-loop-", dir="/var/tmp"))
    image, mnt = work / "fs.img", work / "mnt"
    mnt.mkdir()
    with image.open("wb") as f:
        f.truncate(256 << 20)
    subprocess.run(["mkfs.ext4", "-q", str(image)], check=True)
    device = subprocess.run(
        ["losetup", "--find", "--show", str(image)], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        subprocess.run(["mount", device, str(mnt)], check=True)
        try:
            yield str(mnt), os.path.basename(device)
        finally:
            subprocess.run(["umount", str(mnt)], check=False)
    finally:
        subprocess.run(["losetup", "--detach", device], check=False)
        shutil.rmtree(work, ignore_errors=True)


def sectors_written(device: str) -> int:
    return int(Path(f"/sys/block/{device}/stat").read_text().split()[6])


def syscalls_per_sample(daemon: d.Daemon, pid: int, seconds: float) -> float:
    """System calls of the storage probe process (all threads) per sample: one write and
    one read, as CPU and bytes per sample count them."""
    text0 = daemon.scrape()
    trace = subprocess.Popen(
        ["strace", "-f", "-c", "-q", "-p", str(pid)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(seconds)
    trace.send_signal(signal.SIGINT)
    report = trace.communicate(timeout=30)[1]
    text1 = daemon.scrape()
    # "100.00  seconds  usecs/call  calls  [errors]  total"
    total = next(
        int(line.split()[3]) for line in report.splitlines() if line.rstrip().endswith("total")
    )
    samples = value(text1, "nodeslo_probe_io_latency_seconds_count", op="write_sync") - value(
        text0, "nodeslo_probe_io_latency_seconds_count", op="write_sync"
    )
    return total / samples


def measure(
    flags: list[str],
    seconds: float,
    loop_device: str | None,
    env: dict[str, str] | None = None,
    strace_seconds: float = 0.0,
) -> dict[str, float]:
    with d.running(None, "--collector.disable-defaults", *flags, env=env) as daemon:
        pid = daemon.proc.pid
        probing = "--no-probe.storage" not in flags
        if probing:  # past the one-time probe file creation, both probes reporting
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                text = daemon.scrape()
                if "io_latency_seconds_count" in text and "wakeup_latency_seconds_count" in text:
                    break
                time.sleep(0.5)
            time.sleep(2)
        kids = {c: cmdline(c) for c in children(pid)} if probing else {}
        storage_pid = next((c for c, line in kids.items() if "probes.storage" in line), None)
        text0 = daemon.scrape() if probing else ""
        cpu0 = {p: cpu_with_children(p) for p in [pid, *kids]}
        wb0 = write_bytes(storage_pid) if storage_pid else 0
        sec0 = sectors_written(loop_device) if loop_device else 0
        t0 = time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - t0
        cpu1 = {p: cpu_with_children(p) for p in cpu0}
        wb1 = write_bytes(storage_pid) if storage_pid else 0
        sec1 = sectors_written(loop_device) if loop_device else 0
        text1 = daemon.scrape() if probing else ""
        traced = (
            syscalls_per_sample(daemon, storage_pid, strace_seconds)
            if storage_pid and strace_seconds
            else None
        )
    out = {"daemon": (cpu1[pid] - cpu0[pid]) / elapsed}
    if traced is not None:
        out["syscalls_per_sample"] = traced
    for child, line in kids.items():
        name = "storage" if "probes.storage" in line else "wakeup"
        out[name] = (cpu1[child] - cpu0[child]) / elapsed
    if probing:
        samples = value(text1, "nodeslo_probe_io_latency_seconds_count", op="write_sync") - value(
            text0, "nodeslo_probe_io_latency_seconds_count", op="write_sync"
        )
        out["samples"] = samples
        out["storage_cpu_per_sample"] = out["storage"] * elapsed / samples
        out["bytes_per_sample"] = (wb1 - wb0) / samples
        if loop_device:
            out["device_bytes_per_sample"] = (sec1 - sec0) * 512 / samples
    return out


def reference_tools(probe_file: str, seconds: float) -> dict[str, float]:
    """CPU share of cyclictest and ioping doing the probes' work at their default rates."""

    def run(commands: list[list[str]]) -> float:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        procs = [
            subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for c in commands
        ]
        for proc in procs:
            proc.wait()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return cpu / seconds

    loops = str(round(seconds * 100))
    count = str(round(seconds * 10))
    ioping = ["ioping", "-D", "-s", "4k", "-S", "64m", "-i", "100ms", "-c", count, "-q"]
    return {
        "cyclictest": run(
            [["cyclictest", "-q", "--default-system", "-t1", "-i", "10000", "-l", loops]]
        ),
        "ioping": run(
            [[*ioping, probe_file], [*ioping[:1], "-WWW", "-y", *ioping[1:], probe_file]]
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default="/var/tmp")
    parser.add_argument("--engine", default="auto", choices=("auto", "python", "cyclictest"))
    parser.add_argument("--loop", action="store_true", help="target on a loop-device ext4")
    parser.add_argument(
        "--compare-source", help="an exporter/ source tree to run alongside, as the baseline"
    )
    parser.add_argument("--strace-seconds", type=float, default=10.0)
    args = parser.parse_args()
    strace = args.strace_seconds if shutil.which("strace") else 0.0
    other: list[dict[str, float]] = []
    other_env = (
        {"PYTHONPATH": os.path.join(os.path.abspath(args.compare_source), "exporter")}
        if args.compare_source
        else None
    )
    print(f"machine: {machine()}")
    rows: list[dict[str, float]] = []
    base: list[dict[str, float]] = []
    with contextlib.ExitStack() as stack:
        if args.loop:
            directory, loop_device = stack.enter_context(loop_ext4())
        else:
            directory, loop_device = tempfile.mkdtemp(prefix="nodeslo-bench-", dir=args.dir), None
            stack.callback(shutil.rmtree, directory, True)
        target = os.path.join(directory, "state")
        print(
            f"probes at default rates (storage 10/s on {target}, wake-up 10 ms, engine "
            f"{args.engine}), {args.seconds:g} s per run, {args.rounds} rounds"
        )
        probes = [f"--probe.storage.target={target}", f"--probe.wakeup.engine={args.engine}"]
        for _ in range(args.rounds):
            rows.append(measure(probes, args.seconds, loop_device, strace_seconds=strace))
            if other_env is not None:
                other.append(measure(probes, args.seconds, loop_device, other_env, strace))
            base.append(measure(["--no-probe.storage", "--no-probe.wakeup"], args.seconds, None))
            base[-1].update(reference_tools(os.path.join(target, "nodeslo-probe"), args.seconds))
            print(f"  round done, load {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")

    def med(key: str, table: list[dict[str, float]] = rows) -> float:
        return statistics.median(r[key] for r in table)

    storage, wake = med("storage") * 100, med("wakeup") * 100
    daemon_extra = (med("daemon") - med("daemon", base)) * 100
    ioping, cyclictest = med("ioping", base) * 100, med("cyclictest", base) * 100
    print(
        f"  storage probe process   {storage:6.3f} % of one core   "
        f"(2 x ioping at 10/s: {ioping:.3f} %, ratio {storage / ioping:.2f}x)"
    )
    print(
        f"  wake-up probe process   {wake:6.3f} % of one core   "
        f"(cyclictest -i 10000: {cyclictest:.3f} %, ratio {wake / cyclictest:.2f}x)"
    )
    print(
        f"  daemon, over baseline   {daemon_extra:6.3f} % of one core "
        f"(daemon {med('daemon') * 100:.3f} % vs {med('daemon', base) * 100:.3f} % without probes)"
    )
    print(f"  total                   {storage + wake + daemon_extra:6.3f} % of one core")
    print(
        f"  bytes written per storage sample (process write_bytes): "
        f"{med('bytes_per_sample'):.0f} over {med('samples'):.0f} samples"
    )
    if loop_device:
        print(
            f"  bytes written per sample at the block device (journal included): "
            f"{med('device_bytes_per_sample'):.0f}"
        )
    per_sample = med("storage_cpu_per_sample") * 1e6
    print(f"  storage probe CPU per sample (write + read): {per_sample:.0f} µs")
    if strace:
        print(f"  storage probe system calls per sample: {med('syscalls_per_sample'):.2f}")
    if other:
        theirs = med("storage_cpu_per_sample", other) * 1e6
        print(
            f"  baseline {args.compare_source}: storage probe CPU per sample {theirs:.0f} µs, "
            f"{med('storage', other) * 100:.3f} % of one core; this version "
            f"{per_sample / theirs:.2f}x"
        )
        if strace:
            calls = med("syscalls_per_sample", other)
            print(
                f"  baseline system calls per sample: {calls:.2f} "
                f"(this version {med('syscalls_per_sample') / calls:.2f}x)"
            )
    print(f"  finished {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
