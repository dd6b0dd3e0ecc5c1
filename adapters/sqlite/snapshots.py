"""Account snapshots in the embedded ledger's own file: the table `titan_snapshots`, beside
`stored_events` and outside the hash chain (docs/ledger.md, "Snapshots").

The store has its own connection to the file. A writable ledger gets the table when the first
snapshot is saved (a ledger nobody snapshots is left exactly as it was); a read-only one is read
through SQLite's read-only connection, and holds no snapshots while it has no table. An in-memory
ledger keeps its snapshots in a private in-memory database of the store's own.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, TypeVar

from commands.snapshots import Snapshot, SnapshotInfo, SnapshotStore, SnapshotStoreError

from .ledger import MEMORY, SQLiteLedger, read_only_uri

TABLE: Final = "titan_snapshots"
_MAX_INT64: Final = 2**63 - 1
# STRICT: a column holds only its declared type, so a row is never an int where text is expected.
_CREATE: Final = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} ("
    "stream_id TEXT NOT NULL, "
    "version INTEGER NOT NULL CHECK (version >= 1), "
    "position INTEGER NOT NULL CHECK (position >= 1), "
    "chain_hash TEXT NOT NULL, "
    "core_format TEXT NOT NULL, "
    "state BLOB NOT NULL, "
    "state_sha256 TEXT NOT NULL, "
    "set_by BLOB NOT NULL, "
    "created_ns INTEGER NOT NULL, "
    "PRIMARY KEY (stream_id, version)) STRICT"
)
_INFO: Final = "stream_id, version, position, chain_hash, core_format, state_sha256, created_ns"
_ALL: Final = (
    "stream_id, version, position, chain_hash, core_format, state, state_sha256, set_by, created_ns"
)
_INSERT: Final = (
    f"INSERT INTO {TABLE} ({_ALL}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (stream_id, version) DO NOTHING"
)
_NEAREST: Final = (
    f"SELECT {_ALL} FROM {TABLE} WHERE stream_id = ? AND version <= ? AND position <= ? "
    "ORDER BY version DESC LIMIT 1"
)
_GET: Final = f"SELECT {_ALL} FROM {TABLE} WHERE stream_id = ? AND version = ?"
_LIST_ALL: Final = f"SELECT {_INFO} FROM {TABLE} ORDER BY stream_id, version"
_LIST_STREAM: Final = f"SELECT {_INFO} FROM {TABLE} WHERE stream_id = ? ORDER BY version"
_COUNT: Final = f"SELECT count(*) FROM {TABLE}"
# Above the writer's version (no honest snapshot is: see SnapshotStore.prune), or older than the
# keep-th newest at or below it (NULL, so nothing, while there are no more than `keep`).
_PRUNE: Final = (
    f"DELETE FROM {TABLE} WHERE stream_id = :stream AND (version > :upto OR version < "
    f"(SELECT version FROM {TABLE} WHERE stream_id = :stream AND version <= :upto "
    "ORDER BY version DESC LIMIT 1 OFFSET :offset))"
)
_HAS_TABLE: Final = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
_NO_TABLE: Final = f"no such table: {TABLE}"
_T = TypeVar("_T")


class SQLiteSnapshotStore(SnapshotStore):
    """The snapshots of one embedded ledger, in its file (or in memory for `:memory:`)."""

    def __init__(self, path: str, *, read_only: bool = False, lock_timeout_s: float = 5.0) -> None:
        self.path = path
        self.read_only = read_only and path != MEMORY
        self._lock = threading.Lock()
        self._closed = False
        self._has_table = False
        try:
            if path == MEMORY:
                self._db = sqlite3.connect(":memory:", check_same_thread=False)
            elif self.read_only:
                uri = read_only_uri(path, Path(os.path.abspath(path)))
                self._db = sqlite3.connect(
                    uri, uri=True, timeout=lock_timeout_s, check_same_thread=False
                )
            else:
                self._db = sqlite3.connect(
                    os.path.abspath(path), timeout=lock_timeout_s, check_same_thread=False
                )
            if not self.read_only:
                # A snapshot is a cache: its commit need not wait for the disk (in WAL mode NORMAL
                # still commits atomically, and syncs around checkpoints), so it holds the file's
                # write lock, which the ledger's appends wait for, as briefly as it can. The
                # ledger's own connections keep synchronous=FULL.
                self._db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as error:
            raise SnapshotStoreError(
                f"cannot open the snapshots of ledger {path}: {error}"
            ) from error

    @classmethod
    def for_ledger(cls, ledger: SQLiteLedger) -> SQLiteSnapshotStore:
        """The store of an open embedded ledger (read-only when the ledger is)."""
        return cls(ledger.path, read_only=ledger.read_only, lock_timeout_s=ledger.lock_timeout_s)

    def save(self, snapshot: Snapshot) -> bool:
        """Store a snapshot unless its (stream, version) has one; return whether it was written."""
        if self.read_only:
            raise SnapshotStoreError(
                f"cannot save a snapshot in ledger {self.path}: it was opened read-only"
            )
        row = (
            snapshot.stream_id,
            snapshot.version,
            snapshot.position,
            snapshot.chain_hash,
            snapshot.core_format,
            snapshot.state,
            snapshot.state_sha256,
            snapshot.set_by,
            snapshot.created_ns,
        )

        def insert(c: sqlite3.Cursor) -> bool:
            if not self._has_table:
                c.execute(_CREATE)
                self._has_table = True
            c.execute(_INSERT, row)
            return c.rowcount == 1

        return self._with_table("save a snapshot in", insert)

    def nearest(
        self, stream_id: str, *, max_version: int | None = None, max_position: int | None = None
    ) -> Snapshot | None:
        """Return the stream's newest snapshot at or before a version and a position."""
        bounds = (_bound(max_version), _bound(max_position))
        rows = self._read(_NEAREST, (stream_id, *bounds))
        return _snapshot(rows[0]) if rows else None

    def get(self, stream_id: str, version: int) -> Snapshot | None:
        """Return the stream's snapshot at a version."""
        rows = self._read(_GET, (stream_id, version))
        return _snapshot(rows[0]) if rows else None

    def listing(self, stream_id: str | None = None) -> list[SnapshotInfo]:
        """Return every snapshot (of one stream), by stream and version, without the bytes."""
        if stream_id is None:
            rows = self._read(_LIST_ALL, ())
        else:
            rows = self._read(_LIST_STREAM, (stream_id,))
        return [SnapshotInfo(*row) for row in rows]

    def count(self) -> int:
        """Return how many snapshots are stored."""
        rows = self._read(_COUNT, ())
        return int(rows[0][0]) if rows else 0

    def prune(self, stream_id: str, keep: int, at_most_version: int) -> int:
        """Delete the stream's snapshots above `at_most_version` and all but the newest `keep`
        (keep >= 1) at or below it; return how many went."""
        if keep < 1:
            raise ValueError(f"keep must be at least 1, not {keep}")
        if self.read_only:
            raise SnapshotStoreError(
                f"cannot prune the snapshots of ledger {self.path}: it was opened read-only"
            )
        with self._cursor("prune the snapshots of") as c:
            c.execute(_HAS_TABLE, (TABLE,))
            if c.fetchone() is None:
                return 0
            c.execute(_PRUNE, {"stream": stream_id, "upto": at_most_version, "offset": keep - 1})
            return max(c.rowcount, 0)

    def close(self) -> None:
        """Release the connection."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()

    def _read(self, statement: str, params: Sequence[Any]) -> list[Any]:
        def read(c: sqlite3.Cursor) -> list[Any]:
            if not self._has_table:
                c.execute(_HAS_TABLE, (TABLE,))
                if c.fetchone() is None:
                    return []  # no snapshot was ever saved here
                self._has_table = True
            c.execute(statement, params)
            return c.fetchall()

        return self._with_table("read the snapshots of", read)

    def _with_table(self, doing: str, run: Callable[[sqlite3.Cursor], _T]) -> _T:
        """Run a statement, once more should the table have been dropped since this store last
        saw it (deleting every snapshot loses nothing: a store must not fail for good after it)."""
        try:
            with self._cursor(doing) as c:
                return run(c)
        except SnapshotStoreError as error:
            if not self._has_table or _NO_TABLE not in str(error.__cause__):
                raise
            self._has_table = False
        with self._cursor(doing) as c:
            return run(c)

    @contextmanager
    def _cursor(self, doing: str) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            if self._closed:
                raise SnapshotStoreError(f"cannot {doing} ledger {self.path}: the store is closed")
            try:
                with self._db:  # one transaction, committed (or rolled back) on the way out
                    yield self._db.cursor()
            except sqlite3.Error as error:
                raise SnapshotStoreError(f"cannot {doing} ledger {self.path}: {error}") from error


def _bound(value: int | None) -> int:
    return _MAX_INT64 if value is None else value


def _snapshot(row: Sequence[Any]) -> Snapshot:
    return Snapshot(*row)
