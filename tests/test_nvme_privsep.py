"""The start-up sequence as root: fork the NVMe helper, bind, drop to --run-as-user.

Needs root (CI and the development machines run as root; elsewhere these skip). The
real ioctl against a kernel driver is in tests/test_nvme_qemu.py; here the fixture's
controllers have no device nodes, which the helper reports as a failed read.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures import nvme as fx
from fixtures.make_fixtures import variant
from fixtures.tree import Tree
from support import daemon as d
from support.exposition import value
from support.procs import children, status

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to fork and drop")

FLAGS = ("--collector.disable-defaults", "--collector.nvme", "--no-probe.storage")
FLAGS += ("--no-probe.wakeup", "--collector.nvme.command-timeout=1s")


@pytest.fixture
def readable_tree() -> Iterator[Path]:
    """An NVMe-only fixture tree that nobody can read (pytest's tmp dirs are 0700)."""
    root = Path(tempfile.mkdtemp(prefix="nodeslo-privsep-"))
    root.chmod(0o755)
    fx.write(Tree(root), variant("seed-spec"))
    yield root
    shutil.rmtree(root)


def test_daemon_forks_helper_then_drops_to_the_user(readable_tree: Path) -> None:
    with d.running(readable_tree, *FLAGS, "--run-as-user=nobody") as daemon:
        main = status(daemon.proc.pid)
        helpers = children(daemon.proc.pid)
        # The first round is waited for at most one command timeout: on a loaded
        # machine it may still run at the first scrape.
        deadline = time.monotonic() + 20
        while True:
            text = daemon.scrape()
            if 'smart_up{controller="nvme0"}' in text or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        daemon.wait_log("dropped privileges")
        assert len(helpers) == 1, helpers
        helper = status(helpers[0])
    assert main["Uid"].split() == ["65534"] * 4
    assert main["Gid"].split()[0] == "65534"
    for key in ("CapInh", "CapPrm", "CapEff", "CapAmb", "CapBnd"):
        assert int(main[key], 16) == 0, key
    assert main["NoNewPrivs"] == "1"
    assert helper["Uid"].split()[0] == "0"
    assert int(helper["CapEff"], 16) == int(helper["CapPrm"], 16) == 1 << 21
    assert helper["NoNewPrivs"] == "1"
    # The fixture's controllers have no /dev node: read attempted, failed, sysfs kept.
    assert value(text, "nodeslo_nvme_smart_up", controller="nvme0") == 0
    assert value(text, "nodeslo_nvme_state_live", controller="nvme0") == 1
    assert value(text, "nodeslo_collector_success", collector="nvme") == 1


def test_helper_exits_with_the_daemon(readable_tree: Path) -> None:
    daemon = d.start(readable_tree, *FLAGS, "--run-as-user=nobody").wait_listening()
    helpers = children(daemon.proc.pid)
    assert daemon.stop() == 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") for p in helpers):
        time.sleep(0.05)
    assert not [p for p in helpers if os.path.exists(f"/proc/{p}")]


@pytest.mark.parametrize(
    ("user", "complaint"),
    [("no-such-user-here", "no such user"), ("root", "unprivileged user, not root")],
)
def test_bad_run_as_user_exits_2(seed_tree: Path, user: str, complaint: str) -> None:
    result = d.run_cli(
        "serve",
        "--web.listen-address=127.0.0.1:0",
        f"--path.sysfs={seed_tree}/sys",
        f"--path.procfs={seed_tree}/proc",
        *FLAGS,
        f"--run-as-user={user}",
    )
    assert result.returncode == 2
    assert "cannot drop privileges" in result.stderr and complaint in result.stderr


def test_helper_as_its_own_service(readable_tree: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    socket_path = tmp_path / "run" / "nvme-helper.sock"
    helper = subprocess.Popen(
        [sys.executable, "-m", "nodeslo", "nvme-helper", f"--socket={socket_path}",
         f"--path.sysfs={readable_tree}/sys", "--allow-user=root"],
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not socket_path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert socket_path.exists(), helper.stderr
        time.sleep(0.2)  # capabilities are limited right after listen()
        caps = status(helper.pid)
        assert int(caps["CapEff"], 16) == 1 << 21
        assert oct(socket_path.stat().st_mode & 0o777) == "0o660"
        # The round trip works; the fixture's nvme0 has no device node, which the
        # helper reports; a name that is not a controller is refused.
        result = d.run_cli(
            "nvme", "dump", "nvme0", "nvme99", str(tmp_path / "dump"),
            f"--helper-socket={socket_path}",
        )  # fmt: skip
        assert result.returncode == 1
        assert "nvme0: /dev/nvme0: No such file or directory" in result.stderr
        assert "nvme99: no such controller" in result.stderr
    finally:
        helper.terminate()
        helper.wait(5)


def test_a_killed_helper_is_restarted_and_a_dead_one_reaped(readable_tree: Path) -> None:
    """Issue 19: the forked helper's death used to be permanent, its zombie never reaped."""
    with d.running(readable_tree, *FLAGS, "--run-as-user=nobody") as daemon:
        (supervisor,) = children(daemon.proc.pid)
        deadline = time.monotonic() + 10
        while not children(supervisor) and time.monotonic() < deadline:
            time.sleep(0.05)
        (worker,) = children(supervisor)
        os.kill(worker, signal.SIGKILL)
        daemon.wait_log("nvme helper died, restarting it")
        deadline = time.monotonic() + 10
        while children(supervisor) in ([], [worker]) and time.monotonic() < deadline:
            time.sleep(0.05)
        (restarted,) = children(supervisor)
        assert restarted != worker
        helper = status(restarted)
        assert helper["Uid"].split()[0] == "0"
        assert int(helper["CapEff"], 16) == 1 << 21
        # Killing the supervisor itself ends SMART reads, loudly, and leaves no zombie.
        os.kill(supervisor, signal.SIGKILL)
        daemon.wait_log("nvme helper exited")
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{supervisor}") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not os.path.exists(f"/proc/{supervisor}"), status(supervisor).get("State")
        assert value(daemon.scrape(), "nodeslo_collector_success", collector="nvme") == 1
