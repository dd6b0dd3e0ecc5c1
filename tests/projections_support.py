"""Helpers shared by the read side's tests (tests/unit/projections, tests/integration/projections).

- the reference semantics of row changes: applied one at a time to plain dicts. Every store must
  give the same rows, and coalescing must not change the effect;
- `run(coroutine)`: tests are plain functions that drive asyncio themselves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any

from commands.handlers import Bus
from commands.ports import Ledger, Record
from infra import demo
from infra.bootstrap import bootstrap
from infra.settings import Settings
from projections.model import (
    Change,
    Delete,
    Patch,
    Projection,
    Put,
    Table,
    canonical_value,
    split_units,
)


def apply_sequentially(tables: Sequence[Table], changes: Iterable[Change], model: dict[str, dict[tuple[Any, ...], dict[str, Any]]]) -> None:
    """The reference semantics of row changes: one at a time, on dicts."""
    by_name = {table.name: table for table in tables}
    for change in changes:
        table = by_name[change.table]
        rows = model.setdefault(table.name, {})
        if isinstance(change, Put):
            row = {column.name: change.row[column.name] if column.name in change.row else column.fill() for column in table.columns}
            rows[table.key_of(row)] = row
        elif isinstance(change, Patch):
            existing = rows.get(tuple(change.key))
            if existing is None:
                continue
            existing.update(change.set)
            for name, delta in change.add.items():
                existing[name] = (existing[name] or 0) + delta
        elif isinstance(change, Delete):
            rows.pop(tuple(change.key), None)


def canonical_model(tables: Sequence[Table], model: dict[str, dict[tuple[Any, ...], dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Rows in key order, as canonical values (what a store's `rows()` returns)."""
    result: dict[str, list[dict[str, Any]]] = {}
    for table in tables:
        rows = model.get(table.name, {})
        result[table.name] = [
            {column.name: canonical_value(column.type, rows[key][column.name]) for column in table.columns}
            for key in sorted(rows)
        ]
    return result


def fold_rows(projection: Projection, records: Sequence[Record]) -> dict[str, list[dict[str, Any]]]:
    """Fold records command by command and apply the changes by the reference semantics."""
    units, covered = split_units(records)
    assert covered == len(records), "every command in a test ledger is complete"
    model: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {}
    for unit in units:
        apply_sequentially(projection.tables, projection.fold(unit), model)
    return canonical_model(projection.tables, model)


def run(coroutine: Awaitable[Any]) -> Any:
    """Run a coroutine to completion on a new event loop."""

    async def main() -> Any:
        return await coroutine

    return asyncio.run(main())


DEMO_SEED = 7


def interpreted_bus(ledger: Ledger) -> Bus:
    """The command bus over a ledger, with the interpreted core."""
    return bootstrap(Settings(core="interpreted"), ledger=ledger)


def run_demo(bus: Bus, orders: int, seed: int = DEMO_SEED) -> dict[str, Any]:
    """A seeded demo session through the bus (what `titan demo` does)."""
    return demo.run(bus, seed=seed, orders=orders, ledger_url="(test)", progress=False)
