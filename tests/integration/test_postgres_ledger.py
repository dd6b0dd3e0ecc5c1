"""The PostgreSQL ledger: the Ledger contract, eventsourcing's layout and reader, ordering, faults."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import psycopg
import pytest
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore

from adapters.postgres.ledger import (
    EVENTSOURCING_CHANNEL,
    NOTIFY_CHANNEL,
    PostgresLedger,
)
from adapters.postgres.migrations import upgrade
from adapters.sqlite.ledger import LEDGER_FORMAT
from commands.ports import Ledger, LedgerError, LedgerUnreachable
from replay.chain import verify_ledger
from schemas.canonical import GENESIS_HASH
from tests.integration.test_ledger_contract import LedgerContract, new, summary
from tests.services import PostgresServer, free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def psql(url: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run one statement as the test's superuser, outside titan."""
    with psycopg.connect(url, autocommit=True) as connection:
        cursor = connection.execute(statement, params or None)
        return cursor.fetchall() if cursor.description else []


def recorder_for(url: str) -> tuple[PostgresDatastore, PostgresApplicationRecorder]:
    """eventsourcing's own recorder on a titan database (text ids, no table creation)."""
    parts = urlsplit(url)
    datastore = PostgresDatastore(
        dbname=parts.path.lstrip("/"),
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5432,
        user=parts.username or "postgres",
        password=parts.password or "",
        originator_id_type="text",
    )
    return datastore, PostgresApplicationRecorder(datastore)


class TestPostgresLedger(LedgerContract):
    @pytest.fixture
    def make_ledger(self, pg_url: str) -> Iterator[Callable[[], Ledger]]:
        upgrade(pg_url)
        opened: list[Ledger] = []

        def make() -> Ledger:
            ledger = PostgresLedger(pg_url)
            opened.append(ledger)
            return ledger

        yield make
        for ledger in opened:
            ledger.close()

    def test_a_reopened_ledger_keeps_its_records_and_chain(
        self, make_ledger: Callable[[], Ledger]
    ) -> None:
        ledger = make_ledger()
        written = ledger.append([new("account-a", 1), new("account-b", 1)])
        head = ledger.head()
        ledger.close()
        again = make_ledger()
        assert again.head() == head
        assert summary(again.read_all()) == summary(written)
        more = again.append([new("account-a", 2)])
        assert more[0].envelope["prev_hash"] == head[1]
        assert verify_ledger(again).ok

    def test_eventsourcings_own_recorder_reads_a_titan_ledger(
        self, ledger: Ledger, pg_url: str
    ) -> None:
        written = ledger.append([new("account-a", 1), new("command-c1", 1, "command.decided.v1")])
        written += ledger.append([new("account-a", 2), new("account-b", 1)])
        datastore, recorder = recorder_for(pg_url)
        try:
            notifications = recorder.select_notifications(start=None, limit=10)
            assert [
                (n.id, n.originator_id, n.originator_version, n.topic, n.state)
                for n in notifications
            ] == [(r.position, r.stream_id, r.version, r.type, r.state) for r in written]
            assert recorder.max_notification_id() == written[-1].position
            assert [e.originator_version for e in recorder.select_events("account-a")] == [1, 2]
        finally:
            datastore.close()

    def test_storage_is_eventsourcings_ddl_exactly(
        self, ledger: Ledger, pg_url: str, pg_server: PostgresServer
    ) -> None:
        """The table, index and type match what eventsourcing's create_table() makes itself."""
        reference = pg_server.create_database("titan_es_reference")
        try:
            datastore, recorder = recorder_for(reference)
            try:
                recorder.create_table()
            finally:
                datastore.close()
            assert catalog(pg_url) == catalog(reference)
        finally:
            pg_server.drop_database(reference)

    def test_the_audit_view_shows_envelope_fields_as_columns(
        self, ledger: Ledger, pg_url: str
    ) -> None:
        [record] = ledger.append([new("account-a", 1)])
        with psycopg.connect(pg_url) as connection:
            cursor = connection.execute("SELECT * FROM titan_records")
            columns = [d.name for d in cursor.description or ()]
            row = dict(zip(columns, cursor.fetchone() or (), strict=True))
        assert columns == [
            "position", "stream_id", "version", "type", "event_id", "ts_ns", "command_id",
            "correlation_id", "causation_id", "intent_id", "phase_id", "actor", "policy_hash",
            "prev_hash", "hash", "data", "ts",
        ]  # fmt: skip
        assert row["position"] == record.position
        assert (row["stream_id"], row["version"], row["type"]) == ("account-a", 1, "order.accepted.v1")
        assert row["event_id"] == "account-a:1"
        assert row["ts_ns"] == record.envelope["ts_ns"]
        assert row["phase_id"] == 2
        assert row["hash"] == record.envelope["hash"]
        assert row["prev_hash"] == GENESIS_HASH
        assert row["data"] == record.envelope["data"]
        assert row["ts"].year == 2023

    def test_every_append_notifies_the_head_position(self, ledger: Ledger, pg_url: str) -> None:
        async def listen() -> list[tuple[str, str]]:
            heard: list[tuple[str, str]] = []
            connection = await asyncpg.connect(pg_url)
            await connection.add_listener(NOTIFY_CHANNEL, lambda *a: heard.append((a[2], a[3])))
            await connection.add_listener(EVENTSOURCING_CHANNEL, lambda *a: heard.append((a[2], a[3])))
            await asyncio.to_thread(ledger.append, [new("account-a", 1), new("account-b", 1)])
            await asyncio.to_thread(ledger.append, [new("account-a", 2)])
            for _ in range(50):
                if len(heard) >= 4:
                    break
                await asyncio.sleep(0.05)
            await connection.close()
            return heard

        heard = asyncio.run(listen())
        head = ledger.head()[0]
        assert (NOTIFY_CHANNEL, str(head)) in heard
        assert (NOTIFY_CHANNEL, str(head - 1)) in heard
        assert heard.count((EVENTSOURCING_CHANNEL, "")) == 2

    def test_position_order_is_commit_order_for_a_tailing_reader(
        self, make_ledger: Callable[[], Ledger]
    ) -> None:
        """Writers race; a reader that follows by position never skips a record."""
        writers = [make_ledger() for _ in range(4)]
        reader = make_ledger()
        done = threading.Event()
        seen: list[int] = []

        def write(ledger: Ledger, name: str) -> None:
            for version in range(1, 41):
                ledger.append([new(f"account-{name}", version), new(f"command-{name}-{version}", 1)])

        def tail() -> None:
            after = 0
            while True:
                finished = done.is_set()
                records = reader.read_all(after, 50)
                seen.extend(r.position for r in records)
                if records:
                    after = records[-1].position
                elif finished:
                    return

        threads = [threading.Thread(target=write, args=(w, f"w{i}")) for i, w in enumerate(writers)]
        follower = threading.Thread(target=tail)
        follower.start()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        done.set()
        follower.join()
        everything = [r.position for r in reader.iter_all()]
        assert len(everything) == 320
        assert seen == everything  # nothing skipped, nothing out of order
        assert verify_ledger(reader).ok

    def test_writers_in_two_processes_extend_one_chain(self, pg_url: str) -> None:
        upgrade(pg_url)
        script = textwrap.dedent(
            """
            import sys
            from adapters.postgres.ledger import PostgresLedger
            from commands.ports import NewRecord
            url, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
            ledger = PostgresLedger(url)
            for version in range(1, count + 1):
                stream = f"account-{name}"
                envelope = {"event_id": f"{name}:{version}", "stream_id": stream, "version": version,
                            "type": "order.accepted.v1", "ts_ns": version, "command_id": None,
                            "correlation_id": None, "causation_id": None, "intent_id": None,
                            "phase_id": None, "actor": name, "policy_hash": None, "data": {}}
                ledger.append([NewRecord(stream, version, "order.accepted.v1", envelope)])
            ledger.close()
            """
        )
        env = os.environ | {"PYTHONPATH": str(ROOT)}
        writers = [
            subprocess.Popen([sys.executable, "-c", script, pg_url, name, "60"], env=env)
            for name in ("p1", "p2", "p3")
        ]
        assert [w.wait(timeout=120) for w in writers] == [0, 0, 0]
        ledger = PostgresLedger(pg_url)
        try:
            report = verify_ledger(ledger)
            assert report.ok, report
            assert ledger.head()[2] == 180
        finally:
            ledger.close()

    def test_a_table_lock_held_too_long_is_refused_clearly(self, pg_url: str) -> None:
        upgrade(pg_url)
        ledger = PostgresLedger(pg_url, lock_timeout_s=0.5)
        holder = psycopg.connect(pg_url)
        try:
            holder.execute("LOCK TABLE stored_events IN EXCLUSIVE MODE")
            started = time.monotonic()
            with pytest.raises(LedgerError, match="locked for more than 0.5 s"):
                ledger.append([new("account-a", 1)])
            assert time.monotonic() - started >= 0.4
            holder.rollback()
            ledger.append([new("account-a", 1)])
            assert ledger.head()[2] == 1
        finally:
            holder.close()
            ledger.close()

    def test_the_async_api_runs_on_the_callers_loop(self, pg_url: str) -> None:
        upgrade(pg_url)

        async def scenario() -> None:
            ledger = await PostgresLedger.connect(pg_url)
            try:
                written = await ledger.append_async([new("account-a", 1), new("account-b", 1)])
                assert [r.position for r in await ledger.read_all_async()] == [r.position for r in written]
                assert [r.version for r in await ledger.read_stream_async("account-a")] == [1]
                assert (await ledger.head_async())[2] == 2
                with pytest.raises(LedgerError, match="await its \\*_async method"):
                    ledger.head()  # the sync API would block the loop it needs
                assert (await asyncio.to_thread(ledger.head))[2] == 2  # from another thread it works
            finally:
                await ledger.close_async()
            with pytest.raises(LedgerError, match="closed"):
                await ledger.head_async()

        asyncio.run(scenario())

    def test_the_async_api_of_a_sync_ledger_hops_to_its_loop(self, ledger: Ledger) -> None:
        assert isinstance(ledger, PostgresLedger)

        async def scenario() -> int:
            await ledger.append_async([new("account-a", 1)])
            return (await ledger.head_async())[2]

        assert asyncio.run(scenario()) == 1
        assert ledger.head()[2] == 1

    def test_another_ledger_format_is_refused(self, ledger: Ledger, pg_url: str) -> None:
        psql(
            pg_url,
            "ALTER TABLE titan_meta DISABLE TRIGGER titan_append_only; "
            "UPDATE titan_meta SET value = 'titan-ledger/99' WHERE key = 'format'",
        )
        with pytest.raises(LedgerError, match=f"titan-ledger/99.*{LEDGER_FORMAT}"):
            PostgresLedger(pg_url)

    def test_a_ledger_whose_anchor_disagrees_refuses_to_append(self, ledger: Ledger, pg_url: str) -> None:
        ledger.append([new("account-a", 1), new("account-b", 1)])
        psql(pg_url, "SET session_replication_role = replica; DELETE FROM stored_events WHERE originator_id = 'account-b'")
        with pytest.raises(LedgerError, match="last record is at position 1 but its anchor says 2"):
            ledger.append([new("account-c", 1)])
        assert ledger.head()[0] == 2


def catalog(url: str) -> dict[str, Any]:
    """What eventsourcing's DDL creates, as the catalog describes it."""
    return {
        "columns": psql(
            url,
            "SELECT column_name, data_type, is_nullable, column_default, ordinal_position "
            "FROM information_schema.columns WHERE table_schema = 'public' "
            "AND table_name = 'stored_events' ORDER BY ordinal_position",
        ),
        "indexes": psql(
            url,
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
            "AND tablename = 'stored_events' ORDER BY indexname",
        ),
        "options": psql(url, "SELECT reloptions FROM pg_class WHERE oid = 'public.stored_events'::regclass"),
        "type": psql(
            url,
            "SELECT attname, format_type(atttypid, atttypmod), attnum FROM pg_attribute "
            "WHERE attrelid = 'public.stored_event_text'::regclass AND attnum > 0 ORDER BY attnum",
        ),
    }


def test_eventsourcings_recorder_reads_what_the_demo_wrote(pg_url: str) -> None:
    """The ledger of a real session: eventsourcing reads the same records, state bytes and all."""
    from infra.bootstrap import bootstrap, open_ledger
    from infra.demo import run
    from infra.settings import Settings

    ledger = open_ledger(pg_url)
    try:
        bus = bootstrap(Settings(ledger_url=pg_url, core="interpreted"), ledger=ledger)
        run(bus, seed=3, orders=40, ledger_url=pg_url, progress=False)
        ours = [(r.position, r.stream_id, r.version, r.type, r.state) for r in ledger.iter_all()]
    finally:
        ledger.close()
    datastore, recorder = recorder_for(pg_url)
    try:
        theirs = [
            (n.id, n.originator_id, n.originator_version, n.topic, n.state)
            for n in recorder.select_notifications(start=None, limit=len(ours) + 10)
        ]
    finally:
        datastore.close()
    assert len(ours) > 100
    assert theirs == ours


def test_an_unreachable_server_is_its_own_error() -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    with pytest.raises(LedgerUnreachable, match="cannot reach|unreachable"):
        PostgresLedger(url, connect_timeout_s=2)
    with pytest.raises(LedgerUnreachable):
        upgrade(url)


def test_a_missing_database_is_bad_input_not_an_outage(pg_server: PostgresServer) -> None:
    url = pg_server.database_url("titan_no_such_database")
    with pytest.raises(LedgerError, match="does not exist") as caught:
        PostgresLedger(url)
    assert not isinstance(caught.value, LedgerUnreachable)


def test_an_empty_database_asks_for_an_upgrade(pg_url: str) -> None:
    with pytest.raises(LedgerError, match="no titan ledger yet: run `titan db upgrade"):
        PostgresLedger(pg_url)


def test_a_foreign_database_is_refused_and_left_alone(pg_url: str) -> None:
    psql(pg_url, "CREATE TABLE customers (id integer PRIMARY KEY, name text)")
    with pytest.raises(LedgerError, match="not a titan ledger.*customers"):
        PostgresLedger(pg_url)
    with pytest.raises(LedgerError, match="not a titan ledger.*customers"):
        upgrade(pg_url)
    tables = psql(pg_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    assert tables == [("customers",)]


def test_a_password_never_appears_in_an_error(pg_server: PostgresServer) -> None:
    port = free_port()
    with pytest.raises(LedgerUnreachable) as caught:
        PostgresLedger(f"postgresql://titan:s3cret-pw@127.0.0.1:{port}/x", connect_timeout_s=2)
    assert "s3cret-pw" not in str(caught.value)
    assert "titan:***@" in str(caught.value)
