"""A real rule engine + Alertmanager + webhook receiver on loopback, for end-to-end tests.

Two engines read the same generated rules file: `prometheus` (the Debian package, 2.42)
scrapes and evaluates; `victoriametrics` (Debian's victoria-metrics 1.79) is the
scale-out layout: vmagent scrapes and remote-writes to victoria-metrics, vmalert
evaluates against it, writes its recordings (and ALERTS/ALERTS_FOR_STATE) back through
-remoteWrite.url and restores `for` state through -remoteRead.url. Both are started by
the test with short scrape/evaluation intervals, each process on a free port with its
own temp data dir, and each engine with its own Alertmanager (the Debian
`prometheus-alertmanager`, 0.25), which routes `severity="critical"` to the `pager`
webhook and everything else to `ticket`; the receiver records every notification.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tool(*names: str) -> str | None:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class Notification:
    receiver: str
    status: str
    labels: dict[str, str]
    annotations: dict[str, str]
    received: float


@dataclass
class Webhook:
    """Collects Alertmanager webhook posts: one Notification per alert in each post."""

    notifications: list[Notification] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                payload = json.loads(self.rfile.read(length) or b"{}")
                receiver = self.path.strip("/")
                now = time.time()
                with hook.lock:
                    for alert in payload.get("alerts", []):
                        hook.notifications.append(
                            Notification(
                                receiver,
                                alert.get("status", ""),
                                alert.get("labels", {}),
                                alert.get("annotations", {}),
                                now,
                            )
                        )
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def firing(self, **labels: str) -> list[Notification]:
        return self.received("firing", **labels)

    def received(self, status: str, **labels: str) -> list[Notification]:
        with self.lock:
            return [
                n
                for n in self.notifications
                if n.status == status and all(n.labels.get(k) == v for k, v in labels.items())
            ]

    def wait_for(self, timeout: float, **labels: str) -> Notification:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.firing(**labels)
            if found:
                return found[0]
            time.sleep(0.2)
        raise AssertionError(
            f"no firing notification with {labels} within {timeout:.0f}s; got: "
            + ", ".join(f"{n.receiver}:{n.labels.get('alertname')}" for n in self.notifications)
        )


@contextlib.contextmanager
def serving(exposition: Path) -> Iterator[str]:
    """A scrape target that serves a captured exposition (e.g. from a QEMU guest, which
    has no network) at /metrics, read at each scrape so a test can change it; yields
    its host:port."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = exposition.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


PROMETHEUS = "prometheus"
VICTORIAMETRICS = "victoriametrics"
ENGINES = (PROMETHEUS, VICTORIAMETRICS)
# The binaries each engine needs besides Alertmanager, as Debian installs them.
ENGINE_TOOLS = {
    PROMETHEUS: ("prometheus",),
    VICTORIAMETRICS: ("victoria-metrics", "vmagent", "vmalert"),
}
ALERTMANAGER = ("prometheus-alertmanager", "alertmanager")


def engine_missing(engine: str) -> str | None:
    """What is not installed for `engine` (and its Alertmanager), or None."""
    absent = [name for name in ENGINE_TOOLS[engine] if not tool(name)]
    if not tool(*ALERTMANAGER):
        absent.append("prometheus-alertmanager")
    return ", ".join(absent) or None


class Stack:
    def __init__(
        self,
        workdir: Path,
        query_port: int,
        alertmanager_port: int,
        webhook: Webhook,
        *,
        engine: str = PROMETHEUS,
        rules_port: int | None = None,
    ) -> None:
        self.workdir = workdir
        self.engine = engine
        # Where PromQL/MetricsQL queries go: Prometheus, or victoria-metrics.
        self.prometheus_url = f"http://127.0.0.1:{query_port}"
        # Where the rule engine's /api/v1/alerts is: Prometheus, or vmalert.
        self.rules_url = f"http://127.0.0.1:{rules_port or query_port}"
        self.alertmanager_url = f"http://127.0.0.1:{alertmanager_port}"
        self.webhook = webhook
        self.procs: list[subprocess.Popen[bytes]] = []

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query, now. `nocache=1`: victoria-metrics would otherwise answer
        from its response cache (Prometheus ignores it)."""
        params = {"query": expr, "nocache": "1"}
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=30) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.rules_url}/api/v1/alerts", timeout=30) as r:
            alerts: list[dict[str, Any]] = json.loads(r.read())["data"]["alerts"]
        return alerts

    def alertmanager_alerts(self, **labels: str) -> list[dict[str, Any]]:
        """Alertmanager's view (API v2): each alert with status.state and inhibitedBy."""
        query = urllib.parse.urlencode(
            [("filter", f'{k}="{v}"') for k, v in labels.items()], doseq=True
        )
        url = f"{self.alertmanager_url}/api/v2/alerts?{query}"
        with urllib.request.urlopen(url, timeout=30) as r:
            alerts: list[dict[str, Any]] = json.loads(r.read())
        return alerts

    def wait_ready(self, url: str, timeout: float = 60.0, path: str = "/-/ready") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise AssertionError(
                        f"{proc.args[0]} exited with {proc.returncode}; see {self.workdir}"
                    )
            try:
                with urllib.request.urlopen(url + path, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{url} not ready after {timeout}s")

    def wait_scraped(
        self, job: str = "nodeslo", timeout: float = 60.0, min_targets: int = 1
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.query(f'up{{job="{job}"}} == 1')) >= min_targets:
                return
            time.sleep(0.2)
        raise AssertionError(
            f"{self.engine}: job {job}: fewer than {min_targets} targets scraped successfully"
        )


# The one external label the pack's rules and Alertmanager grouping need (docs/scale-out.md).
EXTERNAL_LABELS = {"cluster": "e2e"}


def prometheus_config(
    targets: list[str],
    rule_files: list[str],
    alertmanager: str,
    interval: str,
    static_configs: list[dict[str, Any]] | None = None,
    *,
    scrape_interval: str | None = None,
) -> dict[str, Any]:
    """Prometheus scrapes every `scrape_interval` (default: `interval`), with a timeout
    as long (its own default caps it at the interval), and evaluates every `interval`."""
    return {
        "global": {
            "scrape_interval": scrape_interval or interval,
            "evaluation_interval": interval,
            "external_labels": dict(EXTERNAL_LABELS),
        },
        "rule_files": rule_files,
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": [
            {"job_name": "nodeslo", "static_configs": static_configs or [{"targets": targets}]},
        ],
    }


def vmagent_config(
    targets: list[str], interval: str, static_configs: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """vmagent reads Prometheus' scrape configuration; its `external_labels` are added to
    every scraped sample it remote-writes, as a site Prometheus' are."""
    return {
        "global": {"scrape_interval": interval, "external_labels": dict(EXTERNAL_LABELS)},
        "scrape_configs": [
            {"job_name": "nodeslo", "static_configs": static_configs or [{"targets": targets}]},
        ],
    }


def default_alertmanager_config(webhook_port: int) -> dict[str, Any]:
    base = f"http://127.0.0.1:{webhook_port}"
    return {
        "route": {
            "receiver": "ticket",
            "group_by": ["alertname", "instance"],
            "group_wait": "1s",
            "group_interval": "1s",
            "repeat_interval": "1h",
            "routes": [{"receiver": "pager", "matchers": ['severity="critical"']}],
        },
        "receivers": [
            {"name": "pager", "webhook_configs": [{"url": f"{base}/pager", "send_resolved": True}]},
            {
                "name": "ticket",
                "webhook_configs": [{"url": f"{base}/ticket", "send_resolved": True}],
            },
        ],
    }


def _spawn(stack: Stack, name: str, argv: list[str]) -> None:
    logs = stack.workdir / "logs"
    logs.mkdir(exist_ok=True)
    stack.procs.append(
        subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=open(logs / f"{name}.log", "wb"),  # noqa: SIM115
        )
    )


def _start_prometheus(
    stack: Stack,
    targets: list[str],
    rule_files: list[str],
    alertmanager: str,
    interval: str,
    *,
    scrape_interval: str | None = None,
    static_configs: list[dict[str, Any]] | None = None,
) -> None:
    prometheus = tool("prometheus")
    assert prometheus, "prometheus must be installed"
    config = stack.workdir / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            prometheus_config(
                targets,
                rule_files,
                alertmanager,
                interval,
                static_configs,
                scrape_interval=scrape_interval,
            )
        )
    )
    _spawn(
        stack,
        "prometheus",
        [
            prometheus,
            f"--config.file={config}",
            f"--storage.tsdb.path={stack.workdir / 'tsdb'}",
            f"--web.listen-address={stack.prometheus_url.removeprefix('http://')}",
            "--web.enable-lifecycle",
        ],
    )
    stack.wait_ready(stack.prometheus_url)


def _start_victoriametrics(
    stack: Stack,
    targets: list[str],
    rule_files: list[str],
    alertmanager: str,
    interval: str,
    *,
    scrape_interval: str | None = None,
    static_configs: list[dict[str, Any]] | None = None,
) -> None:
    """victoria-metrics, vmagent scraping into it, vmalert evaluating against it."""
    database, agent, rules = tool("victoria-metrics"), tool("vmagent"), tool("vmalert")
    assert database and agent and rules, "victoria-metrics, vmagent, vmalert must be installed"
    store = stack.prometheus_url
    _spawn(
        stack,
        "victoria-metrics",
        [
            database,
            f"-storageDataPath={stack.workdir / 'vmdata'}",
            f"-httpListenAddr={store.removeprefix('http://')}",
            # Samples are visible to queries at once, not after the default 30 s: the
            # scenarios' deadlines are a minute (a real fleet keeps the default and
            # accepts 30 s more latency, docs/scale-out.md).
            "-search.latencyOffset=0s",
            "-search.disableCache",
        ],
    )
    stack.wait_ready(store, path="/health")
    scrape = stack.workdir / "vmagent.yml"
    config = vmagent_config(targets, scrape_interval or interval, static_configs)
    scrape.write_text(yaml.safe_dump(config))
    agent_port = free_port()
    _spawn(
        stack,
        "vmagent",
        [
            agent,
            f"-promscrape.config={scrape}",
            f"-remoteWrite.url={store}/api/v1/write",
            f"-remoteWrite.tmpDataPath={stack.workdir / 'vmagent'}",
            "-remoteWrite.flushInterval=200ms",
            f"-httpListenAddr=127.0.0.1:{agent_port}",
        ],
    )
    stack.wait_ready(f"http://127.0.0.1:{agent_port}", path="/health")
    _spawn(
        stack,
        "vmalert",
        [
            rules,
            *(f"-rule={path}" for path in rule_files),
            f"-datasource.url={store}",
            # Recordings and ALERTS/ALERTS_FOR_STATE go back into the store; after a
            # restart vmalert restores each alert's `for` progress from there.
            f"-remoteWrite.url={store}",
            "-remoteWrite.flushInterval=200ms",
            f"-remoteRead.url={store}",
            f"-notifier.url=http://{alertmanager}",
            f"-evaluationInterval={interval}",
            # Prometheus adds its external labels to every alert it sends; vmalert
            # adds these (to alerts without them, e.g. vector(1) or absent()).
            *(f"-external.label={k}={v}" for k, v in EXTERNAL_LABELS.items()),
            # Prometheus resends a firing alert at most every minute (its default
            # --rules.alert.resend-delay) with an expiry 4 x that away; vmalert's
            # default is every evaluation with an expiry of 4 evaluation intervals,
            # 4 s here, which a loaded machine misses and Alertmanager then resolves.
            "-rule.resendDelay=1m",
            # Prometheus labels no alert with its group; Alertmanager groups and
            # inhibits on the alerts' own labels.
            "-disableAlertgroupLabel",
            f"-httpListenAddr={stack.rules_url.removeprefix('http://')}",
        ],
    )
    stack.wait_ready(stack.rules_url, path="/health")


@contextlib.contextmanager
def running(
    workdir: Path,
    targets: list[str],
    rule_files: list[str],
    *,
    interval: str = "1s",
    scrape_interval: str | None = None,
    webhook: Webhook | None = None,
    alertmanager_config: Callable[[int], Path] | None = None,
    static_configs: list[dict[str, Any]] | None = None,
    engine: str = PROMETHEUS,
) -> Iterator[Stack]:
    """Start webhook receiver, Alertmanager and the engine; stop them afterwards.

    `alertmanager_config(webhook_port)` may write a config of its own; by default
    critical goes to the `pager` webhook and everything else to `ticket`.
    `static_configs` replaces the one target group (e.g. targets with labels)."""
    alertmanager = tool(*ALERTMANAGER)
    assert alertmanager, "prometheus-alertmanager must be installed"
    assert engine in ENGINES, engine
    workdir.mkdir(parents=True, exist_ok=True)
    webhook = webhook or Webhook()
    hook_server = ThreadingHTTPServer(("127.0.0.1", 0), webhook.handler())
    threading.Thread(target=hook_server.serve_forever, daemon=True).start()
    query_port, am_port = free_port(), free_port()
    rules_port = free_port() if engine == VICTORIAMETRICS else None
    stack = Stack(workdir, query_port, am_port, webhook, engine=engine, rules_port=rules_port)
    if alertmanager_config is None:
        am_file = workdir / "alertmanager.yml"
        am_file.write_text(yaml.safe_dump(default_alertmanager_config(hook_server.server_port)))
    else:
        am_file = alertmanager_config(hook_server.server_port)
    start = _start_prometheus if engine == PROMETHEUS else _start_victoriametrics
    try:
        _spawn(
            stack,
            "alertmanager",
            [
                alertmanager,
                f"--config.file={am_file}",
                f"--storage.path={workdir / 'am'}",
                f"--web.listen-address=127.0.0.1:{am_port}",
                "--cluster.listen-address=",
            ],
        )
        stack.wait_ready(stack.alertmanager_url)
        start(
            stack,
            targets,
            rule_files,
            f"127.0.0.1:{am_port}",
            interval,
            scrape_interval=scrape_interval,
            static_configs=static_configs,
        )
        yield stack
    finally:
        # Last started first: vmalert before the store it queries and writes to.
        stop_processes(list(reversed(stack.procs)))
        hook_server.shutdown()
        hook_server.server_close()


def stop_processes(procs: list[subprocess.Popen[bytes]], timeout: float = 10.0) -> None:
    """SIGTERM to every process before any is waited for, then SIGKILL to each still
    there after `timeout`: one slow stop never leaves the others running for the rest of
    the suite."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
