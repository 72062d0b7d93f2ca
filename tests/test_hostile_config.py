"""Hostile profile and web config files (issue 19, items 1, 4 and 8, and `extends:` cycles).

What each bad file gets: at start, exit 2 and one line naming the file; on SIGHUP (or,
for the web config, at the next request), the old configuration stays in force, the
reload gauge drops to 0 and one line is logged; the daemon and its connections live on.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from nodeslo.profile import ProfileError, load_profile, yamlsource
from nodeslo.profile.yamlsource import MAX_ALIASES, MAX_BYTES, MAX_DEPTH, SourceError
from nodeslo.web.webconfig import WebConfigCollector, WebConfigError, WebConfigSource
from support import daemon as d
from support import webserver as w
from support.exposition import value

BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)


SLOW_PROFILE = (
    "extends: process-management\nprofile: site-a\n"
    f"a: &a [{', '.join(str(i) for i in range(1990))}]\n"
    f"b: [{', '.join(['*a'] * 99)}]\n"
)


def _fifo(path: Path) -> None:
    os.mkfifo(path)


# name -> writes the hostile file at the path; the message expected in the error.
HOSTILE: dict[str, tuple[Callable[[Path], object], str]] = {
    "alias-loop": (lambda p: p.write_text("a: &a [*a]\n"), "alias refers to the collection"),
    "alias-bomb": (lambda p: p.write_text(BOMB), f"more than {MAX_ALIASES} aliases"),
    "invalid-utf8": (lambda p: p.write_bytes(b"profile: x\n\xff\xfe: 1\n"), "not UTF-8"),
    "deep-nesting": (lambda p: p.write_text("[" * 5000 + "]" * 5000), "nest"),
    "block-nesting": (
        lambda p: p.write_text("".join(" " * i + "a:\n" for i in range(200)) + " " * 200 + "1\n"),
        f"nested deeper than {MAX_DEPTH}",
    ),
    "huge-integer": (lambda p: p.write_text("profile: " + "9" * 5000 + "\n"), "cannot read"),
    "oversized": (lambda p: p.write_bytes(b"#" * (MAX_BYTES + 1)), "larger than"),
    "fifo": (_fifo, "not a regular file"),
    "two-documents": (lambda p: p.write_text("a: 1\n---\nb: 2\n"), "invalid YAML"),
    "binary": (lambda p: p.write_text("a: !!binary 'not base64 ***'\n"), "cannot read"),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_a_hostile_profile_is_a_profile_error_naming_the_file(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    write, message = HOSTILE[kind]
    write(path)
    with pytest.raises(ProfileError) as info:
        load_profile(str(path))
    assert str(path) in str(info.value)
    assert message in str(info.value)


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_a_hostile_web_config_is_a_web_config_error(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    write, message = HOSTILE[kind]
    write(path)
    with pytest.raises(WebConfigError) as info:
        WebConfigSource(str(path))
    assert str(path) in str(info.value)
    assert message in str(info.value)


@pytest.mark.parametrize("kind", ["alias-loop", "invalid-utf8", "deep-nesting"])
def test_at_start_a_hostile_profile_or_web_config_exits_2_naming_the_file(
    kind: str, tmp_path: Path
) -> None:
    path = tmp_path / "bad.yaml"
    HOSTILE[kind][0](path)
    for flag in ("--profile", "--web.config.file"):
        result = d.run_cli(
            "serve", f"{flag}={path}", "--web.listen-address=127.0.0.1:0", "--no-probe.storage"
        )
        assert result.returncode == 2, result.stderr
        assert str(path) in result.stderr
        assert "Traceback" not in result.stderr


def test_sighup_with_each_hostile_profile_keeps_the_old_one(
    seed_tree: Path, tmp_path: Path
) -> None:
    profile = tmp_path / "site.yaml"
    profile.write_text("extends: process-management\nprofile: site-a\n")
    flags = (f"--profile={profile}", "--collector.disable-defaults", "--collector.scheduler")
    with d.running(seed_tree, *flags) as daemon:
        for count, kind in enumerate(sorted(HOSTILE), start=1):
            profile.unlink()
            HOSTILE[kind][0](profile)
            daemon.proc.send_signal(signal.SIGHUP)
            assert w.wait_until(lambda c=count: _failures(daemon) >= c), (kind, daemon.log)
            text = daemon.scrape()
            assert value(text, "nodeslo_profile_info", profile="site-a") == 1, kind
            assert value(text, "nodeslo_profile_last_reload_successful") == 0, kind
            assert daemon.proc.poll() is None, kind
        assert _failures(daemon) == len(HOSTILE)  # one line per reload, no more
        profile.unlink()
        profile.write_text("extends: process-management\nprofile: site-b\n")
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_log("profile reloaded")
        text = daemon.scrape()
        assert value(text, "nodeslo_profile_info", profile="site-b") == 1
        assert value(text, "nodeslo_profile_last_reload_successful") == 1
        assert not any("Traceback" in line for line in daemon.log)


def _failures(daemon: d.Daemon) -> int:
    return sum("profile reload failed" in line for line in daemon.log)


@pytest.mark.parametrize("kind", ["alias-loop", "invalid-utf8", "deep-nesting", "fifo"])
def test_a_web_config_turned_hostile_keeps_the_last_good_one_and_the_connection(
    kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nodeslo.web")
    path = tmp_path / "web.yml"
    path.write_text("http_server_config:\n  headers:\n    X-Frame-Options: deny\n")
    source = WebConfigSource(str(path))
    collector = WebConfigCollector(source)
    with w.serving(source) as server:
        path.unlink()
        HOSTILE[kind][0](path)
        for _ in range(3):
            reply = w.get(w.port(server))  # answered: no dropped connection
            assert reply.status == 200
            assert reply.headers["X-Frame-Options"] == "deny"  # the last good config
        failures = [r for r in caplog.records if "reload failed" in r.getMessage()]
        assert len(failures) == 1
        assert str(path) in str(failures[0].__dict__["fields"]["err"])
        gauge = {f.name: f.samples[0].value for f in collector.collect()}
        assert gauge["nodeslo_web_config_last_reload_successful"] == 0


# --- extends: cycles, however the path is spelled ------------------------------------------


@pytest.mark.parametrize("spelling", ["./a.yaml", "sub/../a.yaml", "link.yaml", "b.yaml"])
def test_an_extends_cycle_through_any_spelling_of_a_path_is_named(
    spelling: str, tmp_path: Path
) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.yaml").symlink_to(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("extends: ./sub/../a.yaml\n")
    (tmp_path / "a.yaml").write_text(f"extends: {spelling}\nprofile: x\n")
    with pytest.raises(ProfileError, match="cycle through"):
        load_profile(str(tmp_path / "a.yaml"))


def test_a_long_extends_chain_is_refused(tmp_path: Path) -> None:
    for i in range(40):
        (tmp_path / f"p{i}.yaml").write_text(f"extends: p{i + 1}.yaml\n")
    (tmp_path / "p40.yaml").write_text("extends: process-management\n")
    with pytest.raises(ProfileError, match="levels"):
        load_profile(str(tmp_path / "p0.yaml"))


# --- item 4: the loader keeps nothing it read ------------------------------------------------


def test_the_loader_has_no_shared_constructor() -> None:
    constructor = yaml.constructor.BaseConstructor
    shared = [v for v in vars(yamlsource).values() if isinstance(v, constructor)]
    assert not shared, "a module-level constructor keeps every document it constructed"


def test_loading_many_documents_and_rejecting_a_large_one_retains_nothing() -> None:
    document = "".join(f"k{i}: {{a: [1, 2.5, '2026-01-01'], b: text {i}}}\n" for i in range(1200))
    rejected = document * 20  # over MAX_BYTES
    assert len(document) < MAX_BYTES < len(rejected)
    yamlsource.loads(document)  # warm caches (interned strings, the resolver's tables)
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for _ in range(30):
            yamlsource.loads(document)
            with pytest.raises(SourceError, match="larger than"):
                yamlsource.loads(rejected)
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # One parsed document is ~1 MiB of Python objects; 30 kept ones would be ~30 MiB.
    assert after - before < 256 * 1024, after - before


# --- item 8: a large reload never blocks the main thread ------------------------------------


def test_watchdog_pings_and_sigterm_are_answered_during_a_large_reload(
    seed_tree: Path, tmp_path: Path
) -> None:
    profile = tmp_path / "site.yaml"
    profile.write_text("extends: process-management\nprofile: site-a\n")
    notify = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(notify)
    sock.settimeout(30)
    messages: list[str] = []

    def receive() -> None:
        while True:
            try:
                messages.append(sock.recv(4096).decode())
            except OSError:
                return

    threading.Thread(target=receive, daemon=True).start()
    env = {"NOTIFY_SOCKET": notify, "WATCHDOG_USEC": "100000"}
    # Small, but slow to load: 99 aliases expand to 200,000 values (seconds), then the
    # validator refuses the unknown keys.
    flags = (f"--profile={profile}", "--collector.disable-defaults", "--collector.scheduler")
    try:
        with d.running(seed_tree, *flags, env=env) as daemon:
            profile.write_text(SLOW_PROFILE)
            daemon.proc.send_signal(signal.SIGHUP)
            daemon.wait_log("profile reload failed", timeout=120)
            assert daemon.scrape()
            code = daemon.stop(signal.SIGTERM, timeout=10)
        assert code == 0
    finally:
        sock.close()
    time.sleep(0.1)
    assert messages[-1] == "STOPPING=1"
    start = next(i for i, m in enumerate(messages) if m.startswith("RELOADING=1"))
    end = messages.index("READY=1", start)
    # While the file parsed, the main thread went on pinging (it used to go silent).
    assert messages[start:end].count("WATCHDOG=1") >= 3, messages[start : end + 1]
