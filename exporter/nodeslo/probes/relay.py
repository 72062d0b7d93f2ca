"""`nodeslo probe wakeup --connect PATH`: the wake-up probe outside the daemon.

Runs where the capability cyclictest needs (CAP_SYS_NICE) may be held without giving it
to the network-facing daemon: its own systemd unit (`AmbientCapabilities=CAP_SYS_NICE`,
user nodeslo) or its own container. It connects to the daemon's socket (see `remote`),
reads one configuration line, and runs the ordinary probe process
(`python -m nodeslo.probes.wakeup CONFIG`) with its standard output on the socket; the
capability passes to that process and to cyclictest as an ambient capability, across
exec. When either end goes (the daemon closes the connection on a profile reload or
because the probe stopped reporting; the probe process dies) it kills what is left and
connects again: a long-lived process, so a container runtime sees no restarts.

Under systemd it pings the watchdog while it loops (a stopped relay is restarted).
`nodeslo probe wakeup` execs `python -m nodeslo.probes.relay` (same PID, same
capabilities): a long-lived process that imports only this module, ~15 MiB instead of
the ~32 MiB of the whole command line.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

from nodeslo import fdwait
from nodeslo import log as logsetup
from nodeslo.sdnotify import Notifier

log = logging.getLogger("nodeslo.probe")

RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 15.0  # a daemon with the probe off in its profile never listens
MAX_CONFIG_BYTES = 1 << 16
DEFAULT_TICK_SECONDS = 5.0
KILL_WAIT_SECONDS = 2.0


class ConfigError(ValueError):
    """The daemon sent no usable configuration line."""


def probe_command(config: str) -> list[str]:
    return [sys.executable, "-m", "nodeslo.probes.wakeup", config]


def read_config(conn: socket.socket, timeout: float) -> str:
    """The first line the daemon sends."""
    conn.settimeout(timeout)
    data = b""
    try:
        while b"\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                raise ConfigError("the daemon closed the connection before the configuration")
            data += chunk
            if len(data) > MAX_CONFIG_BYTES:
                raise ConfigError("configuration line too long")
    except TimeoutError:
        raise ConfigError(f"no configuration within {timeout:g}s") from None
    finally:
        conn.settimeout(None)
    return data.split(b"\n", 1)[0].decode()


class Relay:
    def __init__(
        self,
        path: str,
        *,
        notifier: Notifier | None = None,
        command: Callable[[str], Sequence[str]] = probe_command,
    ) -> None:
        self.path = path
        self.notifier = notifier or Notifier()
        self.command = command
        self.tick = self.notifier.ping_interval() or DEFAULT_TICK_SECONDS
        self.sessions = 0
        self._retry = RETRY_SECONDS
        self._stopping = False

    def stop(self) -> None:
        self._stopping = True

    def run(self, sessions: int | None = None) -> int:
        """Connect, relay, reconnect; `sessions` bounds the loop (tests)."""
        self.notifier.notify("READY=1")
        while not self._stopping and (sessions is None or self.sessions < sessions):
            conn = self._connect()
            if conn is None:
                continue
            self.sessions += 1
            with conn:
                reason = self._session(conn)
            log.info("wake-up probe session ended", extra={"fields": {"reason": reason}})
        self.notifier.notify("STOPPING=1")
        return 0

    def _connect(self) -> socket.socket | None:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            conn.connect(self.path)
        except OSError as exc:
            conn.close()
            log.debug(
                "daemon not reachable", extra={"fields": {"socket": self.path, "err": str(exc)}}
            )
            self.notifier.notify("WATCHDOG=1")
            time.sleep(min(self._retry, self.tick))
            self._retry = min(self._retry * 2, MAX_RETRY_SECONDS)
            return None
        self._retry = RETRY_SECONDS
        return conn

    def _session(self, conn: socket.socket) -> str:
        try:
            config = read_config(conn, timeout=self.tick)
        except (ConfigError, OSError) as exc:
            return str(exc)
        try:
            child = subprocess.Popen(
                self.command(config), stdin=subprocess.DEVNULL, stdout=conn.fileno()
            )
        except OSError as exc:
            time.sleep(RETRY_SECONDS)  # the daemon counts the lost connection as a restart
            return f"cannot start the probe: {exc.strerror or exc}"
        log.info(
            "wake-up probe connected", extra={"fields": {"socket": self.path, "pid": child.pid}}
        )
        try:
            while True:
                self.notifier.notify("WATCHDOG=1")
                # The daemon never writes after the configuration: readable means closed.
                ready = fdwait.readable([conn], self.tick)
                code = child.poll()
                if code is not None:
                    return f"probe exited with status {code}"
                if ready:
                    try:
                        if not conn.recv(1):
                            return "the daemon closed the connection"
                    except OSError as exc:
                        return f"connection lost: {exc.strerror or exc}"
                if self._stopping:
                    return "stopping"
        finally:
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(KILL_WAIT_SECONDS)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nodeslo probe wakeup")
    parser.add_argument("--connect", required=True, metavar="PATH")
    parser.add_argument("--log.level", dest="log_level", choices=logsetup.LEVELS, default="info")
    parser.add_argument(
        "--log.format", dest="log_format", choices=logsetup.FORMATS, default="logfmt"
    )
    args = parser.parse_args(argv)
    logsetup.configure(args.log_level, args.log_format)
    return Relay(args.connect).run()


if __name__ == "__main__":
    sys.exit(main())
