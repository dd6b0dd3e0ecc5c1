"""The rebuild's bulk writes, on each store: the batch size never changes a read model, and every
column type is converted once per column and batch exactly as a row at a time would be (the same
canonical rows, the same refusals)."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.sqlite.ledger import SQLiteLedger
from projections import registry
from projections.model import Column, Patch, Projection, Put, Table
from projections.runner import REBUILD_BATCH, Runner, rebuild_many
from projections.store import ReadModelStore
from tests.integration.projections.conftest import OpenStore
from tests.projections_support import run

pytestmark = pytest.mark.integration

TYPES = Table(
    "rm_test_bulk_types",
    (
        Column("key", "text"),
        Column("word", "text", nullable=True),
        Column("count", "integer", nullable=True),
        Column("money", "big_integer", nullable=True),
        Column("flag", "boolean", nullable=True),
        Column("amount", "decimal", nullable=True),
        Column("detail", "json", nullable=True),
    ),
    ("key",),
)
TYPED = Projection("test_bulk_types", (TYPES,), lambda records: [])


async def _digests(store: ReadModelStore) -> dict[str, tuple[str, int]]:
    snapshots = [await store.snapshot(projection) for projection in registry.PROJECTIONS]
    return {snapshot.projection: (snapshot.digest, snapshot.rows) for snapshot in snapshots}


def test_a_rebuild_gives_the_same_read_models_whatever_its_batch_size(demo_ledger: SQLiteLedger, open_store: OpenStore) -> None:
    async def scenario() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        store = await open_store()
        try:
            await Runner(demo_ledger, store, registry.PROJECTIONS, batch_size=29).catch_up()
            results: dict[str, Any] = {"live": await _digests(store)}
            for size in (7, REBUILD_BATCH, 10**6):
                done = await rebuild_many(demo_ledger, store, registry.PROJECTIONS, batch_size=size)
                assert {item.records for item in done} == {demo_ledger.head()[2]}
                results[str(size)] = await _digests(store)
            return results, await store.rows(registry.select(["orders"])[0].tables[0])
        finally:
            await store.close()

    results, orders = run(scenario())
    live = results.pop("live")
    assert all(rebuilt == live for rebuilt in results.values()), results
    assert orders and live["orders"][1] == len(orders)


ROWS: list[dict[str, Any]] = [
    {"key": "a", "word": "nul\x00inside", "count": 2**63 - 1, "money": 10**30, "flag": True, "amount": "-0.000", "detail": {"k\x00": ["v\x00", 1, None]}},
    {"key": "b", "word": 7, "count": -(2**63), "money": "-123456789012345678901234567890", "flag": 0, "amount": "1E+3", "detail": [1, "x"]},
    {"key": "c", "word": None, "count": None, "money": None, "flag": None, "amount": None, "detail": None},
]

CANONICAL: list[dict[str, Any]] = [
    {"key": "a", "word": "nul\ufffdinside", "count": 2**63 - 1, "money": 10**30 + 5, "flag": True, "amount": "0.000", "detail": {"k\ufffd": ["v\ufffd", 1, None]}},
    {"key": "b", "word": "7", "count": -(2**63), "money": -123456789012345678901234567890, "flag": False, "amount": "1000", "detail": [1, "x"]},
    {"key": "c", "word": None, "count": None, "money": None, "flag": None, "amount": None, "detail": None},
]


def test_every_column_type_is_written_in_bulk_as_its_canonical_value(open_store: OpenStore) -> None:
    async def scenario() -> list[dict[str, Any]]:
        store = await open_store()
        try:
            await store.begin_staging(TYPED)
            await store.apply_staging(TYPED, [Put(TYPES.name, row) for row in ROWS])
            await store.apply_staging(TYPED, [Patch(TYPES.name, ("a",), add={"money": 5})])
            rows = await store.rows(TYPES, staging=True)
            await store.drop_staging(TYPED)
            return rows
        finally:
            await store.close()

    assert run(scenario()) == CANONICAL


@pytest.mark.parametrize(
    ("value", "message"),
    [(True, "True is not an integer"), ("5", "'5' is not an integer"), (1.0, "1.0 is not an integer"), (2**63, "does not fit a 64-bit integer column")],
)
def test_a_value_an_integer_column_cannot_take_is_refused_and_nothing_of_the_batch_is_written(
    open_store: OpenStore, value: Any, message: str
) -> None:
    async def scenario() -> list[dict[str, Any]]:
        store = await open_store()
        try:
            await store.begin_staging(TYPED)
            with pytest.raises(ValueError, match=message):
                await store.apply_staging(TYPED, [Put(TYPES.name, {"key": "ok", "count": 1}), Put(TYPES.name, {"key": "bad", "count": value})])
            rows = await store.rows(TYPES, staging=True)
            await store.drop_staging(TYPED)
            return rows
        finally:
            await store.close()

    assert run(scenario()) == []
