"""Account snapshots in a PostgreSQL ledger's database: `public.titan_snapshots` (migration 0004),
beside `stored_events` and outside the hash chain (docs/ledger.md, "Snapshots").

The store has one connection of its own (`adapters.postgres.ledger.connect`) on a private loop
thread, so its sync port works from any thread, the writer's worker threads included, and a
snapshot never waits for, nor holds up, the ledger's appends. The connection is opened on first
use and again after it was lost. A database migrated before 0004 has no table: it holds no
snapshots, and saving one fails (`titan db upgrade` adds the table).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Final

import asyncpg

from adapters.loop_thread import LoopThread
from adapters.redact import redact
from commands.ports import LedgerError
from commands.snapshots import Snapshot, SnapshotInfo, SnapshotStore, SnapshotStoreError

from .ledger import DEFAULT_CONNECT_TIMEOUT_S, connect

_MAX_INT64: Final = 2**63 - 1
_INFO: Final = "stream_id, version, position, chain_hash, core_format, state_sha256, created_ns"
_ALL: Final = (
    "stream_id, version, position, chain_hash, core_format, state, state_sha256, set_by, created_ns"
)
_INSERT: Final = (
    f"INSERT INTO public.titan_snapshots ({_ALL}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
    "ON CONFLICT (stream_id, version) DO NOTHING RETURNING 1"
)
_NEAREST: Final = (
    f"SELECT {_ALL} FROM public.titan_snapshots WHERE stream_id = $1 AND version <= $2 AND position <= $3 "
    "ORDER BY version DESC LIMIT 1"
)
_GET: Final = f"SELECT {_ALL} FROM public.titan_snapshots WHERE stream_id = $1 AND version = $2"
_LIST_ALL: Final = f"SELECT {_INFO} FROM public.titan_snapshots ORDER BY stream_id, version"
_LIST_STREAM: Final = (
    f"SELECT {_INFO} FROM public.titan_snapshots WHERE stream_id = $1 ORDER BY version"
)
_COUNT: Final = "SELECT count(*) FROM public.titan_snapshots"
# Above the writer's version (no honest snapshot is: see SnapshotStore.prune), or older than the
# keep-th newest at or below it (NULL, so nothing, while there are no more than `keep`).
_PRUNE: Final = (
    "WITH gone AS (DELETE FROM public.titan_snapshots WHERE stream_id = $1 AND (version > $2 OR "
    "version < (SELECT version FROM public.titan_snapshots WHERE stream_id = $1 AND version <= $2 "
    "ORDER BY version DESC LIMIT 1 OFFSET $3)) RETURNING 1) SELECT count(*) FROM gone"
)


class PostgresSnapshotStore(SnapshotStore):
    """The snapshots of one PostgreSQL ledger database."""

    def __init__(self, url: str, *, connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S) -> None:
        self.url = url
        self.connect_timeout_s = connect_timeout_s
        self._connection: asyncpg.Connection[asyncpg.Record] | None = None
        self._lock: asyncio.Lock | None = None
        self._closed = False
        self._thread = LoopThread("titan-postgres-snapshots")

    def save(self, snapshot: Snapshot) -> bool:
        """Store a snapshot unless its (stream, version) has one; return whether it was written."""
        args = (
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
        rows = self._run("save a snapshot in", _INSERT, args, missing_ok=False)
        return bool(rows)

    def nearest(
        self, stream_id: str, *, max_version: int | None = None, max_position: int | None = None
    ) -> Snapshot | None:
        """Return the stream's newest snapshot at or before a version and a position."""
        bounds = (_bound(max_version), _bound(max_position))
        rows = self._run("read the snapshots of", _NEAREST, (stream_id, *bounds))
        return _snapshot(rows[0]) if rows else None

    def get(self, stream_id: str, version: int) -> Snapshot | None:
        """Return the stream's snapshot at a version."""
        rows = self._run("read the snapshots of", _GET, (stream_id, version))
        return _snapshot(rows[0]) if rows else None

    def listing(self, stream_id: str | None = None) -> list[SnapshotInfo]:
        """Return every snapshot (of one stream), by stream and version, without the bytes."""
        if stream_id is None:
            rows = self._run("read the snapshots of", _LIST_ALL, ())
        else:
            rows = self._run("read the snapshots of", _LIST_STREAM, (stream_id,))
        return [SnapshotInfo(*row) for row in rows]

    def count(self) -> int:
        """Return how many snapshots are stored."""
        rows = self._run("read the snapshots of", _COUNT, ())
        return int(rows[0][0]) if rows else 0

    def prune(self, stream_id: str, keep: int, at_most_version: int) -> int:
        """Delete the stream's snapshots above `at_most_version` and all but the newest `keep`
        (keep >= 1) at or below it; return how many went."""
        if keep < 1:
            raise ValueError(f"keep must be at least 1, not {keep}")
        rows = self._run("prune the snapshots of", _PRUNE, (stream_id, at_most_version, keep - 1))
        return int(rows[0][0]) if rows else 0

    def close(self) -> None:
        """Close the connection and the loop thread."""
        if self._closed:
            return
        self._closed = True
        try:
            self._thread.run(self._disconnect(), timeout_s=10)
        finally:
            self._thread.close()

    # On the store's loop ------------------------------------------------------------------

    def _run(
        self, doing: str, query: str, args: Sequence[Any], *, missing_ok: bool = True
    ) -> list[Any]:
        if self._closed:
            raise SnapshotStoreError(
                f"cannot {doing} ledger {redact(self.url)}: the store is closed"
            )
        return self._thread.run(self._fetch(doing, query, args, missing_ok))

    async def _fetch(
        self, doing: str, query: str, args: Sequence[Any], missing_ok: bool
    ) -> list[Any]:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            try:
                connection = await self._connect()
                return list(await connection.fetch(query, *args))
            except asyncpg.UndefinedTableError as error:
                if missing_ok:
                    return []  # migrated before 0004: no snapshot was ever stored
                raise SnapshotStoreError(
                    f"cannot {doing} ledger {redact(self.url)}: it has no titan_snapshots table; "
                    "run `titan db upgrade`"
                ) from error
            except SnapshotStoreError:
                raise
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as error:
                await self._disconnect()  # reconnect on the next call
                raise SnapshotStoreError(
                    f"cannot {doing} ledger {redact(self.url)}: {error}"
                ) from error

    async def _connect(self) -> asyncpg.Connection[asyncpg.Record]:
        connection = self._connection
        if connection is None or connection.is_closed():
            try:
                connection = await connect(
                    self.url, timeout_s=self.connect_timeout_s, application_name="titan-snapshots"
                )
            except LedgerError as error:  # unreachable, refused: the store's error
                raise SnapshotStoreError(str(error)) from error
            self._connection = connection
        return connection

    async def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            try:
                await asyncio.wait_for(connection.close(), timeout=2)
            except Exception:  # noqa: BLE001 - a connection that cannot close politely is dropped
                connection.terminate()


def _bound(value: int | None) -> int:
    return _MAX_INT64 if value is None else value


def _snapshot(row: Sequence[Any]) -> Snapshot:
    return Snapshot(*row)
