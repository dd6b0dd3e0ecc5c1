"""A steady offered load of signed commands against a running `titan serve`, from a thread of its
own, and the exactly-once checks made on the ledger afterwards."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from typing import Any

import nats

from adapters.nats import subjects
from adapters.nats.sender import Sender
from adapters.nats.signing import Keys
from adapters.postgres.ledger import PostgresLedger
from commands.envelope import COMMAND_RECORDED

from .live_support import encode, place_order, subject_for


class SteadyLoad:
    """Publishes `rate` signed orders a second for one account until stopped; keeps every answer."""

    def __init__(self, nats_url: str, keys: Keys, account: str, rate: float) -> None:
        self.nats_url = nats_url
        self.keys = keys
        self.account = account
        self.rate = rate
        self.sent: list[str] = []
        self.answers: dict[str, dict[str, Any]] = {}
        self.stored: set[str] = set()
        """Commands JetStream confirmed storing (a publish lost with a NATS restart is not)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._error: BaseException | None = None

    def start(self) -> SteadyLoad:
        self._thread.start()
        return self

    def stop(self, answers_within_s: float = 90.0) -> None:
        """Stop sending; wait until every command sent has an answer (or the time is up)."""
        self._stop.set()
        self._thread.join(timeout=answers_within_s + 30)
        if self._error is not None:
            raise self._error

    async def _run(self) -> None:
        try:
            nc = await nats.connect(self.nats_url, max_reconnect_attempts=-1)
            futures: list[tuple[str, Any, Any]] = []
            async with Sender(nc, keys=self.keys, issuer="phase1") as sender:
                n = 0
                started = time.monotonic()
                while not self._stop.is_set():
                    command = place_order(self.account, n)
                    stored, outcome = await sender.publish(subject_for(command), encode(command))
                    futures.append((command["command_id"], stored, outcome))
                    self.sent.append(command["command_id"])
                    n += 1
                    await asyncio.sleep(max(0.0, started + n / self.rate - time.monotonic()))
                deadline = time.monotonic() + 90
                for command_id, stored, future in futures:
                    if stored.done() and not stored.cancelled() and stored.exception() is None:
                        self.stored.add(command_id)
                    try:
                        answer = await asyncio.wait_for(asyncio.shield(future), max(0.1, deadline - time.monotonic()))
                    except TimeoutError:
                        continue
                    self.answers[command_id] = answer
                    self.stored.add(command_id)
            await nc.close()
        except BaseException as error:  # noqa: BLE001 - reported by stop()
            self._error = error


async def wait_drained(nats_url: str, timeout_s: float = 90.0) -> None:
    """Until TITAN_CMD holds nothing undelivered or unacked."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        deadline = time.monotonic() + timeout_s
        while True:
            info = await js.consumer_info(subjects.CMD_STREAM, subjects.INTAKE_CONSUMER)
            stream = await js.stream_info(subjects.CMD_STREAM)
            if not info.num_pending and not info.num_ack_pending and not stream.state.messages:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"TITAN_CMD not drained: {info.num_pending} pending, {info.num_ack_pending} unacked")
            await asyncio.sleep(0.25)
    finally:
        await nc.close()


def check_exactly_once(ledger_url: str, load: SteadyLoad, *, only_stored: bool = False) -> dict[str, int]:
    """Every command sent is recorded exactly once (with `only_stored`: every one JetStream stored,
    and none that was not sent); every answer names its command's position."""
    ledger = PostgresLedger(ledger_url)
    try:
        records = [r for r in ledger.read_all(0, 10_000_000) if r.type == COMMAND_RECORDED]
    finally:
        ledger.close()
    mine = [r for r in records if r.envelope["command_id"].startswith(f"{load.account}-")]
    counts = Counter(r.envelope["command_id"] for r in mine)
    twice = [cid for cid, count in counts.items() if count > 1]
    assert not twice, f"decided more than once: {twice[:10]}"
    if only_stored:
        assert load.stored <= set(counts) <= set(load.sent), f"lost: {sorted(load.stored - set(counts))[:10]}"
    else:
        assert set(counts) == set(load.sent), f"lost: {sorted(set(load.sent) - set(counts))[:10]}"
    position = {r.envelope["command_id"]: r.position for r in mine}
    wrong = [cid for cid, answer in load.answers.items() if answer.get("position") != position[cid]]
    assert not wrong, f"answered with another position: {wrong[:10]}"
    outcomes = Counter(answer["outcome"] for answer in load.answers.values())
    return {"sent": len(load.sent), "stored": len(load.stored), "answered": len(load.answers), "recorded": len(counts), **outcomes}
