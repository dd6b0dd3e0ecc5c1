"""titan's JetStream streams and durable consumers, declared in code, and the check every service
runs at start (docs/messaging.md, "Streams and consumers").

- `declared(settings)`: the spec (the duplicate window comes from the settings).
- `verify(js)`: how the server differs from the spec, field by field (only fields titan declares are
  compared, so server-filled defaults never read as drift).
- `require_spec(js)`: raise SpecDrift listing every difference; services call it before they start.
- `apply(js, recreate=...)`: create what is missing, update what JetStream can change in place, and
  refuse the rest (storage, retention to or from work-queue, switching deny_delete or deny_purge off,
  and whatever else the server refuses) unless `recreate` allows deleting and creating again; a
  stream is never deleted without it.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Final

import nats.js.errors
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    ConsumerInfo,
    DeliverPolicy,
    DiscardPolicy,
    ReplayPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamInfo,
)
from nats.js.manager import JetStreamManager

from infra.settings import Settings

from . import subjects
from .spec_fields import Drift, Value, differences, live_fields, nanoseconds, normalise

DLQ_MAX_AGE_S: Final = 30 * 86_400
"""How long a dead letter is kept for triage (30 days); `titan dlq purge` removes one sooner."""


@dataclass(frozen=True)
class StreamSpec:
    """A stream as titan declares it; every field listed here is compared with the live stream."""

    name: str
    subjects: tuple[str, ...]
    retention: RetentionPolicy
    storage: StorageType
    duplicate_window_s: float
    max_age_s: float
    """0: no age limit."""
    why: str
    discard: DiscardPolicy = DiscardPolicy.OLD
    max_msgs: int = -1
    max_bytes: int = -1
    max_msgs_per_subject: int = -1
    deny_delete: bool = False
    """JetStream refuses to delete a message (a stream with it cannot have it switched off)."""
    deny_purge: bool = False
    """JetStream refuses to purge the stream (likewise permanent)."""

    def config(self) -> StreamConfig:
        """The nats-py configuration that creates the stream."""
        return StreamConfig(
            name=self.name,
            description=self.why,
            subjects=list(self.subjects),
            retention=self.retention,
            storage=self.storage,
            duplicate_window=self.duplicate_window_s,
            max_age=self.max_age_s,
            discard=self.discard,
            max_msgs=self.max_msgs,
            max_bytes=self.max_bytes,
            max_msgs_per_subject=self.max_msgs_per_subject,
            deny_delete=self.deny_delete,
            deny_purge=self.deny_purge,
        )

    def fields(self) -> dict[str, Value]:
        """The declared fields, normalised (JetStream's field names)."""
        config = self.config()
        names = (
            "subjects",
            "retention",
            "storage",
            "duplicate_window",
            "max_age",
            "discard",
            "max_msgs",
            "max_bytes",
            "max_msgs_per_subject",
            "deny_delete",
            "deny_purge",
        )
        return live_fields(config, names)


@dataclass(frozen=True)
class ConsumerSpec:
    """A durable pull consumer as titan declares it. With a backoff list, JetStream sets ack_wait
    to its first entry, and the list may not be longer than max_deliver: both are checked here."""

    stream: str
    durable: str
    ack_wait_s: float
    max_deliver: int
    """-1: unlimited."""
    backoff_s: tuple[float, ...]
    """Redelivery delays after ack timeouts only: a bare nak() redelivers at once."""
    max_ack_pending: int
    why: str
    filter_subject: str = ""
    """"": the whole stream."""

    def __post_init__(self) -> None:
        if self.backoff_s and nanoseconds(self.backoff_s[0]) != nanoseconds(self.ack_wait_s):
            raise ValueError(f"{self.where}: JetStream sets ack_wait to backoff[0]; declare them equal")
        if self.backoff_s and self.max_deliver != -1 and len(self.backoff_s) > self.max_deliver:
            raise ValueError(f"{self.where}: backoff has more entries than max_deliver allows")

    @property
    def where(self) -> str:
        return f"{self.stream}/{self.durable}"

    def config(self) -> ConsumerConfig:
        """The nats-py configuration that creates the consumer."""
        return ConsumerConfig(
            durable_name=self.durable,
            description=self.why,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            replay_policy=ReplayPolicy.INSTANT,
            ack_wait=self.ack_wait_s,
            max_deliver=self.max_deliver,
            backoff=list(self.backoff_s) or None,
            max_ack_pending=self.max_ack_pending,
            filter_subject=self.filter_subject or None,
        )

    def fields(self) -> dict[str, Value]:
        """The declared fields, normalised (JetStream's field names)."""
        names = (
            "ack_policy",
            "deliver_policy",
            "replay_policy",
            "deliver_subject",
            "filter_subject",
            "ack_wait",
            "max_deliver",
            "backoff",
            "max_ack_pending",
        )
        return live_fields(self.config(), names)


@dataclass(frozen=True)
class Spec:
    """Every stream and consumer titan's services need."""

    streams: tuple[StreamSpec, ...]
    consumers: tuple[ConsumerSpec, ...]


def declared(settings: Settings | None = None) -> Spec:
    """titan's streams and consumers (docs/messaging.md explains each value)."""
    window_s = (settings or Settings()).nats_duplicate_window_s
    streams = (
        StreamSpec(
            subjects.CMD_STREAM,
            (f"{subjects.CMD_PREFIX}.>",),
            RetentionPolicy.WORK_QUEUE,
            StorageType.FILE,
            window_s,
            0,
            why="titan's commands: a work queue the intake drains; a command leaves only when acked "
            "after its record committed (or when the DLQ router takes it)",
        ),
        StreamSpec(
            subjects.EVT_STREAM,
            (f"{subjects.EVT_PREFIX}.>",),
            RetentionPolicy.LIMITS,
            StorageType.FILE,
            window_s,
            0,
            why="the ledger's mirror, every record in position order; kept whole (no age or size "
            "limit): its last message is the relay's resume point",
        ),
        StreamSpec(
            subjects.DLQ_STREAM,
            (f"{subjects.DLQ_PREFIX}.>",),
            RetentionPolicy.LIMITS,
            StorageType.FILE,
            window_s,
            DLQ_MAX_AGE_S,
            why="dead letters (titan.dlq.v1): invalid, forged or undeliverable commands, kept 30 days "
            "for triage",
        ),
        StreamSpec(
            subjects.ADVISORY_STREAM,
            (
                f"{subjects.MAX_DELIVERIES_ADVISORY_PREFIX}.{subjects.CMD_STREAM}.*",
                f"{subjects.MSG_TERMINATED_ADVISORY_PREFIX}.{subjects.CMD_STREAM}.*",
            ),
            RetentionPolicy.WORK_QUEUE,
            StorageType.FILE,
            window_s,
            0,
            why="JetStream's max-deliveries and terminated advisories for TITAN_CMD, captured so DLQ "
            "routing survives a restart of titan; a work queue the DLQ router drains",
        ),
        checkpoint_stream(window_s),
        StreamSpec(
            subjects.EXEC_STREAM,
            (f"{subjects.EXEC_PREFIX}.>",),
            RetentionPolicy.LIMITS,
            StorageType.FILE,
            window_s,
            0,
            why="orders to the execution engines (titan.exec.<venue>.place|cancel), each accepted order "
            "and cancel request once, in ledger position order; kept whole (no age or size limit): its "
            "last message is the gateway's resume point",
        ),
    )
    consumers = (
        ConsumerSpec(
            subjects.CMD_STREAM,
            subjects.INTAKE_CONSUMER,
            ack_wait_s=10,
            max_deliver=5,
            backoff_s=(10, 30, 60, 120),
            max_ack_pending=1000,
            why="the intake: acks a command after its record committed; a failed one is nak'ed with "
            "a delay; after 5 deliveries the DLQ router takes it",
        ),
        ConsumerSpec(
            subjects.ADVISORY_STREAM,
            subjects.DLQ_ROUTER_CONSUMER,
            ack_wait_s=10,
            max_deliver=-1,
            backoff_s=(10, 30, 120),
            max_ack_pending=100,
            why="the DLQ router: moves a command that reached max_deliver (or was terminated) to "
            "TITAN_DLQ; an advisory is never given up on",
        ),
        ConsumerSpec(
            subjects.EXEC_STREAM,
            subjects.PAPER_CONSUMER,
            ack_wait_s=10,
            max_deliver=-1,
            backoff_s=(10,),
            max_ack_pending=1000,
            why="the paper execution engine (titan paper run): acks a place or cancel once its plan is "
            "in its book; an order is never given up on",
            filter_subject=subjects.exec_filter(subjects.PAPER_VENUE),
        ),
    )
    return Spec(streams, consumers)


def checkpoint_stream(window_s: float) -> StreamSpec:
    """TITAN_CHECKPOINTS: the signed checkpoint lines of `titan ledger checkpoint --mirror`, one
    subject per ledger; kept whole, and no message may be deleted or the stream purged."""
    return StreamSpec(
        subjects.CHECKPOINT_STREAM,
        (f"{subjects.CHECKPOINT_PREFIX}.>",),
        RetentionPolicy.LIMITS,
        StorageType.FILE,
        window_s,
        0,
        why="signed checkpoints of the ledger's head (titan.checkpoint.<ledger id>), the same lines as "
        "the checkpoint file: a second copy the database's administrators cannot roll back; kept "
        "whole, messages can be neither deleted nor purged",
        deny_delete=True,
        deny_purge=True,
    )


# Checking --------------------------------------------------------------------------------------


class SpecDrift(Exception):
    """The live streams or consumers differ from titan's spec; the message lists every difference."""

    def __init__(self, drifts: list[Drift]) -> None:
        self.drifts = drifts
        lines = "\n".join(str(drift) for drift in drifts)
        super().__init__(
            f"NATS streams differ from titan's spec in {len(drifts)} field(s) "
            f"(`titan nats apply` fixes what can change in place):\n{lines}"
        )


class ApplyRefused(Exception):
    """`apply` would have to delete and recreate something, or the server refused a change."""

    def __init__(self, reasons: list[str], done: list[str]) -> None:
        self.reasons = reasons
        self.done = done
        super().__init__("\n".join(reasons))


async def _stream(js: JetStreamManager, name: str) -> StreamInfo | None:
    try:
        return await js.stream_info(name)
    except nats.js.errors.NotFoundError:
        return None


async def _consumer(js: JetStreamManager, stream: str, durable: str) -> ConsumerInfo | None:
    try:
        info: ConsumerInfo = await js.consumer_info(stream, durable)
    except nats.js.errors.NotFoundError:
        return None
    return info


async def verify(js: JetStreamManager, spec: Spec | None = None) -> list[Drift]:
    """Every difference between the server and the spec: missing streams and consumers, and each
    declared field whose live value differs (fields titan does not declare are not compared)."""
    spec = spec or declared()
    drifts: list[Drift] = []
    for stream in spec.streams:
        info = await _stream(js, stream.name)
        if info is None:
            drifts.append(Drift(stream.name, None, None))
            continue
        wanted = stream.fields()
        drifts += differences(stream.name, None, wanted, live_fields(info.config, wanted))
    for consumer in spec.consumers:
        found = await _consumer(js, consumer.stream, consumer.durable)
        if found is None:
            drifts.append(Drift(consumer.stream, consumer.durable, None))
            continue
        wanted = consumer.fields()
        drifts += differences(consumer.stream, consumer.durable, wanted, live_fields(found.config, wanted))
    return drifts


async def require_spec(js: JetStreamManager, spec: Spec | None = None) -> None:
    """Return when the server matches the spec; otherwise raise SpecDrift with every difference.
    Every titan service that uses NATS calls this at start and refuses to start on drift."""
    drifts = await verify(js, spec)
    if drifts:
        raise SpecDrift(drifts)


# Applying --------------------------------------------------------------------------------------

_CONSUMER_FIXED: Final = frozenset({"ack_policy", "deliver_policy", "replay_policy", "deliver_subject"})
"""Consumer fields JetStream refuses to change in place (it answers 10012)."""


def _fixed_in_stream(drift: Drift) -> bool:
    """Whether JetStream refuses this stream change in place (it answers 10052)."""
    if drift.field == "storage":
        return True
    if drift.field in ("deny_delete", "deny_purge") and drift.declared == 0:
        return True  # JetStream can switch them on in place, never off
    workqueue = RetentionPolicy.WORK_QUEUE.value
    return drift.field == "retention" and workqueue in (drift.declared, drift.live)


def _fields_text(drifts: list[Drift]) -> str:
    return "; ".join(str(drift) for drift in drifts)


@dataclass
class _Plan:
    create_streams: list[StreamSpec] = field(default_factory=list)
    recreate_streams: list[tuple[StreamSpec, list[Drift]]] = field(default_factory=list)
    update_streams: list[tuple[StreamSpec, StreamConfig, list[Drift]]] = field(default_factory=list)
    create_consumers: list[ConsumerSpec] = field(default_factory=list)
    recreate_consumers: list[tuple[ConsumerSpec, list[Drift]]] = field(default_factory=list)
    update_consumers: list[tuple[ConsumerSpec, ConsumerConfig, list[Drift]]] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)


def _stream_refusal(stream: StreamSpec, drifts: list[Drift], messages: int, why: str) -> str:
    return (
        f"{stream.name}: {why} ({_fields_text(drifts)}); `titan nats apply --recreate` deletes the "
        f"stream with its {messages} message(s) and its consumers, and creates it again"
    )


async def _plan(js: JetStreamManager, spec: Spec, recreate: bool) -> _Plan:
    plan = _Plan()
    renewed: set[str] = set()  # streams to be created or recreated: their consumers are created
    for stream in spec.streams:
        info = await _stream(js, stream.name)
        if info is None:
            plan.create_streams.append(stream)
            renewed.add(stream.name)
            continue
        wanted = stream.fields()
        drifts = differences(stream.name, None, wanted, live_fields(info.config, wanted))
        fixed = [drift for drift in drifts if _fixed_in_stream(drift)]
        if fixed and recreate:
            plan.recreate_streams.append((stream, drifts))
            renewed.add(stream.name)
        elif fixed:
            why = "JetStream cannot change " + " or ".join(str(d.field) for d in fixed) + " in place"
            plan.refusals.append(_stream_refusal(stream, fixed, info.state.messages, why))
        elif drifts:
            plan.update_streams.append((stream, info.config, drifts))
    for consumer in spec.consumers:
        if consumer.stream in renewed:
            continue  # created with its stream
        found = await _consumer(js, consumer.stream, consumer.durable)
        if found is None:
            plan.create_consumers.append(consumer)
            continue
        wanted = consumer.fields()
        drifts = differences(consumer.stream, consumer.durable, wanted, live_fields(found.config, wanted))
        fixed = [drift for drift in drifts if drift.field in _CONSUMER_FIXED]
        if fixed and recreate:
            plan.recreate_consumers.append((consumer, drifts))
        elif fixed:
            plan.refusals.append(
                f"{consumer.where}: JetStream cannot change "
                + " or ".join(str(d.field) for d in fixed)
                + f" of a consumer in place ({_fields_text(fixed)}); `titan nats apply --recreate` "
                "deletes the consumer (its messages stay in the stream and are delivered again) and "
                "creates it again"
            )
        elif drifts:
            plan.update_consumers.append((consumer, found.config, drifts))
    return plan


def _merged_stream(live: StreamConfig, stream: StreamSpec) -> StreamConfig:
    """The live configuration with titan's declared fields put back (others stay as they are)."""
    declared_config = stream.config()
    return live.evolve(
        subjects=declared_config.subjects,
        retention=declared_config.retention,
        storage=declared_config.storage,
        duplicate_window=declared_config.duplicate_window,
        max_age=declared_config.max_age,
        discard=declared_config.discard,
        max_msgs=declared_config.max_msgs,
        max_bytes=declared_config.max_bytes,
        max_msgs_per_subject=declared_config.max_msgs_per_subject,
        deny_delete=declared_config.deny_delete,
        deny_purge=declared_config.deny_purge,
    )


def _merged_consumer(live: ConsumerConfig, consumer: ConsumerSpec) -> ConsumerConfig:
    declared_config = consumer.config()
    return live.evolve(
        ack_wait=declared_config.ack_wait,
        max_deliver=declared_config.max_deliver,
        backoff=declared_config.backoff,
        max_ack_pending=declared_config.max_ack_pending,
        filter_subject=declared_config.filter_subject,
    )


class _Applier:
    """Carries out a plan, recording each change done; a server refusal becomes ApplyRefused."""

    def __init__(self, js: JetStreamManager, recreate: bool) -> None:
        self.js = js
        self.recreate = recreate
        self.done: list[str] = []

    async def call(self, what: str, request: Awaitable[object]) -> None:
        try:
            await request
        except nats.js.errors.ServiceUnavailableError:
            raise
        except nats.js.errors.APIError as error:
            reason = f"{what}: the server refused: {error.description} (error {error.err_code})"
            raise ApplyRefused([reason], self.done) from error

    async def create_stream(self, stream: StreamSpec) -> None:
        await self.call(f"creating stream {stream.name}", self.js.add_stream(stream.config()))

    async def recreate_stream(self, stream: StreamSpec, why: str) -> None:
        info = await _stream(self.js, stream.name)
        messages = info.state.messages if info is not None else 0
        await self.call(f"deleting stream {stream.name}", self.js.delete_stream(stream.name))
        await self.create_stream(stream)
        self.done.append(f"recreated stream {stream.name}, deleting its {messages} message(s): {why}")

    async def update_stream(self, stream: StreamSpec, live: StreamConfig, drifts: list[Drift]) -> bool:
        """Update in place; False when the server refused and the stream was recreated instead."""
        try:
            await self.js.update_stream(_merged_stream(live, stream))
        except nats.js.errors.ServiceUnavailableError:
            raise
        except nats.js.errors.APIError as error:
            if not self.recreate:
                info = await _stream(self.js, stream.name)
                messages = info.state.messages if info is not None else 0
                why = f"the server refuses the change in place: {error.description}"
                raise ApplyRefused([_stream_refusal(stream, drifts, messages, why)], self.done) from error
            await self.recreate_stream(stream, f"{error.description}: {_fields_text(drifts)}")
            return False
        self.done.append(f"updated stream {stream.name}: {_fields_text(drifts)}")
        return True

    async def create_consumer(self, consumer: ConsumerSpec) -> None:
        request = self.js.add_consumer(consumer.stream, consumer.config())
        await self.call(f"creating consumer {consumer.where}", request)

    async def recreate_consumer(self, consumer: ConsumerSpec, why: str) -> None:
        request = self.js.delete_consumer(consumer.stream, consumer.durable)
        await self.call(f"deleting consumer {consumer.where}", request)
        await self.create_consumer(consumer)
        self.done.append(f"recreated consumer {consumer.where}: {why}")

    async def update_consumer(
        self, consumer: ConsumerSpec, live: ConsumerConfig, drifts: list[Drift]
    ) -> None:
        try:
            await self.js.add_consumer(consumer.stream, _merged_consumer(live, consumer))
        except nats.js.errors.ServiceUnavailableError:
            raise
        except nats.js.errors.APIError as error:
            if not self.recreate:
                reason = (
                    f"{consumer.where}: the server refuses the change in place: {error.description} "
                    f"({_fields_text(drifts)}); `titan nats apply --recreate` deletes the consumer "
                    "(its messages stay in the stream and are delivered again) and creates it again"
                )
                raise ApplyRefused([reason], self.done) from error
            await self.recreate_consumer(consumer, f"{error.description}: {_fields_text(drifts)}")
            return
        self.done.append(f"updated consumer {consumer.where}: {_fields_text(drifts)}")


async def apply(js: JetStreamManager, *, recreate: bool = False, spec: Spec | None = None) -> list[str]:
    """Make the server match the spec; return what was done, one line per change ([] when it
    already matched). Raise ApplyRefused, before changing anything, for a change JetStream cannot
    make in place unless `recreate`; a refusal the server gives only when asked is raised then,
    with what was already done. A stream (and its messages) is deleted only when `recreate`."""
    spec = spec or declared()
    plan = await _plan(js, spec, recreate)
    if plan.refusals:
        raise ApplyRefused(plan.refusals, [])
    applier = _Applier(js, recreate)
    renewed = {stream.name for stream in plan.create_streams}
    for stream in plan.create_streams:
        await applier.create_stream(stream)
        applier.done.append(f"created stream {stream.name}")
    for stream, drifts in plan.recreate_streams:
        await applier.recreate_stream(stream, _fields_text(drifts))
        renewed.add(stream.name)
    for stream, live, drifts in plan.update_streams:
        if not await applier.update_stream(stream, live, drifts):
            renewed.add(stream.name)
    for consumer in spec.consumers:
        if consumer.stream in renewed:  # a new stream has no consumers yet
            await applier.create_consumer(consumer)
            applier.done.append(f"created consumer {consumer.where}")
    for consumer in plan.create_consumers:
        if consumer.stream not in renewed:
            await applier.create_consumer(consumer)
            applier.done.append(f"created consumer {consumer.where}")
    for consumer, drifts in plan.recreate_consumers:
        if consumer.stream not in renewed:
            await applier.recreate_consumer(consumer, _fields_text(drifts))
    for consumer, live_config, drifts in plan.update_consumers:
        if consumer.stream not in renewed:
            await applier.update_consumer(consumer, live_config, drifts)
    return applier.done


__all__ = [
    "ApplyRefused",
    "ConsumerSpec",
    "Drift",
    "Spec",
    "SpecDrift",
    "StreamSpec",
    "apply",
    "declared",
    "normalise",
    "require_spec",
    "verify",
]
