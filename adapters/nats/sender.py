"""Sending commands to a running `titan serve` and waiting for their outcomes (docs/messaging.md,
"Intake"): what `titan send`, `titan dlq purge` and the benchmarks use.

Each command is published in the order given, on one connection (so the intake sees an account's
commands in that order), signed when keys are given, with two reply subjects under one inbox:
the NATS reply subject receives JetStream's PubAck (the command is stored), and the
`Titan-Reply-To` header names where the intake sends the outcome once its record has committed.

No `Nats-Msg-Id` is set: a message JetStream drops as a duplicate would never be answered. A
command sent twice is answered twice, the second time with its original outcome (`duplicate`):
command ids, not message ids, make resending safe.

When tracing is on (docs/tracing.md), each publish is a `titan.send` span whose context goes in the
`traceparent` and `Titan-Traceparent` headers, outside what the signature covers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any, Final, Self

import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from opentelemetry.trace import Span, SpanKind

from commands import tracing

from . import subjects
from .signing import Keys, sign
from .trace_headers import inject

DEFAULT_TIMEOUT_S: Final = 10.0
SEND_SPAN: Final = "titan.send"


class NoReply(Exception):
    """No outcome arrived in time: the command may still be decided (resending it is safe)."""


class NotStored(Exception):
    """JetStream refused to store the command (no stream for the subject, a full stream…)."""


class Sender:
    """Publishes commands and resolves each one's outcome (the intake's reply JSON)."""

    def __init__(
        self,
        nc: Client,
        *,
        keys: Keys | None = None,
        issuer: str | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        if keys is not None and (issuer is None or issuer not in keys):
            raise ValueError(f"no key for issuer {issuer!r} in the key file")
        self._nc = nc
        self._key = keys[issuer] if keys is not None and issuer is not None else None
        self._issuer = issuer
        self._clock = clock
        self._inbox = nc.new_inbox()
        self._next = 0
        self._stored: dict[int, asyncio.Future[int]] = {}
        self._outcomes: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._subscription: Subscription | None = None
        self._traced = tracing.enabled()  # once: a process installs its tracer provider at start

    async def __aenter__(self) -> Self:
        self._subscription = await self._nc.subscribe(f"{self._inbox}.>", cb=self._on_reply)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()
        futures: list[asyncio.Future[Any]] = [*self._stored.values(), *self._outcomes.values()]
        for future in futures:
            if not future.done():
                future.cancel()

    async def publish(self, subject: str, payload: bytes) -> tuple[asyncio.Future[int], asyncio.Future[dict[str, Any]]]:
        """Publish one command; return futures for its stream sequence and its outcome."""
        number = self._next
        self._next += 1
        loop = asyncio.get_running_loop()
        stored: asyncio.Future[int] = loop.create_future()
        outcome: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._stored[number] = stored
        self._outcomes[number] = outcome
        headers: dict[str, str] = {}
        if self._key is not None and self._issuer is not None:
            headers.update(sign(self._key, self._issuer, subject, payload, self._clock()))
        headers[subjects.REPLY_TO] = f"{self._inbox}.out.{number}"
        span = _send_span(subject, payload, headers) if self._traced else None
        try:
            await self._nc.publish(subject, payload, reply=f"{self._inbox}.ack.{number}", headers=headers)
        finally:
            if span is not None:
                span.end()
        return stored, outcome

    async def send(self, subject: str, payload: bytes, timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
        """Publish one command and wait for its outcome."""
        stored, outcome = await self.publish(subject, payload)
        return await self.wait(stored, outcome, timeout_s)

    async def wait(
        self, stored: asyncio.Future[int], outcome: asyncio.Future[dict[str, Any]], timeout_s: float
    ) -> dict[str, Any]:
        """The outcome of a published command (`wait_outcome`); a command given up on is forgotten,
        so a long-running sender does not keep the futures of every answer that never came."""
        try:
            return await wait_outcome(stored, outcome, timeout_s)
        except (NoReply, NotStored):
            for table in (self._stored, self._outcomes):
                for number, future in list(table.items()):
                    if future is stored or future is outcome:
                        del table[number]
            for future in (stored, outcome):
                if not future.done():
                    future.cancel()  # whoever waits on it (a slot, a callback) is let go
            raise

    async def _on_reply(self, msg: Msg) -> None:
        kind, _, number_text = msg.subject[len(self._inbox) + 1 :].partition(".")
        try:
            number = int(number_text)
        except ValueError:
            return
        if kind == "ack":
            stored = self._stored.pop(number, None)
            if stored is None or stored.done():
                return
            try:
                reply = orjson.loads(msg.data)
            except orjson.JSONDecodeError:
                stored.set_exception(NotStored(f"JetStream answered {msg.data[:200]!r}"))
                return
            error = reply.get("error") if isinstance(reply, dict) else None
            if error or not isinstance(reply, dict) or "seq" not in reply:
                stored.set_exception(NotStored(f"JetStream did not store the command: {error or reply}"))
            else:
                stored.set_result(int(reply["seq"]))
        elif kind == "out":
            outcome = self._outcomes.pop(number, None)
            if outcome is not None and not outcome.done():
                try:
                    outcome.set_result(orjson.loads(msg.data))
                except orjson.JSONDecodeError:
                    outcome.set_exception(NoReply(f"the intake answered {msg.data[:200]!r}"))


def _send_span(subject: str, payload: bytes, headers: dict[str, str]) -> Span:
    """The PRODUCER span of publishing a command (a child of the caller's current span), its
    context put in the headers; the command's fields are read from its JSON, not validated."""
    try:
        fields = orjson.loads(payload)
    except orjson.JSONDecodeError:
        fields = None
    attributes = tracing.fields_attributes(fields) if isinstance(fields, dict) else {}
    attributes["messaging.system"] = "nats"
    attributes["messaging.destination.name"] = subject
    span = tracing.tracer().start_span(SEND_SPAN, kind=SpanKind.PRODUCER, attributes=attributes)
    inject(headers, span)
    return span


async def wait_outcome(
    stored: asyncio.Future[int], outcome: asyncio.Future[dict[str, Any]], timeout_s: float
) -> dict[str, Any]:
    """The outcome of a published command; NotStored, or NoReply after `timeout_s`."""
    try:
        await asyncio.wait_for(asyncio.shield(stored), timeout_s)
    except TimeoutError:
        raise NoReply(f"JetStream did not confirm storing the command within {timeout_s:g} s") from None
    try:
        return await asyncio.wait_for(asyncio.shield(outcome), timeout_s)
    except TimeoutError:
        raise NoReply(
            f"no outcome within {timeout_s:g} s (is `titan serve` running?); the command is stored "
            "and will be decided when it runs; resending it is safe"
        ) from None


async def send_command(
    nc: Client,
    *,
    keys: Keys | None,
    issuer: str | None,
    subject: str,
    payload: bytes,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> dict[str, Any]:
    """Sign (when keys are given), publish, and return the outcome of one command."""
    async with Sender(nc, keys=keys, issuer=issuer) as sender:
        return await sender.send(subject, payload, timeout_s)
