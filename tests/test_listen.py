"""Where the daemon listens: --web.listen-address repeated, --web.systemd-socket with a
socket really passed by systemd-socket-activate (and by hand, for the bad cases)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO, missing
from support import daemon as d


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fetch(port: int, path: str = "/-/healthy") -> tuple[int, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
        return response.status, response.read().decode()


def test_every_listen_address_serves(seed_tree: Path) -> None:
    first, second = free_port(), free_port()
    with d.running(
        seed_tree,
        f"--web.listen-address=127.0.0.1:{second}",
        f"--web.listen-address=127.0.0.1:{first}",
    ) as daemon:
        # support.daemon's own 127.0.0.1:0, then the two: three listening lines
        daemon.wait_log(f"listening.*127.0.0.1:{first}")
        daemon.wait_log(f"listening.*127.0.0.1:{second}")
        for port in (daemon.port, first, second):
            assert fetch(port) == (200, "Healthy\n")
            status, body = fetch(port, "/metrics")
            assert status == 200 and "nodeslo_collector_success" in body


def test_the_same_address_twice_is_bound_once(seed_tree: Path) -> None:
    port = free_port()
    address = f"--web.listen-address=127.0.0.1:{port}"
    with d.running(seed_tree, address, address) as daemon:
        daemon.wait_log(f"listening.*127.0.0.1:{port}")
        assert fetch(port)[0] == 200
        assert sum(f"127.0.0.1:{port}" in line for line in daemon.log) == 1


def test_a_bad_listen_address_among_good_ones_exits_2_naming_it() -> None:
    result = d.run_cli(
        "serve", "--web.listen-address=127.0.0.1:10131", "--web.listen-address=127.0.0.1:http"
    )
    assert result.returncode == 2
    assert "not a listen address: '127.0.0.1:http'" in result.stderr


def test_a_busy_second_address_exits_1_naming_it_and_frees_the_first(seed_tree: Path) -> None:
    first = free_port()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        result = d.run_cli(
            "serve",
            f"--path.sysfs={seed_tree}/sys",
            f"--path.procfs={seed_tree}/proc",
            "--no-probe.storage",
            "--no-probe.wakeup",
            f"--web.listen-address=127.0.0.1:{first}",
            f"--web.listen-address=127.0.0.1:{taken}",
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{taken}: address already in use" in result.stderr
    with socket.socket() as again:  # the first address was released, not leaked
        again.bind(("127.0.0.1", first))


# Puts descriptor N at 3 (as systemd does), sets LISTEN_PID to its own PID unless told
# otherwise, and becomes the daemon (exec keeps the PID).
_EXEC_WITH_FD3 = """
import os, sys
fd, pid, count, argv = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
os.dup2(fd, 3)
os.environ["LISTEN_PID"] = pid or str(os.getpid())
os.environ["LISTEN_FDS"] = count
os.execv(argv[0], argv)
"""


def _serve_with_fd3(
    fd3: int, tree: Path, listen_pid: str = "", listen_fds: str = "1"
) -> subprocess.Popen[str]:
    """`nodeslo serve --web.systemd-socket` with `fd3` as descriptor 3."""
    serve = [a for a in d.command(tree, "--web.systemd-socket") if "listen-address" not in a]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
    return subprocess.Popen(
        [sys.executable, "-c", _EXEC_WITH_FD3, str(fd3), listen_pid, listen_fds, *serve],
        pass_fds=(fd3,),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_socket_activation_by_hand_serves_the_passed_socket(seed_tree: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        daemon = d.Daemon(_serve_with_fd3(listener.fileno(), seed_tree))
        try:
            line = daemon.wait_listening().wait_log("listening")
            assert "systemd_socket=true" in line and f"127.0.0.1:{port}" in line
            assert fetch(port)[0] == 200
            assert "nodeslo_collector_success" in fetch(port, "/metrics")[1]
        finally:
            assert daemon.stop() == 0, "\n".join(daemon.log)


@pytest.mark.parametrize(
    ("case", "answer"),
    [
        # the variables name another process: sockets not meant for this one
        ("wrong-pid", "the sockets are for process 1 (LISTEN_PID), not this one"),
        # descriptor 3 is a file, not a socket
        ("not-a-socket", "file descriptor 3 is not a socket"),
        # a Unix socket: nodeslo serves TCP
        ("unix-socket", "file descriptor 3 is not a TCP socket"),
        # LISTEN_FDS garbage
        ("bad-count", "LISTEN_FDS is not a count: 'x'"),
    ],
)
def test_bad_passed_sockets_exit_2_with_a_message(
    seed_tree: Path, tmp_path: Path, case: str, answer: str
) -> None:
    if case == "not-a-socket":
        handle = open(tmp_path / "file", "w+")  # noqa: SIM115 - closed below
    elif case == "unix-socket":
        handle = socket.socket(socket.AF_UNIX)
        handle.bind(str(tmp_path / "s"))
        handle.listen()
    else:
        handle = socket.create_server(("127.0.0.1", 0))
    try:
        proc = _serve_with_fd3(
            handle.fileno(),
            seed_tree,
            "1" if case == "wrong-pid" else "",
            "x" if case == "bad-count" else "1",
        )
        _, stderr = proc.communicate(timeout=60)
    finally:
        handle.close()
    assert proc.returncode == 2, stderr
    assert answer in stderr and "Traceback" not in stderr


def test_systemd_socket_without_sockets_exits_2_with_a_message() -> None:
    env = {"LISTEN_FDS": "", "LISTEN_PID": ""}
    result = d.run_cli("serve", "--web.systemd-socket", env=env)
    assert result.returncode == 2
    assert "systemd passed no socket (LISTEN_FDS is not set)" in result.stderr


def test_socket_activation_by_systemd_socket_activate(seed_tree: Path) -> None:
    """The real thing: systemd-socket-activate holds the port, starts the daemon on the
    first connection and passes the listening socket with LISTEN_FDS/LISTEN_PID."""
    tool = shutil.which("systemd-socket-activate")
    if tool is None:
        missing("systemd-socket-activate (Debian package systemd) is not installed")
    assert tool is not None
    port = free_port()
    serve = [a for a in d.command(seed_tree, "--web.systemd-socket") if "listen-address" not in a]
    proc = subprocess.Popen(
        [tool, f"--listen=127.0.0.1:{port}", "-E", f"PYTHONPATH={REPO / 'exporter'}", *serve],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    daemon = d.Daemon(proc)
    try:
        daemon.wait_log("Listening on", timeout=30)  # the tool's, before nodeslo runs
        assert fetch(port) == (200, "Healthy\n")  # this connection starts nodeslo
        line = daemon.wait_log("listening")
        assert "systemd_socket=true" in line and f"127.0.0.1:{port}" in line
        assert "nodeslo_collector_success" in fetch(port, "/metrics")[1]
    finally:
        assert daemon.stop() == 0, "\n".join(daemon.log)


def test_the_socket_unit_example_listens_where_the_daemon_would() -> None:
    unit = (REPO / "deploy" / "systemd" / "nodeslo.socket").read_text()
    assert "\nListenStream=10131\n" in unit and "--web.systemd-socket" in unit
    # an example: nothing installs or enables it by default
    rules = (REPO / "debian" / "rules").read_text()
    assert "nodeslo.socket" not in rules
