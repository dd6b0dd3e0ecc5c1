"""One trace from the sender through a real NATS hop into the intake, the writer's decide and
append, and the relay's and the gateway's publishes (docs/tracing.md), with the trace context read
back from the stored messages. In process: a signed Sender, an Intake over a GroupCommitBus on a
fresh embedded ledger, then a Relay and a Gateway, against a nats-server of the test's own.

The module installs an in-memory tracer provider for its tests and removes it afterwards
(tracing_support.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import nats
import orjson
import pytest
from nats.aio.client import Client
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from adapters.nats import streams, subjects
from adapters.nats.gateway import Gateway
from adapters.nats.intake import Intake
from adapters.nats.relay import Relay
from adapters.nats.sender import Sender
from adapters.nats.signing import ISSUED_TS, ISSUER, SIGNATURE, Keys, generate_keys, sign
from commands import tracing
from commands.writer import GroupCommitBus
from infra.bootstrap import open_ledger
from infra.core import load_core
from infra.settings import Settings
from infra.submit import INIT_ACTOR, default_policy, init_id
from infra.writers import lease_store
from schemas import commands as wire
from schemas.policy import policy_hash
from tests.nats_own_server import own_nats_server

from .tracing_support import install_provider, provider_restored

pytestmark = pytest.mark.integration

ACCOUNT = "main"
TITAN_KEYS = (tracing.COMMAND_ID, tracing.INTENT_ID, tracing.PHASE_ID, tracing.ACCOUNT_ID)


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider_restored():
        install_provider(provider)
        try:
            yield memory
        finally:
            provider.shutdown()


@pytest.fixture
def spans(exporter: InMemorySpanExporter) -> InMemorySpanExporter:
    exporter.clear()
    return exporter


@pytest.fixture(scope="module")
def nats_url() -> Iterator[str]:
    with own_nats_server() as server:
        yield server.url


def place_order(n: int) -> dict[str, Any]:
    cid = f"trace-o{n}"
    return {
        "type": "place_order.v1",
        "command_id": cid,
        "account_id": ACCOUNT,
        "actor": "phase2-tracing",
        "policy_hash": policy_hash(default_policy()),
        "phase_id": 2,
        "intent_id": f"intent-{n}",
        "client_order_id": cid,
        "venue": "paper",
        "symbol": "BTCUSDT",
        "side": "BUY",
        "quantity": "0.010",
        "price": "65000.0",
        "reference_price": "65000.0",
    }


class World:
    """titan's command path in this process: streams, a ledger, the writers and a running intake."""

    def __init__(self, nats_url: str, directory: Path) -> None:
        self.nats_url = nats_url
        self.keys: Keys = generate_keys()
        self.ledger = open_ledger(f"sqlite:///{directory / 'ledger.db'}")
        self.bus = GroupCommitBus(lease_store(self.ledger), load_core())
        self.stop = asyncio.Event()
        self.nc: Client | None = None
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        nc = self.nc = await nats.connect(self.nats_url)
        js = nc.jetstream()
        for info in await js.streams_info():  # each test starts from empty streams
            await js.delete_stream(info.config.name or "")
        await streams.apply(js, spec=streams.declared(Settings(nats_url=self.nats_url)))
        await self.bus.handle(
            wire.ActivatePolicy(
                command_id=init_id(ACCOUNT), account_id=ACCOUNT, ts_ns=0, actor=INIT_ACTOR, policy=default_policy()
            )
        )
        now = time.time_ns()  # a fresh venue truth, or orders are refused TRUTH_SCORE_LOW
        await self.bus.handle(
            wire.RecordTruthSnapshot(
                command_id="trace-snap", account_id=ACCOUNT, ts_ns=now, actor="execution:paper", venue="paper",
                positions=[], open_order_ids=[], equity="100000", venue_ts_ns=now, latency_ms=5,
            )
        )
        intake = Intake(nc, self.bus, keys=self.keys, window_s=30.0)
        self.task = asyncio.get_running_loop().create_task(intake.run(self.stop))
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self.stop.set()
        if self.task is not None:
            await self.task
        await self.bus.stop()
        if self.nc is not None:
            await self.nc.close()
        self.ledger.close()

    @property
    def client(self) -> Client:
        assert self.nc is not None
        return self.nc

    async def messages(self, stream: str, command_id: str) -> list[dict[str, str]]:
        """The headers of every message of `stream` for the command, read back from the server."""
        js = self.client.jetstream()
        info = await js.stream_info(stream)
        found = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            message = await js.get_msg(stream, seq=seq)
            headers = message.headers or {}
            if headers.get(subjects.COMMAND_ID) == command_id:
                found.append(dict(headers))
        return found


def by_name(finished: tuple[ReadableSpan, ...], name: str, command_id: str) -> list[ReadableSpan]:
    return [
        span for span in finished
        if span.name == name and (span.attributes or {}).get(tracing.COMMAND_ID) == command_id
    ]


def one(finished: tuple[ReadableSpan, ...], name: str, command_id: str) -> ReadableSpan:
    found = by_name(finished, name, command_id)
    assert len(found) == 1, (name, [s.name for s in finished])
    return found[0]


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def trace_id_of(header: str) -> int:
    return int(header.split("-")[1], 16)


def test_one_trace_from_sender_to_the_mirror_and_execution(
    spans: InMemorySpanExporter, nats_url: str, tmp_path: Path
) -> None:
    command = place_order(1)
    cid = command["command_id"]

    async def scenario() -> tuple[list[dict[str, str]], list[dict[str, str]]]:
        async with World(nats_url, tmp_path) as world:
            async with Sender(world.client, keys=world.keys, issuer="phase2") as sender:
                outcome = await sender.send(subjects.command_subject(ACCOUNT, "place_order.v1"), orjson.dumps(command))
            assert outcome["outcome"] == "accepted", outcome
            # After the answer: the writer has remembered the command's append span by now.
            await Relay(world.ledger, world.client).run(once=True)
            await Gateway(world.ledger, world.client).run(once=True)
            return (
                await world.messages(subjects.EVT_STREAM, cid),
                await world.messages(subjects.EXEC_STREAM, cid),
            )

    mirrored, executed = asyncio.run(scenario())
    finished = spans.get_finished_spans()

    send = one(finished, "titan.send", cid)
    intake = one(finished, "titan.intake", cid)
    decide = one(finished, "titan.decide", cid)
    append = one(finished, "titan.append", cid)
    relayed = by_name(finished, "titan.relay.publish", cid)
    gateway = one(finished, "titan.gateway.publish", cid)

    trace_id = send.context.trace_id
    assert send.parent is None and send.kind == SpanKind.PRODUCER
    # One trace, each hop the child of the one before it.
    assert intake.kind == SpanKind.CONSUMER and intake.parent is not None and intake.parent.is_remote
    assert parent_id(intake) == send.context.span_id
    assert parent_id(decide) == intake.context.span_id
    assert parent_id(append) == decide.context.span_id
    assert len(relayed) >= 2  # order.accepted.v1 (and any other event), then the command record
    for span in [*relayed, gateway]:
        assert span.kind == SpanKind.PRODUCER and parent_id(span) == append.context.span_id
    for span in [intake, decide, append, *relayed, gateway]:
        assert span.context.trace_id == trace_id, span.name

    expected = {
        tracing.COMMAND_ID: cid,
        tracing.INTENT_ID: "intent-1",
        tracing.PHASE_ID: 2,
        tracing.ACCOUNT_ID: ACCOUNT,
    }
    for span in (send, intake, decide, append, *relayed, gateway):
        attributes = span.attributes or {}
        assert {key: attributes.get(key) for key in TITAN_KEYS} == expected, span.name
    assert (intake.attributes or {})[tracing.OUTCOME] == "accepted"
    assert (decide.attributes or {})[tracing.OUTCOME] == "accepted"
    positions = sorted(int((span.attributes or {})[tracing.POSITION]) for span in relayed)  # type: ignore[arg-type]
    assert (append.attributes or {})[tracing.POSITION] == positions[-1]  # the command record, last
    assert intake.status.status_code != StatusCode.ERROR

    # The stored messages carry the trace: both headers, the same value, the same trace id.
    assert len(mirrored) == len(relayed) and len(executed) == 1
    relay_span_ids = {span.context.span_id for span in relayed}
    for headers in mirrored:
        assert headers[subjects.TRACEPARENT] == headers[subjects.TITAN_TRACEPARENT]
        assert trace_id_of(headers[subjects.TITAN_TRACEPARENT]) == trace_id
        assert int(headers[subjects.TITAN_TRACEPARENT].split("-")[2], 16) in relay_span_ids
    assert trace_id_of(executed[0][subjects.TITAN_TRACEPARENT]) == trace_id
    assert executed[0][subjects.TRACEPARENT] == executed[0][subjects.TITAN_TRACEPARENT]


def test_the_intake_reads_titan_traceparent_when_traceparent_was_rewritten(
    spans: InMemorySpanExporter, nats_url: str, tmp_path: Path
) -> None:
    """A command as a rewriting server stores it (`Xraceparent`), signed: the signature does not
    cover the trace headers, and the intake's span is the child of titan's own copy."""
    command = place_order(2)
    cid = command["command_id"]
    upstream = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

    async def scenario() -> dict[str, Any]:
        async with World(nats_url, tmp_path) as world:
            subject = subjects.command_subject(ACCOUNT, "place_order.v1")
            payload = orjson.dumps(command)
            headers = sign(world.keys["phase2"], "phase2", subject, payload, time.time_ns())
            assert {ISSUER, ISSUED_TS, SIGNATURE} <= headers.keys()
            headers["Xraceparent"] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            headers[subjects.TITAN_TRACEPARENT] = upstream
            inbox = world.client.new_inbox()
            answers = await world.client.subscribe(inbox)
            headers[subjects.REPLY_TO] = inbox
            await world.client.jetstream().publish(subject, payload, headers=headers)
            answer = await answers.next_msg(timeout=10)
            return dict(orjson.loads(answer.data))

    outcome = asyncio.run(scenario())
    assert outcome["outcome"] == "accepted", outcome
    finished = spans.get_finished_spans()
    intake = one(finished, "titan.intake", cid)
    decide = one(finished, "titan.decide", cid)
    assert intake.context.trace_id == int(upstream.split("-")[1], 16)
    assert parent_id(intake) == int(upstream.split("-")[2], 16)
    assert parent_id(decide) == intake.context.span_id


def test_a_refused_command_ends_its_intake_span_in_error(
    spans: InMemorySpanExporter, nats_url: str, tmp_path: Path
) -> None:
    """Unsigned, on a signed intake: dead-lettered; the span says so, with the reason code."""
    command = place_order(3)

    async def scenario() -> dict[str, Any]:
        async with World(nats_url, tmp_path) as world, Sender(world.client) as sender:  # unsigned: no keys
            return await sender.send(subjects.command_subject(ACCOUNT, "place_order.v1"), orjson.dumps(command))

    outcome = asyncio.run(scenario())
    assert outcome["outcome"] == "invalid" and outcome["reason"] == "UNSIGNED", outcome
    finished = spans.get_finished_spans()
    send = one(finished, "titan.send", command["command_id"])
    intakes = [span for span in finished if span.name == "titan.intake"]
    assert len(intakes) == 1
    refused = intakes[0]
    assert refused.status.status_code == StatusCode.ERROR
    assert (refused.attributes or {})[tracing.REASON] == "UNSIGNED"
    assert refused.context.trace_id == send.context.trace_id
    assert not by_name(finished, "titan.decide", command["command_id"])
