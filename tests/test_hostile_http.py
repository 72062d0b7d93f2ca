"""Hostile HTTP clients (issue 19, items 3 and 5, and the low-severity findings).

What each gets: an invented `Accept` is answered in text 0.0.4 and costs nothing kept;
a folded header never reaches a response header; `gzip;q=0` is honoured; the Server
header names no Python version; an HTTP/0.9 request is answered 400 at once; a flood
of keep-alive connections or of clients that never read their responses never takes
a scrape's slot; SIGTERM lets a scrape in flight finish.
"""

from __future__ import annotations

import gzip
import http.client
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric

from nodeslo.web import server as web
from nodeslo.web.negotiate import FORMATS, TEXT, accepts_gzip, choose_format
from support import webserver as w

PROMETHEUS_2 = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
PROMETHEUS_3 = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
    "application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;"
    "escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)
OM = "application/openmetrics-text; version=1.0.0; charset=utf-8"
OM_UNDERSCORES = OM + "; escaping=underscores"


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        (PROMETHEUS_2, OM + "; escaping=underscores"),
        (PROMETHEUS_3, OM + "; escaping=allow-utf-8"),
        ("application/openmetrics-text", OM),
        ("", TEXT.content_type),
        (None, TEXT.content_type),
        ("text/plain;version=0.0.4", TEXT.content_type),
        ("application/openmetrics-text;version=9.9.9", TEXT.content_type),
        ("application/openmetrics-text;version=1.0.0;escaping=dots", OM_UNDERSCORES),
        ("application/openmetrics-text;version=1.0.0;q=0, text/plain", TEXT.content_type),
        (
            "text/plain;q=0.9, application/openmetrics-text;version=1.0.0",
            OM + "; escaping=underscores",
        ),
        ("application/json", TEXT.content_type),
        ("application/openmetrics-text;\r\n version=1.0.0\r\nX: y", TEXT.content_type),
    ],
)
def test_negotiation_answers_with_a_fixed_content_type(
    accept: str | None, content_type: str
) -> None:
    chosen = choose_format(accept)
    assert chosen.content_type == content_type
    assert chosen in FORMATS


def test_two_thousand_invented_versions_cost_nothing_kept() -> None:
    with w.serving() as server:
        app = w.app(server)
        renderers = dict(app._renderers)
        conn = http.client.HTTPConnection("127.0.0.1", w.port(server), timeout=10)
        try:
            for i in range(2000):
                version = f"{i}." + "9" * 200
                conn.request("GET", "/metrics", headers={"Accept": f"{OM};version={version}"})
                response = conn.getresponse()
                assert response.status == 200
                assert response.headers["Content-Type"] == TEXT.content_type
                response.read()
        finally:
            conn.close()
        assert app._renderers == renderers  # the same few renderers, no new ones
        assert app.coalescer.computations == 2000


def test_a_folded_accept_header_never_reaches_the_content_type() -> None:
    with w.serving() as server:
        answer = w.raw(
            w.port(server),
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Accept: application/openmetrics-text;\r\n version=1.0.0;\r\n x=\r\n\r\n",
        )
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    content_types = [h for h in head.split("\r\n") if h.lower().startswith("content-type")]
    assert len(content_types) == 1
    assert content_types[0].split(": ", 1)[1] in {f.content_type for f in FORMATS}


@pytest.mark.parametrize(
    ("accept_encoding", "gzipped"),
    [
        ("gzip", True),
        ("gzip, deflate", True),
        ("deflate, gzip;q=0.5", True),
        ("*", True),
        ("gzip;q=0", False),
        ("gzip;q=0.0, *;q=1", False),
        ("*;q=0", False),
        ("identity", False),
        ("gzipper", False),
        ("", False),
    ],
)
def test_gzip_only_when_acceptable(accept_encoding: str, gzipped: bool) -> None:
    assert accepts_gzip(accept_encoding) is gzipped


def test_gzip_q_0_is_answered_plain_and_the_server_header_names_no_python() -> None:
    registry = CollectorRegistry()
    registry.register(_Big())
    with w.serving(registry=registry) as server:
        plain = w.get(w.port(server), headers={"Accept-Encoding": "gzip;q=0"})
        assert plain.status == 200 and "Content-Encoding" not in plain.headers
        conn = http.client.HTTPConnection("127.0.0.1", w.port(server), timeout=10)
        conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
        response = conn.getresponse()
        assert response.headers["Content-Encoding"] == "gzip"
        assert b"nodeslo_test_big" in gzip.decompress(response.read())
        conn.close()
        assert plain.headers["Server"] == "nodeslo"


def test_an_http_0_9_request_is_answered_at_once_and_frees_its_slot() -> None:
    with w.serving() as server:
        with socket.create_connection(("127.0.0.1", w.port(server)), timeout=5) as sock:
            sock.sendall(b"GET /metrics\r\n")  # HTTP/0.9: no version, no headers follow
            answer = sock.recv(4096)  # within the 5 s timeout, not the 30 s one
        assert w.status_of(answer) == 400
        assert w.wait_until(lambda: len(server.connections) == 0)


# --- item 5: floods never take a scrape's slot ----------------------------------------------


class _Big:
    """A large exposition (~300 KiB): responses that fill a client's socket buffers."""

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("nodeslo_test_big", "Many series.", labels=["i"])
        for i in range(6000):
            family.add_metric([f"{i:040d}"], i)
        yield family


def test_a_request_waiting_to_be_read_is_never_the_one_closed() -> None:
    connections = web.Connections(limit=2)
    pairs = [socket.socketpair() for _ in range(3)]
    try:
        idle = connections.admit(pairs[0][0])
        assert idle is not None
        idle.requests = 1  # served one request, now an idle keep-alive
        fresh = connections.admit(pairs[1][0])
        assert fresh is not None
        pairs[1][1].sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")  # not read yet
        assert connections.admit(pairs[2][0]) is not None
        assert idle.control.fileno() == -1  # the idle keep-alive made room
        assert fresh.control.fileno() != -1  # the scrape waiting for its thread did not
    finally:
        connections.close_all()
        for a, b in pairs:
            a.close()
            b.close()


def test_at_the_limit_a_pipelining_client_yields_but_an_ordinary_scrape_does_not() -> None:
    connections = web.Connections(limit=2)
    pairs = [socket.socketpair() for _ in range(4)]
    try:
        scrape = connections.admit(pairs[0][0])
        pipelining = connections.admit(pairs[1][0])
        assert scrape is not None and pipelining is not None
        connections.busy(scrape)
        connections.busy(pipelining, pipelined=True)  # its next request came with this one
        newcomer = connections.admit(pairs[2][0])
        assert newcomer is not None
        assert pipelining.control.fileno() == -1 and scrape.control.fileno() != -1
        connections.busy(newcomer)
        # Only ordinary requests in flight: the newcomer is refused, nobody is cut off.
        assert connections.admit(pairs[3][0]) is None and connections.refused == 1
    finally:
        connections.close_all()
        for a, b in pairs:
            a.close()
            b.close()


def _keep_alive_flood(port: int, stop: threading.Event, held: list[socket.socket]) -> None:
    """New connections that each make one request, read the answer, and stay idle."""
    while not stop.is_set():
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.recv(4096)
            held.append(sock)
        except OSError:
            pass
        time.sleep(0.005)


def test_scrapes_are_served_through_a_keep_alive_flood() -> None:
    with w.serving(max_connections=8) as server:
        port = w.port(server)
        stop, held = threading.Event(), []
        floods = [
            threading.Thread(target=_keep_alive_flood, args=(port, stop, held)) for _ in range(3)
        ]
        for thread in floods:
            thread.start()
        try:
            assert w.wait_until(lambda: server.connections.evicted >= 20)
            statuses = [w.get(port).status for _ in range(30)]  # a new connection each
        finally:
            stop.set()
            for thread in floods:
                thread.join(10)
            for sock in held:
                sock.close()
    assert statuses == [200] * 30


def _pipeline_and_never_read(port: int, out: list[socket.socket]) -> None:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 50)
    out.append(sock)


def test_clients_that_never_read_do_not_starve_the_scraper(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(web, "WRITE_STALL_SECONDS", 0.2)
    registry = CollectorRegistry()
    registry.register(_Big())
    with w.serving(registry=registry, max_connections=8) as server:
        port = w.port(server)
        readers_never: list[socket.socket] = []
        try:
            for _ in range(8):
                _pipeline_and_never_read(port, readers_never)
            # Every slot ends up blocked writing to a client that does not read.
            assert w.wait_until(
                lambda: sum(c.writing_since is not None for c in server.connections._open) == 8
            )
            time.sleep(0.3)
            for _ in range(5):
                reply = w.get(port)
                assert reply.status == 200 and "nodeslo_test_big" in reply.body
            assert server.connections.evicted >= 1
        finally:
            for sock in readers_never:
                sock.close()


# --- SIGTERM: a scrape in flight finishes -----------------------------------------------------


class _Slow:
    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        self.started.set()
        assert self.release.wait(30)
        yield GaugeMetricFamily("nodeslo_test_slow", "Finished.", value=1)


def test_shutdown_drains_a_scrape_in_flight() -> None:
    slow = _Slow()
    registry = CollectorRegistry()
    registry.register(slow)
    app = web.WebApp(
        registry=registry, telemetry_path="/metrics", landing_page=lambda: "", ready=lambda: True
    )
    server = web.make_server(("127.0.0.1", 0), app)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    port = w.port(server)
    idle = socket.create_connection(("127.0.0.1", port), timeout=10)
    replies: list[w.Reply] = []
    scraper = threading.Thread(target=lambda: replies.append(w.get(port)))
    scraper.start()
    assert slow.started.wait(10)
    server.shutdown()
    thread.join(5)
    threading.Timer(0.3, slow.release.set).start()
    server.drain(timeout=10)  # what the daemon does on SIGTERM
    scraper.join(10)
    assert replies and replies[0].status == 200
    assert "nodeslo_test_slow 1.0" in replies[0].body
    assert idle.recv(1) == b""  # the idle connection was closed, not waited for
    idle.close()
