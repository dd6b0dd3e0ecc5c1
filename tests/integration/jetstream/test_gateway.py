"""The execution gateway against a real nats-server of the test's own (duplicate window 2 s) and
real ledgers written through titan's command bus: every accepted order and every cancel request
reaches TITAN_EXEC exactly once, in position order, with the contract's payload and headers; a
restart resumes; a late retry beyond the duplicate window and a second gateway write nothing; a
gateway killed -9 mid-run and restarted duplicates nothing and skips nothing. Budget: ~15 s.

Run as a module, this file is the gateway's child process for the kill test:

    python -m tests.integration.jetstream.test_gateway LEDGER_URL NATS_URL
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nats.js.client import JetStreamContext

from adapters.nats import subjects
from adapters.nats.gateway import (
    ExecAhead,
    Gateway,
    GatewayProgress,
    cancel_message,
    place_message,
    read_exec_tail,
)
from adapters.nats.gateway_metrics import GatewayMetrics
from adapters.nats.pipelined_publisher import PipelinedPublisher, WrongLastSequence
from commands.envelope import COMMAND_RECORDED
from commands.ports import Ledger, Record
from infra.bootstrap import bootstrap, open_ledger
from infra.settings import Settings
from infra.submit import default_policy, ensure_initialized
from schemas import commands as wire
from schemas.canonical import parse
from schemas.events import ORDER_ACCEPTED, ORDER_CANCEL_REQUESTED
from schemas.execution import ExecCancel, ExecPlace, parse_exec
from schemas.policy import policy_hash

from .relay_support import DUPLICATE_WINDOW_S, ROOT, OwnNats, apply_streams, connect

pytestmark = pytest.mark.integration

T0 = 1_767_225_600_000_000_000
STEP_NS = 150_000_000


class Trading:
    """Writes a plausible session into a ledger through titan's command bus: orders placed,
    cancels requested and confirmed (so the open-order limit is never reached), fresh truth
    snapshots, MARKET orders, and a Flatten that cancels an open order and closes a position."""

    def __init__(self, url: str, account: str = "main") -> None:
        self.ledger = open_ledger(url)
        self.bus = bootstrap(Settings(ledger_url=url), ledger=self.ledger)
        self.account = account
        ensure_initialized(self.bus, account)
        self.hash = policy_hash(default_policy())
        self.ts = T0
        self.snapshots = 0
        self.refused: list[tuple[str, str | None]] = []
        self.snapshot([])

    def close(self) -> None:
        self.ledger.close()

    def _do(self, command: wire.AnyCommand) -> None:
        outcome = self.bus.handle(command)
        if outcome.outcome != "accepted":
            self.refused.append((command.command_id, outcome.reason))

    def _tick(self) -> int:
        self.ts += STEP_NS
        return self.ts

    def snapshot(self, positions: list[wire.VenuePosition]) -> None:
        ts = self._tick()
        self.snapshots += 1
        self._do(
            wire.RecordTruthSnapshot(
                command_id=f"{self.account}-s{self.snapshots}", account_id=self.account, ts_ns=ts,
                actor="paper-venue", venue="paper", positions=positions, open_order_ids=[],
                equity="100000", venue_ts_ns=ts, latency_ms=5,
            )
        )

    def place(self, cid: str, *, market: bool = False, price: str = "65000.0") -> None:
        self._do(
            wire.PlaceOrder(
                command_id=cid, account_id=self.account, ts_ns=self._tick(), actor="phase1",
                policy_hash=self.hash, phase_id=1, intent_id=f"i-{cid}", client_order_id=f"a-{cid}",
                venue="paper", symbol="BTCUSDT", side="BUY", order_type="MARKET" if market else "LIMIT",
                quantity="0.010", price=None if market else price, reference_price="65000.0",
            )
        )

    def cancel(self, order_id: str, cid: str) -> None:
        self._do(
            wire.CancelOrder(
                command_id=cid, account_id=self.account, ts_ns=self._tick(), actor="phase1",
                order_id=order_id, reason="no longer wanted",
            )
        )

    def cancelled(self, order_id: str, cid: str) -> None:
        self._do(
            wire.RecordCancelled(
                command_id=cid, account_id=self.account, ts_ns=self._tick(), actor="execution:paper",
                order_id=order_id, venue_reason="cancelled",
            )
        )

    def cycles(self, prefix: str, count: int, *, confirm: bool = True) -> None:
        """`count` orders (every 5th a MARKET order), each with its cancel requested and, when
        `confirm`, confirmed; a truth snapshot every 8."""
        for k in range(count):
            cid = f"{prefix}{k}"
            self.place(cid, market=k % 5 == 0)
            self.cancel(f"ord-{cid}", f"{cid}-x")
            if confirm:
                self.cancelled(f"ord-{cid}", f"{cid}-xc")
            if k % 8 == 7:
                self.snapshot([])

    def flatten(self, prefix: str) -> None:
        """A filled order (a position), an open order, then a Flatten: the open order's cancel and
        a reduce-only closing order `ord-<prefix>-flat.0`."""
        self.place(f"{prefix}-long")
        self._do(
            wire.RecordFill(
                command_id=f"{prefix}-fill", account_id=self.account, ts_ns=self._tick(),
                actor="execution:paper", order_id=f"ord-{prefix}-long", fill_id=f"{prefix}-F",
                quantity="0.010", price="65000.0",
            )
        )
        self.snapshot([wire.VenuePosition(symbol="BTCUSDT", quantity="0.010")])
        self.place(f"{prefix}-open", price="64990.0")
        self._do(
            wire.Flatten(
                command_id=f"{prefix}-flat", account_id=self.account, ts_ns=self._tick(),
                actor="console", policy_hash=self.hash, reason="operator flatten",
            )
        )


def expected_messages(ledger: Ledger) -> list[tuple[int, str]]:
    """(position, Nats-Msg-Id) of every record that must reach TITAN_EXEC, in position order."""
    wanted: list[tuple[int, str]] = []
    for record in ledger.iter_all(0, 1000):
        if record.type == ORDER_ACCEPTED:
            wanted.append((record.position, record.envelope["data"]["order_id"]))
        elif record.type == ORDER_CANCEL_REQUESTED:
            wanted.append((record.position, "cancel." + record.envelope["data"]["order_id"]))
    return wanted


async def stream_messages(js: JetStreamContext) -> list[tuple[int, str, str, dict[str, str], bytes]]:
    """Every message of TITAN_EXEC: (sequence, subject, msg id, headers, payload)."""
    info = await js.stream_info(subjects.EXEC_STREAM)
    found = []
    for seq in range(1, info.state.last_seq + 1):
        message = await js.get_msg(subjects.EXEC_STREAM, seq=seq)
        headers = dict(message.headers or {})
        found.append((seq, message.subject or "", headers[subjects.MSG_ID], headers, message.data or b""))
    return found


async def assert_exactly_once(ledger: Ledger, js: JetStreamContext) -> list[tuple[int, str]]:
    """TITAN_EXEC holds each expected message once, in position order, with no other; return them."""
    held = await stream_messages(js)
    sent = [(int(headers[subjects.POSITION]), msg_id) for _seq, _subject, msg_id, headers, _data in held]
    ids = [msg_id for _position, msg_id in sent]
    assert len(ids) == len(set(ids)), "a message was sent twice"
    assert [seq for seq, *_ in held] == list(range(1, len(held) + 1))
    assert sent == expected_messages(ledger)
    return sent


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


def test_every_order_and_cancel_once_in_order_with_the_contracts_payload(own_nats: OwnNats, ledger_url: str) -> None:
    trading = Trading(ledger_url)
    trading.cycles("c", 15, confirm=False)  # cancels requested, not confirmed: a Flatten skips them
    assert trading.refused == []
    ledger = trading.ledger
    metrics = GatewayMetrics()

    async def scenario() -> None:
        nc = await connect(own_nats.url)
        js = nc.jetstream()
        first = await Gateway(ledger, nc, metrics=metrics).run(once=True)
        assert (first.sent, first.stream_seq, first.scanned_position) == (30, 30, ledger.head()[0])
        assert metrics.lag_positions._value.get() == 0
        assert metrics.sent.labels("place")._value.get() == metrics.sent.labels("cancel")._value.get() == 15
        # Orders placed before the gateway's restart, cancelled after it: the venue comes from the ledger.
        for k in range(15, 23):
            trading.place(f"c{k}")
            trading.cancelled(f"ord-c{k - 15}", f"c{k - 15}-xc")
        for k in range(15, 23):
            trading.cancel(f"ord-c{k}", f"c{k}-x")
            trading.cancelled(f"ord-c{k}", f"c{k}-xc")
        trading.flatten("f")
        assert trading.refused == []
        gateway = Gateway(ledger, nc, batch=7)  # small batches: units straddle reads
        second = await gateway.run(once=True)
        assert second.sent == 8 + 8 + 4  # places, cancels, the Flatten's place, cancel and closing order
        assert gateway.venues.lookups == 0  # every cancelled order was read in this run
        sent = await assert_exactly_once(ledger, js)
        assert sent[-2:] == [(sent[-2][0], "cancel.ord-f-open"), (sent[-1][0], "ord-f-flat.0")]

        records = {record.position: record for record in ledger.iter_all(0, 1000)}
        for _seq, subject, msg_id, headers, data in await stream_messages(js):
            record = records[int(headers[subjects.POSITION])]
            command = command_of(ledger, record)
            kind = subject.rsplit(".", 1)[1]
            assert subject == f"titan.exec.paper.{kind}"
            message = parse_exec(kind, data)
            assert parse(data) == message.wire() and message.wire()["schema"] == f"titan.exec.{kind}.v1"
            expected = (place_message(record, command) if kind == "place" else cancel_message(record, command, "paper"))
            assert data == expected.payload and headers == {
                **expected.headers, subjects.EXPECTED_LAST_SEQUENCE: str(_seq - 1)
            }
            assert headers[subjects.ACCOUNT_ID] == "main"
            assert headers[subjects.COMMAND_ID] == record.envelope["command_id"] == message.command_id
            assert headers[subjects.POLICY_HASH] == message.policy_hash == trading.hash
            assert headers[subjects.TRACEPARENT] == headers[subjects.TITAN_TRACEPARENT]
            if isinstance(message, ExecPlace):
                assert msg_id == headers[subjects.ORDER_ID] == message.order_id
                data_of = record.envelope["data"]
                assert (message.order_type == "MARKET") == (message.price is None)
                assert message.price in (None, data_of["price"])
                assert message.ts_ns == record.envelope["ts_ns"] and message.position == record.position
                if message.order_id == "ord-f-flat.0":
                    assert message.reduce_only and message.phase_id == 0 and message.intent_id == ""
                    assert headers[subjects.PHASE_ID] == "" and headers[subjects.INTENT_ID] == ""
                else:
                    assert headers[subjects.PHASE_ID] == "1" and headers[subjects.INTENT_ID] == message.intent_id
            else:
                assert isinstance(message, ExecCancel)
                assert msg_id == "cancel." + message.order_id == "cancel." + headers[subjects.ORDER_ID]
        again = await Gateway(ledger, nc).run(once=True)
        assert again.sent == 0
        await nc.close()

    try:
        asyncio.run(scenario())
    finally:
        trading.close()


def command_of(ledger: Ledger, record: Record) -> dict[str, Any]:
    found = ledger.read_stream(f"command-{record.envelope['command_id']}")
    assert found and found[0].type == COMMAND_RECORDED
    command: dict[str, Any] = found[0].envelope["data"]["command"]
    return command


def test_a_cancel_of_an_order_sent_by_an_earlier_run_finds_its_venue_in_the_ledger(own_nats: OwnNats, tmp_path: Path) -> None:
    trading = Trading(f"sqlite:///{tmp_path / 'ledger.db'}")
    trading.place("early")
    trading.place("early2")
    trading.snapshot([])

    async def scenario() -> None:
        nc = await connect(own_nats.url)
        assert (await Gateway(trading.ledger, nc).run(once=True)).sent == 2
        trading.cancel("ord-early", "early-x")
        trading.flatten("g")  # cancels ord-early2, also sent before the restart
        assert trading.refused == []
        gateway = Gateway(trading.ledger, nc)
        assert (await gateway.run(once=True)).sent == 6  # long, open, cancel early, Flatten: 2 cancels, 1 place
        assert gateway.venues.lookups == 2
        sent = await assert_exactly_once(trading.ledger, nc.jetstream())
        assert "cancel.ord-early" in [msg_id for _position, msg_id in sent]
        await nc.close()

    try:
        asyncio.run(scenario())
    finally:
        trading.close()


def test_a_retry_beyond_the_duplicate_window_and_a_second_gateway_write_nothing(own_nats: OwnNats, tmp_path: Path) -> None:
    trading = Trading(f"sqlite:///{tmp_path / 'ledger.db'}")
    trading.cycles("w", 40)
    ledger = trading.ledger

    async def scenario() -> None:
        nc = await connect(own_nats.url)
        js = nc.jetstream()
        await Gateway(ledger, nc).run(once=True)
        await asyncio.sleep(DUPLICATE_WINDOW_S + 0.5)  # the server has forgotten the ids
        # An "unknown outcome" publish of the first order, retried late with its expected sequence.
        record = next(r for r in ledger.iter_all(0) if r.type == ORDER_ACCEPTED)
        message = place_message(record, command_of(ledger, record))
        publisher = PipelinedPublisher(nc, subjects.EXEC_STREAM)
        await publisher.start()
        headers = {**message.headers, subjects.EXPECTED_LAST_SEQUENCE: "0"}
        await publisher.publish(message.subject, message.payload, headers, position=record.position, expected_seq=0)
        with pytest.raises(WrongLastSequence):
            await publisher.flush()
        await publisher.close()
        tail = await read_exec_tail(js)
        assert tail.messages == tail.seq == 80
        # Two gateways racing over new records: whichever publish comes second is refused.
        trading.cycles("v", 60)
        ncs = [await connect(own_nats.url) for _ in range(2)]
        results = await asyncio.gather(*(Gateway(ledger, c, batch=25, window=8).run(once=True) for c in ncs))
        assert 0 < sum(result.sent for result in results) <= 240
        await assert_exactly_once(ledger, js)
        for client in (nc, *ncs):
            await client.close()

    try:
        asyncio.run(scenario())
    finally:
        trading.close()


def test_a_stream_sent_from_another_ledger_stops_the_gateway(own_nats: OwnNats, tmp_path: Path) -> None:
    one = Trading(f"sqlite:///{tmp_path / 'one.db'}")
    one.cycles("a", 5)
    other = Trading(f"sqlite:///{tmp_path / 'other.db'}")
    other.cycles("b", 5)

    async def scenario() -> None:
        nc = await connect(own_nats.url)
        await Gateway(one.ledger, nc).run(once=True)
        with pytest.raises(ExecAhead, match="not the ledger that stream was sent from"):
            await Gateway(other.ledger, nc).run(once=True)
        await nc.close()

    try:
        asyncio.run(scenario())
    finally:
        one.close()
        other.close()


def start_child(ledger_url: str, nats_url: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TITAN_") or k == "TITAN_CORE"}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.jetstream.test_gateway", ledger_url, nats_url],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


def test_a_gateway_killed_mid_run_and_restarted_sends_nothing_twice_and_skips_nothing(own_nats: OwnNats, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    trading = Trading(url)
    ledger = trading.ledger
    rng = random.Random(12)
    mid_run = 0

    async def held() -> int:
        nc = await connect(own_nats.url)
        try:
            return (await read_exec_tail(nc.jetstream())).seq
        finally:
            await nc.close()

    try:
        for round_ in range(6):
            trading.cycles(f"r{round_}-", 100)  # 200 messages waiting for the gateway
            before = asyncio.run(held())
            child = start_child(url, own_nats.url)
            deadline = time.monotonic() + 20
            while asyncio.run(held()) == before and time.monotonic() < deadline and child.poll() is None:
                time.sleep(0.005)  # kill it only once it is sending
            time.sleep(rng.uniform(0.0, 0.1))
            trading.cycles(f"r{round_}b", 5)  # the ledger moves while the gateway runs
            assert child.poll() is None, child.stderr.read() if child.stderr else ""
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=10)
            if asyncio.run(held()) < len(expected_messages(ledger)):
                mid_run += 1
            if round_ == 2:
                time.sleep(DUPLICATE_WINDOW_S + 0.5)  # restart beyond the duplicate window
        trading.flatten("end")
        assert trading.refused == []

        async def finish() -> GatewayProgress:
            nc = await connect(own_nats.url)
            progress = await Gateway(ledger, nc).run(once=True)
            await assert_exactly_once(ledger, nc.jetstream())
            await nc.close()
            return progress

        progress = asyncio.run(finish())
        assert mid_run >= 3, f"only {mid_run} of 6 kills came while messages were waiting"
        assert progress.scanned_position == ledger.head()[0]
        assert len(expected_messages(ledger)) == 2 * 6 * 105 + 4
    finally:
        trading.close()


async def child_main(ledger_url: str, nats_url: str) -> None:
    """Follow the ledger in small batches and windows (many publishes in flight at any moment)
    until killed."""
    ledger = open_ledger(ledger_url, create=False)
    nc = await connect(nats_url)
    await Gateway(ledger, nc, batch=15, window=5).run(asyncio.Event())


if __name__ == "__main__":
    asyncio.run(child_main(sys.argv[1], sys.argv[2]))
