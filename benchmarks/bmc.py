"""The BMC: decode cost, what the BMC collector adds to a scrape, and a poll of the
simulated BMC through the real kernel driver.

    .venv/bin/python benchmarks/bmc.py [--scrapes 200] [--latency 0.05] [--guest]

decode   Decoding the recorded simulator (tests/data/bmc/faults.json): one SDR record,
         one reading, one SEL entry, and a whole poll round from memory. Baseline: the
         bare struct.unpack of the same bytes.
scrape   Three daemons on the seed-spec fixture with the default collectors, scraped in
         turn: without the bmc collector (the baseline), with it replaying the recording,
         and with it behind a helper whose BMC answers each command after --latency
         seconds (a slow KCS BMC: a poll round takes seconds, polled every second, so a
         round is nearly always in progress). The scrape only copies the last snapshot:
         its cost does not grow with the BMC.
guest    (--guest, needs ../shared/tools and QEMU) The simulated BMC behind the guest
         kernel's KCS driver, with --sel-entries events logged first: the first poll
         (SDR walk, thresholds, readings, the SEL backlog), then a poll round with the SDR
         cached, and the SEL read; baseline: ipmitool doing the same (`sdr elist`,
         `sel list`), as an exporter that shells out to it does on every scrape.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import REPO, fixture_tree, machine, scrape_many
from nodeslo.ipmi import sdr, sel, sensor
from nodeslo.ipmi.helper import HelperServer
from nodeslo.ipmi.poller import Poller
from nodeslo.ipmi.recording import parse
from nodeslo.ipmi.requests import Request
from nodeslo.log import OnceLog
from nodeslo.privsep.server import listen, serve_socket
from support import bmc_chassis  # on sys.path through _common
from support import daemon as d
from support import stack as st

DATA = REPO / "tests" / "data" / "bmc"


def best(fn, iterations: int) -> float:  # type: ignore[no-untyped-def]
    """Best of 5 runs, seconds per call."""
    fastest = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(iterations):
            fn()
        fastest = min(fastest, (time.perf_counter() - start) / iterations)
    return fastest


class InMemory:
    """The recording's answers, read once: a poll without file I/O."""

    def __init__(self, path: Path, latency: float = 0.0) -> None:
        self.answers = parse(json.loads(path.read_text()), str(path))
        self.latency = latency

    def call(self, request: Request, timeout: float) -> bytes:
        if self.latency:
            time.sleep(self.latency)
        return self.answers[(request.netfn, request.cmd, request.lun, request.data)]

    def close(self) -> None:
        pass


def decode(iterations: int) -> None:
    record = bmc_chassis.EXTRA_RECORDS[0]  # a full threshold record (12V)
    (sensor_record,) = sdr.decode_record(record)
    reading = bytes([190, 0xC0, 0x00, 0x00])
    entry = struct.pack("<HBIHBBBBBBB", 7, 0x02, 1000, 0x20, 0x04, 0x08, 2, 0x6F, 1, 0xFF, 0xFF)
    rows = (
        (
            "SDR full record",
            lambda: sdr.decode_record(record),
            lambda: sdr.FULL.struct.unpack(record[:48]),
        ),
        (
            "reading + meaning",
            lambda: sensor.evaluate(sensor_record, sensor.decode_reading(reading), ()),
            lambda: struct.unpack("<BBBB", reading),
        ),
        ("SEL entry", lambda: sel.decode_entry(entry), lambda: sel.ENTRY.struct.unpack(entry)),
    )  # fmt: skip
    print("decode (best of 5):")
    for name, work, baseline in rows:
        t, b = best(work, iterations), best(baseline, iterations)
        print(f"  {name:18s} {t * 1e6:7.2f} µs   bare unpack {b * 1e6:6.2f} µs   {t / b:5.1f}x")
    logger = logging.getLogger("bench")
    logger.disabled = True
    transport = InMemory(DATA / "faults.json")
    poller = Poller(transport, interval=60, timeout=1, errors=OnceLog(logger))
    poller.poll_round()  # the SDR walk and the SEL backlog
    rounds = max(10, iterations // 200)
    per_round = best(poller.poll_round, rounds)
    sensors = len(poller.snapshot().sensors)
    print(
        f"  poll round, SDR cached ({sensors} sensors, in memory): {per_round * 1e3:.3f} ms "
        f"= {per_round / sensors * 1e6:.1f} µs a sensor; at the 30 s default interval "
        f"{per_round / 30 * 100:.4f} % of one core"
    )


def slow_helper(path: str, latency: float) -> socket.socket:
    listener = listen(path, 0o600, None)
    server = HelperServer(InMemory(DATA / "healthy.json", latency))
    threading.Thread(target=serve_socket, args=(listener, server, set()), daemon=True).start()
    return listener


def scrape(scrapes: int, latency: float) -> None:
    tree = fixture_tree("seed-spec")
    (tree / "sys" / "class" / "ipmi" / "ipmi0").mkdir(parents=True)  # a host with a BMC
    work = Path(tempfile.mkdtemp(prefix="nodeslo-bench-bmc-"))
    listener = slow_helper(str(work / "bmc.sock"), latency)
    base = ("--collector.bmc.poll-interval=1s",)
    variants = {
        "without bmc (baseline)": ("--no-collector.bmc",),
        "bmc, replay": (*base, f"--collector.bmc.replay={tree}/bmc-replay.json"),
        f"bmc, {latency * 1e3:g} ms a command": (
            *base,
            f"--collector.bmc.helper-socket={work / 'bmc.sock'}",
        ),
    }
    stats: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    series: dict[str, int] = {}
    polls = []
    try:
        with (
            d.running(tree, *variants["without bmc (baseline)"]) as a,
            d.running(tree, *variants["bmc, replay"]) as b,
            d.running(tree, *list(variants.values())[2]) as c,
        ):
            daemons = dict(zip(variants, (a, b, c), strict=True))
            time.sleep(8)  # the slow BMC's first round (its SDR walk), then a few rounds
            for _ in range(4):  # alternate, so load from elsewhere falls on all three
                for name, daemon in daemons.items():
                    s = scrape_many(daemon.url + "/metrics", daemon.proc.pid, scrapes // 4)
                    stats[name] += s.latencies
                    cpu[name].append(s.cpu_per_scrape)
                    series[name] = s.series
            text = c.scrape()
            polls = [
                float(line.split()[-1])
                for line in text.splitlines()
                if line.startswith("nodeslo_bmc_poll_duration_seconds ")
            ]
    finally:
        listener.close()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(tree, ignore_errors=True)
    baseline = statistics.median(stats["without bmc (baseline)"])
    base_cpu = statistics.median(cpu["without bmc (baseline)"])
    print(f"scrape (seed-spec fixture, default collectors, {scrapes} scrapes each, alternated):")
    for name in variants:
        p50, c50 = statistics.median(stats[name]), statistics.median(cpu[name])
        print(
            f"  {name:24s} p50 {p50 * 1e3:6.2f} ms ({p50 / baseline:4.2f}x)   cpu/scrape "
            f"{c50 * 1e3:6.2f} ms ({c50 / base_cpu:4.2f}x)   series {series[name]}"
        )
    if polls:
        print(f"  the slow BMC's last poll round took {polls[0]:.2f} s (polled every 1 s)")


GUEST = r"""
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
modprobe ipmi_si && modprobe ipmi_devintf
ms() { echo $(( $(date +%s%N) / 1000000 )); }
for i in 1 2 3; do
  s=$(ms); ipmitool sdr elist >/dev/null 2>&1; e=$(ms); echo "ipmitool_sdr_elist $((e - s))"
  s=$(ms); ipmitool sel list >/dev/null 2>&1; e=$(ms); echo "ipmitool_sel_list $((e - s))"
done >"$OUT/ipmitool.txt"
"$PY" - >"$OUT/nodeslo.json" 2>"$OUT/nodeslo.err" <<'PYTHON'
import json, logging, time
from nodeslo.ipmi.ioctl import DeviceTransport
from nodeslo.ipmi.poller import Poller
from nodeslo.log import OnceLog
logging.disable(logging.CRITICAL)
poller = Poller(DeviceTransport(), interval=60, timeout=5, errors=OnceLog(logging.getLogger("b")))
out = {}
start = time.monotonic()
while True:  # the first poll, its SEL backlog read in batches
    poller.poll_round()
    if poller.snapshot().sel_events is not None:
        break
out["first_poll"] = time.monotonic() - start
rounds = []
for _ in range(5):
    start = time.monotonic(); poller.poll_round(); rounds.append(time.monotonic() - start)
out["cached_rounds"] = rounds
snap = poller.snapshot()
out["sensors"] = len(snap.sensors)
out["sel_entries"] = snap.sel.entries
bmc = poller.bmc
start = time.monotonic()
batch = bmc.sel_after(None)
out["sel_read_first_batch"] = time.monotonic() - start
out["sel_first_batch_entries"] = len(batch.entries)
start = time.monotonic()
bmc.sel_after(batch.last_id)
out["sel_nothing_new"] = time.monotonic() - start
print(json.dumps(out))
PYTHON
echo done >"$OUT/done"
"""


def guest(sel_entries: int) -> None:
    shared = REPO.parent / "shared" / "tools"
    if not (shared / "qemu-nvme" / "run-guest.sh").is_file() or not shutil.which("ipmi_sim"):
        print("guest: ../shared/tools or ipmi_sim (openipmi) missing: skipped")
        return
    work = Path(tempfile.mkdtemp(prefix="nodeslo-bench-bmc-guest-"))
    try:
        initrd = work / "initrd.cpio.gz"
        subprocess.run(["bash", str(shared / "qemu-nvme/make-initramfs.sh"), str(initrd)],
                       check=True, capture_output=True)  # fmt: skip
        emu = work / "bmc.emu"
        emu.write_text(bmc_chassis.emu_file(shared / "qemu-ipmi/bmc.emu"))
        si, console = st.free_port(), st.free_port()
        env = {**os.environ, "SIM_SI_PORT": str(si), "SIM_CONSOLE_PORT": str(console)}
        started = subprocess.run(
            ["bash", str(shared / "qemu-ipmi/start-sim.sh"), str(work / "sim"), str(emu)],
            env=env, check=True, capture_output=True, text=True,
        )  # fmt: skip
        pid = int(started.stdout.split()[-1])
        try:
            time.sleep(1)
            with socket.create_connection(("127.0.0.1", console), timeout=10) as s:
                for i in range(sel_entries):  # each logs one SEL entry
                    s.sendall(
                        f"sensor_set_bit 0x20 0 14 {1 + i % 2} {(i // 2 + 1) % 2} 1\n".encode()
                    )
                time.sleep(2)
            script = work / "guest.sh"
            script.write_text(f"PY={sys.executable}\nOUT=/tmp/share\n{GUEST}")
            extra = (
                f"-chardev socket,id=ipmi0,host=127.0.0.1,port={si},reconnect=10 "
                "-device ipmi-bmc-extern,id=bmc0,chardev=ipmi0 -device isa-ipmi-kcs,bmc=bmc0"
            )
            tmp_dirs = " ".join(p for p in {str(REPO), sys.prefix} if p.startswith("/tmp/"))
            subprocess.run(
                ["bash", str(shared / "qemu-nvme/run-guest.sh"), str(initrd), str(work / "share"),
                 str(script)],
                env={**os.environ, "QEMU_EXTRA": extra, "GUEST_TMP_DIRS": tmp_dirs},
                check=False, capture_output=True, timeout=1800,
            )  # fmt: skip
        finally:
            os.kill(pid, 9)
        share = work / "share"
        if not (share / "done").exists():
            print("guest: the run failed:", (share / "nodeslo.err").read_text()[-2000:])
            return
        result = json.loads((share / "nodeslo.json").read_text())
        tool: dict[str, list[float]] = {}
        for line in (share / "ipmitool.txt").read_text().splitlines():
            name, value = line.split()
            tool.setdefault(name, []).append(float(value) / 1000)
        sdr_tool = statistics.median(tool["ipmitool_sdr_elist"])
        sel_tool = statistics.median(tool["ipmitool_sel_list"])
        cached = statistics.median(result["cached_rounds"])
        print(
            f"guest (QEMU TCG, KCS to ipmi_sim; {result['sensors']} sensors, "
            f"{result['sel_entries']} SEL entries):"
        )
        first = result["first_poll"]
        print(f"  first poll (SDR walk, thresholds, readings, SEL backlog) {first:.2f} s")
        print(
            f"  poll round, SDR cached {cached:.2f} s   ipmitool sdr elist {sdr_tool:.2f} s "
            f"(baseline)   {cached / sdr_tool:.2f}x"
        )
        batch, nothing = result["sel_read_first_batch"], result["sel_nothing_new"]
        print(
            f"  SEL: first {result['sel_first_batch_entries']} entries {batch:.2f} s, nothing "
            f"new {nothing * 1e3:.0f} ms   ipmitool sel list {sel_tool:.2f} s (baseline)   "
            f"{batch / sel_tool:.2f}x, {nothing / sel_tool:.3f}x"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=20000)
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds a command (slow BMC)")
    parser.add_argument("--guest", action="store_true", help="also poll the BMC in QEMU")
    parser.add_argument("--sel-entries", type=int, default=300)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    decode(args.iterations)
    scrape(args.scrapes, args.latency)
    if args.guest:
        guest(args.sel_entries)
    print(f"  finished {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
