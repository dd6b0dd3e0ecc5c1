"""The DLQ's read models (docs/dlq.md, docs/projections.md).

Two projections, fed from two sources:

- `dlq` (in the ledger registry, rebuilt by `titan projections rebuild` like every other model):
  folds the ledger's `dlq.purged.v1` events into `rm_dlq_purges`, one row per purged entry id:
  who purged it, why, when, and where the purge is in the ledger.
- `dlq_entries` (`DLQ_ENTRIES`, NOT in the ledger registry): `rm_dlq`, one row per `titan.dlq.v1`
  entry on the TITAN_DLQ stream, kept by `adapters.nats.dlq.DlqFeed`. Its tracked position is
  TITAN_DLQ's stream sequence, not a ledger position, so it can neither be rebuilt from the ledger
  nor be run by the ledger's projection runner (a rebuild would empty it).

A row's `status` is `open` when the entry arrives; the feed sets `replayed` when a later entry is
a replay of it that was refused again (its headers carry `Titan-Replay-Of`), and `purged` once a
purge of it is in `rm_dlq_purges`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from commands.ports import Record

from .model import Change, Column, Patch, Projection, Put, Table, account_of, each_record

DLQ_PURGED: Final = "dlq.purged.v1"
OPEN: Final = "open"
REPLAYED: Final = "replayed"
PURGED: Final = "purged"

DLQ: Final = Table(
    "rm_dlq",
    (
        Column("entry_id", "text", doc="the entry's id: cmd-<TITAN_CMD seq>-<16 hex of sha256(subject \\n payload)>"),
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
        Column("status", "text", default=OPEN, doc="open, replayed or purged"),
        Column("stream_seq", "integer", doc="the message's TITAN_CMD stream sequence"),
    ),
    key=("entry_id",),
    indexes=(("status", "last_seen_ns"),),
    doc="One row per dead-lettered message (from TITAN_DLQ).",
)

PURGES: Final = Table(
    "rm_dlq_purges",
    (
        Column("entry_id", "text", doc="the purged entry"),
        Column("account_id", "text", doc="the account the purge was recorded on"),
        Column("actor", "text", doc="who purged it"),
        Column("reason", "text", doc="why, in the operator's words"),
        Column("position", "integer", doc="ledger position of the dlq.purged.v1 event"),
        Column("ts_ns", "integer", doc="command time of the purge"),
        Column("command_id", "text", doc="the purge_dlq.v1 command"),
    ),
    key=("entry_id",),
    indexes=(("account_id", "position"),),
    doc="One row per DLQ entry purged by a recorded operator action (the last purge naming it).",
)

ENTRY_FIELDS: Final = frozenset(column.name for column in DLQ.columns)


def entry_put(entry: Mapping[str, Any]) -> Put:
    """The row change for one `titan.dlq.v1` entry (a dict of the row's fields); raise ValueError
    naming unknown fields."""
    unknown = sorted(set(entry) - ENTRY_FIELDS)
    if unknown:
        raise ValueError(f"DLQ entry has unknown fields {unknown}; a row has {sorted(ENTRY_FIELDS)}")
    return Put(DLQ.name, dict(entry))


def entry_row(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A row from a whole `titan.dlq.v1` entry (its JSON form): the fields the row keeps."""
    return {name: entry[name] for name in sorted(ENTRY_FIELDS - {"status"}) if name in entry}


def status_patch(entry_id: str, status: str) -> Patch:
    """Set the status of an entry's row (nothing when the row does not exist)."""
    return Patch(DLQ.name, (entry_id,), set={"status": status})


def fold_record(record: Record) -> list[Change]:
    """A `dlq.purged.v1` puts one purge row per entry id it names."""
    if record.type != DLQ_PURGED:
        return []
    envelope = record.envelope
    data: dict[str, Any] = envelope["data"]
    return [
        Put(
            PURGES.name,
            {
                "entry_id": entry_id,
                "account_id": account_of(record),
                "actor": data["actor"],
                "reason": data["reason"],
                "position": record.position,
                "ts_ns": envelope["ts_ns"],
                "command_id": envelope["command_id"],
            },
        )
        for entry_id in data["entry_ids"]
    ]


def _not_from_the_ledger(records: Sequence[Record]) -> list[Change]:
    """The DLQ's entries are not folded from the ledger: DlqFeed writes them from TITAN_DLQ."""
    return []


PROJECTION: Final = Projection(
    "dlq",
    (PURGES,),
    each_record(fold_record),
    doc="DLQ purges recorded in the ledger: entry, account, actor, reason, position.",
)

DLQ_ENTRIES: Final = Projection(
    "dlq_entries",
    (DLQ,),
    _not_from_the_ledger,
    doc="Dead-lettered messages from TITAN_DLQ (tracked by its stream sequence): subject, headers, "
    "payload, reason, error, deliveries, seen, status.",
)
