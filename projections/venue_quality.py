"""The `venue_quality` read model: each venue's quality status per account.

A `venue.status_changed.v1` (docs/risk.md, "Venue quality") puts the (account, venue) row: the
status it moved to, from which, and the window's means and sample count that moved it. A venue
with no row has never left OK. The means are the transition's; the live windows between
transitions are `titan state`'s `venues`.
"""

from __future__ import annotations

from typing import Any, Final

from commands.ports import Record

from .model import Change, Column, Projection, Put, Table, account_of, each_record

VENUE_STATUS_CHANGED: Final = "venue.status_changed.v1"

VENUE_QUALITY: Final = Table(
    "rm_venue_quality",
    (
        Column("account_id", "text"),
        Column("venue", "text"),
        Column("status", "text", doc="OK, DEGRADED or HALTED"),
        Column("from_status", "text", doc="the status before the last transition"),
        Column(
            "mean_slippage_bps",
            "big_integer",
            doc="the window's mean at the last transition (a fill price has no upper bound)",
        ),
        Column("mean_ack_latency_ms", "integer", doc="the window's mean at the last transition"),
        Column("samples", "integer", doc="samples in the window at the last transition"),
        Column("since_ts_ns", "integer", doc="command time of the last transition"),
        Column("position", "integer", doc="ledger position of the last transition"),
    ),
    key=("account_id", "venue"),
    doc="One row per account and venue whose status has ever changed.",
)


def fold_record(record: Record) -> list[Change]:
    """A status change replaces its venue's row."""
    if record.type != VENUE_STATUS_CHANGED:
        return []
    data: dict[str, Any] = record.envelope["data"]
    return [
        Put(
            VENUE_QUALITY.name,
            {
                "account_id": account_of(record),
                "venue": data["venue"],
                "status": data["to_status"],
                "from_status": data["from_status"],
                "mean_slippage_bps": data["mean_slippage_bps"],
                "mean_ack_latency_ms": data["mean_ack_latency_ms"],
                "samples": data["samples"],
                "since_ts_ns": record.envelope["ts_ns"],
                "position": record.position,
            },
        )
    ]


PROJECTION: Final = Projection(
    "venue_quality",
    (VENUE_QUALITY,),
    each_record(fold_record),
    doc="Per account and venue: quality status and the means of its last transition.",
)
