"""`titan paper run` against a real nats-server: the engine serves titan.exec.paper.> per the
execution contract; titan's side is a subscriber on titan.cmd.> that verifies each report's
signature and role and answers like the intake (accepted, or duplicate for a command id seen).
The engine runs as a child process (`python -m infra.cli.paper run`), killed -9 when a test says."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest
from nats.aio.msg import Msg

from adapters.nats import streams, subjects
from adapters.nats.roles import check_role
from adapters.nats.signing import ISSUER, Keys, generate_keys, keys_text, verify
from adapters.paper.engine import EXEC_STREAM, POLICY_HASH_MISMATCH, exec_spec
from infra.settings import Settings
from infra.submit import default_policy
from schemas.policy import policy_hash
from tests.nats_own_server import own_nats_server

pytestmark = [pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[3]
POLICY = default_policy()
HASH = policy_hash(POLICY)
SEED = 11


def write_keys(directory: Path) -> tuple[Path, Keys]:
    keys = generate_keys()
    path = directory / "intake.keys"
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(keys_text(keys))
    return path, keys


def place(account: str, n: int, *, policy: str = HASH, position: int | None = None) -> dict[str, Any]:
    """A place message as the gateway sends it (crossing or passive, BTC or ETH)."""
    btc = n % 3 != 0
    ref = "65000.0" if btc else "3400.00"
    offset = (n % 5 - 2) * (10 if btc else 1)
    price = f"{65000 + offset}.0" if btc else f"{3400 + offset}.00"
    return {
        "schema": "titan.exec.place.v1",
        "account_id": account,
        "order_id": f"ord-{account}-c{n:05d}",
        "client_order_id": f"{account}-c{n:05d}",
        "venue": "paper",
        "symbol": "BTCUSDT" if btc else "ETHUSDT",
        "side": "BUY" if n % 2 else "SELL",
        "order_type": "LIMIT",
        "quantity": "0.010" if btc else "0.50",
        "price": price,
        "reference_price": ref,
        "reduce_only": False,
        "policy_hash": policy,
        "command_id": f"{account}-c{n:05d}",
        "intent_id": f"i{n}",
        "phase_id": 1,
        "position": position if position is not None else 10 + n,
        "ts_ns": time.time_ns(),
    }


def cancel(account: str, order_id: str, position: int) -> dict[str, Any]:
    return {
        "schema": "titan.exec.cancel.v1",
        "account_id": account,
        "order_id": order_id,
        "venue": "paper",
        "reason": "test",
        "policy_hash": HASH,
        "command_id": f"cx-{order_id}",
        "position": position,
        "ts_ns": time.time_ns(),
    }


@dataclass
class FakeIntake:
    """titan's side: every report checked (signature, role) and answered."""

    keys: Keys
    received: list[dict[str, Any]] = field(default_factory=list)
    by_id: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    sends: dict[str, int] = field(default_factory=dict)

    async def on_command(self, msg: Msg) -> None:
        headers = msg.headers or {}
        try:
            signed = verify(self.keys, msg.subject, msg.data, headers, time.time_ns(), 60 * 10**9)
            account, command_type = subjects.parse_command_subject(msg.subject)
            payload = orjson.loads(msg.data)
            check_role(signed.issuer, command_type, payload)
            assert payload["type"] == command_type and payload["account_id"] == account
            assert signed.issuer == "execution" and payload["actor"] == "execution:paper"
        except Exception as error:  # noqa: BLE001 - recorded, asserted empty by the tests
            self.problems.append(f"{msg.subject}: {error!r}")
            return
        command_id = payload["command_id"]
        self.sends[command_id] = self.sends.get(command_id, 0) + 1
        outcome = "accepted"
        if command_id in self.by_id:
            outcome = "duplicate"
            if self.by_id[command_id] != payload and payload["type"] != "record_truth_snapshot.v1":
                self.problems.append(f"{command_id} sent twice with different payloads")
        else:
            self.by_id[command_id] = payload
            self.received.append(payload)
        reply = headers.get(subjects.REPLY_TO)
        if reply:
            await msg._client.publish(reply, orjson.dumps({"command_id": command_id, "outcome": outcome}))

    def of_order(self, order_id: str) -> list[dict[str, Any]]:
        return [p for p in self.received if p.get("order_id") == order_id]

    def done(self, order_id: str) -> bool:
        """Whether the order's plan has been reported to its end (reject, cancel, or filled)."""
        reports = self.of_order(order_id)
        if any(p["type"] in ("record_venue_reject.v1", "record_cancelled.v1") for p in reports):
            return True
        return any(p["type"] == "record_fill.v1" for p in reports) and _filled(reports) >= _qty(order_id, reports)

    def fills(self, order_id: str) -> list[tuple[str, str, str, str]]:
        return sorted(
            (p["command_id"], p["fill_id"], p["quantity"], p["price"])
            for p in self.of_order(order_id)
            if p["type"] == "record_fill.v1"
        )


QUANTITIES: dict[str, str] = {}


def _qty(order_id: str, _reports: list[dict[str, Any]]) -> int:
    return int(QUANTITIES[order_id].replace(".", ""))


def _filled(reports: list[dict[str, Any]]) -> int:
    return sum(int(p["quantity"].replace(".", "")) for p in reports if p["type"] == "record_fill.v1")


class Engine:
    """`python -m infra.cli.paper run` in a child process."""

    def __init__(self, directory: Path, nats_url: str, keys_path: Path, book: Path, name: str) -> None:
        self.log_path = directory / f"{name}.log"
        self.args = [
            sys.executable, "-m", "infra.cli.paper", "run", "--keys", str(keys_path), "--book", str(book),
            "--seed", str(SEED), "--snapshot-every", "0.5",
        ]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TITAN_")}
        self.env.update({"PYTHONPATH": str(ROOT), "TITAN_NATS_URL": nats_url})
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Engine:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(self.args, cwd=self.directory, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        return self

    def kill9(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def terminate(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""


@pytest.fixture
def nats_url() -> Iterator[str]:
    with own_nats_server() as server:
        yield server.url


async def prepare(url: str, accounts: list[str]) -> None:
    """titan's streams, TITAN_EXEC with its consumer, and each account's policy on the mirror."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        settings = Settings(nats_url=url)
        await streams.apply(js, spec=streams.declared(settings))
        await streams.apply(js, spec=exec_spec(settings))
        for position, account in enumerate(accounts, start=1):
            envelope = {
                "event_id": f"act-{account}.0",
                "type": "policy.activated.v1",
                "data": {"policy_hash": HASH, "previous_policy_hash": None, "policy": POLICY.model_dump(mode="json")},
            }
            await js.publish(
                subjects.event_subject(account, "policy.activated.v1"),
                orjson.dumps(envelope),
                headers={subjects.MSG_ID: f"act-{account}.0", subjects.POSITION: str(position), subjects.CHAIN_HASH: "ab" * 32},
            )
        # The mirror has gone on past every order these tests send (the engine waits for it otherwise).
        await js.publish(
            subjects.event_subject(accounts[0], "command.recorded.v1"),
            b"{}",
            headers={subjects.MSG_ID: "tail.cmd", subjects.POSITION: "100000", subjects.CHAIN_HASH: "cd" * 32},
        )
    finally:
        await nc.close()


async def publish_exec(js: Any, kind: str, document: dict[str, Any]) -> None:
    msg_id = document["order_id"] if kind == "place" else f"cancel.{document['order_id']}"
    headers = {
        subjects.MSG_ID: msg_id,
        "Titan-Account-Id": document["account_id"],
        "Titan-Order-Id": document["order_id"],
        "Titan-Policy-Hash": document["policy_hash"],
        "Titan-Command-Id": document["command_id"],
        subjects.POSITION: str(document["position"]),
    }
    await js.publish(f"titan.exec.paper.{kind}", orjson.dumps(document), headers=headers, stream=EXEC_STREAM)


async def wait_for(check: Any, timeout_s: float, what: str, engine: Engine) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}\n{engine.log()}")


def test_orders_reports_mismatch_and_cancel(nats_url: str, tmp_path: Path) -> None:
    keys_path, keys = write_keys(tmp_path)
    account = "pe1"

    async def scenario() -> None:
        await prepare(nats_url, [account])
        intake = FakeIntake(keys)
        nc = await nats.connect(nats_url)
        await nc.subscribe("titan.cmd.>", cb=intake.on_command)
        js = nc.jetstream()
        engine = Engine(tmp_path, nats_url, keys_path, tmp_path / "book.db", "engine").start()
        try:
            orders = [place(account, n) for n in range(1, 21)]
            stale = place(account, 99, policy="0" * 64, position=5)
            # A resting order to cancel: far from the reference, so it does not cross.
            resting = place(account, 50)
            resting.update(price="60000.0", side="BUY", symbol="BTCUSDT", reference_price="65000.0", quantity="0.010")
            for document in [*orders, stale, resting]:
                QUANTITIES[document["order_id"]] = document["quantity"]
                await publish_exec(js, "place", document)
            await publish_exec(js, "place", orders[0])  # a republish: JetStream drops it (same Nats-Msg-Id)
            await wait_for(lambda: intake.done(orders[-1]["order_id"]) and intake.of_order(resting["order_id"]), 30, "reports", engine)
            await publish_exec(js, "cancel", cancel(account, resting["order_id"], 100))
            every = [d["order_id"] for d in [*orders, stale, resting]]
            await wait_for(lambda: all(intake.done(o) for o in every), 30, "every order reported to its end", engine)
            await wait_for(
                lambda: any(p["type"] == "record_truth_snapshot.v1" for p in intake.received), 10, "a snapshot", engine
            )
            assert engine.terminate() == 0, engine.log()
        finally:
            engine.kill9()
            await nc.close()
        assert intake.problems == []
        (reject,) = intake.of_order(stale["order_id"])
        assert reject["type"] == "record_venue_reject.v1" and reject["venue_reason"] == POLICY_HASH_MISMATCH
        assert reject["command_id"] == f"x.{stale['order_id']}.reject"
        for document in orders:
            order_id = document["order_id"]
            reports = intake.of_order(order_id)
            ids = {p["command_id"] for p in reports}
            assert all(i.startswith(f"x.{order_id}.") for i in ids)
            if not any(p["type"] == "record_venue_reject.v1" for p in reports):
                assert f"x.{order_id}.ack" in ids
            assert _filled(reports) <= _qty(order_id, reports)
        resting_reports = intake.of_order(resting["order_id"])
        kinds = [p["type"] for p in resting_reports]
        if "record_venue_reject.v1" not in kinds:  # the seeded model rejects 3% of orders
            assert "record_cancelled.v1" in kinds
        snapshots = [p for p in intake.received if p["type"] == "record_truth_snapshot.v1"]
        assert snapshots[0]["command_id"] == f"x.snap.paper.{account}.1"
        assert snapshots[-1]["venue"] == "paper" and resting["order_id"] not in snapshots[-1]["open_order_ids"]

    asyncio.run(scenario())


def _crash_run(nats_url: str, directory: Path, keys_path: Path, keys: Keys, account: str, kills: int) -> FakeIntake:
    async def scenario() -> FakeIntake:
        await prepare(nats_url, [account])
        intake = FakeIntake(keys)
        nc = await nats.connect(nats_url)
        await nc.subscribe("titan.cmd.>", cb=intake.on_command)
        js = nc.jetstream()
        book = directory / f"book-{kills}.db"
        engine = Engine(directory, nats_url, keys_path, book, f"engine-{kills}").start()
        orders = [place(account, n) for n in range(1, 61)]
        try:
            for n, document in enumerate(orders):
                QUANTITIES[document["order_id"]] = document["quantity"]
                await publish_exec(js, "place", document)
                if kills and n in (15, 40):
                    await asyncio.sleep(0.4)
                    engine.kill9()
                    engine = Engine(directory, nats_url, keys_path, book, f"engine-{kills}").start()
            await wait_for(lambda: all(intake.done(d["order_id"]) for d in orders), 90, "every order reported", engine)
            assert engine.terminate() == 0, engine.log()
        finally:
            engine.kill9()
            await nc.close()
        return intake

    return asyncio.run(scenario())


def test_kill9_neither_invents_nor_forgets_a_fill(tmp_path: Path) -> None:
    keys_path, keys = write_keys(tmp_path)
    account = "pe2"
    with own_nats_server() as server:
        calm = _crash_run(server.url, tmp_path, keys_path, keys, account, kills=0)
    with own_nats_server() as server:
        crashed = _crash_run(server.url, tmp_path, keys_path, keys, account, kills=2)
    assert calm.problems == [] and crashed.problems == []
    orders = sorted({p["order_id"] for p in calm.received if "order_id" in p})
    assert len(orders) == 60
    for order_id in orders:
        assert crashed.fills(order_id) == calm.fills(order_id), order_id
        kinds_calm = sorted(p["command_id"] for p in calm.of_order(order_id))
        kinds_crashed = sorted(p["command_id"] for p in crashed.of_order(order_id))
        assert kinds_crashed == kinds_calm, order_id
        assert _filled(crashed.of_order(order_id)) <= _qty(order_id, [])


def test_refuses_to_start_without_the_exec_stream(nats_url: str, tmp_path: Path) -> None:
    keys_path, _keys = write_keys(tmp_path)
    engine = Engine(tmp_path, nats_url, keys_path, tmp_path / "book.db", "nostream").start()
    assert engine.process is not None
    assert engine.process.wait(timeout=60) == 1, engine.log()
    assert EXEC_STREAM in engine.log()
    assert ISSUER  # the signing header names stay imported from one place
