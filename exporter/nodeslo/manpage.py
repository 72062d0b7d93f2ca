"""nodeslo(1), written from the argument parser: `python -m nodeslo.manpage > nodeslo.1`.

Every command and flag comes from `cli.build_parser()`, so the page cannot drift from
`--help`; the sections a parser does not know (files, signals, exit status) are the
text below. The Debian package builds its page with this (debian/rules).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator

from nodeslo import __version__, cli

SUMMARY = "Prometheus exporter and SLO alerting pack for deterministic servers"

DESCRIPTION = """\
nodeslo exports the metrics that decide whether a server stays deterministic \
(scheduler and storage latency from two active probes, C-states, frequency, \
thermal throttling, power, memory errors, RAID, NVMe health) and generates the \
Prometheus rules and Grafana dashboards that alert on them, both from one \
profile (YAML).

The exporter process holds no capability. NVMe log pages are read by \
\\fBnodeslo nvme-helper\\fR (CAP_SYS_ADMIN only, no network); the wake-up \
probe's cyclictest runs in \\fBnodeslo probe wakeup\\fR (CAP_SYS_NICE only). \
Under systemd each is its own unit."""

SECTIONS = {
    "SIGNALS": [
        (
            "SIGHUP",
            "re-read the profile; a broken profile is logged and the old one kept "
            "(systemctl reload nodeslo).",
        ),
        (
            "SIGTERM, SIGINT",
            "stop: the HTTP server, the probes, then the process, within 2 seconds.",
        ),
    ],
    "EXIT STATUS": [
        ("0", "success (nodeslo check: every check passed)."),
        (
            "1",
            "failure (nodeslo check: findings; nodeslo generate --check: files differ; "
            "serve: the port cannot be bound).",
        ),
        (
            "2",
            "bad usage or input: an unknown flag, an invalid profile or web "
            "configuration, privileges that cannot be dropped.",
        ),
    ],
    "FILES": [
        ("/etc/default/nodeslo", "NODESLO_ARGS: flags for nodeslo.service."),
        ("/var/lib/nodeslo", "the storage probe's file; the service's only writable path."),
        ("/run/nodeslo-nvme/helper.sock", "the NVMe helper's socket."),
        ("/run/nodeslo-bmc/helper.sock", "the BMC (IPMI) helper's socket."),
        ("/run/nodeslo/wakeup.sock", "where the wake-up probe unit sends its reports."),
        (
            "/usr/share/nodeslo",
            "rules, dashboards, runbooks and manifests generated from "
            "the shipped profile; Kubernetes and Grafana provisioning files.",
        ),
    ],
}

SEE_ALSO = (
    r"\fBcyclictest\fR(8), \fBnvme\fR(1), \fBprometheus\fR(1), \fBsystemd.exec\fR(5), "
    r"\fBsystemd\-sysusers\fR(8)"
)


def escape(text: str) -> str:
    """Text for a roff line: backslashes and hyphens escaped, no leading control dot."""
    out = text.replace("\\", r"\e").replace("-", r"\-")
    return r"\&" + out if out.startswith((".", "'")) else out


def _subcommands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser, str]]:
    """(command words, parser, one-line help) of every leaf and intermediate command."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {a.dest: a.help or "" for a in action._choices_actions}
        for name, sub in action.choices.items():
            words = (*path, name)
            yield words, sub, helps.get(name, "")
            yield from _subcommands(sub, words)


def _flag_spelling(action: argparse.Action) -> str:
    names = ", ".join(rf"\fB{escape(o)}\fR" for o in action.option_strings)
    if isinstance(action, argparse.BooleanOptionalAction):
        return names
    metavar = None
    if action.nargs != 0:
        metavar = action.metavar or (
            "{" + ",".join(map(str, action.choices)) + "}"
            if action.choices
            else action.dest.upper()
        )
    if metavar is None:
        return names
    return names + "=" + rf"\fI{escape(str(metavar))}\fR"


def _positional(action: argparse.Action) -> str:
    return rf"\fI{escape(str(action.metavar or action.dest).upper())}\fR"


def _options(parser: argparse.ArgumentParser) -> list[str]:
    formatter = parser._get_formatter()
    lines: list[str] = []
    for group in parser._action_groups:
        actions = [
            a
            for a in group._group_actions
            if a.help != argparse.SUPPRESS
            and not isinstance(a, argparse._SubParsersAction | argparse._HelpAction)
        ]
        if not actions:
            continue
        title = group.title or "options"
        if title not in ("options", "optional arguments", "positional arguments"):
            lines += [".PP", rf"\fI{escape(title)}\fR"]
        for action in actions:
            spelled = _flag_spelling(action) if action.option_strings else _positional(action)
            text = formatter._expand_help(action) if action.help else ""
            lines += [".TP", spelled, escape(" ".join(text.split()))]
    return lines


def _usage(words: tuple[str, ...], parser: argparse.ArgumentParser) -> str:
    positionals = [
        _positional(a)
        for a in parser._actions
        if not a.option_strings and not isinstance(a, argparse._SubParsersAction)
    ]
    has_sub = any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)
    parts = [rf"\fBnodeslo {escape(' '.join(words))}\fR", r"[\fIOPTIONS\fR]"]
    if has_sub:
        parts.append(r"\fICOMMAND\fR")
    return " ".join(parts + positionals)


def render(parser: argparse.ArgumentParser | None = None) -> str:
    parser = parser or cli.build_parser()
    out = [
        f'.TH NODESLO 1 "" "nodeslo {escape(__version__)}" "User Commands"',
        ".SH NAME",
        rf"nodeslo \- {escape(SUMMARY)}",
        ".SH SYNOPSIS",
        r"\fBnodeslo\fR \fICOMMAND\fR [\fIOPTIONS\fR]",
        ".br",
        r"\fBnodeslo \-\-version\fR",
        ".SH DESCRIPTION",
    ]
    for paragraph in DESCRIPTION.split("\n\n"):
        # Written here with their own font escapes: only the hyphens need escaping.
        out += [".PP", paragraph.replace("-", r"\-")]
    out.append(".SH COMMANDS")
    for words, sub, one_line in _subcommands(parser):
        out += [f'.SS "{escape(" ".join(words))}"', _usage(words, sub), ".PP"]
        out.append(escape(" ".join((sub.description or one_line).split())))
        out += _options(sub)
    for title, items in SECTIONS.items():
        out.append(f".SH {title}")
        for term, text in items:
            out += [".TP", rf"\fB{escape(term)}\fR", escape(text)]
    out += [".SH SEE ALSO", SEE_ALSO, ""]
    return "\n".join(out)


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
