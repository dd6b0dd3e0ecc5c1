"""The `positions` read model: one row per account, venue and symbol that has ever been filled.

Each fill records the position it leaves, so a fill's row is that position; an accepted order
moves the instrument's mark to its reference price, and a fill to its price, exactly as the
execution aggregate keeps its marks (what `titan state` shows as `mark_price`).
"""

from __future__ import annotations

from typing import Any, Final

from commands.ports import Record

from .model import Change, Column, Patch, Projection, Put, Table, account_of, each_record

ORDER_ACCEPTED: Final = "order.accepted.v1"
ORDER_FILLED: Final = "order.filled.v1"

POSITIONS: Final = Table(
    "rm_positions",
    (
        Column("account_id", "text"),
        Column("venue", "text"),
        Column("symbol", "text"),
        Column("quantity", "decimal", doc="signed: positive long, negative short"),
        Column("avg_price", "decimal", doc="average entry price, rounded down"),
        Column("cost", "decimal", doc="signed cost basis of the open quantity"),
        Column("realized_pnl", "decimal", doc="realized PnL to date, fees excluded"),
        Column("fees", "decimal", doc="fees paid to date"),
        Column("mark_price", "decimal", nullable=True, doc="last reference or fill price"),
        Column("last_fill_id", "text"),
        Column("last_fill_ts_ns", "integer", doc="command time of the last fill"),
        Column("last_fill_position", "integer", doc="ledger position of the last fill"),
    ),
    key=("account_id", "venue", "symbol"),
    doc="One row per account, venue and symbol with at least one fill.",
)


def fold_record(record: Record) -> list[Change]:
    """A fill puts the position it leaves; an accepted order moves the mark of a held position."""
    if record.type == ORDER_FILLED:
        data: dict[str, Any] = record.envelope["data"]
        position = data["position"]
        return [
            Put(
                POSITIONS.name,
                {
                    "account_id": account_of(record),
                    "venue": data["venue"],
                    "symbol": data["symbol"],
                    "quantity": position["quantity"],
                    "avg_price": position["avg_price"],
                    "cost": position["cost"],
                    "realized_pnl": position["realized_pnl"],
                    "fees": position["fees"],
                    "mark_price": data["price"],
                    "last_fill_id": data["fill_id"],
                    "last_fill_ts_ns": record.envelope["ts_ns"],
                    "last_fill_position": record.position,
                },
            )
        ]
    if record.type == ORDER_ACCEPTED:
        data = record.envelope["data"]
        key = (account_of(record), data["venue"], data["symbol"])
        return [Patch(POSITIONS.name, key, set={"mark_price": data["reference_price"]})]
    return []


PROJECTION: Final = Projection(
    "positions",
    (POSITIONS,),
    each_record(fold_record),
    doc="Per account, venue and symbol: quantity, average price, cost, realized PnL, fees, mark.",
)
