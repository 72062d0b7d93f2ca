"""The textfile collector: node_exporter's *.prom semantics, and every bad file left out
with the error metric at 1, the scrape itself never failing."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from nodeslo.collectors import textfile
from nodeslo.collectors.base import CollectorContext, CollectorSet
from nodeslo.daemon import enabled_collectors
from nodeslo.log import OnceLog
from support import daemon as d
from support.exposition import samples, value

GOOD = """# HELP job_last_success_seconds When the backup last succeeded.
# TYPE job_last_success_seconds gauge
job_last_success_seconds{job="backup"} 1.7e9
"""


def collector(
    directory: Path | str, log: logging.Logger | None = None
) -> textfile.TextfileCollector:
    options = argparse.Namespace(textfile_directory=str(directory))
    errors = OnceLog(log or logging.getLogger("test.textfile"))
    return textfile.TextfileCollector(CollectorContext(options=options, errors=errors))


def scrape(c: textfile.TextfileCollector) -> str:
    registry = CollectorRegistry()
    registry.register(CollectorSet([c], c.ctx.errors, timeout=10))
    return generate_latest(registry).decode()


def test_prom_files_are_exported_with_their_mtime(tmp_path: Path) -> None:
    (tmp_path / "backup.prom").write_text(GOOD)
    (tmp_path / "ignored.txt").write_text("other_metric 1\n")
    (tmp_path / "ignored.prom.tmp").write_text("half_written 1\n")  # a writer's temp file
    os.utime(tmp_path / "backup.prom", (1_700_000_000, 1_700_000_000))
    body = scrape(collector(tmp_path))
    assert value(body, "job_last_success_seconds", job="backup") == 1.7e9
    assert "# HELP job_last_success_seconds When the backup last succeeded." in body
    path = str(tmp_path / "backup.prom")
    assert value(body, "nodeslo_textfile_mtime_seconds", file=path) == 1_700_000_000
    assert value(body, "nodeslo_textfile_scrape_error") == 0
    assert "other_metric" not in body and "half_written" not in body
    assert value(body, "nodeslo_collector_success", collector="textfile") == 1


def test_all_types_and_a_missing_help(tmp_path: Path) -> None:
    (tmp_path / "t.prom").write_text(
        "# TYPE runs_total counter\nruns_total 3\n"
        "untyped_thing 1\n"
        '# TYPE h histogram\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} 2\nh_sum 3\nh_count 2\n'
        '# TYPE s summary\ns{quantile="0.5"} 1\ns_sum 1\ns_count 1\n'
    )
    body = scrape(collector(tmp_path))
    got = samples(body)
    assert got[("runs_total", ())] == 3
    assert got[("untyped_thing", ())] == 1
    assert got[("h_bucket", (("le", "+Inf"),))] == 2 and got[("h_count", ())] == 2
    assert got[("s", (("quantile", "0.5"),))] == 1
    assert f"# HELP untyped_thing Metric read from {tmp_path / 't.prom'}" in body
    assert value(body, "nodeslo_textfile_scrape_error") == 0


def test_one_family_over_two_files_is_merged(tmp_path: Path) -> None:
    (tmp_path / "a.prom").write_text(GOOD)
    (tmp_path / "b.prom").write_text(GOOD.replace('job="backup"', 'job="rotate"'))
    body = scrape(collector(tmp_path))
    assert value(body, "job_last_success_seconds", job="backup") == 1.7e9
    assert value(body, "job_last_success_seconds", job="rotate") == 1.7e9
    assert body.count("# TYPE job_last_success_seconds gauge") == 1
    assert value(body, "nodeslo_textfile_scrape_error") == 0


# Each bad file, and what it gets: its samples left out, no mtime, error metric 1.
BAD_FILES = {
    "syntax": "this is { not metrics\n",
    "timestamp": "with_timestamp 1 1700000000000\n",
    "reserved-nodeslo": "nodeslo_collector_success 1\n",
    "reserved-process": "process_cpu_seconds_total 1\n",
    "repeated-sample": 'dup{a="1"} 1\ndup{a="1"} 2\n',
    "not-utf8": "caf\xe9 1\n",
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_file_is_left_out_and_the_rest_served(
    tmp_path: Path, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "a-good.prom").write_text(GOOD)
    bad = tmp_path / "b-bad.prom"
    bad.write_bytes(BAD_FILES[case].encode("latin-1"))
    with caplog.at_level(logging.WARNING):
        body = scrape(collector(tmp_path))
    assert value(body, "nodeslo_textfile_scrape_error") == 1
    assert value(body, "job_last_success_seconds", job="backup") == 1.7e9
    mtimes = {dict(ls)["file"] for n, ls in samples(body) if n.endswith("mtime_seconds")}
    assert mtimes == {str(tmp_path / "a-good.prom")}
    assert value(body, "nodeslo_collector_success", collector="textfile") == 1
    assert "with_timestamp" not in body and "dup{" not in body and "caf" not in body
    assert body.count("nodeslo_collector_success{") == 1  # not shadowed by the file
    assert any(str(bad) in r.getMessage() or str(bad) in str(r.__dict__) for r in caplog.records)


@pytest.mark.parametrize(
    ("second", "why"),
    [
        # the same family as a counter: the later file (sorted) is left out
        ("# TYPE job_last_success_seconds counter\njob_last_success_seconds 1\n", "type"),
        # another help text
        ("# HELP job_last_success_seconds Other.\njob_last_success_seconds 2\n", "help"),
        # the same series as the first file
        (GOOD, "series"),
    ],
)
def test_a_file_that_disagrees_with_an_earlier_one_is_left_out(
    tmp_path: Path, second: str, why: str
) -> None:
    (tmp_path / "a.prom").write_text(GOOD)
    (tmp_path / "b.prom").write_text(second + "b_only 1\n")
    c = collector(tmp_path)
    body = scrape(c)
    assert value(body, "nodeslo_textfile_scrape_error") == 1, why
    assert "b_only" not in body  # the whole file, not just the clashing family
    assert value(body, "job_last_success_seconds", job="backup") == 1.7e9
    assert value(body, "nodeslo_textfile_mtime_seconds", file=str(tmp_path / "a.prom")) > 0


def test_a_directory_that_does_not_exist(tmp_path: Path) -> None:
    body = scrape(collector(tmp_path / "nope"))
    assert value(body, "nodeslo_textfile_scrape_error") == 1
    assert value(body, "nodeslo_collector_success", collector="textfile") == 1


def test_an_unreadable_file_and_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """EACCES on the file, then on the directory (denied as the unprivileged daemon
    would be; faked, since the tests may run as root): error metric 1, no failure."""
    (tmp_path / "a.prom").write_text(GOOD)
    real_open, real_listdir = os.open, os.listdir

    def denied_open(path: str, flags: int, *args: int) -> int:
        if str(path).endswith("a.prom"):
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", denied_open)
    body = scrape(collector(tmp_path))
    assert value(body, "nodeslo_textfile_scrape_error") == 1 and "job_last" not in body
    monkeypatch.setattr(os, "open", real_open)

    def denied_listdir(path: str) -> list[str]:
        if str(path) == str(tmp_path):
            raise PermissionError(13, "Permission denied", path)
        return real_listdir(path)

    monkeypatch.setattr(os, "listdir", denied_listdir)
    body = scrape(collector(tmp_path))
    assert value(body, "nodeslo_textfile_scrape_error") == 1
    assert value(body, "nodeslo_collector_success", collector="textfile") == 1


def test_a_file_over_the_bound_is_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(textfile, "MAX_FILE_BYTES", 1024)
    monkeypatch.setattr(textfile.read_bounded, "__defaults__", (1024,))
    (tmp_path / "big.prom").write_text("big 1\n" * 400)
    body = scrape(collector(tmp_path))
    assert value(body, "nodeslo_textfile_scrape_error") == 1 and "big 1" not in body


def test_a_fifo_and_a_directory_named_prom_do_not_block_or_fail(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo.prom")  # nobody writes: a blocking open would hang
    (tmp_path / "dir.prom").mkdir()
    (tmp_path / "good.prom").write_text(GOOD)
    body = scrape(collector(tmp_path))
    assert value(body, "nodeslo_textfile_scrape_error") == 1
    assert value(body, "job_last_success_seconds", job="backup") == 1.7e9


def test_a_file_that_vanishes_before_the_read_is_simply_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a.prom").write_text(GOOD)
    (tmp_path / "gone.prom").write_text("gone 1\n")
    real = textfile.read_bounded

    def vanish(path: str, limit: int = textfile.MAX_FILE_BYTES) -> object:
        if path.endswith("gone.prom"):
            os.unlink(path)  # removed between the stat and the open
        return real(path, limit)

    monkeypatch.setattr(textfile, "read_bounded", vanish)
    body = scrape(collector(tmp_path))
    assert value(body, "nodeslo_textfile_scrape_error") == 0
    assert "gone" not in body


def test_files_are_parsed_again_only_when_they_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "a.prom"
    path.write_text(GOOD)
    c = collector(tmp_path)
    parses: list[str] = []
    real = textfile.parse
    monkeypatch.setattr(textfile, "parse", lambda p, t: parses.append(p) or real(p, t))
    scrape(c)
    scrape(c)
    assert len(parses) == 1
    path.write_text(GOOD.replace("1.7e9", "1.8e9"))  # same size, new content and mtime
    os.utime(path, ns=(2_000_000_000 * 10**9, 2_000_000_000 * 10**9))
    assert value(scrape(c), "job_last_success_seconds", job="backup") == 1.8e9
    assert len(parses) == 2
    path.unlink()
    body = scrape(c)
    assert "job_last_success_seconds" not in body and not c._cache


def test_a_bad_file_is_logged_once_until_it_changes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "a.prom").write_text("bad {\n")
    c = collector(tmp_path, logging.getLogger("test.textfile.once"))
    with caplog.at_level(logging.WARNING, logger="test.textfile.once"):
        for _ in range(3):
            scrape(c)
        assert len(caplog.records) == 1
        (tmp_path / "a.prom").write_text(GOOD)
        scrape(c)
        (tmp_path / "a.prom").write_text("bad {\n")
        scrape(c)
    assert len(caplog.records) == 2


def test_off_unless_a_directory_is_given() -> None:
    from nodeslo.cli import build_parser

    def enabled(*flags: str) -> bool:
        return "textfile" in enabled_collectors(build_parser().parse_args(["serve", *flags]))

    assert not enabled()
    assert enabled("--collector.textfile.directory=/var/lib/nodeslo/textfile")
    assert not enabled("--collector.textfile.directory=/x", "--no-collector.textfile")
    assert not enabled("--collector.textfile.directory=/x", "--collector.disable-defaults")


def test_on_without_a_directory_reports_an_error() -> None:
    body = scrape(collector(""))
    assert value(body, "nodeslo_textfile_scrape_error") == 1


def test_the_daemon_serves_textfiles_and_collect_selects_them(
    seed_tree: Path, tmp_path: Path
) -> None:
    (tmp_path / "backup.prom").write_text(GOOD)
    (tmp_path / "broken.prom").write_text("broken {\n")
    with d.running(seed_tree, f"--collector.textfile.directory={tmp_path}") as daemon:
        body = daemon.scrape()
        assert value(body, "job_last_success_seconds", job="backup") == 1.7e9
        assert value(body, "nodeslo_textfile_scrape_error") == 1
        status, only = daemon.get("/metrics?collect[]=textfile")
        assert status == 200 and value(only, "job_last_success_seconds", job="backup") == 1.7e9
        assert "nodeslo_disk_" not in only
        daemon.wait_log(f"textfile not exported.*{tmp_path / 'broken.prom'}")
