"""Messages to the execution engines (SPEC §4, docs/messaging.md "The execution gateway"): what the
gateway sends on `titan.exec.<venue>.place|cancel` for each accepted order and cancel request.

Payloads are canonical JSON (`schemas.canonical.canonical_bytes` of `model_dump(mode="json")`);
the JSON Schemas are committed as `schemas/json/execution/place.v1.json` and `cancel.v1.json`.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import ConfigDict, Field, model_validator

from .base import INT64_MAX, CommandId, Identifier, Nanoseconds, PositiveDecimal, WireModel
from .canonical import canonical_bytes
from .commands import Side
from .events import (
    CancelReason,
    ClientOrderId,
    Hash,
    OrderId,
    OrderIntentId,
    OrderPhaseId,
    OrderType,
)

PLACE_SCHEMA: Final = "titan.exec.place.v1"
CANCEL_SCHEMA: Final = "titan.exec.cancel.v1"

Position = Annotated[int, Field(ge=1, le=INT64_MAX, description="the ledger position of the event the message is for")]
DecisionTime = Annotated[
    Nanoseconds, Field(description="when titan decided (the event's ts_ns), UTC nanoseconds since the epoch")
]
PolicyHash = Annotated[
    Hash,
    Field(
        description="the policy hash the deciding command carried (= the account's active policy "
        "hash when it was decided)"
    ),
]


class ExecPlace(WireModel):
    """Place an order titan accepted (a PlaceOrder, or a Flatten's reduce-only closing order).
    Execution refuses it, with `record_venue_reject.v1` and venue_reason `POLICY_HASH_MISMATCH`,
    when `policy_hash` is not the account's active policy hash as it last learned it."""

    schema_: Annotated[Literal["titan.exec.place.v1"], Field(alias="schema")] = "titan.exec.place.v1"
    account_id: Identifier
    order_id: OrderId
    client_order_id: ClientOrderId
    venue: Identifier
    symbol: Identifier
    side: Side
    order_type: OrderType
    quantity: PositiveDecimal
    price: Annotated[PositiveDecimal | None, Field(description="the limit price; null for a MARKET order")]
    reference_price: PositiveDecimal
    reduce_only: bool
    policy_hash: PolicyHash
    command_id: Annotated[CommandId, Field(description="the command that decided the order")]
    intent_id: OrderIntentId
    phase_id: OrderPhaseId
    position: Position
    ts_ns: DecisionTime

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)

    @model_validator(mode="after")
    def _price_matches_type(self) -> ExecPlace:
        if self.order_type == "LIMIT" and self.price is None:
            raise ValueError("a LIMIT order needs a price")
        if self.order_type == "MARKET" and self.price is not None:
            raise ValueError("a MARKET order has no price (null)")
        return self

    def wire(self) -> dict[str, Any]:
        """The document as plain JSON values (`schema`, not `schema_`)."""
        return self.model_dump(mode="json", by_alias=True)

    def payload(self) -> bytes:
        """The message's payload: the document's canonical JSON."""
        return canonical_bytes(self.wire())


class ExecCancel(WireModel):
    """Cancel an order sent before (a CancelOrder, or a Flatten's cancel of an open order). Never
    refused for its policy hash: a cancel only reduces risk."""

    schema_: Annotated[Literal["titan.exec.cancel.v1"], Field(alias="schema")] = "titan.exec.cancel.v1"
    account_id: Identifier
    order_id: OrderId
    venue: Annotated[Identifier, Field(description="the order's venue, as its place said")]
    reason: CancelReason
    policy_hash: Annotated[
        Hash,
        Field(
            description="the cancelling command's policy hash (a Flatten's), or for a CancelOrder "
            "(which carries none) the account's active policy hash when the cancel was decided"
        ),
    ]
    command_id: Annotated[CommandId, Field(description="the command that requested the cancel")]
    position: Position
    ts_ns: DecisionTime

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)

    def wire(self) -> dict[str, Any]:
        """The document as plain JSON values (`schema`, not `schema_`)."""
        return self.model_dump(mode="json", by_alias=True)

    def payload(self) -> bytes:
        """The message's payload: the document's canonical JSON."""
        return canonical_bytes(self.wire())


EXEC_MODELS: Final[dict[str, type[WireModel]]] = {"place": ExecPlace, "cancel": ExecCancel}
"""The execution message models by kind (the subject's last token)."""


def parse_exec(kind: str, raw: bytes) -> ExecPlace | ExecCancel:
    """An execution message of a kind (`place`, `cancel`) from its payload; raise ValueError
    (pydantic's ValidationError is one) when it is not one."""
    if kind == "place":
        return ExecPlace.model_validate_json(raw)
    if kind == "cancel":
        return ExecCancel.model_validate_json(raw)
    raise ValueError(f"an execution message is place or cancel, not {kind!r}")


__all__ = [
    "CANCEL_SCHEMA",
    "EXEC_MODELS",
    "PLACE_SCHEMA",
    "ExecCancel",
    "ExecPlace",
    "parse_exec",
]
