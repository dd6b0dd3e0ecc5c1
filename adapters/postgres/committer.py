"""The one committer of a PostgreSQL ledger object (issue 14, docs/postgres.md, "One committer,
one round trip"): every append queued while a call was in flight, from every lease of the process
and from appends outside a writer, goes into ONE call of `titan_append()` (migration
0005_append.sql): one round trip, one transaction, on the committer's own connection.

Split from ledger.py, which opens the ledger, its pool and its leases, and creates the committer
when the database has the function and the role may call it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

import asyncpg

from adapters.ledger_mapper import LedgerRecord
from adapters.postgres.ledger import (
    _CLEANUP_ERRORS,
    _READ_ANCHOR,
    LEASE_CLASS,
    _describe,
    _guarded_streams,
    _version_error,
    connect,
    is_unreachable,
)
from adapters.redact import redact
from adapters.sqlite.ledger import envelope_field_bytes
from commands.lease import LeaseLost, LeaseRefused
from commands.ports import LedgerError, LedgerUnreachable, NewRecord, Record, VersionConflict
from schemas.canonical import canonical_bytes, parse, sha256_hex

if TYPE_CHECKING:
    from adapters.postgres.ledger import PostgresLease, PostgresLedger

_CALL_APPEND: Final = (
    "SELECT outcome, positions, head_position, head_hash, head_count, last_position, refusals "
    "FROM public.titan_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, "
    "$16, $17)"
)
_MAX_CALL_RECORDS: Final = 5_000
"""Records per titan_append() call, at most (an append bigger than that goes alone)."""
_MAX_CALLS_PER_BATCH: Final = 64
"""Calls the committer makes for one batch (a stale head or refusals each cost one more)."""

# One canonical encoding per record (issue 14). Canonical JSON writes an envelope's top-level
# fields in key order, so "hash" and "prev_hash" always fall between the same neighbours: after
# the fields that sort before "hash", around those that sort between the two, before the rest.
# The other fields are encoded once per append, in those three runs, and every seal splices the
# chain fields in: the bytes the hash covers (with prev_hash), then the bytes stored (with the
# hash too), exactly the bytes `commands.chain.seal` and `TitanMapper` make
# (tests/integration/test_postgres_committer.py compares them byte for byte).
_HASH_FIELD: Final = "hash"
_PREV_HASH_FIELD: Final = "prev_hash"


def _unsealed_runs(envelope: dict[str, Any]) -> tuple[bytes, bytes, bytes]:
    """An unsealed envelope's canonical members in three runs (no braces): the fields before
    "hash", those between "hash" and "prev_hash", those after "prev_hash"."""
    before: dict[str, Any] = {}
    between: dict[str, Any] = {}
    after: dict[str, Any] = {}
    for key, value in envelope.items():
        if key < _HASH_FIELD:
            before[key] = value
        elif key < _PREV_HASH_FIELD:
            between[key] = value
        else:
            after[key] = value
    return (
        canonical_bytes(before)[1:-1],
        canonical_bytes(between)[1:-1],
        canonical_bytes(after)[1:-1],
    )


def _sealed_state(runs: tuple[bytes, bytes, bytes], prev_member: bytes) -> tuple[str, bytes]:
    """Seal an envelope's runs after the member `"prev_hash":"…"`: its hash and its stored bytes."""
    before, between, after = runs
    digest = sha256_hex(_json_object(before, between, prev_member, after))
    hash_member = b'"hash":"' + digest.encode("ascii") + b'"'
    return digest, _json_object(before, hash_member, between, prev_member, after)


def _json_object(*members: bytes) -> bytes:
    return b"{" + b",".join([member for member in members if member]) + b"}"



class PendingAppend:
    """One append waiting for the committer: its records, encoded once but for the chain fields;
    the lease it is made under (None: outside any writer); the account streams it writes without
    holding their lease; and the future its caller awaits."""

    __slots__ = ("future", "guarded", "lease", "records", "runs")

    def __init__(
        self,
        records: Sequence[NewRecord],
        lease: PostgresLease | None,
        future: asyncio.Future[list[Record]],
    ) -> None:
        self.records = records
        self.lease = lease
        self.guarded = _guarded_streams(records, lease.key if lease is not None else None)
        self.runs = [_unsealed_runs(record.envelope) for record in records]
        self.future = future


class Committer:
    """The one writer of a ledger object's appends (issue 14): every append queued while a call
    was in flight, whichever lease it comes from, goes into the next call of titan_append(): one
    round trip, one transaction, on the committer's own connection.

    It seals onto the chain head it keeps in memory (read from the anchor once, then moved by its
    own commits). When another process moved the anchor, the call writes nothing and names the
    new head, and the committer seals onto that and calls again. A refusal that concerns one
    append fails that append alone; the others go again at once. An append is answered only once
    its call returned, after COMMIT; a call whose connection dropped fails every append in it as
    'outcome unknown', and the next call reconnects.
    """

    def __init__(self, ledger: PostgresLedger) -> None:
        self._ledger = ledger
        self._queue: deque[PendingAppend] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._connection: asyncpg.Connection[asyncpg.Record] | None = None
        self._head: tuple[int, str, int] | None = None
        self._lock_timeout_ms = max(1, int(ledger.lock_timeout_s * 1000))
        self._closing = False
        self.calls = 0
        """titan_append() calls made so far (for tests and benchmarks)."""

    async def append(
        self, records: Sequence[NewRecord], lease: PostgresLease | None
    ) -> list[Record]:
        """Queue an append for the next call and return its records once committed."""
        if self._closing:
            raise LedgerError(f"cannot append to ledger {redact(self._ledger.url)}: it is closed")
        loop = asyncio.get_running_loop()
        try:
            pending = PendingAppend(records, lease, loop.create_future())
        except (TypeError, ValueError) as error:  # an envelope canonical JSON cannot encode
            raise self._ledger._error("append to", error) from error
        self._queue.append(pending)
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name="titan-ledger-committer")
        return await pending.future

    async def close(self) -> None:
        """Commit what is queued, then stop and close the connection (idempotent)."""
        self._closing = True
        self._wake.set()
        task = self._task
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout=5)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        closed = LedgerError(f"cannot append to ledger {redact(self._ledger.url)}: it is closed")
        while self._queue:
            pending = self._queue.popleft()
            if not pending.future.done():
                pending.future.set_exception(closed)
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            try:
                await asyncio.wait_for(connection.close(), timeout=2)
            except _CLEANUP_ERRORS:
                connection.terminate()

    async def _run(self) -> None:
        while True:
            while not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
            batch = self._take()
            if batch:
                await self._commit(batch)
                # Let the writers just answered run first: those with commands queued behind
                # their append decide them now, and their next appends join the next call.
                await asyncio.sleep(0)

    def _take(self) -> list[PendingAppend]:
        """Every append queued (skipping those whose callers gave up), up to a call's size."""
        batch: list[PendingAppend] = []
        records = 0
        while self._queue:
            pending = self._queue[0]
            if batch and records + len(pending.records) > _MAX_CALL_RECORDS:
                break
            self._queue.popleft()
            if not pending.future.done():
                batch.append(pending)
                records += len(pending.records)
        return batch

    async def _commit(self, batch: list[PendingAppend]) -> None:
        """Write a batch of appends, calling again without the refused ones until none is left."""
        pending = batch
        try:
            for _call in range(_MAX_CALLS_PER_BATCH):
                pending = [p for p in pending if not p.future.done()]
                if not pending:
                    return
                pending = await self._call(pending)
            raise LedgerError(
                f"cannot append to ledger {redact(self._ledger.url)}: {_MAX_CALLS_PER_BATCH} calls "
                "in a row wrote nothing (the head moved under them: other processes keep "
                "appending); nothing of this append was written, try again"
            )
        except BaseException as error:
            self._head = None
            if isinstance(error, LedgerError):
                failure = error
            elif isinstance(error, Exception):
                failure = self._ledger._error(
                    "append to", error, self._connection, during_append=True
                )
            else:  # cancelled (the ledger is closing) while a call may have been in flight
                self._drop_connection()
                failure = LedgerError(
                    f"cannot append to ledger {redact(self._ledger.url)}: it was closed during the "
                    "append, whose outcome is unknown (it may have committed): read the ledger, or "
                    "resubmit the command, whose id makes a repeat harmless"
                )
            for p in pending:
                if not p.future.done():
                    p.future.set_exception(failure)
            if not isinstance(error, Exception):
                raise

    async def _call(self, pending: list[PendingAppend]) -> list[PendingAppend]:
        """One call of titan_append() with these appends; return those to call again with."""
        connection = await self._connect()
        if self._head is None:
            self._head = await self._read_head(connection)
        position, head_hash, _count = self._head
        arguments, sealed = self._arguments(pending, position, head_hash)
        self.calls += 1
        try:
            row = await connection.fetchrow(_CALL_APPEND, *arguments)
        except asyncpg.UniqueViolationError as error:
            return await self._without_conflicts(pending, error)
        except Exception as error:
            if is_unreachable(error, connection):
                self._drop_connection()
            raise self._ledger._error("append to", error, connection, during_append=True) from error
        assert row is not None  # a function of OUT parameters returns one row
        outcome = row["outcome"]
        if outcome == "appended":
            self._head = (int(row["head_position"]), str(row["head_hash"]), int(row["head_count"]))
            self._answer(pending, sealed, row["positions"])
            return []
        if outcome == "stale":  # another process appended: seal onto its head
            self._head = (int(row["head_position"]), str(row["head_hash"]), int(row["head_count"]))
            return pending
        if outcome == "anchor":
            raise LedgerError(
                f"the ledger's last record is at position {row['last_position']} but its anchor "
                f"says {row['head_position']}: refusing to append; run `titan ledger verify`"
            )
        if outcome == "refused":
            return await self._refuse(connection, pending, row["refusals"])
        raise LedgerError(
            f"titan_append() answered {str(outcome)[:40]!r}; this titan knows appended, stale, "
            "anchor and refused: upgrade titan"
        )

    def _arguments(
        self, pending: list[PendingAppend], position: int, head_hash: str
    ) -> tuple[tuple[Any, ...], list[tuple[str, str, bytes]]]:
        """titan_append()'s arguments, the records sealed in order onto (position, head_hash); and
        each record's (prev_hash, hash, state)."""
        lease_keys: list[int | None] = []
        lease_pids: list[int | None] = []
        lease_starts: list[datetime | None] = []
        guard_entries: list[int] = []
        guard_keys: list[int] = []
        streams: dict[str, int] = {}  # each stream once: its 1-based index
        ranks: dict[str, int] = {}  # the call's records of each stream so far
        record_entries: list[int] = []
        record_streams: list[int] = []
        record_ranks: list[int] = []
        versions: list[int] = []
        topics: list[str] = []
        states: list[bytes] = []
        sealed: list[tuple[str, str, bytes]] = []
        prev_hash = head_hash
        # The anchor's hash is read from a table: encoded as JSON, whatever it holds. The hashes
        # after it are this code's own hex digests.
        prev_member = envelope_field_bytes(_PREV_HASH_FIELD, prev_hash)
        for entry, append in enumerate(pending):
            lease = append.lease
            if lease is None:
                lease_keys.append(None)
                lease_pids.append(None)
                lease_starts.append(None)
            else:
                lease_keys.append(lease.key)
                lease_pids.append(lease.session[0])
                lease_starts.append(lease.session[1])
            for key in append.guarded:
                guard_entries.append(entry)
                guard_keys.append(key)
            for record, runs in zip(append.records, append.runs, strict=True):
                digest, state = _sealed_state(runs, prev_member)
                sealed.append((prev_hash, digest, state))
                stream_id = record.stream_id
                record_entries.append(entry)
                record_streams.append(streams.setdefault(stream_id, len(streams) + 1))
                rank = ranks.get(stream_id, 0) + 1
                ranks[stream_id] = rank
                record_ranks.append(rank)
                versions.append(record.version)
                topics.append(record.type)
                states.append(state)
                prev_hash = digest
                prev_member = b'"prev_hash":"' + digest.encode("ascii") + b'"'
        arguments = (
            self._lock_timeout_ms, position, head_hash, prev_hash, LEASE_CLASS,
            lease_keys, lease_pids, lease_starts, guard_entries, guard_keys, list(streams),
            record_entries, record_streams, record_ranks, versions, topics, states,
        )  # fmt: skip
        return arguments, sealed

    def _answer(
        self, pending: list[PendingAppend], sealed: list[tuple[str, str, bytes]], positions: Any
    ) -> None:
        if not isinstance(positions, list) or len(positions) != len(sealed):
            raise LedgerError(
                f"titan_append() committed but answered positions {positions!r:.200} for "
                f"{len(sealed)} records; read the ledger (`titan ledger verify`)"
            )
        index = 0
        for append in pending:
            records: list[Record] = []
            for record in append.records:
                prev_hash, digest, state = sealed[index]
                envelope = dict(record.envelope)
                envelope[_PREV_HASH_FIELD] = prev_hash
                envelope[_HASH_FIELD] = digest
                records.append(
                    LedgerRecord(
                        int(positions[index]),
                        record.stream_id,
                        record.version,
                        record.type,
                        envelope,
                        state,
                    )
                )
                index += 1
            if not append.future.done():
                append.future.set_result(records)

    async def _refuse(
        self, connection: asyncpg.Connection[asyncpg.Record], pending: list[PendingAppend], raw: Any
    ) -> list[PendingAppend]:
        """Fail each refused append with its own error; return the others."""
        refused: set[int] = set()
        for entry, refusal in _parse_refusals(raw, len(pending)):
            if entry in refused:
                continue
            refused.add(entry)
            append = pending[entry]
            error = await self._refusal_error(connection, append, refusal)
            if not append.future.done():
                append.future.set_exception(error)
        return [append for entry, append in enumerate(pending) if entry not in refused]

    async def _refusal_error(
        self,
        connection: asyncpg.Connection[asyncpg.Record],
        append: PendingAppend,
        refusal: dict[str, Any],
    ) -> Exception:
        kind, lease, where = refusal["refusal"], append.lease, redact(self._ledger.url)
        if kind == "version":
            stream_id, version, expected = (
                refusal.get("stream"),
                refusal.get("version"),
                refusal.get("expected"),
            )
            if (
                isinstance(stream_id, str)
                and isinstance(version, int)
                and isinstance(expected, int)
            ):
                return _version_error(stream_id, version, expected)
        elif kind == "held_elsewhere" and refusal.get("key") in append.guarded:
            key = refusal["key"]
            try:
                holder = await self._ledger._holder_of(connection, key)
            except Exception as error:  # noqa: BLE001 - the refusal stands; only the name is missing
                holder = f"a writer whose name could not be read ({_describe(error)})"
            return LeaseRefused(append.guarded[key], holder)
        elif kind == "lease_lost" and lease is not None:
            return LeaseLost(
                lease.stream_id,
                "its session no longer holds the advisory lock; acquire the lease again",
            )
        elif kind == "session_gone" and lease is not None:
            return LedgerUnreachable(
                f"cannot append to ledger {where}: the session that held the lease of "
                f"{lease.stream_id} (server pid {lease.session[0]}) is gone, its connection lost; "
                "nothing was appended: take the lease again"
            )
        return LedgerError(
            f"cannot append to ledger {where}: titan_append() refused it as {refusal!r:.200}, "
            "which this titan cannot read: upgrade titan"
        )

    async def _without_conflicts(
        self, pending: list[PendingAppend], error: asyncpg.UniqueViolationError
    ) -> list[PendingAppend]:
        """A primary-key conflict the version check missed (a record inserted without the table
        lock): fail the appends it concerns with VersionConflict, return the others."""
        kept: list[PendingAppend] = []
        unexplained: LedgerError | None = None
        for append in pending:
            conflict = await self._ledger._conflict(append.records, error)
            if isinstance(conflict, VersionConflict):
                if not append.future.done():
                    append.future.set_exception(conflict)
            else:
                kept.append(append)
                unexplained = conflict
        if len(kept) == len(pending) and unexplained is not None:
            raise unexplained
        return kept

    async def _connect(self) -> asyncpg.Connection[asyncpg.Record]:
        connection = self._connection
        if connection is None or connection.is_closed():
            self._connection = None
            self._head = None
            connection = await connect(
                self._ledger.url,
                timeout_s=self._ledger.connect_timeout_s,
                application_name="titan-ledger-committer",
            )
            self._connection = connection
        return connection

    async def _read_head(
        self, connection: asyncpg.Connection[asyncpg.Record]
    ) -> tuple[int, str, int]:
        try:
            row = await connection.fetchrow(_READ_ANCHOR)
        except Exception as error:
            if is_unreachable(error, connection):
                self._drop_connection()
            raise self._ledger._error("read", error, connection) from error
        if row is None:
            raise LedgerError("the ledger's anchor row (titan_chain_head id 1) is missing")
        return int(row[0]), str(row[1]), int(row[2])

    def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        self._head = None
        if connection is not None:
            connection.terminate()


_REFUSALS: Final = frozenset({"version", "held_elsewhere", "lease_lost", "session_gone"})


def _parse_refusals(raw: Any, entries: int) -> list[tuple[int, dict[str, Any]]]:
    """titan_append()'s refusals (jsonb), each with the index of the append it concerns."""
    try:
        refusals = parse(raw) if isinstance(raw, (str, bytes)) else None
    except ValueError:
        refusals = None
    found: list[tuple[int, dict[str, Any]]] = []
    for refusal in refusals if isinstance(refusals, list) else ():
        entry = refusal.get("entry") if isinstance(refusal, dict) else None
        if (
            not isinstance(entry, int)
            or not 0 <= entry < entries
            or refusal.get("refusal") not in _REFUSALS
        ):
            break
        found.append((entry, refusal))
    else:
        if found:
            return found
    raise LedgerError(
        f"titan_append() refused appends with {str(raw)[:200]!r}, which this titan cannot read"
    )


