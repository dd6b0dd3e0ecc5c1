"""The `truth` read model: each venue's latest truth snapshot per account, and every snapshot.

A `truth.snapshot_recorded.v1` (docs/risk.md, "Truth score") puts the (account, venue) row of
`rm_truth` — the latest score, its components, the equity the venue reported — and adds one row
to `rm_truth_history`, keyed by the snapshot's ledger position.
"""

from __future__ import annotations

from typing import Any, Final

from commands.ports import Record

from .model import Change, Column, Projection, Put, Table, account_of, each_record

TRUTH_RECORDED: Final = "truth.snapshot_recorded.v1"

TRUTH: Final = Table(
    "rm_truth",
    (
        Column("account_id", "text"),
        Column("venue", "text"),
        Column("score", "integer", doc="0-100, the latest snapshot's"),
        Column("components", "json", doc="[{component, value, score, weight}, ...]"),
        Column("equity", "decimal", doc="the equity the venue reported"),
        Column("venue_ts_ns", "integer", doc="the venue's time of the snapshot"),
        Column("latency_ms", "big_integer", doc="as the venue reported it (no upper bound on the wire)"),
        Column("drifts", "json", doc="symbol -> 'ours vs venue's', where they disagree"),
        Column("orphan_order_ids", "json"),
        Column("missing_order_ids", "json"),
        Column("ts_ns", "integer", doc="command time of the snapshot"),
        Column("position", "integer", doc="ledger position of the snapshot"),
    ),
    key=("account_id", "venue"),
    doc="One row per account and venue: its latest truth snapshot.",
)

TRUTH_HISTORY: Final = Table(
    "rm_truth_history",
    (
        Column("position", "integer", doc="ledger position of the snapshot"),
        Column("account_id", "text"),
        Column("venue", "text"),
        Column("score", "integer"),
        Column("components", "json"),
        Column("equity", "decimal"),
        Column("ts_ns", "integer", doc="command time of the snapshot"),
    ),
    key=("position",),
    indexes=(("account_id", "venue", "ts_ns"),),
    doc="One row per truth snapshot.",
)


def fold_record(record: Record) -> list[Change]:
    """A snapshot replaces its venue's latest row and adds a history row."""
    if record.type != TRUTH_RECORDED:
        return []
    envelope = record.envelope
    data: dict[str, Any] = envelope["data"]
    account = account_of(record)
    return [
        Put(
            TRUTH.name,
            {
                "account_id": account,
                "venue": data["venue"],
                "score": data["score"],
                "components": data["components"],
                "equity": data["equity"],
                "venue_ts_ns": data["venue_ts_ns"],
                "latency_ms": data["latency_ms"],
                "drifts": data["drifts"],
                "orphan_order_ids": data["orphan_order_ids"],
                "missing_order_ids": data["missing_order_ids"],
                "ts_ns": envelope["ts_ns"],
                "position": record.position,
            },
        ),
        Put(
            TRUTH_HISTORY.name,
            {
                "position": record.position,
                "account_id": account,
                "venue": data["venue"],
                "score": data["score"],
                "components": data["components"],
                "equity": data["equity"],
                "ts_ns": envelope["ts_ns"],
            },
        ),
    ]


PROJECTION: Final = Projection(
    "truth",
    (TRUTH, TRUTH_HISTORY),
    each_record(fold_record),
    doc="Per account and venue: the latest truth score and components; every snapshot's score.",
)
