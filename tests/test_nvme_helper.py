"""The privileged helper: its whitelist, its wire format, and its behaviour on a socket.

The helper is run in-process on a socketpair with a fake device behind it, so every
refusal and every timeout is observable; tests/test_nvme_qemu.py runs it for real.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import threading
import time
from pathlib import Path

import pytest

from nodeslo.nvme import helper, requests
from nodeslo.nvme.client import HelperClient, HelperGone
from nodeslo.nvme.direct import DirectSource
from nodeslo.nvme.requests import (
    CommandTimeout,
    PageRequest,
    Refused,
    SourceError,
    Unsupported,
    command_for,
)
from nodeslo.privsep import server as privsep_server


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (PageRequest("nvme0", 0x02, 0x01), "not on the whitelist"),  # error information log
        (PageRequest("nvme0", 0x02, 0x03), "not on the whitelist"),  # firmware slot log
        (PageRequest("nvme0", 0x02, 0xC1), "not on the whitelist"),
        (PageRequest("nvme0", 0x06, 0x00), "not on the whitelist"),  # identify namespace
        (PageRequest("nvme0", 0x06, 0x02), "not on the whitelist"),
        (PageRequest("nvme0", 0x80, 0x02), "not on the whitelist"),  # Format NVM
        (PageRequest("nvme0", 0x09, 0x02), "not on the whitelist"),  # Set Features
        (PageRequest("nvme0", 0x10, 0x02), "not on the whitelist"),  # Firmware Commit
        (PageRequest("nvme0", 0x02, 0x02, 0x80), "UUID index"),
        (PageRequest("nvme0", 0x06, 0x01, 1), "no UUID index"),
        (PageRequest("sda", 0x02, 0x02), "not an NVMe controller name"),
        (PageRequest("nvme0n1", 0x02, 0x02), "not an NVMe controller name"),
        (PageRequest("../nvme0", 0x02, 0x02), "not an NVMe controller name"),
        (PageRequest("nvme", 0x02, 0x02), "not an NVMe controller name"),
        (PageRequest("nvme123456", 0x02, 0x02), "not an NVMe controller name"),
    ],
)
def test_whitelist_refuses(request_: PageRequest, reason: str) -> None:
    with pytest.raises(Refused, match=reason):
        command_for(request_)


def test_whitelist_allows_exactly_four_commands_with_fixed_lengths() -> None:
    allowed = {
        (r.opcode, r.code): command_for(r).data_len
        for r in (
            requests.smart_log("nvme0"),
            requests.ocp_log("nvme0", 3),
            requests.identify_controller("nvme10"),
            requests.identify_uuid_list("nvme65535"),
        )
    }
    assert allowed == {(0x02, 0x02): 512, (0x02, 0xC0): 512, (0x06, 0x01): 4096, (0x06, 0x17): 4096}
    assert allowed == requests.ALLOWED


def test_wire_format_round_trip() -> None:
    message = helper.pack_request(7, requests.ocp_log("nvme12", 2), 1500)
    assert len(message) == helper.REQUEST.size == 28
    assert helper.unpack_request(message) == (7, requests.ocp_log("nvme12", 2), 1500)
    response = helper.Response(7, 0, 0, b"\x01" * 512)
    assert helper.unpack_response(helper.pack_response(response)) == response


@pytest.mark.parametrize("size", [0, 27, 29, 100])
def test_request_of_wrong_size_refused(size: int) -> None:
    with pytest.raises(Refused, match=f"request of {size} bytes"):
        helper.unpack_request(b"\x00" * size)


def test_response_over_the_bound_refused() -> None:
    with pytest.raises(SourceError, match="not a response"):
        helper.unpack_response(b"\x00" * (helper.MAX_RESPONSE + 1))
    truncated = helper.pack_response(helper.Response(1, 0, 0, b"x" * 10))[:-1]
    with pytest.raises(SourceError, match="9 data bytes, said 10"):
        helper.unpack_response(truncated)


class FakeDevice:
    """Stands in for DirectSource: pages per controller; `hang` blocks until released."""

    def __init__(self) -> None:
        self.pages = {"nvme0": b"\x00" * 512, "nvme1": b"\x01" * 512}
        self.hang: set[str] = set()
        self.release = threading.Event()
        self.calls: list[PageRequest] = []

    def fetch(self, request: PageRequest, timeout: float) -> bytes:
        command_for(request)
        self.calls.append(request)
        if request.controller in self.hang:
            self.release.wait(30)
            raise CommandTimeout(f"{request.describe()}: timed out")
        if request.code == 0xC0:
            raise Unsupported(f"{request.describe()}: NVMe status 0x4002", 0x4002)
        if request.controller not in self.pages:
            raise Refused(f"{request.controller}: no such controller")
        return self.pages[request.controller]

    def close(self) -> None:
        pass


@pytest.fixture
def served():  # type: ignore[no-untyped-def]
    device = FakeDevice()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server = helper.HelperServer(device)  # type: ignore[arg-type]
    thread = threading.Thread(target=server.serve, args=(theirs,), daemon=True)
    thread.start()
    client = HelperClient(sock=ours)
    yield device, client, ours
    device.release.set()
    client.close()
    thread.join(5)
    theirs.close()


def test_helper_answers_whitelisted_requests(served) -> None:  # type: ignore[no-untyped-def]
    _, client, _ = served
    assert client.fetch(requests.smart_log("nvme1"), 2.0) == b"\x01" * 512
    with pytest.raises(Unsupported) as info:
        client.fetch(requests.ocp_log("nvme0"), 2.0)
    assert info.value.nvme_status == 0x4002
    with pytest.raises(Refused, match="no such controller"):
        client.fetch(requests.smart_log("nvme9"), 2.0)


def test_helper_refuses_off_whitelist_before_touching_the_device(served) -> None:  # type: ignore[no-untyped-def]
    device, client, sock = served
    with pytest.raises(Refused, match="not on the whitelist"):
        client.fetch(PageRequest("nvme0", 0x80, 0x02), 2.0)
    # A raw, malformed message gets EPERM too, and the connection stays usable.
    sock.send(b"\x00" * 5)
    assert client.fetch(requests.smart_log("nvme0"), 2.0) == b"\x00" * 512
    assert [c.opcode for c in device.calls] == [0x02]


def test_helper_timeout_does_not_block_other_controllers(served) -> None:  # type: ignore[no-untyped-def]
    device, client, _ = served
    device.hang.add("nvme0")
    start = time.monotonic()
    with pytest.raises(CommandTimeout):
        client.fetch(requests.smart_log("nvme0"), 0.2)
    assert time.monotonic() - start < 2.0
    # nvme1 is answered while nvme0's command is still stuck in the helper...
    assert client.fetch(requests.smart_log("nvme1"), 1.0) == b"\x01" * 512
    # ...and a second command for nvme0 is turned away at once, not queued behind it.
    start = time.monotonic()
    with pytest.raises(CommandTimeout, match="still in flight"):
        client.fetch(requests.smart_log("nvme0"), 5.0)
    assert time.monotonic() - start < 1.0
    assert sum(1 for c in device.calls if c.controller == "nvme0") == 1


def test_client_reports_a_dead_helper(served) -> None:  # type: ignore[no-untyped-def]
    device, client, _ = served
    device.hang.add("nvme0")
    waiting: list[BaseException] = []

    def wait() -> None:
        try:
            client.fetch(requests.smart_log("nvme0"), 10.0)
        except SourceError as exc:
            waiting.append(exc)

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.2)
    client.close()  # as if the helper's end had closed
    thread.join(5)
    assert waiting and isinstance(waiting[0], HelperGone)
    with pytest.raises(HelperGone):
        client.fetch(requests.smart_log("nvme1"), 1.0)


def test_client_on_a_path_reconnects(tmp_path: Path) -> None:
    path = str(tmp_path / "helper.sock")
    client = HelperClient(path=path)
    with pytest.raises(HelperGone, match=r"helper\.sock"):
        client.fetch(requests.smart_log("nvme0"), 1.0)
    listener = helper.listen(path, 0o660, None)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    server = helper.HelperServer(FakeDevice())  # type: ignore[arg-type]
    threading.Thread(
        target=helper.serve_socket, args=(listener, server, {os.getuid()}), daemon=True
    ).start()
    assert client.fetch(requests.smart_log("nvme1"), 2.0) == b"\x01" * 512
    client.close()
    listener.close()


def test_socket_refuses_other_users(tmp_path: Path) -> None:
    path = str(tmp_path / "helper.sock")
    listener = helper.listen(path, 0o666, None)
    server = helper.HelperServer(FakeDevice())  # type: ignore[arg-type]
    nobody = os.getuid() + 12345
    threading.Thread(
        target=helper.serve_socket, args=(listener, server, {nobody}), daemon=True
    ).start()
    client = HelperClient(path=path)
    with pytest.raises(HelperGone):
        client.fetch(requests.smart_log("nvme1"), 2.0)
    listener.close()


# -- DirectSource: what reaches the ioctl ------------------------------------------------


def _controller(sysfs: Path, name: str, dev: str) -> None:
    directory = sysfs / "class" / "nvme" / name
    directory.mkdir(parents=True)
    (directory / "dev").write_text(dev + "\n")


def test_direct_refuses_controllers_absent_from_sysfs(tmp_path: Path) -> None:
    _controller(tmp_path / "sys", "nvme0", "246:0")
    source = DirectSource(str(tmp_path / "sys"), str(tmp_path / "dev"))
    with pytest.raises(Refused, match="no such controller"):
        source.fetch(requests.smart_log("nvme1"), 1.0)
    with pytest.raises(Refused, match="not on the whitelist"):
        source.fetch(PageRequest("nvme0", 0x80, 0), 1.0)


def test_direct_refuses_a_node_that_is_not_the_controller(tmp_path: Path) -> None:
    _controller(tmp_path / "sys", "nvme0", "246:0")
    _controller(tmp_path / "sys", "nvme1", "246:1")
    _controller(tmp_path / "sys", "nvme2", "246:2")
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "nvme0").write_bytes(b"")  # a regular file
    (dev / "nvme1").symlink_to("/dev/null")  # a link: not followed
    source = DirectSource(str(tmp_path / "sys"), str(dev))
    with pytest.raises(Refused, match="sysfs says 246:0"):
        source.fetch(requests.smart_log("nvme0"), 1.0)
    with pytest.raises(SourceError, match="nvme1"):
        source.fetch(requests.smart_log("nvme1"), 1.0)
    with pytest.raises(SourceError, match="nvme2"):
        source.fetch(requests.smart_log("nvme2"), 1.0)  # no node at all
    if os.geteuid() == 0:
        os.mknod(dev / "nvme3", stat.S_IFCHR | 0o600, os.makedev(1, 3))  # /dev/null's numbers
        _controller(tmp_path / "sys", "nvme3", "246:3")
        with pytest.raises(Refused, match=r"is 1:3, sysfs says 246:3"):
            source.fetch(requests.smart_log("nvme3"), 1.0)


def test_helper_error_reasons_are_bounded(served) -> None:  # type: ignore[no-untyped-def]
    device, client, _ = served
    device.pages.pop("nvme1")
    with pytest.raises(Refused) as info:
        client.fetch(requests.smart_log("nvme1"), 1.0)
    assert len(str(info.value)) < helper.MAX_REASON + 40


def test_helper_bounds_commands_in_flight() -> None:
    device = FakeDevice()
    device.hang.update(f"nvme{i}" for i in range(helper.MAX_IN_FLIGHT + 1))
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server = helper.HelperServer(device)  # type: ignore[arg-type]
    threading.Thread(target=server.serve, args=(theirs,), daemon=True).start()
    try:
        for i in range(helper.MAX_IN_FLIGHT + 1):
            ours.send(helper.pack_request(i, requests.smart_log(f"nvme{i}"), 60_000))
        ours.settimeout(10)
        # The one request past the bound is answered at once; the others still hang.
        response = helper.unpack_response(ours.recv(helper.MAX_RESPONSE))
        assert response.request_id == helper.MAX_IN_FLIGHT
        assert response.error == errno.EBUSY
    finally:
        device.release.set()
        ours.close()


# -- issue 19: refused floods, peers that stop reading, the socket's path --------------------


def test_a_flood_of_refused_requests_is_logged_once_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="nodeslo.privsep")
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server = helper.HelperServer(FakeDevice())  # type: ignore[arg-type]
    thread = threading.Thread(target=server.serve, args=(theirs,), daemon=True)
    thread.start()
    ours.settimeout(10)
    try:
        for i in range(2000):  # each one refused, each one answered EPERM
            ours.send(b"junk %d" % i)
            assert helper.unpack_response(ours.recv(helper.MAX_RESPONSE)).error == errno.EPERM
    finally:
        ours.close()
        thread.join(5)
    assert server.refused == 2000
    lines = [r for r in caplog.records if r.getMessage() == "refused request"]
    assert len(lines) == 1


def test_a_peer_that_stops_reading_holds_a_bounded_number_of_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(privsep_server, "SEND_TIMEOUT_SECONDS", 0.2)
    device = FakeDevice()
    device.pages = {f"nvme{i}": b"\x00" * 4096 for i in range(4000)}
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server = helper.HelperServer(device)  # type: ignore[arg-type]
    threading.Thread(target=server.serve, args=(theirs,), daemon=True).start()
    before = threading.active_count()
    most = 0
    try:
        ours.setblocking(False)
        for i in range(4000):  # 4 KiB answers, never read: the socket's buffer fills
            try:
                ours.send(helper.pack_request(i, requests.smart_log(f"nvme{i}"), 1000))
            except BlockingIOError:
                time.sleep(0.01)
            most = max(most, threading.active_count() - before)
    finally:
        ours.close()
    assert most <= helper.MAX_IN_FLIGHT + 1, most


def test_the_socket_is_created_with_its_mode_and_refuses_a_shared_directory(
    tmp_path: Path,
) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o755)
    listener = helper.listen(str(private / "helper.sock"), 0o600, None)
    assert stat.S_IMODE(os.lstat(private / "helper.sock").st_mode) == 0o600
    listener.close()
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp: someone else could swap the path
    with pytest.raises(OSError, match="writable by it alone"):
        helper.listen(str(shared / "helper.sock"), 0o660, None)
