"""The embedded ledger: eventsourcing's SQLite application recorder plus titan's chain anchor.

Records live in eventsourcing's `stored_events` table, unchanged (text originator ids), so that
eventsourcing can read a titan ledger. Titan adds two small tables: `titan_meta` (the format) and
`titan_chain_head` (the anchor: last position, its hash and the record count), and a view,
`titan_records`, that shows each envelope field as a column. See docs/ledger.md.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from eventsourcing.domain import EventSourcingError
from eventsourcing.persistence import IntegrityError, Notification, OperationalError
from eventsourcing.sqlite import (
    SQLiteApplicationRecorder,
    SQLiteConnection,
    SQLiteConnectionPool,
    SQLiteCursor,
    SQLiteDatastore,
)

from adapters.ledger_mapper import LedgerRecord, SealedRecord, TitanMapper
from adapters.private_files import create_private_file
from commands.chain import CHAIN_FIELDS, seal
from commands.ports import (
    DEFAULT_SCAN_LIMIT,
    Ledger,
    LedgerError,
    NewRecord,
    Record,
    RecordFilter,
    VersionConflict,
    check_matching_arguments,
)
from schemas.canonical import GENESIS_HASH, canonical_bytes

LEDGER_FORMAT: Final = "titan-ledger/1"
MEMORY: Final = ":memory:"
_MAX_POSITION: Final = 2**63 - 1
DEFAULT_LOCK_TIMEOUT_S: Final = 5

_ENVELOPE_COLUMNS: Final = (
    "event_id",
    "ts_ns",
    "command_id",
    "correlation_id",
    "causation_id",
    "intent_id",
    "phase_id",
    "actor",
    "policy_hash",
    "prev_hash",
    "hash",
)

_TITAN_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS titan_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    f"INSERT OR IGNORE INTO titan_meta (key, value) VALUES ('format', '{LEDGER_FORMAT}')",
    (
        "CREATE TABLE IF NOT EXISTS titan_chain_head ("
        "id INTEGER PRIMARY KEY CHECK (id = 1), "
        "position INTEGER NOT NULL, "
        "hash TEXT NOT NULL, "
        "record_count INTEGER NOT NULL)"
    ),
    (
        "INSERT OR IGNORE INTO titan_chain_head (id, position, hash, record_count) "
        f"VALUES (1, 0, '{GENESIS_HASH}', 0)"
    ),
    # The auditor's view (SPEC §2). CAST: SQLite's JSON functions refuse (or, from 3.45,
    # misread as JSONB) BLOB arguments, and the state is stored as a BLOB.
    "CREATE VIEW IF NOT EXISTS titan_records AS SELECT "
    "rowid AS position, originator_id AS stream_id, originator_version AS version, "
    "topic AS type, "
    + ", ".join(
        f"json_extract(CAST(state AS TEXT), '$.{column}') AS {column}"
        for column in _ENVELOPE_COLUMNS
    )
    + ", json_extract(CAST(state AS TEXT), '$.data') AS data "
    "FROM stored_events",
)

# Taken first in every append: it makes SQLite take the write lock before the head is read
# (a deferred transaction that read first could not upgrade while another process writes).
_LOCK_ANCHOR: Final = "UPDATE titan_chain_head SET record_count = record_count WHERE id = 1"
_READ_ANCHOR: Final = "SELECT position, hash, record_count FROM titan_chain_head WHERE id = 1"
_WRITE_ANCHOR: Final = (
    "UPDATE titan_chain_head SET position = ?, hash = ?, record_count = ? WHERE id = 1"
)
# read_matching: the position of the scan_limit-th record after a position, else the last one
# (NULL when there is none). Positions are rowids, which never move in an append-only table.
_SCAN_BOUND: Final = (
    "SELECT coalesce("
    "(SELECT rowid FROM {table} WHERE rowid > ? ORDER BY rowid LIMIT 1 OFFSET ?), "
    "(SELECT max(rowid) FROM {table} WHERE rowid > ?))"
)
# The conditions read_matching may add, each with one bound parameter. The unary `+` keeps SQLite
# from answering a stream or type filter through another index, which would read every record of
# those streams instead of at most scan_limit rows in position order.
_TYPES_IN: Final = "+topic IN (SELECT value FROM json_each(?))"
_STREAMS_IN: Final = "+originator_id IN (SELECT value FROM json_each(?))"
# A record whose envelope has this command id holds its canonical bytes `"command_id":"…"`: the
# same pre-selection as the PostgreSQL adapter's (both find the same records); here it saves about
# a third of the JSON parsing, there most of it.
_STATE_HOLDS: Final = "instr(state, ?) > 0"
_COMMAND_ID_IS: Final = "json_extract(CAST(state AS TEXT), '$.command_id') = ?"
_TS_IS_NUMBER: Final = "json_type(CAST(state AS TEXT), '$.ts_ns') IN ('integer', 'real')"
_TS_FROM: Final = "json_extract(CAST(state AS TEXT), '$.ts_ns') >= ?"
_TS_TO: Final = "json_extract(CAST(state AS TEXT), '$.ts_ns') <= ?"


class _DurableConnectionPool(SQLiteConnectionPool):
    """eventsourcing's pool, with every connection pinned to synchronous=FULL."""

    def __init__(self, *, db_name: str, lock_timeout: int, read_only: bool) -> None:
        super().__init__(db_name=db_name, lock_timeout=lock_timeout)
        # A read-only connection cannot switch the file to WAL: never let eventsourcing try.
        self.is_journal_mode_wal = read_only

    def _create_connection(self) -> SQLiteConnection:
        connection = super()._create_connection()
        # FULL is SQLite's compiled default; say so explicitly so that no build or PRAGMA
        # elsewhere can make a commit return before the WAL is on disk.
        connection.cursor().execute("PRAGMA synchronous=FULL")
        return connection


class _TitanDatastore(SQLiteDatastore):
    def __init__(self, db_name: str, lock_timeout_s: int, read_only: bool = False) -> None:
        super().__init__(db_name, lock_timeout=lock_timeout_s, originator_id_type="text")
        self.pool = _DurableConnectionPool(
            db_name=db_name, lock_timeout=lock_timeout_s, read_only=read_only
        )


class TitanSQLiteRecorder(SQLiteApplicationRecorder):
    """eventsourcing's SQLite application recorder, plus titan's meta, anchor and view."""

    def construct_create_table_statements(self) -> list[str]:
        return [*super().construct_create_table_statements(), *_TITAN_SCHEMA]

    def select_stream_notifications(self, stream_id: str, after_version: int) -> list[Notification]:
        """Return one stream's records after a version, with their positions."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT rowid, * FROM {self.events_table_name} "
                "WHERE originator_id = ? AND originator_version > ? "
                "ORDER BY originator_version",
                (stream_id, after_version),
            )
            return [
                Notification(
                    id=row["rowid"],
                    originator_id=row["originator_id"],
                    originator_version=row["originator_version"],
                    topic=row["topic"],
                    state=row["state"],
                )
                for row in c.fetchall()
            ]

    def select_matching_notifications(
        self, after_position: int, limit: int, where: RecordFilter, scan_limit: int
    ) -> tuple[list[Notification], int]:
        """Return up to `limit` matching records among the next `scan_limit` after a position,
        and the position the scan reached."""
        conditions: list[str] = []
        params: list[int | str | bytes] = []
        if where.types:
            conditions.append(_TYPES_IN)
            params.append(_json_array(where.types))
        if where.stream_ids:
            conditions.append(_STREAMS_IN)
            params.append(_json_array(where.stream_ids))
        if where.command_id is not None:
            conditions += [_STATE_HOLDS, _COMMAND_ID_IS]
            params += [envelope_field_bytes("command_id", where.command_id), where.command_id]
        if where.from_ts_ns is not None or where.to_ts_ns is not None:
            conditions.append(_TS_IS_NUMBER)
        if where.from_ts_ns is not None:
            conditions.append(_TS_FROM)
            params.append(where.from_ts_ns)
        if where.to_ts_ns is not None:
            conditions.append(_TS_TO)
            params.append(where.to_ts_ns)
        statement = (
            f"SELECT rowid, * FROM {self.events_table_name} WHERE rowid > ? AND rowid <= ?"
            + "".join(f" AND {condition}" for condition in conditions)
            + " ORDER BY rowid LIMIT ?"
        )
        # Positions are distinct integers, so (after, after + scan_limit] holds at most scan_limit
        # records: a full page found there needs no exact bound. Otherwise the scan goes on to the
        # scan_limit-th record, which lies further on where positions have gaps. One read
        # transaction: every statement sees the same records.
        first_upto = min(after_position + scan_limit, _MAX_POSITION)
        with self.datastore.transaction(commit=False) as c:
            c.execute(statement, [after_position, first_upto, *params, limit])
            rows = c.fetchall()
            if len(rows) < limit:
                c.execute(
                    _SCAN_BOUND.format(table=self.events_table_name),
                    (after_position, scan_limit - 1, after_position),
                )
                bound = c.fetchone()[0]
                if bound is None:
                    return [], after_position
                if bound > first_upto:
                    c.execute(statement, [first_upto, bound, *params, limit - len(rows)])
                    rows += c.fetchall()
            reached = int(rows[-1]["rowid"]) if len(rows) == limit else int(bound)
        notifications = [
            Notification(
                id=row["rowid"],
                originator_id=row["originator_id"],
                originator_version=row["originator_version"],
                topic=row["topic"],
                state=row["state"],
            )
            for row in rows
        ]
        return notifications, reached

    def select_anchor(self) -> tuple[int, str, int]:
        """Return the anchored head: position, hash, record count."""
        with self.datastore.transaction(commit=False) as c:
            return _fetch_anchor(c)

    def seal_and_insert(self, records: Sequence[NewRecord], mapper: TitanMapper) -> list[Record]:
        """Seal records onto the head and insert them, all in one write transaction."""
        with self.datastore.transaction(commit=True) as c:
            c.execute(_LOCK_ANCHOR)
            position, prev_hash, count = _fetch_anchor(c)
            c.execute(f"SELECT MAX(rowid) FROM {self.events_table_name}")
            last_row = c.fetchone()[0] or 0
            if last_row != position:
                raise LedgerError(
                    f"the ledger's last record is at position {last_row} but its anchor says "
                    f"{position}: refusing to append; run `titan ledger verify`"
                )
            self._check_versions(c, records)
            sealed: list[SealedRecord] = []
            for record in records:
                envelope = seal(record.envelope, prev_hash)
                sealed.append(SealedRecord(record.stream_id, record.version, record.type, envelope))
                prev_hash = envelope["hash"]
            stored = [mapper.to_stored_event(record) for record in sealed]
            positions = self._insert_events(c, stored) or []
            c.execute(_WRITE_ANCHOR, (positions[-1], prev_hash, count + len(stored)))
        return [
            LedgerRecord(at, s.stream_id, s.version, s.type, s.envelope, event.state)
            for at, s, event in zip(positions, sealed, stored, strict=True)
        ]

    def _check_versions(self, c: SQLiteCursor, records: Sequence[NewRecord]) -> None:
        """Each record must be its stream's next version (optimistic concurrency, no gaps)."""
        next_versions: dict[str, int] = {}
        for record in records:
            stream_id = record.stream_id
            expected = next_versions.get(stream_id)
            if expected is None:
                c.execute(
                    f"SELECT MAX(originator_version) FROM {self.events_table_name} "
                    "WHERE originator_id = ?",
                    (stream_id,),
                )
                expected = (c.fetchone()[0] or 0) + 1
            if record.version < expected:
                raise VersionConflict(stream_id, record.version)
            if record.version > expected:
                raise ValueError(
                    f"stream {stream_id!r} is at version {expected - 1}: the next record must "
                    f"be version {expected}, not {record.version}"
                )
            next_versions[stream_id] = expected + 1


def envelope_field_bytes(name: str, value: str) -> bytes:
    """How a top-level envelope field is written in a record's canonical state: `"name":value`."""
    return canonical_bytes({name: value})[1:-1]


def _json_array(values: Sequence[str]) -> str:
    """A JSON array of strings: one bound parameter for SQLite's json_each, however many values."""
    return json.dumps(list(values))


def _fetch_anchor(c: SQLiteCursor) -> tuple[int, str, int]:
    c.execute(_READ_ANCHOR)
    row = c.fetchone()
    if row is None:
        raise LedgerError("the ledger's anchor row (titan_chain_head id 1) is missing")
    return int(row[0]), str(row[1]), int(row[2])


class SQLiteLedger(Ledger):
    """The embedded ledger: a SQLite file (or `":memory:"`) in eventsourcing's layout.

    `read_only=True` opens an existing, non-empty titan ledger through a read-only connection
    (`mode=ro`): it never creates, changes or converts the file, works in a directory it may not
    write, and refuses to append.
    """

    def __init__(
        self, path: str, *, lock_timeout_s: int = DEFAULT_LOCK_TIMEOUT_S, read_only: bool = False
    ) -> None:
        self.path = path
        self.lock_timeout_s = lock_timeout_s
        self.read_only = read_only and path != MEMORY
        self._keepalive: sqlite3.Connection | None = None
        made = False
        if path == MEMORY:
            # A private shared-cache database: every pooled connection sees it, no other ledger
            # instance does, and it lives as long as the keep-alive connection below.
            db_name = f"file:titan-{uuid.uuid4().hex}?mode=memory&cache=shared"
            self._keepalive = sqlite3.connect(db_name, uri=True, check_same_thread=False)
            create = True
        elif self.read_only:
            db_name = read_only_uri(path, Path(os.path.abspath(path)))
            create = False
        else:
            db_name = os.path.abspath(path)
            made = not os.path.lexists(db_name)
            create = _check_file(path, db_name)
        self._closed = False
        self._mapper = TitanMapper()
        self._datastore = _TitanDatastore(db_name, lock_timeout_s, self.read_only)
        self._recorder = TitanSQLiteRecorder(self._datastore)
        try:
            with self._errors("open"):
                if create:
                    self._recorder.create_table()
                _check_format(self._recorder, path)
        except LedgerError:
            self.close()
            if path != MEMORY and not self.read_only and made:
                _remove_new_file(db_name)  # never leave behind an empty file that is not a ledger
            raise

    def append(self, records: Sequence[NewRecord]) -> list[Record]:
        """Append records atomically, sealing each into the hash chain; raise VersionConflict."""
        if not records:
            return []
        if self.read_only:
            raise LedgerError(f"cannot append to ledger {self.path}: it was opened read-only")
        for record in records:
            _check_new_record(record)
        try:
            with self._errors("append to"):
                return self._recorder.seal_and_insert(records, self._mapper)
        except IntegrityError as error:
            raise self._conflict(records, error) from error

    def read_stream(self, stream_id: str, after_version: int = 0) -> list[Record]:
        """Return one stream's records in version order."""
        with self._errors("read"):
            rows = self._recorder.select_stream_notifications(stream_id, after_version)
        return [self._mapper.to_domain_event(row) for row in rows]

    def read_all(self, after_position: int = 0, limit: int = 1000) -> list[Record]:
        """Return up to `limit` records after a position, in position order."""
        with self._errors("read"):
            rows = self._recorder.select_notifications(
                start=after_position, limit=limit, inclusive_of_start=False
            )
        return [self._mapper.to_domain_event(row) for row in rows]

    def read_matching(
        self,
        after_position: int,
        limit: int,
        where: RecordFilter,
        *,
        scan_limit: int = DEFAULT_SCAN_LIMIT,
    ) -> tuple[list[Record], int]:
        """Return up to `limit` records after a position that match, in position order, looking at
        no more than `scan_limit` records; and the position the scan reached."""
        check_matching_arguments(after_position, limit, where, scan_limit)
        with self._errors("read"):
            rows, reached = self._recorder.select_matching_notifications(
                after_position, limit, where, scan_limit
            )
        return [self._mapper.to_domain_event(row) for row in rows], reached

    def head(self) -> tuple[int, str, int]:
        """Return the anchored head: last position, its chain hash and the record count."""
        with self._errors("read"):
            return self._recorder.select_anchor()

    def close(self) -> None:
        """Release connections."""
        if self._closed:
            return
        self._closed = True
        datastore = getattr(self, "_datastore", None)
        if datastore is not None:
            datastore.close()
        if self._keepalive is not None:
            self._keepalive.close()

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """Turn eventsourcing's and sqlite3's errors into LedgerError naming the ledger."""
        if self._closed:
            raise LedgerError(f"cannot {doing} ledger {self.path}: it is closed")
        try:
            yield
        except (LedgerError, IntegrityError):
            raise
        except OperationalError as error:
            if "locked" in str(error) or "busy" in str(error):
                raise LedgerError(
                    f"cannot {doing} ledger {self.path}: another writer held it locked for "
                    f"more than {self.lock_timeout_s} s"
                ) from error
            raise LedgerError(f"cannot {doing} ledger {self.path}: {error}") from error
        except (EventSourcingError, sqlite3.Error) as error:
            raise LedgerError(f"cannot {doing} ledger {self.path}: {error}") from error

    def _conflict(self, records: Sequence[NewRecord], error: IntegrityError) -> LedgerError:
        """Name the (stream, version) that made an append fail on the primary key."""
        seen: set[tuple[str, int]] = set()
        for record in records:
            key = (record.stream_id, record.version)
            if key in seen:
                return VersionConflict(record.stream_id, record.version)
            seen.add(key)
        with self._errors("read"):
            for record in records:
                existing = self._recorder.select_events(
                    record.stream_id, gt=record.version - 1, lte=record.version
                )
                if existing:
                    return VersionConflict(record.stream_id, record.version)
        return LedgerError(f"cannot append to ledger {self.path}: {error}")


def _check_new_record(record: NewRecord) -> None:
    """Refuse a record whose envelope disagrees with its row (verify would flag it forever)."""
    envelope = record.envelope
    for field, value in (
        ("stream_id", record.stream_id),
        ("version", record.version),
        ("type", record.type),
    ):
        if envelope.get(field) != value:
            raise ValueError(
                f"record {record.stream_id!r} version {record.version}: envelope {field} is "
                f"{envelope.get(field)!r}, expected {value!r}"
            )
    for field in CHAIN_FIELDS:
        if field in envelope:
            raise ValueError(
                f"record {record.stream_id!r} version {record.version}: envelope already "
                f"carries {field!r}; the ledger seals records itself"
            )
    if not isinstance(record.version, int) or record.version < 1:
        raise ValueError(
            f"record {record.stream_id!r}: version must be an integer >= 1, not {record.version!r}"
        )


def _remove_new_file(db_name: str) -> None:
    for leftover in (db_name, db_name + "-wal", db_name + "-shm", db_name + "-journal"):
        try:
            os.unlink(leftover)
        except OSError:
            pass


def _check_file(path: str, db_name: str) -> bool:
    """Check that a path is empty or a titan ledger without changing it; True if new.

    A missing file is created here, empty and readable by its owner only (and its directory,
    when titan creates that too), before SQLite opens it.
    """
    file = Path(db_name)
    try:
        file.stat()
    except FileNotFoundError:
        pass
    except OSError as error:  # a name too long, a loop of links, a directory we may not enter
        raise LedgerError(f"cannot use ledger path {path[:200]}: {error.strerror or error}") from error
    if file.is_dir():
        raise LedgerError(f"ledger path {path} is a directory; expected a SQLite file")
    if not file.exists():
        try:
            create_private_file(file)
        except OSError as error:
            raise LedgerError(f"cannot create ledger {path}: {error.strerror or error}") from error
        return True
    if file.stat().st_size == 0:
        return True
    # Read-only look first: eventsourcing would switch any SQLite file it opens to WAL, and a
    # file that is not ours must be left exactly as it was.
    tables = _tables(path, f"{file.as_uri()}?mode=ro", "a titan ledger or a new, empty file")
    if not tables:
        return True
    _check_titan_tables(path, tables)
    return False






def read_only_uri(path: str, file: Path) -> str:
    """The URI that opens an existing, non-empty ledger read-only; raise LedgerError otherwise.

    SQLite reads a WAL file through its -shm index, which it must be able to create: in a
    directory titan may not write, a ledger that no process has open (no -wal file) is opened
    as immutable instead.
    """
    if file.is_dir():
        raise LedgerError(f"ledger path {path} is a directory; expected a SQLite file")
    if not file.exists():
        raise LedgerError(f"no ledger at {path!r} (run `titan init` or pass --ledger)")
    if file.stat().st_size == 0:
        raise LedgerError(empty_file_message(path))
    uri = f"{file.as_uri()}?mode=ro"
    wal = Path(f"{file}-wal")
    if not wal.exists() and not os.access(file.parent, os.W_OK):
        uri += "&immutable=1"
    _check_titan_tables(path, _tables(path, uri, "a titan ledger"))
    return uri


def empty_file_message(path: str) -> str:
    """What titan says of a 0-byte file where a ledger should be."""
    return (
        f"{path} is not a titan ledger (empty file): a truncated ledger looks like this; "
        "restore it from a copy, or remove the file to start a new ledger with `titan init`"
    )


def _tables(path: str, uri: str, expected: str) -> set[str]:
    """The tables of a SQLite file, read through a read-only connection."""
    try:
        probe = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as error:
        raise LedgerError(f"cannot open ledger {path}: {error}") from error
    try:
        return {row[0] for row in probe.execute("SELECT name FROM sqlite_master")}
    except sqlite3.Error as error:
        if getattr(error, "sqlite_errorname", "") == "SQLITE_NOTADB":
            raise LedgerError(
                f"ledger path {path} is not a SQLite database ({error}); expected {expected}"
            ) from error
        raise LedgerError(f"cannot open ledger {path}: {error}") from error
    finally:
        probe.close()


def _check_titan_tables(path: str, tables: set[str]) -> None:
    expected = {"titan_meta", "titan_chain_head", "stored_events"}
    if not expected <= tables:
        raise LedgerError(
            f"{path} is a SQLite database but not a titan ledger: it has tables "
            f"{sorted(tables)}, a titan ledger has {sorted(expected)} "
            f"and titan_meta format {LEDGER_FORMAT!r}"
        )


def _check_format(recorder: TitanSQLiteRecorder, path: str) -> None:
    with recorder.datastore.transaction(commit=False) as c:
        c.execute("SELECT value FROM titan_meta WHERE key = 'format'")
        row = c.fetchone()
    found = None if row is None else row[0]
    if found != LEDGER_FORMAT:
        raise LedgerError(f"{path} has ledger format {found!r}; this titan reads {LEDGER_FORMAT!r}")
