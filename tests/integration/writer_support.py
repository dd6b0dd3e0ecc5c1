"""Commands, stores and fault injection shared by the writer's integration tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from adapters.sqlite.ledger import SQLiteLedger
from commands.envelope import COMMAND_RECORDED
from commands.handlers import HANDLERS, Bus, Context, Outcome
from commands.lease import LeaseStore, StreamLease
from commands.ports import NewRecord, Record
from infra.core import Core
from infra.submit import default_policy
from schemas import commands as wire
from schemas.policy import policy_hash

T0 = 1_767_225_600_000_000_000
STEP_NS = 150_000_000


def activation(account: str) -> wire.ActivatePolicy:
    return wire.ActivatePolicy(
        command_id=f"{account}-policy", account_id=account, ts_ns=T0, actor="test", policy=default_policy()
    )


def orders(account: str, count: int, start: int = 0, prefix: str = "c") -> list[wire.AnyCommand]:
    """`count` PlaceOrder commands for an account, in time order (ids `<account>-<prefix><n>`)."""
    digest = policy_hash(default_policy())
    flow: list[wire.AnyCommand] = []
    for n in range(start, start + count):
        cid = f"{account}-{prefix}{n:06d}"
        price = f"{65000 + n % 7}.0"
        flow.append(
            wire.PlaceOrder(
                command_id=cid, account_id=account, ts_ns=T0 + (n + 1) * STEP_NS, actor="test",
                policy_hash=digest, phase_id=1, intent_id=cid, client_order_id=cid, venue="paper",
                symbol="BTCUSDT", side="BUY" if n % 2 else "SELL", quantity="0.010", price=price,
                reference_price=price,
            )
        )
    return flow


def command_ids(records: Sequence[Record]) -> list[str]:
    return [r.envelope["command_id"] for r in records if r.type == COMMAND_RECORDED]


class WrappedLease:
    """A lease whose append can be watched or made to fail."""

    def __init__(self, inner: StreamLease, store: FaultyStore) -> None:
        self.inner = inner
        self.store = store

    @property
    def holder(self) -> str:
        return self.inner.holder

    async def append(self, records: Sequence[NewRecord]) -> list[Record]:
        self.store.appends += 1
        fault = self.store.faults.pop(self.store.appends, None)
        if fault is not None and fault[0] == "before":
            await fault[1](self.inner)
        sealed = await self.inner.append(records)
        if fault is not None and fault[0] == "after":
            await fault[1](self.inner)
        self.store.durable.update(command_ids(sealed))
        return sealed

    async def read_stream(self, stream_id: str, after_version: int = 0) -> list[Record]:
        return await self.inner.read_stream(stream_id, after_version)

    async def first_records(self, stream_ids: Sequence[str]) -> dict[str, Record]:
        return await self.inner.first_records(stream_ids)

    async def release(self) -> None:
        await self.inner.release()


Fault = tuple[str, Callable[[StreamLease], Any]]


class FaultyStore:
    """A lease store that records which command ids' appends have returned (were durable), and
    runs a fault before or after the n-th append."""

    def __init__(self, inner: LeaseStore) -> None:
        self.inner = inner
        self.appends = 0
        self.durable: set[str] = set()
        self.faults: dict[int, Fault] = {}
        self.leases: list[WrappedLease] = []

    async def acquire_lease(self, stream_id: str, holder: str) -> StreamLease:
        lease = WrappedLease(await self.inner.acquire_lease(stream_id, holder), self)
        self.leases.append(lease)
        return lease


def decision(outcome: Outcome) -> tuple[str, str, str | None, list[str]]:
    """What an answer says was decided: command id, outcome, reason and event types."""
    return (outcome.command_id, outcome.outcome, outcome.reason, [e["type"] for e in outcome.events])


def sequential_decisions(core: Core, commands: list[Any]) -> list[tuple[str, str, str | None, list[str]]]:
    """What the one-at-a-time handler decides for these commands, on a fresh ledger."""
    ledger = SQLiteLedger(":memory:")
    try:
        bus = Bus(Context(ledger, core), HANDLERS)
        return [decision(bus.handle(command)) for command in commands]
    finally:
        ledger.close()
