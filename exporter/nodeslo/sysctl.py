"""sysctl names and values as the profile writes them, and where /proc/sys keeps them.

`sysctl` names use dots between components and a slash inside a component that has a
dot of its own (an interface `eth0.100` is `net.ipv4.conf.eth0/100.rp_filter`), so the
path swaps the two. Names are validated before they become paths: a profile must not
be able to make the exporter read `/proc/sys/../../etc/shadow`.
"""

from __future__ import annotations

import re

_COMPONENT = re.compile(r"^[A-Za-z0-9_.:@+-]+$")


def sysctl_relpath(name: str) -> str:
    """'kernel.numa_balancing' -> 'kernel/numa_balancing'; ValueError for a bad name."""
    path = name.translate(str.maketrans("./", "/."))
    parts = path.split("/")
    if len(parts) < 2:
        raise ValueError(f"not a sysctl name: {name!r} (use e.g. vm.swappiness)")
    for part in parts:
        if part in ("", ".", "..") or not _COMPONENT.match(part):
            raise ValueError(f"not a sysctl name: {name!r} (bad component {part!r})")
    return path


def normalize_value(text: str) -> str:
    """Multi-field values ('4096\\t131072\\t6291456') compare field by field."""
    return " ".join(text.split())
