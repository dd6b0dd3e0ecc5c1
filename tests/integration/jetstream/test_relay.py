"""The relay against a real nats-server of the test's own and real ledgers (SQLite files and
PostgreSQL): what a message carries, exactly once under races and late retries, riding out a NATS
restart, metrics. Budget: ~40 s."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.nats import subjects
from adapters.nats.mirror_check import verify_mirror
from adapters.nats.mirror_message import mirror_headers, mirror_subject
from adapters.nats.pipelined_publisher import PipelinedPublisher, WrongLastSequence
from adapters.nats.relay import Relay
from adapters.nats.relay_metrics import RelayMetrics
from adapters.nats.stream_tail import read_tail
from commands.ports import Ledger
from infra.bootstrap import open_ledger
from schemas.canonical import parse, record_hash

from .relay_support import DUPLICATE_WINDOW_S, OwnNats, apply_streams, connect, write

pytestmark = pytest.mark.integration


@pytest.fixture
def own_nats() -> Iterator[OwnNats]:
    server = OwnNats()
    server.start()
    asyncio.run(apply_streams(server.url))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


def opened(url: str) -> Ledger:
    return open_ledger(url, create=False)


def test_every_record_once_in_order_with_its_headers(own_nats: OwnNats, ledger_url: str) -> None:
    write(ledger_url, "h", 150)
    ledger = opened(ledger_url)

    async def scenario() -> None:
        nc = await connect(own_nats.url)
        js = nc.jetstream()
        progress = await Relay(ledger, nc).run(once=True)
        assert (progress.mirrored_position, progress.published) == (ledger.head()[0], 300)
        records = ledger.read_all(0, 1000)
        for seq, record in ((1, records[0]), (2, records[1]), (300, records[-1])):
            message = await js.get_msg(subjects.EVT_STREAM, seq=seq)
            headers = message.headers or {}
            assert message.subject == mirror_subject(record)
            assert message.data == record.state  # the stored canonical bytes, exactly
            assert record_hash(parse(message.data)) == headers[subjects.CHAIN_HASH] == record.envelope["hash"]
            assert headers[subjects.MSG_ID] == record.envelope["event_id"]
            assert headers[subjects.POSITION] == str(record.position)
            assert headers[subjects.STREAM_ID] == record.stream_id
            assert headers[subjects.VERSION] == str(record.version)
            assert headers[subjects.COMMAND_ID] == record.envelope["command_id"]
            assert headers[subjects.PREV_HASH] == record.envelope["prev_hash"]
            assert headers[subjects.TITAN_TRACEPARENT].startswith("00-") and headers[subjects.TRACEPARENT]
        assert records[0].stream_id == "account-main" and mirror_subject(records[0]).startswith("titan.evt.main.")
        assert mirror_subject(records[1]) == "titan.evt.main.command.recorded.v1"
        again = await Relay(ledger, nc).run(once=True)  # resumes after the stream's tail: nothing twice
        assert again.published == 0
        report = await verify_mirror(ledger, js)
        assert report.ok and report.stream_messages == 300 and report.unmirrored == 0, report
        await nc.close()

    try:
        asyncio.run(scenario())
    finally:
        ledger.close()


def test_two_relays_racing_without_a_lease_store_each_record_once(own_nats: OwnNats, tmp_path: Path) -> None:
    """The lease is the first guard; the expected-sequence precondition is the one that holds even
    when two relays run: whichever publish comes second is refused, and that relay re-reads."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    write(url, "r", 2000)
    ledger = opened(url)

    async def scenario() -> None:
        ncs = [await connect(own_nats.url) for _ in range(2)]
        relays = [Relay(ledger, nc, batch=300, window=200) for nc in ncs]
        results = await asyncio.gather(*(relay.run(once=True) for relay in relays))
        # A relay counts only acks it read: after a refusal it abandons its window, and a later
        # message of that window may still land (the other relay's message filled the sequence it
        # expected, with the same position). The stream, not the counters, is the proof.
        assert 0 < sum(result.published for result in results) <= 4000
        report = await verify_mirror(ledger, ncs[0].jetstream())
        assert report.ok and report.stream_last_seq == 4000 and report.stream_messages == 4000, report
        for nc in ncs:
            await nc.close()

    try:
        asyncio.run(scenario())
    finally:
        ledger.close()


def test_a_publish_retried_after_the_duplicate_window_writes_nothing(own_nats: OwnNats, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    write(url, "w", 50)
    ledger = opened(url)

    async def scenario() -> None:
        nc = await connect(own_nats.url)
        js = nc.jetstream()
        await Relay(ledger, nc).run(once=True)
        await asyncio.sleep(DUPLICATE_WINDOW_S + 0.5)  # the server has forgotten the ids
        record = ledger.read_all(49, 1)[0]  # an "unknown outcome" publish of position 50, retried late
        publisher = PipelinedPublisher(nc, subjects.EVT_STREAM)
        await publisher.start()
        await publisher.publish(
            mirror_subject(record), record.state, mirror_headers(record, 49), position=50, expected_seq=49
        )
        with pytest.raises(WrongLastSequence):
            await publisher.flush()
        await publisher.close()
        tail = await read_tail(js)
        assert (tail.seq, tail.position, tail.messages) == (100, 100, 100)
        write(url, "w2", 10)
        resumed = await Relay(ledger, nc).run(once=True)
        assert resumed.published == 20
        assert (await verify_mirror(ledger, js)).ok
        await nc.close()

    try:
        asyncio.run(scenario())
    finally:
        ledger.close()


def test_the_relay_rides_out_a_nats_restart_and_reports_not_ready(own_nats: OwnNats, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    write(url, "n", 500)
    ledger = opened(url)
    metrics = RelayMetrics()

    async def scenario() -> None:
        nc = await connect(own_nats.url)
        stop = asyncio.Event()
        relay = Relay(ledger, nc, metrics=metrics, ack_timeout_s=1.0)
        running = asyncio.create_task(relay.run(stop=stop))
        while metrics.mirrored._value.get() < 1000:
            await asyncio.sleep(0.05)
        assert metrics.ready._value.get() == 1 and metrics.lag_records._value.get() == 0
        own_nats.stop()
        writing = asyncio.create_task(asyncio.to_thread(write, url, "m", 300))
        await asyncio.sleep(2.0)
        assert metrics.ready._value.get() == 0  # NATS is gone: not ready
        await writing
        await asyncio.to_thread(own_nats.start)
        for _ in range(300):
            if metrics.mirrored._value.get() == ledger.head()[0]:
                break
            await asyncio.sleep(0.1)
        assert metrics.mirrored._value.get() == ledger.head()[0] == 1600
        assert metrics.ready._value.get() == 1 and metrics.retries._value.get() >= 1
        assert metrics.lag_records._value.get() == 0 and metrics.lag_now_s() == 0
        stop.set()
        await running
        report = await verify_mirror(ledger, nc.jetstream())
        assert report.ok and report.stream_last_seq == 1600, report
        await nc.close()

    try:
        asyncio.run(scenario())
    finally:
        ledger.close()
