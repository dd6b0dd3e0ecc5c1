"""Commands on the wire (SPEC §3): one strict model per command, discriminated by `type`."""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import Field, TypeAdapter, ValidationInfo, model_validator

from .base import (
    INT_DIGITS,
    Bound,
    CommandId,
    Decimal,
    Identifier,
    Milliseconds,
    Nanoseconds,
    PlainText,
    PositiveDecimal,
    WireModel,
    at_most,
    is_recorded,
    items_at_most,
    recorded_context,
    refuse,
)
from .policy import MAX_OPEN_ORDERS, PolicyDocument

PhaseId = Annotated[int, Field(ge=1, le=3, description="1 Scavenger, 2 Hunter, 3 Sentinel")]
Side = Literal["BUY", "SELL"]
Reason = Annotated[str, Field(min_length=1, max_length=1000), PlainText]
"""Why, in the operator's or venue's words: 1 to 1000 characters, no control characters."""

MAX_POSITIONS: Final = 1000
"""Positions a venue snapshot may list."""
MAX_SAMPLE_SIZE: Final = 1_000_000_000
MAX_PURGE_ENTRIES: Final = 100
"""Dead-letter entries one `purge_dlq.v1` may name."""
NOTIONAL_DIGITS: Final = INT_DIGITS
"""quantity × price stays below 10^10 quote units, so that it fits a signed 64-bit integer of 1e-8."""


def notional_problem(quantity: str, price: str, price_field: str) -> str | None:
    """What makes quantity × price too large for the stores, or None (both within their digits)."""
    q_whole, _, q_fraction = quantity.partition(".")
    p_whole, _, p_fraction = price.partition(".")
    product = int(q_whole + q_fraction) * int(p_whole + p_fraction)
    if product >= 10 ** (NOTIONAL_DIGITS + len(q_fraction) + len(p_fraction)):
        return f"quantity × {price_field} must be below 10^{NOTIONAL_DIGITS} (quote currency)"
    return None


def _check_notional(info: ValidationInfo, quantity: str, prices: dict[str, str | None]) -> None:
    if is_recorded(info.context):
        return
    for name, price in prices.items():
        problem = None if price is None else notional_problem(quantity, price, name)
        if problem is not None:
            raise refuse(problem)


class CommandBase(WireModel):
    """Fields every command carries. `ts_ns` is the time of receipt and decides; the issuer's
    own clock goes in `issued_ts_ns`."""

    command_id: CommandId
    account_id: Identifier
    ts_ns: Nanoseconds
    issued_ts_ns: Nanoseconds | None = None
    actor: Identifier
    correlation_id: Identifier | None = None
    causation_id: Identifier | None = None


class RiskCommandBase(CommandBase):
    """Risk-affecting commands also carry the policy hash they were built under, and their origin."""

    policy_hash: Annotated[
        str, Field(max_length=128, description="the policy hash the issuer built this under"), PlainText
    ]
    intent_id: Identifier | None = None
    phase_id: PhaseId | None = None


class PlaceOrder(RiskCommandBase):
    """Place a new order; quantity × price and quantity × reference_price are below 10^10."""

    type: Literal["place_order.v1"] = "place_order.v1"
    phase_id: PhaseId
    intent_id: Identifier
    client_order_id: Identifier
    venue: Identifier
    symbol: Identifier
    side: Side
    order_type: Literal["LIMIT", "MARKET"] = "LIMIT"
    quantity: PositiveDecimal
    price: PositiveDecimal | None = None
    reference_price: PositiveDecimal
    reduce_only: bool = False

    @model_validator(mode="after")
    def _price_matches_type(self, info: ValidationInfo) -> PlaceOrder:
        if self.order_type == "LIMIT" and self.price is None:
            raise ValueError("a LIMIT order needs a price")
        if self.order_type == "MARKET" and self.price is not None:
            raise ValueError("a MARKET order takes no price (it is checked at reference_price)")
        _check_notional(info, self.quantity, {"price": self.price, "reference_price": self.reference_price})
        return self


class CancelOrder(CommandBase):
    type: Literal["cancel_order.v1"] = "cancel_order.v1"
    order_id: Identifier
    reason: Reason


class RecordOrderAck(CommandBase):
    type: Literal["record_order_ack.v1"] = "record_order_ack.v1"
    order_id: Identifier
    venue_order_id: Identifier


class RecordVenueReject(CommandBase):
    type: Literal["record_venue_reject.v1"] = "record_venue_reject.v1"
    order_id: Identifier
    venue_reason: Reason


class RecordFill(CommandBase):
    """A venue's fill of an order; quantity × price is below 10^10."""

    type: Literal["record_fill.v1"] = "record_fill.v1"
    order_id: Identifier
    fill_id: Identifier
    quantity: PositiveDecimal
    price: PositiveDecimal
    fee: Decimal = "0"
    liquidity: Literal["maker", "taker"] = "taker"

    @model_validator(mode="after")
    def _notional_fits(self, info: ValidationInfo) -> RecordFill:
        _check_notional(info, self.quantity, {"price": self.price})
        return self


class RecordCancelled(CommandBase):
    type: Literal["record_cancelled.v1"] = "record_cancelled.v1"
    order_id: Identifier
    venue_reason: Reason


class VenuePosition(WireModel):
    symbol: Identifier
    quantity: Decimal


class RecordTruthSnapshot(CommandBase):
    type: Literal["record_truth_snapshot.v1"] = "record_truth_snapshot.v1"
    venue: Identifier
    positions: Annotated[list[VenuePosition], items_at_most(MAX_POSITIONS)]
    open_order_ids: Annotated[list[Identifier], items_at_most(MAX_OPEN_ORDERS)]
    equity: Decimal
    venue_ts_ns: Nanoseconds
    latency_ms: Milliseconds


class ActivatePolicy(CommandBase):
    type: Literal["activate_policy.v1"] = "activate_policy.v1"
    policy: PolicyDocument


class SetRegime(CommandBase):
    type: Literal["set_regime.v1"] = "set_regime.v1"
    regime: Literal["RISK_ON", "NEUTRAL", "RISK_OFF", "CRASH"]
    reason: Reason


class RecordTailRisk(CommandBase):
    type: Literal["record_tail_risk.v1"] = "record_tail_risk.v1"
    symbol: Identifier
    tail_exponent: PositiveDecimal
    sample_size: Annotated[int, Field(ge=1), at_most(MAX_SAMPLE_SIZE)]
    method: Identifier


class Halt(CommandBase):
    type: Literal["halt.v1"] = "halt.v1"
    reason: Reason


class Flatten(RiskCommandBase):
    type: Literal["flatten.v1"] = "flatten.v1"
    reason: Reason


class Resume(CommandBase):
    type: Literal["resume.v1"] = "resume.v1"
    reason: Reason


class Arm(CommandBase):
    type: Literal["arm.v1"] = "arm.v1"
    reason: Reason


class Disarm(CommandBase):
    type: Literal["disarm.v1"] = "disarm.v1"
    reason: Reason


def _duplicate_problem(values: list[str]) -> str | None:
    seen: set[str] = set()
    for index, value in enumerate(values):
        if value in seen:
            return f"each entry id at most once (item {index} repeats an earlier one)"
        seen.add(value)
    return None


EntryIds = Annotated[
    list[Identifier],
    Field(min_length=1, description="the dead-letter entries (titan.dlq.v1 entry_id), each once"),
    items_at_most(MAX_PURGE_ENTRIES),
    Bound(_duplicate_problem, {"uniqueItems": True}),
]
"""1 to 100 distinct DLQ entry ids."""


class PurgeDlq(CommandBase):
    """An operator removes dead letters from TITAN_DLQ: recorded first (who, why, which), removed
    from the stream after the purge is accepted (docs/dlq.md). Always accepted."""

    type: Literal["purge_dlq.v1"] = "purge_dlq.v1"
    entry_ids: EntryIds
    reason: Reason


AnyCommand = Annotated[
    PlaceOrder
    | CancelOrder
    | RecordOrderAck
    | RecordVenueReject
    | RecordFill
    | RecordCancelled
    | RecordTruthSnapshot
    | ActivatePolicy
    | SetRegime
    | RecordTailRisk
    | Halt
    | Flatten
    | Resume
    | Arm
    | Disarm
    | PurgeDlq,
    Field(discriminator="type"),
]
"""Any titan command, told apart by its `type`."""

COMMANDS: TypeAdapter[AnyCommand] = TypeAdapter(AnyCommand)
"""Validates a command with every bound applied (new input); see `parse_recorded_command`."""


def parse_recorded_command(raw: Any) -> AnyCommand:
    """Re-validate a command as an earlier titan recorded it: formats hold, the bounds of new
    input (docs/schemas.md, "Bounds") do not, so replay re-decides it exactly as it was decided.
    Raises pydantic's ValidationError."""
    return COMMANDS.validate_python(raw, context=recorded_context())

COMMAND_MODELS: tuple[type[CommandBase], ...] = (
    PlaceOrder,
    CancelOrder,
    RecordOrderAck,
    RecordVenueReject,
    RecordFill,
    RecordCancelled,
    RecordTruthSnapshot,
    ActivatePolicy,
    SetRegime,
    RecordTailRisk,
    Halt,
    Flatten,
    Resume,
    Arm,
    Disarm,
    PurgeDlq,
)


def command_type(model: type[CommandBase]) -> str:
    """The versioned wire type of a command model, e.g. `place_order.v1`."""
    field = model.model_fields["type"]
    assert isinstance(field.default, str)
    return field.default
