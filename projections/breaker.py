"""The `breaker` read model: each account's circuit-breaker state, and every transition.

A `breaker.transitioned.v1` (docs/risk.md, "Circuit breaker") puts the account's `rm_breaker`
row — the state it moved to, since when, by which trigger — and adds a row to
`rm_breaker_transitions`, keyed by the event's ledger position. An account with no row has never
left NORMAL. The trigger's values are the column `trigger_values` (`values` is a reserved word in
SQL, and the stores do not quote names).
"""

from __future__ import annotations

from typing import Any, Final

from commands.ports import Record

from .model import Change, Column, Projection, Put, Table, account_of, each_record

BREAKER_TRANSITIONED: Final = "breaker.transitioned.v1"

BREAKER: Final = Table(
    "rm_breaker",
    (
        Column("account_id", "text"),
        Column("state", "text", doc="NORMAL, DEFENSIVE or HALTED"),
        Column("since_ts_ns", "integer", doc="command time of the transition into it"),
        Column(
            "trigger", "text", doc="what moved it there (truth_score, operator, recovered, ...)"
        ),
        Column("reason", "text", doc="the operator's reason; empty for automatic moves"),
        Column("actor", "text", nullable=True),
        Column("position", "integer", doc="ledger position of the transition"),
    ),
    key=("account_id",),
    doc="One row per account whose breaker has ever moved: its current state.",
)

TRANSITIONS: Final = Table(
    "rm_breaker_transitions",
    (
        Column("position", "integer", doc="ledger position of the transition"),
        Column("account_id", "text"),
        Column("from_state", "text"),
        Column("to_state", "text"),
        Column("trigger", "text"),
        Column("reason", "text"),
        Column("trigger_values", "json", doc="the values that moved it, name -> decimal string"),
        Column("actor", "text", nullable=True),
        Column("ts_ns", "integer", doc="command time"),
    ),
    key=("position",),
    indexes=(("account_id", "ts_ns"),),
    doc="One row per breaker transition.",
)


def fold_record(record: Record) -> list[Change]:
    """A transition sets the account's state and adds a transition row."""
    if record.type != BREAKER_TRANSITIONED:
        return []
    envelope = record.envelope
    data: dict[str, Any] = envelope["data"]
    account = account_of(record)
    actor = envelope.get("actor")
    return [
        Put(
            BREAKER.name,
            {
                "account_id": account,
                "state": data["to_state"],
                "since_ts_ns": envelope["ts_ns"],
                "trigger": data["trigger"],
                "reason": data["reason"],
                "actor": actor,
                "position": record.position,
            },
        ),
        Put(
            TRANSITIONS.name,
            {
                "position": record.position,
                "account_id": account,
                "from_state": data["from_state"],
                "to_state": data["to_state"],
                "trigger": data["trigger"],
                "reason": data["reason"],
                "trigger_values": data["values"],
                "actor": actor,
                "ts_ns": envelope["ts_ns"],
            },
        ),
    ]


PROJECTION: Final = Projection(
    "breaker",
    (BREAKER, TRANSITIONS),
    each_record(fold_record),
    doc="Per account: the breaker's state, since when and why; every transition.",
)
