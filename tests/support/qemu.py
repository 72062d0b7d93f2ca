"""Boot Debian's kernel under QEMU with emulated NVMe controllers and run a script there.

Shared by the real-kernel test modules (each boots its guest once): the tools they need
are checked (missing in CI is a failure, see conftest.missing), the initramfs of
../shared/tools/qemu-nvme is built once and cached by content, and a checkout or
virtualenv under /tmp is shared into the guest (GUEST_TMP_DIRS) rather than skipped.
The script runs as root in the guest with `PY=` (this interpreter) and `OUT=` (the
writable share, returned to the caller) prepended.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from conftest import REPO, missing

BASE_TOOLS = {
    "qemu-system-x86_64": "qemu-system-x86",
    "busybox": "busybox-static",
    "modprobe": "kmod",
    "cpio": "cpio",
}


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


def _tmp_dirs() -> list[str]:
    """The checkout and the virtualenv, where they live under /tmp (hidden in the guest)."""
    dirs = {str(REPO), sys.prefix}
    return sorted(d for d in dirs if os.path.realpath(d).startswith("/tmp/"))


def boot(
    shared: Path,
    work: Path,
    script: str,
    controllers: Sequence[str],
    tools: Mapping[str, str],
    *,
    timeout: int = 1200,
) -> Path:
    """Run `script` in a guest with one NVMe controller per entry of `controllers`
    (QEMU `-device nvme` properties); the share it wrote to, once it said `done`."""
    recipes = shared / "tools" / "qemu-nvme"
    if not (recipes / "run-guest.sh").is_file():
        pytest.skip("../shared/tools/qemu-nvme is not present")
    for tool, package in {**BASE_TOOLS, **tools}.items():
        if shutil.which(tool) is None:
            missing(f"{tool} is not installed (Debian package {package})")
    if not glob.glob("/boot/vmlinuz-*") or not os.path.isdir("/lib/modules"):
        missing("no kernel image in /boot (Debian package linux-image-amd64)")
    guest_script = work / "guest.sh"
    guest_script.write_text(f"PY={sys.executable}\nOUT=/tmp/share\n" + script)
    for attempt in (1, 2):
        share = work / f"share{attempt}"
        result = subprocess.run(
            [
                "bash",
                str(recipes / "run-guest.sh"),
                str(initramfs(recipes)),
                str(share),
                str(guest_script),
                *controllers,
            ],
            cwd=recipes,
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout + 300,
            env={
                **os.environ,
                "GUEST_TIMEOUT": str(timeout),
                "GUEST_TMP_DIRS": " ".join(_tmp_dirs()),
            },
        )
        # An emulated kernel starved of CPU on a loaded host can panic at boot ("IO-APIC
        # + timer doesn't work"): the script never ran, so boot once more.
        console = (share / "console.log").read_text(errors="replace")
        if not ("Kernel panic" in console and not (share / "out.log").exists()):
            break
    if result.returncode != 0 or not (share / "done").exists():
        logs = [
            f"{p.name}:\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(share.glob("*.log"))
        ]
        pytest.fail(f"guest run failed ({result.returncode}):\n" + "\n".join(logs))
    return share
