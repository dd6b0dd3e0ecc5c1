"""Dead letters: what the intake refused or could not decide (rm_dlq, fed from TITAN_DLQ), with
the purges recorded in the ledger (rm_dlq_purges)."""

from __future__ import annotations

from typing import Any

import strawberry
from strawberry.types import Info

from ..auth import READ
from .context import allowed, services
from .orders import bounded
from .scalars import JSON, BigInt

MAX_SCAN = 10_000
"""Dead letters looked at when filtering by status (a DLQ is drained, not a log)."""


@strawberry.type(description="A purge recorded in the ledger.")
class DlqPurge:
    actor: str
    reason: str
    position: BigInt
    ts_ns: BigInt
    command_id: str


@strawberry.type(description="A dead letter: the original message and why it was refused.")
class DlqEntry:
    entry_id: str
    subject: str
    headers: JSON
    payload: str
    payload_encoding: str
    reason: str
    error: str | None
    delivery_count: int
    first_seen_ns: BigInt
    last_seen_ns: BigInt
    account_id: str | None
    command_id: str | None
    status: str = strawberry.field(description="open, replayed or purged.")
    stream_seq: BigInt
    purge: DlqPurge | None

    @classmethod
    def from_row(cls, row: dict[str, Any], purge: dict[str, Any] | None) -> DlqEntry:
        plain = {name: row[name] for name in _ENTRY_FIELDS if name != "purge"}
        if purge is not None:
            plain["status"] = "purged"
        return cls(
            **plain,
            purge=None
            if purge is None
            else DlqPurge(
                actor=purge["actor"], reason=purge["reason"], position=purge["position"], ts_ns=purge["ts_ns"], command_id=purge["command_id"]
            ),
        )


_ENTRY_FIELDS = tuple(DlqEntry.__annotations__)


@strawberry.type
class DlqQuery:
    @strawberry.field(description="Dead letters, newest first (status: open, replayed or purged).")
    async def dlq(self, info: Info[Any, Any], status: str | None = None, last: int = 100) -> list[DlqEntry]:
        allowed(info, READ, "dlq")
        bounded("last", last)
        data = services(info).data
        rows = await data.latest("rm_dlq", "stream_seq", last if status is None else MAX_SCAN)
        purges = {row["entry_id"]: row for row in await data.latest("rm_dlq_purges", "position", MAX_SCAN)}
        entries = [DlqEntry.from_row(row, purges.get(row["entry_id"])) for row in rows]
        if status is not None:
            entries = [entry for entry in entries if entry.status == status]
        return entries[:last]
