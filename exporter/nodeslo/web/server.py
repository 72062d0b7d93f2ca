"""The HTTP side: /metrics, the landing page, /-/healthy and /-/ready.

Scrapes are coalesced: two Prometheus replicas scraping at the same moment share one
collection instead of reading every sysfs file twice.
"""

from __future__ import annotations

import gzip
import logging
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

log = logging.getLogger("nodeslo.web")

# A connection that sends nothing for this long is closed: idle or slowloris clients
# must not pin a handler thread for ever.
REQUEST_TIMEOUT_SECONDS = 30.0


class ListenAddressError(ValueError):
    pass


def parse_listen_address(text: str) -> tuple[str, int]:
    """node_exporter's forms: ':10131', '0.0.0.0:10131', '[::1]:10131', 'host:10131'."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ListenAddressError(f"not a listen address: {text!r} (use host:port or :port)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ListenAddressError(f"IPv6 addresses go in brackets: {text!r}")
    return host, int(port_text)


class Coalescer:
    """Single-flight: concurrent callers of the same key share one computation."""

    def __init__(self, produce: Callable[[str], bytes]) -> None:
        self._produce = produce
        self._lock = threading.Lock()
        self._inflight: dict[str, Future[bytes]] = {}
        self.computations = 0

    def get(self, key: str) -> bytes:
        with self._lock:
            future = self._inflight.get(key)
            leader = future is None
            if future is None:
                future = Future()
                self._inflight[key] = future
                self.computations += 1
        if not leader:
            return future.result()
        try:
            result = self._produce(key)
        except BaseException as exc:
            future.set_exception(exc)
            raise
        else:
            future.set_result(result)
            return result
        finally:
            with self._lock:
                del self._inflight[key]


@dataclass
class WebApp:
    """What the handler serves; built by the daemon."""

    registry: CollectorRegistry
    telemetry_path: str
    landing_page: Callable[[], str]
    ready: Callable[[], bool]

    def __post_init__(self) -> None:
        self._encoders: dict[str, Any] = {}
        self.coalescer = Coalescer(self._render)

    def _render(self, content_type: str) -> bytes:
        encoder = self._encoders[content_type]
        data: bytes = encoder(self.registry)
        return data

    def metrics(self, accept: str | None) -> tuple[bytes, str]:
        encoder, content_type = choose_encoder(accept or "")
        self._encoders.setdefault(content_type, encoder)
        return self.coalescer.get(content_type), content_type


class Handler(BaseHTTPRequestHandler):
    server_version = "nodeslo"
    protocol_version = "HTTP/1.1"
    timeout = REQUEST_TIMEOUT_SECONDS
    app: WebApp  # set on the subclass made by make_server

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format % args, extra={"fields": {"client": self.client_address[0]}})

    def _send(self, status: int, body: bytes, content_type: str, head: bool = False) -> None:
        gzip_ok = "gzip" in (self.headers.get("Accept-Encoding") or "")
        if gzip_ok and len(body) > 1024:
            body = gzip.compress(body, compresslevel=1)
            encoding = "gzip"
        else:
            encoding = ""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if encoding:
            self.send_header("Content-Encoding", encoding)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _text(self, status: int, text: str, head: bool = False) -> None:
        self._send(status, text.encode(), "text/plain; charset=utf-8", head)

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def do_GET(self) -> None:
        self._dispatch(head=False)

    def _dispatch(self, head: bool) -> None:
        path = self.path.split("?", 1)[0]
        app = self.app
        if path == app.telemetry_path:
            try:
                body, content_type = app.metrics(self.headers.get("Accept"))
            except Exception:
                log.exception("scrape failed")
                self._text(HTTPStatus.INTERNAL_SERVER_ERROR, "scrape failed\n", head)
                return
            self._send(HTTPStatus.OK, body, content_type, head)
        elif path == "/":
            self._send(HTTPStatus.OK, app.landing_page().encode(), "text/html; charset=utf-8", head)
        elif path == "/-/healthy":
            self._text(HTTPStatus.OK, "Healthy\n", head)
        elif path == "/-/ready":
            if app.ready():
                self._text(HTTPStatus.OK, "Ready\n", head)
            else:
                self._text(HTTPStatus.SERVICE_UNAVAILABLE, "Not ready\n", head)
        else:
            self._text(HTTPStatus.NOT_FOUND, "Not found\n", head)

    def _method_not_allowed(self) -> None:
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        self.send_header("Allow", "GET, HEAD")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_PUT = do_DELETE = do_PATCH = _method_not_allowed  # noqa: N815


class Server(ThreadingHTTPServer):
    daemon_threads = True
    # Leave the port's TIME_WAIT sockets to the kernel, as every Go exporter does.
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], handler: type[Handler]) -> None:
        host = address[0]
        if host in ("", "::") and socket.has_ipv6:
            # ":port" means every address, IPv4 and IPv6, as in node_exporter.
            self.address_family = socket.AF_INET6
            address = ("::", address[1])
        elif ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def make_server(address: tuple[str, int], app: WebApp) -> Server:
    """Bind now (so a busy port fails before READY=1); serve later with serve_forever."""
    handler = type("AppHandler", (Handler,), {"app": app})
    return Server(address, handler)
