"""The runner on real ledgers and stores: catch-up, exactly once across kills, rebuild and digest,
following live (polling on SQLite, LISTEN/NOTIFY on PostgreSQL)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from adapters.sqlite.ledger import SQLiteLedger
from commands.ports import Ledger
from commands.views import state_view
from infra.bootstrap import open_ledger
from infra.read_models import READ_SIDE as read_side
from projections import registry
from projections.runner import Runner, rebuild, status
from projections.store import Batch, ReadModelStore, SchemaMismatch
from schemas import commands as wire
from tests.projections_support import interpreted_bus, run, run_demo

pytestmark = pytest.mark.integration

OpenStore = Callable[[], Awaitable[ReadModelStore]]
ALL = registry.PROJECTIONS
POSITION_FIELDS = ("venue", "symbol", "quantity", "avg_price", "cost", "realized_pnl", "fees", "mark_price")


class Killed(RuntimeError):
    """The runner's process dies here."""


class KillingStore(ReadModelStore):
    """A store that dies on its Nth apply: before it reaches the database (between batches), or
    after the transaction committed but before the runner hears of it."""

    def __init__(self, inner: ReadModelStore, *, die_on: int, after_commit: bool) -> None:
        self.inner = inner
        self.die_on = die_on
        self.after_commit = after_commit
        self.applies = 0

    async def apply(self, batches: Sequence[Batch]) -> None:
        self.applies += 1
        if self.applies == self.die_on and not self.after_commit:
            raise Killed(f"killed before apply {self.applies}")
        await self.inner.apply(batches)
        if self.applies == self.die_on:
            raise Killed(f"killed after apply {self.applies} committed")

    async def prepare(self, projections: Any) -> None:
        await self.inner.prepare(projections)

    async def tracked(self, projections: Any) -> dict[str, int]:
        return await self.inner.tracked(projections)

    async def begin_staging(self, projection: Any) -> None:
        await self.inner.begin_staging(projection)

    async def apply_staging(self, projection: Any, changes: Any) -> None:
        await self.inner.apply_staging(projection, changes)

    async def swap(self, projection: Any, position: int) -> None:
        await self.inner.swap(projection, position)

    async def drop_staging(self, projection: Any) -> None:
        await self.inner.drop_staging(projection)

    async def snapshot(self, projection: Any, *, staging: bool = False) -> Any:
        return await self.inner.snapshot(projection, staging=staging)

    async def rows(self, table: Any, where: Any = None, *, staging: bool = False) -> Any:
        return await self.inner.rows(table, where, staging=staging)

    async def latest(self, table: Any, order_by: str, limit: int, where: Any = None) -> Any:
        return await self.inner.latest(table, order_by, limit, where)

    async def wait_for_ledger(self, timeout_s: float) -> bool:
        return await self.inner.wait_for_ledger(timeout_s)

    async def close(self) -> None:
        await self.inner.close()


async def digests(store: ReadModelStore) -> dict[str, tuple[int, str, int]]:
    result = {}
    for projection in ALL:
        snapshot = await store.snapshot(projection)
        result[projection.name] = (snapshot.position, snapshot.digest, snapshot.rows)
    return result


async def rebuilt_digests(ledger: Ledger, store: ReadModelStore, until: int | None = None) -> dict[str, tuple[int, str, int]]:
    """Each projection rebuilt from 0 into staging (the live model untouched)."""
    result = {}
    for projection in ALL:
        done = await rebuild(ledger, store, projection, swap=False, until=until)
        result[projection.name] = (done.position, done.digest, done.rows)
    return result


def filled_records(ledger: Ledger) -> int:
    return sum(1 for record in ledger.iter_all() if record.type == "order.filled.v1")


def test_a_runner_catches_up_and_its_positions_are_titan_states(demo_ledger: SQLiteLedger, open_store: OpenStore) -> None:
    async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, int]]:
        store = await open_store()
        try:
            runner = Runner(demo_ledger, store, ALL, batch_size=100)
            tracked = await runner.catch_up()
            return await store.rows(ALL[0].tables[0]), await store.rows(registry.select(["orders"])[0].tables[0]), tracked
        finally:
            await store.close()

    positions, orders, tracked = run(scenario())

    bus = interpreted_bus(demo_ledger)
    view = state_view(bus.ctx.core, bus.state("main"))
    assert positions, "the demo leaves positions"
    assert [{k: row[k] for k in POSITION_FIELDS} for row in positions] == [{k: p[k] for k in POSITION_FIELDS} for p in view["positions"]]
    head = demo_ledger.head()[0]
    assert tracked == {name: head for name in registry.names()}
    order_events = [r for r in demo_ledger.iter_all() if r.type in ("order.accepted.v1", "order.rejected.v1")]
    assert len(orders) == len(order_events)
    assert sum(row["fill_count"] for row in orders) == filled_records(demo_ledger)
    open_ids = sorted(o["order_id"] for o in view["open_orders"])
    assert sorted(row["order_id"] for row in orders if row["closed_ts_ns"] is None and row["status"] != "REJECTED") == open_ids


def test_a_rebuilt_model_has_the_live_models_digest(demo_ledger: SQLiteLedger, open_store: OpenStore) -> None:
    async def scenario() -> tuple[dict[str, Any], dict[str, Any], list[Any]]:
        store = await open_store()
        try:
            await Runner(demo_ledger, store, ALL, batch_size=37).catch_up()
            live = await digests(store)
            for projection in ALL:
                await rebuild(demo_ledger, store, projection, batch_size=500)
            return live, await digests(store), await status(demo_ledger, store, ALL)
        finally:
            await store.close()

    live, rebuilt, report = run(scenario())
    assert rebuilt == live
    assert all(item.lag == 0 and item.digest == live[item.projection][1] for item in report)


@pytest.mark.parametrize("after_commit", [False, True], ids=["between-batches", "after-commit"])
@pytest.mark.parametrize("die_on", [1, 3, 8])
def test_a_killed_runner_restarts_where_it_was_and_applies_nothing_twice(
    demo_ledger: SQLiteLedger, open_store: OpenStore, die_on: int, after_commit: bool
) -> None:
    async def scenario() -> tuple[dict[str, Any], dict[str, Any], int]:
        dying = KillingStore(await open_store(), die_on=die_on, after_commit=after_commit)
        try:
            with pytest.raises(Killed):
                await Runner(demo_ledger, dying, ALL, batch_size=50).catch_up()
        finally:
            await dying.close()
        store = await open_store()  # a new process: nothing survives but the store
        try:
            restarted = Runner(demo_ledger, store, ALL, batch_size=50)
            await restarted.catch_up()
            fills = sum(row["fill_count"] for row in await store.rows(registry.select(["orders"])[0].tables[0]))
            return await digests(store), await rebuilt_digests(demo_ledger, store), fills
        finally:
            await store.close()

    live, clean, fills = run(scenario())
    head = demo_ledger.head()[0]
    assert {name: d[0] for name, d in live.items()} == {name: head for name in registry.names()}
    assert live == clean
    assert fills == filled_records(demo_ledger)


def test_two_runners_at_once_apply_each_batch_once(demo_ledger: SQLiteLedger, open_store: OpenStore) -> None:
    async def scenario() -> tuple[dict[str, Any], dict[str, Any], int]:
        first, second = await open_store(), await open_store()
        try:
            runners = [Runner(demo_ledger, first, ALL, batch_size=23), Runner(demo_ledger, second, ALL, batch_size=41)]
            await asyncio.gather(*(runner.catch_up() for runner in runners))
            return await digests(first), await rebuilt_digests(demo_ledger, first), sum(r.progress.retries for r in runners)
        finally:
            await first.close()
            await second.close()

    live, clean, _retries = run(scenario())
    assert live == clean


def test_a_rebuild_under_a_running_runner_is_picked_up(demo_ledger: SQLiteLedger, open_store: OpenStore) -> None:
    async def scenario() -> tuple[dict[str, Any], dict[str, Any], int]:
        store, rebuilder = await open_store(), await open_store()
        try:
            runner = Runner(demo_ledger, store, ALL, batch_size=40)

            def halfway(_records: int, position: int) -> None:
                if position > demo_ledger.head()[0] // 2:
                    runner.stop()

            runner.on_batch = halfway
            await runner.catch_up()
            for projection in ALL:  # another process rebuilds everything to the head meanwhile
                await rebuild(demo_ledger, rebuilder, projection)
            runner = Runner(demo_ledger, store, ALL, batch_size=40)
            await runner.catch_up()
            return await digests(store), await rebuilt_digests(demo_ledger, store), runner.progress.records
        finally:
            await store.close()
            await rebuilder.close()

    live, clean, records_after_rebuild = run(scenario())
    assert live == clean
    assert records_after_rebuild == 0  # the rebuild left every projection at the head


def later_commands(ledger: Ledger, n: int) -> list[wire.AnyCommand]:
    """Commands after the demo's last one (acks of unknown orders: refused, but recorded)."""
    last_ts = max(record.envelope["ts_ns"] for record in ledger.iter_all())
    return [
        wire.RecordOrderAck(command_id=f"late-{i}", account_id="main", ts_ns=last_ts + i + 1, actor="venue", order_id=f"ord-none-{i}", venue_order_id="v")
        for i in range(n)
    ]


async def follow_until(runner: Runner, ledger: Ledger, head: int, timeout_s: float) -> float:
    """Run `runner.follow()` until every projection reached `head`; return how long it took."""
    began = time.monotonic()
    task = asyncio.ensure_future(runner.follow())
    try:
        while True:
            tracked = await runner.store.tracked(runner.projections)
            if min(tracked.values()) >= head:
                return time.monotonic() - began
            if time.monotonic() - began > timeout_s:
                raise AssertionError(f"the follower did not reach {head} in {timeout_s} s: {tracked}")
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
    finally:
        runner.stop()
        await asyncio.wait_for(task, 10)  # stops cleanly


def test_a_follower_applies_new_records_as_they_are_appended(demo_ledger: SQLiteLedger, open_store: OpenStore) -> None:
    bus = interpreted_bus(demo_ledger)

    async def scenario() -> list[dict[str, Any]]:
        store = await open_store()
        store.poll_interval_s = 0.05
        try:
            runner = Runner(demo_ledger, store, ALL)
            await runner.catch_up()
            commands = later_commands(demo_ledger, 3)

            async def append_later() -> None:
                for command in commands:
                    await asyncio.sleep(0.05)
                    bus.handle(command)

            appending = asyncio.ensure_future(append_later())
            await asyncio.sleep(0.2)
            await appending
            await follow_until(runner, demo_ledger, demo_ledger.head()[0], 10)
            table = registry.select(["commands"])[0].tables[0]
            return [row for row in await store.rows(table) if row["command_id"].startswith("late-")]
        finally:
            await store.close()

    rows = run(scenario())
    assert [(row["command_id"], row["outcome"]) for row in rows] == [(f"late-{i}", "rejected") for i in range(3)]


def test_a_postgres_follower_wakes_on_notify_long_before_it_would_poll(demo_ledger: SQLiteLedger, migrated_pg_url: str) -> None:
    from infra.read_models import open_store

    bus = interpreted_bus(demo_ledger)

    async def scenario() -> float:
        store = await open_store(migrated_pg_url)
        store.poll_interval_s = 60  # the fallback would take a minute
        notifier = await asyncpg.connect(migrated_pg_url)
        try:
            runner = Runner(demo_ledger, store, ALL)
            await runner.catch_up()
            await store.wait_for_ledger(0)  # consume the wake-up of the LISTEN itself
            task = asyncio.ensure_future(runner.follow())
            await asyncio.sleep(0.2)  # the follower now waits for a notification
            for command in later_commands(demo_ledger, 2):
                bus.handle(command)
            began = time.monotonic()
            await notifier.execute(f"NOTIFY titan_ledger, '{demo_ledger.head()[0]}'")
            while min((await store.tracked(ALL)).values()) < demo_ledger.head()[0]:
                assert time.monotonic() - began < 10, "no wake-up on NOTIFY"
                await asyncio.sleep(0.01)
            runner.stop()
            await asyncio.wait_for(task, 10)
            return time.monotonic() - began
        finally:
            await notifier.close()
            await store.close()

    assert run(scenario()) < 10


def test_the_postgres_ledger_and_its_read_models_in_one_database(migrated_pg_url: str) -> None:
    """Production's layout: records and read models in one PostgreSQL database; the ledger's own
    NOTIFY on every append wakes the follower."""
    from infra.read_models import open_store

    ledger = open_ledger(migrated_pg_url)
    try:
        bus = interpreted_bus(ledger)
        run_demo(bus, 40)

        async def scenario() -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any], float]:
            store = await open_store(migrated_pg_url)
            store.poll_interval_s = 60
            try:
                runner = Runner(ledger, store, ALL, batch_size=64)
                await runner.catch_up()
                positions = await store.rows(ALL[0].tables[0])
                for command in later_commands(ledger, 2):
                    await asyncio.to_thread(bus.handle, command)
                took = await follow_until(runner, ledger, await asyncio.to_thread(lambda: ledger.head()[0]), 10)
                return positions, await digests(store), await rebuilt_digests(ledger, store), took
            finally:
                await store.close()

        positions, live, clean, took = run(scenario())
        view = state_view(bus.ctx.core, bus.state("main"))
        assert [{k: row[k] for k in POSITION_FIELDS} for row in positions] == [{k: p[k] for k in POSITION_FIELDS} for p in view["positions"]]
        assert live == clean
        assert took < 10
    finally:
        ledger.close()


def test_the_same_ledger_gives_the_same_digests_in_either_store(demo_ledger: SQLiteLedger, demo_ledger_file: Path, migrated_pg_url: str) -> None:
    from infra.read_models import open_store

    async def project(url: str) -> dict[str, Any]:
        store = await open_store(url)
        try:
            await Runner(demo_ledger, store, ALL).catch_up()
            return await digests(store)
        finally:
            await store.close()

    embedded = run(project("sqlite:///" + str(demo_ledger_file)))
    postgres = run(project(migrated_pg_url))
    assert embedded == postgres


def test_replay_verify_and_export_hooks(demo_ledger: SQLiteLedger, demo_ledger_file: Path) -> None:
    from infra.read_models import open_store

    async def catch_up() -> None:
        store = await open_store("sqlite:///" + str(demo_ledger_file))
        try:
            await Runner(demo_ledger, store, ALL).catch_up()
        finally:
            await store.close()

    run(catch_up())
    verified = read_side.verify_digests(demo_ledger)
    assert verified["ok"] is True, verified
    assert set(verified["models"]) == set(registry.names())
    assert all(model["live"] == model["rebuilt"] for model in verified["models"].values())

    exported = read_side.export_rows(demo_ledger)
    assert set(exported) == {
        "positions", "orders", "decisions", "commands", "dlq_purges",
        "truth", "truth_history", "breaker", "breaker_transitions", "budget", "venue_quality",
    }
    assert len(exported["commands"]) == sum(1 for r in demo_ledger.iter_all() if r.type == "command.recorded.v1")

    with sqlite3.connect(demo_ledger_file) as db:  # someone edits a read model behind titan's back
        db.execute("UPDATE rm_orders SET status = 'FILLED' WHERE status = 'REJECTED'")
    tampered = read_side.verify_digests(demo_ledger)
    assert tampered["ok"] is False
    assert "orders" in tampered["message"] and "positions" not in tampered["message"]


def test_an_embedded_table_that_no_longer_matches_its_declaration_is_rebuilt(demo_ledger: SQLiteLedger, demo_ledger_file: Path) -> None:
    from adapters.sqlite.read_models import SQLiteReadModelStore

    with sqlite3.connect(demo_ledger_file) as db:  # an older titan's rm_positions
        db.execute("CREATE TABLE rm_positions (account_id TEXT, quantity TEXT)")
        db.execute("CREATE TABLE IF NOT EXISTS rm_tracking (projection TEXT PRIMARY KEY, position INTEGER NOT NULL)")
        db.execute("INSERT INTO rm_tracking VALUES ('positions', 99)")

    async def scenario() -> tuple[list[str], dict[str, int], dict[str, int]]:
        store = SQLiteReadModelStore(str(demo_ledger_file))
        try:
            await store.prepare(ALL)
            before = await store.tracked(ALL)
            return store.reset, before, await Runner(demo_ledger, store, ALL).catch_up()
        finally:
            await store.close()

    reset, before, after = run(scenario())
    assert reset == ["positions"]
    assert before["positions"] == 0
    assert after["positions"] == demo_ledger.head()[0]


def test_a_postgres_table_that_differs_from_its_declaration_is_named(migrated_pg_url: str) -> None:
    from infra.read_models import open_store

    async def scenario() -> None:
        admin = await asyncpg.connect(migrated_pg_url)
        await admin.execute("ALTER TABLE rm_orders DROP COLUMN fill_count")
        await admin.close()
        store = await open_store(migrated_pg_url)
        try:
            with pytest.raises(SchemaMismatch, match=r"rm_orders.*fill_count.*titan db upgrade"):
                await store.prepare(ALL)
        finally:
            await store.close()

    run(scenario())
