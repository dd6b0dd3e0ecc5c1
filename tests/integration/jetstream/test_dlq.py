"""The DLQ against a real nats-server of this module's own: the intake's `dead_letter`, the router
after a real max-deliver and a real terminate, the view's feed (exactly once, gaps skipped, purge
and replay statuses), and reading and deleting entries (docs/dlq.md)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import orjson
import pytest
import pytest_asyncio
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from adapters.nats import dlq, streams, subjects
from adapters.sqlite.read_models import SQLiteReadModelStore
from infra.settings import Settings
from projections import dlq as dlq_view
from projections.model import Put
from projections.store import Batch
from schemas.dlq import DlqEntry, parse_entry
from tests.nats_own_server import own_nats_server
from tests.services import NatsServer

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

SUBJECT = "titan.cmd.main.halt.v1"
PAYLOAD = b'{"type":"halt.v1","command_id":"h1","account_id":"main","ts_ns":1,"actor":"op","reason":"x"}'


def fast_spec() -> streams.Spec:
    """titan's streams, with an intake consumer that gives up after 2 quick deliveries."""
    declared = streams.declared(Settings(nats_duplicate_window_s=60))
    intake = streams.ConsumerSpec(
        subjects.CMD_STREAM, subjects.INTAKE_CONSUMER, ack_wait_s=1, max_deliver=2, backoff_s=(), max_ack_pending=100,
        why="test: max_deliver 2, ack wait 1 s",
    )
    router = next(c for c in declared.consumers if c.durable == subjects.DLQ_ROUTER_CONSUMER)
    return streams.Spec(declared.streams, (intake, router))


@pytest.fixture(scope="module")
def server() -> Iterator[NatsServer]:
    with own_nats_server() as started:
        yield started


@pytest_asyncio.fixture
async def js(server: NatsServer) -> AsyncIterator[JetStreamContext]:
    client = await nats.connect(server.url)
    context = client.jetstream()
    for info in await context.streams_info():
        await context.delete_stream(info.config.name or "")
    await streams.apply(context, spec=fast_spec())
    try:
        yield context
    finally:
        await client.close()


async def intake_messages(js: JetStreamContext, count: int = 1) -> list[Msg]:
    sub = await js.pull_subscribe_bind(durable=subjects.INTAKE_CONSUMER, stream=subjects.CMD_STREAM)
    try:
        return await sub.fetch(count, timeout=5)
    finally:
        await sub.unsubscribe()


async def route_until(router: dlq.DlqRouter, count: int, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    routed = 0
    while routed < count:
        assert time.monotonic() < deadline, f"the router routed {routed} of {count} in {timeout_s} s"
        routed += await router.route_once()


async def messages(js: JetStreamContext, stream: str) -> int:
    return (await js.stream_info(stream)).state.messages


async def test_dead_letter_writes_the_entry_once_and_leaves_the_original_to_the_intake(js: JetStreamContext) -> None:
    await js.publish(SUBJECT, b"\xffnot json", headers={"Titan-Issuer": "console"})
    [msg] = await intake_messages(js)
    now = time.time_ns()
    entry = await dlq.dead_letter(js, msg, "SCHEMA_INVALID", "not valid UTF-8 (byte 0)", now_ns=now)
    again = await dlq.dead_letter(js, msg, "SCHEMA_INVALID", "not valid UTF-8 (byte 0)", now_ns=now + 1)
    assert entry.entry_id == again.entry_id
    assert await messages(js, subjects.DLQ_STREAM) == 1  # the duplicate window took the second
    assert await messages(js, subjects.CMD_STREAM) == 1  # not acked here
    stored = await js.get_msg(subjects.DLQ_STREAM, 1)
    assert stored.subject == "titan.dlq.main.SCHEMA_INVALID"
    assert (stored.headers or {})[subjects.MSG_ID] == entry.entry_id
    read = parse_entry(stored.data or b"")
    assert read.payload_bytes() == b"\xffnot json" and read.payload_encoding == "base64"
    assert read.headers["Titan-Issuer"] == "console"
    assert (read.stream_seq, read.delivery_count, read.last_seen_ns) == (1, 1, now)
    assert 0 < read.first_seen_ns <= now
    await msg.ack_sync()
    assert await messages(js, subjects.CMD_STREAM) == 0


async def test_the_router_moves_a_command_past_max_deliver_to_the_dlq(js: JetStreamContext) -> None:
    await js.publish(SUBJECT, PAYLOAD, headers={"Titan-Issuer": "console", "Nats-Msg-Id": "orig-1"})
    sub = await js.pull_subscribe_bind(durable=subjects.INTAKE_CONSUMER, stream=subjects.CMD_STREAM)
    for _ in range(2):  # the intake fails twice: JetStream gives up and says so
        [msg] = await sub.fetch(1, timeout=5)
        await msg.nak()
    with pytest.raises(nats.errors.TimeoutError):  # the intake asks again: nothing; the advisory is out
        await sub.fetch(1, timeout=1)
    await sub.unsubscribe()
    router = dlq.DlqRouter(js, fetch_timeout_s=0.5, retry_delay_s=0.5)
    try:
        await route_until(router, 1)
    finally:
        await router.close()
    assert await messages(js, subjects.CMD_STREAM) == 0  # removed from the work queue
    [(_, entry)] = await dlq.read_entries(js, limit=10)
    assert (entry.reason, entry.subject, entry.payload_bytes(), entry.delivery_count) == ("MAX_DELIVER", SUBJECT, PAYLOAD, 2)
    assert entry.headers["Nats-Msg-Id"] == "orig-1"
    assert (entry.account_id, entry.command_id, entry.stream_seq) == ("main", "h1", 1)
    assert entry.error is not None and "2 deliveries" in entry.error
    assert entry.entry_id == dlq.entry_for(SUBJECT, {}, PAYLOAD, 1, "X", None, 0, 0, 0).entry_id
    info = await js.consumer_info(subjects.ADVISORY_STREAM, subjects.DLQ_ROUTER_CONSUMER)
    assert (info.num_pending, info.num_ack_pending) == (0, 0)
    assert await messages(js, subjects.ADVISORY_STREAM) == 0


async def test_a_terminated_command_gets_an_entry_from_the_advisory(js: JetStreamContext) -> None:
    await js.publish(SUBJECT, PAYLOAD)
    [msg] = await intake_messages(js)
    await msg.term()
    router = dlq.DlqRouter(js, fetch_timeout_s=0.5)
    try:
        await route_until(router, 1)
    finally:
        await router.close()
    [(_, entry)] = await dlq.read_entries(js, limit=10)
    assert entry.reason == "TERMINATED" and entry.stream_seq == 1
    assert await messages(js, subjects.CMD_STREAM) == 0
    if not entry.subject:  # the server had removed it already: what the advisory says
        assert entry.payload == "" and entry.error is not None and "no longer in TITAN_CMD" in entry.error
    else:
        assert entry.payload_bytes() == PAYLOAD


async def test_a_failing_route_is_naked_and_retried(js: JetStreamContext) -> None:
    body = orjson.dumps({"stream": "TITAN_CMD", "consumer": "titan-intake", "stream_seq": 99, "deliveries": 5})
    await js.publish(f"{subjects.MAX_DELIVERIES_ADVISORY_PREFIX}.TITAN_CMD.titan-intake", body)
    router = dlq.DlqRouter(js, fetch_timeout_s=0.5, retry_delay_s=0.2)
    await js.delete_stream(subjects.DLQ_STREAM)  # nowhere to write the entry: the route fails
    try:
        assert await router.route_once() == 0
        assert router.failures == 1
        await streams.apply(js, spec=fast_spec())
        await asyncio.sleep(0.3)
        await route_until(router, 1)
    finally:
        await router.close()
    [(_, entry)] = await dlq.read_entries(js, limit=10)
    assert (entry.reason, entry.stream_seq, entry.subject, entry.delivery_count) == ("MAX_DELIVER", 99, "", 5)


async def publish_entries(js: JetStreamContext, count: int, first_seq: int = 1, **extra_headers: str) -> list[DlqEntry]:
    written = []
    for n in range(first_seq, first_seq + count):
        headers = {"Titan-Replay-Of": extra_headers["replay_of"]} if "replay_of" in extra_headers else {}
        entry = dlq.entry_for(SUBJECT, headers, PAYLOAD + str(n).encode(), n, "BAD_SIGNATURE", "no", 1, n, n)
        await dlq.publish_entry(js, entry)
        written.append(entry)
    return written


async def test_the_feed_applies_each_entry_once_skips_gaps_and_follows_purges_and_replays(
    js: JetStreamContext, tmp_path: Path
) -> None:
    store = SQLiteReadModelStore(str(tmp_path / "rm.db"))
    try:
        entries = await publish_entries(js, 5)
        await js.delete_msg(subjects.DLQ_STREAM, 3)  # a gap
        await js.publish(f"{subjects.DLQ_PREFIX}._.JUNK", b"not an entry")  # seq 6: reported, skipped
        unreadable: list[int] = []
        feed = dlq.DlqFeed(js, store, batch=2, unreadable=lambda seq, _: unreadable.append(seq))
        assert await feed.catch_up() == 6
        assert unreadable == [6]
        rows = await store.rows(dlq_view.DLQ)
        assert [r["entry_id"] for r in rows] == sorted(e.entry_id for i, e in enumerate(entries) if i != 2)
        assert {r["status"] for r in rows} == {"open"}
        assert (await store.tracked([dlq_view.DLQ_ENTRIES]))["dlq_entries"] == 6
        assert await feed.catch_up() == 6  # nothing new: nothing applied twice

        # A purge recorded in the ledger (folded by the `dlq` projection), and a replay refused again.
        purge_row = {
            "entry_id": entries[0].entry_id, "account_id": "main", "actor": "op", "reason": "r",
            "position": 10, "ts_ns": 1, "command_id": "p1",
        }
        await store.apply([Batch(dlq_view.PROJECTION, [Put(dlq_view.PURGES.name, purge_row)], 0, 10)])
        [refused_again] = await publish_entries(js, 1, first_seq=50, replay_of=entries[1].entry_id)
        assert await feed.catch_up() == 7
        status = {r["entry_id"]: r["status"] for r in await store.rows(dlq_view.DLQ)}
        assert status[entries[0].entry_id] == "purged"
        assert status[entries[1].entry_id] == "replayed"
        assert status[refused_again.entry_id] == "open"
        assert status[entries[3].entry_id] == "open"
    finally:
        await store.close()


async def test_entries_are_found_listed_and_deleted(js: JetStreamContext) -> None:
    entries = await publish_entries(js, 4)
    await js.publish(f"{subjects.DLQ_PREFIX}._.JUNK", b"{}")
    bad: list[int] = []
    listed = await dlq.read_entries(js, limit=2, unreadable=lambda seq, _: bad.append(seq))
    assert [entry.entry_id for _, entry in listed] == [entries[2].entry_id, entries[3].entry_id]
    assert bad == [5]
    found = await dlq.find_entries(js, [entries[1].entry_id, "cmd-9-0000000000000000"])
    assert [seq for seq, _ in found[entries[1].entry_id]] == [2]
    assert found["cmd-9-0000000000000000"] == []
    assert await dlq.delete_entry(js, entries[1].entry_id) == 1
    assert await dlq.delete_entry(js, entries[1].entry_id) == 0
    assert [e.entry_id for _, e in await dlq.read_entries(js, limit=10, unreadable=lambda *_: None)] == [
        entries[0].entry_id, entries[2].entry_id, entries[3].entry_id,
    ]
