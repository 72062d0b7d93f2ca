"""The IPMI helper: its whitelist, its wire format, its behaviour on a socket, and the
ioctl layout it hands the kernel.

The helper runs in-process on a socketpair with a fake BMC behind it, so every refusal
is shown not to reach the device; tests/test_bmc_qemu.py sends the same requests to a
real helper in front of the real driver and a simulated BMC.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodeslo.ipmi import helper, ioctl, requests
from nodeslo.ipmi.client import HelperGone, HelperTransport
from nodeslo.ipmi.ioctl import DeviceTransport
from nodeslo.ipmi.requests import IpmiError, NoDevice, Refused, Request, Timeout, check
from nodeslo.privsep import server as privsep_server
from nodeslo.privsep.server import MAX_IN_FLIGHT, serve_socket, unpack_response

# Everything here writes, controls or bridges: none may reach the BMC.
FORBIDDEN = [
    ("chassis control: power down", Request(0x00, 0x02, b"\x00")),
    ("chassis control: power cycle", Request(0x00, 0x02, b"\x02")),
    ("chassis identify", Request(0x00, 0x04, b"\x0f")),
    ("set power restore policy", Request(0x00, 0x06, b"\x02")),
    ("set system boot options", Request(0x00, 0x08, b"\x05\x80")),
    ("platform event message", Request(0x04, 0x02, bytes(8))),
    ("set sensor hysteresis", Request(0x04, 0x24, bytes(4))),
    ("set sensor thresholds", Request(0x04, 0x26, bytes([5, 0x38, 0, 0, 0, 90, 95, 99]))),
    ("set sensor event enable", Request(0x04, 0x28, bytes(3))),
    ("rearm sensor events", Request(0x04, 0x2A, bytes(2))),
    ("set sensor reading and event status", Request(0x04, 0x30, bytes(3))),
    ("cold reset", Request(0x06, 0x02)),
    ("warm reset", Request(0x06, 0x03)),
    ("set watchdog timer", Request(0x06, 0x24, bytes(6))),
    ("send message (bridging)", Request(0x06, 0x34, bytes([0x00, 0x20, 0x00]))),
    ("master write-read (raw I2C)", Request(0x06, 0x52, bytes([0x01, 0xA0, 0, 0]))),
    ("set user password", Request(0x06, 0x47, bytes(18))),
    ("add SDR", Request(0x0A, 0x24, bytes(8))),
    ("delete SDR", Request(0x0A, 0x26, bytes(4))),
    ("clear SDR repository", Request(0x0A, 0x27, bytes([0, 0, 0x43, 0x4C, 0x52, 0xAA]))),
    ("add SEL entry", Request(0x0A, 0x44, bytes(16))),
    ("delete SEL entry", Request(0x0A, 0x46, bytes(4))),
    ("clear SEL", Request(0x0A, 0x47, bytes([0, 0, 0x43, 0x4C, 0x52, 0xAA]))),
    ("set SEL time", Request(0x0A, 0x49, bytes(4))),
    ("set LAN configuration", Request(0x0C, 0x01, bytes(3))),
    ("OEM command", Request(0x30, 0x01, b"")),
]
WRONG_SHAPE = [
    ("Get SDR with 7 bytes", Request(0x0A, 0x23, bytes(7)), "6"),
    ("Get Device ID with data", Request(0x06, 0x01, b"\x00"), "takes 0"),
    ("Get Sensor Reading without a sensor", Request(0x04, 0x2D, b""), "takes 1"),
    ("LUN 4", Request(0x04, 0x2D, b"\x01", lun=4), "LUN 4"),
]


@pytest.mark.parametrize(("what", "request_"), FORBIDDEN, ids=[w for w, _ in FORBIDDEN])
def test_whitelist_refuses_writes_and_control(what: str, request_: Request) -> None:
    with pytest.raises(Refused, match="not on the whitelist"):
        check(request_)


@pytest.mark.parametrize(
    ("what", "request_", "reason"), WRONG_SHAPE, ids=[w for w, _, _ in WRONG_SHAPE]
)
def test_whitelist_refuses_wrong_shapes(what: str, request_: Request, reason: str) -> None:
    with pytest.raises(Refused, match=reason):
        check(request_)


def test_whitelist_is_exactly_the_read_only_commands() -> None:
    made = {
        (r.netfn, r.cmd): len(r.data)
        for r in (
            requests.get_device_id(),
            requests.get_chassis_status(),
            requests.get_sdr_repository_info(),
            requests.reserve_sdr_repository(),
            requests.get_sdr(1, 2, 0, 16),
            requests.get_sensor_reading(4),
            requests.get_sensor_thresholds(4, lun=1),
            requests.get_sel_info(),
            requests.reserve_sel(),
            requests.get_sel_entry(0, 0xFFFF),
        )
    }
    assert made == {key: length for key, (_, length) in requests.ALLOWED.items()}
    for request_ in (requests.get_sdr(1, 2, 0, 16), requests.get_sel_entry(7, 0x1234)):
        check(request_)


def test_wire_format_round_trip() -> None:
    request_ = requests.get_sdr(0x0102, 0x0304, 5, 16)
    message = helper.pack_request(9, request_, 2500)
    assert len(message) == helper.REQUEST.size == 20
    assert helper.unpack_request(message) == (9, request_, 2500)
    lun = requests.get_sensor_reading(7, lun=2)
    assert helper.unpack_request(helper.pack_request(1, lun, 1))[1] == lun


@pytest.mark.parametrize("size", [0, 19, 21, 100])
def test_request_of_wrong_size_refused(size: int) -> None:
    with pytest.raises(Refused, match=f"request of {size} bytes"):
        helper.unpack_request(b"\x00" * size)


def test_request_claiming_more_than_eight_bytes_refused() -> None:
    message = helper.REQUEST.pack(1, 0x0A, 0x23, 0, 9, bytes(8), 1000)
    with pytest.raises(Refused, match="data length 9"):
        helper.unpack_request(message)


class FakeDevice:
    """Stands in for DeviceTransport: counts what reached it; `hang` blocks."""

    def __init__(self) -> None:
        self.calls: list[Request] = []
        self.hang = threading.Event()
        self.release = threading.Event()
        self.absent = False

    def call(self, request: Request, timeout: float) -> bytes:
        check(request)
        self.calls.append(request)
        if self.absent:
            raise NoDevice("no /sys/class/ipmi/ipmi0")
        if self.hang.is_set():
            self.release.wait(30)
            raise Timeout(f"{request.describe()}: no answer")
        return bytes([0x00, request.cmd, len(request.data)])

    def close(self) -> None:
        pass


@pytest.fixture
def raw() -> Iterator[tuple[FakeDevice, socket.socket]]:
    """A helper on a socketpair; the test speaks the wire format itself."""
    device = FakeDevice()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    thread = threading.Thread(target=helper.HelperServer(device).serve, args=(theirs,))
    thread.start()
    ours.settimeout(10)
    yield device, ours
    device.release.set()
    ours.close()
    thread.join(5)
    theirs.close()


@pytest.fixture
def served(
    raw: tuple[FakeDevice, socket.socket],
) -> Iterator[tuple[FakeDevice, HelperTransport]]:
    """The same helper behind the daemon's transport."""
    device, sock = raw
    transport = HelperTransport(sock=sock)
    yield device, transport
    transport.close()


def test_helper_forwards_the_whitelist(served: tuple[FakeDevice, HelperTransport]) -> None:
    device, transport = served
    assert transport.call(requests.get_sensor_reading(3), 2.0) == bytes([0x00, 0x2D, 1])
    assert transport.call(requests.get_device_id(), 2.0) == bytes([0x00, 0x01, 0])
    assert [(r.netfn, r.cmd) for r in device.calls] == [(0x04, 0x2D), (0x06, 0x01)]


@pytest.mark.parametrize(("what", "request_"), FORBIDDEN[:12], ids=[w for w, _ in FORBIDDEN[:12]])
def test_helper_refuses_before_touching_the_device(
    raw: tuple[FakeDevice, socket.socket], what: str, request_: Request
) -> None:
    device, sock = raw
    # Packed by hand: the daemon's own client would refuse to build these.
    data = request_.data.ljust(8, b"\0")[:8]
    sock.send(
        helper.REQUEST.pack(77, request_.netfn, request_.cmd, 0, len(request_.data), data, 1000)
    )
    response = unpack_response(sock.recv(4096), 272)
    assert (response.request_id, response.error) == (77, errno.EPERM)
    assert b"not on the whitelist" in response.data
    assert device.calls == []


def test_helper_refuses_malformed_messages_and_stays_usable(
    raw: tuple[FakeDevice, socket.socket],
) -> None:
    device, sock = raw
    sock.send(b"\x00" * 5)
    response = unpack_response(sock.recv(4096), 272)
    assert response.error == errno.EPERM
    sock.send(helper.pack_request(5, requests.get_chassis_status(), 1000))
    response = unpack_response(sock.recv(4096), 272)
    assert (response.request_id, response.error, response.data[:1]) == (5, 0, b"\x00")
    assert [(r.netfn, r.cmd) for r in device.calls] == [(0x00, 0x01)]


def test_helper_runs_one_command_at_a_time(
    served: tuple[FakeDevice, HelperTransport],
) -> None:
    """The BMC answers one request at a time: a second one is answered EBUSY at once, not
    queued behind a hung one; the hung one times out for its caller."""
    device, transport = served
    device.hang.set()
    start = time.monotonic()
    with pytest.raises(Timeout):
        transport.call(requests.get_sensor_reading(1), 0.2)
    assert time.monotonic() - start < 2.0
    start = time.monotonic()
    with pytest.raises(Timeout, match="still in flight"):
        transport.call(requests.get_sensor_reading(2), 5.0)
    assert time.monotonic() - start < 1.0
    assert len(device.calls) == 1


def test_helper_reports_a_missing_device(
    served: tuple[FakeDevice, HelperTransport],
) -> None:
    device, transport = served
    device.absent = True
    with pytest.raises(NoDevice, match="ipmi0"):
        transport.call(requests.get_device_id(), 2.0)


def test_transport_reports_a_dead_helper(
    served: tuple[FakeDevice, HelperTransport],
) -> None:
    _, transport = served
    transport.close()
    with pytest.raises(HelperGone):
        transport.call(requests.get_device_id(), 1.0)


def test_helper_bounds_commands_in_flight() -> None:
    """Requests for one BMC share a key: one runs, the others are refused EBUSY."""
    device = FakeDevice()
    device.hang.set()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    threading.Thread(target=helper.HelperServer(device).serve, args=(theirs,), daemon=True).start()
    try:
        for i in range(MAX_IN_FLIGHT):
            ours.send(helper.pack_request(i, requests.get_sensor_reading(i), 60_000))
        ours.settimeout(10)
        busy = [unpack_response(ours.recv(4096), 272) for _ in range(MAX_IN_FLIGHT - 1)]
        assert {r.error for r in busy} == {errno.EBUSY}
        assert len(device.calls) == 1
    finally:
        device.release.set()
        ours.close()


def test_a_flood_of_refused_requests_is_logged_once_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 19's bound holds for this helper too: junk is answered, not logged each time."""
    caplog.set_level("INFO", logger="nodeslo.privsep")
    device = FakeDevice()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server = helper.HelperServer(device)
    thread = threading.Thread(target=server.serve, args=(theirs,), daemon=True)
    thread.start()
    ours.settimeout(10)
    chassis_control = Request(0x00, 0x02, b"\x00")  # power down
    try:
        for i in range(1000):
            if i % 2:
                ours.send(b"junk %d" % i)
            else:
                data = chassis_control.data.ljust(8, b"\0")
                ours.send(helper.REQUEST.pack(i, 0x00, 0x02, 0, 1, data, 1000))
            assert unpack_response(ours.recv(4096), 272).error == errno.EPERM
    finally:
        ours.close()
        thread.join(5)
    assert server.refused == 1000
    assert device.calls == []
    lines = [r for r in caplog.records if r.getMessage() == "refused request"]
    assert len(lines) == 1


def test_a_peer_that_stops_reading_holds_a_bounded_number_of_threads(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Answers nobody reads are dropped after SEND_TIMEOUT_SECONDS; until then the
    threads still sending count against MAX_IN_FLIGHT (the BMC runs one command at a
    time, but an answered command's thread may wait to send)."""
    monkeypatch.setattr(privsep_server, "SEND_TIMEOUT_SECONDS", 0.2)
    device = FakeDevice()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server = helper.HelperServer(device)
    threading.Thread(target=server.serve, args=(theirs,), daemon=True).start()
    before = threading.active_count()
    most = 0
    ours.setblocking(False)
    try:
        for i in range(3000):  # answers never read: the socket's buffer fills
            try:
                ours.send(helper.pack_request(i, requests.get_sensor_reading(i % 256), 1000))
            except BlockingIOError:
                time.sleep(0.01)
            most = max(most, threading.active_count() - before)
        deadline = time.monotonic() + 10
        while not any("does not read" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "no answer was dropped"
            time.sleep(0.05)
    finally:
        ours.close()
    assert most <= MAX_IN_FLIGHT + 1, most


def test_helper_as_its_own_service_checks_the_peer(tmp_path: Path) -> None:
    path = str(tmp_path / "bmc-helper.sock")
    listener = helper_listen(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    server = helper.HelperServer(FakeDevice())
    threading.Thread(
        target=serve_socket, args=(listener, server, {os.getuid()}), daemon=True
    ).start()
    assert HelperTransport(path=path).call(requests.get_device_id(), 2.0)[0] == 0
    listener.close()
    other = str(tmp_path / "other.sock")
    listener = helper_listen(other)
    threading.Thread(
        target=serve_socket, args=(listener, server, {os.getuid() + 4242}), daemon=True
    ).start()
    with pytest.raises(HelperGone):
        HelperTransport(path=other).call(requests.get_device_id(), 2.0)
    listener.close()


def helper_listen(path: str) -> socket.socket:
    from nodeslo.privsep.server import listen

    return listen(path, 0o660, None)


# -- the ioctl layout and the device checks ------------------------------------------


def test_ioctl_structures_match_the_kernel_abi() -> None:
    assert ioctl.IPMI_REQ.size == 40  # struct ipmi_req on x86-64
    assert ioctl.IPMI_RECV.size == 48  # struct ipmi_recv
    assert ioctl.SYSTEM_INTERFACE_ADDR.size == 8
    # _IOR('i', 13, 40 bytes) and _IOWR('i', 11, 48 bytes)
    send = (2 << 30) | (40 << 16) | (ord("i") << 8) | 13
    receive = (3 << 30) | (48 << 16) | (ord("i") << 8) | 11
    assert (send, receive) == (ioctl.IPMICTL_SEND_COMMAND, ioctl.IPMICTL_RECEIVE_MSG_TRUNC)
    packed = ioctl.IPMI_REQ.pack(0x1111, 8, 7, 0x0A, 0x23, 6, 0x2222)
    assert packed[24:28] == bytes([0x0A, 0x23, 6, 0])  # netfn, cmd, data_len at 24


def _sysfs(root: Path, dev: str | None) -> None:
    directory = root / "class" / "ipmi" / "ipmi0"
    directory.mkdir(parents=True)
    if dev is not None:
        (directory / "dev").write_text(dev + "\n")


def test_device_transport_refuses_off_whitelist_before_opening(tmp_path: Path) -> None:
    transport = DeviceTransport(sysfs=str(tmp_path / "sys"), dev_dir=str(tmp_path / "dev"))
    with pytest.raises(Refused, match="not on the whitelist"):
        transport.call(Request(0x00, 0x02, b"\x00"), 1.0)


def test_device_transport_without_a_driver(tmp_path: Path) -> None:
    transport = DeviceTransport(sysfs=str(tmp_path / "sys"), dev_dir=str(tmp_path / "dev"))
    with pytest.raises(NoDevice, match="no IPMI driver"):
        transport.call(requests.get_device_id(), 1.0)
    _sysfs(tmp_path / "sys", "244:0")
    with pytest.raises(NoDevice, match="no such device node"):
        transport.call(requests.get_device_id(), 1.0)


def test_device_transport_refuses_a_node_that_is_not_the_bmc(tmp_path: Path) -> None:
    _sysfs(tmp_path / "sys", "244:0")
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "ipmi0").write_bytes(b"")  # a regular file
    transport = DeviceTransport(sysfs=str(tmp_path / "sys"), dev_dir=str(dev))
    with pytest.raises(Refused, match="sysfs says 244:0"):
        transport.call(requests.get_device_id(), 1.0)
    (dev / "ipmi0").unlink()
    (dev / "ipmi0").symlink_to("/dev/null")  # a link: not followed
    with pytest.raises(IpmiError, match="ipmi0"):
        transport.call(requests.get_device_id(), 1.0)
    if os.geteuid() == 0:
        (dev / "ipmi0").unlink()
        os.mknod(dev / "ipmi0", stat.S_IFCHR | 0o600, os.makedev(1, 3))  # /dev/null's numbers
        with pytest.raises(Refused, match=r"is 1:3, sysfs says 244:0"):
            transport.call(requests.get_device_id(), 1.0)
