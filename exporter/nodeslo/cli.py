"""The `nodeslo` command: serve, and the subcommands later issues add.

Flags follow node_exporter: dotted names (`--web.listen-address`), `--path.*` roots,
`--collector.<name>` / `--no-collector.<name>`. A bad flag or value prints usage and
exits 2, before anything starts.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from nodeslo import __version__
from nodeslo import log as logsetup
from nodeslo.collectors import COLLECTORS
from nodeslo.collectors.base import DEFAULT_TIMEOUT_SECONDS
from nodeslo.flagtypes import duration
from nodeslo.ipmi import cli as bmc_cli
from nodeslo.nvme import cli as nvme_cli
from nodeslo.pack import generate as pack_generate
from nodeslo.probes import settings as probe_flags
from nodeslo.web.server import DEFAULT_MAX_CONNECTIONS, ListenAddressError, parse_listen_address

DEFAULT_PORT = 10131
DEFAULT_LISTEN_ADDRESS = f":{DEFAULT_PORT}"


def listen_address(text: str) -> tuple[str, int]:
    try:
        return parse_listen_address(text)
    except ListenAddressError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer: {text!r}")
    return int(text)


def telemetry_path(text: str) -> str:
    if not text.startswith("/") or text in ("/", "/-/healthy", "/-/ready"):
        raise argparse.ArgumentTypeError(f"must be an absolute path other than /: {text!r}")
    return text


def add_path_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--path.sysfs",
        dest="path_sysfs",
        default="/sys",
        metavar="PATH",
        help="sysfs mountpoint (default: %(default)s)",
    )
    parser.add_argument(
        "--path.procfs",
        dest="path_procfs",
        default="/proc",
        metavar="PATH",
        help="procfs mountpoint (default: %(default)s)",
    )
    parser.add_argument(
        "--path.rootfs",
        dest="path_rootfs",
        default="/",
        metavar="PATH",
        help="root filesystem mountpoint (default: %(default)s)",
    )
    parser.add_argument(
        "--path.udev.data",
        dest="path_udev_data",
        default="/run/udev/data",
        metavar="PATH",
        help="udev data path (default: %(default)s)",
    )


def add_profile_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--profile",
        default=None,
        metavar="FILE",
        help="profile YAML (default: the shipped process-management profile)",
    )


def add_log_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log.level", dest="log_level", choices=logsetup.LEVELS, default="info")
    parser.add_argument(
        "--log.format", dest="log_format", choices=logsetup.FORMATS, default="logfmt"
    )


def add_serve_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "serve",
        help="run the exporter",
        description="Serve Prometheus metrics for this host.",
    )
    web = parser.add_argument_group("web")
    web.add_argument(
        "--web.listen-address",
        dest="web_listen_address",
        type=listen_address,
        action="append",
        default=None,
        metavar="ADDRESS",
        help=f"address to listen on; repeat the flag to listen on several "
        f"(default: {DEFAULT_LISTEN_ADDRESS})",
    )
    web.add_argument(
        "--web.systemd-socket",
        dest="web_systemd_socket",
        action="store_true",
        help="serve the sockets systemd passes (socket activation, "
        "deploy/systemd/nodeslo.socket) instead of --web.listen-address",
    )
    web.add_argument(
        "--web.telemetry-path",
        dest="web_telemetry_path",
        type=telemetry_path,
        default="/metrics",
        metavar="PATH",
        help="path under which to expose metrics (default: %(default)s)",
    )
    web.add_argument(
        "--web.config.file",
        dest="web_config_file",
        default="",
        metavar="FILE",
        help="exporter-toolkit web configuration (TLS, basic auth, headers); "
        "re-read when it or a certificate changes",
    )
    web.add_argument(
        "--web.max-connections",
        dest="web_max_connections",
        type=positive_int,
        default=DEFAULT_MAX_CONNECTIONS,
        metavar="N",
        help="open HTTP connections at most; idle ones are closed first (default: %(default)s)",
    )
    paths = parser.add_argument_group("paths")
    add_path_flags(paths)
    parser.add_argument(
        "--run-as-user",
        dest="run_as_user",
        default=None,
        metavar="USER",
        help="when started as root: fork the privileged helpers, bind the port, then "
        "become USER with no capabilities",
    )
    add_profile_flag(parser)
    add_log_flags(parser)
    collectors = parser.add_argument_group("collectors")
    collectors.add_argument(
        "--collector.disable-defaults",
        dest="collector_disable_defaults",
        action="store_true",
        help="run only the collectors enabled explicitly",
    )
    collectors.add_argument(
        "--collector.timeout",
        dest="collector_timeout",
        type=duration,
        default=DEFAULT_TIMEOUT_SECONDS,
        metavar="DURATION",
        help="how long a scrape waits for one collector; one that overruns (a blocking "
        "read) is reported failed and skipped until it returns (default: 4s)",
    )
    for name, cls in sorted(COLLECTORS.items()):
        state = "on" if cls.default_enabled else "off"
        collectors.add_argument(
            f"--collector.{name}",
            dest=f"collector_{name}",
            default=None,
            action=argparse.BooleanOptionalAction,
            help=f"{cls.help} (default: {state})",
        )
    for _name, cls in sorted(COLLECTORS.items()):
        cls.add_arguments(collectors)
    probe_flags.add_arguments(parser)
    parser.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from nodeslo.daemon import serve

    return serve(args)


def add_check_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "check",
        help="check this host against the profile once (exit 0 pass, 1 fail, 2 bad input)",
        description="Evaluate the profile's tuning expectations and the health findings "
        "(ECC, RAID/ZFS, NVMe, throttling, microcode) once and print a verdict per check.",
    )
    parser.add_argument(
        "--format",
        choices=("table", "json"),
        default="table",
        help="output format (default: %(default)s)",
    )
    paths = parser.add_argument_group("paths")
    add_path_flags(paths)
    paths.add_argument(
        "--collector.nvme.replay-dir",
        dest="nvme_replay_dir",
        default=None,
        metavar="DIR",
        help="read NVMe SMART pages from DIR/<controller>/log-02.bin (as `nodeslo nvme dump` "
        "writes them) instead of the devices (read directly only as root on /sys)",
    )
    paths.add_argument(
        "--collector.bmc.replay",
        dest="bmc_replay",
        default=None,
        metavar="FILE",
        help="answer as the BMC from a recording (as `nodeslo bmc dump` writes it) instead "
        "of /dev/ipmi0 (read directly only as root on /sys)",
    )
    add_profile_flag(parser)
    parser.set_defaults(func=_check)


def _check(args: argparse.Namespace) -> int:
    from nodeslo.check import run

    return run(args)


def add_probe_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "probe",
        help="run a probe outside the daemon (the wake-up probe with CAP_SYS_NICE)",
        description="Run a probe in a process of its own that reports to `nodeslo serve`.",
    )
    probes = parser.add_subparsers(dest="probe", metavar="PROBE", required=True)
    wakeup = probes.add_parser(
        "wakeup",
        help="the wake-up latency probe, reporting to --probe.wakeup.socket",
        description="Connect to the daemon's --probe.wakeup.socket, receive the probe's "
        "settings, measure wake-up latency (cyclictest keeps this process's capabilities: "
        "CAP_SYS_NICE from its unit or container) and report; reconnect whenever either "
        "side goes.",
    )
    wakeup.add_argument(
        "--connect",
        required=True,
        metavar="PATH",
        help="the daemon's socket (its --probe.wakeup.socket)",
    )
    add_log_flags(wakeup)
    wakeup.set_defaults(func=_probe_wakeup)


def _probe_wakeup(args: argparse.Namespace) -> int:
    """Become the relay, lean: this process has imported every collector and the
    generator; exec keeps the PID (systemd's MainPID) and the ambient capability."""
    os.execv(
        sys.executable,
        [
            sys.executable,
            "-m",
            "nodeslo.probes.relay",
            f"--connect={args.connect}",
            f"--log.level={args.log_level}",
            f"--log.format={args.log_format}",
        ],
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nodeslo",
        description="Prometheus exporter and SLO alerting pack for deterministic servers.",
    )
    parser.add_argument("--version", action="version", version=f"nodeslo {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_serve_parser(commands)
    add_check_parser(commands)
    nvme_cli.add_parsers(commands)
    bmc_cli.add_parsers(commands)
    pack_generate.add_parser(commands)
    add_probe_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logsetup.configure(getattr(args, "log_level", "info"), getattr(args, "log_format", "logfmt"))
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
