"""Attribute files held open between scrapes (readers.HeldFiles, issue 20): whatever
happens to a file, a read answers as a fresh open/read would, and never fails a scrape.

What each gets: a file removed (CPU unplugged) reads as absent, and its value again once
it is back; a descriptor closed under the reader (EBADF) or a node gone (ENODEV, sysfs'
answer for a removed attribute) is dropped and the file opened afresh; a file replaced
by another (renamed over it) is read anew, not the old inode; a FIFO put in a file's
place reads as empty at once and is never held; past the process-wide budget, files are
read as usual; and a collector keeps serving through a CPU going and coming back.
"""

from __future__ import annotations

import errno
import gc
import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from nodeslo import readers
from nodeslo.collectors.base import CollectorContext, CollectorSet
from nodeslo.collectors.cpuidle import CpuidleCollector
from nodeslo.readers import HeldFiles
from nodeslo.web.exposition import TextRenderer
from support.exposition import value
from test_cpuidle import small_tree


@pytest.fixture(autouse=True)
def _room(monkeypatch: pytest.MonkeyPatch) -> None:
    """The budget is the process's: collectors other tests left open hold part of it
    (a daemon has one of each). These tests get room of their own."""
    gc.collect()
    monkeypatch.setattr(readers, "MAX_HELD_FILES", readers._Budget.held + 512)
    monkeypatch.setattr(readers, "_held_limit", lambda: readers.MAX_HELD_FILES)


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # as the fixtures and most tools replace a file


def test_a_held_file_is_read_fresh_each_time(tmp_path: Path) -> None:
    path = tmp_path / "usage"
    path.write_text("1\n")
    held = HeldFiles()
    try:
        assert held.read(str(path)) == b"1\n"
        assert len(held) == 1
        with open(path, "w") as handle:  # rewritten in place: the same inode
            handle.write("22\n")
        assert held.read(str(path)) == b"22\n"
        assert len(held) == 1
    finally:
        held.close()
    assert len(held) == 0


def test_a_replaced_file_is_opened_again(tmp_path: Path) -> None:
    path = tmp_path / "usage"
    path.write_text("1\n")
    held = HeldFiles()
    try:
        assert held.read(str(path)) == b"1\n"
        _write(path, "2\n")
        assert held.read(str(path)) == b"2\n"  # not the old inode's 1
        assert held.read(str(path)) == b"2\n"
    finally:
        held.close()


def test_a_removed_file_reads_as_absent_then_comes_back(tmp_path: Path) -> None:
    state = tmp_path / "state2"
    state.mkdir()
    (state / "usage").write_text("5\n")
    path = str(state / "usage")
    held = HeldFiles()
    try:
        assert held.read(path) == b"5\n"
        (state / "usage").unlink()
        state.rmdir()  # the CPU went offline: its cpuidle directory is gone
        assert held.read(path) is None
        assert len(held) == 0
        state.mkdir()
        (state / "usage").write_text("6\n")  # and back
        assert held.read(path) == b"6\n"
        assert len(held) == 1
    finally:
        held.close()


@pytest.mark.parametrize("code", [errno.ENODEV, errno.EBADF, errno.ENOENT, errno.EIO])
def test_an_error_on_a_held_descriptor_drops_it_and_reads_afresh(
    code: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENODEV is what sysfs answers on the descriptor of a removed attribute (a device
    that went, even if it came back since): the file is opened again."""
    path = tmp_path / "time"
    path.write_text("100\n")
    held = HeldFiles()
    real = os.pread
    failures = [code]

    def failing(fd: int, size: int, offset: int) -> bytes:
        if failures:
            raise OSError(failures.pop(), os.strerror(code))
        return real(fd, size, offset)

    try:
        assert held.read(str(path)) == b"100\n"
        monkeypatch.setattr(readers.os, "pread", failing)
        path.write_text("200\n")
        assert held.read(str(path)) == b"200\n"
        assert len(held) == 1  # held again
        assert held.read(str(path)) == b"200\n"
    finally:
        monkeypatch.undo()
        held.close()


def test_a_descriptor_closed_under_the_reader(tmp_path: Path) -> None:
    path = tmp_path / "disable"
    path.write_text("0\n")
    held = HeldFiles()
    try:
        assert held.read(str(path)) == b"0\n"
        fd = held._fds[str(path)][0]
        os.close(fd)  # a bug elsewhere closes it: EBADF on the next pread
        path.write_text("1\n")
        assert held.read(str(path)) == b"1\n"
    finally:
        held.close()


def test_a_fifo_is_read_at_once_and_never_held(tmp_path: Path) -> None:
    path = tmp_path / "usage"
    os.mkfifo(path)
    held = HeldFiles()
    try:
        assert held.read(str(path)) == b""
        assert len(held) == 0
    finally:
        held.close()


def test_past_the_budget_files_are_read_as_usual(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readers, "MAX_HELD_FILES", readers._Budget.held + 3)  # over _room's
    paths = []
    for n in range(10):
        paths.append(str(tmp_path / f"f{n}"))
        Path(paths[-1]).write_text(f"{n}\n")
    held, other = HeldFiles(), HeldFiles()
    try:
        assert [held.read(p) for p in paths] == [f"{n}\n".encode() for n in range(10)]
        assert len(held) == 3
        assert other.read(paths[0]) == b"0\n" and len(other) == 0  # the budget is shared
        held.close()
        assert other.read(paths[0]) == b"0\n" and len(other) == 1
    finally:
        held.close()
        other.close()


def test_unreadable_absent_and_malformed_answers_match_read_small(tmp_path: Path) -> None:
    held = HeldFiles()
    try:
        assert held.read(str(tmp_path / "missing")) is None
        (tmp_path / "dir").mkdir()
        with pytest.raises(readers.ReadError):
            held.read(str(tmp_path / "dir"))  # EISDIR, as read_small says it
        with pytest.raises(readers.ReadError):
            readers.read_small(str(tmp_path / "dir"))
        assert len(held) == 0
    finally:
        held.close()


def test_the_cpuidle_collector_serves_through_a_cpu_going_and_coming_back(
    tmp_path: Path,
) -> None:
    """cpu1 goes offline (its cpuidle directory removed, `online` says 0), then comes
    back with new counters: every scrape succeeds, and the counters are the files'."""
    roots = small_tree(tmp_path, ncpus=2)
    cpu = tmp_path / "sys/devices/system/cpu"
    ctx = CollectorContext(roots=roots)
    collector = CpuidleCollector(ctx)
    cset = CollectorSet([collector], ctx.errors)
    registry = CollectorRegistry()
    registry.register(cset)

    def scrape() -> str:
        text = TextRenderer()(registry).decode()
        assert value(text, "nodeslo_collector_success", collector="cpuidle") == 1
        return text

    def c6_entries() -> float:
        return value(scrape(), "nodeslo_cpuidle_entries_total", state="C6")

    try:
        before = c6_entries()
        assert len(collector._held) > 0
        saved = {p.name: p.read_text() for p in (cpu / "cpu1/cpuidle/state2").iterdir()}
        import shutil

        shutil.rmtree(cpu / "cpu1/cpuidle")
        (cpu / "online").write_text("0\n")
        assert c6_entries() == before  # cpu1's last reading keeps counting: never back
        (cpu / "online").write_text("0-1\n")
        for k, name in enumerate(["POLL", "C1", "C6"]):
            state = cpu / f"cpu1/cpuidle/state{k}"
            state.mkdir(parents=True)
            for file, text in saved.items():
                (state / file).write_text(text)
            (state / "name").write_text(name + "\n")
        usage = cpu / "cpu1/cpuidle/state2/usage"
        usage.write_text(str(int(saved["usage"]) + 1000) + "\n")
        assert c6_entries() == before + 1000
        usage.write_text(str(int(saved["usage"]) + 3000) + "\n")
        assert c6_entries() == before + 3000
    finally:
        cset.close()
    assert len(collector._held) == 0
