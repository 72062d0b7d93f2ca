"""50 concurrent scrapers against `nodeslo serve` on the seed-spec fixture.

    .venv/bin/python benchmarks/concurrency.py [--duration 60] [--scrapers 50]
        [--variants plain,tls,slowloris]

Each scraper holds one keep-alive connection and scrapes back to back with gzip, as a
Prometheus with a very short interval would. A request that fails on a reused
connection before any answer is retried once on a new one (Go's HTTP client does the
same for a GET), and counted as a reconnect; only a second failure is an error.

Variants (one daemon each):
  plain      plain HTTP
  tls        TLS 1.3 + basic auth (bcrypt cost 10) from --web.config.file
  slowloris  plain HTTP while 200 connections dribble request heads and more keep coming

Baseline for the ratios: one sequential scraper on the same daemon for a tenth of the
duration, measured right before the concurrent run. Prints p50/p99/max latency, scrapes
per second, errors, the daemon's CPU per scrape and RSS growth (sampled every second
after a warm-up; the bound the test suite asserts is 32 MiB).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import socket
import ssl
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt

from _common import cpu_seconds, fixture_tree, machine, percentile, rss_bytes
from support import daemon as d  # on sys.path through _common
from support import tlscerts

PASSWORD = "benchmark password"


@dataclass
class Run:
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    reconnects: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Target:
    port: int
    context: ssl.SSLContext | None
    headers: dict[str, str]

    def connect(self) -> http.client.HTTPConnection:
        if self.context is None:
            return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=30, context=self.context)


def scrape(conn: http.client.HTTPConnection, target: Target) -> tuple[int, int]:
    conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip", **target.headers})
    response = conn.getresponse()
    return response.status, len(response.read())


def scraper(target: Target, stop: float, run: Run) -> None:
    conn = target.connect()
    fresh = True
    while time.monotonic() < stop:
        start = time.perf_counter()
        try:
            status, size = scrape(conn, target)
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            conn = target.connect()
            if fresh:
                with run.lock:
                    run.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            try:  # the server closed a reused connection: retry once, like Go's client
                status, size = scrape(conn, target)
            except (OSError, http.client.HTTPException) as again:
                with run.lock:
                    run.errors.append(f"{type(again).__name__}: {again}")
                continue
            with run.lock:
                run.reconnects += 1
        fresh = False
        elapsed = time.perf_counter() - start
        with run.lock:
            run.latencies.append(elapsed)
            if status != 200 or size < 1000:
                run.errors.append(f"status {status}, {size} bytes")
    conn.close()


def slowloris(port: int, stop: float, count: int) -> None:
    """Keep about `count` connections dribbling a request head, replacing closed ones."""
    socks: list[socket.socket] = []
    while time.monotonic() < stop:
        while len(socks) < count:
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                socks.append(sock)
            except OSError:
                break
        alive = []
        for sock in socks:
            try:
                sock.send(b"X-a: b\r\n")
                alive.append(sock)
            except OSError:
                sock.close()
        socks = alive
        time.sleep(0.5)
    for sock in socks:
        sock.close()


def measure(
    target: Target, pid: int, scrapers: int, seconds: float, attackers: int = 0
) -> dict[str, float]:
    run = Run()
    stop = time.monotonic() + seconds
    threads = [threading.Thread(target=scraper, args=(target, stop, run)) for _ in range(scrapers)]
    if attackers:
        threads.append(threading.Thread(target=slowloris, args=(target.port, stop, attackers)))
    cpu_before = cpu_seconds(pid)
    rss_before = rss_bytes(pid)
    rss_peak = rss_before
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        time.sleep(1)
        rss_peak = max(rss_peak, rss_bytes(pid))
    cpu = cpu_seconds(pid) - cpu_before
    count = len(run.latencies)
    return {
        "scrapes": count,
        "rate": count / seconds,
        "p50": statistics.median(run.latencies) if count else float("nan"),
        "p99": percentile(run.latencies, 0.99),
        "max": max(run.latencies, default=float("nan")),
        "errors": len(run.errors),
        "reconnects": run.reconnects,
        "cpu_per_scrape": cpu / count if count else float("nan"),
        "rss_before": rss_before,
        "rss_growth_end": rss_bytes(pid) - rss_before,
        "rss_growth_peak": rss_peak - rss_before,
        "first_error": run.errors[0] if run.errors else "",
    }


def web_config(directory: Path) -> tuple[Path, ssl.SSLContext, dict[str, str]]:
    certs = tlscerts.make(directory)
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
    path = directory / "web.yml"
    path.write_text(
        f"tls_server_config:\n  cert_file: {certs.server.cert}\n  key_file: {certs.server.key}\n"
        f"basic_auth_users:\n  prometheus: {hashed}\n"
    )
    context = ssl.create_default_context(cafile=str(certs.ca.cert))
    token = base64.b64encode(f"prometheus:{PASSWORD}".encode()).decode()
    return path, context, {"Authorization": f"Basic {token}"}


def variant(name: str, tree: Path, args: argparse.Namespace) -> None:
    flags: list[str] = [f"--web.max-connections={args.max_connections}"]
    context, headers = None, {}
    if name == "tls":
        path, context, headers = web_config(Path(tempfile.mkdtemp(prefix="nodeslo-bench-tls-")))
        flags.append(f"--web.config.file={path}")
    with d.running(tree, *flags) as daemon:
        target = Target(daemon.port, context, headers)
        pid = daemon.proc.pid
        measure(target, pid, 1, 2)  # warm-up: caches, allocator arenas, first TLS session
        base = measure(target, pid, 1, max(2.0, args.duration / 10))
        attackers = 200 if name == "slowloris" else 0
        load = measure(target, pid, args.scrapers, args.duration, attackers)
        alive = daemon.proc.poll() is None
    print(
        f"variant {name}: {args.scrapers} scrapers x {args.duration:.0f} s"
        + (f", {attackers} slowloris connections" if attackers else "")
    )
    for label, m in (("sequential (baseline)", base), (f"{args.scrapers} concurrent", load)):
        print(
            f"  {label:22} {m['scrapes']:6.0f} scrapes {m['rate']:7.1f}/s  "
            f"p50 {m['p50'] * 1e3:7.1f} ms  p99 {m['p99'] * 1e3:7.1f} ms  "
            f"max {m['max'] * 1e3:7.1f} ms  cpu/scrape {m['cpu_per_scrape'] * 1e3:6.2f} ms  "
            f"errors {m['errors']:.0f}  reconnects {m['reconnects']:.0f}"
        )
    print(
        f"  ratio concurrent:sequential  p99 {load['p99'] / base['p99']:5.1f}x  "
        f"throughput {load['rate'] / base['rate']:5.2f}x  "
        f"cpu/scrape {load['cpu_per_scrape'] / base['cpu_per_scrape']:5.2f}x"
    )
    print(
        f"  RSS {load['rss_before'] / 2**20:.1f} MiB before the run, growth "
        f"{load['rss_growth_end'] / 2**20:+.1f} MiB at the end, "
        f"{load['rss_growth_peak'] / 2**20:+.1f} MiB at the peak; daemon alive: {alive}"
    )
    if load["first_error"]:
        print(f"  first error: {load['first_error']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per variant")
    parser.add_argument("--scrapers", type=int, default=50)
    parser.add_argument("--max-connections", type=int, default=64)
    parser.add_argument("--variants", default="plain,tls,slowloris")
    args = parser.parse_args()
    if "tls" in args.variants and tlscerts.openssl() is None:
        parser.error("the tls variant needs the openssl CLI")
    print(f"machine: {machine()}")
    version = subprocess.run(["openssl", "version"], check=False, capture_output=True, text=True)
    print(f"openssl: {version.stdout.strip()}")
    tree = fixture_tree("seed-spec")
    for name in args.variants.split(","):
        variant(name, tree, args)
    print(f"finished {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
