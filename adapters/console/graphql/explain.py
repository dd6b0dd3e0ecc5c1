"""`explainDecision(orderId | commandId)`: the decision trace, as typed fields, equal in content to
`titan explain --json` (a test compares them). Nested documents that are themselves recorded
payloads (the command, an event's data, a position) stay JSON."""

from __future__ import annotations

from typing import Any, Final

import strawberry
from strawberry.types import Info

from ..auth import EXPLAIN
from ..ports import ConsoleError
from .context import allowed, services
from .orders import Check
from .scalars import JSON, BigInt, Decimal

MAX_IDENT: Final = 160


@strawberry.type(description="A ledger record the trace refers to.")
class TraceRecord:
    position: BigInt
    event_id: str | None
    type: str
    ts_ns: BigInt | None
    time: str
    command_id: str | None
    actor: str | None
    data: JSON | None = strawberry.field(description="The event's data (null where the trace lists only the reference).")

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> TraceRecord:
        return cls(
            position=item["position"],
            event_id=item.get("event_id"),
            type=item["type"],
            ts_ns=item.get("ts_ns"),
            time=item["time"],
            command_id=item.get("command_id"),
            actor=item.get("actor"),
            data=item.get("data"),
        )


@strawberry.type(description="Who asked, when, from which phase and intent.")
class TraceRequest:
    type: str | None
    account_id: str
    actor: str | None
    ts_ns: BigInt | None
    time: str
    issued_ts_ns: BigInt | None
    phase_id: int | None
    intent_id: str | None
    correlation_id: str | None
    causation_id: str | None
    command: JSON


@strawberry.type(description="The policy in force and the one the command carried.")
class TracePolicy:
    active_hash: str | None
    carried_hash: str | None
    policy_id: str | None


@strawberry.type
class CommandRecordRef:
    position: BigInt
    hash: str | None


@strawberry.type(description="The decision: every check with value and limit, the outcome, the events.")
class TraceDecision:
    position: BigInt
    outcome: str | None
    reason: str | None
    checks: list[Check]
    detail: JSON | None
    events: list[TraceRecord]
    command_record: CommandRecordRef


@strawberry.type(description="The Brain's context at the moment of the decision, and the events that set it.")
class TraceContext:
    as_of_position: BigInt
    state: JSON = strawberry.field(description="The account's state view then: mode, policy, breaker, truth, regime, allocation, budget.")
    breaker_state: str | None
    mode: str | None
    regime: str | None
    open_orders: int
    set_by: list[TraceRecord]
    position_before: JSON | None


@strawberry.type(description="A fill of the order, with its slippage against the reference price.")
class TraceFill:
    position: BigInt
    event_id: str | None
    ts_ns: BigInt | None
    time: str
    fill_id: str | None
    quantity: Decimal | None
    price: Decimal | None
    fee: Decimal | None
    liquidity: str | None
    reference_price: Decimal | None
    slippage_bps: Decimal | None = strawberry.field(description="Positive when worse for us.")
    realized_pnl: Decimal | None


@strawberry.type(description="The order after the decision: acks, fills, cancels, and the effect on the position.")
class TraceLifecycle:
    status: str
    events: list[TraceRecord]
    fills: list[TraceFill]
    filled_quantity: Decimal | None
    average_fill_price: Decimal | None
    average_slippage_bps: Decimal | None
    realized_pnl: Decimal | None
    fees: Decimal | None
    position_after: JSON | None


@strawberry.type(description="Why titan decided what it did, from the ledger alone.")
class Explanation:
    subject: str
    order_id: str | None
    command_id: str | None
    request: TraceRequest
    policy: TracePolicy
    decision: TraceDecision
    context: TraceContext
    lifecycle: TraceLifecycle | None

    @classmethod
    def from_trace(cls, trace: dict[str, Any]) -> Explanation:
        request, decision, context = trace["request"], trace["decision"], trace["context"]
        state = context["state"]
        lifecycle = trace.get("lifecycle")
        return cls(
            subject=trace["subject"],
            order_id=trace.get("order_id"),
            command_id=trace.get("command_id"),
            request=TraceRequest(**request),
            policy=TracePolicy(**trace["policy"]),
            decision=TraceDecision(
                position=decision["position"],
                outcome=decision.get("outcome"),
                reason=decision.get("reason"),
                checks=[Check.from_json(item) for item in decision["checks"]],
                detail=decision.get("detail"),
                events=[TraceRecord.from_json(item) for item in decision["events"]],
                command_record=CommandRecordRef(**decision["command_record"]),
            ),
            context=TraceContext(
                as_of_position=context["as_of_position"],
                state=state,
                breaker_state=(state.get("breaker") or {}).get("state"),
                mode=state.get("mode"),
                regime=state.get("regime"),
                open_orders=context["open_orders"],
                set_by=[TraceRecord.from_json(item) for item in context["set_by"]],
                position_before=context.get("position_before"),
            ),
            lifecycle=None
            if lifecycle is None
            else TraceLifecycle(
                status=lifecycle["status"],
                events=[TraceRecord.from_json(item) for item in lifecycle["events"]],
                fills=[_fill(item) for item in lifecycle["fills"]],
                filled_quantity=lifecycle.get("filled_quantity"),
                average_fill_price=lifecycle.get("average_fill_price"),
                average_slippage_bps=lifecycle.get("average_slippage_bps"),
                realized_pnl=lifecycle.get("realized_pnl"),
                fees=lifecycle.get("fees"),
                position_after=lifecycle.get("position_after"),
            ),
        )


def _fill(item: dict[str, Any]) -> TraceFill:
    fields: dict[str, Any] = {name: item.get(name) for name in _FILL_FIELDS if name != "time"}
    return TraceFill(**fields, time=item["time"])


_FILL_FIELDS: Final = tuple(TraceFill.__annotations__)


@strawberry.type
class ExplainQuery:
    @strawberry.field(description="The decision trace of an order (orderId) or a command (commandId).")
    async def explain_decision(self, info: Info[Any, Any], order_id: str | None = None, command_id: str | None = None) -> Explanation:
        allowed(info, EXPLAIN, "explainDecision")
        if (order_id is None) == (command_id is None):
            raise ConsoleError("INVALID_ARGUMENT", "explainDecision: give exactly one of orderId or commandId", 400)
        ident = order_id if order_id is not None else command_id
        assert ident is not None
        if not 0 < len(ident) <= MAX_IDENT:
            raise ConsoleError("INVALID_ARGUMENT", f"give an id of 1 to {MAX_IDENT} characters", 400)
        return Explanation.from_trace(await services(info).data.explain(ident))
