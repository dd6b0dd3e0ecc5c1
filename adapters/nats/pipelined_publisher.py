"""Pipelined JetStream publishing with the ack of every message awaited in order.

nats-py's own `publish_async` cannot serve the mirror: when the server refuses a publish (a failed
`Nats-Expected-Last-Sequence`, error 10071) its reply handler raises inside the subscription
callback and the future never completes (nats-py 2.16). This publisher owns its reply inbox, parses
each PubAck itself and keeps the messages in flight in the order they were sent, so that the
caller learns of the first message in that order that failed, timed out or was refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Final

import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

WRONG_LAST_SEQUENCE: Final = 10071
WRONG_LAST_SEQUENCE_ALT: Final = 10164


class PublishError(Exception):
    """A publish did not land where the mirror needs it; the stream must be re-read."""


class PublishTimeout(PublishError):
    """No ack in time: the outcome is unknown (it may have been stored)."""


class WrongLastSequence(PublishError):
    """JetStream refused a publish because the stream's last sequence is not the expected one:
    something else (another relay, a retried earlier publish) wrote first. Nothing was written."""


class PublishRefused(PublishError):
    """JetStream answered with an error other than a failed precondition."""


@dataclass(slots=True)
class InFlight:
    """One message sent and not yet acknowledged, and what its ack must say."""

    position: int
    expected_seq: int
    sent_at: float
    future: asyncio.Future[None] = field(repr=False)


class PipelinedPublisher:
    """Sends up to `window` messages before awaiting the oldest ack; acks advance in send order."""

    def __init__(self, nc: NATS, stream: str, *, window: int = 1000, ack_timeout_s: float = 5.0) -> None:
        self._nc = nc
        self.stream = stream
        self.window = window
        self.ack_timeout_s = ack_timeout_s
        self._inflight: deque[InFlight] = deque()
        self._by_token: dict[str, InFlight] = {}
        self._prefix = ""
        self._counter = 0
        self._subscription: Subscription | None = None
        self.acked_position = 0
        self.acked_seq = 0
        self.acked_count = 0

    async def start(self) -> None:
        """Subscribe to this publisher's reply inbox."""
        self._prefix = self._nc.new_inbox()
        self._subscription = await self._nc.subscribe(self._prefix + ".*", cb=self._on_reply)

    async def close(self) -> None:
        """Stop listening for acks and forget what is in flight."""
        self.abandon()
        if self._subscription is not None:
            subscription, self._subscription = self._subscription, None
            # A connection already gone has no subscription left to end.
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    @property
    def in_flight(self) -> int:
        """How many messages are sent and not yet acknowledged."""
        return len(self._inflight)

    def abandon(self) -> None:
        """Forget every message in flight (their acks, should they come, are ignored)."""
        for entry in self._inflight:
            if not entry.future.done():
                entry.future.cancel()
            elif not entry.future.cancelled():
                entry.future.exception()  # retrieved: no "never retrieved" warning
        self._inflight.clear()
        self._by_token.clear()

    async def publish(
        self, subject: str, payload: bytes, headers: dict[str, str], *, position: int, expected_seq: int
    ) -> None:
        """Send one message whose ack must put it at `expected_seq + 1`; first make room in the
        window (raising the first failure among the oldest messages)."""
        while len(self._inflight) >= self.window:
            await self._settle_oldest()
        self._counter += 1
        token = str(self._counter)
        entry = InFlight(position, expected_seq, time.monotonic(), asyncio.get_running_loop().create_future())
        self._inflight.append(entry)
        self._by_token[token] = entry
        await self._nc.publish(subject, payload, reply=f"{self._prefix}.{token}", headers=headers)

    async def settle_ready(self) -> None:
        """Advance past every oldest message already acknowledged (raise the first failure)."""
        while self._inflight and self._inflight[0].future.done():
            await self._settle_oldest()

    async def flush(self) -> None:
        """Await every message in flight, in order (raise the first failure)."""
        await self._nc.flush()
        while self._inflight:
            await self._settle_oldest()

    async def _settle_oldest(self) -> None:
        entry = self._inflight[0]
        if not entry.future.done():
            remaining = entry.sent_at + self.ack_timeout_s - time.monotonic()
            try:
                await asyncio.wait_for(asyncio.shield(entry.future), max(remaining, 0.001))
            except TimeoutError:
                raise PublishTimeout(
                    f"no ack from JetStream within {self.ack_timeout_s:g} s for position "
                    f"{entry.position} (stream sequence {entry.expected_seq + 1}): outcome unknown"
                ) from None
        self._inflight.popleft()
        entry.future.result()  # raises the entry's failure
        self.acked_position = entry.position
        self.acked_seq = entry.expected_seq + 1
        self.acked_count += 1

    async def _on_reply(self, msg: Msg) -> None:
        token = msg.subject[len(self._prefix) + 1 :]
        entry = self._by_token.pop(token, None)
        if entry is None or entry.future.done():
            return
        error = self._check_ack(msg, entry)
        if error is None:
            entry.future.set_result(None)
        else:
            entry.future.set_exception(error)

    def _check_ack(self, msg: Msg, entry: InFlight) -> PublishError | None:
        if msg.headers and msg.headers.get("Status") == "503":
            return PublishRefused(f"no JetStream stream answers on the subject of position {entry.position}")
        try:
            answer = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            return PublishRefused(f"JetStream's ack for position {entry.position} is not JSON: {msg.data[:200]!r}")
        error = answer.get("error")
        if isinstance(error, dict):
            code = error.get("err_code")
            description = error.get("description", "")
            if code in (WRONG_LAST_SEQUENCE, WRONG_LAST_SEQUENCE_ALT):
                return WrongLastSequence(
                    f"JetStream refused position {entry.position}: {description} "
                    f"(expected last sequence {entry.expected_seq})"
                )
            return PublishRefused(f"JetStream refused position {entry.position}: {description} (error {code})")
        seq = answer.get("seq")
        if answer.get("stream") != self.stream or seq != entry.expected_seq + 1:
            duplicate = " as a duplicate" if answer.get("duplicate") else ""
            return PublishRefused(
                f"JetStream stored position {entry.position}{duplicate} at {answer.get('stream')} "
                f"sequence {seq}, expected {self.stream} sequence {entry.expected_seq + 1}"
            )
        return None
