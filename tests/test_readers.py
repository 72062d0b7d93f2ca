"""The low-level reader: what each kind of bad file gets."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from nodeslo import readers


def test_absent_file_is_none_not_an_error(tmp_path: Path) -> None:
    assert readers.read_int(str(tmp_path / "missing")) is None
    assert readers.read_text(str(tmp_path / "missing")) is None
    assert readers.read_all(str(tmp_path / "missing")) is None
    assert readers.list_dir(str(tmp_path / "missing")) == []


def test_file_under_a_file_is_absent(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("1\n")
    assert readers.read_int(str(tmp_path / "file" / "child")) is None  # ENOTDIR


def test_int_and_text_strip_padding(tmp_path: Path) -> None:
    (tmp_path / "n").write_text("  42\n")
    (tmp_path / "s").write_text("SAMSUNG MZQL23T8HCLS-00A07                \n")
    assert readers.read_int(str(tmp_path / "n")) == 42
    assert readers.read_text(str(tmp_path / "s")) == "SAMSUNG MZQL23T8HCLS-00A07"


@pytest.mark.parametrize("content", ["", "abc\n", "1.5\n", "0x10\n"])
def test_malformed_int_names_the_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "value"
    path.write_text(content)
    with pytest.raises(readers.MalformedValue) as info:
        readers.read_int(str(path))
    assert str(path) in str(info.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads mode-000 files")
def test_permission_denied_is_access_denied(tmp_path: Path) -> None:
    path = tmp_path / "energy_uj"
    path.write_text("1\n")
    path.chmod(0)
    with pytest.raises(readers.AccessDenied):
        readers.read_int(str(path))


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (errno.EAGAIN, readers.ValueUnavailable),
        (errno.ENODATA, readers.ValueUnavailable),
        (errno.EIO, readers.ValueUnavailable),
        (errno.EACCES, readers.AccessDenied),
        (errno.EPERM, readers.AccessDenied),
        (errno.ENOSPC, readers.ReadError),
    ],
)
def test_read_errno_classification(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, kind: type[Exception]
) -> None:
    """hwmon drivers fail the read(), not the open(): each errno gets its class."""
    path = tmp_path / "temp1_input"
    path.write_text("1\n")

    def failing_read(fd: int, size: int) -> bytes:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(readers.os, "read", failing_read)
    with pytest.raises(kind) as info:
        readers.read_int(str(path))
    assert type(info.value) is kind
    assert info.value.errno == code
    assert str(path) in str(info.value)


def test_device_gone_during_read_is_absent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "state"
    path.write_text("live\n")

    def gone(fd: int, size: int) -> bytes:
        raise OSError(errno.ENODEV, "No such device")

    monkeypatch.setattr(readers.os, "read", gone)
    assert readers.read_text(str(path)) is None


def test_read_all_reads_past_one_chunk(tmp_path: Path) -> None:
    path = tmp_path / "big"
    data = b"x" * (readers.CHUNK * 2 + 17)
    path.write_bytes(data)
    assert readers.read_all(str(path)) == data


def test_key_values(tmp_path: Path) -> None:
    path = tmp_path / "numastat"
    path.write_text("numa_hit 10\nlocal_node 7\nbroken\n")
    assert readers.read_key_values(str(path)) == {"numa_hit": "10", "local_node": "7"}
    path.write_text("a=1\nb = 2\n")
    assert readers.read_key_values(str(path), "=") == {"a": "1", "b": "2"}
