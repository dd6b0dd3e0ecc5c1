"""The read-model store port's contract, proven on each store (SQLite file, PostgreSQL)."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from projections import decisions, orders, positions, registry
from projections.model import Change, Delete, Patch, Put
from projections.store import Batch, ReadModelStore, StoreError, TrackingMoved
from tests.projections_support import apply_sequentially, canonical_model, run

OpenStore = Callable[[], Awaitable[ReadModelStore]]

pytestmark = pytest.mark.integration

POSITIONS = positions.PROJECTION
ORDERS = orders.PROJECTION
DECISIONS = decisions.PROJECTION


def position_row(account: str, symbol: str, rng: random.Random) -> dict[str, Any]:
    return {
        "account_id": account,
        "venue": "paper",
        "symbol": symbol,
        "quantity": f"{rng.randint(-500, 500) / 1000:.3f}",
        "avg_price": f"{rng.randint(1, 10**9) / 10**4:.4f}",
        "cost": str(rng.randint(-10**6, 10**6)),
        "realized_pnl": f"-{rng.randint(0, 99)}.5",
        "fees": "0.00000000",
        "mark_price": rng.choice([None, "65000.0", "007.10"]),
        "last_fill_id": f"f-{rng.randint(0, 9)}",
        "last_fill_ts_ns": rng.randint(0, 2**62),
        "last_fill_position": rng.randint(1, 10**6),
    }


def random_changes(rng: random.Random, n: int) -> list[Change]:
    """Puts, patches (set and add) and deletes on a few keys, over a composite text key."""
    keys = [("main", "BTCUSDT"), ("main", "ETHUSDT"), ("b", "BTCUSDT"), ("é-ü", "SOLUSDT"), ("B", "BTCUSDT")]
    changes: list[Change] = []
    for _ in range(n):
        account, symbol = rng.choice(keys)
        roll = rng.random()
        if roll < 0.45:
            changes.append(Put("rm_positions", position_row(account, symbol, rng)))
        elif roll < 0.85:
            changes.append(
                Patch("rm_positions", (account, "paper", symbol), set={"mark_price": rng.choice(["1.5", None])}, add={"last_fill_position": rng.randint(-3, 3)})
            )
        else:
            changes.append(Delete("rm_positions", (account, "paper", symbol)))
    return changes


def expected_rows(changes: list[Change]) -> list[dict[str, Any]]:
    model: dict[str, Any] = {}
    apply_sequentially(POSITIONS.tables, changes, model)
    return canonical_model(POSITIONS.tables, model)["rm_positions"]


async def applied(store: ReadModelStore, changes: list[Change], size: int) -> None:
    """Apply changes in batches of `size`, tracking positions 1, 2, …"""
    position = (await store.tracked([POSITIONS]))["positions"]
    for start in range(0, len(changes), size):
        await store.apply([Batch(POSITIONS, changes[start : start + size], position, position + 1)])
        position += 1


def test_changes_leave_the_rows_the_reference_semantics_give(open_store: OpenStore) -> None:
    rng = random.Random(2026)
    changes = random_changes(rng, 400)

    async def scenario() -> list[dict[str, Any]]:
        store = await open_store()
        try:
            await store.prepare(registry.PROJECTIONS)
            await applied(store, changes, 37)
            assert (await store.tracked([POSITIONS]))["positions"] == -(-400 // 37)
            return await store.rows(POSITIONS.tables[0])
        finally:
            await store.close()

    assert run(scenario()) == expected_rows(changes)


def test_a_digest_depends_only_on_the_rows_not_on_the_store_or_the_batching(open_store: OpenStore, tmp_path) -> None:
    from adapters.sqlite.read_models import SQLiteReadModelStore

    changes = random_changes(random.Random(7), 300)

    async def digest(store: ReadModelStore, size: int) -> tuple[str, int]:
        try:
            await store.prepare([POSITIONS])
            await applied(store, changes, size)
            snapshot = await store.snapshot(POSITIONS)
            return snapshot.digest, snapshot.rows
        finally:
            await store.close()

    async def scenario() -> tuple[tuple[str, int], tuple[str, int]]:
        return await digest(await open_store(), 300), await digest(SQLiteReadModelStore(str(tmp_path / "other.db")), 1)

    here, reference = run(scenario())
    assert here == reference
    assert here[1] == len(expected_rows(changes))


def test_a_batch_that_fails_applies_nothing_of_any_batch(open_store: OpenStore) -> None:
    good = Put("rm_orders", {"order_id": "ord-1", "account_id": "main", "command_id": "1", "client_order_id": "c1",
                             "venue": "paper", "symbol": "BTCUSDT", "side": "BUY", "order_type": "LIMIT",
                             "quantity": "1", "price": "1", "reference_price": "1", "reduce_only": False,
                             "status": "ACCEPTED", "filled_quantity": "0", "created_ts_ns": 1, "updated_ts_ns": 1,
                             "created_position": 1, "updated_position": 1})
    bad = Put("rm_orders", {**good.row, "order_id": "ord-2", "quantity": "not a number"})

    async def scenario() -> tuple[list[Any], dict[str, int]]:
        store = await open_store()
        try:
            await store.prepare(registry.PROJECTIONS)
            with pytest.raises((ValueError, StoreError)):
                await store.apply([Batch(POSITIONS, [], 0, 5), Batch(ORDERS, [good, bad], 0, 5)])
            return await store.rows(ORDERS.tables[0]), await store.tracked([POSITIONS, ORDERS])
        finally:
            await store.close()

    rows, tracked = run(scenario())
    assert rows == []
    assert tracked == {"positions": 0, "orders": 0}


def test_a_batch_that_does_not_start_at_the_tracked_position_is_refused(open_store: OpenStore) -> None:
    changes = random_changes(random.Random(1), 5)

    async def scenario() -> None:
        store = await open_store()
        try:
            await store.prepare([POSITIONS, ORDERS])
            await store.apply([Batch(POSITIONS, changes, 0, 10)])
            with pytest.raises(TrackingMoved) as moved:
                await store.apply([Batch(ORDERS, [], 0, 10), Batch(POSITIONS, changes, 0, 10)])
            assert (moved.value.projection, moved.value.expected, moved.value.found) == ("positions", 0, 10)
            assert await store.tracked([POSITIONS, ORDERS]) == {"positions": 10, "orders": 0}
        finally:
            await store.close()

    run(scenario())


def test_a_swap_replaces_rows_and_position_at_once_and_staging_is_private(open_store: OpenStore) -> None:
    live = random_changes(random.Random(3), 50)
    rebuilt = random_changes(random.Random(4), 80)

    async def scenario() -> None:
        store = await open_store()
        try:
            await store.prepare([POSITIONS])
            await applied(store, live, 10)
            before = await store.snapshot(POSITIONS)
            await store.begin_staging(POSITIONS)
            await store.apply_staging(POSITIONS, rebuilt)
            staged = await store.snapshot(POSITIONS, staging=True)
            assert await store.snapshot(POSITIONS) == before  # readers still see the live model
            await store.swap(POSITIONS, 1234)
            after = await store.snapshot(POSITIONS)
            assert (after.position, after.digest, after.rows) == (1234, staged.digest, staged.rows)
            assert await store.rows(POSITIONS.tables[0]) == expected_rows(rebuilt)
            await store.begin_staging(POSITIONS)  # a leftover staging copy is replaced
            await store.begin_staging(POSITIONS)
            await store.drop_staging(POSITIONS)
        finally:
            await store.close()

    run(scenario())


def test_json_columns_and_where_filters_round_trip(open_store: OpenStore) -> None:
    row = {
        "order_id": "ord-x", "command_id": "x", "account_id": "main", "command_type": "place_order.v1",
        "outcome": "rejected", "reason": "PRICE_COLLAR", "actor": "a", "phase_id": 2, "intent_id": "i",
        "correlation_id": None, "causation_id": None, "policy_hash": "ab" * 32, "ts_ns": 2**62,
        "venue": "paper", "symbol": "BTCUSDT", "side": "SELL",
        "checks": [{"check": "price_collar", "value": "151", "limit": "150", "verdict": "fail", "note": "☃"}],
        "event_position": 7, "event_positions": [6, 7], "event_types": ["budget.day_rolled.v1", "order.rejected.v1"],
        "command_position": 8,
    }

    async def scenario() -> tuple[list[Any], list[Any]]:
        store = await open_store()
        try:
            await store.prepare([DECISIONS])
            other = {**row, "order_id": "ord-y", "command_id": "y"}
            await store.apply([Batch(DECISIONS, [Put("rm_decisions", row), Put("rm_decisions", other)], 0, 8)])
            table = DECISIONS.tables[0]
            return await store.rows(table, {"command_id": "x"}), await store.rows(table)
        finally:
            await store.close()

    found, everything = run(scenario())
    assert found == [row]
    assert [r["order_id"] for r in everything] == ["ord-x", "ord-y"]


def test_prepare_is_idempotent_and_creates_tracking_rows(open_store: OpenStore) -> None:
    async def scenario() -> dict[str, int]:
        store = await open_store()
        try:
            await store.prepare(registry.PROJECTIONS)
            await store.prepare(registry.PROJECTIONS)
            return await store.tracked(registry.PROJECTIONS)
        finally:
            await store.close()

    assert run(scenario()) == {name: 0 for name in registry.names()}


def test_latest_gives_the_highest_rows_first_and_refuses_other_orderings(open_store: OpenStore) -> None:
    table = DECISIONS.tables[0]

    def decision(n: int, account: str) -> dict[str, Any]:
        return {
            "order_id": f"ord-{n}", "command_id": str(n), "account_id": account, "command_type": "place_order.v1",
            "outcome": "accepted", "reason": None, "actor": "a", "phase_id": 1, "intent_id": None,
            "correlation_id": None, "causation_id": None, "policy_hash": None, "ts_ns": n, "venue": "paper",
            "symbol": "BTCUSDT", "side": "BUY", "checks": [], "event_position": 1000 - n, "event_positions": [],
            "event_types": [], "command_position": None,
        }

    async def scenario() -> tuple[list[Any], list[Any], list[str]]:
        store = await open_store()
        try:
            await store.prepare([DECISIONS])
            rows = [Put("rm_decisions", decision(n, "a" if n % 2 else "b")) for n in range(1, 21)]
            await store.apply([Batch(DECISIONS, rows, 0, 20)])
            top = await store.latest(table, "event_position", 3)
            mine = await store.latest(table, "ts_ns", 2, {"account_id": "b"})
            refused = []
            for order_by, limit in (("order_id", 3), ("event_position; DROP TABLE rm_decisions", 3), ("ts_ns", 0)):
                try:
                    await store.latest(table, order_by, limit)
                except ValueError as error:
                    refused.append(str(error))
            return top, mine, refused
        finally:
            await store.close()

    top, mine, refused = run(scenario())
    assert [r["event_position"] for r in top] == [999, 998, 997]
    assert [r["ts_ns"] for r in mine] == [20, 18]
    assert len(refused) == 3
