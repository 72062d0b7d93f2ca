"""Dropping privileges: the network-facing process keeps no capabilities.

`nodeslo serve --run-as-user USER`, started as root, first lets collectors set up what
needs root (the NVMe helper is forked then), binds its port, and then calls
`drop_to_user`: every capability leaves the bounding set, no_new_privs is set (no
setuid binary can give them back), and the process switches to USER's uid, gid and
groups. Linux clears the permitted, effective and ambient sets on that switch;
`drop_to_user` checks they are empty afterwards and that uid 0 cannot be regained.

Capabilities are manipulated with prctl(2) and capset(2) through libc, so nothing
beyond the standard library is needed.
"""

from __future__ import annotations

import ctypes
import grp
import os
import pwd
import resource
from collections.abc import Iterable

__all__ = [
    "CAP_SYS_ADMIN",
    "PrivilegeError",
    "capabilities",
    "drop_to_user",
    "group_id",
    "limit_capabilities",
    "resolve_user",
]

CAP_SYS_ADMIN = 21
CAP_SETPCAP = 8
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_SET_PDEATHSIG = 1
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class PrivilegeError(Exception):
    """Privileges could not be dropped as asked; the daemon must not go on."""


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, arg: int) -> None:
    if _libc().prctl(option, ctypes.c_ulong(arg), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise PrivilegeError(f"prctl({option}, {arg}): {os.strerror(err)}")


def last_capability() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 40  # CAP_CHECKPOINT_RESTORE, the last one in 6.x kernels


def capabilities(pid: str = "self") -> dict[str, int]:
    """CapInh/CapPrm/CapEff/CapBnd/CapAmb of a process, from /proc/PID/status."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.startswith("Cap"):
                out[key] = int(value.strip(), 16)
    return out


# What the daemon raises its soft RLIMIT_NOFILE to when the hard limit allows (Go
# programs such as node_exporter raise theirs to the hard limit at start): the held
# sysfs files of a 256-CPU host (readers.MAX_HELD_FILES) at half of it.
WANTED_OPEN_FILES = 8192


def raise_open_files_limit(wanted: int = WANTED_OPEN_FILES) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE towards `wanted`, never above the hard limit nor
    below where it is. Returns (before, after); a refusal leaves it as it was."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or 0 <= wanted <= soft:
        return soft, soft
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target <= soft:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError):
        return soft, soft
    return soft, target


def max_fd() -> int:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if 0 < soft < 1 << 20 else 1 << 16


def set_parent_death_signal(signum: int) -> None:
    _prctl(PR_SET_PDEATHSIG, signum)


def _drop_bounding_set(keep: Iterable[int] = ()) -> None:
    """Best effort: without CAP_SETPCAP (some containers) the bounding set stays; the
    cleared permitted set and no_new_privs then keep capabilities from coming back."""
    if not capabilities().get("CapEff", 0) >> CAP_SETPCAP & 1:
        return
    kept = set(keep)
    for cap in range(last_capability() + 1):
        if cap not in kept:
            _prctl(PR_CAPBSET_DROP, cap)


def limit_capabilities(keep: Iterable[int]) -> None:
    """Keep only `keep` in the effective, permitted and bounding sets (still root)."""
    kept = frozenset(keep)
    _drop_bounding_set(kept)
    mask = 0
    for cap in kept:
        mask |= 1 << cap
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        word = (mask >> (32 * i)) & 0xFFFFFFFF
        data[i].effective = word
        data[i].permitted = word
        data[i].inheritable = 0
    if _libc().capset(ctypes.byref(header), data) != 0:
        raise PrivilegeError(f"capset: {os.strerror(ctypes.get_errno())}")
    _prctl(PR_SET_NO_NEW_PRIVS, 1)


def resolve_user(user: str) -> pwd.struct_passwd:
    """A user name or numeric uid; PrivilegeError when there is no such user."""
    try:
        return pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except (KeyError, ValueError):
        raise PrivilegeError(f"no such user: {user!r}") from None


def group_id(group: str) -> int:
    try:
        return int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        raise PrivilegeError(f"no such group: {group!r}") from None


def drop_to_user(user: str) -> pwd.struct_passwd:
    """Become `user` for good, holding no capabilities. Needs root, or to be `user` already."""
    entry = resolve_user(user)
    if os.geteuid() != 0:
        if os.geteuid() == entry.pw_uid and os.getuid() == entry.pw_uid:
            return entry
        raise PrivilegeError(f"--run-as-user {user} needs the daemon to be started as root")
    if entry.pw_uid == 0:
        raise PrivilegeError("--run-as-user must name an unprivileged user, not root")
    _drop_bounding_set()
    try:
        os.initgroups(entry.pw_name, entry.pw_gid)
        os.setresgid(entry.pw_gid, entry.pw_gid, entry.pw_gid)
        os.setresuid(entry.pw_uid, entry.pw_uid, entry.pw_uid)
    except OSError as exc:
        raise PrivilegeError(f"switching to {entry.pw_name}: {exc.strerror}") from None
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    caps = capabilities()
    left = {k: f"{v:x}" for k, v in caps.items() if k != "CapBnd" and v}
    if left:
        raise PrivilegeError(f"capabilities left after dropping privileges: {left}")
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:
        raise PrivilegeError("uid 0 could be regained after dropping privileges")
    return entry
