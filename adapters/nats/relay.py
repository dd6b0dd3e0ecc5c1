"""The ledger mirror (SPEC §4, docs/messaging.md "The mirror"): every ledger record, in position
order, exactly once, on JetStream.

The rule that makes it exactly once beyond the duplicate window: the relay keeps no checkpoint of
its own. At start, and after any publish whose outcome it does not know, it reads the stream's last
message (`read_tail`) and resumes after the ledger position that message carries; every publish
carries `Nats-Expected-Last-Sequence`, the stream sequence it must follow, so a publish that comes
too late (a retry of one that did land, a second relay) is refused by JetStream without writing.
Pipelined: up to `window` messages in flight; the mirrored position advances only over acks that
arrived for a message and every message before it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from nats.aio.client import Client as NATS
from nats.js.client import JetStreamContext

from commands import tracing
from commands.ports import Ledger, LedgerError, LedgerUnreachable, Record
from schemas.canonical import record_hash

from . import subjects
from .ledger_follow import LedgerWakeups, Polling
from .mirror_message import UnmirrorableRecord, mirror_headers, mirror_subject
from .pipelined_publisher import PipelinedPublisher, PublishError, PublishTimeout
from .relay_metrics import RelayMetrics
from .stream_tail import MirrorError, StreamTail, read_tail, run_sessions
from .trace_headers import inject_recording, start_publish_span

DEFAULT_BATCH: Final = 1000
DEFAULT_WINDOW: Final = 2000
DEFAULT_ACK_TIMEOUT_S: Final = 5.0
LINK_RECHECK_S: Final = 0.5
PUBLISH_SPAN: Final = "titan.relay.publish"


class BrokenChain(MirrorError):
    """A ledger record does not chain onto the one before it: the relay stops before it."""

    def __init__(self, position: int, detail: str) -> None:
        super().__init__(
            f"the ledger's chain is broken at position {position}: {detail}; the relay stopped "
            f"before it (everything before it is mirrored); run `titan ledger verify`"
        )
        self.position = position


class MirrorAhead(MirrorError):
    """The stream holds a record the ledger does not (a truncated or rewritten ledger)."""


@dataclass(frozen=True, slots=True)
class RelayProgress:
    """Where the mirror stands after a run."""

    mirrored_position: int
    stream_seq: int
    published: int
    retries: int


SpecCheck = Callable[[JetStreamContext], Awaitable[object]]


class Relay:
    """Mirrors one ledger onto one stream."""

    def __init__(
        self,
        ledger: Ledger,
        nc: NATS,
        *,
        stream: str = subjects.EVT_STREAM,
        batch: int = DEFAULT_BATCH,
        window: int = DEFAULT_WINDOW,
        ack_timeout_s: float = DEFAULT_ACK_TIMEOUT_S,
        wakeups: LedgerWakeups | None = None,
        metrics: RelayMetrics | None = None,
        spec_check: SpecCheck | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.ledger = ledger
        self.nc = nc
        self.js = nc.jetstream()
        self.stream = stream
        self.batch = batch
        self.window = window
        self.ack_timeout_s = ack_timeout_s
        self.wakeups = wakeups or Polling()
        self.metrics = metrics or RelayMetrics()
        self.spec_check = spec_check
        self.log = log or (lambda _line: None)
        self.published = 0
        self.retries = 0
        self.mirrored_position = 0
        self.stream_seq = 0
        self._acked_in_session = 0

    async def run(self, *, once: bool = False, stop: asyncio.Event | None = None) -> RelayProgress:
        """Mirror the ledger: up to its head at start and return (`once`), or follow it until
        `stop` is set. Raises MirrorError (BrokenChain, MirrorAhead) when it must stop."""
        stop = stop or asyncio.Event()
        if self.spec_check is not None:
            await self.spec_check(self.js)
        target = (await asyncio.to_thread(self.ledger.head))[0] if once else None
        await self.wakeups.start()
        try:
            await run_sessions(lambda: self._session(target, stop), stop, self._retrying)
        finally:
            self.metrics.ready.set(0)
            await self.wakeups.close()
        return RelayProgress(self.mirrored_position, self.stream_seq, self.published, self.retries)

    def _retrying(self, error: BaseException, backoff: float) -> None:
        self.metrics.ready.set(0)
        if isinstance(error, PublishError):
            self.metrics.publish_errors.labels(type(error).__name__).inc()
        self.retries += 1
        self.metrics.retries.inc()
        self.log(f"relay: {error}; re-reading the stream in {backoff:.1f} s")

    async def _session(self, target: int | None, stop: asyncio.Event) -> bool:
        """Resume after the stream's tail and publish until caught up (`target`) or stopped;
        True when done. Any failure to publish ends the session (the caller re-reads the tail)."""
        tail = await read_tail(self.js, self.stream)
        await self._check_tail(tail)
        self._acked_in_session = 0
        publisher = PipelinedPublisher(self.nc, self.stream, window=self.window, ack_timeout_s=self.ack_timeout_s)
        await publisher.start()
        publisher.acked_position, publisher.acked_seq = tail.position, tail.seq
        self.metrics.ready.set(1)
        after, last_hash, expected_seq = tail.position, tail.hash, tail.seq
        reading: asyncio.Task[list[Record]] | None = None
        try:
            head = await asyncio.to_thread(self.ledger.head)
            self.metrics.saw_head(head[0], head[2])
            self._advance(publisher, tail)
            while not stop.is_set():
                if reading is None:
                    reading = asyncio.ensure_future(self._read(after))
                records = await reading
                reading = None
                if target is not None:
                    records = [record for record in records if record.position <= target]
                if records:
                    # Read the next batch while this one is published.
                    if target is None or records[-1].position < target:
                        reading = asyncio.ensure_future(self._read(records[-1].position))
                    traced = tracing.enabled()
                    for record in records:
                        link = _link_problem(record, after, last_hash)
                        if link is not None:
                            await publisher.flush()
                            self._advance(publisher, tail)
                            link = await self._recheck_link(after, last_hash)
                            if link is not None:
                                raise BrokenChain(record.position, link)
                        try:
                            subject = mirror_subject(record)
                            headers = mirror_headers(record, expected_seq)
                        except UnmirrorableRecord as error:
                            await publisher.flush()
                            self._advance(publisher, tail)
                            raise BrokenChain(record.position, str(error)) from error
                        span = start_publish_span(PUBLISH_SPAN, record, subject) if traced else None
                        if span is not None:
                            inject_recording(headers, span)
                        try:
                            await publisher.publish(
                                subject, record.state, headers, position=record.position, expected_seq=expected_seq
                            )
                        finally:
                            if span is not None:
                                span.end()
                        expected_seq += 1
                        after, last_hash = record.position, record.envelope["hash"]
                    await publisher.settle_ready()
                    self._advance(publisher, tail)
                    continue
                await publisher.flush()
                self._advance(publisher, tail)
                head = await asyncio.to_thread(self.ledger.head)
                self.metrics.saw_head(head[0], head[2])
                if target is not None and after >= target:
                    return True
                if target is not None:
                    continue
                waiting = asyncio.ensure_future(self.wakeups.wait())
                stopping = asyncio.ensure_future(stop.wait())
                await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
                for task in (waiting, stopping):
                    task.cancel()
            await publisher.flush()
            self._advance(publisher, tail)
            return True
        finally:
            self._advance(publisher, tail)  # acks settled before a failure count too
            if reading is not None:
                reading.cancel()
            await publisher.close()

    async def _read(self, after: int) -> list[Record]:
        """The next batch; before an unreadable record, the readable ones before it, then the
        relay stops at it (a reader maps a whole batch before returning any of it)."""
        try:
            return await asyncio.to_thread(self.ledger.read_all, after, self.batch)
        except LedgerUnreachable:
            raise
        except LedgerError as error:
            position = getattr(error, "position", None)
            if not isinstance(position, int):
                raise
            good: list[Record] = []
            while True:
                try:
                    one = await asyncio.to_thread(self.ledger.read_all, after, 1)
                except LedgerError:
                    if good:
                        return good
                    raise BrokenChain(position, str(error)) from error
                if not one:
                    return good
                good.append(one[0])
                after = one[0].position

    def _advance(self, publisher: PipelinedPublisher, tail: StreamTail) -> None:
        """Account for the acks received so far in this session."""
        newly = publisher.acked_count - self._acked_in_session
        if newly > 0:
            self._acked_in_session = publisher.acked_count
            self.published += newly
            self.metrics.published.inc(newly)
        self.mirrored_position, self.stream_seq = publisher.acked_position, publisher.acked_seq
        self.metrics.mirrored_up_to(
            publisher.acked_position, publisher.acked_seq, tail.messages + publisher.acked_count
        )

    async def _check_tail(self, tail: StreamTail) -> None:
        """The record the stream holds last must be the ledger's record at that position."""
        if tail.empty:
            return
        found = await asyncio.to_thread(self.ledger.read_all, tail.position - 1, 1)
        if not found or found[0].position != tail.position:
            head = await asyncio.to_thread(self.ledger.head)
            raise MirrorAhead(
                f"stream {self.stream} holds ledger position {tail.position} (sequence {tail.seq}) but "
                f"the ledger has no record there (its head is position {head[0]}): the ledger is "
                "shorter than its mirror; run `titan relay verify` and `titan ledger verify`"
            )
        if found[0].envelope.get("hash") != tail.hash:
            raise MirrorAhead(
                f"stream {self.stream} holds position {tail.position} with hash {tail.hash[:12]}… but the "
                f"ledger's record there has hash {str(found[0].envelope.get('hash'))[:12]}…: the ledger was "
                "rewritten after it was mirrored; run `titan relay verify` and `titan ledger verify`"
            )

    async def _recheck_link(self, after: int, last_hash: str) -> str | None:
        """Read the record after `after` again, once, a moment later: the same broken link twice
        is a broken chain, not a reader that looked too early."""
        await asyncio.sleep(LINK_RECHECK_S)
        try:
            records = await asyncio.to_thread(self.ledger.read_all, after, 1)
        except LedgerError as error:
            return str(error)
        if not records:
            return None
        return _link_problem(records[0], after, last_hash)


def _link_problem(record: Record, after: int, last_hash: str) -> str | None:
    """Why a record may not follow (position `after`, hash `last_hash`), or None."""
    envelope = record.envelope
    if record.position <= after:
        return f"position {record.position} does not follow position {after}"
    if envelope.get("prev_hash") != last_hash:
        return f"its prev_hash is not the hash of the record before it (position {after})"
    if record_hash(envelope) != envelope.get("hash"):
        return "its hash does not match its contents"
    return None


__all__ = [
    "BrokenChain",
    "MirrorAhead",
    "MirrorError",
    "PublishTimeout",
    "Relay",
    "RelayProgress",
]
