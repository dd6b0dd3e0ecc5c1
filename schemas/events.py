"""Events on the wire (SPEC §2): the ledger record envelope and one strict model per event `data`.

Each model matches, field for field, what the core's `domain.events` `to_data()` writes for that
type; `EVENT_DATA_MODELS` maps every versioned type name (`order.accepted.v1`, ...) to its model.
The type names are written out here rather than imported, so that the wire contract does not
depend on the compiled core; a unit test proves the two lists agree.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import Field, JsonValue, model_validator

from .base import (
    INT64_MAX,
    Count,
    Decimal,
    Identifier,
    Int64,
    Milliseconds,
    Nanoseconds,
    PlainText,
    PositiveDecimal,
    Text,
    Total,
    WireModel,
    at_most,
    items_at_most,
)
from .commands import MAX_SAMPLE_SIZE, EntryIds, PhaseId, Reason, Side
from .policy import MAX_OPEN_ORDERS, PolicyDocument

POLICY_ACTIVATED: Final = "policy.activated.v1"
ACCOUNT_ARMED: Final = "account.armed.v1"
ACCOUNT_DISARMED: Final = "account.disarmed.v1"
ORDER_ACCEPTED: Final = "order.accepted.v1"
ORDER_REJECTED: Final = "order.rejected.v1"
ORDER_CANCEL_REQUESTED: Final = "order.cancel_requested.v1"
ORDER_ACKNOWLEDGED: Final = "order.acknowledged.v1"
ORDER_VENUE_REJECTED: Final = "order.venue_rejected.v1"
ORDER_FILLED: Final = "order.filled.v1"
ORDER_CANCELLED: Final = "order.cancelled.v1"
COMMAND_REJECTED: Final = "command.rejected.v1"
TRUTH_RECORDED: Final = "truth.snapshot_recorded.v1"
BREAKER_TRANSITIONED: Final = "breaker.transitioned.v1"
VENUE_STATUS_CHANGED: Final = "venue.status_changed.v1"
REGIME_CHANGED: Final = "regime.changed.v1"
TAIL_RISK_RECORDED: Final = "tail_risk.recorded.v1"
DAY_ROLLED: Final = "budget.day_rolled.v1"
DLQ_PURGED: Final = "dlq.purged.v1"
COMMAND_RECORDED: Final = "command.recorded.v1"

Hash = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="lowercase hex SHA-256")]

ReasonCode = Annotated[
    str,
    Field(
        pattern=r"^[A-Z][A-Z0-9_]*$",
        description="a stable reason code (docs/reason-codes.md), e.g. PRICE_COLLAR",
    ),
]

OrderId = Annotated[
    str,
    Field(
        pattern=r"^ord-[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$",
        description="`ord-` followed by the id of the PlaceOrder command that opened the order",
    ),
]

EventId = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,254}$",
        description="derived from the id of the command that caused the event",
    ),
]

StreamId = Annotated[
    str,
    Field(
        pattern=r"^(account|command)-[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$",
        description="`account-<account_id>` or `command-<command_id>`",
    ),
]

TypeName = Annotated[
    str,
    Field(
        pattern=r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*\.v[1-9][0-9]*$",
        description="the versioned record type, e.g. `order.accepted.v1`",
    ),
]

ClientOrderId = Annotated[
    str,
    Field(
        pattern=r"^(?:[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}|flatten-[A-Za-z0-9][A-Za-z0-9._:@-]{0,119}\.[0-9]+)$",
        description="as the PlaceOrder gave it, or `flatten-<command_id>.<n>` for an order a Flatten placed",
    ),
]

OrderPhaseId = Annotated[
    int,
    Field(
        ge=0, le=3, description="1 Scavenger, 2 Hunter, 3 Sentinel; 0 for a Flatten given no phase"
    ),
]

OrderIntentId = Annotated[
    str,
    Field(
        pattern=r"^(?:[A-Za-z0-9][A-Za-z0-9._:@-]{0,127})?$",
        description="the intent behind the order; empty for a Flatten given no intent",
    ),
]

CancelReason = Annotated[
    str,
    Field(
        min_length=1,
        max_length=1009,
        description="the CancelOrder's reason, or `flatten: <the Flatten's reason>`",
    ),
    PlainText,
]

Mode = Literal["ARMED", "DISARMED"]
OrderType = Literal["LIMIT", "MARKET"]
BreakerLevel = Literal["NORMAL", "DEFENSIVE", "HALTED"]
VenueStatus = Literal["OK", "DEGRADED", "HALTED"]
Regime = Literal["RISK_ON", "NEUTRAL", "RISK_OFF", "CRASH"]
Score = Annotated[int, Field(ge=0, le=100)]
Values = dict[Annotated[str, Field(max_length=128)], Text]
"""Named values of a decision: short names, texts of at most 1000 characters."""
MAX_DAY = INT64_MAX // (86_400 * 10**9)
"""The last UTC day a Nanoseconds time can reach (2262-04-11)."""


class CheckResult(WireModel):
    """One pre-trade check as decided: the value seen, the limit and the verdict."""

    check: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", description="the check's name")]
    value: Text
    limit: Text
    verdict: Literal["pass", "fail"]


Checks = Annotated[
    list[CheckResult],
    Field(description="every check that ran, in the order it ran (docs/reason-codes.md)"),
]


class PositionState(WireModel):
    """A position after a fill; money (`avg_price`, `cost`, `realized_pnl`, `fees`) in the quote
    currency with at most 8 decimals."""

    quantity: Annotated[Total, Field(description="signed: positive long, negative short")]
    avg_price: Annotated[Total, Field(description="average entry price, rounded down")]
    cost: Annotated[Total, Field(description="signed cost basis of the open quantity")]
    realized_pnl: Annotated[Total, Field(description="realized PnL to date, fees excluded")]
    fees: Annotated[Total, Field(description="fees paid to date (negative for net rebates)")]


class PolicyActivated(WireModel):
    """A policy became the account's active policy."""

    policy_hash: Hash
    previous_policy_hash: Annotated[Hash | None, Field(description="null for the first policy")]
    policy: PolicyDocument


class AccountArmed(WireModel):
    """The account may send orders to live venues."""

    previous_mode: Mode
    reason: Reason


class AccountDisarmed(WireModel):
    """The account may no longer send orders to live venues (the paper venue still trades)."""

    previous_mode: Mode
    reason: Reason


class OrderAccepted(WireModel):
    """A PlaceOrder passed every pre-trade check, or a Flatten placed a reduce-only order that
    closes a position; amounts at the instrument's tick and step."""

    order_id: OrderId
    client_order_id: ClientOrderId
    venue: Identifier
    symbol: Identifier
    side: Side
    order_type: OrderType
    quantity: PositiveDecimal
    price: Annotated[
        PositiveDecimal,
        Field(description="the limit price; for a MARKET order, the reference price"),
    ]
    reference_price: PositiveDecimal
    reduce_only: bool
    phase_id: OrderPhaseId
    intent_id: OrderIntentId
    notional: Annotated[PositiveDecimal, Field(description="price x quantity, quote currency")]
    checks: Checks


class OrderRejected(WireModel):
    """A PlaceOrder refused: the order as asked (amounts as received), the reason and the checks
    that ran up to and including the deciding one."""

    order_id: OrderId
    client_order_id: Identifier
    venue: Identifier
    symbol: Identifier
    side: Side
    order_type: OrderType
    quantity: PositiveDecimal
    price: Annotated[
        PositiveDecimal | None,
        Field(description="as received; null for a MARKET order"),
    ]
    reference_price: PositiveDecimal
    reduce_only: bool
    reason: ReasonCode
    checks: Checks


class OrderCancelRequested(WireModel):
    """A cancel of an open order was sent to the venue (the order stays open until confirmed)."""

    order_id: OrderId
    reason: CancelReason


class OrderAcknowledged(WireModel):
    """The venue acknowledged an order."""

    order_id: OrderId
    venue_order_id: Identifier
    ack_latency_ms: Annotated[
        int,
        Field(ge=0, description="command time of the ack minus command time of acceptance"),
        at_most(INT64_MAX),
    ]


class OrderVenueRejected(WireModel):
    """The venue refused an accepted order; the order is closed."""

    order_id: OrderId
    venue_reason: Reason


class OrderFilled(WireModel):
    """A fill counted: the fill, the order's progress and the position it leaves."""

    order_id: OrderId
    fill_id: Identifier
    venue: Identifier
    symbol: Identifier
    side: Side
    quantity: PositiveDecimal
    price: PositiveDecimal
    fee: Annotated[Decimal, Field(description="quote currency; negative for a rebate")]
    liquidity: Literal["maker", "taker"]
    status: Literal["PARTIALLY_FILLED", "FILLED"]
    filled_quantity: PositiveDecimal
    remaining_quantity: PositiveDecimal
    realized_pnl: Annotated[Total, Field(description="PnL this fill realized, fees excluded")]
    position: PositionState


class OrderCancelled(WireModel):
    """The venue confirmed an order cancelled (on request or on its own); the order is closed."""

    order_id: OrderId
    venue_reason: Reason
    filled_quantity: PositiveDecimal


class CommandRejected(WireModel):
    """A command other than PlaceOrder refused; `detail` holds the values that decided it."""

    command_type: Annotated[
        str,
        Field(pattern=r"^[A-Z][A-Za-z0-9]*$", description="the command's name, e.g. `RecordFill`"),
    ]
    reason: ReasonCode
    detail: Values


class TruthComponent(WireModel):
    """One component of a truth score: what was measured, its 0-100 score and its policy weight."""

    component: Literal[
        "position_drift", "orphan_orders", "missing_orders", "staleness_ms", "latency_ms"
    ]
    value: Annotated[
        str,
        Field(
            description="the measurement: drift in quote currency (or `unpriced`), an order count, "
            "or milliseconds"
        ),
    ]
    score: Score
    weight: Count


class TruthSnapshotRecorded(WireModel):
    """A venue's report compared with the account's state: the truth score, each component, and
    what disagreed (docs/risk.md)."""

    venue: Identifier
    score: Annotated[
        Score, Field(description="the weighted mean of the component scores, rounded down")
    ]
    components: Annotated[list[TruthComponent], Field(min_length=5, max_length=5)]
    equity: Annotated[Decimal, Field(description="equity the venue reported, quote currency")]
    venue_ts_ns: Nanoseconds
    latency_ms: Milliseconds
    drifts: Annotated[Values, Field(description="symbol -> what we hold and what the venue reports")]
    orphan_order_ids: Annotated[
        list[Identifier],
        Field(description="orders the venue has open and we do not"),
        items_at_most(MAX_OPEN_ORDERS),
    ]
    missing_order_ids: Annotated[
        list[OrderId],
        Field(description="orders we have open (past the grace period) and the venue does not"),
    ]


class BreakerTransitioned(WireModel):
    """The circuit breaker moved, with the trigger and the values that moved it."""

    from_state: BreakerLevel
    to_state: BreakerLevel
    trigger: Literal[
        "truth_score",
        "tail_risk",
        "venue_quality",
        "daily_loss",
        "drawdown",
        "recovered",
        "operator",
        "operator_flatten",
        "operator_resume",
    ]
    reason: Annotated[
        str,
        Field(
            max_length=1000, description="the operator's reason; empty for an automatic transition"
        ),
        PlainText,
    ]
    values: Annotated[Values, Field(description="the values that caused the transition")]

    @model_validator(mode="after")
    def _moves(self) -> BreakerTransitioned:
        if self.from_state == self.to_state:
            raise ValueError("a breaker transition changes the breaker's state")
        return self


class VenueStatusChanged(WireModel):
    """A venue's rolling quality windows crossed a threshold."""

    venue: Identifier
    from_status: VenueStatus
    to_status: VenueStatus
    mean_slippage_bps: Annotated[Int64, Field(description="signed: positive when fills went against us")]
    mean_ack_latency_ms: Annotated[int, Field(ge=0), at_most(INT64_MAX)]
    samples: Annotated[
        int, Field(ge=1, description="the larger of the two windows' sample counts"), at_most(10_000)
    ]

    @model_validator(mode="after")
    def _moves(self) -> VenueStatusChanged:
        if self.from_status == self.to_status:
            raise ValueError("a venue status change changes the status")
        return self


class RegimeChanged(WireModel):
    """The market regime changed (SetRegime)."""

    from_regime: Regime
    to_regime: Regime
    reason: Reason


class TailRiskRecorded(WireModel):
    """A power-law tail exponent estimate; a breach when it is below the policy's minimum."""

    symbol: Identifier
    tail_exponent: Annotated[PositiveDecimal, Field(description="4 decimals")]
    min_tail_exponent: Annotated[
        PositiveDecimal, Field(description="the policy's minimum, 4 decimals")
    ]
    breach: bool
    sample_size: Annotated[int, Field(ge=1), at_most(MAX_SAMPLE_SIZE)]
    method: Identifier


class DayRolled(WireModel):
    """The budget day rolled at 00:00 UTC of command time; the daily loss budget starts afresh."""

    from_day: Annotated[
        int, Field(ge=0, description="days since 1970-01-01 (0 before the first roll)"), at_most(MAX_DAY)
    ]
    to_day: Annotated[int, Field(ge=0, description="days since 1970-01-01"), at_most(MAX_DAY)]
    closed_day_pnl: Annotated[
        Total, Field(description="realized PnL net of fees of the day that closed")
    ]


class CommandRecorded(WireModel):
    """The record of one decided command: the command as received, its outcome and its events."""

    command: Annotated[
        dict[str, JsonValue],
        Field(description="the command exactly as received (see commands/<type>.json)"),
    ]
    outcome: Literal["accepted", "rejected"]
    reason: Annotated[
        ReasonCode | None, Field(description="the reason code when rejected, else null")
    ]
    event_ids: Annotated[
        list[EventId], Field(description="the ids of the events the command produced, in order")
    ]
    event_types: Annotated[
        list[TypeName], Field(description="the type of each of those events, in the same order")
    ]

    @model_validator(mode="after")
    def _consistent(self) -> CommandRecorded:
        if self.outcome == "rejected" and self.reason is None:
            raise ValueError("a rejected command records its reason")
        if self.outcome == "accepted" and self.reason is not None:
            raise ValueError("an accepted command has no reason")
        if len(self.event_types) != len(self.event_ids):
            raise ValueError("event_types must name the type of each of event_ids")
        return self


class DlqPurged(WireModel):
    """An operator purged dead letters from the DLQ (`purge_dlq.v1`); trading state unchanged."""

    entry_ids: EntryIds
    reason: Reason
    actor: Identifier


class Envelope(WireModel):
    """One ledger record as stored (the canonical JSON in `state`, SPEC §2)."""

    event_id: EventId
    stream_id: StreamId
    version: Annotated[
        int, Field(ge=1, description="the record's version in its stream"), at_most(INT64_MAX)
    ]
    type: TypeName
    ts_ns: Nanoseconds
    command_id: Identifier
    correlation_id: Identifier | None
    causation_id: Identifier | None
    intent_id: Identifier | None
    phase_id: PhaseId | None
    actor: Identifier
    policy_hash: Annotated[
        Hash | None, Field(description="the active policy's hash; null before any policy is active")
    ]
    data: Annotated[dict[str, JsonValue], Field(description="the event's data: events/<type>.json")]
    prev_hash: Annotated[Hash, Field(description="the previous record's hash; 64 zeros first")]
    hash: Annotated[
        Hash, Field(description="SHA-256 of the canonical envelope with `hash` left out")
    ]


EVENT_DATA_MODELS: Final[dict[str, type[WireModel]]] = {
    POLICY_ACTIVATED: PolicyActivated,
    ACCOUNT_ARMED: AccountArmed,
    ACCOUNT_DISARMED: AccountDisarmed,
    ORDER_ACCEPTED: OrderAccepted,
    ORDER_REJECTED: OrderRejected,
    ORDER_CANCEL_REQUESTED: OrderCancelRequested,
    ORDER_ACKNOWLEDGED: OrderAcknowledged,
    ORDER_VENUE_REJECTED: OrderVenueRejected,
    ORDER_FILLED: OrderFilled,
    ORDER_CANCELLED: OrderCancelled,
    COMMAND_REJECTED: CommandRejected,
    TRUTH_RECORDED: TruthSnapshotRecorded,
    BREAKER_TRANSITIONED: BreakerTransitioned,
    VENUE_STATUS_CHANGED: VenueStatusChanged,
    REGIME_CHANGED: RegimeChanged,
    TAIL_RISK_RECORDED: TailRiskRecorded,
    DAY_ROLLED: DayRolled,
    DLQ_PURGED: DlqPurged,
    COMMAND_RECORDED: CommandRecorded,
}
"""The model of each record type's `data`, keyed by versioned type name."""
