"""`titan serve` end to end over real NATS and PostgreSQL: signed commands decided and answered,
duplicates answered with their original outcome, every refused message in the DLQ with its reason
and nothing recorded (issue 11, "Tests")."""

from __future__ import annotations

import time
from typing import Any

import nats
import orjson
import pytest

from adapters.nats import subjects
from adapters.nats.sender import Sender
from adapters.nats.signing import sign
from adapters.postgres.ledger import PostgresLedger
from commands.envelope import COMMAND_RECORDED

from .conftest import Live
from .live_support import ServeProcess, encode, place_order, run, subject_for

pytestmark = pytest.mark.integration


def recorded_ids(ledger_url: str) -> list[str]:
    ledger = PostgresLedger(ledger_url)
    try:
        return [r.envelope["command_id"] for r in ledger.read_all(0, 1_000_000) if r.type == COMMAND_RECORDED]
    finally:
        ledger.close()


async def send_all(live: Live, issuer: str | None, commands: list[dict[str, Any]], timeout_s: float = 20) -> list[dict[str, Any]]:
    nc = await nats.connect(live.nats_url)
    try:
        async with Sender(nc, keys=live.keys if issuer else None, issuer=issuer) as sender:
            return [await sender.send(subject_for(c), encode(c), timeout_s=timeout_s) for c in commands]
    finally:
        await nc.close()


async def dlq_entries(live: Live) -> list[dict[str, Any]]:
    nc = await nats.connect(live.nats_url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(subjects.DLQ_STREAM)
        entries = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                msg = await js.get_msg(subjects.DLQ_STREAM, seq)
            except nats.js.errors.NotFoundError:
                continue
            entries.append(orjson.loads(msg.data or b"{}"))
        return entries
    finally:
        await nc.close()


def test_signed_commands_are_decided_answered_and_duplicates_get_the_original(live: Live, serve: ServeProcess) -> None:
    orders = [place_order("alpha", n) for n in range(12)]
    answers = run(send_all(live, "phase1", orders))
    assert [a["command_id"] for a in answers] == [o["command_id"] for o in orders]
    assert {a["outcome"] for a in answers} <= {"accepted", "rejected"}
    assert all(isinstance(a["position"], int) for a in answers)

    again = run(send_all(live, "phase1", orders[:3]))
    assert [a["outcome"] for a in again] == ["duplicate"] * 3
    assert [a["position"] for a in again] == [a["position"] for a in answers[:3]]
    assert [a["reason"] for a in again] == [a["reason"] for a in answers[:3]]

    halt = {"type": "halt.v1", "command_id": "alpha-halt-1", "account_id": "alpha", "actor": "ops@desk", "reason": "drill"}
    (halted,) = run(send_all(live, "console", [halt]))
    assert halted["outcome"] == "accepted"
    (refused,) = run(send_all(live, "phase1", [place_order("alpha", 99)]))
    assert refused["outcome"] == "rejected"

    ids = recorded_ids(live.ledger_url)
    sent = [o["command_id"] for o in orders] + ["alpha-halt-1", "alpha-o000099"]
    assert sorted(i for i in ids if i.startswith("alpha-")) == sorted(sent)  # each exactly once
    metrics = serve.metrics()
    assert 'titan_intake_commands_total{outcome="duplicate"' in metrics
    assert "titan_writer_commit_seconds_count" in metrics


def answered(serve: ServeProcess, work: Any) -> Any:
    """Run a coroutine that waits for answers; on failure, show what serve logged."""
    try:
        return run(work)
    except Exception as error:
        raise AssertionError(f"{error}\n--- titan serve log:\n{serve.log()}") from error


def _signed(live: Live, issuer: str, command: dict[str, Any], *, ts_ns: int | None = None) -> tuple[str, bytes, dict[str, str]]:
    subject, payload = subject_for(command), encode(command)
    return subject, payload, sign(live.keys[issuer], issuer, subject, payload, ts_ns or time.time_ns())


async def _publish_raw(live: Live, messages: list[tuple[str, bytes, dict[str, str]]], control: dict[str, Any]) -> dict[str, Any]:
    """Publish crafted messages, then one valid command; its answer means the intake has handled
    everything before it (one connection keeps the order)."""
    nc = await nats.connect(live.nats_url)
    try:
        js = nc.jetstream()
        for subject, payload, headers in messages:
            await js.publish(subject, payload, headers=headers)
        async with Sender(nc, keys=live.keys, issuer="phase1") as sender:
            return await sender.send(subject_for(control), encode(control), timeout_s=20)
    finally:
        await nc.close()


def test_forged_stale_and_out_of_role_messages_are_dead_lettered_and_nothing_is_recorded(live: Live, serve: ServeProcess) -> None:
    before = set(recorded_ids(live.ledger_url))
    order = place_order("beta", 1, prefix="forged")
    subject, payload, good = _signed(live, "phase1", order)
    captured = (subject, payload, good)  # a valid message: decided now, captured, replayed after the window
    first = answered(serve, _publish_raw(live, [captured], place_order("beta", 49, prefix="control")))
    assert first["outcome"] in {"accepted", "rejected"}
    time.sleep(3.5)  # the window is 3 s: the captured message is now too old; the rest is signed now
    unsigned: tuple[str, bytes, dict[str, str]] = (subject, payload, {})
    wrong_key = (subject, payload, sign(b"\x01" * 32, "phase1", subject, payload, time.time_ns()))
    unknown = (subject, payload, sign(b"\x02" * 32, "mallory", subject, payload, time.time_ns()))
    stale = _signed(live, "phase1", place_order("beta", 2, prefix="forged"), ts_ns=time.time_ns() - 60 * 10**9)
    altered = (subject, payload.replace(b"0.010", b"9.000"), good)
    fill = {
        "type": "record_fill.v1", "command_id": "beta-forged-fill", "account_id": "beta", "actor": "phase1-test",
        "order_id": "beta-forged000001", "fill_id": "f1", "quantity": "0.010", "price": "65001.0", "fee": "0",
    }
    phase_fill = _signed(live, "phase1", fill)
    other_phase = _signed(live, "phase2", place_order("beta", 3, phase=1, prefix="forged", actor="phase2-x"))
    mismatch = (subjects.command_subject("gamma", "place_order.v1"), payload, sign(live.keys["phase1"], "phase1", subjects.command_subject("gamma", "place_order.v1"), payload, time.time_ns()))
    garbage_subject = "titan.cmd.beta.place_order.v1"
    garbage = (garbage_subject, b"{not json", sign(live.keys["phase1"], "phase1", garbage_subject, b"{not json", time.time_ns()))
    control = answered(
        serve,
        _publish_raw(
            live,
            [unsigned, wrong_key, unknown, stale, altered, phase_fill, other_phase, mismatch, garbage, captured],
            place_order("beta", 50, prefix="control"),
        )
    )
    assert control["outcome"] in {"accepted", "rejected"}
    entries = [e for e in run(dlq_entries(live)) if ".beta." in e["subject"] or ".gamma." in e["subject"]]
    reasons = [e["reason"] for e in entries]
    assert reasons == [
        "UNSIGNED", "BAD_SIGNATURE", "UNKNOWN_ISSUER", "SIGNATURE_EXPIRED", "BAD_SIGNATURE",
        "OUT_OF_ROLE", "OUT_OF_ROLE", "SUBJECT_MISMATCH", "SCHEMA_INVALID", "SIGNATURE_EXPIRED",
    ], entries
    assert all(e["payload"] for e in entries)
    assert entries[0]["headers"] == {}
    after = set(recorded_ids(live.ledger_url))
    # The captured order was recorded once, when it was first sent; nothing refused was recorded.
    assert after - before == {order["command_id"], first["command_id"], control["command_id"]}


def test_a_reply_subject_outside_the_inbox_is_refused(live: Live, serve: ServeProcess) -> None:
    order = place_order("delta", 1)
    subject, payload, headers = _signed(live, "phase1", order)

    async def go() -> list[dict[str, Any]]:
        nc = await nats.connect(live.nats_url)
        try:
            await nc.jetstream().publish(subject, payload, headers={**headers, subjects.REPLY_TO: "titan.cmd.delta.halt.v1"})
            async with Sender(nc, keys=live.keys, issuer="phase1") as sender:
                await sender.send(subject_for(place_order("delta", 2)), encode(place_order("delta", 2)), timeout_s=20)
        finally:
            await nc.close()
        return await dlq_entries(live)

    entries = [e for e in run(go()) if ".delta." in e["subject"]]
    assert [e["reason"] for e in entries] == ["BAD_REPLY_SUBJECT"]
    assert "delta-o000001" not in recorded_ids(live.ledger_url)


def test_a_command_retried_after_the_signature_window_is_still_decided(live: Live, serve: ServeProcess) -> None:
    """The window runs to when JetStream stored the message: a command nak'ed because another writer
    held its account comes back 10 s later (the window is 3 s here) and is decided, not expired."""
    import threading

    from commands.envelope import account_stream

    ledger = PostgresLedger(live.ledger_url)
    lease = run(ledger.acquire_lease(account_stream("held"), "a test holding the account"))
    released = threading.Timer(1.5, lambda: run(lease.release()))
    released.start()
    try:
        answers = answered(serve, send_all(live, "phase1", [place_order("held", 1)], timeout_s=40))
    finally:
        released.join()
        ledger.close()
    assert answers[0]["outcome"] in {"accepted", "rejected"}, answers
    assert "held-o000001" in recorded_ids(live.ledger_url)


def test_sigterm_drains_and_the_mirror_and_replay_verify(live: Live, serve: ServeProcess) -> None:
    from tests.e2e.conftest import Titan

    assert serve.terminate() == 0, serve.log()
    assert "serve: drained" in serve.log()
    titan = Titan(live.directory)
    env = live.env()
    relay = titan("relay", "verify", env=env)
    assert relay.returncode == 0, relay.stdout + relay.stderr
    replay = titan("replay", "verify", env=env)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    ledger = titan("ledger", "verify", env=env)
    assert ledger.returncode == 0, ledger.stdout + ledger.stderr


