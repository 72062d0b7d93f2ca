"""Wake-up latency probe: how late a periodic timer-driven task wakes (cyclictest's method).

Runs in its own process (`python -m nodeslo.probes.wakeup CONFIG`), so a scrape holding
the daemon's GIL cannot distort it. The loop sleeps to absolute deadlines on
CLOCK_MONOTONIC (`clock_nanosleep(TIMER_ABSTIME)`), with timer slack set to 1 ns, and
records now - deadline. Engines:

- `python`: that loop, here, with the garbage collector off;
- `cyclictest` (rt-tests): bounded 10 s bursts of `cyclictest -h` whose JSON histogram is
  folded into the same buckets. `--default-system` keeps it from writing
  /dev/cpu_dma_latency (which would suppress C-states: the probe measures the host as
  it is). `--refresh_on_max` parks cyclictest's display thread until a new maximum
  (otherwise it wakes every 10 ms to print nothing: as many wake-ups as the measuring
  thread). cyclictest inherits this process's 1 ns timer slack: forked from here, its
  default slack is ours, so its own SCHED_FIFO privilege check (FIFO and back, which
  resets the slack to the default) keeps it at 1 ns.

  Why bursts and not one long-lived cyclictest: cyclictest hands out its histogram only
  when it exits, and its one streaming output (`-v`, a line per wake-up) needs the display
  thread awake every 10 ms — measured, that thread then costs as much CPU as the
  measuring one, more than the fork and exec of a burst every 10 s.

  A burst that fails (exits non-zero, is killed, writes bad JSON, hangs past its
  deadline and is killed) measured nothing: every wake-up it should have measured, and
  those of the backoff before the next burst, are *missed* — observed in the histogram
  at their would-be lateness (a lower bound, as the storage probe does) and reported
  with the reason `engine_failed`. Missing data is never good news.

`auto` runs cyclictest when it is installed and falls back to python if it keeps failing.
Policy `other` (SCHED_OTHER) by default; `fifo` uses SCHED_FIFO priority 1 — the lowest
real-time priority, so the probe never preempts the real-time work it watches — when the
process may (CAP_SYS_NICE or RLIMIT_RTPRIO), else it reports `other` and says why.
"""

from __future__ import annotations

import bisect
import contextlib
import ctypes
import ctypes.util
import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from nodeslo import fdwait
from nodeslo.probes.histogram import LatencyHistogram
from nodeslo.probes.protocol import ParentGone, Reporter

PR_SET_PDEATHSIG = 1
PR_SET_TIMERSLACK = 29
CLOCK_MONOTONIC = 1
TIMER_ABSTIME = 1
EINTR = 4
FIFO_PRIORITY = 1
CYCLICTEST_HISTOGRAM_US = 10_000  # 1 µs bins up to 10 ms; beyond: overflow, see fold
CYCLICTEST_FAILURES_BEFORE_FALLBACK = 3
SHM_DIR = "/dev/shm"  # where glibc's shm_open() puts POSIX shared memory
CYCLICTEST_HANG_SECONDS = 10.0  # past the burst's own length: hung (SIGSTOPped, D state)
CYCLICTEST_BACKOFF_SECONDS = (1.0, 2.0)  # before the retries that precede a fallback
ENGINES = ("python", "cyclictest")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class _Timespec(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long))


@dataclass(frozen=True)
class Config:
    engine: str  # auto | python | cyclictest
    interval_ns: int
    policy: str  # other | fifo
    bounds: tuple[float, ...]
    report_seconds: float = 1.0
    burst_seconds: float = 10.0  # each burst costs a fork+exec: ~5 ms of CPU here

    def to_json(self) -> str:
        return json.dumps({**self.__dict__, "bounds": list(self.bounds)})

    @classmethod
    def from_json(cls, text: str) -> Config:
        raw: dict[str, Any] = json.loads(text)
        raw["bounds"] = tuple(raw["bounds"])
        return cls(**raw)


# --- process setup --------------------------------------------------------------------


def prctl(option: int, value: int) -> None:
    if _libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def become_probe_process() -> None:
    """Leave stopping to the daemon: ignore the SIGINT/SIGTERM that a terminal, `timeout`
    or systemd send to the whole group, and die with the daemon (even if it is SIGKILLed)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _cyclictest_preexec() -> None:
    """In cyclictest, before exec: default signals back, SIGTERM when we die. SIGPIPE
    ignored: when we die (the daemon stopping us is a SIGKILL), its JSON goes to a pipe
    nobody reads, and a SIGPIPE would end it before it unlinks /dev/shm/cyclictest<pid>."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def set_policy(policy: str) -> tuple[str, str]:
    """Apply the scheduling policy; (effective policy, why it differs or '')."""
    if policy != "fifo":
        return "other", ""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(FIFO_PRIORITY))
    except PermissionError:
        return "other", "SCHED_FIFO refused (needs CAP_SYS_NICE or RLIMIT_RTPRIO): using other"
    return "fifo", ""


def reset_policy() -> None:
    """Back to SCHED_OTHER; the kernel then resets the timer slack to the default: 1 ns again."""
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    prctl(PR_SET_TIMERSLACK, 1)


# --- python engine --------------------------------------------------------------------


def sleep_until(deadline_ns: int, _ts: _Timespec = _Timespec()) -> None:  # noqa: B008
    """clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME): the deadline is absolute, so the
    time spent getting here does not lengthen the sleep."""
    _ts.tv_sec, _ts.tv_nsec = divmod(deadline_ns, 1_000_000_000)
    while True:
        err = _libc.clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, ctypes.byref(_ts), None)
        if err != EINTR:
            return


def run_python(
    interval_ns: int,
    *,
    histogram: LatencyHistogram,
    report: Callable[[], None],
    report_every_ns: int,
    clock: Callable[[], int] = time.monotonic_ns,
    sleep: Callable[[int], None] = sleep_until,
    cycles: int | None = None,
) -> None:
    """The measuring loop: sleep to each deadline, record how late the wake-up was.

    A wake-up later than whole periods skips them (as cyclictest does): the next
    deadline stays on the original grid, the lateness is recorded once.

    Per wake-up only a clock read and a bucket increment into a local list: the
    counts are merged into `histogram` (lock, sum) once per report, not per wake-up.
    """
    bounds = histogram.bounds_ns
    counts = [0] * (len(bounds) + 1)
    total_ns = 0
    bucket = bisect.bisect_left
    deadline = clock() + interval_ns
    next_report = deadline + report_every_ns
    done = 0
    while cycles is None or done < cycles:
        sleep(deadline)
        now = clock()
        late = now - deadline
        if late > 0:
            counts[bucket(bounds, late)] += 1
            total_ns += late
        else:
            counts[0] += 1
        deadline += interval_ns
        if now >= deadline:
            deadline += ((now - deadline) // interval_ns + 1) * interval_ns
        if now >= next_report:
            histogram.add(counts, total_ns)
            counts = [0] * len(counts)
            total_ns = 0
            report()
            next_report = now + report_every_ns
        done += 1
    histogram.add(counts, total_ns)


# --- cyclictest engine ----------------------------------------------------------------


def cyclictest_command(
    binary: str, interval_ns: int, loops: int, policy: str, json_path: str
) -> list[str]:
    return [
        binary,
        "--quiet",
        "--default-system",  # never write /dev/cpu_dma_latency
        "--threads=1",
        f"--interval={max(1, interval_ns // 1000)}",
        f"--loops={loops}",
        f"--histogram={CYCLICTEST_HISTOGRAM_US}",
        "--histfile=/dev/null",
        f"--json={json_path}",
        "--refresh_on_max",  # the display thread sleeps (see the module's docstring)
        f"--policy={policy}",
        # Only with fifo: cyclictest 2.x turns an explicit --priority=0 into SCHED_FIFO 2.
        *([f"--priority={FIFO_PRIORITY}"] if policy == "fifo" else []),
    ]


class CyclictestOutputError(ValueError):
    pass


class CyclictestHung(CyclictestOutputError):
    pass


def observe_missed(
    histogram: LatencyHistogram, first_ns: int, interval_ns: int, until_ns: int
) -> tuple[int, int]:
    """Observe the deadlines first, first + interval, ... before `until` that nothing
    measured, each at its would-be lateness at `until` (a lower bound); (count, the next
    deadline not yet counted)."""
    n = max(0, -(-(until_ns - first_ns) // interval_ns))
    if n:
        newest = first_ns + (n - 1) * interval_ns
        histogram.observe_spaced(until_ns - newest, interval_ns, n)
    return n, first_ns + n * interval_ns


def fold_cyclictest(doc: Any, bounds_ns: Sequence[int]) -> tuple[list[int], int]:
    """cyclictest's --json result -> (per-bucket counts over `bounds_ns`, sum in ns).

    cyclictest bins in whole µs, truncated: bin k holds latencies in [k, k+1) µs, so it
    goes to the first bound >= k µs + 999 ns (never a lower bucket than the truth).
    Overflows (>= the -h limit) are only known to be <= max: they go to max's bucket.
    The sum is avg x cycles (avg is over truncated µs: at most 1 µs per sample low).
    """
    try:
        thread = doc["thread"]["0"]
        histogram = {int(k): int(v) for k, v in thread["histogram"].items()}
        cycles, max_us, avg_us = int(thread["cycles"]), int(thread["max"]), float(thread["avg"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CyclictestOutputError(f"unexpected cyclictest JSON: {exc!r}") from None
    counts = [0] * (len(bounds_ns) + 1)

    def bucket(us: int) -> int:
        return bisect.bisect_left(bounds_ns, us * 1000 + 999)

    binned = 0
    for us, n in histogram.items():
        if us < 0 or n < 0:
            raise CyclictestOutputError(f"negative bin or count: {us}: {n}")
        counts[bucket(us)] += n
        binned += n
    overflow = cycles - binned
    if overflow < 0:
        raise CyclictestOutputError(f"histogram holds {binned} samples, cycles is {cycles}")
    counts[bucket(max_us)] += overflow
    return counts, round(avg_us * cycles * 1000)


def run_cyclictest_burst(
    binary: str,
    config: Config,
    policy: str,
    histogram: LatencyHistogram,
    hang_seconds: float = CYCLICTEST_HANG_SECONDS,
) -> None:
    """One bounded burst; its counts are added to `histogram`. Raises on any failure.

    cyclictest writes its JSON to a pipe (`--json=/dev/fd/N`), read while it runs: no
    temporary file is left behind if this process is killed. A burst still running
    `hang_seconds` past its own length is killed (CyclictestHung).
    """
    interval_s = config.interval_ns / 1e9
    loops = max(5, round(config.burst_seconds / interval_s))
    read_end, write_end = os.pipe()
    try:
        command = cyclictest_command(
            binary, config.interval_ns, loops, policy, f"/dev/fd/{write_end}"
        )
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            pass_fds=(write_end,),
            preexec_fn=_cyclictest_preexec,  # noqa: PLW1509 (this process has one thread)
        )
    except OSError:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    deadline = time.monotonic() + loops * interval_s + hang_seconds
    try:
        output = _read_until_eof(read_end, deadline)
        _, stderr = proc.communicate(timeout=max(0.0, deadline - time.monotonic()))
    except (CyclictestHung, subprocess.TimeoutExpired):
        proc.kill()
        proc.wait()
        raise CyclictestHung(
            f"cyclictest still running {hang_seconds:g}s past its {loops * interval_s:g}s "
            "burst: killed"
        ) from None
    except BaseException:
        proc.kill()  # never leave a burst running behind a failure
        proc.wait()
        raise
    finally:
        os.close(read_end)
        if proc.returncode:  # killed (by us or anyone) or failed: it may not have cleaned up
            remove_stats_segment(proc.pid)
    if proc.returncode != 0:
        tail = stderr.decode(errors="replace").strip().splitlines()[-1:]
        raise CyclictestOutputError(f"cyclictest exited {proc.returncode}: {' '.join(tail)}")
    try:
        doc = json.loads(output)
    except ValueError as exc:
        raise CyclictestOutputError(f"cyclictest JSON: {exc}") from None
    counts, sum_ns = fold_cyclictest(doc, histogram.bounds_ns)
    histogram.add(counts, sum_ns)


def remove_stats_segment(pid: int) -> None:
    """cyclictest (rt-tests 2.x) keeps its running statistics in POSIX shared memory,
    `/dev/shm/cyclictest<pid>`, and unlinks it when it exits; a burst killed with SIGKILL
    (hung, or by the OOM killer) leaves it behind, one file per kill for as long as the
    server runs. Called once the burst is reaped."""
    with contextlib.suppress(OSError):
        os.unlink(f"{SHM_DIR}/cyclictest{pid}")


def _read_until_eof(fd: int, deadline: float) -> bytes:
    """Everything from `fd` until EOF; CyclictestHung at the deadline. One wake-up when
    cyclictest exits (the JSON comes at the end), none while it measures."""
    chunks: list[bytes] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not fdwait.readable([fd], left):
            raise CyclictestHung("no EOF by the deadline")
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


# --- the probe process ------------------------------------------------------------------


def choose_engine(requested: str, which: Callable[[str], str | None] = shutil.which) -> str:
    if requested == "auto":
        return "cyclictest" if which("cyclictest") else "python"
    return requested


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m nodeslo.probes.wakeup CONFIG_JSON", file=sys.stderr)
        return 2
    config = Config.from_json(args[0])
    become_probe_process()
    reporter = Reporter(sys.stdout.buffer)
    prctl(PR_SET_TIMERSLACK, 1)
    policy, why = set_policy(config.policy)
    if why:
        reporter.send("warn", msg=why)
    engine = choose_engine(config.engine)
    binary = shutil.which("cyclictest") if engine == "cyclictest" else None
    if engine == "cyclictest" and binary is None:
        reporter.send("warn", msg="engine cyclictest requested but cyclictest is not installed")
        return 3
    histogram = LatencyHistogram(config.bounds)
    try:
        if binary is not None:
            if policy == "fifo":
                reset_policy()  # cyclictest sets its measuring thread's own policy
            reporter.send("hello", engine="cyclictest", policy=policy, requested=config.engine)
            if _cyclictest_loop(binary, config, policy, histogram, reporter):
                return 1
            if policy == "fifo":
                set_policy("fifo")
        reporter.send("hello", engine="python", policy=policy, requested=config.engine)
        labels = ["python", policy]
        gc.disable()  # a collection pause is the probe's latency, not the host's

        def report() -> None:
            if not reporter.histogram(labels, histogram.take()):
                reporter.send("beat")

        run_python(
            config.interval_ns,
            histogram=histogram,
            report=report,
            report_every_ns=int(config.report_seconds * 1e9),
        )
    except ParentGone:
        return 0
    return 0


def _cyclictest_loop(
    binary: str,
    config: Config,
    policy: str,
    histogram: LatencyHistogram,
    reporter: Reporter,
    *,
    clock: Callable[[], int] = time.monotonic_ns,
    wait: Callable[[float], None] = time.sleep,
    burst: Callable[[str, Config, str, LatencyHistogram], None] = run_cyclictest_burst,
) -> bool:
    """Bursts until cyclictest fails repeatedly. True: give up (explicit engine);
    False: fall back to the python engine (auto).

    A failed burst and the backoff after it are missed wake-ups (see the docstring).
    """
    labels = ["cyclictest", policy]
    failures = 0
    gap_next: int | None = None  # the first deadline of a gap nothing measured

    def account_gap(until: int) -> None:
        nonlocal gap_next
        if gap_next is None:
            return
        n, gap_next = observe_missed(histogram, gap_next, config.interval_ns, until)
        if n:
            reporter.histogram(labels, histogram.take())
            reporter.send("missed", labels=labels, n=n, reason="engine_failed")

    while True:
        started = clock()
        account_gap(started)  # the backoff before this burst measured nothing
        try:
            burst(binary, config, policy, histogram)
        except (CyclictestOutputError, OSError, subprocess.TimeoutExpired) as exc:
            failures += 1
            if gap_next is None:
                gap_next = started + config.interval_ns
            account_gap(clock())
            reporter.send("warn", msg=f"cyclictest burst failed: {exc}")
            if failures >= CYCLICTEST_FAILURES_BEFORE_FALLBACK:
                if config.engine == "cyclictest":
                    return True
                reporter.send("warn", msg="cyclictest keeps failing: using the python engine")
                return False
            wait(CYCLICTEST_BACKOFF_SECONDS[min(failures, len(CYCLICTEST_BACKOFF_SECONDS)) - 1])
            continue
        gap_next = None
        failures = 0
        if not reporter.histogram(labels, histogram.take()):
            reporter.send("beat")


if __name__ == "__main__":
    sys.exit(main())
