"""Commands that arrive older than the account's last decided command (SPEC §2, Determinism).

Time in a stream never runs backwards, so a late command is normally refused `STALE_COMMAND`.
From rules version 2 on, two kinds are never refused for lateness:

- reports of what already happened at a venue (ack, venue reject, fill, cancelled, truth
  snapshot): facts, decided at the account's current time; the command record keeps the time
  the issuer stamped;
- the kill switch (halt, flatten): an operator's halt always takes effect.

A DLQ purge (`purge_dlq.v1`, added after rules 2) is never refused for lateness under any rules
version: it changes no trading state, and an operator's action always takes effect. It is decided
at the account's current time.

Everything else (orders, cancel requests, policy, regime, tail risk, resume, arm, disarm) stays
refused: each of them asks for something new, and asking late is asking under stale facts.
"""

from __future__ import annotations

from .commands import (
    Command,
    Flatten,
    Halt,
    PurgeDlq,
    RecordCancelled,
    RecordFill,
    RecordOrderAck,
    RecordTruthSnapshot,
    RecordVenueReject,
)
from .policy import RULES_V2


def decided_at(command: Command, last_ts_ns: int, rules_version: int) -> Command | None:
    """The command as it is decided: itself when on time, a copy at `last_ts_ns` when it is a late
    fact or kill switch under rules >= 2, or None when it is refused as stale."""
    if command.ts_ns >= last_ts_ns:
        return command
    if isinstance(command, PurgeDlq):
        return PurgeDlq(command.command_id, last_ts_ns, command.entry_ids, command.reason, command.actor)
    if rules_version < RULES_V2:
        return None
    return _at(command, last_ts_ns)


def _at(c: Command, ts_ns: int) -> Command | None:
    if isinstance(c, RecordFill):
        return RecordFill(c.command_id, ts_ns, c.order_id, c.fill_id, c.quantity, c.price, c.fee, c.liquidity)
    if isinstance(c, RecordOrderAck):
        return RecordOrderAck(c.command_id, ts_ns, c.order_id, c.venue_order_id, c.reported_ts_ns)
    if isinstance(c, RecordVenueReject):
        return RecordVenueReject(c.command_id, ts_ns, c.order_id, c.venue_reason)
    if isinstance(c, RecordCancelled):
        return RecordCancelled(c.command_id, ts_ns, c.order_id, c.venue_reason)
    if isinstance(c, RecordTruthSnapshot):
        return RecordTruthSnapshot(
            c.command_id, ts_ns, c.venue, c.symbols, c.quantities, c.open_order_ids, c.equity,
            c.venue_ts_ns, c.latency_ms,
        )
    if isinstance(c, Halt):
        return Halt(c.command_id, ts_ns, c.reason)
    if isinstance(c, Flatten):
        return Flatten(c.command_id, ts_ns, c.reason, c.policy_hash, c.phase_id, c.intent_id)
    return None
