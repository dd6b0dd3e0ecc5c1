"""The embedded ledger's files: read-only opening creates and changes nothing, an empty file is
not a ledger, and what titan creates is readable by its owner only."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.sqlite.ledger import SQLiteLedger
from commands.ports import LedgerError, NewRecord
from infra.bootstrap import open_ledger

pytestmark = pytest.mark.integration


def record(stream: str, version: int) -> NewRecord:
    return NewRecord(
        stream,
        version,
        "order.accepted.v1",
        {"stream_id": stream, "version": version, "type": "order.accepted.v1", "command_id": f"c-{version}", "data": {}},
    )


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask, so that what is asserted is titan's choice, not the test runner's."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.fixture
def ledger_file(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.db"
    ledger = open_ledger(f"sqlite:///{path}")
    try:
        ledger.append([record("account-a", 1)])
    finally:
        ledger.close()
    return path


def test_a_read_only_open_of_a_missing_ledger_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "ledger.db"
    with pytest.raises(LedgerError, match="no ledger at"):
        open_ledger(f"sqlite:///{path}", create=False)
    with pytest.raises(LedgerError, match="no ledger at"):
        SQLiteLedger(str(path), read_only=True)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("create", [False, True])
def test_an_empty_file_is_not_a_ledger(tmp_path: Path, create: bool) -> None:
    path = tmp_path / "ledger.db"
    path.touch()
    with pytest.raises(LedgerError, match=r"ledger.db is not a titan ledger \(empty file\)"):
        open_ledger(f"sqlite:///{path}", create=create)
    assert path.read_bytes() == b""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ledger.db"]


def test_a_read_only_open_reads_changes_nothing_and_refuses_to_append(ledger_file: Path) -> None:
    before = digest(ledger_file)
    ledger = open_ledger(f"sqlite:///{ledger_file}", create=False)
    try:
        assert ledger.head()[2] == 1
        assert [r.stream_id for r in ledger.read_all(0)] == ["account-a"]
        with pytest.raises(LedgerError, match="opened read-only"):
            ledger.append([record("account-a", 2)])
    finally:
        ledger.close()
    assert digest(ledger_file) == before


def test_a_read_only_open_sees_what_a_writer_appends_meanwhile(ledger_file: Path) -> None:
    reader = open_ledger(f"sqlite:///{ledger_file}", create=False)
    writer = open_ledger(f"sqlite:///{ledger_file}")
    try:
        writer.append([record("account-a", 2)])
        assert reader.head()[2] == 2
    finally:
        writer.close()
        reader.close()


def test_a_foreign_sqlite_file_is_refused_read_only_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as other:
        other.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY)")
    before = digest(path)
    with pytest.raises(LedgerError, match="is a SQLite database but not a titan ledger: it has tables \\['customers'\\]"):
        open_ledger(f"sqlite:///{path}", create=False)
    assert digest(path) == before


def test_a_new_ledger_and_its_directories_are_readable_by_their_owner_only(tmp_path: Path, umask_022: None) -> None:
    path = tmp_path / "home" / ".titan" / "ledger.db"
    ledger = open_ledger(f"sqlite:///{path}")
    try:
        ledger.append([record("account-a", 1)])
        created = sorted(p.name for p in path.parent.iterdir())
        assert created == ["ledger.db", "ledger.db-shm", "ledger.db-wal"]  # WAL files while open
        modes = {name: oct((path.parent / name).stat().st_mode & 0o777) for name in created}
        assert modes == {name: "0o600" for name in created}
    finally:
        ledger.close()
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"
    assert oct(path.parent.parent.stat().st_mode & 0o777) == "0o700"


def test_an_existing_directory_keeps_its_mode(tmp_path: Path, umask_022: None) -> None:
    directory = tmp_path / "shared"
    directory.mkdir(mode=0o755)
    open_ledger(f"sqlite:///{directory / 'ledger.db'}").close()
    assert oct(directory.stat().st_mode & 0o777) == "0o755"
    assert oct((directory / "ledger.db").stat().st_mode & 0o777) == "0o600"
