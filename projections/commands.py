"""The `commands` read model: one row per command record (every command ever decided)."""

from __future__ import annotations

from typing import Any, Final

from commands.ports import Record

from .model import Change, Column, Projection, Put, Table, each_record, is_command_record

COMMANDS: Final = Table(
    "rm_commands",
    (
        Column("command_id", "text"),
        Column("command_type", "text", doc="e.g. place_order.v1"),
        Column("account_id", "text"),
        Column("outcome", "text", doc="accepted or rejected"),
        Column("reason", "text", nullable=True, doc="the reason code when rejected"),
        Column("actor", "text", nullable=True),
        Column("correlation_id", "text", nullable=True),
        Column("ts_ns", "integer", doc="command time"),
        Column("event_ids", "json", doc="ids of the events it produced, in order"),
        Column("event_types", "json", doc="their types, in the same order"),
        Column("position", "integer", doc="ledger position of the command record"),
    ),
    key=("command_id",),
    indexes=(("account_id", "position"),),
    doc="One row per decided command.",
)


def fold_record(record: Record) -> list[Change]:
    """A command record puts its command's row."""
    if not is_command_record(record):
        return []
    envelope = record.envelope
    data: dict[str, Any] = envelope["data"]
    command: dict[str, Any] = data["command"]
    return [
        Put(
            COMMANDS.name,
            {
                "command_id": envelope["command_id"],
                "command_type": command.get("type", ""),
                "account_id": command.get("account_id", ""),
                "outcome": data["outcome"],
                "reason": data.get("reason"),
                "actor": envelope.get("actor"),
                "correlation_id": envelope.get("correlation_id"),
                "ts_ns": envelope["ts_ns"],
                "event_ids": data["event_ids"],
                "event_types": data["event_types"],
                "position": record.position,
            },
        )
    ]


PROJECTION: Final = Projection(
    "commands",
    (COMMANDS,),
    each_record(fold_record),
    doc="Every command record: id, type, account, outcome, reason, position.",
)
