"""Orders and decisions: rm_orders (every order's life) and rm_decisions (who asked, every check)."""

from __future__ import annotations

from typing import Any, Final

import strawberry
from strawberry.types import Info

from ..auth import READ
from ..ports import ConsoleError
from .context import allowed, known_account, services
from .scalars import BigInt, Decimal

MAX_ROWS: Final = 1000
OPEN_STATUSES: Final = frozenset({"ACCEPTED", "ACKNOWLEDGED", "PARTIALLY_FILLED"})


def bounded(name: str, value: int, most: int = MAX_ROWS) -> int:
    if not 1 <= value <= most:
        raise ConsoleError("INVALID_ARGUMENT", f"{name}: give 1 to {most}, not {value}", 400)
    return value


@strawberry.type(description="An order titan decided, and what the venue did with it.")
class Order:
    order_id: str
    account_id: str
    command_id: str
    client_order_id: str
    venue: str
    symbol: str
    side: str
    order_type: str
    quantity: Decimal
    price: Decimal | None
    reference_price: Decimal
    reduce_only: bool
    phase_id: int | None
    intent_id: str | None
    notional: Decimal | None
    status: str
    reason: str | None = strawberry.field(description="The reason code when refused.")
    filled_quantity: Decimal
    fill_count: int
    venue_order_id: str | None
    ack_latency_ms: BigInt | None
    cancel_requested: bool
    venue_reason: str | None
    created_ts_ns: BigInt
    acknowledged_ts_ns: BigInt | None
    closed_ts_ns: BigInt | None
    updated_ts_ns: BigInt
    created_position: BigInt
    updated_position: BigInt

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Order:
        return cls(**{name: row[name] for name in _ORDER_FIELDS})


_ORDER_FIELDS: Final = tuple(Order.__annotations__)


@strawberry.type(description="One pre-trade check: what was measured against what limit.")
class Check:
    check: str
    value: str | None
    limit: str | None
    verdict: str

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> Check:
        value, limit = item.get("value"), item.get("limit")
        return cls(
            check=str(item.get("check")),
            value=None if value is None else str(value),
            limit=None if limit is None else str(limit),
            verdict=str(item.get("verdict")),
        )


@strawberry.type(description="A decision on an order: who asked, under which policy, every check, the outcome.")
class Decision:
    order_id: str
    command_id: str
    account_id: str
    command_type: str | None
    outcome: str
    reason: str | None
    actor: str | None
    phase_id: int | None
    intent_id: str | None
    correlation_id: str | None
    causation_id: str | None
    policy_hash: str | None
    ts_ns: BigInt
    venue: str
    symbol: str
    side: str
    checks: list[Check]
    event_position: BigInt
    command_position: BigInt | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Decision:
        plain = {name: row[name] for name in _DECISION_FIELDS if name != "checks"}
        return cls(**plain, checks=[Check.from_json(item) for item in row["checks"] or []])


_DECISION_FIELDS: Final = tuple(Decision.__annotations__)


@strawberry.type
class OrdersQuery:
    @strawberry.field(description="Orders, newest first, filtered by status (or OPEN), symbol and phase.")
    async def orders(
        self,
        info: Info[Any, Any],
        account: str | None = None,
        status: str | None = None,
        symbol: str | None = None,
        phase: int | None = None,
        last: int = 100,
    ) -> list[Order]:
        allowed(info, READ, "orders")
        bounded("last", last)
        where: dict[str, Any] = {"account_id": await known_account(info, account)}
        if symbol is not None:
            where["symbol"] = symbol
        if phase is not None:
            where["phase_id"] = phase
        data = services(info).data
        statuses = sorted(OPEN_STATUSES) if status == "OPEN" else [status] if status is not None else [None]
        rows: list[dict[str, Any]] = []
        for one in statuses:
            rows.extend(await data.latest("rm_orders", "created_position", last, where if one is None else {**where, "status": one}))
        rows.sort(key=lambda row: int(row["created_position"]), reverse=True)
        return [Order.from_row(row) for row in rows[:last]]

    @strawberry.field(description="Recent order decisions with their reasons and checks, newest first.")
    async def decisions(self, info: Info[Any, Any], account: str | None = None, outcome: str | None = None, last: int = 50) -> list[Decision]:
        allowed(info, READ, "decisions")
        bounded("last", last)
        where: dict[str, Any] = {"account_id": await known_account(info, account)}
        if outcome is not None:
            where["outcome"] = outcome
        rows = await services(info).data.latest("rm_decisions", "event_position", last, where)
        return [Decision.from_row(row) for row in rows]
