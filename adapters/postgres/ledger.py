"""The production ledger: PostgreSQL through asyncpg, in eventsourcing's application-recorder layout.

Records live in `public.stored_events` exactly as eventsourcing's `PostgresApplicationRecorder`
(text originator ids) stores them, so eventsourcing can read a titan ledger; the position is its
`notification_id`. Like the embedded ledger, each append transaction takes eventsourcing's table
lock (so position order is commit order) and moves the anchor (`titan_chain_head`) with its
records. Every append of one ledger object, from all its writers' leases, goes through one
committer: the appends queued while a transaction is in flight are sealed onto the chain head it
keeps in memory and written by the next single call of `titan_append()` (migration 0005), which
checks that head against the anchor, each lease and each stream version, and refuses, writing
nothing, an append that may not be written. A database without that function gets the
four-round-trip append of before, per lease. The schema is created by `titan db upgrade`
(adapters/postgres/sql/migrations/); see docs/postgres.md.

The class implements the sync `Ledger` port by running asyncpg on a private event loop thread, and
offers the same operations as coroutines (`append_async`, …) plus writer leases
(`acquire_lease`) for the group-commit writer. `PostgresLedger.connect()` opens one on the
caller's own event loop instead, for writers that should not hop between threads.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections.abc import Coroutine, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, TypeAlias, TypeVar

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from eventsourcing.persistence import Notification

from adapters.ledger_mapper import LedgerRecord, SealedRecord, TitanMapper
from adapters.loop_thread import LoopThread, run_on
from adapters.redact import redact
from adapters.sqlite.ledger import LEDGER_FORMAT, envelope_field_bytes
from adapters.sqlite.ledger import _check_new_record as check_new_record
from commands.chain import seal
from commands.lease import LeaseLost, LeaseRefused
from commands.ports import (
    DEFAULT_SCAN_LIMIT,
    Ledger,
    LedgerError,
    LedgerUnreachable,
    NewRecord,
    Record,
    RecordFilter,
    VersionConflict,
    check_matching_arguments,
)

if TYPE_CHECKING:
    from adapters.postgres.committer import Committer

T = TypeVar("T")
_log = logging.getLogger("titan.ledger")
Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"

DEFAULT_POOL_SIZE: Final = 4
DEFAULT_LOCK_TIMEOUT_S: Final = 5.0
DEFAULT_CONNECT_TIMEOUT_S: Final = 5.0
NOTIFY_CHANNEL: Final = "titan_ledger"
"""Every append transaction sends `NOTIFY titan_ledger, '<head position>'`."""
EVENTSOURCING_CHANNEL: Final = "stored_events"
"""…and eventsourcing's own channel, so its PostgresSubscription wakes up too."""

LEASE_CLASS: Final = 0x7469746E  # "titn": the advisory-lock namespace of writer leases
COMMAND_STREAM_PREFIX: Final = "command-"
_MAX_POSITION: Final = 2**63 - 1

_COLUMNS: Final = "notification_id, originator_id, originator_version, topic, state"
_READ_STREAM: Final = (
    f"SELECT {_COLUMNS} FROM public.stored_events "
    "WHERE originator_id = $1 AND originator_version > $2 ORDER BY originator_version"
)
_READ_ALL: Final = (
    f"SELECT {_COLUMNS} FROM public.stored_events "
    "WHERE notification_id > $1 ORDER BY notification_id LIMIT $2"
)
_FIRST_RECORDS: Final = (
    f"SELECT {_COLUMNS} FROM public.stored_events "
    "WHERE originator_id = ANY($1::text[]) AND originator_version = 1 ORDER BY notification_id"
)
_READ_ANCHOR: Final = "SELECT position, hash, record_count FROM public.titan_chain_head WHERE id = 1"
# read_matching, in one statement (one snapshot). Positions are distinct integers, so
# ($1, $2 = $1 + scan_limit] holds at most scan_limit records: `within` is the first $4 matches
# there. Only when it is short does the scan need its exact end, `upto`: the position of the
# scan_limit-th record after $1 (the ($3 + 1)-th; it lies further on where positions have gaps,
# so it is looked up, not added), else the last one; `beyond` is the further matches up to it.
# The last row carries `upto` (NULL when the page is full, or when nothing follows $1).
# {envelope} and {conditions} are filled from the fixed fragments below only; every value is a
# bound parameter.
_READ_MATCHING: Final = """
WITH within AS MATERIALIZED (
    SELECT e.notification_id, e.originator_id, e.originator_version, e.topic, e.state
    FROM public.stored_events AS e{envelope}
    WHERE e.notification_id > $1 AND e.notification_id <= $2{conditions}
    ORDER BY e.notification_id
    LIMIT $4
), scan AS MATERIALIZED (
    SELECT CASE WHEN (SELECT count(*) FROM within) < $4 THEN coalesce(
        (SELECT notification_id FROM public.stored_events WHERE notification_id > $1
         ORDER BY notification_id OFFSET $3 LIMIT 1),
        (SELECT max(notification_id) FROM public.stored_events WHERE notification_id > $1)
    ) END AS upto
), beyond AS MATERIALIZED (
    SELECT e.notification_id, e.originator_id, e.originator_version, e.topic, e.state
    FROM public.stored_events AS e{envelope}
    WHERE e.notification_id > $2 AND e.notification_id <= (SELECT upto FROM scan){conditions}
    ORDER BY e.notification_id
    LIMIT $4 - (SELECT count(*) FROM within)
)
SELECT *, NULL::bigint FROM within
UNION ALL SELECT *, NULL FROM beyond
UNION ALL SELECT NULL, NULL, NULL, NULL, NULL, upto FROM scan
ORDER BY 1 NULLS LAST
"""
# The envelope as jsonb, read exactly as the auditor's view reads it (migration 0010): a \u0000
# escape, which jsonb cannot hold, is read as U+FFFD instead of failing the whole query.
_MATCHING_ENVELOPE: Final = r"""
    CROSS JOIN LATERAL (SELECT convert_from(e.state, 'UTF8') AS t) AS raw
    CROSS JOIN LATERAL (
        SELECT CASE
                   WHEN strpos(raw.t, '\u0000') = 0 THEN raw.t::jsonb
                   ELSE replace(replace(replace(raw.t, '\\', chr(1)), '\u0000', '\ufffd'), chr(1), '\\')::jsonb
               END AS j
    ) AS envelope"""
_TYPE_IN: Final = " AND e.topic = ANY(${n}::text[])"
_STREAM_IN: Final = " AND e.originator_id = ANY(${n}::text[])"
# One jsonpath over the envelope for its fields, with the values as jsonpath variables (one jsonb
# parameter). Strict mode: a missing field, or an array or a string where a string or a number is
# wanted, matches nothing (lax mode would unwrap arrays).
_ENVELOPE_MATCHES: Final = " AND jsonb_path_exists(envelope.j, 'strict $ ? ({path})', ${n}::jsonb)"
# A record whose envelope has this command id holds its canonical bytes `"command_id":"…"`:
# that byte search discards almost every other record before any JSON is parsed.
_STATE_HOLDS: Final = " AND position(${n}::bytea IN e.state) > 0"
_COMMAND_ID_PATH: Final = "@.command_id == $command_id"
_FROM_TS_PATH: Final = "@.ts_ns >= $from_ts_ns"
_TO_TS_PATH: Final = "@.ts_ns <= $to_ts_ns"
# Without titan_append() (a ledger migrated before 0005, or a role that may not call it), an
# append is four round trips: (1) BEGIN and eventsourcing's table lock; (2) under the lock, the
# anchor, the real last position, the versions of the batch's streams, the account streams this
# append may not write (a writer's session holds their lease) and whether this session holds its own
# lease (whose key is never in $2, so its pg_locks row can only be the session-level lock);
# (3) the insert; (4) the anchor's move, the notifications and COMMIT.
_BEGIN: Final = "BEGIN; SET LOCAL lock_timeout = '{ms}ms'; SELECT public.titan_lock_ledger()"
_PREPARE_APPEND: Final = """
SELECT h.position, h.hash, h.record_count,
       (SELECT max(notification_id) FROM public.stored_events) AS last_position,
       ARRAY(SELECT k FROM unnest($2::int[]) AS k
             WHERE NOT pg_try_advisory_xact_lock_shared($1::int, k)) AS held_elsewhere,
       ($3::int IS NULL OR EXISTS (
           SELECT 1 FROM pg_locks AS l
           WHERE l.locktype = 'advisory' AND l.pid = pg_backend_pid() AND l.granted
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
             AND l.classid = ($1::int)::oid AND l.objid = ($3::int)::oid AND l.objsubid = 2
             AND l.mode = 'ExclusiveLock'
       )) AS holds_lease,
       ARRAY(SELECT coalesce((SELECT e.originator_version FROM public.stored_events AS e
                              WHERE e.originator_id = u.s
                              ORDER BY e.originator_version DESC LIMIT 1), 0)
             FROM unnest($4::text[]) WITH ORDINALITY AS u(s, n) ORDER BY u.n) AS versions
FROM public.titan_chain_head AS h
WHERE h.id = 1
"""
# Rows are inserted in the batch's order (ORDER BY n), so positions rise along the chain; the
# code checks that they do before committing.
_INSERT: Final = """
INSERT INTO public.stored_events (originator_id, originator_version, topic, state)
SELECT i, v, t, s
FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bytea[]) WITH ORDINALITY AS r(i, v, t, s, n)
ORDER BY n
RETURNING notification_id, originator_id, originator_version
"""
# Formatted from integers and a hex digest the code computed (checked), never from input.
_ADVANCE_AND_COMMIT: Final = (
    "UPDATE public.titan_chain_head SET position = {position}, hash = '{hash}', "
    "record_count = {count} WHERE id = 1; "
    f"NOTIFY {NOTIFY_CHANNEL}, '{{position}}'; NOTIFY {EVENTSOURCING_CHANNEL}; COMMIT"
)
_HEX_HASH: Final = re.compile(r"^[0-9a-f]{64}$")
# A lease is the session-level EXCLUSIVE advisory lock on its stream's key. An append outside a
# writer takes the SHARED lock of each account stream it writes, for its transaction: appends
# never block each other, and one fails (LeaseRefused) while a writer holds the account.
# A lease is also the identity of its session: its pid and backend_start (a pid the server reuses
# for another session later has another start), which titan_append() checks.
_TRY_LEASE: Final = """
SELECT pg_try_advisory_lock($1::int, $2::int) AS taken, pg_backend_pid() AS pid,
       (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()) AS started
"""
_LEASE_HOLDER: Final = """
SELECT a.pid, a.application_name, a.backend_start, host(a.client_addr) AS client
FROM pg_locks AS l LEFT JOIN pg_stat_activity AS a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.mode = 'ExclusiveLock'
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid = ($1::int)::oid AND l.objid = ($2::int)::oid
LIMIT 1
"""
# The one-round-trip append (migration 0005_append.sql): every append of this ledger object, from
# every lease, goes through one committer that writes all those queued in one call.
_APPEND_FUNCTION: Final = (
    "public.titan_append(integer, bigint, text, text, integer, integer[], integer[], timestamptz[], "
    "integer[], integer[], text[], integer[], integer[], integer[], bigint[], text[], bytea[])"
)
_SCHEMA_PROBE: Final = f"""
SELECT to_regclass('public.titan_meta') IS NOT NULL AS has_meta,
       to_regclass('public.titan_chain_head') IS NOT NULL AS has_anchor,
       to_regprocedure('public.titan_lock_ledger()') IS NOT NULL AS has_lock,
       to_regprocedure('{_APPEND_FUNCTION}') IS NOT NULL AS has_append,
       coalesce(has_function_privilege(to_regprocedure('{_APPEND_FUNCTION}'), 'EXECUTE'), false)
           AS may_append,
       ARRAY(SELECT c.relname::text FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
             ORDER BY c.relname) AS tables
"""

_CLEANUP_ERRORS: Final = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
"""What closing or rolling back a connection may raise; the fallback is to terminate it."""
_UNREACHABLE_ERRORS: Final = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)
# An unknown role or a refused password (28000, 28P01) is not an unreachable server: it is a
# configuration the user must fix, reported as such (exit 2, not 3).


def lease_key(stream_id: str) -> int:
    """The advisory-lock key of a stream's writer lease: 31 bits of SHA-256 of the stream id."""
    return int.from_bytes(hashlib.sha256(stream_id.encode("utf-8")).digest()[:4], "big") & 0x7FFFFFFF


def is_unreachable(error: BaseException, connection: Connection | None = None) -> bool:
    """Whether an asyncpg error means the server is gone (as opposed to refusing a statement)."""
    if isinstance(error, _UNREACHABLE_ERRORS):
        return True
    if isinstance(error, asyncpg.InterfaceError):
        return connection is None or connection.is_closed() or "closed" in str(error)
    return False


async def connect(
    url: str,
    *,
    timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    application_name: str = "titan",
    settings: dict[str, str] | None = None,
) -> asyncpg.Connection[asyncpg.Record]:
    """One connection to the database a URL names, durable commits on; raise LedgerUnreachable."""
    try:
        return await asyncpg.connect(
            url,
            timeout=timeout_s,
            server_settings=_server_settings(application_name) | (settings or {}),
        )
    except asyncpg.InvalidCatalogNameError as error:
        raise LedgerError(
            f"cannot open ledger {redact(url)}: {error}; create the database first (createdb)"
        ) from error
    except Exception as error:
        if is_unreachable(error):
            raise LedgerUnreachable(
                f"cannot reach the ledger's PostgreSQL server at {redact(url)}: {_describe(error)}"
            ) from error
        raise LedgerError(f"cannot open ledger {redact(url)}: {_describe(error)}") from error


def _server_settings(application_name: str) -> dict[str, str]:
    # A commit is acknowledged only once its WAL is flushed: whatever the server's default,
    # an answer given after an append means the records are durable.
    return {"synchronous_commit": "on", "application_name": application_name[:63]}


# A lease lives as long as its session: TCP keepalives let the server notice a writer whose host
# or network died within about 25 s (instead of the kernel's two hours) and free its lease.
_LEASE_SETTINGS: Final = {
    "tcp_keepalives_idle": "10",
    "tcp_keepalives_interval": "5",
    "tcp_keepalives_count": "3",
}


def _describe(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class PostgresLease:
    """A held writer lease on one stream: a session advisory lock on a dedicated connection.

    Reads made through it use that connection. Its appends go through the ledger's committer, with
    the appends of every other lease of the ledger, in one transaction that checks that the
    lease's session, named by its pid and start time, still holds the lock; on a ledger without
    titan_append() they run on the lease's own connection, which checks the same. Either way a
    writer whose session was lost cannot append.
    """

    def __init__(
        self,
        ledger: PostgresLedger,
        connection: asyncpg.Connection[asyncpg.Record],
        stream_id: str,
        holder: str,
        session: tuple[int, datetime],
    ) -> None:
        self._ledger = ledger
        self._connection = connection
        self.stream_id = stream_id
        self.key = lease_key(stream_id)
        self.session = session
        """The (pid, backend_start) of the session that holds the lock."""
        self._holder = holder
        self._released = False

    @property
    def holder(self) -> str:
        """Who holds the lease (its connection's application_name)."""
        return self._holder

    async def append(self, records: Sequence[NewRecord]) -> list[Record]:
        """Append records atomically under the lease; raise LeaseLost if it is gone."""
        for record in records:
            check_new_record(record)
        if not records:
            return []
        if self._ledger._committer is None:
            self._ledger._say_four_round_trips()
            return await self._run(self._ledger._append_on(self._connection, records, self))
        return await self._run(self._ledger._commit_leased(records, self))

    async def read_stream(self, stream_id: str, after_version: int = 0) -> list[Record]:
        """Return one stream's records in version order."""
        return await self._run(
            self._ledger._fetch_records(self._connection, _READ_STREAM, stream_id, after_version)
        )

    async def first_records(self, stream_ids: Sequence[str]) -> dict[str, Record]:
        """Return the version-1 record of each of these streams that exists."""
        if not stream_ids:
            return {}
        records = await self._run(
            self._ledger._fetch_records(self._connection, _FIRST_RECORDS, list(stream_ids))
        )
        return {record.stream_id: record for record in records}

    async def release(self) -> None:
        """Give the lease up: unlock and close its connection (idempotent)."""
        if self._released:
            return
        self._released = True
        self._ledger._leases.discard(self)
        if self._ledger._loop.is_closed():
            return
        await run_on(self._ledger._loop, self._close())

    async def _close(self) -> None:
        connection = self._connection
        if connection.is_closed():
            return
        try:
            await asyncio.wait_for(connection.close(), timeout=2)
        except _CLEANUP_ERRORS:
            connection.terminate()

    async def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._released:
            coro.close()
            raise LeaseLost(self.stream_id, "it was released")
        return await run_on(self._ledger._loop, coro)


class PostgresLedger(Ledger):
    """The PostgreSQL ledger. Sync (the `Ledger` port) and async (`*_async`) APIs over one pool."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = DEFAULT_POOL_SIZE,
        lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        one_round_trip: bool = True,
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.url = url
        self.one_round_trip = one_round_trip
        """Whether appends go through the committer and titan_append() when the database has it
        (False: four round trips per append, each writer alone, as before migration 0005; what
        `infra.bench.postgres` compares against)."""
        self.pool_size = pool_size
        self.lock_timeout_s = lock_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._mapper = TitanMapper()
        self._pool: asyncpg.Pool | None = None
        self._leases: set[PostgresLease] = set()
        self._closed = False
        self._begin_sql = _BEGIN.format(ms=int(lock_timeout_s * 1000))
        self._committer: Committer | None = None
        """Set when the database has titan_append() and this role may call it (at open)."""
        self._without_committer: str | None = None
        """Why not, when the database or the role decided it (logged once, at the first append)."""
        self._thread: LoopThread | None = None
        if _loop is not None:
            self._loop = _loop  # `connect()` opens the pool on the caller's loop
            return
        self._thread = LoopThread("titan-postgres-ledger")
        self._loop = self._thread.loop
        try:
            self._thread.run(self._open())
        except BaseException:
            self._closed = True
            self._thread.close()
            raise

    @classmethod
    async def connect(cls, url: str, **options: Any) -> PostgresLedger:
        """Open a ledger on the running event loop (its sync API then works from other threads)."""
        ledger = cls(url, _loop=asyncio.get_running_loop(), **options)
        try:
            await ledger._open()
        except BaseException:
            ledger._closed = True
            raise
        return ledger

    # The sync port -------------------------------------------------------------------------

    def append(self, records: Sequence[NewRecord]) -> list[Record]:
        """Append records atomically, sealing each into the hash chain; raise VersionConflict."""
        for record in records:
            check_new_record(record)
        if not records:
            self._check_open("append to")
            return []
        return self._sync(self._append(records), "append to")

    def read_stream(self, stream_id: str, after_version: int = 0) -> list[Record]:
        """Return one stream's records in version order."""
        return self._sync(self._read(_READ_STREAM, stream_id, after_version), "read")

    def read_all(self, after_position: int = 0, limit: int = 1000) -> list[Record]:
        """Return up to `limit` records after a position, in position order."""
        return self._sync(self._read(_READ_ALL, after_position, limit), "read")

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
        return self._sync(self._read_matching(after_position, limit, where, scan_limit), "read")

    def head(self) -> tuple[int, str, int]:
        """Return the anchored head: last position, its chain hash and the record count."""
        return self._sync(self._head(), "read")

    def close(self) -> None:
        """Release connections (and the private loop thread)."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            try:
                self._thread.run(self._shutdown(), timeout_s=10)
            finally:
                self._thread.close()
        elif not self._loop.is_closed():
            if _running_loop() is self._loop:
                # Called from the owning loop: schedule the shutdown rather than block it.
                self._loop.create_task(self._shutdown())
            elif self._loop.is_running():
                asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)

    # The async API -------------------------------------------------------------------------

    async def append_async(self, records: Sequence[NewRecord]) -> list[Record]:
        """Append records atomically, sealing each into the hash chain; raise VersionConflict."""
        for record in records:
            check_new_record(record)
        self._check_open("append to")
        if not records:
            return []
        return await run_on(self._loop, self._append(records))

    async def read_stream_async(self, stream_id: str, after_version: int = 0) -> list[Record]:
        """Return one stream's records in version order."""
        self._check_open("read")
        return await run_on(self._loop, self._read(_READ_STREAM, stream_id, after_version))

    async def read_all_async(self, after_position: int = 0, limit: int = 1000) -> list[Record]:
        """Return up to `limit` records after a position, in position order."""
        self._check_open("read")
        return await run_on(self._loop, self._read(_READ_ALL, after_position, limit))

    async def read_matching_async(
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
        self._check_open("read")
        return await run_on(
            self._loop, self._read_matching(after_position, limit, where, scan_limit)
        )

    async def head_async(self) -> tuple[int, str, int]:
        """Return the anchored head: last position, its chain hash and the record count."""
        self._check_open("read")
        return await run_on(self._loop, self._head())

    async def acquire_lease(self, stream_id: str, holder: str) -> PostgresLease:
        """Take the stream's writer lease on a dedicated connection; raise LeaseRefused."""
        self._check_open("lease a stream of")
        return await run_on(self._loop, self._acquire(stream_id, holder))

    async def close_async(self) -> None:
        """Release connections."""
        if self._closed:
            return
        if self._thread is not None:
            await asyncio.to_thread(self.close)
            return
        self._closed = True
        await run_on(self._loop, self._shutdown())

    # Implementation (runs on the ledger's loop) ---------------------------------------------

    async def _open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self.url,
                min_size=1,
                max_size=self.pool_size,
                timeout=self.connect_timeout_s,
                server_settings=_server_settings("titan-ledger"),
            )
        except Exception as error:
            if isinstance(error, asyncpg.InvalidCatalogNameError):
                raise LedgerError(
                    f"cannot open ledger {redact(self.url)}: {error}; create the database first"
                ) from error
            raise self._error("open", error) from error
        try:
            async with self._pool.acquire() as connection:
                await self._check_schema(connection)
        except BaseException:
            await self._pool.close()
            raise

    async def _check_schema(self, connection: Connection) -> None:
        probe = await connection.fetchrow(_SCHEMA_PROBE)
        assert probe is not None  # a SELECT without FROM returns one row
        where = redact(self.url)
        if not probe["has_meta"]:
            tables = list(probe["tables"])
            if tables:
                raise LedgerError(
                    f"{where} is a PostgreSQL database but not a titan ledger: it has tables "
                    f"{tables}, a titan ledger has stored_events, titan_chain_head and titan_meta "
                    f"with format {LEDGER_FORMAT!r}"
                )
            raise LedgerError(
                f"{where} has no titan ledger yet: run `titan db upgrade --ledger URL` "
                "(or `titan init`) to create it"
            )
        found = await connection.fetchval("SELECT value FROM public.titan_meta WHERE key = 'format'")
        if found != LEDGER_FORMAT:
            raise LedgerError(f"{where} has ledger format {found!r}; this titan reads {LEDGER_FORMAT!r}")
        if not (probe["has_anchor"] and probe["has_lock"]):
            raise LedgerError(
                f"{where} has an incomplete titan schema: run `titan db upgrade --ledger URL`"
            )
        if probe["may_append"]:
            if self.one_round_trip:
                from adapters.postgres.committer import Committer

                self._committer = Committer(self)
        else:  # said at the first append: a ledger opened to read has nothing to say
            self._without_committer = (
                "this role may not execute titan_append() (run adapters/postgres/sql/roles.sql again)"
                if probe["has_append"]
                else "no titan_append() yet (run `titan db upgrade`)"
            )

    async def _shutdown(self) -> None:
        if self._committer is not None:
            await self._committer.close()
        for lease in list(self._leases):
            await lease.release()
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.close(), timeout=5)
            except _CLEANUP_ERRORS:
                self._pool.terminate()

    async def _acquire(self, stream_id: str, holder: str) -> PostgresLease:
        connection = await connect(
            self.url, timeout_s=self.connect_timeout_s, application_name=holder, settings=_LEASE_SETTINGS
        )
        key = lease_key(stream_id)
        deadline = asyncio.get_running_loop().time() + self.lock_timeout_s
        try:
            while True:
                taken = await connection.fetchrow(_TRY_LEASE, LEASE_CLASS, key)
                assert taken is not None  # a SELECT without FROM returns one row
                if taken["taken"]:
                    break
                holder_now = await connection.fetchrow(_LEASE_HOLDER, LEASE_CLASS, key)
                if holder_now is not None or asyncio.get_running_loop().time() > deadline:
                    raise LeaseRefused(stream_id, _describe_holder(holder_now))
                # Only appends outside any writer hold it (shared, for one transaction): wait.
                await asyncio.sleep(0.01)
        except LeaseRefused:
            await connection.close()
            raise
        except Exception as error:
            connection.terminate()
            raise self._error("lease a stream of", error, connection) from error
        session = (int(taken["pid"]), taken["started"])
        lease = PostgresLease(self, connection, stream_id, holder, session)
        self._leases.add(lease)
        return lease

    async def _holder_of(self, connection: Connection, key: int) -> str:
        return _describe_holder(await connection.fetchrow(_LEASE_HOLDER, LEASE_CLASS, key))

    async def _head(self) -> tuple[int, str, int]:
        async with self._connection("read") as connection:
            try:
                row = await connection.fetchrow(_READ_ANCHOR)
            except Exception as error:
                raise self._error("read", error, connection) from error
        if row is None:
            raise LedgerError("the ledger's anchor row (titan_chain_head id 1) is missing")
        return int(row[0]), str(row[1]), int(row[2])

    async def _read(self, query: str, *args: Any) -> list[Record]:
        async with self._connection("read") as connection:
            return await self._fetch_records(connection, query, *args)

    async def _read_matching(
        self, after_position: int, limit: int, where: RecordFilter, scan_limit: int
    ) -> tuple[list[Record], int]:
        query, filter_args = _matching_query(where)
        first_upto = min(after_position + scan_limit, _MAX_POSITION)
        async with self._connection("read") as connection:
            rows = await self._fetch(
                connection, query, after_position, first_upto, scan_limit - 1, limit, *filter_args
            )
        *found, scan = rows  # the scan row sorts last (NULL position)
        records = self._to_records(found)
        if len(records) == limit:
            return records, records[-1].position
        if scan[5] is None:
            return [], after_position
        return records, int(scan[5])

    async def _fetch_records(
        self, connection: Connection, query: str, *args: Any
    ) -> list[Record]:
        return self._to_records(await self._fetch(connection, query, *args))

    async def _fetch(self, connection: Connection, query: str, *args: Any) -> list[asyncpg.Record]:
        try:
            return await connection.fetch(query, *args)
        except Exception as error:
            raise self._error("read", error, connection) from error

    def _to_records(self, rows: Sequence[asyncpg.Record]) -> list[Record]:
        """Decode rows whose first five columns are a stored event with its position."""
        to_record = self._mapper.to_domain_event
        return [
            to_record(
                Notification(
                    id=row[0], originator_id=row[1], originator_version=row[2], topic=row[3], state=row[4]
                )
            )
            for row in rows
        ]

    async def _append(self, records: Sequence[NewRecord]) -> list[Record]:
        if self._committer is not None:
            return await self._committer.append(records, None)
        self._say_four_round_trips()
        async with self._connection("append to") as connection:
            return await self._append_on(connection, records, None)

    def _say_four_round_trips(self) -> None:
        if self._without_committer is not None:
            where = redact(self.url)
            _say_once(
                where,
                f"ledger {where}: {self._without_committer}: appends take four round trips each, "
                "and each writer commits alone",
            )

    async def _commit_leased(
        self, records: Sequence[NewRecord], lease: PostgresLease
    ) -> list[Record]:
        assert self._committer is not None
        if lease._connection.is_closed():
            raise LedgerUnreachable(
                f"cannot append to ledger {redact(self.url)}: the connection that holds the lease "
                f"of {lease.stream_id} is closed; nothing was appended: take the lease again"
            )
        return await self._committer.append(records, lease)

    async def _append_on(
        self, connection: Connection, records: Sequence[NewRecord], lease: PostgresLease | None
    ) -> list[Record]:
        """Seal and insert records in one transaction, under the table lock and the anchor."""
        own_key = lease.key if lease is not None else None
        guarded = _guarded_streams(records, own_key)
        streams = list(dict.fromkeys(record.stream_id for record in records))
        try:
            await connection.execute(self._begin_sql)
            row = await connection.fetchrow(
                _PREPARE_APPEND, LEASE_CLASS, list(guarded), own_key, streams
            )
            if row is None:
                raise LedgerError("the ledger's anchor row (titan_chain_head id 1) is missing")
            if row["held_elsewhere"]:
                key = row["held_elsewhere"][0]
                await connection.execute("ROLLBACK")
                raise LeaseRefused(guarded[key], await self._holder_of(connection, key))
            if lease is not None and not row["holds_lease"]:
                raise LeaseLost(
                    lease.stream_id,
                    "its session no longer holds the advisory lock; acquire the lease again",
                )
            position, prev_hash, count = int(row[0]), str(row[1]), int(row[2])
            last_position = row["last_position"] or 0
            if last_position != position:
                raise LedgerError(
                    f"the ledger's last record is at position {last_position} but its anchor "
                    f"says {position}: refusing to append; run `titan ledger verify`"
                )
            _check_versions(records, dict(zip(streams, row["versions"], strict=True)))
            sealed: list[SealedRecord] = []
            for record in records:
                envelope = seal(record.envelope, prev_hash)
                sealed.append(SealedRecord(record.stream_id, record.version, record.type, envelope))
                prev_hash = envelope["hash"]
            states = [self._mapper.to_stored_event(record).state for record in sealed]
            inserted = await connection.fetch(
                _INSERT,
                [r.stream_id for r in sealed],
                [r.version for r in sealed],
                [r.type for r in sealed],
                states,
            )
            at = {(row[1], row[2]): int(row[0]) for row in inserted}
            positions = [at.get((r.stream_id, r.version), 0) for r in sealed]
            if len(inserted) != len(sealed) or any(
                b <= a for a, b in zip([position, *positions], positions, strict=False)
            ):
                raise LedgerError(
                    f"the database assigned positions {positions} after {position}: they must "
                    "rise in the order of the batch; nothing was appended"
                )
            if not _HEX_HASH.match(prev_hash):
                raise LedgerError(f"a sealed record's hash {prev_hash!r} is not a hex SHA-256")
            await connection.execute(
                _ADVANCE_AND_COMMIT.format(
                    position=positions[-1], hash=prev_hash, count=count + len(sealed)
                )
            )
        except BaseException as error:
            await _rollback(connection)
            if isinstance(error, (LedgerError, ValueError)) or not isinstance(error, Exception):
                raise
            if isinstance(error, asyncpg.UniqueViolationError):
                raise await self._conflict(records, error) from error
            raise self._error("append to", error, connection, during_append=True) from error
        return [
            LedgerRecord(at, s.stream_id, s.version, s.type, s.envelope, state)
            for at, s, state in zip(positions, sealed, states, strict=True)
        ]

    async def _conflict(self, records: Sequence[NewRecord], error: Exception) -> LedgerError:
        """Name the (stream, version) that made an append fail on the primary key."""
        async with self._connection("read") as connection:
            for record in records:
                exists = await connection.fetchval(
                    "SELECT 1 FROM public.stored_events WHERE originator_id = $1 AND originator_version = $2",
                    record.stream_id,
                    record.version,
                )
                if exists:
                    return VersionConflict(record.stream_id, record.version)
        return LedgerError(f"cannot append to ledger {redact(self.url)}: {error}")

    def _connection(self, doing: str) -> _PooledConnection:
        self._check_open(doing)
        assert self._pool is not None
        return _PooledConnection(self, self._pool, doing)

    def _error(
        self,
        doing: str,
        error: BaseException,
        connection: Connection | None = None,
        *,
        during_append: bool = False,
    ) -> LedgerError:
        where = redact(self.url)
        if is_unreachable(error, connection):
            unknown = (
                "; the append's outcome is unknown (it may have committed): read the ledger, or "
                "resubmit the command, whose id makes a repeat harmless"
                if during_append
                else ""
            )
            return LedgerUnreachable(
                f"cannot {doing} ledger {where}: the PostgreSQL server is unreachable "
                f"({_describe(error)}){unknown}"
            )
        if isinstance(error, asyncpg.LockNotAvailableError):
            return LedgerError(
                f"cannot {doing} ledger {where}: another writer held it locked for more than "
                f"{self.lock_timeout_s:g} s"
            )
        return LedgerError(f"cannot {doing} ledger {where}: {_describe(error)}")

    def _check_open(self, doing: str) -> None:
        if self._closed:
            raise LedgerError(f"cannot {doing} ledger {redact(self.url)}: it is closed")

    def _sync(self, coro: Coroutine[Any, Any, T], doing: str) -> T:
        if self._closed:
            coro.close()
            self._check_open(doing)
        if self._thread is not None:
            return self._thread.run(coro)
        loop = self._loop
        if _running_loop() is loop:
            coro.close()
            raise LedgerError(
                f"cannot {doing} ledger {redact(self.url)} synchronously from the event loop it was "
                "opened on: await its *_async method instead"
            )
        if loop.is_closed() or not loop.is_running():
            coro.close()
            raise LedgerError(
                f"cannot {doing} ledger {redact(self.url)}: the event loop it was opened on has stopped"
            )
        return asyncio.run_coroutine_threadsafe(coro, loop).result()


class _PooledConnection:
    """`async with` a pool connection, turning connect failures into LedgerUnreachable."""

    def __init__(self, ledger: PostgresLedger, pool: asyncpg.Pool, doing: str) -> None:
        self._ledger = ledger
        self._pool = pool
        self._doing = doing
        self._connection: PoolConnectionProxy[asyncpg.Record] | None = None

    async def __aenter__(self) -> PoolConnectionProxy[asyncpg.Record]:
        try:
            connection = await self._pool.acquire(timeout=self._ledger.connect_timeout_s)
        except Exception as error:
            raise self._ledger._error(self._doing, error) from error
        self._connection = connection
        return connection

    async def __aexit__(self, *exc_info: object) -> None:
        connection = self._connection
        if connection is None:
            return
        self._connection = None
        try:
            await self._pool.release(connection, timeout=5)
        except _CLEANUP_ERRORS:
            connection.terminate()


def _describe_holder(row: asyncpg.Record | None) -> str:
    if row is None:
        return "a writer that has just let go; try again"
    name = row["application_name"] or "an unnamed session"
    since = row["backend_start"].isoformat(timespec="seconds") if row["backend_start"] else "?"
    client = f" from {row['client']}" if row["client"] else ""
    return f"{name!r}, server pid {row['pid']}{client}, connected since {since}"


def _matching_query(where: RecordFilter) -> tuple[str, list[Any]]:
    """The read_matching statement for a filter, and its filter parameters (from $5 on)."""
    conditions: list[str] = []
    args: list[Any] = []
    if where.types:
        args.append(list(where.types))
        conditions.append(_TYPE_IN.format(n=4 + len(args)))
    if where.stream_ids:
        args.append(list(where.stream_ids))
        conditions.append(_STREAM_IN.format(n=4 + len(args)))
    paths: list[str] = []
    variables: dict[str, Any] = {}
    if where.command_id is not None:
        args.append(envelope_field_bytes("command_id", where.command_id))
        conditions.append(_STATE_HOLDS.format(n=4 + len(args)))
        paths.append(_COMMAND_ID_PATH)
        variables["command_id"] = where.command_id
    if where.from_ts_ns is not None:
        paths.append(_FROM_TS_PATH)
        variables["from_ts_ns"] = where.from_ts_ns
    if where.to_ts_ns is not None:
        paths.append(_TO_TS_PATH)
        variables["to_ts_ns"] = where.to_ts_ns
    envelope = ""
    if paths:
        envelope = _MATCHING_ENVELOPE
        args.append(json.dumps(variables))
        conditions.append(_ENVELOPE_MATCHES.format(path=" && ".join(paths), n=4 + len(args)))
    query = _READ_MATCHING.format(envelope=envelope, conditions="".join(conditions))
    return query, args


def _check_versions(records: Sequence[NewRecord], current: dict[str, int]) -> None:
    """Each record must be its stream's next version (optimistic concurrency, no gaps)."""
    next_versions: dict[str, int] = {}
    for record in records:
        stream_id = record.stream_id
        expected = next_versions.get(stream_id)
        if expected is None:
            expected = current.get(stream_id, 0) + 1
        if record.version != expected:
            raise _version_error(stream_id, record.version, expected)
        next_versions[stream_id] = expected + 1


def _version_error(stream_id: str, version: int, expected: int) -> VersionConflict | ValueError:
    """Why a record of a stream whose next version is `expected` may not have `version`."""
    if version < expected:
        return VersionConflict(stream_id, version)
    return ValueError(
        f"stream {stream_id!r} is at version {expected - 1}: the next record must "
        f"be version {expected}, not {version}"
    )


def _guarded_streams(records: Sequence[NewRecord], own_key: int | None) -> dict[int, str]:
    """The account streams an append writes without holding their lease, by lease key: it may
    write them only while no writer holds them (command streams are never leased)."""
    guarded: dict[int, str] = {}
    for record in records:
        stream_id = record.stream_id
        if not stream_id.startswith(COMMAND_STREAM_PREFIX):
            key = lease_key(stream_id)
            if key != own_key:
                guarded.setdefault(key, stream_id)
    return guarded


def _say_once(key: str, message: str) -> None:
    """Log a warning once per process for this key (a ledger opened many times says it once)."""
    if key not in _SAID:
        _SAID.add(key)
        _log.warning(message)


_SAID: set[str] = set()


async def _rollback(connection: Connection) -> None:
    """End a failed append's transaction (a closed connection has ended it already)."""
    if connection.is_closed() or not connection.is_in_transaction():
        return
    try:
        await connection.execute("ROLLBACK")
    except _CLEANUP_ERRORS:
        connection.terminate()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
