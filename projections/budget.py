"""The `budget` read model: each account's realized PnL net of fees, per UTC budget day.

Days are **rolled by `budget.day_rolled.v1`**, as the core rolls them (docs/risk.md, "Budgets"):
the roll puts the new day's row (`to_day`, zero PnL) and records on the closed day's row the PnL
the roll closed it with (`closed_day_pnl`). A fill adds `realized_pnl − fee` (and its realized
PnL, fee and a count) to the row of its command's UTC day (`ts_ns // 86400e9`, the core's
`day_of`): with a budget in the policy that is always the rolled day, because the first command of
a new day records the roll before its own events. So a row's `pnl_money` is the core's "today's
PnL" for that day, and equals the `closed_day_pnl` its roll recorded.

A fill on a day that was never rolled (no `budget` section in the policy then, or before the
first roll) has no row to add to and is not counted: the core keeps no budget day for it either.

Running totals are `big_integer` columns in money units (1e-8 of the quote currency, exact at
any size: a fee of 10^11 USDT is 10^19 units, past 64 bits; a Patch adds integers only):
`pnl_money / 1e8` is the decimal PnL.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import MAX_EMAX, MIN_EMIN, Context, Decimal
from typing import Any, Final

from commands.ports import Record

from .model import Change, Column, Patch, Projection, Put, Table, account_of, each_record

DAY_ROLLED: Final = "budget.day_rolled.v1"
ORDER_FILLED: Final = "order.filled.v1"

NS_PER_DAY: Final = 86_400 * 1_000_000_000
MONEY_DECIMALS: Final = 8
EPOCH: Final = date(1970, 1, 1)

BUDGET: Final = Table(
    "rm_budget",
    (
        Column("account_id", "text"),
        Column("day", "integer", doc="days since 1970-01-01, UTC"),
        Column("date", "text", doc="the day as YYYY-MM-DD"),
        Column("pnl_money", "big_integer", default=0, doc="realized PnL net of fees, 1e-8 units"),
        Column(
            "realized_pnl_money",
            "big_integer",
            default=0,
            doc="realized PnL, fees excluded, 1e-8 units",
        ),
        Column("fees_money", "big_integer", default=0, doc="fees paid, 1e-8 units"),
        Column("fills", "integer", default=0, doc="fills counted"),
        Column("opened_ts_ns", "integer", doc="command time of the roll that opened the day"),
        Column("opened_position", "integer", doc="ledger position of that roll"),
        Column("closed_day_pnl", "decimal", nullable=True, doc="the PnL the closing roll recorded"),
        Column("closed_ts_ns", "integer", nullable=True, doc="command time of the closing roll"),
        Column(
            "closed_position", "integer", nullable=True, doc="ledger position of the closing roll"
        ),
    ),
    key=("account_id", "day"),
    doc="One row per account and rolled UTC budget day.",
)


def money_units(text: str) -> int:
    """A money decimal string in exact 1e-8 units ("-1.5" -> -150000000), however many digits."""
    # A context as precise as the text: the default (28 digits) would round a long amount.
    exact = Context(prec=len(text) + MONEY_DECIMALS + 1, Emax=MAX_EMAX, Emin=MIN_EMIN)
    scaled = Decimal(text).scaleb(MONEY_DECIMALS, context=exact)
    units = int(scaled)
    if units != scaled:
        raise ValueError(f"{text!r} has more than {MONEY_DECIMALS} decimals")
    return units


def day_of(ts_ns: int) -> int:
    """The UTC day of a command time, as the core counts budget days."""
    return ts_ns // NS_PER_DAY


def date_of(day: int) -> str:
    """A day number as an ISO date (pure: no clock, no time zone)."""
    return (EPOCH + timedelta(days=day)).isoformat()


def fold_record(record: Record) -> list[Change]:
    """A roll opens the new day's row and closes the old one; a fill adds to its day's row."""
    if record.type == DAY_ROLLED:
        envelope = record.envelope
        data: dict[str, Any] = envelope["data"]
        account = account_of(record)
        return [
            Patch(
                BUDGET.name,
                (account, data["from_day"]),
                set={
                    "closed_day_pnl": data["closed_day_pnl"],
                    "closed_ts_ns": envelope["ts_ns"],
                    "closed_position": record.position,
                },
            ),
            Put(
                BUDGET.name,
                {
                    "account_id": account,
                    "day": data["to_day"],
                    "date": date_of(data["to_day"]),
                    "opened_ts_ns": envelope["ts_ns"],
                    "opened_position": record.position,
                },
            ),
        ]
    if record.type == ORDER_FILLED:
        data = record.envelope["data"]
        realized = money_units(data["realized_pnl"])
        fee = money_units(data["fee"])
        key = (account_of(record), day_of(record.envelope["ts_ns"]))
        add = {
            "pnl_money": realized - fee,
            "realized_pnl_money": realized,
            "fees_money": fee,
            "fills": 1,
        }
        return [Patch(BUDGET.name, key, add=add)]
    return []


PROJECTION: Final = Projection(
    "budget",
    (BUDGET,),
    each_record(fold_record),
    doc="Per account and UTC day: realized PnL net of fees, fills, and the PnL the day closed with.",
)
