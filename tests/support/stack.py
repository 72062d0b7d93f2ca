"""A real Prometheus + Alertmanager + webhook receiver on loopback, for end-to-end tests.

The Debian packages `prometheus` (2.42) and `prometheus-alertmanager` (0.25) are started
by the test with short scrape/evaluation intervals, each on a free port with its own
temp data dir. Alertmanager routes `severity="critical"` to the `pager` webhook and
everything else to `ticket`; the receiver records every notification it gets.
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


class Stack:
    def __init__(
        self, workdir: Path, prometheus_port: int, alertmanager_port: int, webhook: Webhook
    ) -> None:
        self.workdir = workdir
        self.prometheus_url = f"http://127.0.0.1:{prometheus_port}"
        self.alertmanager_url = f"http://127.0.0.1:{alertmanager_port}"
        self.webhook = webhook
        self.procs: list[subprocess.Popen[bytes]] = []

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=30) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.prometheus_url}/api/v1/alerts", timeout=30) as r:
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

    def wait_ready(self, url: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise AssertionError(
                        f"{proc.args[0]} exited with {proc.returncode}; see {self.workdir}"
                    )
            try:
                with urllib.request.urlopen(url + "/-/ready", timeout=2) as response:
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
        raise AssertionError(f"job {job}: fewer than {min_targets} targets scraped successfully")


def prometheus_config(
    targets: list[str],
    rule_files: list[str],
    alertmanager: str,
    interval: str,
    static_configs: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "global": {
            "scrape_interval": interval,
            "evaluation_interval": interval,
            "external_labels": {"cluster": "e2e"},
        },
        "rule_files": rule_files,
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
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


@contextlib.contextmanager
def running(
    workdir: Path,
    targets: list[str],
    rule_files: list[str],
    *,
    interval: str = "1s",
    webhook: Webhook | None = None,
    alertmanager_config: Callable[[int], Path] | None = None,
    static_configs: list[dict[str, Any]] | None = None,
) -> Iterator[Stack]:
    """Start webhook receiver, Alertmanager and Prometheus; stop them afterwards.

    `alertmanager_config(webhook_port)` may write a config of its own; by default
    critical goes to the `pager` webhook and everything else to `ticket`.
    `static_configs` replaces the one target group (e.g. targets with labels)."""
    prometheus = tool("prometheus")
    alertmanager = tool("prometheus-alertmanager", "alertmanager")
    assert prometheus and alertmanager, "prometheus and alertmanager must be installed"
    webhook = webhook or Webhook()
    hook_server = ThreadingHTTPServer(("127.0.0.1", 0), webhook.handler())
    threading.Thread(target=hook_server.serve_forever, daemon=True).start()
    prom_port, am_port = free_port(), free_port()
    stack = Stack(workdir, prom_port, am_port, webhook)
    if alertmanager_config is None:
        am_file = workdir / "alertmanager.yml"
        am_file.write_text(yaml.safe_dump(default_alertmanager_config(hook_server.server_port)))
    else:
        am_file = alertmanager_config(hook_server.server_port)
    prom_file = workdir / "prometheus.yml"
    prom_file.write_text(
        yaml.safe_dump(
            prometheus_config(targets, rule_files, f"127.0.0.1:{am_port}", interval, static_configs)
        )
    )
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    try:
        stack.procs.append(
            subprocess.Popen(
                [
                    alertmanager,
                    f"--config.file={am_file}",
                    f"--storage.path={workdir / 'am'}",
                    f"--web.listen-address=127.0.0.1:{am_port}",
                    "--cluster.listen-address=",
                ],
                stdout=subprocess.DEVNULL,
                stderr=open(logs / "alertmanager.log", "wb"),  # noqa: SIM115
            )
        )
        stack.procs.append(
            subprocess.Popen(
                [
                    prometheus,
                    f"--config.file={prom_file}",
                    f"--storage.tsdb.path={workdir / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                    "--web.enable-lifecycle",
                ],
                stdout=subprocess.DEVNULL,
                stderr=open(logs / "prometheus.log", "wb"),  # noqa: SIM115
            )
        )
        stack.wait_ready(stack.alertmanager_url)
        stack.wait_ready(stack.prometheus_url)
        yield stack
    finally:
        for proc in stack.procs:
            proc.terminate()
        for proc in stack.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        hook_server.shutdown()
        hook_server.server_close()
