"""Signed checkpoints catch what the ledger's own anchor cannot: on SQLite and on PostgreSQL.

The attack of issue 9: someone with the database's full rights deletes the whole last command
and moves the anchor back (the chain still verifies), or then seals records of their own and
pushes the anchor (it verifies again). A checkpoint, signed with a key the database never
held, names both; a changed checkpoint line no longer verifies.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from adapters.checkpoint_file import load_private_key, read_lines, write_new_key
from commands.ports import Ledger, NewRecord
from infra.bootstrap import open_ledger
from infra.checkpointing import (
    CheckpointError,
    checkpoint_if_configured,
    verify_log,
    verifying_key,
    write_checkpoint,
)
from infra.settings import Settings
from replay.chain import verify_ledger
from replay.checkpoints import (
    BAD_SIGNATURE,
    COUNT_MISMATCH,
    FORGED,
    OTHER_LEDGER,
    TRUNCATED,
    Checkpoint,
    sign,
)
from tests.checkpoint_support import Tamperer, tamper_line
from tests.services import PostgresServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = 5


def envelope(stream_id: str, version: int, n: int, command: int) -> dict[str, Any]:
    return {
        "event_id": f"evt-{n}",
        "stream_id": stream_id,
        "version": version,
        "type": "order.accepted.v1",
        "ts_ns": 1_700_000_000_000_000_000 + n,
        "command_id": f"cmd-{command}",
        "correlation_id": f"cmd-{command}",
        "causation_id": f"cmd-{command}",
        "intent_id": None,
        "phase_id": 1,
        "actor": "phase:hunter",
        "policy_hash": "cd" * 32,
        "data": {"symbol": "BTCUSDT", "qty": f"0.{n:03d}"},
    }


def append_command(ledger: Ledger, command: int, account: str = "account-main") -> None:
    """One decided command: an account event and the command record, in one append."""
    ledger.append(
        [
            NewRecord(account, command, "order.accepted.v1", envelope(account, command, 2 * command, command)),
            NewRecord(f"command-cmd-{command}", 1, "order.accepted.v1", envelope(f"command-cmd-{command}", 1, 2 * command + 1, command)),
        ]
    )


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def checkpointed(ledger_url: str, tmp_path: Path) -> Iterator[tuple[Ledger, Settings]]:
    """A ledger of five commands, checkpointed after each (key and log outside the database)."""
    key = tmp_path / "keys" / "checkpoint.key"
    write_new_key(key)
    settings = Settings(ledger_url=ledger_url, checkpoint_key=str(key), checkpoint_file=str(tmp_path / "log.jsonl"))
    ledger = open_ledger(ledger_url)
    try:
        for command in range(1, COMMANDS + 1):
            append_command(ledger, command)
            write_checkpoint(ledger, settings)
        yield ledger, settings
    finally:
        ledger.close()


def log_of(settings: Settings) -> Path:
    assert settings.checkpoint_file is not None
    return Path(settings.checkpoint_file)


def check(ledger: Ledger, settings: Settings) -> Any:
    return verify_log(ledger, log_of(settings), verifying_key(settings))


def test_checkpoints_agree_with_an_intact_ledger(checkpointed: tuple[Ledger, Settings]) -> None:
    ledger, settings = checkpointed
    report = check(ledger, settings)
    assert report.ok, report.findings
    assert (report.lines, report.checkpoints) == (COMMANDS, COMMANDS)
    assert report.last is not None
    assert (report.last.position, report.last.hash, report.last.record_count) == ledger.head()


def test_a_deleted_last_command_passes_verify_but_the_checkpoints_name_the_truncation(
    checkpointed: tuple[Ledger, Settings],
) -> None:
    ledger, settings = checkpointed
    signed = ledger.head()
    deleted, head = Tamperer(settings.ledger_url).truncate_last_command()
    assert len(deleted) == 2

    chain = verify_ledger(ledger)
    assert chain.ok, chain  # the database's own anchor was moved with the records: it cannot tell
    assert (chain.head_position, chain.records_checked) == (head.position, 2 * COMMANDS - 2)

    report = check(ledger, settings)
    assert [f.code for f in report.findings] == [TRUNCATED]
    assert report.findings[0].message == (
        f"truncated: checkpoint at position {signed[0]} (hash {signed[1]}) but the ledger ends at {head.position}"
    )
    lines_before = list(read_lines(log_of(settings)))
    with pytest.raises(CheckpointError, match="truncated: checkpoint at position") as refused:
        write_checkpoint(ledger, settings)
    assert refused.value.exit_code == 1
    assert list(read_lines(log_of(settings))) == lines_before  # nothing signed over the truncation


@pytest.fixture
def writer_url(settings_url: str, pg_server: PostgresServer) -> Iterator[str]:
    """titan's documented least-privilege writer role (adapters/postgres/sql/roles.sql)."""
    suffix = uuid.uuid4().hex[:8]
    writer, auditor = f"titan_writer_{suffix}", f"titan_auditor_{suffix}"
    with psycopg.connect(settings_url, autocommit=True) as connection:
        connection.execute(sql.SQL("SET titan.writer_role = {}").format(sql.Literal(writer)))
        connection.execute(sql.SQL("SET titan.auditor_role = {}").format(sql.Literal(auditor)))
        connection.execute((ROOT / "adapters" / "postgres" / "sql" / "roles.sql").read_bytes())
    parts = urlsplit(settings_url)
    try:
        yield urlunsplit(parts._replace(netloc=f"{writer}@{parts.netloc.rsplit('@', 1)[-1]}"))
    finally:
        pg_server.drop_database(settings_url)
        with psycopg.connect(pg_server.admin_url, autocommit=True) as connection:
            for role in (writer, auditor):
                connection.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture
def settings_url(checkpointed: tuple[Ledger, Settings]) -> str:
    return checkpointed[1].ledger_url


def test_records_sealed_by_the_writer_with_the_anchor_pushed_are_named_forged(
    checkpointed: tuple[Ledger, Settings], request: pytest.FixtureRequest
) -> None:
    ledger, settings = checkpointed
    signed = ledger.head()
    tamperer = Tamperer(settings.ledger_url)
    deleted, head = tamperer.truncate_last_command()
    # On PostgreSQL the forger is titan's own writer role: it may INSERT and move the anchor forward.
    as_url = None if tamperer.path is not None else request.getfixturevalue("writer_url")
    forged = tamperer.append_sealed(deleted, head, as_url=as_url)

    chain = verify_ledger(ledger)
    assert chain.ok, chain  # a perfect chain, anchored at its (forged) head
    assert (chain.head_position, chain.records_checked) == (signed[0], signed[2])

    report = check(ledger, settings)
    assert [f.code for f in report.findings] == [FORGED]
    assert report.findings[0].message == (
        f"forged: position {signed[0]} has hash {forged[-1].envelope['hash']}, the checkpoint signed {signed[1]}"
    )
    with pytest.raises(CheckpointError, match=f"forged: position {signed[0]}"):
        write_checkpoint(ledger, settings)


def test_a_changed_checkpoint_line_is_a_bad_signature(checkpointed: tuple[Ledger, Settings], tmp_path: Path) -> None:
    ledger, settings = checkpointed
    log = log_of(settings)
    lines = list(read_lines(log))
    lines[2] = tamper_line(lines[2])
    other = tmp_path / "other.key"
    write_new_key(other)
    lines.append(sign(Checkpoint("x" * 64, 1, "y" * 64, 1, 0), load_private_key(other)))
    log.write_bytes(b"\n".join(lines) + b"\n")

    report = check(ledger, settings)
    assert [(f.code, f.line) for f in report.findings] == [(BAD_SIGNATURE, 3), (BAD_SIGNATURE, 6)]
    assert report.findings[0].message == "bad signature on line 3"
    assert report.findings[1].message.startswith("bad signature (signed by key ")
    assert report.findings[1].message.endswith(" on line 6")
    assert report.checkpoints == COMMANDS - 1  # the other lines still count


# The rest needs no second store.


def sqlite_settings(tmp_path: Path, name: str = "ledger.db", **overrides: Any) -> Settings:
    return Settings(ledger_url=f"sqlite:///{tmp_path / name}", **overrides)


def test_checkpoint_if_configured_writes_only_with_a_key_and_only_when_the_head_moved(tmp_path: Path) -> None:
    settings = sqlite_settings(tmp_path)
    ledger = open_ledger(settings.ledger_url)
    try:
        checkpoint_if_configured(ledger, settings)  # empty ledger, no key: nothing
        append_command(ledger, 1)
        checkpoint_if_configured(ledger, settings)
        assert sorted(p.name for p in tmp_path.iterdir() if "checkpoint" in p.name) == []

        write_new_key(tmp_path / "checkpoint.key")  # the default key beside the ledger turns them on
        checkpoint_if_configured(ledger, settings)
        log = tmp_path / "ledger.checkpoints.jsonl"  # the default log beside the ledger
        assert len(list(read_lines(log))) == 1
        checkpoint_if_configured(ledger, settings)  # the head did not move
        assert len(list(read_lines(log))) == 1
        append_command(ledger, 2)
        checkpoint_if_configured(ledger, settings)
        assert len(list(read_lines(log))) == 2
        assert check(ledger, Settings(ledger_url=settings.ledger_url, checkpoint_file=str(log))).ok
        assert oct(log.stat().st_mode & 0o777) == "0o600"
    finally:
        ledger.close()
    memory = open_ledger("sqlite:///:memory:")
    try:
        append_command(memory, 1)
        checkpoint_if_configured(memory, Settings(ledger_url="sqlite:///:memory:", checkpoint_key=str(tmp_path / "checkpoint.key")))
    finally:
        memory.close()


def test_checkpoints_of_another_ledger_are_named(tmp_path: Path) -> None:
    key = tmp_path / "k.key"
    write_new_key(key)
    first = sqlite_settings(tmp_path, "a.db", checkpoint_key=str(key), checkpoint_file=str(tmp_path / "a.jsonl"))
    a, b = open_ledger(first.ledger_url), open_ledger(f"sqlite:///{tmp_path / 'b.db'}")
    try:
        append_command(a, 1)
        write_checkpoint(a, first)
        append_command(b, 1, account="account-other")
        report = check(b, first)
        assert [f.code for f in report.findings] == [OTHER_LEDGER]
        assert "another ledger: line 1 was signed for the ledger whose first record has hash" in report.findings[0].message
    finally:
        a.close()
        b.close()


def test_a_signed_count_that_disagrees_is_named(tmp_path: Path) -> None:
    key = tmp_path / "k.key"
    write_new_key(key)
    settings = sqlite_settings(tmp_path, checkpoint_key=str(key), checkpoint_file=str(tmp_path / "c.jsonl"))
    ledger = open_ledger(settings.ledger_url)
    try:
        append_command(ledger, 1)
        position, head_hash, _ = ledger.head()
        first_hash = ledger.read_all(0, 1)[0].envelope["hash"]
        line = sign(Checkpoint(first_hash, position, head_hash, 3, 0), load_private_key(key))
        log_of(settings).write_bytes(line + b"\n")
        report = check(ledger, settings)
        assert [f.code for f in report.findings] == [COUNT_MISMATCH]
        assert report.findings[0].message == (
            f"count: position {position} is the ledger's record number 2, the checkpoint signed 3 records up to it"
        )
    finally:
        ledger.close()


def test_the_first_checkpoint_refuses_a_ledger_whose_chain_is_broken(tmp_path: Path) -> None:
    import sqlite3

    key = tmp_path / "k.key"
    write_new_key(key)
    settings = sqlite_settings(tmp_path, checkpoint_key=str(key), checkpoint_file=str(tmp_path / "c.jsonl"))
    ledger = open_ledger(settings.ledger_url)
    try:
        for command in (1, 2):
            append_command(ledger, command)
        with sqlite3.connect(tmp_path / "ledger.db") as connection:
            connection.execute("UPDATE stored_events SET topic = 'x' WHERE rowid = 2")
        with pytest.raises(CheckpointError, match="fails verification at position 2") as refused:
            write_checkpoint(ledger, settings)
        assert refused.value.exit_code == 1
        assert not (tmp_path / "c.jsonl").exists() or (tmp_path / "c.jsonl").read_bytes() == b""
    finally:
        ledger.close()
