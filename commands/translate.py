"""Wire commands (schemas/) -> the core's command values. The one place the two meet."""

from __future__ import annotations

from typing import Any

from schemas import commands as wire
from schemas.policy import policy_hash


class InvalidCommand(ValueError):
    """A command that passed its schema but cannot be decided; it is never recorded."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class UnsupportedCommand(InvalidCommand):
    """A valid command type that this version of the core does not decide yet."""


def to_core(command: wire.AnyCommand, core: Any) -> Any:
    """Build the core's command for a validated wire command; raise UnsupportedCommand."""
    c = core.commands
    if isinstance(command, wire.PlaceOrder):
        return c.PlaceOrder(
            command.command_id,
            command.ts_ns,
            command.policy_hash,
            command.phase_id,
            command.intent_id,
            command.client_order_id,
            command.venue,
            command.symbol,
            command.side,
            command.order_type,
            command.quantity,
            command.price or "",
            command.reference_price,
            command.reduce_only,
        )
    if isinstance(command, wire.CancelOrder):
        return c.CancelOrder(command.command_id, command.ts_ns, command.order_id, command.reason)
    if isinstance(command, wire.RecordOrderAck):
        return c.RecordOrderAck(command.command_id, command.ts_ns, command.order_id, command.venue_order_id)
    if isinstance(command, wire.RecordVenueReject):
        return c.RecordVenueReject(command.command_id, command.ts_ns, command.order_id, command.venue_reason)
    if isinstance(command, wire.RecordFill):
        return c.RecordFill(
            command.command_id,
            command.ts_ns,
            command.order_id,
            command.fill_id,
            command.quantity,
            command.price,
            command.fee,
            command.liquidity,
        )
    if isinstance(command, wire.RecordCancelled):
        return c.RecordCancelled(command.command_id, command.ts_ns, command.order_id, command.venue_reason)
    if isinstance(command, wire.ActivatePolicy):
        document = command.policy.model_dump(mode="json")
        try:
            parsed = core.policy.policy_from_document(document)
        except core.policy.PolicyError as exc:
            raise InvalidCommand("policy", str(exc)) from exc
        return c.ActivatePolicy(command.command_id, command.ts_ns, document, policy_hash(command.policy), parsed)
    if isinstance(command, wire.Arm):
        return c.Arm(command.command_id, command.ts_ns, command.reason)
    if isinstance(command, wire.Disarm):
        return c.Disarm(command.command_id, command.ts_ns, command.reason)
    raise UnsupportedCommand(
        "type",
        f"{command.type} is a valid titan command, but this version does not decide it yet "
        "(it arrives with the Brain: truth score, breaker, regime, tail risk, operator actions)"
    )
