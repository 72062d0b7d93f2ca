"""`nodeslo generate`: write every file the pack derives from the profile.

Each output is a producer: a function Profile -> [(relative path, content)], listed in
order by `producers()`: the rule file first, then the profile's JSON Schema, the
dashboards, the Kubernetes manifests, the generated block of the example Alertmanager
configuration and the reference pages of docs/ (metrics,
alerts). `--rules-only` runs the first alone (no Grafana SDK needed). `--check` writes
nothing and exits 1 when a committed file differs from what the profile gives (what CI
runs), so a hand edit or a forgotten regeneration fails the build.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from nodeslo import share
from nodeslo.profile import Profile, ProfileError, load_profile

Output = tuple[str, str]
Producer = Callable[[Profile], list[Output]]


def producers(rules_only: bool = False) -> list[Producer]:
    """The producers in order. Imported here, not at the top: every `nodeslo` start
    (serve included) builds this module's parser, and the generators cost ~60 ms."""
    from nodeslo.pack import alertmanager, dashboards, docs, kubernetes, rules
    from nodeslo.profile import schema

    if rules_only:  # no dashboards: runs without the Grafana SDK (the [pack] extra)
        return [rules.rule_file]
    return [
        rules.rule_file,
        schema.schema_files,
        dashboards.dashboard_files,
        kubernetes.kubernetes_files,
        kubernetes.static_files,
        alertmanager.alertmanager_file,
        docs.metrics_page,
        docs.alerts_page,
    ]


def outputs(profile: Profile, chosen: list[Producer] | None = None) -> list[Output]:
    """Every (path, content) of every producer, in producer order; paths must be unique."""
    seen: set[str] = set()
    out: list[Output] = []
    for producer in producers() if chosen is None else chosen:
        for path, content in producer(profile):
            if path in seen or os.path.isabs(path) or ".." in Path(path).parts:
                raise ValueError(f"producer {producer.__name__}: bad or repeated path {path!r}")
            seen.add(path)
            out.append((path, content))
    return out


def stale(out_dir: Path, files: list[Output]) -> list[str]:
    """Paths whose file under out_dir is missing or differs."""
    changed = []
    for path, content in files:
        try:
            current = (out_dir / path).read_text(encoding="utf-8")
        except FileNotFoundError:
            current = None
        if current != content:
            changed.append(path)
    return changed


def write(out_dir: Path, files: list[Output]) -> list[str]:
    """Write the files that changed (atomically: a reader never sees half a file)."""
    changed = stale(out_dir, files)
    contents = dict(files)
    for path in changed:
        target = out_dir / path
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(contents[path])
            os.chmod(temporary, 0o644)
            os.replace(temporary, target)
        except BaseException:
            os.unlink(temporary)
            raise
    return changed


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "generate",
        help="write the rule file (and dashboards) derived from the profile",
        description="Generate Prometheus rules and dashboards from the profile.",
    )
    parser.add_argument(
        "--profile",
        default=None,
        metavar="FILE",
        help="profile YAML (default: the shipped process-management profile)",
    )
    parser.add_argument(
        "--out",
        default=".",
        metavar="DIR",
        help="directory the outputs' paths are relative to (default: the current one)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if a file under --out differs from the generated one",
    )
    parser.add_argument(
        "--rules-only",
        dest="rules_only",
        action="store_true",
        help="only the rule file (alerts/nodeslo.rules.yaml): needs no Grafana SDK, "
        "which the dashboards need (pip install 'nodeslo[pack]')",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        profile = load_profile(args.profile)
    except ProfileError as exc:
        print(f"nodeslo generate: {exc}", file=sys.stderr)
        return 2
    from nodeslo.pack.dashboards import MissingExtra

    try:
        files = outputs(profile, producers(getattr(args, "rules_only", False)))
    except (MissingExtra, share.ShareMissing) as exc:
        # Nothing is written: a rule file without its dashboards would be half a pack.
        print(f"nodeslo generate: {exc}", file=sys.stderr)
        return 2
    out_dir = Path(args.out)
    if args.check:
        changed = stale(out_dir, files)
        for path in changed:
            print(f"{path}: differs from what profile {profile.name!r} generates", file=sys.stderr)
        if changed:
            print("run `nodeslo generate` and commit the result", file=sys.stderr)
        return 1 if changed else 0
    try:
        changed = write(out_dir, files)
    except OSError as exc:
        print(f"nodeslo generate: {exc}", file=sys.stderr)
        return 1
    for path, _ in files:
        print(f"{path}: {'written' if path in changed else 'unchanged'}")
    return 0
