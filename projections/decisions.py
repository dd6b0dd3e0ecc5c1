"""The `decisions` read model: one row per order decision, what `titan explain` reads.

A row holds who asked, when, from which phase and intent, under which policy; every pre-trade
check with its value, limit and verdict; the outcome; and the ledger positions of every record
the deciding command appended, so an explanation can fetch the exact events (a breaker move or a
day roll decided with the order included) without scanning the ledger.

This fold takes the whole command at once (its events, then its command record): the positions
of a command's events are only all known together. One PlaceOrder makes one row; a command that
opens several orders (Flatten) makes one row per order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from commands.ports import Record

from .model import Change, Column, Projection, Put, Table, account_of, is_command_record

ORDER_ACCEPTED: Final = "order.accepted.v1"
ORDER_REJECTED: Final = "order.rejected.v1"

DECISIONS: Final = Table(
    "rm_decisions",
    (
        Column("order_id", "text"),
        Column("command_id", "text"),
        Column("account_id", "text"),
        Column("command_type", "text", nullable=True, doc="e.g. place_order.v1"),
        Column("outcome", "text", doc="accepted or rejected"),
        Column("reason", "text", nullable=True, doc="the reason code when rejected"),
        Column("actor", "text", nullable=True),
        Column("phase_id", "integer", nullable=True),
        Column("intent_id", "text", nullable=True),
        Column("correlation_id", "text", nullable=True),
        Column("causation_id", "text", nullable=True),
        Column("policy_hash", "text", nullable=True, doc="the policy in force"),
        Column("ts_ns", "integer", doc="command time"),
        Column("venue", "text"),
        Column("symbol", "text"),
        Column("side", "text"),
        Column("checks", "json", doc="[{check, value, limit, verdict}, ...] in the order they ran"),
        Column("event_position", "integer", doc="ledger position of the order event"),
        Column("event_positions", "json", doc="positions of every event of the command"),
        Column("event_types", "json", doc="types of those events, in the same order"),
        Column("command_position", "integer", nullable=True, doc="position of the command record"),
    ),
    key=("order_id",),
    indexes=(("command_id",),),
    doc="One row per order decision (PlaceOrder, or each order a Flatten opens).",
)


def fold(records: Sequence[Record]) -> list[Change]:
    """One row per order event among a command's records, with the positions of all of them."""
    decided = [r for r in records if r.type == ORDER_ACCEPTED or r.type == ORDER_REJECTED]
    if not decided:
        return []
    events = [r for r in records if not is_command_record(r)]
    command_record = records[-1] if is_command_record(records[-1]) else None
    command_type: Any = None
    if command_record is not None:
        command_type = command_record.envelope["data"]["command"].get("type")
    changes: list[Change] = []
    for record in decided:
        envelope = record.envelope
        data: dict[str, Any] = envelope["data"]
        accepted = record.type == ORDER_ACCEPTED
        changes.append(
            Put(
                DECISIONS.name,
                {
                    "order_id": data["order_id"],
                    "command_id": envelope["command_id"],
                    "account_id": account_of(record),
                    "command_type": command_type,
                    "outcome": "accepted" if accepted else "rejected",
                    "reason": None if accepted else data["reason"],
                    "actor": envelope.get("actor"),
                    "phase_id": envelope.get("phase_id"),
                    "intent_id": envelope.get("intent_id"),
                    "correlation_id": envelope.get("correlation_id"),
                    "causation_id": envelope.get("causation_id"),
                    "policy_hash": envelope.get("policy_hash"),
                    "ts_ns": envelope["ts_ns"],
                    "venue": data["venue"],
                    "symbol": data["symbol"],
                    "side": data["side"],
                    "checks": data["checks"],
                    "event_position": record.position,
                    "event_positions": [r.position for r in events],
                    "event_types": [r.type for r in events],
                    "command_position": command_record.position if command_record else None,
                },
            )
        )
    return changes


PROJECTION: Final = Projection(
    "decisions",
    (DECISIONS,),
    fold,
    doc="One row per order decision: who, when, phase, intent, policy, every check, outcome.",
)
