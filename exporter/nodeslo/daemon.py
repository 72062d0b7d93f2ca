"""`nodeslo serve`: wire collectors, profile and HTTP server; handle signals and systemd."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.process_collector import ProcessCollector

from nodeslo import privileges
from nodeslo.collectors import COLLECTORS
from nodeslo.collectors.base import (
    DEFAULT_TIMEOUT_SECONDS,
    Collector,
    CollectorContext,
    CollectorSet,
)
from nodeslo.inbox import Inbox
from nodeslo.log import OnceLog
from nodeslo.paths import Roots
from nodeslo.probes.collector import probe_collectors
from nodeslo.profile import Profile, ProfileError, load_profile
from nodeslo.sdnotify import Notifier
from nodeslo.selfmetrics import ReloadState, SelfCollector
from nodeslo.web import activation, landing
from nodeslo.web.server import (
    DEFAULT_MAX_CONNECTIONS,
    CollectorFilterError,
    Server,
    WebApp,
    make_server,
    parse_listen_address,
)
from nodeslo.web.webconfig import WebConfigCollector, WebConfigError, WebConfigSource

log = logging.getLogger("nodeslo")

# Without a systemd watchdog the main thread sleeps until a command (nodeslo.inbox: a
# signal on any thread, or a finished profile load), so an idle daemon's main thread
# never wakes.


def enabled_collectors(args: argparse.Namespace) -> list[str]:
    """Collector names in force: defaults, minus --no-collector.X, plus --collector.X."""
    names = []
    for name, cls in COLLECTORS.items():
        explicit = getattr(args, f"collector_{name}", None)
        if explicit is None:
            on = cls.enabled_by_default(args) and not args.collector_disable_defaults
        else:
            on = bool(explicit)
        if on:
            names.append(name)
    return names


def listen_addresses(args: argparse.Namespace) -> list[tuple[str, int]]:
    """--web.listen-address, each once, in order; the default when none is given."""
    from nodeslo.cli import DEFAULT_LISTEN_ADDRESS

    given = getattr(args, "web_listen_address", None) or [
        parse_listen_address(DEFAULT_LISTEN_ADDRESS)
    ]
    if isinstance(given, tuple):  # a Namespace built by hand, with one address
        given = [given]
    return list(dict.fromkeys(given))


class BindError(OSError):
    """A listen address that could not be bound; which one is in `address`."""

    def __init__(self, address: tuple[str, int], cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror)
        self.address = address


class Selection:
    """A collect[] scrape: the exporter's own metrics and the chosen collectors only."""

    def __init__(self, parts: list[Any], collectors: CollectorSet, names: frozenset[str]) -> None:
        self.parts = parts
        self.collectors = collectors
        self.names = names

    def collect(self) -> Iterator[Metric]:
        for part in self.parts:
            yield from part.collect()
        yield from self.collectors.collect(self.names)


class Daemon:
    def __init__(
        self, args: argparse.Namespace, profile: Profile, web: WebConfigSource | None = None
    ) -> None:
        self.args = args
        self.profile = profile
        self.web = web
        self.reload_state = ReloadState(True, time.time())
        self.roots = Roots(
            sysfs=args.path_sysfs,
            procfs=args.path_procfs,
            rootfs=args.path_rootfs,
            udev_data=args.path_udev_data,
        )
        self.errors = OnceLog(logging.getLogger("nodeslo.collector"))
        ctx = CollectorContext(
            roots=self.roots, options=args, errors=self.errors, profile=lambda: self.profile
        )
        names = enabled_collectors(args)
        self.disabled = [n for n in COLLECTORS if n not in names]
        collectors: list[Collector] = [COLLECTORS[name](ctx) for name in names]
        collectors += probe_collectors(ctx)  # --probe.* flags, not --collector.*
        timeout = getattr(args, "collector_timeout", DEFAULT_TIMEOUT_SECONDS)
        self.collectors = CollectorSet(collectors, self.errors, timeout)
        self.registry = CollectorRegistry(auto_describe=False)
        own = SelfCollector(lambda: self.profile, self.reload_state)
        self.registry.register(own)
        self.registry.register(self.collectors)
        # The exporter's own metrics: also served by a collect[] scrape, as node_exporter.
        self.exporter_parts: list[Any] = [own]
        if web is not None:
            self.exporter_parts.append(WebConfigCollector(web))
            self.registry.register(self.exporter_parts[-1])
        # The daemon's own CPU and memory, always from the real /proc/self.
        self.exporter_parts.append(ProcessCollector(registry=self.registry))
        self.notifier = Notifier()
        # (command, payload): ("reload", None), ("stop", None), ("loaded", result).
        self.commands: Inbox[tuple[str, Profile | ProfileError | None]] = Inbox(
            {
                signal.SIGHUP: ("reload", None),
                signal.SIGTERM: ("stop", None),
                signal.SIGINT: ("stop", None),
            }
        )
        self._reloading = False
        self._reload_again = False
        self._ready = threading.Event()
        # Sockets passed by systemd (--web.systemd-socket), served instead of binding.
        self.inherited: list[socket.socket] = []
        self.servers: list[Server] = []

    def landing_page(self) -> str:
        return landing.render(
            self.args.web_telemetry_path,
            self.profile.name,
            self.profile.sha256,
            dict(self.collectors.status),
            self.disabled,
        )

    def select(self, names: frozenset[str]) -> Selection:
        """collect[]: only enabled collectors, named exactly (node_exporter's rule: a
        collector disabled by flag is not enabled by a URL)."""
        enabled = {c.name for c in self.collectors.collectors}
        for name in sorted(names):
            if name not in enabled:
                kind = "disabled" if name in self.disabled else "missing"
                raise CollectorFilterError(
                    f"{kind} collector: {name} (enabled: {', '.join(sorted(enabled))})"
                )
        return Selection(self.exporter_parts, self.collectors, names)

    def bind(self) -> Server:
        app = WebApp(
            registry=self.registry,
            telemetry_path=self.args.web_telemetry_path,
            landing_page=self.landing_page,
            ready=self._ready.is_set,
            web=self.web,
            select=self.select,
        )
        max_connections = getattr(self.args, "web_max_connections", DEFAULT_MAX_CONNECTIONS)
        if self.inherited:
            self.servers = [
                make_server(sock.getsockname()[:2], app, max_connections, sock)
                for sock in self.inherited
            ]
            return self.servers[0]
        for address in listen_addresses(self.args):
            try:
                self.servers.append(make_server(address, app, max_connections))
            except OSError as exc:
                for server in self.servers:
                    server.server_close()
                self.servers = []
                raise BindError(address, exc) from exc
        return self.servers[0]

    def _load(self) -> Profile | ProfileError:
        try:
            return load_profile(self.args.profile)
        except ProfileError as exc:
            return exc
        except Exception as exc:  # a validator bug must not end the daemon either
            log.debug("profile load raised", exc_info=True)
            path = self.args.profile or self.profile.name
            return ProfileError(path, None, "", f"cannot load: {type(exc).__name__}: {exc}")

    def _start_reload(self) -> None:
        """SIGHUP: load on a worker thread, so watchdog pings and SIGTERM are answered
        while a large file parses; a SIGHUP during a load queues one more."""
        if self._reloading:
            self._reload_again = True
            return
        self._reloading = True
        self.notifier.notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
        threading.Thread(
            target=lambda: self.commands.post(("loaded", self._load())),
            name="profile-reload",
            daemon=True,
        ).start()

    def _apply(self, result: Profile | ProfileError) -> None:
        if isinstance(result, ProfileError):
            self.reload_state.successful = False
            log.error(
                "profile reload failed, keeping the old profile",
                extra={"fields": {"err": str(result), "profile": self.profile.name}},
            )
        else:
            self.profile = result
            self.reload_state.successful = True
            self.reload_state.success_timestamp = time.time()
            self.collectors.profile_changed()
            log.info(
                "profile reloaded",
                extra={"fields": {"profile": result.name, "sha256": result.sha256[:12]}},
            )
        self.notifier.notify("READY=1")

    def run(self) -> int:
        if not self.servers:
            self.bind()
        self.commands.open()
        self.collectors.start()
        threads = []
        for server in self.servers:
            threads.append(threading.Thread(target=server.serve_forever, name="http", daemon=True))
            threads[-1].start()
        self._ready.set()
        configured = listen_addresses(self.args)
        for i, server in enumerate(self.servers):
            host, port = str(server.server_address[0]), server.server_address[1]
            if not self.inherited:
                host = configured[i][0]  # as given: ":10131" means every address
            log.info(
                "listening",
                extra={
                    "fields": {
                        "address": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
                        "collectors": ",".join(c.name for c in self.collectors.collectors),
                        "profile": self.profile.name,
                        "systemd_socket": str(bool(self.inherited)).lower(),
                        "tls": str(server.tls_enabled).lower(),
                    }
                },
            )
        self.notifier.notify("READY=1")
        tick = self.notifier.ping_interval()
        next_ping = time.monotonic() + tick if tick else None
        try:
            while True:
                timeout = None if next_ping is None else max(0.0, next_ping - time.monotonic())
                commands = self.commands.wait(timeout)
                if tick and next_ping is not None and time.monotonic() >= next_ping:
                    # Ping only while the HTTP thread is alive: a dead server must be
                    # restarted. On a clock, not on idleness: a flood of SIGHUPs must
                    # not starve it.
                    if all(thread.is_alive() for thread in threads):
                        self.notifier.notify("WATCHDOG=1")
                    next_ping = time.monotonic() + tick
                if ("stop", None) in commands:
                    break
                for command, payload in commands:
                    self._handle(command, payload)
            return self.shutdown(threads)
        finally:
            self.commands.close()

    def _handle(self, command: str, payload: Profile | ProfileError | None) -> None:
        if command == "reload":
            self._start_reload()
        elif command == "loaded":
            assert payload is not None
            self._apply(payload)
            self._reloading = False
            if self._reload_again:
                self._reload_again = False
                self._start_reload()

    def shutdown(self, threads: list[threading.Thread]) -> int:
        log.info("shutting down")
        self._ready.clear()
        self.notifier.notify("STOPPING=1")
        for server in self.servers:
            server.shutdown()
        for server in self.servers:  # the drains overlap: each waits for its scrapes
            server.drain()
        for thread in threads:
            thread.join(timeout=1.0)
        self.collectors.close()
        return 0


def serve(args: argparse.Namespace) -> int:
    try:
        profile = load_profile(args.profile)
    except ProfileError as exc:
        log.error("invalid profile", extra={"fields": {"err": str(exc)}})
        return 2
    except Exception as exc:  # the same documented exit for a validator bug
        log.error(
            "invalid profile",
            extra={"fields": {"err": f"{args.profile}: {type(exc).__name__}: {exc}"}},
        )
        return 2
    web = None
    if getattr(args, "web_config_file", ""):
        try:
            web = WebConfigSource(args.web_config_file)
        except WebConfigError as exc:
            log.error("invalid web config", extra={"fields": {"err": str(exc)}})
            return 2
    inherited: list[socket.socket] = []
    if getattr(args, "web_systemd_socket", False):
        try:
            inherited = activation.listen_sockets()
        except activation.ActivationError as exc:
            log.error(str(exc))
            return 2
        if args.web_listen_address is not None:
            log.warning("--web.listen-address is ignored: serving the systemd sockets")
    before, after = privileges.raise_open_files_limit()
    if after != before:
        log.debug("raised the open files limit", extra={"fields": {"from": before, "to": after}})
    # Root-only set-up (the NVMe helper fork) runs first, while no thread exists yet.
    for name in enabled_collectors(args):
        COLLECTORS[name].prepare_privileged(args)
    daemon = Daemon(args, profile, web)
    daemon.inherited = inherited
    try:
        daemon.bind()
    except BindError as exc:
        host, port = exc.address
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        log.error(f"cannot listen on {host}:{port}: {reason}")
        return 1
    if not drop_privileges(getattr(args, "run_as_user", None)):
        return 2
    return daemon.run()


def drop_privileges(user: str | None) -> bool:
    """After the port is bound: become `user` with no capabilities. False on failure."""
    if user is None:
        if os.geteuid() == 0:
            log.warning("running as root: the network-facing process keeps root; see --run-as-user")
        return True
    try:
        entry = privileges.drop_to_user(user)
    except privileges.PrivilegeError as exc:
        log.error("cannot drop privileges", extra={"fields": {"err": str(exc)}})
        return False
    log.info("dropped privileges", extra={"fields": {"user": entry.pw_name, "uid": entry.pw_uid}})
    return True
