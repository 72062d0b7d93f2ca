"""Runs inside the Debian 12 guest of tests/test_deb_systemd.py, as root, under systemd.

Installs the .deb from the share, then exercises the units the way an operator would
and writes what it saw to results.json in the share (the test asserts on it). Debian's
python3 only: nothing of nodeslo's is imported here.

    python3 systemd_guest.py SHARE_DIR
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import subprocess
import sys
import time
import urllib.request
from typing import Any

UNITS = (
    "nodeslo.service",
    "nodeslo-nvme-helper.service",
    "nodeslo-bmc-helper.service",
    "nodeslo-wakeup-probe.service",
)
METRICS = "http://127.0.0.1:10131/metrics"
PROPERTIES = "ActiveState,SubState,MainPID,NRestarts,Result,ExecMainStatus,StatusText,User"


def run(*command: str, check: bool = False, timeout: float = 120) -> dict[str, Any]:
    proc = subprocess.run(command, capture_output=True, text=True, check=False, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{command}: {proc.returncode}: {proc.stderr}")
    return {"rc": proc.returncode, "out": proc.stdout, "err": proc.stderr}


def show(unit: str) -> dict[str, str]:
    out = run("systemctl", "show", "-p", PROPERTIES, unit, check=True)["out"]
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def status(pid: int | str) -> dict[str, str]:
    """Uid, Gid and the Cap* lines of /proc/PID/status."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("Name", "Uid", "Gid", "NoNewPrivs") or key.startswith("Cap"):
                out[key] = value.strip()
    return out


def wait(condition, timeout: float, step: float = 0.5):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


def fetch(url: str = METRICS) -> str:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return str(response.read().decode())
    except OSError as exc:
        return f"ERROR {exc}"


def metric_lines(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(name)]


def processes_of(user: str) -> list[dict[str, str]]:
    uid = pwd.getpwnam(user).pw_uid
    out = []
    for path in glob.glob("/proc/[0-9]*/status"):
        pid = path.split("/")[2]
        try:
            st = status(pid)
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if st["Uid"].split()[0] == str(uid):
            out.append({"pid": pid, "cmdline": cmdline, **st})
    return out


def journal(unit: str, since: str = "") -> str:
    args = ["journalctl", "--no-pager", "-o", "cat", "-u", unit]
    if since:
        args += ["--since", since]
    return str(run(*args)["out"])


def write_probe(pid: str, path: str) -> dict[str, Any]:
    """Try to create `path` as the daemon would: in its mount namespace, as its user."""
    user = pwd.getpwnam("nodeslo")
    return run(
        "nsenter",
        f"--target={pid}",
        "--mount",
        f"--setuid={user.pw_uid}",
        f"--setgid={user.pw_gid}",
        "sh",
        "-c",
        f"echo x > {path} && echo written",
    )


def main(share: str) -> int:
    results: dict[str, Any] = {}

    def save() -> None:
        with open(os.path.join(share, "results.json"), "w") as f:
            json.dump(results, f, indent=1)
        print(f"{time.monotonic():.0f}s: {', '.join(results)}", flush=True)

    t0 = time.monotonic()
    debs = sorted(glob.glob(os.path.join(share, "nodeslo_*_all.deb")))
    results["install"] = run("dpkg", "-i", *debs, timeout=300)
    results["install_seconds"] = time.monotonic() - t0
    save()

    # Started by the package's postinst; Type=notify: "active" only after READY=1.
    results["started"] = wait(
        lambda: all(show(u)["ActiveState"] == "active" for u in UNITS), timeout=90
    )
    results["show"] = {u: show(u) for u in UNITS}
    results["status"] = {
        u: status(s["MainPID"]) for u, s in results["show"].items() if s["MainPID"] != "0"
    }
    results["user"] = {"nodeslo": pwd.getpwnam("nodeslo").pw_uid}

    # cyclictest runs in 10 s bursts: wait for a burst's histogram, the first NVMe poll
    # and the first BMC round.
    def measured() -> str:
        text = fetch()
        counts = metric_lines(
            text, 'nodeslo_probe_wakeup_latency_seconds_count{engine="cyclictest"'
        )
        smart = metric_lines(text, "nodeslo_nvme_smart_up{")
        bmc = metric_lines(text, 'nodeslo_bmc_up{reason=""} 1')
        done = counts and float(counts[0].split()[-1]) > 0 and smart and smart[0].endswith(" 1.0")
        return text if done and bmc else ""

    results["metrics"] = wait(measured, timeout=120, step=2) or fetch()
    results["processes"] = processes_of("nodeslo")
    results["ipmi"] = {
        "modules": run("sh", "-c", "lsmod | grep ipmi")["out"],
        "device": run("ls", "-l", "/dev/ipmi0"),
        "helper_journal": journal("nodeslo-bmc-helper.service"),
    }
    save()

    # Sandboxing: the daemon's view of the file system.
    pid = results["show"]["nodeslo.service"]["MainPID"]
    results["writes"] = {
        path: write_probe(pid, path)
        for path in (
            "/var/lib/nodeslo/written-by-test",
            "/etc/nodeslo-test",
            "/usr/nodeslo-test",
            "/var/tmp/nodeslo-test",
            "/root/nodeslo-test",
            "/run/nodeslo-test",
        )
    }
    save()

    # Reload: SIGHUP through systemctl, then a plain SIGHUP; the same process reloads.
    before = metric_lines(fetch(), "nodeslo_profile_last_reload_success_timestamp_seconds ")
    time.sleep(1.1)
    since = time.strftime("%Y-%m-%d %H:%M:%S")
    results["reload"] = run("systemctl", "reload", "nodeslo.service")
    time.sleep(2)
    run("kill", "-HUP", pid)
    time.sleep(2)
    results["reload_after"] = {
        "show": show("nodeslo.service"),
        "before": before,
        "after": metric_lines(fetch(), "nodeslo_profile_last_reload_success_timestamp_seconds "),
        "journal": journal("nodeslo.service", since),
    }
    save()

    # A hung daemon: SIGSTOP; the watchdog (WatchdogSec) has it killed and restarted.
    old = show("nodeslo.service")
    since = time.strftime("%Y-%m-%d %H:%M:%S")
    t0 = time.monotonic()
    run("kill", "-STOP", old["MainPID"])
    restarted = wait(
        lambda: (
            (s := show("nodeslo.service"))["MainPID"] not in ("0", old["MainPID"])
            and s["ActiveState"] == "active"
        ),
        timeout=120,
        step=1,
    )
    results["watchdog"] = {
        "before": old,
        "after": show("nodeslo.service"),
        "restarted": bool(restarted),
        "seconds": time.monotonic() - t0,
        "journal": run("journalctl", "--no-pager", "-o", "cat", "--since", since)["out"],
        "metrics_after": wait(lambda: fetch() if not fetch().startswith("ERROR") else "", 30),
    }
    # The probe unit follows: it reconnects to the new daemon.
    results["watchdog"]["probe_up_after"] = wait(
        lambda: metric_lines(fetch(), 'nodeslo_probe_up{probe="wakeup"} 1'), timeout=60, step=2
    )
    save()

    # Stop: clean, quick, nothing of nodeslo's left running.
    since = time.strftime("%Y-%m-%d %H:%M:%S")
    t0 = time.monotonic()
    results["stop"] = run("systemctl", "stop", "nodeslo.service")
    results["stop_seconds"] = time.monotonic() - t0
    time.sleep(1)
    results["stop_after"] = {
        "show": {u: show(u) for u in UNITS},
        "processes": processes_of("nodeslo"),
        "journal": journal("nodeslo.service", since),
        "metrics": fetch(),
    }
    results["journal"] = run("journalctl", "--no-pager", "-b", "-o", "short-monotonic")["out"][
        -60000:
    ]
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
