"""The execution loop over real NATS and PostgreSQL (issue 12, "Tests"): every accepted order reaches
the paper engine exactly once, also when `titan serve` and `titan paper run` are killed -9 at random
moments; an order decided under a policy that is no longer the active one is refused by the engine
and the refusal comes back as a venue reject; `titan demo --live` leaves a ledger that replays."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from adapters.nats import subjects
from adapters.nats.sender import Sender
from adapters.postgres.ledger import PostgresLedger
from commands.envelope import COMMAND_RECORDED
from infra.submit import default_policy
from schemas.policy import policy_hash
from tests.e2e.conftest import Titan
from tests.services import PostgresServer, free_port

from .conftest import Live, new_live
from .live_support import (
    PaperProcess,
    ServeProcess,
    encode,
    place_order,
    run,
    subject_for,
)
from .load_support import SteadyLoad, wait_drained
from .test_serve_crash import verify_everything

pytestmark = pytest.mark.integration


@pytest.fixture
def exec_live(pg_server: PostgresServer, tmp_path: Path) -> Iterator[Live]:
    with new_live(pg_server, tmp_path, "titan_exec") as world:
        yield world


def records(ledger_url: str) -> list[Any]:
    ledger = PostgresLedger(ledger_url)
    try:
        return list(ledger.read_all(0, 10_000_000))
    finally:
        ledger.close()


def commands_of(ledger_url: str, account: str) -> list[dict[str, Any]]:
    return [r.envelope["data"] for r in records(ledger_url) if r.type == COMMAND_RECORDED and r.envelope["data"]["command"]["account_id"] == account]


def wait_for(predicate: Any, what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


async def exec_places(nats_url: str) -> list[str]:
    """The order ids of every place message on TITAN_EXEC, in stream order."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(subjects.EXEC_STREAM)
        ids = []
        for seq in range(info.state.first_seq or 1, info.state.last_seq + 1):
            msg = await js.get_msg(subjects.EXEC_STREAM, seq)
            if (msg.subject or "").endswith(".place"):
                ids.append((msg.headers or {})[subjects.MSG_ID])
        return ids
    finally:
        await nc.close()


def paper_args(live: Live, account: str, book: str = "book.db") -> tuple[str, ...]:
    return ("--keys", str(live.keys_path), "--book", str(live.directory / book), "--seed", "1", "--snapshot-every", "1", "--account", account)


def accepted_orders(ledger_url: str, account: str) -> list[str]:
    return [
        f"ord-{d['command']['command_id']}" for d in commands_of(ledger_url, account)
        if d["command"]["type"] == "place_order.v1" and d["outcome"] == "accepted"
    ]


def answered_orders(ledger_url: str, account: str) -> set[str]:
    """Orders the engine has answered (an ack or a venue reject recorded)."""
    return {
        d["command"]["order_id"] for d in commands_of(ledger_url, account)
        if d["command"]["type"] in {"record_order_ack.v1", "record_venue_reject.v1"}
    }


def test_every_accepted_order_reaches_execution_once_through_kills(exec_live: Live) -> None:
    live, account, rng = exec_live, "exec", random.Random(12)
    serve = ServeProcess(live.directory, live.env(), name="serve-0", args=("--account", account)).start()
    serve.wait_ready()
    paper = PaperProcess(live.directory, live.env(), paper_args(live, account), name="paper-0").start()
    wait_for(lambda: any(d["command"]["type"] == "record_truth_snapshot.v1" for d in commands_of(live.ledger_url, account)), "a truth snapshot")
    load = SteadyLoad(live.nats_url, live.keys, account, rate=12).start()
    try:
        for round_ in range(3):
            time.sleep(rng.uniform(0.5, 2.0))
            serve.kill9()
            serve = ServeProcess(live.directory, live.env(), name=f"serve-{round_ + 1}", args=("--account", account)).start()
            serve.wait_ready()
            time.sleep(rng.uniform(0.5, 2.0))
            paper.kill9()
            paper = PaperProcess(live.directory, live.env(), paper_args(live, account), name=f"paper-{round_ + 1}").start()
        time.sleep(1.0)
    finally:
        load.stop()
    run(wait_drained(live.nats_url, timeout_s=120))
    accepted = accepted_orders(live.ledger_url, account)
    assert len(accepted) >= 5, f"too few orders accepted to prove anything: {len(accepted)}"
    wait_for(lambda: set(accepted) <= answered_orders(live.ledger_url, account), "the engine to answer every accepted order", 90)
    places = run(exec_places(live.nats_url))
    twice = [order_id for order_id, count in Counter(places).items() if count > 1]
    assert not twice, f"sent to execution more than once: {twice}"
    assert sorted(places) == sorted(accepted), f"lost: {sorted(set(accepted) - set(places))}"
    # The engine's book and titan's agree once it reports again: the latest truth reading scores 100.
    time.sleep(2.5)
    state = json.loads(Titan(live.directory)("state", "--json", "--account", account, env=live.env()).stdout)
    assert state["truth"]["paper"]["score"] == 100, state["truth"]
    assert paper.terminate() == 0, paper.log()
    assert serve.terminate() == 0, serve.log()
    verify_everything(live)


def test_an_order_decided_under_a_superseded_policy_is_refused_by_execution(exec_live: Live) -> None:
    live, account = exec_live, "stale"
    serve = ServeProcess(live.directory, live.env(), args=("--account", account)).start()
    serve.wait_ready()
    snapshot = {
        "type": "record_truth_snapshot.v1", "command_id": "stale-snap-1", "account_id": account, "actor": "execution:paper",
        "venue": "paper", "positions": [], "open_order_ids": [], "equity": "100000", "venue_ts_ns": time.time_ns(), "latency_ms": 5,
    }
    order = place_order(account, 1)
    newer = default_policy().model_copy(update={"policy_id": "titan-default-b"})
    activate = {
        "type": "activate_policy.v1", "command_id": "stale-policy-b", "account_id": account, "actor": "operator:risk",
        "policy": newer.model_dump(mode="json"),
    }

    async def send() -> list[dict[str, Any]]:
        nc = await nats.connect(live.nats_url)
        try:
            answers = []
            for issuer, command in (("execution", snapshot), ("phase1", order), ("console", activate)):
                async with Sender(nc, keys=live.keys, issuer=issuer) as sender:
                    answers.append(await sender.send(subject_for(command), encode(command), timeout_s=20))
            return answers
        finally:
            await nc.close()

    answers = run(send())
    assert [a["outcome"] for a in answers] == ["accepted", "accepted", "accepted"], answers
    assert policy_hash(newer) != order["policy_hash"]
    # Only now does execution start: it learns policy B from the mirror, then meets the order made under A.
    paper = PaperProcess(live.directory, live.env(), paper_args(live, account)).start()
    order_id = f"ord-{order['command_id']}"

    def refused() -> list[dict[str, Any]]:
        return [
            d["command"] for d in commands_of(live.ledger_url, account)
            if d["command"]["type"] == "record_venue_reject.v1" and d["command"]["order_id"] == order_id
        ]

    wait_for(lambda: refused(), "the engine's venue reject")
    [reject] = refused()
    assert reject["venue_reason"] == "POLICY_HASH_MISMATCH"
    events = [r for r in records(live.ledger_url) if r.type == "order.venue_rejected.v1" and r.envelope["data"]["order_id"] == order_id]
    assert len(events) == 1
    assert paper.terminate() == 0, paper.log()
    assert serve.terminate() == 0, serve.log()


def test_demo_live_runs_and_its_ledger_replays(tmp_path: Path) -> None:
    titan = Titan(tmp_path)
    nothing_there = f"nats://127.0.0.1:{free_port()}"  # no NATS answers: the demo starts a throwaway one
    result = titan("demo", "--live", "--orders", "60", "--seed", "4", "--json", env={"TITAN_NATS_URL": nothing_there})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    summary = json.loads(result.stdout)
    live = summary["live"]
    assert live["children"] == {"paper": 0, "serve": 0}
    assert live["mirror"]["ok"] and live["mirror"]["unmirrored"] == 0, live["mirror"]
    assert live["execution"]["each_accepted_order_once"] and live["execution"]["places"] == summary["orders"]["accepted"] > 0
    assert summary["venue"]["acks"] + summary["venue"]["venue_rejects"] >= summary["orders"]["accepted"]
    assert summary["venue"]["truth_snapshots"] > 0
    assert "POLICY_HASH_MISMATCH" in summary["rejections_by_reason"]  # the seeded stale-hash intent
    assert any(t["to_state"] == "HALTED" and t["trigger"] == "operator" for t in summary["breaker_transitions"])
    replay = titan("replay", "verify", "--ledger", summary["ledger"])
    assert replay.returncode == 0, replay.stdout + replay.stderr
