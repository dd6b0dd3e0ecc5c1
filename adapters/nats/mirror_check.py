"""`titan relay verify` and `titan ledger verify --mirror`: read the whole mirror stream and the
ledger side by side and prove they match record for record (position, id, hash, payload), in
order, each once; and `titan relay status`: head, tail, lag.

A mirror behind its ledger is not a mismatch (the relay may be catching up): the report says how
many records are still to mirror. A mirror ahead of its ledger is: the ledger lost its tail.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, Final

from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext

from commands.ports import Ledger, Record

from . import subjects
from .mirror_message import UnmirrorableRecord, message_id, mirror_subject
from .stream_tail import read_tail

FETCH_BATCH: Final = 1000
FETCH_TIMEOUT_S: Final = 5.0

# Stable codes of `MirrorReport.code`.
MIRROR_INCOMPLETE: Final = "MIRROR_INCOMPLETE"
MIRROR_SEQUENCE_GAP: Final = "MIRROR_SEQUENCE_GAP"
MIRROR_UNREADABLE: Final = "MIRROR_UNREADABLE"
MIRROR_MISSING: Final = "MIRROR_MISSING"
MIRROR_DUPLICATE: Final = "MIRROR_DUPLICATE"
MIRROR_ORDER: Final = "MIRROR_ORDER"
MIRROR_MISMATCH: Final = "MIRROR_MISMATCH"
LEDGER_MISSING: Final = "LEDGER_MISSING"
LEDGER_TRUNCATED: Final = "LEDGER_TRUNCATED"


@dataclass(frozen=True, slots=True)
class MirrorReport:
    """The outcome of comparing the mirror with the ledger: ok, or the first mismatch."""

    ok: bool
    stream: str
    stream_messages: int
    stream_last_seq: int
    mirrored_position: int
    ledger_head_position: int
    ledger_records: int
    unmirrored: int
    code: str | None = None
    position: int | None = None
    stream_seq: int | None = None
    expected: str | None = None
    found: str | None = None
    message: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The report as a JSON-ready dict (the `--json` output)."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class MirrorStatus:
    """`titan relay status`: the ledger's head, the stream's tail, the lag between them."""

    stream: str
    ledger_head_position: int
    ledger_records: int
    stream_last_seq: int
    stream_messages: int
    mirrored_position: int
    lag_records: int

    def as_dict(self) -> dict[str, Any]:
        """The status as a JSON-ready dict."""
        return asdict(self)


async def mirror_status(ledger: Ledger, js: JetStreamContext, stream: str = subjects.EVT_STREAM) -> MirrorStatus:
    """Read the ledger's head and the stream's tail."""
    tail = await read_tail(js, stream)
    head_position, _hash, count = await asyncio.to_thread(ledger.head)
    return MirrorStatus(
        stream, head_position, count, tail.seq, tail.messages, tail.position, max(count - tail.messages, 0)
    )


async def verify_mirror(ledger: Ledger, js: JetStreamContext, stream: str = subjects.EVT_STREAM) -> MirrorReport:
    """Compare every message of the stream (up to its last sequence now) with the ledger."""
    info = await js.stream_info(stream)
    first_seq, last_seq, count = info.state.first_seq, info.state.last_seq, info.state.messages
    check = _Comparison(ledger, stream, last_seq, count)
    if count and first_seq != 1:
        return await check.fail(
            MIRROR_INCOMPLETE, 1, first_seq, "stream sequence 1", f"the stream starts at sequence {first_seq}",
            f"stream {stream} no longer holds sequences 1..{first_seq - 1} (removed by its limits or by "
            "hand): the mirror is not whole",
        )
    if count:
        async for message in _messages(js, stream, last_seq):
            finding = check.feed(message)
            if finding is not None:
                return await check.fail(*finding)
    return await check.finish()


class _Comparison:
    """Walks the ledger alongside the stream's messages."""

    def __init__(self, ledger: Ledger, stream: str, last_seq: int, count: int) -> None:
        self.ledger = ledger
        self.stream = stream
        self.last_seq = last_seq
        self.count = count
        self.records: Iterator[Record] = ledger.iter_all(0, FETCH_BATCH)
        self.pending: Record | None = None
        self.seq = 0
        self.position = 0
        self.checked = 0

    def _next_record(self) -> Record | None:
        if self.pending is not None:
            record, self.pending = self.pending, None
            return record
        return next(self.records, None)

    def feed(self, message: Msg) -> tuple[str, int | None, int | None, str, str, str] | None:
        """Check one message; return a finding (code, position, seq, expected, found, message)."""
        seq = message.metadata.sequence.stream
        headers = message.headers or {}
        if seq != self.seq + 1:
            return (
                MIRROR_SEQUENCE_GAP, None, seq, f"sequence {self.seq + 1}", f"sequence {seq}",
                f"stream {self.stream} skips from sequence {self.seq} to {seq}: messages were removed",
            )
        self.seq = seq
        text = headers.get(subjects.POSITION, "")
        if not text.isdigit():
            return (
                MIRROR_UNREADABLE, None, seq, f"a {subjects.POSITION} header", repr(text),
                f"stream sequence {seq} ({message.subject}) carries no ledger position",
            )
        position = int(text)
        if position == self.position:
            return (
                MIRROR_DUPLICATE, position, seq, f"a position after {self.position}", str(position),
                f"position {position} is in the mirror twice (again at stream sequence {seq})",
            )
        if position < self.position:
            return (
                MIRROR_ORDER, position, seq, f"a position after {self.position}", str(position),
                f"stream sequence {seq} holds position {position}, after position {self.position}",
            )
        record = self._next_record()
        if record is None:
            return (
                LEDGER_TRUNCATED, position, seq, "a ledger record", "the end of the ledger",
                (f"the mirror holds position {position} (stream sequence {seq}) but the ledger ends at "
                f"position {self.position}: the ledger is shorter than its mirror (a truncated tail)"),
            )
        if record.position < position:
            return (
                MIRROR_MISSING, record.position, seq, f"position {record.position}", f"position {position}",
                (f"ledger position {record.position} is missing from the mirror (stream sequence {seq} "
                f"holds position {position})"),
            )
        if record.position > position:
            return (
                LEDGER_MISSING, position, seq, f"position {position}", f"position {record.position}",
                (f"the mirror holds position {position} (stream sequence {seq}) but the ledger has no "
                f"record there (its next is position {record.position})"),
            )
        mismatch = _mismatch(record, message, headers)
        if mismatch is not None:
            field, expected, found = mismatch
            return (
                MIRROR_MISMATCH, position, seq, expected, found,
                f"position {position} (stream sequence {seq}): the mirror's {field} differs from the ledger's",
            )
        self.position = position
        self.checked += 1
        return None

    async def fail(
        self, code: str, position: int | None, seq: int | None, expected: str, found: str, message: str
    ) -> MirrorReport:
        return _report(await self._counts(), self, code, position, seq, expected, found, message)

    async def finish(self) -> MirrorReport:
        counts = await self._counts()
        if self.seq != self.last_seq:
            return _report(
                counts, self, MIRROR_SEQUENCE_GAP, None, self.seq + 1, f"sequence {self.last_seq}",
                f"sequence {self.seq}", f"stream {self.stream} ended at sequence {self.seq} before {self.last_seq}",
            )
        return _report(counts, self, None, None, None, None, None, None)

    async def _counts(self) -> tuple[int, int]:
        head_position, _hash, records = await asyncio.to_thread(self.ledger.head)
        return head_position, records


def _mismatch(record: Record, message: Msg, headers: dict[str, str]) -> tuple[str, str, str] | None:
    try:
        expected_id = message_id(record)
        expected_subject = mirror_subject(record)
    except UnmirrorableRecord as error:
        return "record", "a record the mirror can name", str(error)
    for field, expected, found in (
        ("message id", expected_id, headers.get(subjects.MSG_ID, "")),
        ("hash", str(record.envelope.get("hash")), headers.get(subjects.CHAIN_HASH, "")),
        ("subject", expected_subject, message.subject),
    ):
        if expected != found:
            return field, expected, found
    if message.data != record.state:
        return "payload", f"{len(record.state)} bytes of the record's canonical JSON", f"{len(message.data)} other bytes"
    return None


def _report(
    counts: tuple[int, int],
    check: _Comparison,
    code: str | None,
    position: int | None,
    seq: int | None,
    expected: str | None,
    found: str | None,
    message: str | None,
) -> MirrorReport:
    head_position, records = counts
    return MirrorReport(
        ok=code is None,
        stream=check.stream,
        stream_messages=check.count,
        stream_last_seq=check.last_seq,
        mirrored_position=check.position,
        ledger_head_position=head_position,
        ledger_records=records,
        unmirrored=max(records - check.checked, 0) if code is None else 0,
        code=code,
        position=position,
        stream_seq=seq,
        expected=expected,
        found=found,
        message=message,
    )


async def _messages(js: JetStreamContext, stream: str, last_seq: int) -> Any:
    """Every message of the stream from sequence 1 through `last_seq`, in order."""
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE, inactive_threshold=60.0, max_ack_pending=-1
    )
    subscription = await js.pull_subscribe(f"{subjects.EVT_PREFIX}.>", stream=stream, config=config)
    try:
        seen = 0
        deadline = time.monotonic() + FETCH_TIMEOUT_S
        while seen < last_seq:
            try:
                batch = await subscription.fetch(FETCH_BATCH, timeout=FETCH_TIMEOUT_S)
            except TimeoutError:
                if time.monotonic() > deadline:
                    return
                continue
            deadline = time.monotonic() + FETCH_TIMEOUT_S
            for message in batch:
                seq = message.metadata.sequence.stream
                if seq > last_seq:
                    return
                seen = seq
                yield message
    finally:
        with contextlib.suppress(Exception):
            await subscription.unsubscribe()
