"""Boot Debian's kernel under QEMU and run a script there: the one runner of every
real-kernel test module (each boots its guest once).

The tools a module needs are checked (missing in CI is a failure, see conftest.missing),
the initramfs of ../shared/tools/qemu-nvme is built once and cached by content, and a
checkout or virtualenv under /tmp is shared into the guest (GUEST_TMP_DIRS) rather than
skipped. The script runs as root in the guest with `PY=` (this interpreter), `OUT=` (the
writable share, returned to the caller) and a module's own variables prepended.

A guest whose script never started is booted once more when the emulator, not the test,
failed: an emulated kernel starved of CPU on a loaded host can panic at boot ("IO-APIC +
timer doesn't work"), and QEMU 7.2's TCG has segfaulted at boot (a null MemoryRegion in
memory_region_dispatch_write, seen once in CI on the links guest). Anything after the
script started is the test's to judge, so it is never retried.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest

from conftest import REPO, missing

BASE_TOOLS = {
    "qemu-system-x86_64": "qemu-system-x86",
    "busybox": "busybox-static",
    "modprobe": "kmod",
    "cpio": "cpio",
}
# The checkout, its virtualenv and the interpreter's own directory: what the guest runs.
GUEST_PATHS = [REPO, Path(sys.prefix), Path(os.path.realpath(sys.executable)).parent]
# How run-guest.sh ends when QEMU died of a signal (bash's 128 + N, through `timeout`).
EMULATOR_CRASHES = {128 + s for s in (signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS)}


class GuestExited(Exception):
    """The guest ended before it reached the file a module waits for."""


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "nodeslo" / "qemu"


def initramfs(tools: Path) -> Path:
    """The guest's initramfs, rebuilt only when its recipe, kernel or busybox change."""
    recipe = (tools / "make-initramfs.sh").read_bytes()
    kernel = sorted(os.listdir("/lib/modules"))
    busybox = os.stat(shutil.which("busybox") or "/bin/busybox")
    key = hashlib.sha256(
        recipe + repr((kernel, busybox.st_size, busybox.st_mtime_ns)).encode()
    ).hexdigest()[:16]
    cached = _cache_dir() / f"initrd-{key}.cpio.gz"
    if not cached.exists():
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(f"{cached.name}.{os.getpid()}")
        subprocess.run(
            ["bash", str(tools / "make-initramfs.sh"), str(partial)],
            cwd=tools,
            check=True,
            capture_output=True,
            timeout=300,
        )
        partial.replace(cached)
    return cached


def tmp_dirs(paths: Sequence[Path]) -> list[str]:
    """The directories under /tmp the guest must see (it mounts a /tmp of its own), for
    run-guest.sh's GUEST_TMP_DIRS: outermost first, none inside another."""
    out: list[Path] = []
    for path in sorted({p.resolve() for p in paths}, key=lambda p: len(p.parts)):
        if path.parts[:2] == ("/", "tmp") and not any(path.is_relative_to(o) for o in out):
            out.append(path)
    return [str(p) for p in out]


def wait_for(path: Path, guest: subprocess.Popen[bytes], timeout: float) -> None:
    """Until the guest writes `path`; GuestExited if it ends first, AssertionError if it
    takes longer than `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if guest.poll() is not None:
            raise GuestExited(f"the guest ended ({guest.returncode}) before {path.name}")
        if time.monotonic() > deadline:
            raise AssertionError(f"the guest did not reach {path.name} in {timeout:.0f} s")
        time.sleep(0.2)


def logs(share: Path) -> str:
    """The tail of every log the guest and its script wrote, for a failure message."""
    files = sorted(share.glob("*.log")) + sorted(share.glob("*.err"))
    return "\n".join(f"{p.name}:\n{p.read_text(errors='replace')[-3000:]}" for p in files)


def emulator_failed(share: Path, returncode: int | None) -> bool:
    """True when the guest's script never started and QEMU or the booting kernel died."""
    if (share / "out.log").exists():
        return False
    console = share / "console.log"
    panicked = console.exists() and "Kernel panic" in console.read_text(errors="replace")
    return panicked or returncode in EMULATOR_CRASHES


def check_host(tools: Mapping[str, str]) -> None:
    """QEMU, the initramfs' tools, a module's own and a kernel to boot are installed."""
    for tool, package in {**BASE_TOOLS, **tools}.items():
        if shutil.which(tool) is None:
            missing(f"{tool} is not installed (Debian package {package})")
    if not glob.glob("/boot/vmlinuz-*") or not os.path.isdir("/lib/modules"):
        missing("no kernel image in /boot (Debian package linux-image-amd64)")


def boot(
    shared: Path,
    work: Path,
    script: str,
    tools: Mapping[str, str],
    *,
    controllers: Sequence[str] = (),
    qemu_extra: Callable[[Path], str] | None = None,
    drive: Callable[[Path, subprocess.Popen[bytes]], None] | None = None,
    timeout: int = 1200,
) -> Path:
    """Run `script` in a guest with one NVMe controller per entry of `controllers` (QEMU
    `-device nvme` properties) and the QEMU arguments `qemu_extra(share)` gives; while it
    runs, `drive(share, guest)` steps through what the host must do (fault injection,
    waiting on the files the script writes with `wait_for`). The share the script wrote
    to, once it said `done`."""
    recipes = shared / "tools" / "qemu-nvme"
    if not (recipes / "run-guest.sh").is_file():
        pytest.skip("../shared/tools/qemu-nvme is not present")
    check_host(tools)
    guest_script = work / "guest.sh"
    guest_script.write_text(f"PY={sys.executable}\nOUT=/tmp/share\n" + script)
    initrd = initramfs(recipes)
    for attempt in (1, 2):
        share = work / f"share{attempt}"
        share.mkdir()
        command = ["bash", str(recipes / "run-guest.sh"), str(initrd), str(share)]
        env = {
            **os.environ,
            "GUEST_TIMEOUT": str(timeout),
            "GUEST_TMP_DIRS": " ".join(tmp_dirs(GUEST_PATHS)),
            "QEMU_EXTRA": qemu_extra(share) if qemu_extra else "",
        }
        with open(work / f"run-guest-{attempt}.log", "w+b") as output:
            guest = subprocess.Popen(
                [*command, str(guest_script), *controllers],
                cwd=recipes,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=env,
            )
            reason = _judge(share, guest, drive, timeout)
            output.seek(0)
            printed = output.read().decode(errors="replace")[-1000:].strip()
        if reason is None:
            return share
        if attempt == 1 and emulator_failed(share, guest.returncode):
            print(f"QEMU failed before the guest's script started ({reason}); booting again")
            continue
        pytest.fail(f"guest run failed ({reason}): {printed}\n{logs(share)}")
    raise AssertionError("unreachable")


def _judge(
    share: Path,
    guest: subprocess.Popen[bytes],
    drive: Callable[[Path, subprocess.Popen[bytes]], None] | None,
    timeout: int,
) -> str | None:
    """Drive one boot to its end; None when the script said `done`, else why not."""
    try:
        if drive is not None:
            drive(share, guest)
        guest.wait(timeout=timeout + 300)
    except GuestExited:
        pass  # judged below, by its exit code and the files it left
    except (AssertionError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    finally:
        _stop(guest)
    if guest.returncode != 0 or not (share / "done").exists():
        return f"exit {guest.returncode}"
    return None


def _stop(guest: subprocess.Popen[bytes]) -> None:
    if guest.poll() is None:
        guest.kill()
        guest.wait()
