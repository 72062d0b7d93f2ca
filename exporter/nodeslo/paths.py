"""Root-relative kernel paths, as node_exporter's --path.* flags define them.

Every reader takes its files from a `Roots`, so a fixture tree or a container mount
of the host's /sys and /proc is just a flag.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Roots:
    sysfs: str = "/sys"
    procfs: str = "/proc"
    rootfs: str = "/"
    udev_data: str = "/run/udev/data"

    def sys(self, *parts: str) -> str:
        return os.path.join(self.sysfs, *parts)

    def proc(self, *parts: str) -> str:
        return os.path.join(self.procfs, *parts)

    def root(self, *parts: str) -> str:
        return os.path.join(self.rootfs, *parts)

    def udev(self, *parts: str) -> str:
        return os.path.join(self.udev_data, *parts)

    @classmethod
    def under(cls, tree: str) -> Roots:
        """The roots of a captured or generated tree holding sys/, proc/ and run/udev/data."""
        return cls(
            sysfs=os.path.join(tree, "sys"),
            procfs=os.path.join(tree, "proc"),
            rootfs=tree,
            udev_data=os.path.join(tree, "run", "udev", "data"),
        )
