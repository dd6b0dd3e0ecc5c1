"""PostgreSQL itself refuses to change the ledger; what a superuser forces through, verify names."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from adapters.postgres.ledger import PostgresLedger
from adapters.postgres.migrations import upgrade
from commands.ports import NewRecord, Record
from replay.chain import (
    ANCHOR_MISMATCH,
    HASH_MISMATCH,
    PREV_HASH_MISMATCH,
    ROW_ENVELOPE_MISMATCH,
    ChainReport,
    verify_ledger,
)
from tests.services import PostgresServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
STREAMS = ("account-alpha", "account-beta", "account-gamma")


def envelope(stream_id: str, version: int, n: int) -> dict[str, Any]:
    return {
        "event_id": f"evt-{n}",
        "stream_id": stream_id,
        "version": version,
        "type": "order.accepted.v1",
        "ts_ns": 1_700_000_000_000_000_000 + n,
        "command_id": f"cmd-{n}",
        "correlation_id": f"cmd-{n}",
        "causation_id": f"cmd-{n}",
        "intent_id": f"intent-{n}",
        "phase_id": 1 + n % 3,
        "actor": "phase:hunter",
        "policy_hash": "cd" * 32,
        "data": {"symbol": "BTCUSDT", "qty": f"0.{n:03d}", "px": "64000.5"},
    }


@pytest.fixture
def ledger_db(pg_url: str) -> Iterator[tuple[str, list[Record]]]:
    """A ledger of 30 records: 10 appends, each an account event and its command record."""
    upgrade(pg_url)
    ledger = PostgresLedger(pg_url)
    written: list[Record] = []
    versions: dict[str, int] = {}
    try:
        for n in range(10):
            stream = STREAMS[n % 3]
            versions[stream] = versions.get(stream, 0) + 1
            records = [
                NewRecord(stream, versions[stream], "order.accepted.v1", envelope(stream, versions[stream], 2 * n)),
                NewRecord(f"command-{n}", 1, "order.accepted.v1", envelope(f"command-{n}", 1, 2 * n + 1)),
            ]
            written += ledger.append(records)
    finally:
        ledger.close()
    yield pg_url, written


def run(url: str, statement: str, *params: Any) -> None:
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(statement, params or None)


def verify(url: str) -> ChainReport:
    ledger = PostgresLedger(url)
    try:
        return verify_ledger(ledger, batch=7)
    finally:
        ledger.close()


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE stored_events SET topic = 'order.rejected.v1' WHERE notification_id = 3",
        "UPDATE stored_events SET state = state WHERE false",  # refused even when nothing matches
        "DELETE FROM stored_events WHERE notification_id = 5",
        "DELETE FROM stored_events",
        "TRUNCATE stored_events",
        "UPDATE titan_meta SET value = 'titan-ledger/2'",
        "DELETE FROM titan_meta",
        "TRUNCATE titan_meta",
        "DELETE FROM titan_chain_head",
        "TRUNCATE titan_chain_head",
        "UPDATE titan_chain_head SET position = 1, record_count = 1",
        "UPDATE titan_chain_head SET hash = 'forged'",
        "DELETE FROM titan_schema_migrations",
        "UPDATE titan_schema_migrations SET checksum = 'x'",
        "TRUNCATE titan_schema_migrations",
    ],
)
def test_postgres_refuses_to_change_the_ledger(
    ledger_db: tuple[str, list[Record]], statement: str
) -> None:
    url, written = ledger_db
    with pytest.raises(psycopg.errors.RaiseException, match="append-only|may only move forward"):
        run(url, statement)
    report = verify(url)
    assert report.ok, report
    assert report.records_checked == len(written)


def test_psql_update_on_a_ledger_table_fails(ledger_db: tuple[str, list[Record]]) -> None:
    """The issue's own check, with the real psql client."""
    url, _ = ledger_db
    client = shutil.which("psql") or next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/psql"))), None)
    if client is None:
        pytest.skip("no psql client on this machine")
    result = subprocess.run(
        [str(client), url, "-v", "ON_ERROR_STOP=1", "-c", "UPDATE stored_events SET topic = 'x'"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "UPDATE on public.stored_events is refused: the ledger is append-only" in result.stderr


def test_the_anchor_still_moves_forward_for_appends(ledger_db: tuple[str, list[Record]]) -> None:
    url, written = ledger_db
    ledger = PostgresLedger(url)
    try:
        more = ledger.append([NewRecord("account-omega", 1, "order.accepted.v1", envelope("account-omega", 1, 99))])
        assert ledger.head() == (more[0].position, more[0].envelope["hash"], len(written) + 1)
    finally:
        ledger.close()


# A superuser can switch the triggers off. Then the hash chain is what catches it.


def superuser_sql(url: str, statement: str, *params: Any) -> None:
    """Change the ledger behind titan's back: triggers off for this session only."""
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("SET session_replication_role = replica")
        connection.execute(statement, params or None)


def state_at(url: str, position: int) -> bytes:
    with psycopg.connect(url) as connection:
        row = connection.execute(
            "SELECT state FROM stored_events WHERE notification_id = %s", (position,)
        ).fetchone()
    assert row is not None
    return bytes(row[0])


def test_a_value_changed_by_a_superuser_is_a_hash_mismatch(ledger_db: tuple[str, list[Record]]) -> None:
    url, _ = ledger_db
    state = state_at(url, 17)
    index = state.index(b"64000.5") + 1
    forged = state[:index] + b"5" + state[index + 1 :]  # 64000.5 -> 65000.5
    superuser_sql(url, "UPDATE stored_events SET state = %s WHERE notification_id = 17", forged)
    report = verify(url)
    assert (report.ok, report.code, report.position) == (False, HASH_MISMATCH, 17)


def test_a_row_changed_with_the_trigger_disabled_is_named(ledger_db: tuple[str, list[Record]]) -> None:
    url, _ = ledger_db
    run(
        url,
        "ALTER TABLE stored_events DISABLE TRIGGER titan_append_only; "
        "UPDATE stored_events SET topic = 'order.rejected.v1' WHERE notification_id = 5; "
        "ALTER TABLE stored_events ENABLE TRIGGER titan_append_only",
    )
    report = verify(url)
    assert (report.code, report.position) == (ROW_ENVELOPE_MISMATCH, 5)


def test_a_record_deleted_by_a_superuser_is_named_by_its_successor(
    ledger_db: tuple[str, list[Record]],
) -> None:
    url, written = ledger_db
    superuser_sql(url, "DELETE FROM stored_events WHERE notification_id = 12")
    report = verify(url)
    assert (report.code, report.position) == (PREV_HASH_MISMATCH, 13)
    assert report.expected == written[10].envelope["hash"]


def test_a_deleted_last_record_is_caught_by_the_anchor(ledger_db: tuple[str, list[Record]]) -> None:
    url, written = ledger_db
    superuser_sql(url, "DELETE FROM stored_events WHERE notification_id = %s", written[-1].position)
    report = verify(url)
    assert (report.code, report.position) == (ANCHOR_MISMATCH, written[-1].position)


def test_swapped_states_are_named_at_the_first_of_the_two(ledger_db: tuple[str, list[Record]]) -> None:
    url, _ = ledger_db
    a, b = state_at(url, 8), state_at(url, 20)
    superuser_sql(url, "UPDATE stored_events SET state = %s WHERE notification_id = 8", b)
    superuser_sql(url, "UPDATE stored_events SET state = %s WHERE notification_id = 20", a)
    report = verify(url)
    assert (report.code, report.position) == (ROW_ENVELOPE_MISMATCH, 8)


# Least-privilege roles (adapters/postgres/sql/roles.sql).


@pytest.fixture
def roles(ledger_db: tuple[str, list[Record]], pg_server: PostgresServer) -> Iterator[tuple[str, str]]:
    """Writer and auditor roles made by the documented script; their URLs."""
    url, _ = ledger_db
    suffix = uuid.uuid4().hex[:8]
    writer, auditor = f"titan_writer_{suffix}", f"titan_auditor_{suffix}"
    script = (ROOT / "adapters" / "postgres" / "sql" / "roles.sql").read_text()
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(sql.SQL("SET titan.writer_role = {}").format(sql.Literal(writer)))
        connection.execute(sql.SQL("SET titan.auditor_role = {}").format(sql.Literal(auditor)))
        connection.execute(script.encode())
        connection.execute(script.encode())  # idempotent
    try:
        yield as_role(url, writer), as_role(url, auditor)
    finally:
        pg_server.drop_database(url)
        with psycopg.connect(pg_server.admin_url, autocommit=True) as connection:
            for role in (writer, auditor):
                connection.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def as_role(url: str, role: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{role}@{host}"))


def test_the_writer_role_appends_but_cannot_change_or_unprotect(roles: tuple[str, str]) -> None:
    writer_url, _ = roles
    ledger = PostgresLedger(writer_url)
    try:
        before = ledger.head()
        [record] = ledger.append([NewRecord("account-zeta", 1, "order.accepted.v1", envelope("account-zeta", 1, 50))])
        assert ledger.head()[2] == before[2] + 1
        assert verify_ledger(ledger).ok
    finally:
        ledger.close()
    for statement in (
        "UPDATE stored_events SET topic = 'x'",
        "DELETE FROM stored_events",
        "TRUNCATE stored_events",
        "ALTER TABLE stored_events DISABLE TRIGGER titan_append_only",
        "DROP TABLE stored_events",
        "SET session_replication_role = replica",
        "LOCK TABLE stored_events IN EXCLUSIVE MODE",
    ):
        # Inside a transaction (psycopg opens one), as LOCK TABLE requires.
        with pytest.raises(psycopg.errors.InsufficientPrivilege), psycopg.connect(writer_url) as connection:
            connection.execute(statement)
    assert record.position > 0


def test_the_auditor_role_reads_the_view_only(roles: tuple[str, str], ledger_db: tuple[str, list[Record]]) -> None:
    _, auditor_url = roles
    _, written = ledger_db
    with psycopg.connect(auditor_url) as connection:
        rows = connection.execute("SELECT position, stream_id, hash FROM titan_records ORDER BY position").fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == [(w.position, w.stream_id, w.envelope["hash"]) for w in written]
    for statement in ("SELECT * FROM stored_events", "INSERT INTO stored_events (originator_id, originator_version) VALUES ('x', 1)"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege), psycopg.connect(auditor_url, autocommit=True) as connection:
            connection.execute(statement)
