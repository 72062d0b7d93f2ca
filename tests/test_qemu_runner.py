"""tests/support/qemu.py's boot against a stand-in run-guest.sh: which failures of a guest
are booted once more (QEMU or the booting kernel died before the script started) and
which fail the module at once (everything after the script started)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from support import qemu

# A stand-in for ../shared/tools/qemu-nvme/run-guest.sh (INITRD SHARE SCRIPT): boot N
# (counted in the share's parent) does what the line of $PLAN numbered N says.
RUN_GUEST = """set -eu
share=$2; work=$(dirname "$share"); echo boot >> "$work/boots"
step=$(sed -n "$(wc -l < "$work/boots")p" "$work/plan")
case $step in
  segfault) exit 139 ;;
  panic) echo "Kernel panic - not syncing: IO-APIC + timer doesn't work!" \
           > "$share/console.log"; exit 1 ;;
  script-segfault) : > "$share/out.log"; exit 139 ;;
  script-fails) : > "$share/out.log"; exit 1 ;;
  ready) : > "$share/out.log"; : > "$share/ready"; while [ ! -e "$share/go" ]; do sleep 0.1; done
         echo ok > "$share/done" ;;
  done) : > "$share/out.log"; echo ok > "$share/done" ;;
esac
"""


def boot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *plan: str, **options: object) -> Path:
    recipes = tmp_path / "shared" / "tools" / "qemu-nvme"
    recipes.mkdir(parents=True)
    (recipes / "make-initramfs.sh").write_text('echo initramfs > "$1"\n')
    (recipes / "run-guest.sh").write_text(RUN_GUEST)
    work = tmp_path / "work"
    work.mkdir()
    (work / "plan").write_text("\n".join(plan) + "\n")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(qemu, "check_host", lambda tools: None)
    return qemu.boot(tmp_path / "shared", work, "true\n", {}, timeout=30, **options)  # type: ignore[arg-type]


def boots(tmp_path: Path) -> int:
    return len((tmp_path / "work" / "boots").read_text().split())


@pytest.mark.parametrize("first", ["segfault", "panic"])
def test_an_emulator_failure_before_the_script_is_booted_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first: str
) -> None:
    share = boot(tmp_path, monkeypatch, first, "done")
    assert (share / "done").read_text() == "ok\n"
    assert share.name == "share2"
    assert boots(tmp_path) == 2


def test_a_second_emulator_failure_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(pytest.fail.Exception, match=r"guest run failed \(exit 139\)"):
        boot(tmp_path, monkeypatch, "segfault", "segfault", "done")
    assert boots(tmp_path) == 2


@pytest.mark.parametrize("first", ["script-segfault", "script-fails"])
def test_a_failure_after_the_script_started_is_never_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first: str
) -> None:
    with pytest.raises(pytest.fail.Exception, match="guest run failed"):
        boot(tmp_path, monkeypatch, first, "done")
    assert boots(tmp_path) == 1


def test_the_host_drives_the_guest_and_a_crash_while_it_waits_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    driven = []

    def drive(share: Path, guest: subprocess.Popen[bytes]) -> None:
        qemu.wait_for(share / "ready", guest, 30)
        driven.append(share.name)
        (share / "go").touch()

    share = boot(tmp_path, monkeypatch, "segfault", "ready", drive=drive)
    assert (share / "done").exists()
    assert driven == ["share2"]


def test_a_guest_that_never_reaches_the_step_fails_with_the_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def drive(share: Path, guest: subprocess.Popen[bytes]) -> None:
        qemu.wait_for(share / "never", guest, 1)

    with pytest.raises(pytest.fail.Exception, match="did not reach never in 1 s"):
        boot(tmp_path, monkeypatch, "ready", drive=drive)
    assert boots(tmp_path) == 1
