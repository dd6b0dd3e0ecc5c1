"""Read models in the embedded SQLite file: `rm_*` tables beside the ledger's, on their own
connection.

The ledger and the read models share SQLite's one write lock: every transaction here is one
short batch, so a ledger append waits at most a few milliseconds for it. Read models are derived
data, so this connection commits with `synchronous=NORMAL` (in WAL mode a crash may lose the last
batches, never part of one; the runner applies them again from the tracked position).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Final

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
    parse_int,
    storable_json_text,
    storable_text,
)

MEMORY: Final = ":memory:"

_SQL_TYPES: Final[dict[ColumnType, str]] = {
    "text": "TEXT",
    "integer": "INTEGER",
    "big_integer": "TEXT",
    "boolean": "INTEGER",
    "decimal": "TEXT",
    "json": "TEXT",
}

_TRACKING_DDL: Final = (
    f"CREATE TABLE IF NOT EXISTS {TRACKING_TABLE} "
    "(projection TEXT PRIMARY KEY, position INTEGER NOT NULL)"
)

_DATA_VERSION_POLL_S: Final = 0.02


def table_ddl(table: Table, name: str | None = None, *, temp: bool = False) -> str:
    """CREATE TABLE for a read-model table (or its staging copy)."""
    columns = [
        f"{column.name} {_SQL_TYPES[column.type]}{'' if column.nullable else ' NOT NULL'}"
        for column in table.columns
    ]
    columns.append(f"PRIMARY KEY ({', '.join(table.key)})")
    kind = "TEMP TABLE" if temp else "TABLE IF NOT EXISTS"
    return f"CREATE {kind} {name or table.name} ({', '.join(columns)})"


def index_ddl(table: Table) -> list[str]:
    """CREATE INDEX for each of a table's secondary indexes."""
    return [
        f"CREATE INDEX IF NOT EXISTS {table.name}__{'_'.join(index)} "
        f"ON {table.name} ({', '.join(index)})"
        for index in table.indexes
    ]


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
    # decimal digits in a TEXT column: exact at any size (an INTEGER column would turn a value
    # beyond 64 bits into a REAL)
    return None if value is None else int_text(parse_int(value))


def _boolean_to_sql(value: Any) -> Any:
    return None if value is None else (1 if value else 0)


def _decimal_to_sql(value: Any) -> Any:
    return None if value is None else decimal_text(value)


def _json_to_sql(value: Any) -> Any:
    return None if value is None else storable_json_text(value)


_CONVERTERS: Final[dict[ColumnType, Callable[[Any], Any]]] = {
    "text": _text_to_sql,
    "integer": _integer_to_sql,
    "big_integer": _big_integer_to_sql,
    "boolean": _boolean_to_sql,
    "decimal": _decimal_to_sql,
    "json": _json_to_sql,
}
"""Each column type's conversion to what SQLite stores, looked up once per table and batch (not
once per value): a rebuild converts millions of values."""


def _to_sql(type_: ColumnType, value: Any) -> Any:
    return _CONVERTERS[type_](value)


class SQLiteReadModelStore(ReadModelStore):
    """Read models in a SQLite file (the ledger's, on the embedded default) or in memory."""

    def __init__(self, path: str, *, busy_timeout_s: float = 5.0, poll_interval_s: float = 0.2) -> None:
        self.path = path
        self.poll_interval_s = poll_interval_s
        self.reset: list[str] = []
        """Projections whose tables were recreated by `prepare` because their declaration changed."""
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.execute(_TRACKING_DDL)
        except sqlite3.Error as error:
            raise StoreError(f"cannot open read models in {path}: {error}") from error
        self._data_version = self._read_data_version()

    # --- schema ---------------------------------------------------------------------------------

    async def prepare(self, projections: Sequence[Projection]) -> None:
        """Make sure the projections' tables and tracking rows exist and match their declaration."""
        with self._transaction():
            for projection in projections:
                if not all(self._matches(table) for table in projection.tables):
                    for table in projection.tables:
                        self._db.execute(f"DROP TABLE IF EXISTS {table.name}")
                    self._db.execute(f"DELETE FROM {TRACKING_TABLE} WHERE projection = ?", (projection.name,))
                    self.reset.append(projection.name)
                for table in projection.tables:
                    self._db.execute(table_ddl(table))
                    for statement in index_ddl(table):
                        self._db.execute(statement)
                self._db.execute(
                    f"INSERT OR IGNORE INTO {TRACKING_TABLE} (projection, position) VALUES (?, 0)",
                    (projection.name,),
                )

    def _matches(self, table: Table) -> bool:
        """True if the table is absent or has exactly the declared columns and key."""
        info = self._db.execute(f"PRAGMA table_info({table.name})").fetchall()
        if not info:
            return True
        found = [(row[1], row[2].upper(), bool(row[3]), row[5]) for row in info]
        expected = [
            (
                column.name,
                _SQL_TYPES[column.type],
                not column.nullable,
                table.key.index(column.name) + 1 if column.name in table.key else 0,
            )
            for column in table.columns
        ]
        # SQLite reports primary-key columns as nullable unless declared NOT NULL; ours all are.
        return found == expected

    # --- tracking and batches -------------------------------------------------------------------

    async def tracked(self, projections: Sequence[Projection]) -> dict[str, int]:
        """Return each projection's tracked position (0: nothing applied)."""
        with self._errors("read"):
            rows = dict(self._db.execute(f"SELECT projection, position FROM {TRACKING_TABLE}").fetchall())
        return {projection.name: int(rows.get(projection.name, 0)) for projection in projections}

    async def apply(self, batches: Sequence[Batch]) -> None:
        """Apply every batch and move its tracked position, in one transaction."""
        if not batches:
            return
        with self._transaction():
            for batch in batches:
                name = batch.projection.name
                row = self._db.execute(
                    f"SELECT position FROM {TRACKING_TABLE} WHERE projection = ?", (name,)
                ).fetchone()
                found = None if row is None else int(row[0])
                if found != batch.after:
                    raise TrackingMoved(name, batch.after, found)
                self._write(batch.projection, batch.changes, staging=False)
                self._db.execute(
                    f"UPDATE {TRACKING_TABLE} SET position = ? WHERE projection = ?", (batch.to, name)
                )

    def _write(self, projection: Projection, changes: Sequence[Any], *, staging: bool) -> None:
        tables = {table.name: table for table in projection.tables}
        for table_name, rows in net_changes(tables, changes).items():
            table = tables[table_name]
            target = f"temp.{staging_name(table)}" if staging else table.name
            self._write_table(table, target, rows)

    def _write_table(self, table: Table, target: str, rows: dict[Key, NetRow]) -> None:
        types = {column.name: column.type for column in table.columns}
        key_where = " AND ".join(f"{name} = ?" for name in table.key)

        def key_params(key: Key) -> list[Any]:
            return [_to_sql(types[name], value) for name, value in zip(table.key, key, strict=True)]

        deletes = [key_params(key) for key, net in rows.items() if net.kind == "delete"]
        if deletes:
            self._db.executemany(f"DELETE FROM {target} WHERE {key_where}", deletes)
        columns = [(column.name, _CONVERTERS[column.type]) for column in table.columns]
        puts = [[convert(net.row[name]) for name, convert in columns] for net in rows.values() if net.kind == "put"]
        if puts:
            marks = ", ".join("?" for _ in table.columns)
            self._db.executemany(
                f"INSERT OR REPLACE INTO {target} ({', '.join(table.column_names)}) VALUES ({marks})", puts
            )
        patches: dict[tuple[tuple[str, ...], tuple[str, ...]], list[list[Any]]] = {}
        for key, net in rows.items():
            if net.kind != "patch":
                continue
            if any(types[name] == "big_integer" for name in net.add):
                net = self._added_here(table, target, key, net)
            shape = (tuple(net.row), tuple(net.add))
            params = [_to_sql(types[name], net.row[name]) for name in shape[0]]
            params.extend(net.add[name] for name in shape[1])
            patches.setdefault(shape, []).append(params + key_params(key))
        for (set_names, add_names), params_list in patches.items():
            assignments = [f"{name} = ?" for name in set_names]
            assignments += [f"{name} = COALESCE({name}, 0) + ?" for name in add_names]
            if not assignments:
                continue
            self._db.executemany(f"UPDATE {target} SET {', '.join(assignments)} WHERE {key_where}", params_list)

    def _added_here(self, table: Table, target: str, key: Key, net: NetRow) -> NetRow:
        """A patch whose adds are done here, exactly, and set: SQLite's own arithmetic on a
        big_integer's TEXT digits would go through a 64-bit integer or a REAL."""
        names = list(net.add)
        key_where = " AND ".join(f"{name} = ?" for name in table.key)
        params = [_to_sql(table.by_name[name].type, value) for name, value in zip(table.key, key, strict=True)]
        found = self._db.execute(f"SELECT {', '.join(names)} FROM {target} WHERE {key_where}", params).fetchone()
        if found is None:
            return NetRow("patch", {}, {})  # the row does not exist: a patch of it does nothing
        row = dict(net.row)
        for name, current in zip(names, found, strict=True):
            row[name] = (0 if current is None else parse_int(current)) + net.add[name]
        return NetRow("patch", row, {})

    # --- rebuild --------------------------------------------------------------------------------

    async def begin_staging(self, projection: Projection) -> None:
        """Create the projection's empty staging tables (dropping any left by an earlier try)."""
        await self.drop_staging(projection)
        with self._errors("create staging tables in"):
            for table in projection.tables:
                self._db.execute(table_ddl(table, staging_name(table), temp=True))

    async def apply_staging(self, projection: Projection, changes: Sequence[Any]) -> None:
        """Apply changes to the projection's staging tables."""
        with self._transaction():
            self._write(projection, changes, staging=True)

    async def swap(self, projection: Projection, position: int) -> None:
        """Replace the live rows and tracked position with the staging ones, in one transaction."""
        with self._transaction():
            for table in projection.tables:
                columns = ", ".join(table.column_names)
                self._db.execute(f"DELETE FROM {table.name}")
                self._db.execute(
                    f"INSERT INTO {table.name} ({columns}) SELECT {columns} FROM temp.{staging_name(table)}"
                )
            self._db.execute(
                f"INSERT OR REPLACE INTO {TRACKING_TABLE} (projection, position) VALUES (?, ?)",
                (projection.name, position),
            )
        await self.drop_staging(projection)

    async def drop_staging(self, projection: Projection) -> None:
        """Drop the projection's staging tables, if any."""
        with self._errors("drop staging tables in"):
            for table in projection.tables:
                self._db.execute(f"DROP TABLE IF EXISTS temp.{staging_name(table)}")

    # --- reading --------------------------------------------------------------------------------

    async def snapshot(self, projection: Projection, *, staging: bool = False) -> Snapshot:
        """Tracked position, row count and digest, read in one snapshot."""
        with self._transaction(immediate=False):
            position = -1
            if not staging:
                row = self._db.execute(
                    f"SELECT position FROM {TRACKING_TABLE} WHERE projection = ?", (projection.name,)
                ).fetchone()
                position = 0 if row is None else int(row[0])
            digest = Digest()
            for table in sorted(projection.tables, key=lambda t: t.name):
                source = f"temp.{staging_name(table)}" if staging else table.name
                digest.table(table.name)
                for values in self._select(table, source, None):
                    digest.row(canonical_row(table, values))
        return Snapshot(projection.name, position, digest.row_count, digest.hexdigest())

    async def rows(
        self, table: Table, where: Mapping[str, Any] | None = None, *, staging: bool = False
    ) -> list[dict[str, Any]]:
        """A table's rows (matching `where`) as canonical values, in key order."""
        source = f"temp.{staging_name(table)}" if staging else table.name
        with self._errors("read"):
            return [canonical_row(table, values) for values in self._select(table, source, where)]

    async def latest(
        self, table: Table, order_by: str, limit: int, where: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """At most `limit` rows matching `where`, highest `order_by` first."""
        check_latest(table, order_by, limit)
        with self._errors("read"):
            selected = self._select(table, table.name, where, order=f"{order_by} DESC", limit=limit)
            return [canonical_row(table, values) for values in selected]

    def _select(
        self, table: Table, source: str, where: Mapping[str, Any] | None, *, order: str | None = None, limit: int | None = None
    ) -> Iterator[Sequence[Any]]:
        params: list[Any] = []
        clause = ""
        if where:
            for name in where:
                if name not in table.by_name:
                    raise ValueError(f"table {table.name} has no column {name!r}")
            clause = " WHERE " + " AND ".join(f"{name} = ?" for name in where)
            params = [_to_sql(table.by_name[name].type, value) for name, value in where.items()]
        tail = f" LIMIT {int(limit)}" if limit is not None else ""
        cursor = self._db.execute(
            f"SELECT {', '.join(table.column_names)} FROM {source}{clause} ORDER BY {order or ', '.join(table.key)}{tail}",
            params,
        )
        while True:
            chunk = cursor.fetchmany(1000)
            if not chunk:
                return
            yield from chunk

    # --- following ------------------------------------------------------------------------------

    async def wait_for_ledger(self, timeout_s: float) -> bool:
        """Wait until another connection commits to the file (the ledger appended) or the timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            version = self._read_data_version()
            if version != self._data_version:
                self._data_version = version
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await asyncio.sleep(min(_DATA_VERSION_POLL_S, left))

    def _read_data_version(self) -> int:
        return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    async def close(self) -> None:
        """Release the connection."""
        self._db.close()

    # --- helpers --------------------------------------------------------------------------------

    @contextmanager
    def _transaction(self, *, immediate: bool = True) -> Iterator[None]:
        with self._errors("write" if immediate else "read"):
            self._db.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as error:
            raise StoreError(f"cannot {doing} read models in {self.path}: {error}") from error
