"""`nodeslo nvme decode|dump` and `nodeslo nvme-helper`.

- `nvme decode FILE [--page smart|ocp-c0|identify-ctrl|identify-uuid]` prints a page as
  JSON (counters as exact integers, however wide).
- `nvme dump CONTROLLER [CONTROLLER...] DIR` captures DIR/CONTROLLER/{identify-ctrl,identify-uuid,
  log-c0,log-02}.bin for a bug report or for `--collector.nvme.replay-dir`. As root it
  reads the device directly (through the same whitelist); otherwise it asks a running
  helper (`--helper-socket`).
- `nvme-helper --socket PATH` runs the privileged helper as its own service.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import sys
from typing import Any

from nodeslo import privileges
from nodeslo.flagtypes import duration
from nodeslo.nvme import helper, identify, ocp, replay, requests, smart
from nodeslo.nvme.client import HelperClient
from nodeslo.nvme.direct import DirectSource
from nodeslo.nvme.layout import PageError
from nodeslo.nvme.requests import PageSource, SourceError, Unsupported
from nodeslo.sdnotify import Notifier

log = logging.getLogger("nodeslo.nvme")

PAGES = ("smart", "ocp-c0", "identify-ctrl", "identify-uuid")
# File names as `nvme dump` writes them -> page kind.
BY_FILE_NAME = {
    "log-02.bin": "smart",
    "log-c0.bin": "ocp-c0",
    "identify-ctrl.bin": "identify-ctrl",
    "identify-uuid.bin": "identify-uuid",
}


def guess_page(path: str, data: bytes) -> str:
    """The page kind from the dump's file name, else from size and the OCP GUID."""
    kind = BY_FILE_NAME.get(os.path.basename(path))
    if kind is not None:
        return kind
    if len(data) == identify.SIZE:
        return "identify-ctrl"
    if ocp.is_ocp(data):
        return "ocp-c0"
    return "smart"


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


def decode_page(kind: str, data: bytes) -> dict[str, Any]:
    """A page as a JSON-ready dict; PageError when it is not that page."""
    if kind == "identify-uuid":
        uuids = identify.decode_uuid_list(data)
        return {
            "uuids": [str(u) for u in uuids],
            "ocp_uuid_index": identify.ocp_uuid_index(uuids),
        }
    decoded: Any
    if kind == "smart":
        decoded = smart.decode(data)
    elif kind == "ocp-c0":
        decoded = ocp.decode(data)
    else:
        decoded = identify.decode_controller(data)
    out = {f.name: _jsonable(getattr(decoded, f.name)) for f in dataclasses.fields(decoded)}
    if kind == "ocp-c0":
        out["log_page_guid"] = decoded.log_page_guid[::-1].hex().upper()
    return out


def cmd_decode(args: argparse.Namespace) -> int:
    try:
        with open(args.file, "rb") as f:
            data = f.read(identify.SIZE + 1)
    except OSError as exc:
        print(f"nodeslo nvme decode: {args.file}: {exc.strerror}", file=sys.stderr)
        return 1
    kind = args.page or guess_page(args.file, data)
    try:
        decoded = decode_page(kind, data)
    except PageError as exc:
        print(f"nodeslo nvme decode: {args.file}: {exc}", file=sys.stderr)
        return 1
    json.dump({"page": kind, "file": args.file, "fields": decoded}, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def _dump_source(args: argparse.Namespace) -> PageSource:
    if args.helper_socket:
        return HelperClient(path=args.helper_socket)
    return DirectSource(args.path_sysfs, args.dev_dir)


def dump(source: PageSource, controller: str, directory: str, timeout: float) -> dict[str, str]:
    """Read every whitelisted page of one controller into directory/controller/.

    Returns {file name: "ok" | reason}. A page the controller does not implement is
    left out, which is how the replay source learns it is unsupported. The pages are
    staged in a hidden directory that is renamed into place once complete, so a replay
    reading the same directory never takes a page still being written for a missing one.
    """
    out_dir = os.path.join(directory, controller)
    staging = os.path.join(directory, f"{replay.STAGING_PREFIX}{controller}")
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    results: dict[str, str] = {}

    def read(request: requests.PageRequest) -> bytes | None:
        name = replay.file_name(request)
        try:
            data = source.fetch(request, timeout)
        except Unsupported as exc:
            results[name] = f"not supported: {exc}"
            return None
        with open(os.path.join(staging, name), "wb") as f:
            f.write(data)
        results[name] = "ok"
        return data

    try:
        ctrl = read(requests.identify_controller(controller))
        uuid_index = 0
        if ctrl is not None and identify.decode_controller(ctrl).uuid_list_supported:
            uuids = read(requests.identify_uuid_list(controller))
            if uuids is not None:
                uuid_index = identify.ocp_uuid_index(identify.decode_uuid_list(uuids))
        read(requests.ocp_log(controller, uuid_index))
        read(requests.smart_log(controller))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(out_dir, ignore_errors=True)  # an older capture of the same controller
    os.rename(staging, out_dir)
    return results


def cmd_dump(args: argparse.Namespace) -> int:
    source = _dump_source(args)
    report: dict[str, dict[str, str]] = {}
    status = 0
    try:
        for controller in args.controllers:
            try:
                report[controller] = dump(source, controller, args.directory, args.timeout)
            except (SourceError, PageError, OSError) as exc:
                print(f"nodeslo nvme dump: {controller}: {exc}", file=sys.stderr)
                status = 1
    finally:
        source.close()
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return status


def cmd_helper(args: argparse.Namespace) -> int:
    try:
        allowed = {privileges.resolve_user(u).pw_uid for u in args.allow_user}
        listener = helper.listen(args.socket, args.socket_mode, args.socket_group)
        if os.geteuid() == 0:
            privileges.limit_capabilities(helper.HELPER_CAPABILITIES)
    except (OSError, privileges.PrivilegeError) as exc:
        log.error("nvme helper cannot start", extra={"fields": {"err": str(exc)}})
        return 1
    log.info("nvme helper listening", extra={"fields": {"socket": args.socket}})
    # Under systemd (Type=notify): the exporter's unit starts once the socket exists.
    Notifier().notify("READY=1")
    server = helper.HelperServer(DirectSource(args.path_sysfs, args.dev_dir))
    try:
        helper.serve_socket(listener, server, allowed)
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


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from nodeslo.cli import add_log_flags

    nvme = commands.add_parser("nvme", help="decode or capture NVMe log pages")
    sub = nvme.add_subparsers(dest="nvme_command", metavar="COMMAND", required=True)

    decode = sub.add_parser("decode", help="print a captured page as JSON")
    decode.add_argument("file", metavar="FILE")
    decode.add_argument(
        "--page", choices=PAGES, default=None, help="page kind (default: from name and size)"
    )
    decode.set_defaults(func=cmd_decode)

    dump_parser = sub.add_parser("dump", help="capture controllers' pages into DIR")
    dump_parser.add_argument("controllers", metavar="CONTROLLER", nargs="+", help="e.g. nvme0")
    dump_parser.add_argument("directory", metavar="DIR")
    dump_parser.add_argument(
        "--helper-socket",
        default=None,
        metavar="PATH",
        help="ask a running nvme-helper instead of the device (when not root)",
    )
    dump_parser.add_argument("--timeout", type=duration, default=10.0, metavar="DURATION")
    _device_flags(dump_parser)
    add_log_flags(dump_parser)
    dump_parser.set_defaults(func=cmd_dump)

    helper_parser = commands.add_parser(
        "nvme-helper",
        help="run the privileged NVMe helper as its own service",
        description="Answer whitelisted NVMe page requests on a Unix socket; needs "
        "CAP_SYS_ADMIN and read access to /dev/nvme*.",
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


def _device_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--path.sysfs", dest="path_sysfs", default="/sys", metavar="PATH", help="(default: /sys)"
    )
    parser.add_argument("--dev-dir", default="/dev", metavar="PATH", help="(default: /dev)")
