"""Subscriptions (graphql-transport-ws): the ledger's head, its records, truth scores and breaker
transitions, as they are recorded. Each follows the ledger from a position; the caller's token is
checked again before every message, so a revoked token stops receiving at the next one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any, Final

import strawberry
from strawberry.types import Info

from commands.envelope import account_stream
from commands.ports import Record, RecordFilter

from ..auth import EVENTS, READ
from .context import allowed, known_account, services
from .events import LedgerEvent, decode_cursor, record_filter
from .scalars import BigInt

POLL_S: Final = 0.25
BATCH: Final = 500
TRUTH_RECORDED: Final = "truth.snapshot_recorded.v1"
BREAKER_TRANSITIONED: Final = "breaker.transitioned.v1"


@strawberry.type(description="The ledger moved on.")
class HeadMoved:
    position: BigInt


@strawberry.type(description="A new truth snapshot of a venue.")
class TruthUpdate:
    account_id: str
    venue: str
    score: int
    ts_ns: BigInt
    position: BigInt


@strawberry.type(description="The breaker moved.")
class BreakerMove:
    account_id: str
    position: BigInt
    from_state: str
    to_state: str
    trigger: str
    reason: str
    actor: str | None
    ts_ns: BigInt


async def _follow(info: Info[Any, Any], permission: str, what: str, after: int, where: RecordFilter) -> AsyncGenerator[Record, None]:
    """Records after a position that match, as they are recorded (checking the token each time)."""
    data = services(info).data
    position = after
    while True:
        allowed(info, permission, what)
        page = await data.events(position, BATCH, where)
        for record in page.records:
            allowed(info, permission, what)
            yield record
        moved = max(page.scanned_to, position)
        if moved == position or moved >= page.head:
            await asyncio.sleep(POLL_S)
        position = moved


def _start(head: int, after: str | None) -> int:
    return decode_cursor(after) if after is not None else head


@strawberry.type
class LiveSubscription:
    @strawberry.subscription(description="The ledger's head position, each time it moves (a page refreshes its views on it).")
    async def ledger_head(self, info: Info[Any, Any]) -> AsyncGenerator[HeadMoved, None]:
        allowed(info, READ, "ledgerHead")
        data = services(info).data
        last = -1
        while True:
            head = await data.head()
            allowed(info, READ, "ledgerHead")
            if head != last:
                last = head
                yield HeadMoved(position=BigInt(head))
            await asyncio.sleep(POLL_S)

    @strawberry.subscription(description="Ledger records as they are recorded (auditor); from `after`, else from now.")
    async def events(
        self, info: Info[Any, Any], after: str | None = None, types: list[str] | None = None, account: str | None = None
    ) -> AsyncGenerator[LedgerEvent, None]:
        allowed(info, EVENTS, "events")
        where = record_filter(types, account, None, None, None)
        start = _start(await services(info).data.head(), after)
        async for record in _follow(info, EVENTS, "events", start, where):
            yield LedgerEvent.from_record(record)

    @strawberry.subscription(description="Each new truth snapshot's score.")
    async def truth_score(self, info: Info[Any, Any], account: str | None = None) -> AsyncGenerator[TruthUpdate, None]:
        allowed(info, READ, "truthScore")
        account_id = await known_account(info, account)
        where = RecordFilter(types=(TRUTH_RECORDED,), stream_ids=(account_stream(account_id),))
        start = await services(info).data.head()
        async for record in _follow(info, READ, "truthScore", start, where):
            payload: dict[str, Any] = record.envelope["data"]
            yield TruthUpdate(
                account_id=account_id, venue=payload["venue"], score=payload["score"], ts_ns=record.envelope["ts_ns"], position=BigInt(record.position)
            )

    @strawberry.subscription(description="Each breaker transition.")
    async def breaker_transitions(self, info: Info[Any, Any], account: str | None = None) -> AsyncGenerator[BreakerMove, None]:
        allowed(info, READ, "breakerTransitions")
        account_id = await known_account(info, account)
        where = RecordFilter(types=(BREAKER_TRANSITIONED,), stream_ids=(account_stream(account_id),))
        start = await services(info).data.head()
        async for record in _follow(info, READ, "breakerTransitions", start, where):
            payload: dict[str, Any] = record.envelope["data"]
            yield BreakerMove(
                account_id=account_id,
                position=BigInt(record.position),
                from_state=payload["from_state"],
                to_state=payload["to_state"],
                trigger=payload["trigger"],
                reason=payload["reason"],
                actor=record.envelope.get("actor"),
                ts_ns=record.envelope["ts_ns"],
            )
