"""systemd socket activation (sd_listen_fds(3)) without libsystemd.

systemd passes the sockets of a `.socket` unit as file descriptors 3, 4, ... and says
how many in LISTEN_FDS, for the process in LISTEN_PID. The variables are removed once
read, so that processes nodeslo starts (the probes) do not take the sockets for theirs.
"""

from __future__ import annotations

import os
import socket
from collections.abc import MutableMapping

SD_LISTEN_FDS_START = 3
_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


class ActivationError(Exception):
    """No usable socket was passed: the message says what to change."""


def listen_sockets(environ: MutableMapping[str, str] | None = None) -> list[socket.socket]:
    """The TCP sockets systemd passed to this process, in order (at least one)."""
    env = os.environ if environ is None else environ
    pid, count = env.get("LISTEN_PID", ""), env.get("LISTEN_FDS", "")
    for name in _VARIABLES:
        env.pop(name, None)
    if not count:
        raise ActivationError(
            "--web.systemd-socket: systemd passed no socket (LISTEN_FDS is not set): "
            "start nodeslo from a .socket unit (deploy/systemd/nodeslo.socket) or drop the flag"
        )
    if pid != str(os.getpid()):
        raise ActivationError(
            f"--web.systemd-socket: the sockets are for process {pid or '(none)'} "
            f"(LISTEN_PID), not this one ({os.getpid()})"
        )
    if not count.isdigit() or int(count) < 1:
        raise ActivationError(f"--web.systemd-socket: LISTEN_FDS is not a count: {count!r}")
    sockets: list[socket.socket] = []
    try:
        for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count)):
            sockets.append(_tcp_socket(fd))
    except ActivationError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _tcp_socket(fd: int) -> socket.socket:
    try:
        os.set_inheritable(fd, False)  # systemd leaves it inheritable; no child needs it
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise ActivationError(
            f"--web.systemd-socket: file descriptor {fd} is not a socket: {exc.strerror}"
        ) from None
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
        sock.detach()  # not ours to close
        raise ActivationError(
            f"--web.systemd-socket: file descriptor {fd} is not a TCP socket "
            "(use ListenStream=[address:]port in the .socket unit)"
        )
    return sock
