"""The CLI against a PostgreSQL ledger, as a user drives it: demo, verify, db upgrade/status."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import psycopg
import pytest
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore

from tests.services import free_port

from .conftest import Titan

pytestmark = pytest.mark.e2e


def test_demo_on_postgresql_verifies_and_eventsourcing_reads_it(titan: Titan, pg_url: str) -> None:
    summary = titan.json("demo", "--ledger", pg_url, "--orders", "120", "--json")
    assert summary["ledger"] == pg_url
    verified = titan.json("ledger", "verify", "--ledger", pg_url, "--json")
    assert verified["ok"] is True
    assert verified["records_checked"] == summary["records"]
    assert verified["head_hash"] == summary["head_hash"]
    # The embedded ledger of the same seed holds the very same chain.
    embedded = titan.json("demo", "--orders", "120", "--json")
    assert embedded["head_hash"] == summary["head_hash"]

    parts = urlsplit(pg_url)
    datastore = PostgresDatastore(
        parts.path.lstrip("/"), parts.hostname or "127.0.0.1", parts.port or 5432,
        parts.username or "postgres", parts.password or "", originator_id_type="text",
    )
    try:
        recorder = PostgresApplicationRecorder(datastore)
        notifications = recorder.select_notifications(start=None, limit=summary["records"] + 10)
        assert len(notifications) == summary["records"]
        assert recorder.max_notification_id() == verified["head_position"]
    finally:
        datastore.close()


def test_verify_fails_with_the_position_a_superuser_changed(titan: Titan, pg_url: str) -> None:
    titan.json("demo", "--ledger", pg_url, "--orders", "30", "--json")
    with psycopg.connect(pg_url, autocommit=True) as connection:
        with pytest.raises(psycopg.errors.RaiseException):
            connection.execute("UPDATE stored_events SET topic = 'x' WHERE notification_id = 10")
        connection.execute("SET session_replication_role = replica")
        connection.execute("UPDATE stored_events SET topic = 'x' WHERE notification_id = 10")
    result = titan("ledger", "verify", "--ledger", pg_url, "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert (report["ok"], report["position"], report["code"]) == (False, 10, "ROW_ENVELOPE_MISMATCH")


def test_db_upgrade_and_status(titan: Titan, pg_url: str) -> None:
    pending = titan("db", "status", "--ledger", pg_url, "--json")
    assert pending.returncode == 1
    assert json.loads(pending.stdout)["up_to_date"] is False
    upgraded = titan.json("db", "upgrade", "--ledger", pg_url, "--json")
    assert upgraded["up_to_date"] is True
    assert upgraded["applied_now"][:3] == ["0001_ledger.sql", "0002_append_only.sql", "0003_auditor_view.sql"]
    again = titan.json("db", "upgrade", "--ledger", pg_url, "--json")
    assert again["applied_now"] == []
    status = titan.json("db", "status", "--ledger", pg_url, "--json")
    assert status["up_to_date"] is True and status["pending"] == []
    # TITAN_LEDGER_URL works as well as --ledger.
    assert titan("db", "status", env={"TITAN_LEDGER_URL": pg_url}).returncode == 0


def test_an_unreachable_server_exits_3_and_a_bad_target_exits_2(titan: Titan, pg_url: str) -> None:
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/titan"
    for args in (("ledger", "verify"), ("state",), ("db", "status"), ("db", "upgrade"), ("init",)):
        result = titan(*args, "--ledger", dead)
        assert result.returncode == 3, (args, result.stderr)
        assert "unreachable" in result.stderr or "cannot reach" in result.stderr
    not_postgres = titan("db", "upgrade", "--ledger", "sqlite:///x.db")
    assert not_postgres.returncode == 2
    assert "not a postgresql:// URL" in not_postgres.stderr
    empty = titan("ledger", "verify", "--ledger", pg_url)
    assert empty.returncode == 2
    assert "run `titan db upgrade" in empty.stderr
