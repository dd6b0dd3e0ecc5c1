"""The intake (SPEC §4, docs/messaging.md "Intake"): commands from TITAN_CMD into the group-commit
writer, each decided exactly once.

For every message fetched from the durable pull consumer `titan-intake`, in order:
1. the subject names an account and a command type (`titan.cmd.<account>.<type>`);
2. when keys are configured, the signature verifies for a known issuer inside the time window;
3. the payload is a command (the same models and bounds as `titan submit`) whose account and type
   are the subject's, stamped `ts_ns` on receipt (never behind the account's last decided time;
   the issuer's clock stays in `issued_ts_ns`);
4. the issuer's role allows it; a reply subject, if asked for, is an inbox.
A message that fails any step goes to TITAN_DLQ with its reason, is answered `invalid` when it
asked for an answer, and is acked: nothing is recorded. The rest go to the writer as one batch per
fetch; each message is acked only after the batch holding its command committed, and its outcome
is replied. A message whose handling fails (ledger unreachable, lease lost) is nak'ed with a
delay and comes back; after max_deliver the DLQ router takes it. At-least-once delivery plus
command-id idempotency: each command is decided once, a redelivered one is answered with its
original outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import nats.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, StatusCode

from commands import tracing
from commands.handlers import Outcome
from commands.lease import LeaseRefused
from commands.ports import LedgerError
from commands.translate import InvalidCommand
from commands.writer import GroupCommitBus
from schemas.intake import WireInputError, echo, parse_new_command

from . import subjects
from .dlq import dead_letter, ns_of
from .intake_metrics import IntakeMetrics
from .roles import check_role
from .signing import Keys, Refused, verify
from .trace_headers import extract

FETCH_BATCH: Final = 500
MAX_BATCHES_IN_FLIGHT: Final = 4
"""Fetched batches queued to the writers and not yet settled (the consumer's max_ack_pending,
1000, bounds the messages too)."""
FETCH_WAIT_S: Final = 0.5
RETRY_DELAYS_S: Final = (10.0, 30.0, 60.0, 120.0)
"""Delays of a nak after a failed handling, by delivery (the consumer's backoff, for naks too)."""
PROGRESS_EVERY_S: Final = 4.0
"""While a batch waits on the ledger, its messages are told `in progress` this often, so that
ack_wait (10 s) does not redeliver a command that is being decided."""
MAX_REPLY_SUBJECT: Final = 256
INTAKE_SPAN: Final = "titan.intake"

SUBJECT_INVALID: Final = "SUBJECT_INVALID"
SCHEMA_INVALID: Final = "SCHEMA_INVALID"
SUBJECT_MISMATCH: Final = "SUBJECT_MISMATCH"
BAD_REPLY_SUBJECT: Final = "BAD_REPLY_SUBJECT"
TOO_MANY_ACCOUNTS: Final = "TOO_MANY_ACCOUNTS"
MAX_ACCOUNTS: Final = 256
"""Accounts one serve writes at most: each writer holds a ledger connection (its lease), so
commands naming ever new accounts must not exhaust the database's connections."""


@dataclass(frozen=True, slots=True)
class Screened:
    """A message that passed every check: its command and where to answer."""

    msg: Msg
    command: Any
    reply_to: str | None
    received_ns: float
    span: Span | None = None
    """The message's `titan.intake` span when tracing is on: ended once it is answered."""


class Rejected(Exception):
    """A message refused at the boundary: a reason code and a bounded error text."""

    def __init__(self, reason: str, error: str, command_id: str | None = None) -> None:
        super().__init__(f"{reason}: {error}")
        self.reason = reason
        self.error = error
        self.command_id = command_id


class Intake:
    """Drains TITAN_CMD into the writer until stopped; see the module docstring."""

    def __init__(
        self,
        nc: Client,
        bus: GroupCommitBus,
        *,
        keys: Keys | None,
        window_s: float,
        metrics: IntakeMetrics | None = None,
        clock: Callable[[], int] = time.time_ns,
        fetch_batch: int = FETCH_BATCH,
        max_accounts: int = MAX_ACCOUNTS,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.bus = bus
        self.keys = keys
        self.window_ns = int(window_s * 1_000_000_000)
        self.metrics = metrics or IntakeMetrics()
        self.clock = clock
        self.fetch_batch = fetch_batch
        self.max_accounts = max_accounts
        self.log = log or (lambda _line: None)
        self._last_stamp: dict[str, int] = {}

    async def run(self, stop: asyncio.Event) -> None:
        """Fetch, decide, ack and answer until `stop` is set; the batches in hand are finished
        first (their commands committed, acked and answered): that is the drain.

        Pipelined: a fetched batch is screened and queued to the writers in fetch order, then the
        next one is fetched while the last commits (at most MAX_BATCHES_IN_FLIGHT are waiting on
        the ledger). The writers decide in queue order, so fetch order is decision order."""
        psub = await self.js.pull_subscribe_bind(
            durable=subjects.INTAKE_CONSUMER, stream=subjects.CMD_STREAM
        )
        in_flight: set[asyncio.Task[None]] = set()
        try:
            while not stop.is_set():
                while len(in_flight) >= MAX_BATCHES_IN_FLIGHT:
                    await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                try:
                    msgs = await psub.fetch(self.fetch_batch, timeout=FETCH_WAIT_S)
                except (nats.errors.TimeoutError, TimeoutError):
                    continue  # nothing to fetch (nats-py raises either)
                except (nats.errors.Error, OSError):
                    await asyncio.sleep(0.2)  # reconnecting: the durable consumer keeps our place
                    continue
                try:
                    settling = await self.queue(msgs)
                except Exception as error:  # noqa: BLE001 - never stop taking commands over one batch
                    self.log(f"intake: a batch failed ({type(error).__name__}: {error}); its messages come back")
                    for msg in msgs:
                        await _nak(msg)
                    continue
                if settling is not None:
                    task = asyncio.get_running_loop().create_task(settling)
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
        finally:
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)
            with contextlib.suppress(Exception):
                await psub.unsubscribe()

    async def handle(self, msgs: Sequence[Msg]) -> None:
        """One fetched batch, start to end: screened, queued, committed, acked and answered."""
        settling = await self.queue(msgs)
        if settling is not None:
            await settling

    async def queue(self, msgs: Sequence[Msg]) -> Coroutine[Any, Any, None] | None:
        """Screen each message in order (the refused are dead-lettered and acked) and queue the
        rest to their writers; return what settles them (acks, answers, retries) once decided."""
        received_ns = time.perf_counter()
        now_ns = self.clock()
        traced = tracing.enabled()
        screened: list[Screened] = []
        for msg in msgs:
            if _delivered(msg) > 1:
                self.metrics.redeliveries.inc()
            span = _intake_span(msg) if traced else None
            try:
                item = self._screen(msg, now_ns, received_ns)
            except Rejected as refusal:
                await self._dead_letter(msg, refusal, now_ns)
                _end_refused(span, refusal)
                continue
            except Exception as error:  # noqa: BLE001 - a bug must not drop a command: it comes back
                self.log(f"intake: stream seq {_seq(msg)} not screened ({type(error).__name__}: {error})")
                await _nak(msg)
                _end_retried(span, error)
                continue
            if span is not None:
                span.set_attributes(tracing.command_attributes(item.command))
                item = dataclasses.replace(item, span=span)
            screened.append(item)
        if not screened:
            return None
        # Told "in progress" from now on: starting a writer loads its account, which may take long.
        progress = asyncio.get_running_loop().create_task(self._keep_in_progress(screened))
        # Each account's writer first (starting it if needed), then every command queued at once,
        # in fetch order: the writers decide in queue order.
        writers: dict[str, Any] = {}
        failed: dict[str, BaseException] = {}
        for account_id in dict.fromkeys(item.command.account_id for item in screened):
            try:
                writers[account_id] = await self.bus.writer(account_id)
            except Exception as error:  # noqa: BLE001 - a lease held elsewhere, the ledger away: retried
                failed[account_id] = error
        queued: list[tuple[Screened, asyncio.Future[Outcome] | BaseException]] = []
        for item in screened:
            account_id = item.command.account_id
            if account_id in failed:
                queued.append((item, failed[account_id]))
                continue
            try:
                if item.span is None:
                    queued.append((item, writers[account_id].enqueue(item.command)))
                else:
                    # Queued inside the intake span's context: the writer's spans are its children.
                    with trace.use_span(item.span, record_exception=False, set_status_on_exception=False):
                        queued.append((item, writers[account_id].enqueue(item.command)))
            except Exception as error:  # noqa: BLE001 - the writer stopped: the message comes back
                queued.append((item, error))
        return self._settle(queued, progress)

    async def _settle(
        self, queued: list[tuple[Screened, asyncio.Future[Outcome] | BaseException]], progress: asyncio.Task[None]
    ) -> None:
        try:
            await asyncio.gather(*(self._one(item, waiting) for item, waiting in queued))
        finally:
            progress.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await progress

    # Screening ---------------------------------------------------------------------------

    def _screen(self, msg: Msg, now_ns: int, received_ns: float) -> Screened:
        headers = msg.headers or {}
        try:
            account_id, command_type = subjects.parse_command_subject(msg.subject)
        except ValueError as error:
            raise Rejected(SUBJECT_INVALID, echo(str(error), 200)) from None
        issuer: str | None = None
        issued_ts_ns: int | None = None
        if self.keys is not None:
            try:
                # The window runs to when JetStream stored the message, not to this delivery: a
                # command redelivered after a failure (or fetched after an outage) stays valid, and
                # a captured copy published again is stored anew, late.
                signed = verify(self.keys, msg.subject, msg.data, headers, _stored_ns(msg, now_ns), self.window_ns)
            except Refused as refusal:
                raise Rejected(refusal.reason, refusal.error) from None
            issuer, issued_ts_ns = signed.issuer, signed.issued_ts_ns
        reply_to = headers.get(subjects.REPLY_TO)
        if reply_to is not None and not _inbox(reply_to):
            raise Rejected(
                BAD_REPLY_SUBJECT,
                f"{subjects.REPLY_TO} must be a subject under {subjects.REPLY_PREFIX} of at most "
                f"{MAX_REPLY_SUBJECT} characters without wildcards; got {echo(reply_to, 64)!r}",
            )
        if not self.bus.has_writer(account_id) and self.bus.writer_count >= self.max_accounts:
            raise Rejected(
                TOO_MANY_ACCOUNTS,
                f"this serve already writes {self.bus.writer_count} accounts, its limit; account "
                f"{echo(account_id, 64)!r} is not one of them (each account holds a ledger connection)",
            )
        stamp = self._stamp(account_id, now_ns)
        try:
            command = parse_new_command(msg.data, stamp=stamp, issued_ts_ns=issued_ts_ns)
        except WireInputError as error:
            raise Rejected(SCHEMA_INVALID, echo(str(error), 600), error.command_id) from None
        if command.account_id != account_id or command.type != command_type:
            raise Rejected(
                SUBJECT_MISMATCH,
                f"the payload is a {command.type} for account {echo(command.account_id, 64)!r}, the subject "
                f"names {echo(command_type, 64)} for {echo(account_id, 64)!r}",
                command.command_id,
            )
        if issuer is not None:
            try:
                check_role(issuer, command.type, {"actor": command.actor, "phase_id": getattr(command, "phase_id", None)})
            except Refused as refusal:
                raise Rejected(refusal.reason, refusal.error, command.command_id) from None
        self._last_stamp[account_id] = stamp
        return Screened(msg, command, reply_to, received_ns)

    def _stamp(self, account_id: str, now_ns: int) -> int:
        """The time of receipt: now, and after the last stamp this intake gave the account and the
        last time the account's writer decided (a clock that stepped back never reorders)."""
        floor = self._last_stamp.get(account_id, 0)
        writer_state = self.bus.state_of(account_id)
        if writer_state is not None:
            floor = max(floor, int(writer_state.last_ts_ns))
        return max(now_ns, floor + 1) if floor else now_ns

    async def _dead_letter(self, msg: Msg, refusal: Rejected, now_ns: int) -> None:
        self.metrics.dead_letters.labels(refusal.reason).inc()
        try:
            await dead_letter(self.js, msg, refusal.reason, refusal.error, now_ns=now_ns)
        except Exception as error:  # noqa: BLE001 - the message comes back; nothing is lost
            self.log(f"intake: could not dead-letter stream seq {_seq(msg)}: {error}")
            await _nak(msg)
            return
        reply_to = (msg.headers or {}).get(subjects.REPLY_TO)
        if reply_to is not None and _inbox(reply_to):
            await self._reply(
                reply_to,
                {
                    "command_id": refusal.command_id,
                    "outcome": "invalid",
                    "reason": refusal.reason,
                    "errors": [{"field": "(message)", "error": refusal.error}],
                    "events": [],
                    "position": None,
                },
            )
        with contextlib.suppress(Exception):  # lost with the connection: redelivered, dead-lettered again (same entry id)
            await msg.ack()

    # Deciding ----------------------------------------------------------------------------

    async def _one(self, item: Screened, waiting: asyncio.Future[Outcome] | BaseException) -> None:
        if item.span is None:
            await self._decided(item, waiting)
            return
        try:
            await self._decided(item, waiting)
        finally:
            if item.span.is_recording():  # not ended yet by a refusal or a retry
                item.span.end()

    async def _decided(self, item: Screened, waiting: asyncio.Future[Outcome] | BaseException) -> None:
        if isinstance(waiting, BaseException):
            await self._retry(item, waiting)
            return
        try:
            outcome = await waiting
        except InvalidCommand as error:
            refusal = Rejected(SCHEMA_INVALID, echo(str(error), 600), item.command.command_id)
            await self._dead_letter(item.msg, refusal, self.clock())
            _end_refused(item.span, refusal)
            return
        except (LeaseRefused, LedgerError) as error:
            await self._retry(item, error)
            return
        except Exception as error:  # noqa: BLE001 - not decided: it comes back, and after max_deliver the DLQ
            await self._retry(item, error)
            return
        self.metrics.decided(outcome, time.perf_counter() - item.received_ns)
        if item.span is not None:
            _outcome_on_span(item.span, outcome)
        if item.reply_to is not None:
            await self._reply(item.reply_to, outcome_json(outcome))
        with contextlib.suppress(Exception):  # an ack lost with the connection: redelivered, answered as a duplicate
            await item.msg.ack()

    async def _retry(self, item: Screened, error: BaseException) -> None:
        self.metrics.retried.labels(type(error).__name__).inc()
        self.log(f"intake: command {item.command.command_id!r} not decided ({error}); it will be redelivered")
        await _nak(item.msg)
        _end_retried(item.span, error)

    async def _keep_in_progress(self, batch: list[Screened]) -> None:
        while True:
            await asyncio.sleep(PROGRESS_EVERY_S)
            for item in batch:
                with contextlib.suppress(Exception):
                    await item.msg.in_progress()

    async def _reply(self, subject: str, body: Mapping[str, Any]) -> None:
        with contextlib.suppress(Exception):  # an answer is a courtesy; the ledger holds the outcome
            await self.nc.publish(subject, orjson.dumps(body))


def outcome_json(outcome: Outcome) -> dict[str, Any]:
    """A decided command's answer: the same JSON as a `titan submit` line."""
    return outcome.to_json()


def _inbox(subject: str) -> bool:
    return (
        subject.startswith(subjects.REPLY_PREFIX)
        and len(subject) <= MAX_REPLY_SUBJECT
        and not any(char in "*> \t\r\n" for char in subject)
        and ".." not in subject
        and not subject.endswith(".")
    )


def _delivered(msg: Msg) -> int:
    try:
        return int(msg.metadata.num_delivered)
    except Exception:  # noqa: BLE001 - a message not from JetStream
        return 1


def _stored_ns(msg: Msg, default_ns: int) -> int:
    """When JetStream stored the message (UTC nanoseconds), else `default_ns`."""
    try:
        moment = msg.metadata.timestamp
    except Exception:  # noqa: BLE001 - a message not from JetStream
        return default_ns
    return ns_of(moment, default_ns)


def _seq(msg: Msg) -> int | None:
    try:
        return int(msg.metadata.sequence.stream)
    except Exception:  # noqa: BLE001
        return None


async def _nak(msg: Msg) -> None:
    delivered = _delivered(msg)
    delay = RETRY_DELAYS_S[min(delivered, len(RETRY_DELAYS_S)) - 1]
    with contextlib.suppress(Exception):
        await msg.nak(delay=delay)


# Tracing (docs/tracing.md) -------------------------------------------------------------------


def _intake_span(msg: Msg) -> Span:
    """The CONSUMER span of one message, a child of the trace context its headers carry."""
    return tracing.tracer().start_span(
        INTAKE_SPAN,
        context=extract(msg.headers),
        kind=SpanKind.CONSUMER,
        attributes={"messaging.system": "nats", "messaging.destination.name": msg.subject},
    )


def _outcome_on_span(span: Span, outcome: Outcome) -> None:
    span.set_attribute(tracing.OUTCOME, outcome.outcome)
    span.set_attribute(tracing.POSITION, outcome.position)
    if outcome.outcome == "rejected":
        span.set_attribute(tracing.REASON, outcome.reason or "")
        span.set_status(StatusCode.ERROR, outcome.reason or "rejected")


def _end_refused(span: Span | None, refusal: Rejected) -> None:
    """A command refused at the boundary (dead-lettered): ERROR, with its reason code."""
    if span is None:
        return
    if refusal.command_id:
        span.set_attribute(tracing.COMMAND_ID, refusal.command_id)
    span.set_attribute(tracing.OUTCOME, "invalid")
    span.set_attribute(tracing.REASON, refusal.reason)
    span.set_status(StatusCode.ERROR, f"{refusal.reason}: {refusal.error[:200]}")
    span.end()


def _end_retried(span: Span | None, error: BaseException) -> None:
    """A command not decided this time (nak'ed, it comes back): ERROR, with what failed."""
    if span is None:
        return
    span.set_attribute(tracing.OUTCOME, "retried")
    span.record_exception(error)
    span.set_status(StatusCode.ERROR, type(error).__name__)
    span.end()
