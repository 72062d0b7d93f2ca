"""The real HTTP server (`nodeslo.web.server`) in-process, over a small registry, and
raw clients for it: what the TLS, auth and robustness tests talk to."""

from __future__ import annotations

import base64
import contextlib
import http.client
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Gauge

from nodeslo.web.server import DEFAULT_MAX_CONNECTIONS, Server, WebApp, make_server
from nodeslo.web.webconfig import WebConfigSource


def small_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Gauge("nodeslo_test_up", "A value to scrape.", registry=registry).set(1)
    return registry


@contextlib.contextmanager
def serving(
    web: WebConfigSource | None = None,
    registry: CollectorRegistry | None = None,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    idle_timeout: float | None = None,
) -> Iterator[Server]:
    app = WebApp(
        registry=registry or small_registry(),
        telemetry_path="/metrics",
        landing_page=lambda: "<html>nodeslo</html>",
        ready=lambda: True,
        web=web,
    )
    server = make_server(("127.0.0.1", 0), app, max_connections)
    if idle_timeout is not None:
        server.connections.idle_timeout = idle_timeout
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def port(server: Server) -> int:
    return int(server.server_address[1])


def app(server: Server) -> WebApp:
    handler_app: WebApp = server.RequestHandlerClass.app  # type: ignore[attr-defined]
    return handler_app


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: str


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def get(
    server_port: int,
    path: str = "/metrics",
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
    method: str = "GET",
) -> Reply:
    conn: http.client.HTTPConnection
    if context is None:
        conn = http.client.HTTPConnection("127.0.0.1", server_port, timeout=10)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", server_port, timeout=10, context=context)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return Reply(response.status, response.headers, response.read().decode())
    finally:
        conn.close()


def raw(server_port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send bytes as they are; return everything the server answers before closing."""
    with socket.create_connection(("127.0.0.1", server_port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def status_of(answer: bytes) -> int:
    line = answer.split(b"\r\n", 1)[0].decode("latin-1")
    assert line.startswith("HTTP/"), answer[:200]
    return int(line.split()[1])


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()
