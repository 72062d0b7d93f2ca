"""`nodeslo bmc dump` and `nodeslo bmc-helper`.

- `bmc dump FILE` polls the BMC once, the way the collector does (device ID, the SDR
  walk, thresholds, readings, chassis status, the whole SEL), records every exchange in
  FILE for a bug report or `--collector.bmc.replay`, and prints what it decoded as
  JSON. As root it opens the device itself (through the same whitelist); otherwise it
  asks a running helper (`--helper-socket`). `--replay FILE` decodes a recording.
- `bmc-helper --socket PATH` runs the privileged IPMI helper as its own service.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

from nodeslo import privileges
from nodeslo.flagtypes import duration
from nodeslo.ipmi import helper
from nodeslo.ipmi.client import HelperTransport
from nodeslo.ipmi.ioctl import DeviceTransport
from nodeslo.ipmi.poller import Poller, Snapshot
from nodeslo.ipmi.recording import RecordingTransport, ReplayTransport
from nodeslo.ipmi.requests import Transport
from nodeslo.log import OnceLog
from nodeslo.privsep.server import listen, serve_socket
from nodeslo.sdnotify import Notifier

log = logging.getLogger("nodeslo.ipmi")


def snapshot_document(snap: Snapshot) -> dict[str, Any]:
    """What a poll decoded, as JSON-ready data (the test of the QEMU guest reads it)."""
    device = snap.device
    return {
        "up": snap.up,
        "reason": snap.reason,
        "device": None
        if device is None
        else {
            "manufacturer": device.manufacturer,
            "manufacturer_id": device.manufacturer_id,
            "product": device.product,
            "firmware": device.firmware,
            "ipmi_version": device.ipmi,
        },
        "chassis": None if snap.chassis is None else dict(snap.chassis.flags()),
        "sensors": [
            {
                "name": s.record.name,
                "number": s.record.number,
                "type": s.record.type_name,
                "entity": s.record.entity,
                "unit": s.record.units.label() if s.record.is_threshold else None,
                "value": s.value,
                "thresholds": dict(s.thresholds),
                "states": dict(s.states),
                "severity": s.severity,
                "available": s.available,
            }
            for s in snap.sensors
        ],
        "sel": None
        if snap.sel is None
        else {"entries": snap.sel.entries, "free_bytes": snap.sel.free_bytes},
        "sel_events": None
        if snap.sel_events is None
        else [
            {"type": kind, "direction": direction, "state": state, "count": count}
            for (kind, direction, state), count in snap.sel_events
        ],
    }


def poll_until_complete(poller: Poller, rounds: int = 64) -> Snapshot:
    """Rounds until the SEL backlog is read (a large log takes several)."""
    for _ in range(rounds):
        poller.poll_round()
        snap = poller.snapshot()
        if not snap.up or snap.sel is None or snap.sel_events is not None:
            return snap
    return poller.snapshot()


def _source(args: argparse.Namespace) -> Transport:
    if args.replay:
        return ReplayTransport(args.replay)
    if args.helper_socket:
        return HelperTransport(path=args.helper_socket)
    return DeviceTransport(sysfs=args.path_sysfs, dev_dir=args.dev_dir)


def cmd_dump(args: argparse.Namespace) -> int:
    source = _source(args)
    recorder = RecordingTransport(source)
    poller = Poller(recorder, interval=60.0, timeout=args.timeout, errors=OnceLog(log))
    try:
        snap = poll_until_complete(poller)
    finally:
        recorder.close()
    if args.file and not args.replay:
        try:
            recorder.save(args.file)
        except OSError as exc:
            print(f"nodeslo bmc dump: {args.file}: {exc.strerror}", file=sys.stderr)
            return 1
    json.dump(snapshot_document(snap), sys.stdout, indent=2)
    sys.stdout.write("\n")
    if not snap.up:
        print(f"nodeslo bmc dump: BMC not read: {snap.reason}", file=sys.stderr)
        return 1
    return 0


def cmd_helper(args: argparse.Namespace) -> int:
    try:
        allowed = {privileges.resolve_user(u).pw_uid for u in args.allow_user}
        listener = listen(args.socket, args.socket_mode, args.socket_group)
        if os.geteuid() == 0:
            privileges.limit_capabilities(helper.HELPER_CAPABILITIES)
    except (OSError, privileges.PrivilegeError) as exc:
        log.error("bmc helper cannot start", extra={"fields": {"err": str(exc)}})
        return 1
    log.info("bmc helper listening", extra={"fields": {"socket": args.socket}})
    # Under systemd (Type=notify): the exporter's unit starts once the socket exists.
    Notifier().notify("READY=1")
    server = helper.HelperServer(DeviceTransport(sysfs=args.path_sysfs, dev_dir=args.dev_dir))
    try:
        serve_socket(listener, server, allowed)
    except KeyboardInterrupt:
        pass
    finally:
        listener.close()
    return 0


def _mode(text: str) -> int:
    try:
        return int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an octal mode: {text!r}") from None


def _device_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--path.sysfs", dest="path_sysfs", default="/sys", metavar="PATH", help="(default: /sys)"
    )
    parser.add_argument("--dev-dir", default="/dev", metavar="PATH", help="(default: /dev)")


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from nodeslo.cli import add_log_flags

    bmc = commands.add_parser("bmc", help="poll the BMC once, record or replay its answers")
    sub = bmc.add_subparsers(dest="bmc_command", metavar="COMMAND", required=True)
    dump = sub.add_parser(
        "dump",
        help="poll the BMC once; record the exchanges in FILE, print what they mean as JSON",
    )
    dump.add_argument("file", metavar="FILE", nargs="?", default=None)
    dump.add_argument(
        "--helper-socket",
        default=None,
        metavar="PATH",
        help="ask a running bmc-helper instead of the device (when not root)",
    )
    dump.add_argument(
        "--replay", default=None, metavar="FILE", help="decode a recording instead of the BMC"
    )
    dump.add_argument("--timeout", type=duration, default=5.0, metavar="DURATION")
    _device_flags(dump)
    add_log_flags(dump)
    dump.set_defaults(func=cmd_dump)

    helper_parser = commands.add_parser(
        "bmc-helper",
        help="run the privileged IPMI helper as its own service",
        description="Forward whitelisted read-only IPMI requests to /dev/ipmi0 on a Unix "
        "socket; needs to be root (the node is root's 0600) and no capability.",
    )
    helper_parser.add_argument("--socket", default=helper.DEFAULT_SOCKET, metavar="PATH")
    helper_parser.add_argument(
        "--socket-mode", type=_mode, default=0o660, metavar="MODE", help="(default: 0660)"
    )
    helper_parser.add_argument(
        "--socket-group", default=None, metavar="GROUP", help="group owning the socket"
    )
    helper_parser.add_argument(
        "--allow-user",
        action="append",
        default=[],
        metavar="USER",
        help="accept connections only from this user (repeatable; default: whoever "
        "the socket's mode lets in)",
    )
    _device_flags(helper_parser)
    add_log_flags(helper_parser)
    helper_parser.set_defaults(func=cmd_helper)
