"""What /proc says of a test's processes: their status fields and their children."""

from __future__ import annotations

import os


def status(pid: int) -> dict[str, str]:
    """/proc/<pid>/status as a dict (`Name`, `PPid`, `NoNewPrivs`, `CapEff`, ...)."""
    with open(f"/proc/{pid}/status") as f:
        return {k: v.strip() for k, _, v in (line.partition(":") for line in f)}


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` now (one that exits meanwhile is skipped)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if status(int(entry)).get("PPid") == str(pid):
                    out.append(int(entry))
            except OSError:
                continue
    return out
