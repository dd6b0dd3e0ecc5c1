"""kill -9 `titan serve` at random moments under a steady load of signed commands: nothing lost,
nothing decided twice, and a hot standby takes over by itself (issue 11, "Crash")."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Titan
from tests.services import PostgresServer

from .conftest import Live, new_live
from .live_support import ServeProcess, run
from .load_support import SteadyLoad, check_exactly_once, wait_drained

pytestmark = pytest.mark.integration


@pytest.fixture
def crash_live(pg_server: PostgresServer, tmp_path: Path) -> Iterator[Live]:
    with new_live(pg_server, tmp_path, "titan_crash") as world:
        yield world


def verify_everything(live: Live) -> None:
    titan = Titan(live.directory)
    for args in (("ledger", "verify"), ("replay", "verify"), ("relay", "verify")):
        result = titan(*args, env=live.env())
        assert result.returncode == 0, f"titan {' '.join(args)}: {result.stdout}{result.stderr}"


def test_kill_minus_9_ten_times_under_load_loses_and_doubles_nothing(crash_live: Live) -> None:
    live = crash_live
    rng = random.Random(11)
    serve = ServeProcess(live.directory, live.env(), name="serve-0", args=("--account", "crash")).start()
    serve.wait_ready()
    load = SteadyLoad(live.nats_url, live.keys, "crash", rate=150).start()
    try:
        for kill in range(10):
            time.sleep(rng.uniform(0.2, 1.5))
            serve.kill9()
            serve = ServeProcess(live.directory, live.env(), name=f"serve-{kill + 1}", args=("--account", "crash")).start()
            serve.wait_ready()
        time.sleep(1.0)
    finally:
        load.stop()
    run(wait_drained(live.nats_url))
    assert serve.terminate() == 0, serve.log()
    summary = check_exactly_once(live.ledger_url, load)
    assert summary["sent"] >= 300 and summary["answered"] == summary["sent"], summary
    verify_everything(live)


def test_a_standby_takes_over_when_the_leader_is_killed(crash_live: Live) -> None:
    live = crash_live
    leader = ServeProcess(live.directory, live.env(), name="leader", args=("--account", "hot")).start()
    leader.wait_ready()
    standby = ServeProcess(live.directory, live.env(), name="standby", args=("--account", "hot")).start()
    standby.wait_role("standby")
    state = standby.readiness()
    assert state is not None and state[0] == 503 and state[1]["role"] == "standby"
    load = SteadyLoad(live.nats_url, live.keys, "hot", rate=150).start()
    try:
        time.sleep(2.0)
        leader.kill9()
        killed_at = time.monotonic()
        standby.wait_ready(timeout_s=30)
        takeover_s = time.monotonic() - killed_at
        assert takeover_s < 10, takeover_s
        time.sleep(2.0)
    finally:
        load.stop()
    run(wait_drained(live.nats_url))
    assert standby.terminate() == 0, standby.log()
    summary = check_exactly_once(live.ledger_url, load)
    assert summary["answered"] == summary["sent"], summary
    verify_everything(live)
