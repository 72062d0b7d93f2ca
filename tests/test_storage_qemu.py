"""The storage probe against a real kernel's device mapper: slow, then hung, then resumed.

One boot (../shared/tools/qemu-nvme, helpers in support/qemu.py) runs
tests/support/storage_guest.sh: ext4 on a device-mapper device over an emulated NVMe
namespace, the daemon probing it at 10 operations per second; then a `delay` table
(200 ms on every I/O), then `dmsetup suspend` for over two minutes, then resume. What
the guest's daemon exported is asserted here: the bad events the SLO rules count keep
coming at the probe's rate whether I/O is slow or stuck, the stall gauge grows past
NodeSLOStorageStalled's 2 minutes, the probe process keeps reporting while its I/O
threads sit in the kernel; and a real Prometheus with the generated rules pages on the
hung capture.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REPO, missing
from support import daemon as d
from support import qemu
from support import stack as st
from support.exposition import samples, value

pytestmark = pytest.mark.qemu

GUEST_SCRIPT = Path(__file__).parent / "support" / "storage_guest.sh"
TOOLS = {
    "dmsetup": "dmsetup",
    "blockdev": "util-linux",
    "mkfs.ext4": "e2fsprogs",
}
TARGET = "/tmp/state/nodeslo"
RATE = 10.0
THRESHOLDS = {"write_sync": "0.0001", "read": "5e-05"}  # the shipped profile's SLOs
OPS = tuple(THRESHOLDS)


@pytest.fixture(scope="module")
def guest(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("qemu-storage")
    return qemu.boot(shared, work, GUEST_SCRIPT.read_text(), TOOLS, controllers=["serial=STOR0001"])


class Capture:
    """One scrape of the guest's daemon, and the guest's monotonic clock at it."""

    def __init__(self, guest: Path, name: str) -> None:
        self.text = (guest / f"{name}.prom").read_text()
        self.at = float((guest / f"{name}.uptime").read_text())

    def get(self, name: str, **labels: str) -> float:
        return value(self.text, name, target=TARGET, **labels)

    def count(self, op: str) -> float:
        return self.get("nodeslo_probe_io_latency_seconds_count", op=op)

    def bad(self, op: str) -> float:
        """Events of the SLI over the threshold: all observations but the good bucket."""
        good = self.get("nodeslo_probe_io_latency_seconds_bucket", op=op, le=THRESHOLDS[op])
        return self.count(op) - good + self.get("nodeslo_probe_io_errors_total", op=op)

    def missed(self, op: str, reason: str = "blocked") -> float:
        return self.get("nodeslo_probe_io_missed_total", op=op, reason=reason)


def test_the_probe_measures_ext4_on_device_mapper(guest: Path) -> None:
    assert (guest / "dm-create.log").read_text().rstrip().endswith("exit 0")
    assert " linear " in (guest / "table-linear.txt").read_text()
    healthy = Capture(guest, "healthy")
    info = value(
        healthy.text, "nodeslo_probe_storage_target_info", target=TARGET, kind="file", mode="direct"
    )
    assert info == 1
    device = next(
        dict(labels)["device"]
        for name, labels in samples(healthy.text)
        if name == "nodeslo_probe_storage_target_info"
    )
    assert device.startswith("dm-")
    assert value(healthy.text, "nodeslo_probe_up", probe="storage") == 1
    for op in OPS:
        measured = healthy.count(op) - healthy.missed(op) - healthy.missed(op, "probe_down")
        assert measured >= 20, op  # (a start slower than 60 s under emulation: probe_down)
        assert healthy.get("nodeslo_probe_io_errors_total", op=op) == 0
        assert healthy.get("nodeslo_probe_io_stalled_seconds", op=op) < 2.0


def test_slow_io_is_bad_at_the_full_rate(guest: Path) -> None:
    """200 ms per I/O: each completes, and every intended operation is a bad event."""
    assert (guest / "dm-delay.log").read_text().rstrip().endswith("exit 0")
    assert " delay " in (guest / "table-delay.txt").read_text()
    before, after = Capture(guest, "slow-1"), Capture(guest, "slow-2")
    seconds = after.at - before.at
    for op in OPS:
        events = after.count(op) - before.count(op)
        # The intended rate, not the ~2-5 per second a 200 ms device lets through.
        assert events == pytest.approx(RATE * seconds, rel=0.25), (op, events, seconds)
        assert after.bad(op) - before.bad(op) == events, op  # every one of them bad
        assert after.missed(op) > before.missed(op), op  # held up, counted, not issued
        assert after.get("nodeslo_probe_io_stalled_seconds", op=op) < 5.0  # slow, not stalled


def test_hung_io_keeps_producing_bad_events_and_the_stall_grows(guest: Path) -> None:
    assert (guest / "dm-suspend.log").read_text().rstrip().endswith("exit 0")
    assert "SUSPENDED" in (guest / "info-suspended.txt").read_text()
    early, late = Capture(guest, "hung-1"), Capture(guest, "hung-2")
    seconds = late.at - early.at
    assert seconds >= 120
    for op in OPS:
        events = late.count(op) - early.count(op)
        assert events == pytest.approx(RATE * seconds, rel=0.1), (op, events, seconds)
        assert late.bad(op) - early.bad(op) == events, op
        # The one operation in flight was counted overdue before the first capture;
        # everything since was missed behind it, at the probe's rate.
        assert late.get("nodeslo_probe_io_overdue_total", op=op) >= 1, op
        assert late.missed(op) - early.missed(op) == events, op
        assert late.get("nodeslo_probe_io_errors_total", op=op) == 0, op
        stalled = late.get("nodeslo_probe_io_stalled_seconds", op=op)
        assert stalled > 120, (op, stalled)  # NodeSLOStorageStalled's threshold
        assert stalled >= early.get("nodeslo_probe_io_stalled_seconds", op=op) + seconds - 2
    assert value(late.text, "nodeslo_probe_up", probe="storage") == 0
    # The process was never restarted: it reported all along, its I/O threads stuck.
    assert value(late.text, "nodeslo_probe_restarts_total", probe="storage") == 0
    tasks = (guest / "probe-tasks.txt").read_text().splitlines()
    stuck = [line for line in tasks if line.split()[1] == "D"]
    assert len(stuck) >= 2, tasks  # the write and the read thread, in the kernel


def test_resumed_io_is_measured_again(guest: Path) -> None:
    assert (guest / "dm-resume.log").read_text().rstrip().endswith("exit 0")
    resumed, hung = Capture(guest, "resumed"), Capture(guest, "hung-2")
    for op in OPS:
        assert resumed.get("nodeslo_probe_io_stalled_seconds", op=op) < 3.0, op
        assert resumed.count(op) > hung.count(op), op
    assert (guest / "serve.log").read_text().rstrip().endswith("exit 0")


def test_the_hung_capture_pages_through_prometheus(guest: Path, tmp_path: Path) -> None:
    """The guest's exposition, scraped by a real Prometheus with the generated rules:
    the stall pages. (A static capture has no rates: the burn is the slow/hung captures'
    counts above, and the promtool tests in alerts/tests/storage-stall.yaml.)"""
    prometheus = st.tool("prometheus")
    alertmanager = st.tool("prometheus-alertmanager", "alertmanager")
    if not (prometheus and alertmanager):
        missing("prometheus / prometheus-alertmanager are not installed (Debian packages)")
    profile = REPO / "tests" / "scenarios" / "profiles" / "e2e.yaml"
    generated = d.run_cli("generate", f"--profile={profile}", f"--out={tmp_path / 'pack'}")
    assert generated.returncode == 0, generated.stderr
    rules = str(tmp_path / "pack" / "alerts" / "nodeslo.rules.yaml")
    with (
        st.serving(guest / "hung-2.prom") as target,
        st.running(tmp_path, [target], [rules]) as stack,
    ):
        stack.wait_scraped(min_targets=1)
        page = stack.webhook.wait_for(60, alertname="NodeSLOStorageStalled", instance=target)
        assert (page.receiver, page.labels["target"]) == ("pager", TARGET)
