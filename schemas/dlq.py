"""Dead-letter entries on the wire: `titan.dlq.v1`, one JSON message per entry on TITAN_DLQ
(docs/dlq.md).

An entry keeps the original message as received — subject, headers and payload — so that it can
be read, triaged and replayed. Those three are copies of untrusted input: they are bounded in
size but not in content (a payload may hold anything, control characters included; `titan dlq
show` escapes them). Everything titan writes itself (the reason code, the error text, ids) obeys
the usual bounds.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Annotated, Final, Literal

from pydantic import ConfigDict, Field

from .base import INT64_MAX, CommandId, Identifier, Nanoseconds, Text, WireModel

SCHEMA: Final = "titan.dlq.v1"

MAX_SUBJECT_CHARS: Final = 4096
MAX_HEADERS: Final = 256
MAX_HEADER_NAME_CHARS: Final = 256
MAX_HEADER_VALUE_CHARS: Final = 4096
MAX_PAYLOAD_CHARS: Final = 1_400_000
"""Room for a payload of 1 MiB (the intake's limit) written as base64."""

ENTRY_ID_PATTERN: Final = r"^cmd-[0-9]{1,20}-[0-9a-f]{16}$"
REASON_PATTERN: Final = r"^[A-Z][A-Z0-9_]{0,63}$"

EntryId = Annotated[
    str,
    Field(
        pattern=ENTRY_ID_PATTERN,
        description="cmd-<TITAN_CMD stream sequence>-<first 16 hex of sha256(subject \\n payload)>",
    ),
]
"""A DLQ entry's id; also a valid Identifier, so a `purge_dlq.v1` can name it."""

DlqReason = Annotated[
    str,
    Field(
        pattern=REASON_PATTERN,
        description="why the message is a dead letter: SCHEMA_INVALID, BAD_SIGNATURE, MAX_DELIVER, …",
    ),
]

Subject = Annotated[str, Field(max_length=MAX_SUBJECT_CHARS)]
HeaderName = Annotated[str, Field(min_length=1, max_length=MAX_HEADER_NAME_CHARS)]
HeaderValue = Annotated[str, Field(max_length=MAX_HEADER_VALUE_CHARS)]


def entry_id_for(stream_seq: int, subject: str, data: bytes) -> str:
    """The entry id of a message: the same for the intake and the DLQ router, so JetStream's
    duplicate window and the view's upsert both dedupe a message dead-lettered twice."""
    digest = hashlib.sha256(subject.encode("utf-8", "surrogateescape") + b"\n" + data).hexdigest()
    return f"cmd-{stream_seq}-{digest[:16]}"


class DlqEntry(WireModel):
    """One dead-lettered message (`titan.dlq.v1`)."""

    schema_: Annotated[Literal["titan.dlq.v1"], Field(alias="schema")] = "titan.dlq.v1"
    entry_id: EntryId
    subject: Annotated[Subject, Field(description="the original subject; empty when the message was gone")]
    headers: Annotated[
        dict[HeaderName, HeaderValue],
        Field(max_length=MAX_HEADERS, description="the original headers, name -> value"),
    ]
    payload: Annotated[
        str,
        Field(
            max_length=MAX_PAYLOAD_CHARS,
            description="the original payload: its text, or base64 when it is not valid UTF-8",
        ),
    ]
    payload_encoding: Literal["utf-8", "base64"]
    payload_truncated: Annotated[
        bool,
        Field(description="true when only the start of a payload too large to keep whole is held"),
    ] = False
    reason: DlqReason
    error: Annotated[Text | None, Field(description="what was wrong, in words (bounded)")]
    delivery_count: Annotated[int, Field(ge=0, le=INT64_MAX)]
    first_seen_ns: Nanoseconds
    last_seen_ns: Nanoseconds
    stream_seq: Annotated[
        int, Field(ge=0, le=INT64_MAX, description="the message's TITAN_CMD stream sequence")
    ]
    account_id: Annotated[Identifier | None, Field(description="from the subject, when it decodes")]
    command_id: Annotated[CommandId | None, Field(description="from the payload, when it parses")]

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)

    def payload_bytes(self) -> bytes:
        """The original payload's bytes (its start only when `payload_truncated`)."""
        if self.payload_encoding == "base64":
            return base64.b64decode(self.payload, validate=True)
        return self.payload.encode("utf-8")

    def to_json_bytes(self) -> bytes:
        """The entry's wire form: JSON with `schema` first among its keys as pydantic orders them."""
        return self.model_dump_json(by_alias=True).encode("utf-8")

    def to_json(self) -> dict[str, object]:
        """The entry as plain JSON values (`schema`, not `schema_`)."""
        return self.model_dump(mode="json", by_alias=True)


def parse_entry(raw: bytes) -> DlqEntry:
    """An entry from its JSON bytes; raise pydantic's ValidationError (or ValueError)."""
    return DlqEntry.model_validate_json(raw)


__all__ = [
    "SCHEMA",
    "DlqEntry",
    "DlqReason",
    "EntryId",
    "entry_id_for",
    "parse_entry",
]
