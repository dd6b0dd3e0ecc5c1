"""Read models in PostgreSQL, through asyncpg: `rm_*` tables in the ledger's database.

The tables are created by SQL migrations (`adapters/postgres/sql/migrations/0100_projections.sql` …,
applied by `titan db upgrade`); `prepare` only checks that they match what each projection
declares. The follower LISTENs on `titan_ledger` (the ledger NOTIFYs it on every append) and falls
back to polling when no notification comes or the listening connection is lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any, Final

import asyncpg

from adapters.redact import redact
from projections.model import (
    Digest,
    Key,
    NetRow,
    Projection,
    Table,
    canonical_row,
    net_changes,
)
from projections.store import (
    TRACKING_TABLE,
    Batch,
    ReadModelStore,
    SchemaMismatch,
    Snapshot,
    StoreError,
    TrackingMoved,
    check_latest,
    staging_name,
)
from projections.values import (
    ColumnType,
    decimal_text,
    fits_int64,
    int_text,
    json_loads,
    json_text,
    parse_int,
    storable_json,
    storable_json_text,
    storable_text,
)

CHANNEL: Final = "titan_ledger"
MIGRATIONS_HINT: Final = "run `titan db upgrade` (it applies adapters/postgres/sql/migrations/*.sql)"

SQL_TYPES: Final[dict[ColumnType, str]] = {
    "text": "text",
    "integer": "bigint",
    "big_integer": "numeric",
    "boolean": "boolean",
    "decimal": "numeric",
    "json": "jsonb",
}


def _text_to_sql(value: Any) -> Any:
    return None if value is None else storable_text(str(value))


def _integer_to_sql(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        problem = f"{value!r} is not an integer"
    elif not fits_int64(value):
        problem = f"{int_text(value)[:40]}… does not fit a 64-bit integer column (declare it big_integer)"
    else:
        return value
    raise ValueError(problem)


def _big_integer_to_sql(value: Any) -> Any:
    return None if value is None else Decimal(parse_int(value))


def _boolean_to_sql(value: Any) -> Any:
    return None if value is None else bool(value)


def _decimal_to_sql(value: Any) -> Any:
    return None if value is None else decimal_text(value)


def _json_to_sql(value: Any) -> Any:
    return None if value is None else storable_json(value)


def _json_to_array_item(value: Any) -> Any:
    # JSON travels as text[] (a list inside a jsonb[] would read as a 2-D array).
    return None if value is None else storable_json_text(value)


_CONVERTERS: Final[dict[ColumnType, Callable[[Any], Any]]] = {
    "text": _text_to_sql,
    "integer": _integer_to_sql,
    "big_integer": _big_integer_to_sql,
    "boolean": _boolean_to_sql,
    "decimal": _decimal_to_sql,
    "json": _json_to_sql,
}
"""Each column type's conversion to what asyncpg sends, looked up once per column and batch (not
once per value): a rebuild converts millions of values."""

_ARRAY_CONVERTERS: Final[dict[ColumnType, Callable[[Any], Any]]] = {**_CONVERTERS, "json": _json_to_array_item}
"""The same for the items of the unnest() arrays a batch is written through."""


def _to_sql(type_: ColumnType, value: Any) -> Any:
    return _CONVERTERS[type_](value)


_ARRAY_TYPES: Final[dict[ColumnType, str]] = {**SQL_TYPES, "json": "text"}


def _order_by(table: Table) -> str:
    # COLLATE "C": byte order, the same as SQLite's BINARY and Python's str order, so digests
    # do not depend on the database's locale.
    return ", ".join(
        f'{name} COLLATE "C"' if table.by_name[name].type == "text" else name for name in table.key
    )


def staging_ddl(table: Table) -> str:
    """CREATE TEMP TABLE for a table's staging copy (primary key only: fast to fill)."""
    columns = [
        f"{column.name} {SQL_TYPES[column.type]}{'' if column.nullable else ' NOT NULL'}"
        for column in table.columns
    ]
    columns.append(f"PRIMARY KEY ({', '.join(table.key)})")
    return f"CREATE TEMP TABLE {staging_name(table)} ({', '.join(columns)})"


async def _init_connection(connection: asyncpg.Connection) -> None:
    await connection.set_type_codec(
        "jsonb", encoder=json_text, decoder=json_loads, schema="pg_catalog", format="text"
    )


class PostgresReadModelStore(ReadModelStore):
    """Read models in a PostgreSQL database. Open with `await PostgresReadModelStore.connect(url)`."""

    def __init__(self, url: str, connection: asyncpg.Connection, *, poll_interval_s: float) -> None:
        self.url = url
        self.poll_interval_s = poll_interval_s
        self._db = connection
        self._lock = asyncio.Lock()
        self._listener: asyncpg.Connection | None = None
        self._notified = asyncio.Event()
        self._listen_wanted = False

    @classmethod
    async def connect(
        cls, url: str, *, poll_interval_s: float = 2.0, listen: bool = True
    ) -> PostgresReadModelStore:
        """Connect; with `listen`, also LISTEN on titan_ledger for appends."""
        try:
            connection = await asyncpg.connect(url)
            await _init_connection(connection)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            raise StoreError(f"cannot connect to read models at {redact(url)}: {error}") from error
        store = cls(url, connection, poll_interval_s=poll_interval_s)
        if listen:
            store._listen_wanted = True
            await store._listen()
        return store

    # --- schema ---------------------------------------------------------------------------------

    async def prepare(self, projections: Sequence[Projection]) -> None:
        """Check every table exists as declared; add missing tracking rows."""
        tables = [TRACKING_TABLE, *(t.name for p in projections for t in p.tables)]
        async with self._session() as db:
            rows = await db.fetch(
                "SELECT table_name, column_name, data_type, is_nullable "
                "FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = ANY($1::text[])",
                tables,
            )
            found: dict[str, set[tuple[str, str, bool]]] = {}
            for row in rows:
                found.setdefault(row["table_name"], set()).add(
                    (row["column_name"], row["data_type"], row["is_nullable"] == "YES")
                )
            if TRACKING_TABLE not in found:
                raise SchemaMismatch(f"table {TRACKING_TABLE} does not exist in {redact(self.url)}: {MIGRATIONS_HINT}")
            for projection in projections:
                for table in projection.tables:
                    self._check_table(table, found.get(table.name))
            await db.executemany(
                f"INSERT INTO {TRACKING_TABLE} (projection, position) VALUES ($1, 0) "
                "ON CONFLICT (projection) DO NOTHING",
                [(projection.name,) for projection in projections],
            )

    def _check_table(self, table: Table, found: set[tuple[str, str, bool]] | None) -> None:
        if found is None:
            raise SchemaMismatch(f"table {table.name} does not exist in {redact(self.url)}: {MIGRATIONS_HINT}")
        expected = {(c.name, SQL_TYPES[c.type], c.nullable) for c in table.columns}
        if found != expected:
            missing = sorted(expected - found)
            extra = sorted(found - expected)
            raise SchemaMismatch(
                f"table {table.name} differs from its declaration: missing {missing}, "
                f"unexpected {extra}: {MIGRATIONS_HINT}"
            )

    # --- tracking and batches -------------------------------------------------------------------

    async def tracked(self, projections: Sequence[Projection]) -> dict[str, int]:
        """Return each projection's tracked position (0: nothing applied)."""
        async with self._session() as db:
            rows = await db.fetch(f"SELECT projection, position FROM {TRACKING_TABLE}")
        found = {row["projection"]: int(row["position"]) for row in rows}
        return {projection.name: found.get(projection.name, 0) for projection in projections}

    async def apply(self, batches: Sequence[Batch]) -> None:
        """Apply every batch and move its tracked position, in one transaction."""
        if not batches:
            return
        async with self._session() as db, db.transaction():
            for batch in batches:
                name = batch.projection.name
                found = await db.fetchval(
                    f"SELECT position FROM {TRACKING_TABLE} WHERE projection = $1 FOR UPDATE", name
                )
                if found != batch.after:
                    raise TrackingMoved(name, batch.after, None if found is None else int(found))
                await self._write(db, batch.projection, batch.changes, staging=False)
                await db.execute(
                    f"UPDATE {TRACKING_TABLE} SET position = $1 WHERE projection = $2", batch.to, name
                )

    async def _write(
        self, db: asyncpg.Connection, projection: Projection, changes: Sequence[Any], *, staging: bool
    ) -> None:
        tables = {table.name: table for table in projection.tables}
        for table_name, rows in net_changes(tables, changes).items():
            table = tables[table_name]
            target = f"pg_temp.{staging_name(table)}" if staging else table.name
            await self._write_table(db, table, target, rows)

    async def _write_table(
        self, db: asyncpg.Connection, table: Table, target: str, rows: dict[Key, NetRow]
    ) -> None:
        """One statement per kind of change (and per patch shape), each over unnest()ed arrays:
        a batch of thousands of rows costs a few round trips, not thousands."""
        types = {column.name: column.type for column in table.columns}
        keys = list(table.key)

        def unnest(names: Sequence[str], alias: str) -> str:
            # JSON travels as text[] (a list inside a jsonb[] would read as a 2-D array).
            arrays = ", ".join(f"${i + 1}::{_ARRAY_TYPES[types[name]]}[]" for i, name in enumerate(names))
            return f"unnest({arrays}) AS {alias}({', '.join(names)})"

        def value(name: str) -> str:
            return f"v.{name}::jsonb" if types[name] == "json" else f"v.{name}"

        def columns_of(values: list[list[Any]], names: Sequence[str]) -> list[list[Any]]:
            columns = []
            for i, name in enumerate(names):
                convert = _ARRAY_CONVERTERS[types[name]]
                columns.append([convert(row[i]) for row in values])
            return columns

        match = " AND ".join(f"t.{name} = v.{name}" for name in keys)
        deletes = [list(key) for key, net in rows.items() if net.kind == "delete"]
        if deletes:
            await db.execute(f"DELETE FROM {target} AS t USING {unnest(keys, 'v')} WHERE {match}", *columns_of(deletes, keys))
        names = table.column_names
        puts = [[net.row[name] for name in names] for net in rows.values() if net.kind == "put"]
        if puts:
            updates = [f"{name} = EXCLUDED.{name}" for name in names if name not in table.key]
            conflict = f"DO UPDATE SET {', '.join(updates)}" if updates else "DO NOTHING"
            await db.execute(
                f"INSERT INTO {target} ({', '.join(names)}) "
                f"SELECT {', '.join(value(name) for name in names)} FROM {unnest(names, 'v')} "
                f"ON CONFLICT ({', '.join(keys)}) {conflict}",
                *columns_of(puts, names),
            )
        patches: dict[tuple[tuple[str, ...], tuple[str, ...]], list[list[Any]]] = {}
        for key, net in rows.items():
            if net.kind == "patch" and (net.row or net.add):
                shape = (tuple(net.row), tuple(net.add))
                values = [*key, *(net.row[name] for name in shape[0]), *(net.add[name] for name in shape[1])]
                patches.setdefault(shape, []).append(values)
        for (set_names, add_names), values_list in patches.items():
            names_here = [*keys, *set_names, *add_names]
            assignments = [f"{name} = {value(name)}" for name in set_names]
            assignments += [f"{name} = COALESCE(t.{name}, 0) + v.{name}" for name in add_names]
            await db.execute(
                f"UPDATE {target} AS t SET {', '.join(assignments)} FROM {unnest(names_here, 'v')} WHERE {match}",
                *columns_of(values_list, names_here),
            )

    # --- rebuild --------------------------------------------------------------------------------

    async def begin_staging(self, projection: Projection) -> None:
        """Create the projection's empty staging tables (session-local TEMP tables)."""
        await self.drop_staging(projection)
        async with self._session() as db:
            for table in projection.tables:
                await db.execute(staging_ddl(table))

    async def apply_staging(self, projection: Projection, changes: Sequence[Any]) -> None:
        """Apply changes to the projection's staging tables."""
        async with self._session() as db, db.transaction():
            await self._write(db, projection, changes, staging=True)

    async def swap(self, projection: Projection, position: int) -> None:
        """Replace the live rows and tracked position with the staging ones, in one transaction."""
        async with self._session() as db, db.transaction():
            # Lock the tracking row first: a runner applying a batch meanwhile waits, then finds
            # the position moved and re-reads it.
            await db.execute(
                f"INSERT INTO {TRACKING_TABLE} (projection, position) VALUES ($1, 0) "
                "ON CONFLICT (projection) DO NOTHING",
                projection.name,
            )
            await db.execute(
                f"SELECT position FROM {TRACKING_TABLE} WHERE projection = $1 FOR UPDATE", projection.name
            )
            for table in projection.tables:
                columns = ", ".join(table.column_names)
                await db.execute(f"DELETE FROM {table.name}")
                await db.execute(
                    f"INSERT INTO {table.name} ({columns}) SELECT {columns} FROM pg_temp.{staging_name(table)}"
                )
            await db.execute(
                f"UPDATE {TRACKING_TABLE} SET position = $1 WHERE projection = $2", position, projection.name
            )
        await self.drop_staging(projection)

    async def drop_staging(self, projection: Projection) -> None:
        """Drop the projection's staging tables, if any."""
        async with self._session() as db:
            for table in projection.tables:
                await db.execute(f"DROP TABLE IF EXISTS pg_temp.{staging_name(table)}")

    # --- reading --------------------------------------------------------------------------------

    async def snapshot(self, projection: Projection, *, staging: bool = False) -> Snapshot:
        """Tracked position, row count and digest, read in one repeatable-read snapshot."""
        async with self._session() as db, db.transaction(isolation="repeatable_read", readonly=True):
            position = -1
            if not staging:
                found = await db.fetchval(
                    f"SELECT position FROM {TRACKING_TABLE} WHERE projection = $1", projection.name
                )
                position = 0 if found is None else int(found)
            digest = Digest()
            for table in sorted(projection.tables, key=lambda t: t.name):
                source = f"pg_temp.{staging_name(table)}" if staging else table.name
                digest.table(table.name)
                query = f"SELECT {', '.join(table.column_names)} FROM {source} ORDER BY {_order_by(table)}"
                async for record in db.cursor(query, prefetch=2000):
                    digest.row(canonical_row(table, tuple(record.values())))
        return Snapshot(projection.name, position, digest.row_count, digest.hexdigest())

    async def rows(
        self, table: Table, where: Mapping[str, Any] | None = None, *, staging: bool = False
    ) -> list[dict[str, Any]]:
        """A table's rows (matching `where`) as canonical values, in key order."""
        params: list[Any] = []
        clause = ""
        if where:
            for name in where:
                if name not in table.by_name:
                    raise ValueError(f"table {table.name} has no column {name!r}")
            clause = " WHERE " + " AND ".join(f"{name} = ${i + 1}" for i, name in enumerate(where))
            params = [_to_sql(table.by_name[name].type, value) for name, value in where.items()]
        source = f"pg_temp.{staging_name(table)}" if staging else table.name
        query = f"SELECT {', '.join(table.column_names)} FROM {source}{clause} ORDER BY {_order_by(table)}"
        async with self._session() as db:
            records = await db.fetch(query, *params)
        return [canonical_row(table, tuple(record.values())) for record in records]

    async def latest(
        self, table: Table, order_by: str, limit: int, where: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """At most `limit` rows matching `where`, highest `order_by` first."""
        check_latest(table, order_by, limit)
        params: list[Any] = []
        clause = ""
        if where:
            for name in where:
                if name not in table.by_name:
                    raise ValueError(f"table {table.name} has no column {name!r}")
            clause = " WHERE " + " AND ".join(f"{name} = ${i + 1}" for i, name in enumerate(where))
            params = [_to_sql(table.by_name[name].type, value) for name, value in where.items()]
        query = (
            f"SELECT {', '.join(table.column_names)} FROM {table.name}{clause} "
            f"ORDER BY {order_by} DESC LIMIT {int(limit)}"
        )
        async with self._session() as db:
            records = await db.fetch(query, *params)
        return [canonical_row(table, tuple(record.values())) for record in records]

    # --- following ------------------------------------------------------------------------------

    async def wait_for_ledger(self, timeout_s: float) -> bool:
        """Wait for a NOTIFY on titan_ledger, or the timeout (the polling fallback)."""
        if self._listen_wanted and (self._listener is None or self._listener.is_closed()):
            await self._listen()
        if self._notified.is_set():
            self._notified.clear()
            return True
        try:
            await asyncio.wait_for(self._notified.wait(), timeout_s)
        except TimeoutError:
            return False
        self._notified.clear()
        return True

    async def _listen(self) -> None:
        """(Re)connect the listening connection; on failure, stay on polling."""
        if self._listener is not None and not self._listener.is_closed():
            return
        try:
            listener = await asyncpg.connect(self.url)
            await listener.add_listener(CHANNEL, self._on_notify)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            self._listener = None
            return
        self._listener = listener
        # Anything appended while nobody listened is found by the next look at the ledger.
        self._notified.set()

    def _on_notify(self, connection: Any, pid: int, channel: str, payload: object) -> None:
        self._notified.set()

    async def close(self) -> None:
        """Close both connections."""
        self._listen_wanted = False
        if self._listener is not None:
            await self._listener.close()
            self._listener = None
        await self._db.close()

    # --- helpers --------------------------------------------------------------------------------

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[asyncpg.Connection]:
        async with self._lock:
            try:
                yield self._db
            except (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError) as error:
                raise StoreError(f"lost the read-model database {redact(self.url)}: {error}") from error
            except asyncpg.PostgresError as error:
                if isinstance(error, asyncpg.UndefinedTableError):
                    raise SchemaMismatch(f"{error}: {MIGRATIONS_HINT}") from error
                raise StoreError(f"read models in {redact(self.url)}: {error}") from error
