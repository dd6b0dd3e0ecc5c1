"""The ledger itself, page by page: `events(first, after, ...)` with opaque cursors over ledger
positions. A page looks at a bounded number of records (`SCAN_LIMIT`), so a rare filter costs a
few short pages rather than one long request; every record is returned once, in position order."""

from __future__ import annotations

import base64
import binascii
from typing import Any, Final

import strawberry
from strawberry.types import Info

from commands.envelope import account_stream
from commands.ports import Record, RecordFilter

from ..auth import EVENTS
from ..ports import ConsoleError
from .context import allowed, services
from .orders import bounded
from .scalars import JSON, BigInt

MAX_PAGE: Final = 1000
MAX_TYPES: Final = 32
CURSOR_PREFIX: Final = "p:"
MAX_POSITION: Final = 2**63 - 1


def encode_cursor(position: int) -> str:
    return base64.urlsafe_b64encode(f"{CURSOR_PREFIX}{position}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The position a cursor stands for; ConsoleError BAD_CURSOR when it is not one of ours."""
    problem = ConsoleError("BAD_CURSOR", "after: not a cursor this API gave out (pass a pageInfo.endCursor or an edge's cursor)", 400)
    if not cursor or len(cursor) > 64:
        raise problem
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise problem from None
    digits = text.removeprefix(CURSOR_PREFIX)
    if not text.startswith(CURSOR_PREFIX) or not digits.isdigit() or not digits.isascii() or len(digits) > 19:
        raise problem
    position = int(digits)
    if position > MAX_POSITION:
        raise problem
    return position


@strawberry.type(description="A ledger record: an event or a command record, with its place in the hash chain.")
class LedgerEvent:
    position: BigInt
    stream_id: str
    version: BigInt
    type: str
    event_id: str | None
    ts_ns: BigInt | None
    command_id: str | None
    actor: str | None
    correlation_id: str | None
    causation_id: str | None
    intent_id: str | None
    phase_id: int | None
    policy_hash: str | None
    prev_hash: str | None
    hash: str | None
    data: JSON

    @classmethod
    def from_record(cls, record: Record) -> LedgerEvent:
        envelope: dict[str, Any] = record.envelope
        phase = envelope.get("phase_id")
        return cls(
            position=BigInt(record.position),
            stream_id=record.stream_id,
            version=BigInt(record.version),
            type=record.type,
            event_id=envelope.get("event_id"),
            ts_ns=envelope.get("ts_ns"),
            command_id=envelope.get("command_id"),
            actor=envelope.get("actor"),
            correlation_id=envelope.get("correlation_id"),
            causation_id=envelope.get("causation_id"),
            intent_id=envelope.get("intent_id"),
            phase_id=phase if isinstance(phase, int) else None,
            policy_hash=envelope.get("policy_hash"),
            prev_hash=envelope.get("prev_hash"),
            hash=envelope.get("hash"),
            data=JSON(envelope.get("data")),
        )


@strawberry.type
class EventEdge:
    cursor: str
    node: LedgerEvent


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str = strawberry.field(description="Pass as `after` for the next page: where this page's scan ended.")


@strawberry.type(description="A page of ledger records.")
class EventConnection:
    edges: list[EventEdge]
    page_info: PageInfo
    head_position: BigInt = strawberry.field(description="The ledger's last position when the page was read.")


def record_filter(
    types: list[str] | None, account: str | None, command_id: str | None, from_ts_ns: int | None, to_ts_ns: int | None
) -> RecordFilter:
    if types is not None and (len(types) > MAX_TYPES or any(not t or len(t) > 128 for t in types)):
        raise ConsoleError("INVALID_ARGUMENT", f"types: give at most {MAX_TYPES} record types of 1 to 128 characters", 400)
    if account is not None and not 0 < len(account) <= 128:
        raise ConsoleError("INVALID_ARGUMENT", "account: give an account id of 1 to 128 characters", 400)
    if command_id is not None and not 0 < len(command_id) <= 128:
        raise ConsoleError("INVALID_ARGUMENT", "commandId: give a command id of 1 to 128 characters", 400)
    if from_ts_ns is not None and to_ts_ns is not None and from_ts_ns > to_ts_ns:
        raise ConsoleError("INVALID_ARGUMENT", "fromTsNs is after toTsNs: give fromTsNs <= toTsNs", 400)
    return RecordFilter(
        types=tuple(types or ()),
        stream_ids=(account_stream(account),) if account is not None else (),
        command_id=command_id,
        from_ts_ns=from_ts_ns,
        to_ts_ns=to_ts_ns,
    )


@strawberry.type
class EventsQuery:
    @strawberry.field(description="Ledger records in position order, filtered, a page at a time (auditor).")
    async def events(
        self,
        info: Info[Any, Any],
        first: int = 100,
        after: str | None = None,
        types: list[str] | None = None,
        account: str | None = None,
        command_id: str | None = None,
        from_ts_ns: BigInt | None = None,
        to_ts_ns: BigInt | None = None,
    ) -> EventConnection:
        allowed(info, EVENTS, "events")
        bounded("first", first, MAX_PAGE)
        start = decode_cursor(after) if after is not None else 0
        where = record_filter(types, account, command_id, from_ts_ns, to_ts_ns)
        page = await services(info).data.events(start, first, where)
        edges = [EventEdge(cursor=encode_cursor(r.position), node=LedgerEvent.from_record(r)) for r in page.records]
        reached = max(page.scanned_to, start)
        return EventConnection(
            edges=edges,
            page_info=PageInfo(has_next_page=reached < page.head, end_cursor=encode_cursor(reached)),
            head_position=BigInt(page.head),
        )
