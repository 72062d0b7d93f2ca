"""The HTTP side: /metrics, the landing page, /-/healthy and /-/ready.

Scrapes are coalesced: two Prometheus replicas scraping at the same moment share one
collection instead of reading every sysfs file twice.

The server is built to stay reachable for scrapes whatever other clients do:

- at most `max_connections` connections (one thread each) are open at once; when a
  new one arrives at the limit, one is closed to make room, in this order (`Connections.
  victim`): a client that stopped reading its response (a write stalled for
  WRITE_STALL_SECONDS), a slow request head (bytes dribbling, or nothing sent for
  FRESH_GRACE_SECONDS), the longest-idle keep-alive, the oldest connection that has
  sent nothing yet, and last a connection pipelining (serving a request while its
  next one waits: no scraper does that) into buffers it may never read. A connection whose request
  head waits in the kernel for its thread is not closed for being idle (peeked), so
  under a flood a scrape that arrived is served; only when every slot is busy with
  ordinary requests is the newcomer refused (503 on plain HTTP);
- a connection must complete each request head within IDLE_TIMEOUT_SECONDS of being
  ready for it, however slowly the bytes trickle; each blocking read times out after
  IO_TIMEOUT_SECONDS, and a whole response must be written within
  WRITE_TIMEOUT_SECONDS (a client that never reads it);
- an HTTP/0.9 request line (no version) is answered 400 at once, its headers unread;
- on shutdown, idle connections are closed and scrapes in flight finish (up to
  DRAIN_TIMEOUT_SECONDS) before the rest is closed;
- a request line over MAX_REQUEST_LINE bytes gets 414, a head over MAX_HEAD_BYTES or
  with more than 100 headers 431, a malformed one 400, another method 405.

With `--web.config.file`, TLS is negotiated per connection on the handler's thread
(so a slow handshake never blocks the accept loop) with the context in force at that
moment, and rate limiting and basic auth apply to every path, /-/healthy included, as
in exporter-toolkit.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import io
import ipaddress
import logging
import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry

from nodeslo.web.auth import BasicAuth, RateLimiter
from nodeslo.web.clienthello import MAX_HELLO
from nodeslo.web.exposition import OpenMetricsRenderer, TextRenderer
from nodeslo.web.negotiate import FORMATS, accepts_gzip, choose_format
from nodeslo.web.webconfig import RateLimit, TLSSettings, WebConfigSource

log = logging.getLogger("nodeslo.web")

# A connection must complete a request head this long after it became ready for one:
# idle keep-alives and slowloris clients must not pin a handler thread for ever.
IDLE_TIMEOUT_SECONDS = 30.0
# Any one blocking read.
IO_TIMEOUT_SECONDS = 30.0
# A whole response (a client that stops reading it).
WRITE_TIMEOUT_SECONDS = 10.0
# A write blocked this long marks a client that does not read: the first to close.
WRITE_STALL_SECONDS = 1.0
# How much of a waiting connection's input is peeked for a complete request head.
PEEK_BYTES = 16 * 1024
# A real client sends its request head right after connecting; a connection that has
# sent nothing for this long is treated as a slow one.
FRESH_GRACE_SECONDS = 1.0
# SIGTERM: how long scrapes in flight may take to finish (systemd's TimeoutStopSec=10s).
DRAIN_TIMEOUT_SECONDS = 5.0
DEFAULT_MAX_CONNECTIONS = 64
MAX_REQUEST_LINE = 8192
MAX_HEAD_BYTES = 64 * 1024
# Between warnings that the connection limit forces idle connections closed.
PRESSURE_LOG_SECONDS = 60.0
# Connection threads kept for the next connection once theirs closed (starting a
# thread per connection was a tenth of a small host's scrape), and for how long.
SPARE_THREADS = 4
SPARE_THREAD_SECONDS = 60.0

# Go's net/http answers plain HTTP on a TLS port so; Prometheus users recognise it.
_PLAIN_ON_TLS = (
    b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Connection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
)
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 28\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
    b"too many connections, retry\n"
)
_TLS_HANDSHAKE_RECORD = 0x16

K = TypeVar("K")
# The query parameter that restricts a scrape to some collectors, as in node_exporter.
COLLECT_PARAM = "collect[]"


class CollectorFilterError(ValueError):
    """A collect[] parameter naming no enabled collector: the scrape is answered 400."""


# collect[] names -> what the renderers read (anything with collect()); raises
# CollectorFilterError for a name that is unknown or disabled.
Selector = Callable[[frozenset[str]], Any]


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


class Coalescer(Generic[K]):
    """Single-flight: concurrent callers of the same key share one computation."""

    def __init__(self, produce: Callable[[K], bytes]) -> None:
        self._produce = produce
        self._lock = threading.Lock()
        self._inflight: dict[K, Future[bytes]] = {}
        self.computations = 0
        self.followers = 0  # callers that were served another caller's computation

    def get(self, key: K) -> bytes:
        with self._lock:
            future = self._inflight.get(key)
            leader = future is None
            if future is None:
                future = Future()
                self._inflight[key] = future
                self.computations += 1
            else:
                self.followers += 1
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
    web: WebConfigSource | None = None
    auth: BasicAuth = field(default_factory=BasicAuth)
    select: Selector | None = None

    def __post_init__(self) -> None:
        # One renderer per format family, whatever clients ask: the set is fixed.
        text, openmetrics = TextRenderer(), OpenMetricsRenderer()
        self._renderers = {f.content_type: openmetrics if f.openmetrics else text for f in FORMATS}
        self.coalescer = Coalescer(self._render)
        self._limiter: RateLimiter | None = None
        self._limiter_lock = threading.Lock()

    def _render(self, key: tuple[str, frozenset[str]]) -> bytes:
        content_type, names = key
        source = self.registry if not names or self.select is None else self.select(names)
        return self._renderers[content_type](source)

    def metrics(self, accept: str | None, collect: list[str] | None = None) -> tuple[bytes, str]:
        """The exposition; `collect` (the collect[] values) restricts it to those
        collectors, which must all be enabled (CollectorFilterError otherwise)."""
        content_type = choose_format(accept).content_type
        names = frozenset(collect or ())
        if names:
            if self.select is None:
                raise CollectorFilterError("this server has no collectors to select")
            self.select(names)  # validate before joining a coalesced scrape
        return self.coalescer.get((content_type, names)), content_type

    def limiter(self, settings: RateLimit) -> RateLimiter:
        """The bucket for these settings; a reload that changes them starts a new one."""
        with self._limiter_lock:
            current = self._limiter
            if (
                current is None
                or current.interval_seconds != settings.interval_seconds
                or current.burst != settings.burst
            ):
                current = self._limiter = RateLimiter(settings.interval_seconds, settings.burst)
            return current


@dataclass(eq=False)
class Connection:
    # A dup of the client socket: shutdown() on it ends the connection from any thread,
    # whatever the handler did with its own descriptor (an SSL wrap detaches it).
    control: socket.socket
    opened: float  # monotonic
    waiting_since: float | None  # monotonic; None while a request is being served
    requests: int = 0  # requests whose head arrived on this connection
    receiving: bool = False  # the next head's first bytes arrived (read by the handler)
    writing_since: float | None = None  # a response write is in progress since
    pipelined: bool = False  # the request being served came with more bytes behind it

    def pending(self) -> bytes:
        """What waits in the kernel that its handler has not read yet (peeked)."""
        try:
            return self.control.recv(PEEK_BYTES, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except OSError:  # BlockingIOError: nothing
            return b""


class Connections:
    """The open connections, and which of them wait for a request head since when."""

    def __init__(
        self, limit: int, idle_timeout: float = IDLE_TIMEOUT_SECONDS, opaque: bool = False
    ) -> None:
        self.limit = limit
        self.idle_timeout = idle_timeout
        self.opaque = opaque  # TLS: a peek sees records, not request heads
        self._open: set[Connection] = set()
        self._lock = threading.Lock()
        self.evicted = 0
        self.refused = 0
        self.timed_out = 0
        self._pressure_logged = 0.0
        self._pressure_unlogged = 0

    def __len__(self) -> int:
        return len(self._open)

    def admit(self, sock: socket.socket) -> Connection | None:
        now = time.monotonic()
        with self._lock:
            if len(self._open) >= self.limit:
                victim = self.victim(now)
                if victim is None:
                    self.refused += 1
                    return None
                self._drop(victim)
                self.evicted += 1
                self._pressure_unlogged += 1
            conn = Connection(sock.dup(), now, now)
            self._open.add(conn)
            log_pressure = (
                self._pressure_unlogged and now - self._pressure_logged >= PRESSURE_LOG_SECONDS
            )
            if log_pressure:
                evicted, self._pressure_unlogged = self._pressure_unlogged, 0
                self._pressure_logged = now
        if log_pressure:
            log.warning(
                "connection limit reached: closed the longest-idle connections",
                extra={"fields": {"limit": self.limit, "closed": evicted}},
            )
        return conn

    def victim(self, now: float) -> Connection | None:
        """The connection to close for a newcomer (see the module docstring); None
        when every one is serving or has a request waiting to be read."""
        best: tuple[int, float] | None = None
        chosen = None
        for conn in self._open:
            rank = self._rank(conn, now)
            if rank is not None and (best is None or rank < best):
                best, chosen = rank, conn
        return chosen

    def _rank(self, conn: Connection, now: float) -> tuple[int, float] | None:
        writing, waiting = conn.writing_since, conn.waiting_since
        if writing is not None and now - writing >= WRITE_STALL_SECONDS:
            return (0, writing)  # the client does not read
        if waiting is not None and writing is None:
            if conn.receiving:
                return (1, waiting)  # a head trickling in: slowloris
            data = conn.pending()
            if data:
                # A whole request head waiting for its thread is a scrape: keep it (under
                # TLS the bytes are records, so any are taken as one). Part of a head,
                # its thread not yet run: slowloris.
                whole = self.opaque or b"\r\n\r\n" in data or b"\n\n" in data
                return None if whole else (1, waiting)
            if conn.requests:
                return (2, waiting)  # idle keep-alive
            if now - conn.opened >= FRESH_GRACE_SECONDS:
                return (1, waiting)  # connected and silent
            return (3, waiting)  # just connected, its head may be on the way
        # Serving a request while the next one already waits unread: a client that
        # pipelines (no scraper does) into buffers it may never read. It yields its
        # slot to a newcomer, the one served most first.
        if conn.pipelined or conn.pending():
            return (4, -conn.requests)
        return None

    def waiting(self, conn: Connection) -> None:
        conn.receiving = False
        conn.waiting_since = time.monotonic()

    def receiving(self, conn: Connection) -> None:
        conn.receiving = True

    def busy(self, conn: Connection, pipelined: bool = False) -> None:
        conn.waiting_since = None
        conn.receiving = False
        conn.pipelined = pipelined
        conn.requests += 1

    def writing(self, conn: Connection, active: bool) -> None:
        conn.writing_since = time.monotonic() if active else None

    def release(self, conn: Connection) -> None:
        with self._lock:
            if conn in self._open:
                self._open.discard(conn)
                conn.control.close()

    def reap(self) -> int:
        """Close connections that have waited too long for a request head."""
        deadline = time.monotonic() - self.idle_timeout
        with self._lock:
            stale = [
                c for c in self._open if c.waiting_since is not None and c.waiting_since < deadline
            ]
            for conn in stale:
                self._drop(conn)
            self.timed_out += len(stale)
        return len(stale)

    def close_all(self) -> None:
        with self._lock:
            for conn in list(self._open):
                self._drop(conn)

    def drain(self, timeout: float) -> int:
        """Close idle connections; wait up to `timeout` for the others' requests to
        finish. The number still busy at the end (closed by close_all)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                for conn in [c for c in self._open if c.waiting_since is not None]:
                    self._drop(conn)
                busy = len(self._open)
            if not busy or time.monotonic() >= deadline:
                return busy
            time.sleep(0.02)

    def _drop(self, conn: Connection) -> None:
        self._open.discard(conn)
        with contextlib.suppress(OSError):  # the peer may be gone already
            conn.control.shutdown(socket.SHUT_RDWR)
        conn.control.close()


class _CountingIO(io.RawIOBase):
    """The socket's raw reader, counting what it received."""

    def __init__(self, sock: socket.socket) -> None:
        self._raw = sock.makefile("rb", buffering=0)
        self.received = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int | None:
        n = self._raw.readinto(b)
        if n:
            self.received += n
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


class _HeadReader:
    """The connection's reader, with a byte budget for the request head, and what it
    holds received but not yet read (a pipelined request, a body)."""

    def __init__(self, sock: socket.socket) -> None:
        self._counted = _CountingIO(sock)
        self._raw = io.BufferedReader(self._counted)
        self._consumed = 0
        self.budget = MAX_HEAD_BYTES

    def readline(self, limit: int = -1) -> bytes:
        if self.budget <= 0:
            raise http.client.LineTooLong(f"request head over {MAX_HEAD_BYTES} bytes")
        size = self.budget if limit < 0 else min(limit, self.budget)
        line = self._raw.readline(size)
        self._consumed += len(line)
        self.budget -= len(line)
        if self.budget <= 0 and not line.endswith(b"\n"):
            raise http.client.LineTooLong(f"request head over {MAX_HEAD_BYTES} bytes")
        return line

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._consumed += len(data)
        return data

    def buffered(self) -> int:
        """Bytes received and not read: more than the request just parsed."""
        return self._counted.received - self._consumed

    def peek(self) -> bytes:
        """Block until the next bytes arrive (b"" at EOF); consume nothing."""
        return self._raw.peek(1)

    def close(self) -> None:
        self._raw.close()


_local = threading.local()


class Handler(BaseHTTPRequestHandler):
    server_version = "nodeslo"
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # small answers (401, 404, errors) go out at once
    timeout = IO_TIMEOUT_SECONDS
    error_content_type = "text/plain; charset=utf-8"
    error_message_format = "%(code)d %(message)s: %(explain)s\n"
    app: WebApp  # set on the subclass made by make_server
    server: Server

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # replaced by a reader that knows what it holds unread
        self.rfile = _HeadReader(self.connection)  # type: ignore[assignment]
        self._extra_headers: tuple[tuple[str, str], ...] = ()

    def version_string(self) -> str:
        # http.server appends "Python/3.x.y": no need to tell clients what to attack.
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        if log.isEnabledFor(logging.DEBUG):  # every request comes here: format only if kept
            log.debug(format % args, extra={"fields": {"client": self.client_address[0]}})

    def handle_one_request(self) -> None:
        conn: Connection = _local.connection
        connections = self.server.connections
        connections.waiting(conn)
        self.rfile.budget = MAX_HEAD_BYTES  # type: ignore[attr-defined]
        try:
            if not self.rfile.peek():  # type: ignore[attr-defined]
                self.close_connection = True
                return
            connections.receiving(conn)
            self.raw_requestline = self.rfile.readline(MAX_REQUEST_LINE + 1)
            if len(self.raw_requestline) > MAX_REQUEST_LINE:
                self.requestline = self.request_version = self.command = ""
                self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
                return
            if not self.raw_requestline:
                self.close_connection = True
                return
            if len(self.raw_requestline.split()) == 2:
                # HTTP/0.9 has no headers: answer now instead of waiting for them.
                self.requestline = self.raw_requestline.decode("latin-1").rstrip("\r\n")
                self.request_version = self.command = ""
                self.close_connection = True
                self.send_error(HTTPStatus.BAD_REQUEST, "HTTP/0.9 is not supported")
                return
            if not self.parse_request():
                return  # parse_request answered 400, 431 or 505 itself
            connections.busy(conn, pipelined=self.rfile.buffered() > 0)  # type: ignore[attr-defined]
            if self._refused():
                return
            self._dispatch(head=self.command == "HEAD")
            self.wfile.flush()
        except TimeoutError:
            self.close_connection = True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # http.server answers a request line it could not parse in HTTP/0.9 style, a
        # bare body with no status line; every answer here has one.
        if self.request_version in ("", "HTTP/0.9"):
            self.request_version = "HTTP/1.0"
        super().send_error(code, message, explain)

    def _refused(self) -> bool:
        """Answer requests this server will not serve; True if one was answered."""
        if self.request_version == "HTTP/0.9":
            self.send_error(HTTPStatus.BAD_REQUEST, "HTTP/0.9 is not supported")
            return True
        if self.command not in ("GET", "HEAD"):
            self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
            self.send_header("Allow", "GET, HEAD")
            self.send_header("Content-Length", "0")
            self.send_header("Connection", "close")  # a body may follow, unread
            self.end_headers()
            return True
        if self.request_version == "HTTP/1.1" and len(self.headers.get_all("Host") or ()) != 1:
            self.send_error(HTTPStatus.BAD_REQUEST, "Missing or repeated Host header")
            return True
        if self.headers.get("Content-Length", "0") != "0" or "Transfer-Encoding" in self.headers:
            # A GET with a body: it is not read, so the next request cannot be found.
            self.close_connection = True
        return False

    def _send(self, status: int, body: bytes, content_type: str, head: bool = False) -> None:
        if len(body) > 1024 and accepts_gzip(self.headers.get("Accept-Encoding")):
            body = gzip.compress(body, compresslevel=1)
            encoding = "gzip"
        else:
            encoding = ""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if encoding:
            self.send_header("Content-Encoding", encoding)
        for name, value in self._extra_headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        conn: Connection = _local.connection
        connections = self.server.connections
        # The whole response within WRITE_TIMEOUT_SECONDS (sendall's timeout is total);
        # a write that stalls marks a client that does not read, first to be closed.
        self.connection.settimeout(WRITE_TIMEOUT_SECONDS)
        connections.writing(conn, True)
        try:
            # Head and body in one write: two would meet Nagle and the peer's delayed
            # ACK on a keep-alive connection (40 ms per scrape).
            self._headers_buffer.append(b"\r\n")  # type: ignore[attr-defined]
            if not head:
                self._headers_buffer.append(body)  # type: ignore[attr-defined]
            self.flush_headers()
        finally:
            connections.writing(conn, False)
            self.connection.settimeout(IO_TIMEOUT_SECONDS)

    def _text(self, status: int, text: str, head: bool = False) -> None:
        self._send(status, text.encode(), "text/plain; charset=utf-8", head)

    def _dispatch(self, head: bool) -> None:
        app = self.app
        config = app.web.current() if app.web is not None else None
        if config is not None:
            if config.rate_limit is not None and not app.limiter(config.rate_limit).allow():
                self._text(HTTPStatus.TOO_MANY_REQUESTS, "Too Many Requests\n", head)
                return
            self._extra_headers = config.headers
            authorization = self.headers["Authorization"]
            if config.users and not app.auth.check(
                config.users, authorization, self.client_address[0]
            ):
                self.send_response(HTTPStatus.UNAUTHORIZED)
                self.send_header("WWW-Authenticate", 'Basic realm="nodeslo", charset="UTF-8"')
                body = b"Unauthorized\n"
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                for name, value in self._extra_headers:
                    self.send_header(name, value)
                self.end_headers()
                if not head:
                    self.wfile.write(body)
                return
        path, _, query = self.path.partition("?")
        if path == app.telemetry_path:
            collect = parse_qs(query, keep_blank_values=True).get(COLLECT_PARAM)
            try:
                body, content_type = app.metrics(self.headers.get("Accept"), collect)
            except CollectorFilterError as exc:
                # node_exporter's answer, word for word, so scripts that grep it work.
                message = f"Couldn't create filtered metrics handler: {exc}\n"
                self._text(HTTPStatus.BAD_REQUEST, message, head)
                return
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


def _peer_sans(cert: dict[str, Any]) -> set[str]:
    """The certificate's SANs as Go prints them (IP addresses compressed)."""
    out = set()
    for kind, value in cert.get("subjectAltName", ()):
        if kind == "IP Address":
            try:
                out.add(ipaddress.ip_address(value.strip()).compressed)
            except ValueError:
                continue
        else:
            out.add(value)
    return out


def _normalise_san(value: str) -> str:
    try:
        return ipaddress.ip_address(value).compressed
    except ValueError:
        return value


class Server(ThreadingHTTPServer):
    daemon_threads = True
    # Leave the port's TIME_WAIT sockets to the kernel, as every Go exporter does.
    allow_reuse_address = True
    block_on_close = False
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[Handler],
        web: WebConfigSource | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        inherited: socket.socket | None = None,
    ) -> None:
        host = address[0]
        if inherited is not None:
            self.address_family = inherited.family
        elif host in ("", "::") and socket.has_ipv6:
            # ":port" means every address, IPv4 and IPv6, as in node_exporter.
            self.address_family = socket.AF_INET6
            address = ("::", address[1])
        elif ":" in host:
            self.address_family = socket.AF_INET6
        self.web = web
        self.connections = Connections(
            max_connections, opaque=web is not None and web.config.tls is not None
        )
        # Connections for spare threads; a None ends one.
        self._jobs: queue.SimpleQueue[tuple[Any, Any, Connection] | None] = queue.SimpleQueue()
        self._spare_lock = threading.Lock()
        self._spares = 0  # threads waiting on _jobs, less the jobs put for them
        self._closed = False
        if inherited is None:
            super().__init__(address, handler)
            return
        # A listening socket passed by systemd: serve it as it is, bind nothing.
        super().__init__(address, handler, bind_and_activate=False)
        self.socket.close()
        self.socket = inherited
        self.server_address = inherited.getsockname()
        inherited.listen(self.request_queue_size)

    @property
    def tls_enabled(self) -> bool:
        return self.web is not None and self.web.config.tls is not None

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

    def service_actions(self) -> None:
        # serve_forever calls this twice a second.
        self.connections.reap()

    def process_request(self, request: Any, client_address: Any) -> None:
        conn = self.connections.admit(request)
        if conn is None:
            if not self.tls_enabled:
                try:
                    request.setblocking(False)
                    request.send(_BUSY)
                except OSError:
                    pass
            self.shutdown_request(request)
            return
        job = (request, client_address, conn)
        with self._spare_lock:
            if self._spares:
                self._spares -= 1
                self._jobs.put(job)
                return
        thread = threading.Thread(
            target=self._connection_thread, args=(job,), name="http-conn", daemon=True
        )
        thread.start()

    def _connection_thread(self, job: tuple[Any, Any, Connection] | None) -> None:
        """Serve connections: this one, then those handed over while this thread
        waits as a spare (at most SPARE_THREADS wait, each at most SPARE_THREAD_SECONDS)."""
        while job is not None:
            self._serve_connection(*job)
            job = None
            with self._spare_lock:
                if self._spares >= SPARE_THREADS or self._closed:
                    return
                self._spares += 1
            try:
                job = self._jobs.get(timeout=SPARE_THREAD_SECONDS)
            except queue.Empty:
                with self._spare_lock:
                    try:  # handed one just as the wait ended
                        job = self._jobs.get_nowait()
                    except queue.Empty:
                        self._spares -= 1

    def _serve_connection(
        self, request: socket.socket, client_address: Any, conn: Connection
    ) -> None:
        _local.connection = conn
        sock: socket.socket | None = request
        try:
            request.settimeout(IO_TIMEOUT_SECONDS)
            tls = self.web.current().tls if self.web is not None else None
            if tls is not None:
                sock = self._handshake(request, tls, client_address)
            if sock is not None:
                self.finish_request(sock, client_address)
        except OSError as exc:
            log.debug(
                "connection ended", extra={"fields": {"client": client_address[0], "err": str(exc)}}
            )
        except Exception:
            log.exception(
                "connection handler failed", extra={"fields": {"client": client_address[0]}}
            )
        finally:
            self.connections.release(conn)
            if sock is not None and sock is not request:
                sock.close()
            self.shutdown_request(request)

    def _handshake(
        self, sock: socket.socket, tls: TLSSettings, client: Any
    ) -> ssl.SSLSocket | None:
        first = sock.recv(1, socket.MSG_PEEK)
        if not first:
            return None
        if first[0] != _TLS_HANDSHAKE_RECORD:
            if first.isalpha():
                # Read what came, so closing after the answer does not reset it away.
                sock.recv(MAX_HEAD_BYTES, socket.MSG_DONTWAIT)
                sock.sendall(_PLAIN_ON_TLS)
            return None
        context = tls.context
        if tls.legacy is not None:
            # A ClientHello arrives in one segment; its versions pick the context.
            context = tls.context_for(sock.recv(MAX_HELLO, socket.MSG_PEEK))
        try:
            tls_sock = context.wrap_socket(sock, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            # Scanners and misconfigured clients: worth a debug line, not an error.
            log.debug(
                "TLS handshake failed", extra={"fields": {"client": client[0], "err": str(exc)}}
            )
            return None
        if tls.allowed_sans:
            sans = _peer_sans(tls_sock.getpeercert() or {})
            if not sans & {_normalise_san(s) for s in tls.allowed_sans}:
                log.debug(
                    "client certificate has no allowed SAN", extra={"fields": {"client": client[0]}}
                )
                tls_sock.close()
                return None
        return tls_sock

    def server_close(self) -> None:
        super().server_close()
        self.connections.close_all()
        with self._spare_lock:
            self._closed = True
            spares, self._spares = self._spares, 0
        for _ in range(spares):
            self._jobs.put(None)

    def drain(self, timeout: float = DRAIN_TIMEOUT_SECONDS) -> None:
        """After shutdown(): refuse new connections, let requests in flight finish (up
        to `timeout`), then close everything."""
        self.socket.close()
        busy = self.connections.drain(timeout)
        if busy:
            log.warning("closing requests still in flight", extra={"fields": {"count": busy}})
        self.server_close()


def make_server(
    address: tuple[str, int],
    app: WebApp,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    inherited: socket.socket | None = None,
) -> Server:
    """Bind now (so a busy port fails before READY=1), or take the `inherited` listening
    socket (systemd's); serve later with serve_forever."""
    handler = type("AppHandler", (Handler,), {"app": app})
    return Server(address, handler, app.web, max_connections, inherited)
