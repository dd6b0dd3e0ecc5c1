"""The Brain's view: breaker (state, active triggers, transitions), truth score per venue with its
history, venue quality, the daily loss budget. Current state comes from the account folded to the
ledger's head; history from the read models."""

from __future__ import annotations

from decimal import Decimal as _Decimal
from typing import Any, Final

import strawberry
from strawberry.types import Info

from commands.envelope import account_stream
from commands.ports import RecordFilter

from ..auth import READ
from ..ports import ConsoleData
from .context import allowed, known_account, services
from .orders import bounded
from .scalars import JSON, BigInt, Decimal

MONEY_SCALE: Final = _Decimal(10) ** -8
BREAKER_TRANSITIONED: Final = "breaker.transitioned.v1"


def money_text(units: int | str) -> str:
    """1e-8 money units as a decimal string ("150000000" -> "1.5")."""
    value = (_Decimal(int(units)) * MONEY_SCALE).normalize()
    return format(value, "f")


@strawberry.type(description="A trigger that holds the breaker where it is, with the values that fired it.")
class Trigger:
    trigger: str
    level: str
    values: JSON

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> Trigger:
        return cls(trigger=str(item["trigger"]), level=str(item["level"]), values=JSON(item.get("values") or {}))


@strawberry.type(description="One move of the breaker.")
class BreakerTransition:
    position: BigInt
    account_id: str
    from_state: str
    to_state: str
    trigger: str
    reason: str
    trigger_values: JSON
    actor: str | None
    ts_ns: BigInt

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> BreakerTransition:
        return cls(**{name: row[name] for name in _TRANSITION_FIELDS})


_TRANSITION_FIELDS: Final = tuple(BreakerTransition.__annotations__)


@strawberry.type(description="The account's circuit breaker now.")
class Breaker:
    account_id: str
    state: str = strawberry.field(description="NORMAL, DEFENSIVE or HALTED.")
    since_ts_ns: BigInt
    clear_since_ts_ns: BigInt | None
    mode: str = strawberry.field(description="ARMED or DISARMED.")
    active_triggers: list[Trigger]
    trigger: str | None = strawberry.field(description="What moved it into this state.")
    reason: str | None = strawberry.field(description="The operator's reason, for an operator's move.")
    actor: str | None
    as_of_position: BigInt

    @strawberry.field(description="Its transitions, newest first.")
    async def transitions(self, info: Info[Any, Any], last: int = 50) -> list[BreakerTransition]:
        allowed(info, READ, "breaker transitions")
        bounded("last", last)
        rows = await services(info).data.latest("rm_breaker_transitions", "position", last, {"account_id": self.account_id})
        return [BreakerTransition.from_row(row) for row in rows]


@strawberry.type(description="One truth snapshot's score.")
class TruthPoint:
    position: BigInt
    score: int
    equity: Decimal
    components: JSON
    ts_ns: BigInt


@strawberry.type(description="A venue's latest truth snapshot: how far the venue's account agrees with ours.")
class VenueTruth:
    account_id: str
    venue: str
    score: int = strawberry.field(description="0-100.")
    components: JSON
    equity: Decimal
    venue_ts_ns: BigInt
    latency_ms: BigInt
    drifts: JSON
    orphan_order_ids: list[str]
    missing_order_ids: list[str]
    ts_ns: BigInt
    position: BigInt

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> VenueTruth:
        return cls(**{name: row[name] for name in _TRUTH_FIELDS})

    @strawberry.field(description="Its recent snapshots, newest first.")
    async def history(self, info: Info[Any, Any], last: int = 100) -> list[TruthPoint]:
        allowed(info, READ, "truth history")
        bounded("last", last)
        rows = await services(info).data.latest("rm_truth_history", "position", last, {"account_id": self.account_id, "venue": self.venue})
        return [
            TruthPoint(position=r["position"], score=r["score"], equity=r["equity"], components=r["components"], ts_ns=r["ts_ns"])
            for r in rows
        ]


_TRUTH_FIELDS: Final = tuple(name for name in VenueTruth.__annotations__)


@strawberry.type(description="A venue's execution quality and status.")
class Venue:
    account_id: str
    venue: str
    status: str = strawberry.field(description="OK, DEGRADED or HALTED.")
    mean_ack_latency_ms: BigInt
    mean_slippage_bps: BigInt
    samples: int
    since_ts_ns: BigInt | None = strawberry.field(description="When the status last changed (null: never).")
    from_status: str | None


@strawberry.type(description="One UTC day of the loss budget.")
class BudgetDay:
    account_id: str
    day: int
    date: str
    pnl: Decimal = strawberry.field(description="Realized PnL net of fees.")
    realized_pnl: Decimal
    fees: Decimal
    fills: int
    opened_ts_ns: BigInt
    closed_day_pnl: Decimal | None
    closed_ts_ns: BigInt | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> BudgetDay:
        return cls(
            account_id=row["account_id"],
            day=row["day"],
            date=row["date"],
            pnl=Decimal(money_text(row["pnl_money"])),
            realized_pnl=Decimal(money_text(row["realized_pnl_money"])),
            fees=Decimal(money_text(row["fees_money"])),
            fills=row["fills"],
            opened_ts_ns=row["opened_ts_ns"],
            closed_day_pnl=row["closed_day_pnl"],
            closed_ts_ns=row["closed_ts_ns"],
        )


@strawberry.type(description="The Brain's daily budget now, and the days behind it.")
class Budget:
    account_id: str
    day: int
    day_pnl: Decimal
    equity: Decimal | None
    peak_equity: Decimal | None
    drawdown_bps: BigInt
    regime: str
    allowed_phases: list[int]
    max_leverage: Decimal | None
    days: list[BudgetDay]


async def _last_transition(data: ConsoleData, account_id: str, after: int) -> dict[str, Any]:
    """Who moved the breaker last, from the ledger, when the read model has not caught up with
    the folded state (right after a halt): the read model's actor would be the previous mover's."""
    where = RecordFilter(types=(BREAKER_TRANSITIONED,), stream_ids=(account_stream(account_id),))
    last: dict[str, Any] = {}
    while True:
        page = await data.events(after, 1000, where)
        if page.records:
            record = page.records[-1]
            moved = record.envelope["data"]
            last = {"trigger": moved.get("trigger"), "reason": moved.get("reason"), "actor": record.envelope.get("actor")}
        if page.scanned_to <= after or page.scanned_to >= page.head:
            return last
        after = page.scanned_to


@strawberry.type
class RiskQuery:
    @strawberry.field(description="The breaker now, its active triggers and its transitions.")
    async def breaker(self, info: Info[Any, Any], account: str | None = None) -> Breaker:
        allowed(info, READ, "breaker")
        account_id = await known_account(info, account)
        data = services(info).data
        view = await data.state(account_id)
        rows = await data.rows("rm_breaker", {"account_id": account_id})
        breaker = view["breaker"]
        row = rows[0] if rows else {}
        if not row or row["state"] != breaker["state"] or row["since_ts_ns"] != breaker["since_ts_ns"]:
            row = await _last_transition(data, account_id, int(row.get("position", 0)))
        return Breaker(
            account_id=account_id,
            state=breaker["state"],
            since_ts_ns=breaker["since_ts_ns"],
            clear_since_ts_ns=breaker["clear_since_ts_ns"],
            mode=view["mode"],
            active_triggers=[Trigger.from_json(t) for t in breaker["active_triggers"]],
            trigger=row.get("trigger"),
            reason=row.get("reason"),
            actor=row.get("actor"),
            as_of_position=view["as_of_position"],
        )

    @strawberry.field(description="The latest truth snapshot of each venue.")
    async def truth(self, info: Info[Any, Any], account: str | None = None) -> list[VenueTruth]:
        allowed(info, READ, "truth")
        rows = await services(info).data.rows("rm_truth", {"account_id": await known_account(info, account)})
        return [VenueTruth.from_row(row) for row in rows]

    @strawberry.field(description="Each venue's execution quality and status.")
    async def venues(self, info: Info[Any, Any], account: str | None = None) -> list[Venue]:
        allowed(info, READ, "venues")
        account_id = await known_account(info, account)
        data = services(info).data
        view = await data.state(account_id)
        changed = {row["venue"]: row for row in await data.rows("rm_venue_quality", {"account_id": account_id})}
        venues = []
        for name, quality in sorted(view["venues"].items()):
            row = changed.get(name, {})
            venues.append(
                Venue(
                    account_id=account_id,
                    venue=name,
                    status=quality["status"],
                    mean_ack_latency_ms=quality["mean_ack_latency_ms"],
                    mean_slippage_bps=quality["mean_slippage_bps"],
                    samples=quality["samples"],
                    since_ts_ns=row.get("since_ts_ns"),
                    from_status=row.get("from_status"),
                )
            )
        return venues

    @strawberry.field(description="The loss budget today and the days recorded (newest first).")
    async def budget(self, info: Info[Any, Any], account: str | None = None, last: int = 30) -> Budget:
        allowed(info, READ, "budget")
        bounded("last", last)
        account_id = await known_account(info, account)
        data = services(info).data
        view = await data.state(account_id)
        rows = await data.latest("rm_budget", "day", last, {"account_id": account_id})
        return Budget(
            account_id=account_id,
            day=view["budget"]["day"],
            day_pnl=view["budget"]["day_pnl"],
            equity=view["equity"],
            peak_equity=view["peak_equity"],
            drawdown_bps=BigInt(int(view["drawdown_bps"])),
            regime=view["regime"],
            allowed_phases=list(view["allowed_phases"]),
            max_leverage=view["max_leverage"],
            days=[BudgetDay.from_row(row) for row in rows],
        )
