"""How one ledger record looks on JetStream: its subject, its message id and its headers
(docs/messaging.md, "The mirror"). The relay builds messages with it and `titan relay verify`
checks them with it, so the rule is written once."""

from __future__ import annotations

import hashlib
from typing import Any, Final

from commands.ports import Record

from . import subjects

ACCOUNT_STREAM_PREFIX: Final = "account-"
COMMAND_RECORD_TYPE: Final = "command.recorded.v1"


class UnmirrorableRecord(ValueError):
    """A record whose envelope lacks what the mirror needs to name it (its account, its id)."""


def account_of(record: Record) -> str:
    """The account a record belongs to: an event's stream `account-<id>`, or a command record's
    `data.command.account_id`."""
    stream_id = record.stream_id
    if stream_id.startswith(ACCOUNT_STREAM_PREFIX):
        return stream_id[len(ACCOUNT_STREAM_PREFIX) :]
    data = record.envelope.get("data")
    command = data.get("command") if isinstance(data, dict) else None
    account = command.get("account_id") if isinstance(command, dict) else None
    if not isinstance(account, str) or not account:
        raise UnmirrorableRecord(
            f"record at position {record.position} ({stream_id!r}) names no account: neither an "
            "account-<id> stream nor data.command.account_id"
        )
    return account


def message_id(record: Record) -> str:
    """The record's ledger-unique id (`Nats-Msg-Id`): its event id (`<command id>.<n>` for an
    event, `<command id>.cmd` for a command record)."""
    event_id = record.envelope.get("event_id")
    if not isinstance(event_id, str) or not event_id:
        raise UnmirrorableRecord(f"record at position {record.position} has no event_id")
    return event_id


def traceparent(record: Record) -> str:
    """A W3C trace context for the record: the trace is its correlation (or command) id, the span
    its chain hash, so every record of one command chain shares a trace and the value is the same
    however often the record is published."""
    envelope = record.envelope
    root = envelope.get("correlation_id") or envelope.get("command_id") or record.stream_id
    trace_id = hashlib.sha256(str(root).encode("utf-8")).hexdigest()[:32]
    span_id = str(envelope.get("hash", ""))[:16].ljust(16, "0")
    return f"00-{trace_id}-{span_id}-01"


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def mirror_subject(record: Record) -> str:
    """Where the record is published: `titan.evt.<account>.<type>`."""
    return subjects.event_subject(account_of(record), record.type)


def mirror_headers(record: Record, expected_last_sequence: int | None) -> dict[str, str]:
    """The headers of the record's message; `expected_last_sequence` is the stream sequence the
    publish must follow (JetStream refuses it otherwise), None to leave the precondition out."""
    envelope = record.envelope
    context = traceparent(record)
    headers = {
        subjects.MSG_ID: message_id(record),
        subjects.POSITION: str(record.position),
        subjects.STREAM_ID: record.stream_id,
        subjects.VERSION: str(record.version),
        subjects.RECORD_TYPE: record.type,
        subjects.COMMAND_ID: _text(envelope.get("command_id")),
        subjects.INTENT_ID: _text(envelope.get("intent_id")),
        subjects.PHASE_ID: _text(envelope.get("phase_id")),
        subjects.CHAIN_HASH: _text(envelope.get("hash")),
        subjects.PREV_HASH: _text(envelope.get("prev_hash")),
        subjects.TRACEPARENT: context,
        subjects.TITAN_TRACEPARENT: context,
    }
    if expected_last_sequence is not None:
        headers[subjects.EXPECTED_LAST_SEQUENCE] = str(expected_last_sequence)
    return headers
