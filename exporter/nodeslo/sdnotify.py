"""systemd's notify protocol (sd_notify(3)) without libsystemd: one datagram per state."""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("nodeslo.sdnotify")


class Notifier:
    """Sends READY=1, WATCHDOG=1, RELOADING=1, STOPPING=1 when run under systemd."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        # An abstract socket is written with a leading "@" and means a leading NUL.
        self.address = "\0" + address[1:] if address.startswith("@") else address
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        watchdog_for_us = not pid or pid == str(os.getpid())
        self.watchdog_seconds = int(usec) / 1e6 if usec.isdigit() and watchdog_for_us else None

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def notify(self, state: str) -> bool:
        if not self.address:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self.address)
                sock.sendall(state.encode())
            return True
        except OSError as exc:
            log.warning("sd_notify failed", extra={"fields": {"state": state, "err": str(exc)}})
            return False

    def ping_interval(self) -> float | None:
        """Ping at half the watchdog timeout, as sd_watchdog_enabled(3) advises."""
        return None if self.watchdog_seconds is None else self.watchdog_seconds / 2
