"""The `dlq` read model: dead-lettered messages (`titan.dlq.v1` entries), ready for the messaging
issue. It is empty for now: no ledger record feeds it yet.

Row shape (one row per entry, see docs/projections.md): the entry id, the original subject,
headers and payload, the reason code and error text, how many deliveries were tried, when it was
first and last seen (UTC nanoseconds), and its status (`open`, then `replayed` or `purged`).

`entry_put(entry)` turns a `titan.dlq.v1` entry into the row change; `fold_record` is where the
ledger record types of DLQ entries, replays and purges will be folded once they exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from commands.ports import Record

from .model import Change, Column, Projection, Put, Table, each_record

DLQ: Final = Table(
    "rm_dlq",
    (
        Column("entry_id", "text", doc="the entry's id (the original Nats-Msg-Id, else stream:seq)"),
        Column("subject", "text", doc="the subject the message was first published on"),
        Column("headers", "json", default={}, doc="the original headers, name -> value"),
        Column("payload", "text", doc="the original payload (UTF-8, or base64 when binary)"),
        Column("payload_encoding", "text", default="utf-8", doc="utf-8 or base64"),
        Column("reason", "text", doc="a reason code: SCHEMA_INVALID, BAD_SIGNATURE, MAX_DELIVER…"),
        Column("error", "text", nullable=True, doc="the error text, if any"),
        Column("delivery_count", "integer", default=1),
        Column("first_seen_ns", "integer"),
        Column("last_seen_ns", "integer"),
        Column("account_id", "text", nullable=True, doc="from the subject, when it names one"),
        Column("command_id", "text", nullable=True, doc="from the payload, when it parses"),
        Column("status", "text", default="open", doc="open, replayed or purged"),
    ),
    key=("entry_id",),
    indexes=(("status", "last_seen_ns"),),
    doc="One row per dead-lettered message.",
)

ENTRY_FIELDS: Final = frozenset(column.name for column in DLQ.columns)


def entry_put(entry: Mapping[str, Any]) -> Put:
    """The row change for one `titan.dlq.v1` entry; raise ValueError naming unknown fields."""
    unknown = sorted(set(entry) - ENTRY_FIELDS)
    if unknown:
        raise ValueError(f"DLQ entry has unknown fields {unknown}; a row has {sorted(ENTRY_FIELDS)}")
    return Put(DLQ.name, dict(entry))


def fold_record(record: Record) -> list[Change]:
    """No ledger record feeds the DLQ yet (the messaging issue adds its types here)."""
    return []


PROJECTION: Final = Projection(
    "dlq",
    (DLQ,),
    each_record(fold_record),
    doc="Dead-lettered messages: subject, headers, payload, reason, error, deliveries, seen.",
)
