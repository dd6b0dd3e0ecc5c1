"""The execution gateway (SPEC §4, docs/messaging.md "The execution gateway"): every accepted order
and every cancel request in the ledger, in position order, exactly once, to its venue's engine on
`titan.exec.<venue>.place|cancel` (stream TITAN_EXEC).

The same rule as the mirror's (adapters/nats/relay.py), for a filtered subset of the records: the
gateway keeps no checkpoint of its own, the stream is the checkpoint. At start, and after any
publish whose outcome it does not know, it reads TITAN_EXEC's last message, checks that the ledger
holds that event at the position in its `Titan-Position`, and resumes reading the ledger after it;
every publish carries `Nats-Expected-Last-Sequence`, so a publish that comes too late (a retry of
one that did land, a second gateway) is refused by JetStream without writing. Nothing depends on
memory or on the duplicate window: a gateway killed at any point and restarted, a second later or
an hour later, sends nothing twice and skips nothing.

The ledger is read in units (one command's events, then its command record: a unit is complete
when its command record is read), because an order's policy hash is the one its deciding command
carried, and that is in the command record (`data.command.policy_hash`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from nats.aio.client import Client as NATS
from nats.js.client import JetStreamContext
from opentelemetry.trace import Span
from pydantic import ValidationError

from commands import tracing
from commands.envelope import COMMAND_RECORDED, account_stream, command_stream
from commands.ports import Ledger, Record
from projections.model import split_units
from schemas.events import ORDER_ACCEPTED, ORDER_CANCEL_REQUESTED
from schemas.execution import ExecCancel, ExecPlace

from . import subjects
from .gateway_metrics import GatewayMetrics
from .ledger_follow import LedgerWakeups, Polling
from .mirror_message import UnmirrorableRecord, account_of, traceparent
from .pipelined_publisher import PipelinedPublisher, PublishError
from .stream_tail import StreamEmptied, last_message, run_sessions
from .trace_headers import inject_recording, start_publish_span

DEFAULT_BATCH: Final = 1000
DEFAULT_WINDOW: Final = 1000
DEFAULT_ACK_TIMEOUT_S: Final = 5.0
VENUE_CACHE_SIZE: Final = 100_000
"""Orders whose venue the gateway remembers for their cancel; a cancel of an order it does not
remember (placed before this run) looks the venue up in the ledger."""
PUBLISH_SPAN: Final = "titan.gateway.publish"
SENT_TYPES: Final = frozenset({ORDER_ACCEPTED, ORDER_CANCEL_REQUESTED})
"""The record types that leave for execution."""


class GatewayError(Exception):
    """The gateway cannot go on without an operator: TITAN_EXEC and the ledger disagree, or a
    record that must be sent cannot be."""


class ExecAhead(GatewayError):
    """TITAN_EXEC's last message is for an event the ledger does not hold (a truncated, rewritten
    or different ledger)."""


class UnsendableRecord(GatewayError):
    """An accepted order or cancel request the gateway cannot turn into its message; it stopped
    before it (everything before it is sent)."""

    def __init__(self, position: int, detail: str) -> None:
        super().__init__(
            f"the ledger's record at position {position} cannot be sent to execution: {detail}; the "
            "gateway stopped before it (everything before it is sent); run `titan ledger verify`"
        )
        self.position = position


@dataclass(frozen=True, slots=True)
class GatewayProgress:
    """Where the gateway stands after a run."""

    sent_position: int
    """The ledger position of the event TITAN_EXEC's last message is for (0: none yet)."""
    scanned_position: int
    """The last ledger position read with every message for it acknowledged."""
    stream_seq: int
    sent: int
    retries: int


@dataclass(frozen=True, slots=True)
class ExecTail:
    """TITAN_EXEC's last message: its sequence and the event it was sent for."""

    seq: int
    position: int
    msg_id: str
    messages: int

    @property
    def empty(self) -> bool:
        """Whether the stream holds nothing yet."""
        return self.seq == 0


@dataclass(frozen=True, slots=True)
class ExecMessage:
    """One message for execution, before its publish precondition is added."""

    kind: str
    subject: str
    payload: bytes
    headers: dict[str, str]
    position: int
    order_id: str
    venue: str


async def read_exec_tail(js: JetStreamContext, stream: str = subjects.EXEC_STREAM) -> ExecTail:
    """Read TITAN_EXEC's last message and its headers."""
    try:
        state, message = await last_message(js, stream)
    except StreamEmptied as emptied:
        raise GatewayError(
            f"{emptied}, so it no longer says what was sent to execution; restore it, or "
            "recreate it knowing that every accepted order in the ledger is then sent again"
        ) from None
    if message is None:
        return ExecTail(0, 0, "", 0)
    headers = message.headers or {}
    position_text = headers.get(subjects.POSITION, "")
    msg_id = headers.get(subjects.MSG_ID, "")
    if not position_text.isdigit() or not msg_id:
        raise GatewayError(
            f"the last message of {stream} (sequence {state.last_seq}, subject {message.subject}) has "
            f"no {subjects.POSITION}/{subjects.MSG_ID} headers: it was not written by the gateway"
        )
    return ExecTail(state.last_seq, int(position_text), msg_id, state.messages)


def exec_msg_id(record: Record) -> str | None:
    """The `Nats-Msg-Id` of the message a record is sent as (the order id for a place,
    `cancel.<order id>` for a cancel), or None when the record is not sent."""
    if record.type not in SENT_TYPES:
        return None
    data = record.envelope.get("data")
    order_id = data.get("order_id") if isinstance(data, dict) else None
    if not isinstance(order_id, str):
        return None
    return order_id if record.type == ORDER_ACCEPTED else subjects.cancel_msg_id(order_id)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _command_of(unit: list[Record]) -> dict[str, Any]:
    """The command that decided a unit, as its command record holds it ({} when not read)."""
    for record in unit:
        if record.type == COMMAND_RECORDED:
            data = record.envelope.get("data")
            command = data.get("command") if isinstance(data, dict) else None
            return command if isinstance(command, dict) else {}
    return {}


def _policy_hash(command: dict[str, Any], event: Record) -> str:
    """The deciding command's policy hash; for one that carries none (CancelOrder), the account's
    active policy hash when it was decided (the event envelope's)."""
    carried = command.get("policy_hash")
    if isinstance(carried, str) and carried:
        return carried
    return _text(event.envelope.get("policy_hash"))


def _headers(
    event: Record, msg_id: str, account_id: str, order_id: str, policy_hash: str, intent_id: str, phase_id: str
) -> dict[str, str]:
    context = traceparent(event)
    return {
        subjects.MSG_ID: msg_id,
        subjects.POSITION: str(event.position),
        subjects.ACCOUNT_ID: account_id,
        subjects.ORDER_ID: order_id,
        subjects.POLICY_HASH: policy_hash,
        subjects.COMMAND_ID: _text(event.envelope.get("command_id")),
        subjects.INTENT_ID: intent_id,
        subjects.PHASE_ID: phase_id,
        subjects.TRACEPARENT: context,
        subjects.TITAN_TRACEPARENT: context,
    }


def place_message(event: Record, command: dict[str, Any]) -> ExecMessage:
    """The place message for an `order.accepted.v1` record; `command` is its unit's command (from
    the command record). Raise UnsendableRecord."""
    envelope = event.envelope
    data = envelope.get("data")
    if not isinstance(data, dict):
        raise UnsendableRecord(event.position, "its data is not an object")
    try:
        account_id = account_of(event)
        order_type = data.get("order_type")
        place = ExecPlace.model_validate(
            {
                "account_id": account_id,
                "order_id": data["order_id"],
                "client_order_id": data["client_order_id"],
                "venue": data["venue"],
                "symbol": data["symbol"],
                "side": data["side"],
                "order_type": order_type,
                "quantity": data["quantity"],
                "price": None if order_type == "MARKET" else data["price"],
                "reference_price": data["reference_price"],
                "reduce_only": data["reduce_only"],
                "policy_hash": _policy_hash(command, event),
                "command_id": envelope.get("command_id"),
                "intent_id": data["intent_id"],
                "phase_id": data["phase_id"],
                "position": event.position,
                "ts_ns": envelope.get("ts_ns"),
            }
        )
    except (KeyError, ValidationError, UnmirrorableRecord) as error:
        raise UnsendableRecord(event.position, f"not a valid place: {error}") from error
    headers = _headers(
        event,
        place.order_id,
        account_id,
        place.order_id,
        place.policy_hash,
        place.intent_id,
        str(place.phase_id) if place.phase_id else "",
    )
    subject = subjects.exec_subject(place.venue, subjects.EXEC_PLACE)
    return ExecMessage(
        subjects.EXEC_PLACE, subject, place.payload(), headers, event.position, place.order_id, place.venue
    )


def cancel_message(event: Record, command: dict[str, Any], venue: str) -> ExecMessage:
    """The cancel message for an `order.cancel_requested.v1` record of an order on `venue`.
    Raise UnsendableRecord."""
    envelope = event.envelope
    data = envelope.get("data")
    if not isinstance(data, dict):
        raise UnsendableRecord(event.position, "its data is not an object")
    try:
        account_id = account_of(event)
        cancel = ExecCancel.model_validate(
            {
                "account_id": account_id,
                "order_id": data["order_id"],
                "venue": venue,
                "reason": data["reason"],
                "policy_hash": _policy_hash(command, event),
                "command_id": envelope.get("command_id"),
                "position": event.position,
                "ts_ns": envelope.get("ts_ns"),
            }
        )
    except (KeyError, ValidationError, UnmirrorableRecord) as error:
        raise UnsendableRecord(event.position, f"not a valid cancel: {error}") from error
    headers = _headers(
        event,
        subjects.cancel_msg_id(cancel.order_id),
        account_id,
        cancel.order_id,
        cancel.policy_hash,
        _text(envelope.get("intent_id")),
        _text(envelope.get("phase_id")),
    )
    subject = subjects.exec_subject(cancel.venue, subjects.EXEC_CANCEL)
    return ExecMessage(
        subjects.EXEC_CANCEL, subject, cancel.payload(), headers, event.position, cancel.order_id, cancel.venue
    )


def _publish_span(unit: list[Record], message: ExecMessage) -> Span | None:
    """The span of publishing a message, its context put in the message's headers (in place of
    the record's deterministic one) when it records."""
    for record in unit:
        if record.position == message.position:
            span = start_publish_span(PUBLISH_SPAN, record, message.subject)
            span.set_attribute("titan.order_id", message.order_id)
            inject_recording(message.headers, span)
            return span
    return None


def _first(records: list[Record]) -> Record | None:
    return records[0] if records else None


def _recorded_command(record: Record | None) -> dict[str, Any]:
    if record is None:
        return {}
    data = record.envelope.get("data")
    command = data.get("command") if isinstance(data, dict) else None
    return command if isinstance(command, dict) else {}


def venue_in_ledger(ledger: Ledger, order_id: str, account_id: str) -> str | None:
    """Where an accepted order went, read from the ledger: a PlaceOrder's command record names
    the venue; a Flatten's order (`ord-<flatten id>.<n>`) is found among the records just before
    the Flatten's command record (one command's records are appended together), else in the
    account's stream. None when the ledger holds no such order."""
    rest = order_id.removeprefix("ord-")
    command = _recorded_command(_first(ledger.read_stream(command_stream(rest))))
    if command.get("type") == "place_order.v1" and isinstance(command.get("venue"), str):
        return str(command["venue"])
    flatten_id, dot, index = rest.rpartition(".")
    if not dot or not index.isdigit():
        return None
    record = _first(ledger.read_stream(command_stream(flatten_id)))
    if record is None or _recorded_command(record).get("type") != "flatten.v1":
        return None
    data = record.envelope.get("data")
    count = len(data.get("event_ids") or []) if isinstance(data, dict) else 0
    candidates = ledger.read_all(max(record.position - count - 1, 0), count + 1)
    for candidate in candidates:
        if exec_msg_id(candidate) == order_id and candidate.type == ORDER_ACCEPTED:
            return _text(candidate.envelope["data"].get("venue")) or None
    for candidate in ledger.read_stream(account_stream(account_id)):
        if exec_msg_id(candidate) == order_id and candidate.type == ORDER_ACCEPTED:
            return _text(candidate.envelope["data"].get("venue")) or None
    return None


class OrderVenues:
    """Which venue each order went to, for its cancel: remembered for the orders this gateway
    read, looked up in the ledger for the others (never from memory alone)."""

    def __init__(self, ledger: Ledger, capacity: int = VENUE_CACHE_SIZE) -> None:
        self.ledger = ledger
        self.capacity = capacity
        self._known: dict[str, str] = {}
        self.lookups = 0

    def remember(self, order_id: str, venue: str) -> None:
        """An accepted order's venue."""
        self._known[order_id] = venue
        if len(self._known) > self.capacity:
            del self._known[next(iter(self._known))]

    async def venue_of(self, order_id: str, account_id: str) -> str | None:
        """The order's venue (forgotten once asked: an order has one cancel request)."""
        venue = self._known.pop(order_id, None)
        if venue is not None:
            return venue
        self.lookups += 1
        return await asyncio.to_thread(venue_in_ledger, self.ledger, order_id, account_id)


class Gateway:
    """Sends one ledger's accepted orders and cancel requests to TITAN_EXEC."""

    def __init__(
        self,
        ledger: Ledger,
        nc: NATS,
        *,
        wakeups: LedgerWakeups | None = None,
        batch: int = DEFAULT_BATCH,
        log: Callable[[str], None] | None = None,
        metrics: GatewayMetrics | None = None,
        stream: str = subjects.EXEC_STREAM,
        window: int = DEFAULT_WINDOW,
        ack_timeout_s: float = DEFAULT_ACK_TIMEOUT_S,
    ) -> None:
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self.ledger = ledger
        self.nc = nc
        self.js = nc.jetstream()
        self.wakeups = wakeups or Polling()
        self.batch = batch
        self.log = log or (lambda _line: None)
        self.metrics = metrics or GatewayMetrics()
        self.stream = stream
        self.window = window
        self.ack_timeout_s = ack_timeout_s
        self.venues = OrderVenues(ledger)
        self.sent = 0
        self.retries = 0
        self.sent_position = 0
        self.scanned_position = 0
        self.stream_seq = 0

    async def run(self, stop: asyncio.Event | None = None, *, once: bool = False) -> GatewayProgress:
        """Send every accepted order and cancel request: up to the ledger's head at start and
        return (`once`), or follow the ledger until `stop` is set. Raise GatewayError (ExecAhead,
        UnsendableRecord) when it must stop; NATS or the ledger lost is ridden out."""
        stop = stop or asyncio.Event()
        target = (await asyncio.to_thread(self.ledger.head))[0] if once else None
        await self.wakeups.start()
        try:
            await run_sessions(lambda: self._session(target, stop), stop, self._retrying)
        finally:
            self.metrics.ready.set(0)
            await self.wakeups.close()
        return GatewayProgress(self.sent_position, self.scanned_position, self.stream_seq, self.sent, self.retries)

    def _retrying(self, error: BaseException, backoff: float) -> None:
        self.metrics.ready.set(0)
        if isinstance(error, PublishError):
            self.metrics.publish_errors.labels(type(error).__name__).inc()
        self.retries += 1
        self.metrics.retries.inc()
        self.log(f"gateway: {error}; re-reading {self.stream} in {backoff:.1f} s")

    async def _session(self, target: int | None, stop: asyncio.Event) -> bool:
        """Resume after TITAN_EXEC's tail and send until caught up (`target`) or stopped; True
        when done. Any failure to publish ends the session (the caller re-reads the tail)."""
        tail = await read_exec_tail(self.js, self.stream)
        await self._check_tail(tail)
        self.sent_position, self.stream_seq = tail.position, tail.seq
        self.scanned_position = tail.position
        self.metrics.stream_at(tail.position, tail.seq)
        self.metrics.scanned_up_to(tail.position)
        publisher = PipelinedPublisher(self.nc, self.stream, window=self.window, ack_timeout_s=self.ack_timeout_s)
        await publisher.start()
        publisher.acked_position, publisher.acked_seq = tail.position, tail.seq
        self.metrics.ready.set(1)
        after, expected_seq = tail.position, tail.seq
        kinds: list[str] = []  # the kind of each message in flight, oldest first
        counted = 0
        reading: asyncio.Task[tuple[list[list[Record]], int]] | None = None

        def settled() -> None:
            nonlocal counted
            newly = publisher.acked_count - counted
            for kind in kinds[:newly]:
                self.metrics.sent.labels(kind).inc()
            del kinds[:newly]
            counted = publisher.acked_count
            self.sent += newly
            self.sent_position, self.stream_seq = publisher.acked_position, publisher.acked_seq
            self.metrics.stream_at(self.sent_position, self.stream_seq)

        try:
            self.metrics.saw_head((await asyncio.to_thread(self.ledger.head))[0])
            while not stop.is_set():
                if reading is None:
                    reading = asyncio.ensure_future(self._read_units(after, target))
                units, read_to = await reading
                reading = None
                if units:
                    if target is None or read_to < target:
                        reading = asyncio.ensure_future(self._read_units(read_to, target))
                    traced = tracing.enabled()
                    for unit in units:
                        for message in await self._messages(unit):
                            message.headers[subjects.EXPECTED_LAST_SEQUENCE] = str(expected_seq)
                            span = _publish_span(unit, message) if traced else None
                            try:
                                await publisher.publish(
                                    message.subject,
                                    message.payload,
                                    message.headers,
                                    position=message.position,
                                    expected_seq=expected_seq,
                                )
                            finally:
                                if span is not None:
                                    span.end()
                            kinds.append(message.kind)
                            expected_seq += 1
                        await publisher.settle_ready()
                        settled()
                    await publisher.flush()
                    settled()
                    after = read_to
                    self.scanned_position = after
                    self.metrics.scanned_up_to(after)
                    continue
                self.metrics.saw_head((await asyncio.to_thread(self.ledger.head))[0])
                if target is not None:
                    return True
                waiting = asyncio.ensure_future(self.wakeups.wait())
                stopping = asyncio.ensure_future(stop.wait())
                await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
                for task in (waiting, stopping):
                    task.cancel()
            return True
        finally:
            settled()  # acks that arrived before a failure count too
            if reading is not None:
                reading.cancel()
            await publisher.close()

    async def _read_units(self, after: int, target: int | None) -> tuple[list[list[Record]], int]:
        """The complete commands among the next records after `after` (up to `target`), and the
        position of the last record they cover; reads further when one command alone has more
        records than a batch. Records at the ledger's end whose command record is not read yet
        are left for the next read."""
        limit = self.batch
        while True:
            records = await asyncio.to_thread(self.ledger.read_all, after, limit)
            if target is not None:
                records = [record for record in records if record.position <= target]
            units, covered = split_units(records)
            if units:
                return units, records[covered - 1].position
            if len(records) < limit:
                return [], after
            limit *= 2

    async def _messages(self, unit: list[Record]) -> list[ExecMessage]:
        """The messages one command's records are sent as, in position order."""
        command: dict[str, Any] | None = None
        messages: list[ExecMessage] = []
        for record in unit:
            if record.type not in SENT_TYPES:
                continue
            if command is None:
                command = _command_of(unit)
            if record.type == ORDER_ACCEPTED:
                message = place_message(record, command)
                self.venues.remember(message.order_id, message.venue)
            else:
                data = record.envelope.get("data")
                order_id = data.get("order_id") if isinstance(data, dict) else None
                if not isinstance(order_id, str):
                    raise UnsendableRecord(record.position, "a cancel request without an order id")
                try:
                    account_id = account_of(record)
                except UnmirrorableRecord as error:
                    raise UnsendableRecord(record.position, str(error)) from error
                venue = await self.venues.venue_of(order_id, account_id)
                if venue is None:
                    raise UnsendableRecord(
                        record.position, f"the ledger holds no accepted order {order_id} to cancel"
                    )
                message = cancel_message(record, command, venue)
            messages.append(message)
        return messages

    async def _check_tail(self, tail: ExecTail) -> None:
        """The event TITAN_EXEC's last message was sent for must be in the ledger at its position."""
        if tail.empty:
            return
        found = await asyncio.to_thread(self.ledger.read_all, tail.position - 1, 1)
        record = found[0] if found and found[0].position == tail.position else None
        if record is None or exec_msg_id(record) != tail.msg_id:
            head = (await asyncio.to_thread(self.ledger.head))[0]
            held = "no record" if record is None else f"{record.type} {record.envelope.get('event_id')}"
            raise ExecAhead(
                f"stream {self.stream}'s last message (sequence {tail.seq}, {tail.msg_id}) was sent for "
                f"ledger position {tail.position}, but the ledger holds {held} there (its head is "
                f"position {head}): this is not the ledger that stream was sent from, or it was "
                "truncated or rewritten; run `titan ledger verify`"
            )


__all__ = [
    "ExecAhead",
    "ExecMessage",
    "ExecTail",
    "Gateway",
    "GatewayError",
    "GatewayProgress",
    "OrderVenues",
    "UnsendableRecord",
    "cancel_message",
    "exec_msg_id",
    "place_message",
    "read_exec_tail",
    "venue_in_ledger",
]
