"""What a projection is: its tables, a pure fold from ledger records to row changes, and those
changes (Put, Patch, Delete), plus the canonical form of rows that digests are computed over.

Nothing here does I/O. A store (`projections.store.ReadModelStore`) applies the changes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from commands.envelope import COMMAND_RECORDED
from commands.ports import Record

from .values import (
    COLUMN_TYPES,
    MAX_DECIMAL_EXPONENT,
    ColumnType,
    canonical_value,
    decimal_text,
    json_bytes,
    json_text,
)

__all__ = [
    "COLUMN_TYPES",
    "MAX_DECIMAL_EXPONENT",
    "ColumnType",
    "canonical_row",
    "canonical_value",
    "decimal_text",
    "json_text",
]

ADDABLE: Final[frozenset[ColumnType]] = frozenset({"integer", "big_integer"})
"""Column types a Patch may `add` to."""

Key = tuple[Any, ...]


class _NoDefault:
    def __repr__(self) -> str:
        return "NO_DEFAULT"


NO_DEFAULT: Final = _NoDefault()


@dataclass(frozen=True)
class Column:
    """One column: its name, type, whether it may be null and what a Put leaves out fills in."""

    name: str
    type: ColumnType
    nullable: bool = False
    default: Any = NO_DEFAULT
    doc: str = ""

    def fill(self) -> Any:
        """The value a Put that omits this column stores; raise KeyError if there is none."""
        if self.default is not NO_DEFAULT:
            return self.default
        if self.nullable:
            return None
        raise KeyError(self.name)


@dataclass(frozen=True)
class Table:
    """A read-model table: columns in storage order, the primary key, secondary indexes."""

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    indexes: tuple[tuple[str, ...], ...] = ()
    doc: str = ""
    by_name: dict[str, Column] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = {column.name: column for column in self.columns}
        if len(names) != len(self.columns):
            raise ValueError(f"table {self.name}: duplicate column names")
        for name in (*self.key, *(c for index in self.indexes for c in index)):
            if name not in names:
                raise ValueError(f"table {self.name}: key or index names unknown column {name!r}")
        if not self.name.startswith("rm_"):
            raise ValueError(f"table {self.name}: read-model tables are prefixed rm_")
        object.__setattr__(self, "by_name", names)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    def key_of(self, row: Mapping[str, Any]) -> Key:
        """The primary key of a row."""
        return tuple(row[name] for name in self.key)


@dataclass(frozen=True, slots=True)
class Put:
    """Insert the row, or replace the row with the same key. Omitted columns take their default."""

    table: str
    row: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Patch:
    """Change some columns of the row with this key, if it exists (else nothing): `set` assigns,
    then `add` adds to integer (or big_integer) columns."""

    table: str
    key: Key
    set: Mapping[str, Any] = field(default_factory=dict)
    add: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete the row with this key, if it exists."""

    table: str
    key: Key


Change = Put | Patch | Delete

Fold = Callable[[Sequence[Record]], list[Change]]
"""A projection's fold: the records one command appended (its events, then its command record)
to the row changes they cause. Pure: no I/O, no clock, no reads of the model."""

RecordFold = Callable[[Record], list[Change]]
"""A fold of one record, for projections whose rows depend on one record at a time."""


@dataclass(frozen=True)
class Projection:
    """A read model: its name, its tables and its fold."""

    name: str
    tables: tuple[Table, ...]
    fold: Fold
    doc: str = ""

    def table(self, name: str) -> Table:
        """The projection's table `name`."""
        for table in self.tables:
            if table.name == name:
                return table
        raise LookupError(f"projection {self.name} has no table {name!r}")


def each_record(fold_record: RecordFold) -> Fold:
    """Lift a fold of one record to a fold of one command's records."""

    def fold(records: Sequence[Record]) -> list[Change]:
        changes: list[Change] = []
        for record in records:
            changes.extend(fold_record(record))
        return changes

    fold.__doc__ = fold_record.__doc__
    fold.__name__ = getattr(fold_record, "__name__", "fold")
    return fold


# --- units: the records of one command ----------------------------------------------------------


def is_command_record(record: Record) -> bool:
    """Whether a record is a command record (`command.recorded.v1`), the last of its command."""
    return record.type == COMMAND_RECORDED


def split_units(records: Sequence[Record]) -> tuple[list[list[Record]], int]:
    """Split records (in position order) into the units of one command each; return the complete
    units and how many records they cover.

    A unit ends at its command record, or where the next record belongs to another command. The
    records after the last boundary are left out (their command record may not be read yet).
    """
    units: list[list[Record]] = []
    current: list[Record] = []
    current_command: Any = None
    covered = 0
    for index, record in enumerate(records):
        command_id = record.envelope.get("command_id")
        if current and command_id != current_command:
            units.append(current)
            covered = index
            current = []
        current.append(record)
        current_command = command_id
        if is_command_record(record):
            units.append(current)
            covered = index + 1
            current = []
            current_command = None
    return units, covered


def account_of(record: Record) -> str:
    """The account an event belongs to (its stream is `account-<account_id>`)."""
    return record.stream_id.removeprefix("account-")


# --- coalescing: the net change of a batch, one operation per row --------------------------------


class NetRow:
    """The net change to one row: "put" (the whole row), "patch" (set, then add) or "delete"."""

    __slots__ = ("add", "kind", "row")

    def __init__(self, kind: str, row: dict[str, Any], add: dict[str, int]) -> None:
        self.kind = kind
        self.row = row
        self.add = add


def net_changes(
    tables: Mapping[str, Table], changes: Iterable[Change]
) -> dict[str, dict[Key, NetRow]]:
    """Coalesce changes into one operation per (table, key), in effect equal to applying them in
    order; check every table and column exists and every Put is complete."""
    result: dict[str, dict[Key, NetRow]] = {}
    for change in changes:
        table = tables.get(change.table)
        if table is None:
            raise ValueError(f"change to unknown table {change.table!r} (known: {sorted(tables)})")
        rows = result.setdefault(table.name, {})
        if isinstance(change, Put):
            row = _full_row(table, change.row)
            rows[table.key_of(row)] = NetRow("put", row, {})
        elif isinstance(change, Patch):
            key = _check_key(table, change.key)
            _check_columns(table, change.set)
            _check_columns(table, change.add)
            for name in change.add:
                if table.by_name[name].type not in ADDABLE:
                    raise ValueError(f"{table.name}.{name}: `add` needs an integer column (integer or big_integer)")
                if name in table.key or name in change.set:
                    raise ValueError(f"{table.name}.{name}: cannot both set and add, or add to a key")
            for name in change.set:
                if name in table.key:
                    raise ValueError(f"{table.name}.{name}: a Patch cannot change the key")
            _patch(rows, key, change)
        else:
            rows[_check_key(table, change.key)] = NetRow("delete", {}, {})
    return result


def _patch(rows: dict[Key, NetRow], key: Key, change: Patch) -> None:
    previous = rows.get(key)
    if previous is None:
        rows[key] = NetRow("patch", dict(change.set), dict(change.add))
        return
    if previous.kind == "delete":
        return  # the row is gone: a patch of a missing row does nothing
    if previous.kind == "put":
        row = previous.row
        row.update(change.set)
        for name, delta in change.add.items():
            row[name] = (row[name] or 0) + delta
        return
    # patch after patch: later sets win; adds accumulate, onto a value set earlier if there is one
    row, add = previous.row, previous.add
    row.update(change.set)
    for name in change.set:
        add.pop(name, None)
    for name, delta in change.add.items():
        if name in row:
            row[name] = (row[name] or 0) + delta
        else:
            add[name] = add.get(name, 0) + delta


def _full_row(table: Table, given: Mapping[str, Any]) -> dict[str, Any]:
    _check_columns(table, given)
    row: dict[str, Any] = {}
    for column in table.columns:
        if column.name in given:
            row[column.name] = given[column.name]
            continue
        try:
            row[column.name] = column.fill()
        except KeyError:
            raise ValueError(f"Put to {table.name} lacks column {column.name!r}") from None
    for name in table.key:
        if row[name] is None:
            raise ValueError(f"Put to {table.name}: key column {name!r} is null")
    return row


def _check_columns(table: Table, values: Mapping[str, Any]) -> None:
    if values.keys() <= table.by_name.keys():
        return
    for name in values:
        if name not in table.by_name:
            raise ValueError(f"table {table.name} has no column {name!r}")


def _check_key(table: Table, key: Key) -> Key:
    if len(key) != len(table.key):
        raise ValueError(f"table {table.name}: key {key!r} does not match ({', '.join(table.key)})")
    return tuple(key)


# --- digests -------------------------------------------------------------------------------------


def canonical_row(table: Table, values: Sequence[Any]) -> dict[str, Any]:
    """A stored row (values in column order) as plain JSON."""
    return {
        column.name: canonical_value(column.type, value)
        for column, value in zip(table.columns, values, strict=True)
    }


class Digest:
    """SHA-256 over the canonical JSON of `{table: [row, ...], ...}`, tables by name and rows in
    primary-key order, streamed so a model never has to fit in memory.

    The bytes hashed equal `json.dumps(model, sort_keys=True, separators=(",", ":"),
    ensure_ascii=False)` of the whole model, so anyone can recompute a digest.
    """

    def __init__(self) -> None:
        self._sha = hashlib.sha256(b"{")
        self._tables = 0
        self._rows = 0
        self._open = False
        self.row_count = 0

    def table(self, name: str) -> None:
        """Start the next table (tables must come in name order)."""
        self._close_table()
        if self._tables:
            self._sha.update(b",")
        self._sha.update(orjson.dumps(name) + b":[")
        self._tables += 1
        self._rows = 0
        self._open = True

    def row(self, row: Mapping[str, Any]) -> None:
        """Add the next row of the current table (rows must come in key order)."""
        if self._rows:
            self._sha.update(b",")
        self._sha.update(json_bytes(row))
        self._rows += 1
        self.row_count += 1

    def hexdigest(self) -> str:
        """The digest of everything added."""
        self._close_table()
        final = self._sha.copy()
        final.update(b"}")
        return final.hexdigest()

    def _close_table(self) -> None:
        if self._open:
            self._sha.update(b"]")
            self._open = False


def digest_of(model: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    """The digest of a model given whole (tables → rows already in key order)."""
    digest = Digest()
    for name in sorted(model):
        digest.table(name)
        for row in model[name]:
            digest.row(row)
    return digest.hexdigest()
