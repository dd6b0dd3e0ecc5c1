"""Wire commands (schemas/) -> the core's command values. The one place the two meet."""

from __future__ import annotations

from typing import Any, assert_never

from schemas import commands as wire
from schemas.policy import policy_hash


class InvalidCommand(ValueError):
    """A command that passed its schema but cannot be decided; it is never recorded."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def to_core(command: wire.AnyCommand, core: Any) -> Any:
    """Build the core's command for a validated wire command; raise InvalidCommand."""
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
    if isinstance(command, wire.RecordTruthSnapshot):
        return c.RecordTruthSnapshot(
            command.command_id,
            command.ts_ns,
            command.venue,
            [p.symbol for p in command.positions],
            [p.quantity for p in command.positions],
            list(command.open_order_ids),
            command.equity,
            command.venue_ts_ns,
            command.latency_ms,
        )
    if isinstance(command, wire.SetRegime):
        return c.SetRegime(command.command_id, command.ts_ns, command.regime, command.reason)
    if isinstance(command, wire.RecordTailRisk):
        return c.RecordTailRisk(
            command.command_id, command.ts_ns, command.symbol, command.tail_exponent, command.sample_size, command.method
        )
    if isinstance(command, wire.Halt):
        return c.Halt(command.command_id, command.ts_ns, command.reason)
    if isinstance(command, wire.Resume):
        return c.Resume(command.command_id, command.ts_ns, command.reason)
    if isinstance(command, wire.Flatten):
        return c.Flatten(
            command.command_id, command.ts_ns, command.reason, command.policy_hash, command.phase_id or 0, command.intent_id or ""
        )
    if isinstance(command, wire.PurgeDlq):
        return c.PurgeDlq(command.command_id, command.ts_ns, list(command.entry_ids), command.reason, command.actor)
    assert_never(command)
