"""What other clients cannot do to the scrapes: malformed and oversized requests, idle
and slowloris connections, a connection flood, concurrent scrapers, every collector
failing at once, a profile that vanishes on SIGHUP. Scrape coalescing is proved here.

Timings are never asserted; waits are bounded and generous so a loaded CI machine
passes as long as the behaviour is right."""

from __future__ import annotations

import http.client
import signal
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric

from nodeslo import cli
from nodeslo.daemon import Daemon
from nodeslo.profile import load_profile
from nodeslo.web.server import MAX_HEAD_BYTES, MAX_REQUEST_LINE
from support import daemon as d
from support import webserver as w
from support.exposition import samples, value

# --- malformed and oversized requests: each gets a 4xx, and the server goes on ------------

GET = b"GET /metrics HTTP/1.1\r\nHost: x\r\n"


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"garbage\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.x\r\nHost: x\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1 extra\r\nHost: x\r\n\r\n", 400),
        (b"GET /metrics\r\n\r\n", 400),  # HTTP/0.9: no status line would be sent
        (b"\xff\xfe\xfd /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        (b"GET /metrics HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host
        (b"GET /metrics HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET /" + b"a" * MAX_REQUEST_LINE + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (GET + b"X-Big: " + b"b" * MAX_HEAD_BYTES + b"\r\n\r\n", 431),
        (GET + b"".join(b"X-%d: 1\r\n" % i for i in range(101)) + b"\r\n", 431),
        (GET + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 1000) for i in range(80)) + b"\r\n", 431),
        (b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", 405),
        (b"FOO /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        (b"DELETE / HTTP/1.0\r\n\r\n", 405),
    ],
    ids=[
        "garbage",
        "bad-version",
        "four-words",
        "http-0.9",
        "binary-method",
        "no-host",
        "two-hosts",
        "long-request-line",
        "long-header",
        "101-headers",
        "head-over-64k",
        "post",
        "unknown-method",
        "delete",
    ],
)
def test_malformed_or_oversized_request_gets_4xx(request_bytes: bytes, status: int) -> None:
    with w.serving() as server:
        answer = w.raw(w.port(server), request_bytes)
        assert w.status_of(answer) == status, answer[:300]
        assert b"nodeslo_test_up" not in answer
        # The server is unharmed: the next scrape is served.
        assert w.get(w.port(server)).status == 200


def test_a_get_with_a_body_is_answered_and_the_connection_closed() -> None:
    with w.serving() as server:
        answer = w.raw(
            w.port(server),
            GET + b"Content-Length: 5\r\n\r\nGET /",  # a smuggled request
        )
    assert w.status_of(answer) == 200
    assert answer.count(b"HTTP/1.1") == 1
    assert b"Connection: close" in answer


def test_keep_alive_serves_several_requests_on_one_connection() -> None:
    with w.serving() as server:
        conn = http.client.HTTPConnection("127.0.0.1", w.port(server), timeout=10)
        for _ in range(3):
            conn.request("GET", "/metrics")
            response = conn.getresponse()
            assert response.status == 200
            response.read()
        conn.close()


# --- idle, slow and flooding clients --------------------------------------------------------


def _slowloris(port: int, count: int) -> list[socket.socket]:
    """Connections that send the start of a request head and then nothing."""
    out = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        out.append(sock)
    return out


def test_slowloris_connections_do_not_starve_scrapes() -> None:
    with w.serving(max_connections=8) as server:
        port = w.port(server)
        attackers = _slowloris(port, 40)  # five times the limit
        try:
            for _ in range(20):
                reply = w.get(port)
                assert reply.status == 200
                assert "nodeslo_test_up 1.0" in reply.body
                attackers += _slowloris(port, 2)  # and they keep coming
            assert len(server.connections) <= 8
            assert server.connections.evicted >= 40
        finally:
            for sock in attackers:
                sock.close()


def test_a_keep_alive_scraper_outlives_slowloris_connections_at_the_limit() -> None:
    with w.serving(max_connections=4) as server:
        port = w.port(server)
        scraper = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        scraper.request("GET", "/metrics")
        scraper.getresponse().read()
        # Idle since, and older than every attacker: still not the one closed.
        attackers = _slowloris(port, 12)
        try:
            assert w.wait_until(lambda: server.connections.evicted >= 9)
            scraper.request("GET", "/metrics")
            response = scraper.getresponse()
            assert response.status == 200
            response.read()
        finally:
            scraper.close()
            for sock in attackers:
                sock.close()


def test_idle_and_dribbling_connections_are_closed_after_the_idle_timeout() -> None:
    with w.serving(idle_timeout=0.3) as server:
        port = w.port(server)
        idle = socket.create_connection(("127.0.0.1", port), timeout=10)
        dribbler = _slowloris(port, 1)[0]
        start = time.monotonic()
        for _ in range(20):  # one byte every 50 ms: a per-read timeout never fires
            dribbler.send(b"a")
            time.sleep(0.05)
            if server.connections.timed_out >= 2:
                break
        assert idle.recv(1) == b""  # closed by the server
        assert server.connections.timed_out >= 2
        assert time.monotonic() - start < 5
        idle.close()
        dribbler.close()
        assert w.get(port).status == 200


class _Blocking:
    """A collector whose collection waits until released: requests stay in flight."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.calls = 0

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        self.calls += 1
        self.started.set()
        assert self.release.wait(30)
        yield GaugeMetricFamily("nodeslo_test_blocking", "Released.", value=1)


def test_when_every_connection_is_busy_serving_a_newcomer_gets_503() -> None:
    blocking = _Blocking()
    registry = CollectorRegistry()
    registry.register(blocking)
    with w.serving(registry=registry, max_connections=2) as server:
        port = w.port(server)
        replies: list[int] = []
        scrapers = [
            threading.Thread(target=lambda: replies.append(w.get(port).status)) for _ in range(2)
        ]
        for thread in scrapers:
            thread.start()
        assert w.wait_until(lambda: w.app(server).coalescer.followers == 1)
        answer = w.raw(port, GET + b"\r\n")
        assert w.status_of(answer) == 503
        assert server.connections.refused == 1
        blocking.release.set()
        for thread in scrapers:
            thread.join(10)
    assert replies == [200, 200]


# --- coalescing -------------------------------------------------------------------------


def test_two_concurrent_scrapes_cost_one_collection() -> None:
    blocking = _Blocking()
    registry = CollectorRegistry()
    registry.register(blocking)
    with w.serving(registry=registry) as server:
        port = w.port(server)
        app = w.app(server)
        bodies: list[str] = []
        first = threading.Thread(target=lambda: bodies.append(w.get(port).body))
        first.start()
        assert blocking.started.wait(10)
        second = threading.Thread(target=lambda: bodies.append(w.get(port).body))
        second.start()
        # The second scrape has joined the collection in flight before it is released.
        assert w.wait_until(lambda: app.coalescer.followers == 1)
        blocking.release.set()
        first.join(10)
        second.join(10)
        assert blocking.calls == 1
        assert app.coalescer.computations == 1
        assert len(bodies) == 2 and bodies[0] == bodies[1]
        assert "nodeslo_test_blocking 1.0" in bodies[0]
        # Scrapes that do not overlap each collect afresh.
        w.get(port)
        assert blocking.calls == 2


# --- the daemon under load and under failure ---------------------------------------------


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def scrape_loop(port: int, stop: float, latencies: list[float], errors: list[str]) -> None:
    """One scraper on one keep-alive connection, as Prometheus scrapes."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        while time.monotonic() < stop:
            start = time.perf_counter()
            try:
                conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
                response = conn.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                continue
            latencies.append(time.perf_counter() - start)
            if response.status != 200 or len(body) < 1000:
                errors.append(f"status {response.status}, {len(body)} bytes")
    finally:
        conn.close()


# Python's allocator keeps freed arenas; after a warm-up, more than this is a leak.
RSS_GROWTH_BOUND = 32 * 2**20


def test_fifty_concurrent_scrapers_for_five_seconds(seed_tree: Path) -> None:
    """The short version of benchmarks/concurrency.py (60 s there, with figures)."""
    with d.running(
        seed_tree, "--collector.disable-defaults", "--collector.diskstats", "--collector.scheduler"
    ) as daemon:
        warm_errors: list[str] = []
        scrape_loop(daemon.port, time.monotonic() + 1, [], warm_errors)
        before = _rss(daemon.proc.pid)
        latencies: list[float] = []
        errors: list[str] = []
        stop = time.monotonic() + 5
        threads = [
            threading.Thread(target=scrape_loop, args=(daemon.port, stop, latencies, errors))
            for _ in range(50)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        growth = _rss(daemon.proc.pid) - before
        assert daemon.proc.poll() is None
    assert warm_errors == [] and errors == [], errors[:5]
    assert len(latencies) >= 50
    assert growth < RSS_GROWTH_BOUND, growth
    p99 = statistics.quantiles(latencies, n=100)[98]
    print(
        f"\n50 scrapers x 5 s: {len(latencies)} scrapes, p99 {p99 * 1e3:.1f} ms, "
        f"RSS growth {growth / 2**20:.1f} MiB"
    )


def test_daemon_serves_when_every_collector_raises_at_once(seed_tree: Path) -> None:
    args = cli.build_parser().parse_args(
        [
            "serve",
            "--web.listen-address=127.0.0.1:0",
            f"--path.sysfs={seed_tree}/sys",
            f"--path.procfs={seed_tree}/proc",
            f"--path.rootfs={seed_tree}",
            f"--path.udev.data={seed_tree}/run/udev/data",
        ]
    )
    daemon = Daemon(args, load_profile())

    def explode() -> Iterator[Metric]:
        raise RuntimeError("boom")
        yield  # a generator, as collectors are

    for collector in daemon.collectors.collectors:
        collector.collect = explode  # type: ignore[method-assign]
    server = daemon.bind()
    daemon._ready.set()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        for _ in range(3):
            reply = w.get(w.port(server))
            assert reply.status == 200
            success = {
                dict(labels)["collector"]: v
                for (name, labels), v in samples(reply.body).items()
                if name == "nodeslo_collector_success"
            }
            assert success, "no collector ran"
            assert set(success.values()) == {0.0}
            assert value(reply.body, "nodeslo_build_info") == 1
        page = w.get(w.port(server), "/")
        assert page.status == 200 and "failing" in page.body and "boom" in page.body
        assert w.get(w.port(server), "/-/healthy").status == 200
        assert thread.is_alive()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_sighup_after_the_profile_vanished_keeps_serving_the_old_one(
    seed_tree: Path, tmp_path: Path
) -> None:
    # test_daemon covers a syntactically broken profile; a missing file is another path.
    profile = tmp_path / "site.yaml"
    profile.write_text("extends: process-management\nprofile: site-a\n")
    flags = (f"--profile={profile}", "--collector.disable-defaults", "--collector.diskstats")
    with d.running(seed_tree, *flags) as daemon:
        profile.unlink()
        daemon.proc.send_signal(signal.SIGHUP)
        line = daemon.wait_log("profile reload failed")
        assert str(profile) in line
        text = daemon.scrape()
        assert value(text, "nodeslo_profile_info", profile="site-a") == 1
        assert value(text, "nodeslo_profile_last_reload_successful") == 0
        assert daemon.proc.poll() is None


# --- connection threads: reused, bounded, ended with the server ------------------------------


def _connection_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "http-conn"]


def test_connection_threads_are_reused_and_end_with_the_server() -> None:
    """A thread whose connection closed serves the next one (up to SPARE_THREADS wait
    for one); closing the server ends them."""
    from nodeslo.web.server import SPARE_THREADS

    with w.serving() as server:
        seen: set[threading.Thread] = set()
        for _ in range(40):  # one connection after the other: a few threads serve them all
            assert w.get(w.port(server)).status == 200
            seen.update(_connection_threads())
        assert len(seen) <= SPARE_THREADS  # a thread each: 40
        # Many at once: more threads, of which SPARE_THREADS stay once they are done.
        held = [socket.create_connection(("127.0.0.1", w.port(server))) for _ in range(8)]
        assert w.wait_until(lambda: len(server.connections) == 8)
        assert len(_connection_threads()) == 8
        for sock in held:
            sock.close()
        assert w.wait_until(lambda: len(_connection_threads()) == SPARE_THREADS)
        spares = set(_connection_threads())
        replies = [w.get(w.port(server)).status for _ in range(5)]
        assert replies == [200] * 5
        assert set(_connection_threads()) == spares
    assert w.wait_until(lambda: not _connection_threads())
