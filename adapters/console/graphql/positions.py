"""Positions: one per account, venue and symbol with at least one fill (rm_positions)."""

from __future__ import annotations

from typing import Any

import strawberry
from strawberry.types import Info

from ..auth import READ
from .context import allowed, known_account, services
from .scalars import BigInt, Decimal


@strawberry.type(description="An open or closed position, from its fills.")
class Position:
    account_id: str
    venue: str
    symbol: str
    quantity: Decimal = strawberry.field(description="Signed: positive long, negative short.")
    avg_price: Decimal
    cost: Decimal
    realized_pnl: Decimal = strawberry.field(description="Fees excluded.")
    fees: Decimal
    mark_price: Decimal | None
    last_fill_id: str
    last_fill_ts_ns: BigInt
    last_fill_position: BigInt

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Position:
        return cls(
            account_id=row["account_id"],
            venue=row["venue"],
            symbol=row["symbol"],
            quantity=row["quantity"],
            avg_price=row["avg_price"],
            cost=row["cost"],
            realized_pnl=row["realized_pnl"],
            fees=row["fees"],
            mark_price=row["mark_price"],
            last_fill_id=row["last_fill_id"],
            last_fill_ts_ns=row["last_fill_ts_ns"],
            last_fill_position=row["last_fill_position"],
        )


@strawberry.type
class PositionsQuery:
    @strawberry.field(description="Positions of an account (default: the console's account).")
    async def positions(self, info: Info[Any, Any], account: str | None = None, open_only: bool = False) -> list[Position]:
        allowed(info, READ, "positions")
        rows = await services(info).data.rows("rm_positions", {"account_id": await known_account(info, account)})
        found = [Position.from_row(row) for row in rows]
        return [p for p in found if not open_only or _nonzero(p.quantity)]


def _nonzero(text: str) -> bool:
    return any(ch not in "-0." for ch in text)
