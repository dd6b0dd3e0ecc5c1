"""The Ledger port's contract, proven once per backend (SQLite file, SQLite in memory)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore

from adapters.postgres.ledger import PostgresLedger
from adapters.sqlite.ledger import LEDGER_FORMAT, SQLiteLedger
from commands.ports import Ledger, LedgerError, NewRecord, Record, RecordFilter, VersionConflict
from replay.chain import verify_ledger
from schemas.canonical import GENESIS_HASH, canonical_bytes, parse, record_hash

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def envelope(
    stream_id: str, version: int, type: str = "order.accepted.v1", **data: Any
) -> dict[str, Any]:
    return {
        "event_id": f"{stream_id}:{version}",
        "stream_id": stream_id,
        "version": version,
        "type": type,
        "ts_ns": 1_700_000_000_000_000_000 + version,
        "command_id": f"cmd-{stream_id}-{version}",
        "correlation_id": "corr-1",
        "causation_id": f"cmd-{stream_id}-{version}",
        "intent_id": None,
        "phase_id": 2,
        "actor": "operator:ada",
        "policy_hash": "ab" * 32,
        "data": data or {"qty": "0.5", "px": "64123.10", "note": "snowman ☃"},
    }


def new(stream_id: str, version: int, type: str = "order.accepted.v1", **data: Any) -> NewRecord:
    return NewRecord(stream_id, version, type, envelope(stream_id, version, type, **data))


def summary(records: list[Record]) -> list[tuple[int, str, int, str, dict[str, Any], bytes]]:
    return [(r.position, r.stream_id, r.version, r.type, r.envelope, r.state) for r in records]


BASE_TS_NS = 1_700_000_000_000_000_000
INJECTION = "x' OR '1'='1"


def burn_positions(ledger: Ledger, count: int) -> bool:
    """Leave a gap of `count` positions before the next record, where the backend can have gaps
    (PostgreSQL burns sequence values, as a rolled-back insert does); False where it cannot."""
    if not isinstance(ledger, PostgresLedger):
        return False
    import psycopg

    sequence = "pg_get_serial_sequence('public.stored_events', 'notification_id')"
    with psycopg.connect(ledger.url, autocommit=True) as connection:
        connection.execute(
            f"SELECT nextval({sequence}) FROM generate_series(1, %s)", (count,)
        )
    return True


def filter_world(ledger: Ledger) -> list[Record]:
    """A ledger of several types, streams, command ids and times (pairs of commands share a
    time), a record holding U+0000, one without command id or time, one with a time as text;
    on PostgreSQL with gaps between positions."""
    versions: dict[str, int] = {}

    def record(stream_id: str, type: str, command_id: str | None, ts_ns: Any, **data: Any) -> NewRecord:
        version = versions[stream_id] = versions.get(stream_id, 0) + 1
        fields = envelope(stream_id, version, type, **data) | {"command_id": command_id, "ts_ns": ts_ns}
        return NewRecord(stream_id, version, type, fields)

    written: list[Record] = []
    for n in range(12):
        account, command, ts_ns = f"account-{'abc'[n % 3]}", f"cmd-{n}", BASE_TS_NS + n // 2 * 1000
        batch = [record(account, "order.filled.v1" if n % 2 else "order.accepted.v1", command, ts_ns)]
        if n % 4 == 0:
            batch.append(record(account, "risk.halted.v1", command, ts_ns, reason=f"halt\u0000{n} ☃"))
        batch.append(record(f"command-{command}", "command.decided.v1", command, ts_ns))
        written += ledger.append(batch)
        burn_positions(ledger, n % 3)
    untimed = record("account-d", "order.accepted.v1", None, None)
    del untimed.envelope["ts_ns"]
    written += ledger.append([untimed])
    written += ledger.append([record("account-d", "order.accepted.v1", "cmd-4", str(BASE_TS_NS + 2000))])
    return written


# Each filter alone, then combined; with how many of filter_world's 29 records each matches.
FILTERS: list[tuple[RecordFilter, int]] = [
    (RecordFilter(), 29),
    (RecordFilter(types=("risk.halted.v1",)), 3),
    (RecordFilter(types=("order.filled.v1", "command.decided.v1")), 18),
    (RecordFilter(types=("no.such.type.v1",)), 0),
    (RecordFilter(stream_ids=("account-a",)), 5),
    (RecordFilter(stream_ids=("account-b", "command-cmd-3", "account-zzz")), 6),
    (RecordFilter(command_id="cmd-4"), 4),
    (RecordFilter(command_id="cmd-99"), 0),
    (RecordFilter(from_ts_ns=BASE_TS_NS + 4000), 9),
    (RecordFilter(to_ts_ns=BASE_TS_NS + 999), 5),
    (RecordFilter(from_ts_ns=BASE_TS_NS + 2000, to_ts_ns=BASE_TS_NS + 2000), 5),
    (RecordFilter(from_ts_ns=BASE_TS_NS + 1000, to_ts_ns=BASE_TS_NS + 3000), 13),
    (
        RecordFilter(
            types=("order.accepted.v1", "risk.halted.v1"),
            stream_ids=("account-a", "account-b", "account-d"),
            from_ts_ns=BASE_TS_NS,
            to_ts_ns=BASE_TS_NS + 2000,
        ),
        4,
    ),
    (RecordFilter(types=("risk.halted.v1",), command_id="cmd-8", to_ts_ns=BASE_TS_NS + 4000), 1),
    (RecordFilter(stream_ids=("account-d",), command_id="cmd-4"), 1),
]


class LedgerContract:
    """Every Ledger adapter behaves like this. Subclasses provide `make_ledger`."""

    @pytest.fixture
    def make_ledger(self) -> Iterator[Callable[[], Ledger]]:
        raise NotImplementedError

    @pytest.fixture
    def ledger(self, make_ledger: Callable[[], Ledger]) -> Ledger:
        return make_ledger()

    def test_a_new_ledger_is_empty_and_anchored_at_genesis(self, ledger: Ledger) -> None:
        assert ledger.head() == (0, GENESIS_HASH, 0)
        assert ledger.read_all() == []
        assert ledger.read_stream("account-a") == []
        assert verify_ledger(ledger).ok

    def test_append_seals_records_into_one_global_chain(self, ledger: Ledger) -> None:
        first = ledger.append([new("account-a", 1), new("command-c1", 1, "command.decided.v1")])
        second = ledger.append([new("account-b", 1), new("account-a", 2)])
        records = first + second
        assert [r.position for r in records] == sorted({r.position for r in records})
        prev = GENESIS_HASH
        for record in records:
            assert record.envelope["prev_hash"] == prev
            assert record.envelope["hash"] == record_hash(record.envelope)
            assert record.state == canonical_bytes(record.envelope)
            assert (
                record.envelope["stream_id"],
                record.envelope["version"],
                record.envelope["type"],
            ) == (
                record.stream_id,
                record.version,
                record.type,
            )
            prev = record.envelope["hash"]
        assert ledger.head() == (records[-1].position, prev, 4)

    def test_reads_return_exactly_what_append_returned(self, ledger: Ledger) -> None:
        written = ledger.append([new("account-a", 1), new("command-c1", 1, "command.decided.v1")])
        written += ledger.append([new("account-a", 2, qty="1.25")])
        assert summary(ledger.read_all()) == summary(written)
        assert summary(ledger.read_stream("account-a")) == summary([written[0], written[2]])
        assert parse(ledger.read_all()[0].state) == written[0].envelope

    def test_read_stream_is_in_version_order_after_a_version(self, ledger: Ledger) -> None:
        ledger.append([new("account-a", 1), new("account-b", 1)])
        ledger.append([new("account-a", 2)])
        ledger.append([new("account-a", 3), new("account-b", 2)])
        assert [r.version for r in ledger.read_stream("account-a")] == [1, 2, 3]
        assert [r.version for r in ledger.read_stream("account-a", after_version=1)] == [2, 3]
        assert ledger.read_stream("account-a", after_version=3) == []
        assert ledger.read_stream("account-zzz") == []

    def test_read_all_pages_by_position(self, ledger: Ledger) -> None:
        written = ledger.append([new(f"account-{i}", 1) for i in range(7)])
        positions = [r.position for r in written]
        assert [r.position for r in ledger.read_all(limit=3)] == positions[:3]
        assert [r.position for r in ledger.read_all(positions[2], 3)] == positions[3:6]
        assert [r.position for r in ledger.read_all(positions[-1])] == []
        assert [r.position for r in ledger.iter_all(batch=2)] == positions
        assert [r.position for r in ledger.iter_all(positions[4], batch=2)] == positions[5:]

    def test_an_existing_version_is_a_conflict_and_nothing_of_the_batch_is_written(
        self, ledger: Ledger
    ) -> None:
        ledger.append([new("account-a", 1)])
        head = ledger.head()
        with pytest.raises(VersionConflict) as caught:
            ledger.append([new("account-b", 1), new("account-a", 1), new("command-c9", 1)])
        assert (caught.value.stream_id, caught.value.version) == ("account-a", 1)
        assert ledger.head() == head
        assert ledger.read_stream("account-b") == []
        assert ledger.read_stream("command-c9") == []
        assert len(ledger.read_all()) == 1

    def test_a_command_record_is_written_once(self, ledger: Ledger) -> None:
        ledger.append([new("account-a", 1), new("command-c1", 1, "command.decided.v1")])
        with pytest.raises(VersionConflict) as caught:
            ledger.append([new("account-a", 2), new("command-c1", 1, "command.decided.v1")])
        assert (caught.value.stream_id, caught.value.version) == ("command-c1", 1)
        assert [r.version for r in ledger.read_stream("account-a")] == [1]

    def test_a_version_repeated_within_one_batch_is_a_conflict(self, ledger: Ledger) -> None:
        with pytest.raises(VersionConflict):
            ledger.append([new("account-a", 1), new("account-a", 1)])
        assert ledger.head() == (0, GENESIS_HASH, 0)

    def test_a_version_gap_is_refused(self, ledger: Ledger) -> None:
        ledger.append([new("account-a", 1)])
        with pytest.raises(ValueError, match="next record must be version 2, not 3"):
            ledger.append([new("account-b", 1), new("account-a", 3)])
        assert len(ledger.read_all()) == 1

    def test_an_envelope_that_disagrees_with_its_record_is_refused(self, ledger: Ledger) -> None:
        bad = NewRecord("account-a", 1, "order.accepted.v1", envelope("account-b", 1))
        with pytest.raises(ValueError, match="stream_id"):
            ledger.append([bad])
        sealed = envelope("account-a", 1) | {"prev_hash": GENESIS_HASH}
        with pytest.raises(ValueError, match="prev_hash"):
            ledger.append([NewRecord("account-a", 1, "order.accepted.v1", sealed)])
        assert ledger.head() == (0, GENESIS_HASH, 0)

    def test_append_does_not_change_the_callers_envelope(self, ledger: Ledger) -> None:
        record = new("account-a", 1)
        before = dict(record.envelope)
        ledger.append([record])
        assert record.envelope == before

    def test_an_empty_append_writes_nothing(self, ledger: Ledger) -> None:
        assert ledger.append([]) == []
        assert ledger.head() == (0, GENESIS_HASH, 0)

    def test_a_clean_ledger_verifies(self, ledger: Ledger) -> None:
        for version in range(1, 6):
            ledger.append(
                [new("account-a", version), new(f"command-c{version}", 1, "command.decided.v1")]
            )
        report = verify_ledger(ledger, batch=3)
        assert report.ok, report
        assert (report.records_checked, report.streams_checked) == (10, 6)
        assert (report.head_position, report.head_hash, report.records_checked) == ledger.head()

    def test_a_closed_ledger_refuses_use(self, ledger: Ledger) -> None:
        ledger.close()
        ledger.close()
        with pytest.raises(LedgerError, match="closed"):
            ledger.append([new("account-a", 1)])
        with pytest.raises(LedgerError, match="closed"):
            ledger.head()

    def test_read_matching_equals_filtering_read_all(self, ledger: Ledger) -> None:
        written = filter_world(ledger)
        assert summary(ledger.read_all(0, 100)) == summary(written)
        head = ledger.head()[0]
        for where, count in FILTERS:
            expected = [r for r in written if where.matches(r)]
            assert len(expected) == count, where
            records, reached = ledger.read_matching(0, 100, where)
            assert (summary(records), reached) == (summary(expected), head), where
            # The port's own implementation (read_all and matches) agrees with the adapter's.
            default, default_reached = Ledger.read_matching(ledger, 0, 100, where)
            assert (summary(default), default_reached) == (summary(records), reached), where

    def test_paging_read_matching_visits_every_match_once_in_order(self, ledger: Ledger) -> None:
        written = filter_world(ledger)
        head = ledger.head()[0]
        if isinstance(ledger, PostgresLedger):
            assert head > len(written)  # the pages below cross gaps in positions
        for where, count in FILTERS:
            for limit, scan_limit in [(1, 1), (1, 4), (2, 3), (3, 10), (100, 100)]:
                shape = (where, limit, scan_limit)
                seen: list[Record] = []
                after = 0
                while after < head:
                    page, reached = ledger.read_matching(after, limit, where, scan_limit=scan_limit)
                    examined = [r for r in written if after < r.position <= reached]
                    assert 1 <= len(examined) <= scan_limit, shape
                    # The page is exactly the matches among what the scan looked at; a short page
                    # means the scan looked at scan_limit records or reached the head.
                    assert summary(page) == summary([r for r in examined if where.matches(r)]), shape
                    assert len(page) == limit or len(examined) == scan_limit or reached == head, shape
                    default = Ledger.read_matching(ledger, after, limit, where, scan_limit=scan_limit)
                    assert (summary(default[0]), default[1]) == (summary(page), reached), shape
                    seen += page
                    after = reached
                assert summary(seen) == summary([r for r in written if where.matches(r)]), shape
                assert len(seen) == count, shape
                assert ledger.read_matching(after, limit, where, scan_limit=scan_limit) == ([], after)

    def test_read_matching_of_an_empty_ledger_stays_where_it_started(self, ledger: Ledger) -> None:
        assert ledger.read_matching(0, 10, RecordFilter()) == ([], 0)
        assert ledger.read_matching(5, 10, RecordFilter(types=("order.accepted.v1",))) == ([], 5)

    def test_read_matching_refuses_arguments_out_of_range(self, ledger: Ledger) -> None:
        filter_world(ledger)
        every = RecordFilter()
        for limit in (0, -1, 10_001, True, 1.5, "10"):
            with pytest.raises(ValueError, match=r"limit must be an integer from 1 to 10000"):
                ledger.read_matching(0, limit, every)  # type: ignore[arg-type]
        for scan_limit in (4, 0, -5, 2**63, False):
            with pytest.raises(ValueError, match=r"scan_limit must be an integer from limit \(5\)"):
                ledger.read_matching(0, 5, every, scan_limit=scan_limit)
        for after in (-1, 2**63, None, 0.5):
            with pytest.raises(ValueError, match=r"after_position must be an integer from 0 to"):
                ledger.read_matching(after, 5, every)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="where must be a RecordFilter"):
            ledger.read_matching(0, 5, {"types": ["order.accepted.v1"]})  # type: ignore[arg-type]
        assert len(ledger.read_matching(0, 10_000, every, scan_limit=10_000)[0]) == 29

    def test_an_injection_shaped_value_matches_nothing_and_changes_nothing(
        self, ledger: Ledger
    ) -> None:
        written = filter_world(ledger)
        head = ledger.head()
        for where in [
            RecordFilter(types=(INJECTION,)),
            RecordFilter(command_id=INJECTION),
            RecordFilter(stream_ids=(INJECTION, "account-x'); DROP TABLE stored_events; --")),
            RecordFilter(types=("order.accepted.v1",), command_id=f"cmd-4{INJECTION}"),
            RecordFilter(command_id='cmd-4" || @.ts_ns > 0 || "'),  # shaped for the jsonpath
        ]:
            assert ledger.read_matching(0, 100, where) == ([], head[0]), where
        assert ledger.head() == head
        assert summary(ledger.read_all(0, 100)) == summary(written)
        assert verify_ledger(ledger).ok

def test_a_bad_filter_is_refused_naming_its_field() -> None:
    with pytest.raises(ValueError, match="types must be a tuple of strings"):
        RecordFilter(types="order.accepted.v1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="stream_ids must be a tuple of strings"):
        RecordFilter(stream_ids=["account-a"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="command_id must not contain U\\+0000"):
        RecordFilter(command_id="cmd\x00")
    with pytest.raises(ValueError, match="types must be valid Unicode text"):
        RecordFilter(types=("\ud800",))
    with pytest.raises(ValueError, match="from_ts_ns must be None or an integer"):
        RecordFilter(from_ts_ns=2**63)
    with pytest.raises(ValueError, match="to_ts_ns must be None or an integer"):
        RecordFilter(to_ts_ns=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"from_ts_ns \(2\) must not be after to_ts_ns \(1\)"):
        RecordFilter(from_ts_ns=2, to_ts_ns=1)


class TestSQLiteFileLedger(LedgerContract):
    @pytest.fixture
    def path(self, tmp_path: Path) -> Path:
        return tmp_path / ".titan" / "ledger.db"

    @pytest.fixture
    def make_ledger(self, path: Path) -> Iterator[Callable[[], Ledger]]:
        opened: list[Ledger] = []

        def make() -> Ledger:
            ledger = SQLiteLedger(str(path))
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

    def test_storage_is_eventsourcing_layout_in_wal_with_full_sync(
        self, ledger: Ledger, path: Path
    ) -> None:
        ledger.append([new("account-a", 1)])
        raw = sqlite3.connect(path)
        columns = [
            (row[1], row[2], row[5]) for row in raw.execute("PRAGMA table_info(stored_events)")
        ]
        assert columns == [
            ("originator_id", "TEXT", 1),
            ("originator_version", "INTEGER", 2),
            ("topic", "TEXT", 0),
            ("state", "BLOB", 0),
        ]
        assert raw.execute("SELECT value FROM titan_meta WHERE key = 'format'").fetchone() == (
            LEDGER_FORMAT,
        )
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        row = raw.execute(
            "SELECT rowid, originator_id, originator_version, topic, typeof(state) FROM stored_events"
        ).fetchone()
        assert row == (1, "account-a", 1, "order.accepted.v1", "blob")
        assert isinstance(ledger, SQLiteLedger)
        with ledger._datastore.transaction(commit=False) as c:
            c.execute("PRAGMA synchronous")
            assert c.fetchone()[0] == 2  # FULL
        raw.close()

    def test_read_matching_pages_across_gaps_left_by_deleted_records(
        self, ledger: Ledger, path: Path
    ) -> None:
        filter_world(ledger)
        raw = sqlite3.connect(path)
        raw.execute("DELETE FROM stored_events WHERE rowid IN (3, 4, 5, 11, 20, 29)")
        raw.commit()
        raw.close()
        remaining = ledger.read_all(0, 100)
        for where, _ in FILTERS:
            for limit, scan_limit in [(1, 1), (2, 3), (3, 10), (100, 100)]:
                shape = (where, limit, scan_limit)
                seen: list[Record] = []
                after = 0
                while True:
                    page, reached = ledger.read_matching(after, limit, where, scan_limit=scan_limit)
                    default = Ledger.read_matching(ledger, after, limit, where, scan_limit=scan_limit)
                    assert (summary(page), reached) == (summary(default[0]), default[1]), shape
                    if reached == after:
                        break
                    seen += page
                    after = reached
                assert after == remaining[-1].position, shape
                assert summary(seen) == summary([r for r in remaining if where.matches(r)]), shape

    def test_the_audit_view_shows_envelope_fields_as_columns(
        self, ledger: Ledger, path: Path
    ) -> None:
        [record] = ledger.append([new("account-a", 1)])
        raw = sqlite3.connect(path)
        raw.row_factory = sqlite3.Row
        row = raw.execute("SELECT * FROM titan_records").fetchone()
        raw.close()
        assert row["position"] == record.position
        assert row["stream_id"] == "account-a"
        assert row["event_id"] == "account-a:1"
        assert row["hash"] == record.envelope["hash"]
        assert row["prev_hash"] == GENESIS_HASH
        assert parse(row["data"]) == record.envelope["data"]

    def test_eventsourcings_own_recorder_reads_a_titan_ledger(
        self, ledger: Ledger, path: Path
    ) -> None:
        written = ledger.append([new("account-a", 1), new("command-c1", 1, "command.decided.v1")])
        datastore = SQLiteDatastore(str(path), originator_id_type="text")
        recorder = SQLiteApplicationRecorder(datastore)
        try:
            notifications = recorder.select_notifications(start=None, limit=10)
            assert [
                (n.id, n.originator_id, n.originator_version, n.topic, n.state)
                for n in notifications
            ] == [(r.position, r.stream_id, r.version, r.type, r.state) for r in written]
            assert recorder.max_notification_id() == written[-1].position
            assert [e.originator_version for e in recorder.select_events("account-a")] == [1]
        finally:
            datastore.close()

    def test_a_file_that_is_not_sqlite_is_refused_and_left_alone(self, tmp_path: Path) -> None:
        path = tmp_path / "notes.txt"
        path.write_bytes(b"these are not the records you are looking for\n" * 100)
        before = path.read_bytes()
        with pytest.raises(LedgerError, match=f"{path}.*not a SQLite database"):
            SQLiteLedger(str(path))
        assert path.read_bytes() == before

    def test_a_foreign_sqlite_database_is_refused_and_left_alone(self, tmp_path: Path) -> None:
        path = tmp_path / "other.db"
        other = sqlite3.connect(path)
        other.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        other.commit()
        other.close()
        before = path.read_bytes()
        with pytest.raises(
            LedgerError, match=f"{path} is a SQLite database but not a titan ledger.*customers"
        ):
            SQLiteLedger(str(path))
        assert path.read_bytes() == before
        assert not Path(f"{path}-wal").exists()

    def test_another_ledger_format_is_refused(
        self, make_ledger: Callable[[], Ledger], path: Path
    ) -> None:
        make_ledger().close()
        raw = sqlite3.connect(path)
        raw.execute("UPDATE titan_meta SET value = 'titan-ledger/99' WHERE key = 'format'")
        raw.commit()
        raw.close()
        with pytest.raises(LedgerError, match="titan-ledger/99.*titan-ledger/1"):
            SQLiteLedger(str(path))

    def test_a_directory_is_refused(self, tmp_path: Path) -> None:
        with pytest.raises(LedgerError, match="is a directory"):
            SQLiteLedger(str(tmp_path))

    def test_an_empty_file_becomes_a_ledger(self, tmp_path: Path) -> None:
        path = tmp_path / "empty.db"
        path.touch()
        ledger = SQLiteLedger(str(path))
        try:
            assert ledger.head() == (0, GENESIS_HASH, 0)
        finally:
            ledger.close()

    def test_a_locked_ledger_is_retried_then_refused(
        self, make_ledger: Callable[[], Ledger], path: Path
    ) -> None:
        make_ledger().close()
        ledger = SQLiteLedger(str(path), lock_timeout_s=1)
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            started = time.monotonic()
            with pytest.raises(LedgerError, match="locked"):
                ledger.append([new("account-a", 1)])
            assert time.monotonic() - started >= 0.9
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        ledger.append([new("account-a", 1)])
        assert ledger.head()[2] == 1
        ledger.close()

    def test_writers_in_two_processes_extend_one_chain(
        self, make_ledger: Callable[[], Ledger], path: Path
    ) -> None:
        make_ledger().close()
        script = textwrap.dedent(
            """
            import sys
            from adapters.sqlite.ledger import SQLiteLedger
            from commands.ports import NewRecord
            path, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
            ledger = SQLiteLedger(path, lock_timeout_s=30)
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
            subprocess.Popen([sys.executable, "-c", script, str(path), name, "60"], env=env)
            for name in ("p1", "p2", "p3")
        ]
        assert [w.wait(timeout=120) for w in writers] == [0, 0, 0]
        ledger = make_ledger()
        report = verify_ledger(ledger)
        assert report.ok, report
        assert ledger.head()[2] == 180


class TestSQLiteMemoryLedger(LedgerContract):
    @pytest.fixture
    def make_ledger(self) -> Iterator[Callable[[], Ledger]]:
        opened: list[Ledger] = []

        def make() -> Ledger:
            ledger = SQLiteLedger(":memory:")
            opened.append(ledger)
            return ledger

        yield make
        for ledger in opened:
            ledger.close()

    def test_in_memory_ledgers_are_isolated(self, make_ledger: Callable[[], Ledger]) -> None:
        one, two = make_ledger(), make_ledger()
        one.append([new("account-a", 1)])
        assert two.head() == (0, GENESIS_HASH, 0)
        two.append([new("account-a", 1), new("account-b", 1)])
        assert one.head()[2] == 1
        assert two.head()[2] == 2

    def test_an_in_memory_ledger_survives_idle_pooled_connections(self, ledger: Ledger) -> None:
        ledger.append([new("account-a", 1)])
        for _ in range(20):
            assert ledger.head()[2] == 1
        ledger.append([new("account-a", 2)])
        assert [r.version for r in ledger.read_stream("account-a")] == [1, 2]
