"""The dead-letter queue on JetStream (docs/dlq.md): entries, the router, the view's feed.

- `entry_for(...)`: the `titan.dlq.v1` entry of a message; `dlq_subject(entry)`: where it goes.
- `dead_letter(js, msg, reason, error, now_ns=)`: the intake's way in: publish the entry of a
  JetStream-delivered message to TITAN_DLQ (`Nats-Msg-Id` = entry id) and await the ack. It does
  not ack the original: the intake does, after this returns.
- `DlqRouter`: the `titan-dlq-router` consumer on TITAN_ADVISORY. A MAX_DELIVERIES or
  MSG_TERMINATED advisory names a TITAN_CMD sequence; the router writes the message's entry, removes
  the message from TITAN_CMD, then acks the advisory. A failure naks with a delay and retries.
- `DlqFeed`: keeps `rm_dlq` (projections.dlq.DLQ_ENTRIES) from TITAN_DLQ, exactly once: the
  stream sequence it applied is tracked in the same store transaction as the rows.
- `read_entries(js, limit=)`, `find_entries`, `delete_entry(js, entry_id)`: for `titan dlq`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import nats.errors
import nats.js.errors
import orjson
from nats.aio.msg import Msg
from nats.js.api import RawStreamMsg
from nats.js.client import JetStreamContext
from pydantic import ValidationError

from projections import dlq as dlq_view
from projections.model import Change
from projections.store import Batch, ReadModelStore, TrackingMoved
from schemas.base import MAX_TEXT_CHARS
from schemas.dlq import (
    MAX_HEADER_NAME_CHARS,
    MAX_HEADER_VALUE_CHARS,
    MAX_HEADERS,
    MAX_SUBJECT_CHARS,
    DlqEntry,
    entry_id_for,
    parse_entry,
)

from . import subjects

log = logging.getLogger("titan.dlq")

MAX_DELIVER: Final = "MAX_DELIVER"
TERMINATED: Final = "TERMINATED"

MAX_ENTRY_BYTES: Final = 900_000
"""An entry's JSON must fit NATS's default max_payload (1 MiB) with its headers: a payload that
would not is kept cut (its start), and the entry says so (`payload_truncated`)."""
NO_MESSAGE: Final = 10037
"""JetStream's error code for "no message found"."""

_IDENTIFIER: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")
_COMMAND_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,119}$")
_CONTROL: Final = re.compile("[\x00-\x1f\x7f-\x9f]")
_EPOCH: Final = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


# Entries ---------------------------------------------------------------------------------------


def plain_text(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """`text` as bounded plain text: control characters escaped (`\\n`, `\\x1b`…), at most `limit`
    characters (an ellipsis marks a cut)."""
    escaped = _CONTROL.sub(lambda found: found.group().encode("unicode_escape").decode("ascii"), text)
    escaped = escaped.encode("utf-8", "backslashreplace").decode("utf-8")  # lone surrogates
    return escaped if len(escaped) <= limit else escaped[: limit - 1] + "…"


def _account_of(subject: str) -> str | None:
    try:
        account, _ = subjects.parse_command_subject(subject)
    except ValueError:
        return None
    return account if _IDENTIFIER.match(account) else None


def _command_id_of(data: bytes) -> str | None:
    try:
        value = orjson.loads(data)
    except (orjson.JSONDecodeError, RecursionError, ValueError):
        return None
    command_id = value.get("command_id") if isinstance(value, dict) else None
    return command_id if isinstance(command_id, str) and _COMMAND_ID.match(command_id) else None


def _payload_text(data: bytes) -> tuple[str, str]:
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), "base64"


def _headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    kept: dict[str, str] = {}
    for name, value in (headers or {}).items():
        if len(kept) >= MAX_HEADERS:
            break
        if not isinstance(name, str) or not 1 <= len(name) <= MAX_HEADER_NAME_CHARS:
            continue
        kept[name] = str(value)[:MAX_HEADER_VALUE_CHARS]
    return kept


def entry_for(
    subject: str,
    headers: Mapping[str, str] | None,
    data: bytes,
    stream_seq: int,
    reason: str,
    error: str | None,
    delivery_count: int,
    first_seen_ns: int,
    last_seen_ns: int,
) -> DlqEntry:
    """The `titan.dlq.v1` entry of a message. Never refuses a message: whatever it holds is kept
    (bounded), and what titan writes itself (the error) is made plain text."""
    payload, encoding = _payload_text(data)
    fields: dict[str, Any] = {
        "entry_id": entry_id_for(stream_seq, subject, data),
        "subject": subject[:MAX_SUBJECT_CHARS],
        "headers": _headers(headers),
        "payload": payload,
        "payload_encoding": encoding,
        "reason": reason,
        "error": None if error is None else plain_text(error),
        "delivery_count": max(0, delivery_count),
        "first_seen_ns": max(0, first_seen_ns),
        "last_seen_ns": max(0, last_seen_ns, first_seen_ns),
        "stream_seq": stream_seq,
        "account_id": _account_of(subject),
        "command_id": _command_id_of(data),
    }
    entry = DlqEntry.model_validate(fields)
    size = len(entry.to_json_bytes())
    kept = len(data)
    while size > MAX_ENTRY_BYTES and kept > 0:
        kept = max(0, kept * MAX_ENTRY_BYTES // size - 4096)
        payload, encoding = _payload_text(data[:kept])
        note = f"payload of {len(data)} bytes cut to its first {kept} to fit the DLQ"
        fields.update(
            payload=payload,
            payload_encoding=encoding,
            payload_truncated=True,
            error=plain_text(f"{error}; {note}" if error else note),
        )
        entry = DlqEntry.model_validate(fields)
        size = len(entry.to_json_bytes())
    return entry


def dlq_subject(entry: DlqEntry) -> str:
    """Where an entry is published: `titan.dlq.<account token, or _ when unknown>.<reason>`."""
    account = subjects.token(entry.account_id) if entry.account_id else "_"
    return f"{subjects.DLQ_PREFIX}.{account}.{entry.reason}"


async def publish_entry(js: JetStreamContext, entry: DlqEntry, *, timeout_s: float = 5.0) -> int:
    """Publish an entry to TITAN_DLQ and await the ack; return its stream sequence (the first
    copy's when JetStream's duplicate window recognised the id)."""
    ack = await js.publish(
        dlq_subject(entry),
        entry.to_json_bytes(),
        timeout=timeout_s,
        stream=subjects.DLQ_STREAM,
        headers={subjects.MSG_ID: entry.entry_id},
    )
    return int(ack.seq)


def ns_of(moment: datetime.datetime | None, default_ns: int) -> int:
    """UTC nanoseconds of a timestamp from nats-py (microsecond precision), else the default."""
    if moment is None:
        return default_ns
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return (moment - _EPOCH) // datetime.timedelta(microseconds=1) * 1000


async def dead_letter(js: JetStreamContext, msg: Msg, reason: str, error: str, *, now_ns: int) -> DlqEntry:
    """Write the DLQ entry of a message the intake refuses, and await its PubAck. The original is
    not acked here: the intake acks it after this returns (so a crash in between redelivers it, and
    the same entry id is written again)."""
    metadata = msg.metadata
    entry = entry_for(
        msg.subject,
        msg.headers,
        msg.data,
        metadata.sequence.stream,
        reason,
        error,
        metadata.num_delivered or 1,
        ns_of(metadata.timestamp, now_ns),
        now_ns,
    )
    await publish_entry(js, entry)
    return entry


def _no_message(error: nats.js.errors.APIError) -> bool:
    return isinstance(error, nats.js.errors.NotFoundError) or error.err_code == NO_MESSAGE


# The router ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Advisory:
    """What a MAX_DELIVERIES or MSG_TERMINATED advisory says about a TITAN_CMD message."""

    reason: str
    stream_seq: int
    deliveries: int

    @property
    def error(self) -> str:
        if self.reason == MAX_DELIVER:
            return f"not acknowledged after {self.deliveries} deliveries (max_deliver reached)"
        return f"terminated after {self.deliveries} deliveries"


def read_advisory(subject: str, data: bytes) -> Advisory:
    """Parse an advisory; raise ValueError when it is not one the router handles."""
    if subject.startswith(subjects.MAX_DELIVERIES_ADVISORY_PREFIX + "."):
        reason = MAX_DELIVER
    elif subject.startswith(subjects.MSG_TERMINATED_ADVISORY_PREFIX + "."):
        reason = TERMINATED
    else:
        raise ValueError(f"not a max-deliveries or terminated advisory: {plain_text(subject, 200)}")
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"advisory is not JSON: {exc}") from None
    seq = value.get("stream_seq") if isinstance(value, dict) else None
    deliveries = value.get("deliveries", 0) if isinstance(value, dict) else 0
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise ValueError("advisory has no stream_seq")
    if not isinstance(deliveries, int) or isinstance(deliveries, bool):
        deliveries = 0
    return Advisory(reason, seq, deliveries)


class DlqRouter:
    """Moves TITAN_CMD messages named by captured advisories into TITAN_DLQ (docs/dlq.md)."""

    def __init__(
        self,
        js: JetStreamContext,
        *,
        clock_ns: Callable[[], int] = time.time_ns,
        batch: int = 64,
        fetch_timeout_s: float = 1.0,
        retry_delay_s: float = 5.0,
    ) -> None:
        self.js = js
        self.clock_ns = clock_ns
        self.batch = batch
        self.fetch_timeout_s = fetch_timeout_s
        self.retry_delay_s = retry_delay_s
        self.routed = 0
        self.failures = 0
        self._sub: JetStreamContext.PullSubscription | None = None

    async def _subscription(self) -> JetStreamContext.PullSubscription:
        if self._sub is None:
            self._sub = await self.js.pull_subscribe_bind(
                durable=subjects.DLQ_ROUTER_CONSUMER, stream=subjects.ADVISORY_STREAM
            )
        return self._sub

    async def route_once(self) -> int:
        """Fetch one batch of advisories and route each; return how many were routed (a fetch
        that times out is normal: 0)."""
        sub = await self._subscription()
        try:
            messages = await sub.fetch(self.batch, timeout=self.fetch_timeout_s)
        except (TimeoutError, nats.errors.TimeoutError):
            return 0
        routed = 0
        for message in messages:
            if await self._route(message):
                routed += 1
        self.routed += routed
        return routed

    async def _route(self, message: Msg) -> bool:
        try:
            advisory = read_advisory(message.subject, message.data)
        except ValueError as exc:
            log.warning("DLQ router: dropping an advisory it cannot read: %s", exc)
            await message.ack()
            return False
        try:
            await self.route(advisory)
        except Exception as exc:  # noqa: BLE001 - every failure is retried: an advisory is never lost
            self.failures += 1
            log.warning(
                "DLQ router: TITAN_CMD sequence %d not routed (%s); retrying in %.0f s",
                advisory.stream_seq, plain_text(str(exc), 300), self.retry_delay_s,
            )
            with contextlib.suppress(Exception):
                await message.nak(delay=self.retry_delay_s)
            return False
        await message.ack_sync()
        return True

    async def route(self, advisory: Advisory) -> DlqEntry:
        """Write the entry of the message an advisory names, then remove the message from
        TITAN_CMD. A message already gone (terminated ones are removed) gets an entry with what
        the advisory says and an empty payload."""
        now_ns = self.clock_ns()
        try:
            found: RawStreamMsg | None = await self.js.get_msg(subjects.CMD_STREAM, advisory.stream_seq)
        except nats.js.errors.APIError as exc:
            if not _no_message(exc):
                raise
            found = None
        if found is None:
            entry = entry_for(
                "", {}, b"", advisory.stream_seq, advisory.reason,
                advisory.error + "; the message was no longer in TITAN_CMD", advisory.deliveries, now_ns, now_ns,
            )
        else:
            entry = entry_for(
                found.subject or "", found.headers, found.data or b"", advisory.stream_seq, advisory.reason,
                advisory.error, advisory.deliveries, ns_of(found.time, now_ns), now_ns,
            )
        await publish_entry(self.js, entry)
        if found is not None:
            try:
                await self.js.delete_msg(subjects.CMD_STREAM, advisory.stream_seq)
            except nats.js.errors.APIError as exc:
                if not _no_message(exc):
                    raise
        return entry

    async def run(self, stop: asyncio.Event) -> None:
        """Route advisories until `stop` is set; NATS errors back off (0.5 s doubling to 5 s)."""
        pause = 0.5
        try:
            while not stop.is_set():
                try:
                    await self.route_once()
                    pause = 0.5
                except (nats.errors.Error, nats.js.errors.Error, OSError) as exc:
                    log.warning("DLQ router: %s; retrying in %.1f s", plain_text(str(exc), 300), pause)
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(stop.wait(), pause)
                    pause = min(pause * 2, 5.0)
        finally:
            await self.close()

    async def close(self) -> None:
        """Unsubscribe the pull subscription (before any drain: FIELD-NOTES)."""
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


# Reading TITAN_DLQ -----------------------------------------------------------------------------


async def _next_message(js: JetStreamContext, seq: int) -> RawStreamMsg | None:
    """The first TITAN_DLQ message at or after `seq`, or None (gaps are skipped)."""
    try:
        return await js.get_msg(subjects.DLQ_STREAM, seq, subject=f"{subjects.DLQ_PREFIX}.>", next=True)
    except nats.js.errors.APIError as exc:
        if _no_message(exc):
            return None
        raise


async def scan(
    js: JetStreamContext, after: int = 0, *, until: int | None = None, limit: int | None = None
) -> list[tuple[int, RawStreamMsg]]:
    """TITAN_DLQ's messages after sequence `after` (up to `until`, at most `limit`), in order."""
    found: list[tuple[int, RawStreamMsg]] = []
    seq = after + 1
    while limit is None or len(found) < limit:
        if until is not None and seq > until:
            break
        message = await _next_message(js, seq)
        if message is None or message.seq is None or (until is not None and message.seq > until):
            break
        found.append((message.seq, message))
        seq = message.seq + 1
    return found


Unreadable = Callable[[int, str], None]
"""Told of a TITAN_DLQ message that is not a `titan.dlq.v1` entry: its sequence and why."""


def _log_unreadable(seq: int, problem: str) -> None:
    log.warning("TITAN_DLQ sequence %d is not a titan.dlq.v1 entry: %s", seq, problem)


def _entry_of(seq: int, message: RawStreamMsg, unreadable: Unreadable) -> DlqEntry | None:
    try:
        return parse_entry(message.data or b"")
    except (ValidationError, ValueError) as exc:
        first = exc.errors(include_url=False, include_input=False)[0] if isinstance(exc, ValidationError) else None
        where = ".".join(str(part) for part in first["loc"]) if first else ""
        problem = f"{where}: {first['msg']}" if first else str(exc)
        unreadable(seq, plain_text(problem, 300))
        return None


def _collector(problems: list[tuple[int, str]]) -> Unreadable:
    def collect(seq: int, problem: str) -> None:
        problems.append((seq, problem))

    return collect


async def read_entries(
    js: JetStreamContext, *, limit: int, unreadable: Unreadable = _log_unreadable
) -> list[tuple[int, DlqEntry]]:
    """The last `limit` entries of TITAN_DLQ as (stream sequence, entry), oldest first. A message
    that is not an entry is reported to `unreadable` (default: a warning) and left out."""
    info = await js.stream_info(subjects.DLQ_STREAM)
    first, last = info.state.first_seq, info.state.last_seq
    if info.state.messages == 0 or limit <= 0:
        return []
    window = limit
    while True:
        start = max(first, last - window + 1)
        problems: list[tuple[int, str]] = []
        collect = _collector(problems)
        entries: list[tuple[int, DlqEntry]] = []
        for seq, message in await scan(js, start - 1, until=last):
            entry = _entry_of(seq, message, collect)
            if entry is not None:
                entries.append((seq, entry))
        if len(entries) >= limit or start <= first:
            break
        window *= 4  # deleted messages or unreadable ones: look further back
    for seq, problem in problems:
        unreadable(seq, problem)
    return entries[-limit:]


async def find_entries(
    js: JetStreamContext, entry_ids: Iterable[str], *, unreadable: Unreadable = _log_unreadable
) -> dict[str, list[tuple[int, DlqEntry]]]:
    """Where in TITAN_DLQ each entry id is (a message dead-lettered twice after the duplicate
    window is there twice): entry id -> [(sequence, entry)], [] when absent."""
    wanted = {entry_id: [] for entry_id in entry_ids}  # type: dict[str, list[tuple[int, DlqEntry]]]
    for seq, message in await scan(js):
        entry = _entry_of(seq, message, unreadable)
        if entry is not None and entry.entry_id in wanted:
            wanted[entry.entry_id].append((seq, entry))
    return wanted


async def delete_entry(js: JetStreamContext, entry_id: str, *, seqs: Iterable[int] | None = None) -> int:
    """Remove an entry from TITAN_DLQ (every copy; at the given sequences when known); return how
    many messages were removed (0: it was not there)."""
    if seqs is None:
        seqs = [seq for seq, _ in (await find_entries(js, [entry_id]))[entry_id]]
    removed = 0
    for seq in seqs:
        try:
            if await js.delete_msg(subjects.DLQ_STREAM, seq):
                removed += 1
        except nats.js.errors.APIError as exc:
            if not _no_message(exc):
                raise
    return removed


# The feed of the view --------------------------------------------------------------------------


class DlqFeed:
    """Keeps `rm_dlq` from TITAN_DLQ, exactly once: it reads the stream by sequence after the
    position the store tracks for `dlq_entries` and applies each batch's rows with the new
    position in one store transaction. Sequence gaps (deleted, purged or aged-out messages) are
    skipped. Row statuses follow purges recorded in the ledger (`rm_dlq_purges`) and replays
    refused again (`Titan-Replay-Of`)."""

    def __init__(
        self,
        js: JetStreamContext,
        store: ReadModelStore,
        *,
        batch: int = 256,
        poll_interval_s: float = 1.0,
        unreadable: Unreadable = _log_unreadable,
    ) -> None:
        self.js = js
        self.store = store
        self.batch = batch
        self.poll_interval_s = poll_interval_s
        self.unreadable = unreadable
        self._prepared = False
        self._purges_at = -1

    async def _prepare(self) -> None:
        if not self._prepared:
            await self.store.prepare([dlq_view.DLQ_ENTRIES, dlq_view.PROJECTION])
            self._prepared = True

    async def _purged(self) -> tuple[set[str], bool]:
        """Every purged entry id, and whether the purges moved since last asked."""
        tracked = await self.store.tracked([dlq_view.PROJECTION])
        position = tracked.get(dlq_view.PROJECTION.name, 0)
        rows = await self.store.rows(dlq_view.PURGES)
        moved = position != self._purges_at
        self._purges_at = position
        return {row["entry_id"] for row in rows}, moved

    async def catch_up(self) -> int:
        """Apply every entry TITAN_DLQ holds beyond the tracked sequence; return the sequence
        reached."""
        await self._prepare()
        while True:
            tracked = await self.store.tracked([dlq_view.DLQ_ENTRIES])
            after = tracked[dlq_view.DLQ_ENTRIES.name]
            messages = await scan(self.js, after, limit=self.batch)
            purged, purges_moved = await self._purged()
            changes: list[Change] = []
            if purges_moved and purged:
                for row in await self.store.rows(dlq_view.DLQ, {"status": dlq_view.OPEN}):
                    if row["entry_id"] in purged:
                        changes.append(dlq_view.status_patch(row["entry_id"], dlq_view.PURGED))
            for seq, message in messages:
                entry = _entry_of(seq, message, self.unreadable)
                if entry is None:
                    continue
                row = dlq_view.entry_row(entry.to_json())
                if entry.entry_id in purged:
                    row["status"] = dlq_view.PURGED
                changes.append(dlq_view.entry_put(row))
                replay_of = entry.headers.get(subjects.REPLAY_OF)
                if replay_of and replay_of not in purged:
                    changes.append(dlq_view.status_patch(replay_of, dlq_view.REPLAYED))
            to = messages[-1][0] if messages else after
            if not changes and to == after:
                return after
            try:
                await self.store.apply([Batch(dlq_view.DLQ_ENTRIES, changes, after, to)])
            except TrackingMoved:
                self._purges_at = -1
                continue  # another feed applied these: read the position again
            if len(messages) < self.batch:
                return to

    async def run(self, stop: asyncio.Event) -> None:
        """Catch up, then follow TITAN_DLQ (polling) until `stop` is set."""
        pause = self.poll_interval_s
        while not stop.is_set():
            try:
                await self.catch_up()
                pause = self.poll_interval_s
            except (nats.errors.Error, nats.js.errors.Error, OSError) as exc:
                log.warning("DLQ feed: %s; retrying in %.1f s", plain_text(str(exc), 300), pause)
                pause = min(pause * 2, 5.0)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)


def replay_payload(entry: DlqEntry) -> bytes:
    """The original payload bytes of an entry; raise ValueError when it was cut or is not valid
    base64 (a replay must publish the original exactly)."""
    if entry.payload_truncated:
        raise ValueError(f"entry {entry.entry_id} holds only the start of its payload: it cannot be replayed")
    try:
        return entry.payload_bytes()
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"entry {entry.entry_id}: payload is not valid {entry.payload_encoding}: {exc}") from None


__all__ = [
    "MAX_DELIVER",
    "TERMINATED",
    "Advisory",
    "DlqFeed",
    "DlqRouter",
    "dead_letter",
    "delete_entry",
    "dlq_subject",
    "entry_for",
    "find_entries",
    "publish_entry",
    "read_advisory",
    "read_entries",
    "replay_payload",
    "scan",
]
