"""PostgreSQL and NATS restarted under a steady load of signed commands while `titan serve` runs:
commands wait or are redelivered, none is lost, none is decided twice, and serve carries on by
itself (issue 11, "Bad input and faults")."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from adapters.nats.sender import Sender
from tests.services import PostgresServer, own_postgres_cluster

from .conftest import Live, new_live
from .live_support import (
    ServeProcess,
    encode,
    place_order,
    run,
    subject_for,
)
from .load_support import SteadyLoad, check_exactly_once, wait_drained
from .test_serve_crash import verify_everything

pytestmark = pytest.mark.integration


@pytest.fixture
def own_pg() -> Iterator[PostgresServer]:
    with own_postgres_cluster() as server:
        yield server


@pytest.fixture
def fault_live(own_pg: PostgresServer, tmp_path: Path) -> Iterator[Live]:
    with new_live(own_pg, tmp_path, "titan_faults") as world:
        yield world


def test_postgresql_restarted_under_load(fault_live: Live, own_pg: PostgresServer) -> None:
    live = fault_live
    serve = ServeProcess(live.directory, live.env(), args=("--account", "pgfault")).start()
    serve.wait_ready()
    load = SteadyLoad(live.nats_url, live.keys, "pgfault", rate=100).start()
    try:
        time.sleep(2.0)
        own_pg.restart(down_s=2.0)  # an immediate shutdown: every session dies mid-transaction
        serve.wait_ready(timeout_s=60)
        time.sleep(2.0)
    finally:
        load.stop()
    run(wait_drained(live.nats_url, timeout_s=120))
    assert serve.process is not None and serve.process.poll() is None, serve.log()
    assert serve.terminate() == 0, serve.log()
    summary = check_exactly_once(live.ledger_url, load)
    assert summary["answered"] == summary["sent"], summary
    verify_everything(live)


def test_nats_restarted_under_load(fault_live: Live) -> None:
    live = fault_live
    serve = ServeProcess(live.directory, live.env(), args=("--account", "natsfault")).start()
    serve.wait_ready()
    load = SteadyLoad(live.nats_url, live.keys, "natsfault", rate=100).start()
    try:
        time.sleep(2.0)
        live.nats.stop()
        time.sleep(1.0)
        live.nats.start()  # the same port and store: streams, consumers and stored commands survive
        serve.wait_ready(timeout_s=60)
        time.sleep(2.0)
    finally:
        load.stop()
    run(wait_drained(live.nats_url, timeout_s=120))
    assert serve.terminate() == 0, serve.log()
    summary = check_exactly_once(live.ledger_url, load, only_stored=True)
    assert summary["recorded"] == summary["stored"] >= summary["sent"] - 50, summary
    # An answer is core NATS: one sent while the server was down is lost. A client that got none
    # sends the command again and is answered with its original outcome, decided once.
    unanswered = sorted(load.stored - set(load.answers))
    assert len(unanswered) <= 5, unanswered
    if unanswered:
        serve = ServeProcess(live.directory, live.env(), name="serve-again", args=("--account", "natsfault")).start()
        serve.wait_ready()
        again = run(resend(live, [place_order("natsfault", int(cid.rsplit("-o", 1)[1])) for cid in unanswered]))
        assert [a["outcome"] for a in again] == ["duplicate"] * len(unanswered), again
        assert serve.terminate() == 0, serve.log()
        check_exactly_once(live.ledger_url, load, only_stored=True)
    verify_everything(live)


async def resend(live: Live, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
    nc = await nats.connect(live.nats_url)
    try:
        async with Sender(nc, keys=live.keys, issuer="phase1") as sender:
            return [await sender.send(subject_for(c), encode(c), timeout_s=20) for c in commands]
    finally:
        await nc.close()
