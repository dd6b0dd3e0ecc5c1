"""The Brain's read models (truth, breaker, budget, venue_quality) on a `titan demo` ledger
(seed 7, 300 orders): they show what `titan state --json` shows, and a rebuild gives the live
digest on SQLite and on PostgreSQL (and the same digest on both)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from adapters.sqlite.ledger import SQLiteLedger
from infra.read_models import open_store
from projections import breaker, budget, registry, truth, venue_quality
from projections.runner import Runner, rebuild
from tests.projections_support import interpreted_bus, run, run_demo

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
SEED, ORDERS = 7, 300
BRAIN = (truth.PROJECTION, breaker.PROJECTION, budget.PROJECTION, venue_quality.PROJECTION)


@pytest.fixture(scope="module")
def brain_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("brain-demo") / "ledger.db"
    ledger = SQLiteLedger(str(path))
    try:
        run_demo(interpreted_bus(ledger), ORDERS, seed=SEED)
    finally:
        ledger.close()
    return path


@pytest.fixture
def ledger_file(brain_template: Path, tmp_path: Path) -> Path:
    path = tmp_path / "ledger.db"
    shutil.copyfile(brain_template, path)
    return path


def titan_state(ledger_file: Path) -> dict[str, Any]:
    """`titan state --json` on the ledger, as an operator runs it."""
    script = Path(sys.executable).parent / "titan"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "infra.cli"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TITAN_") or k == "TITAN_CORE"}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [*command, "state", "--ledger", "sqlite:///" + str(ledger_file), "--json"],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    view: dict[str, Any] = json.loads(done.stdout)
    return view


async def caught_up_rows(url: str, ledger: SQLiteLedger) -> dict[str, list[dict[str, Any]]]:
    store = await open_store(url)
    try:
        await Runner(ledger, store, BRAIN, batch_size=250).catch_up()
        return {table.name: await store.rows(table) for projection in BRAIN for table in projection.tables}
    finally:
        await store.close()


def test_the_brain_read_models_show_what_titan_state_shows(ledger_file: Path) -> None:
    ledger = SQLiteLedger(str(ledger_file))
    try:
        rows = run(caught_up_rows("sqlite:///" + str(ledger_file), ledger))
        snapshots = sum(1 for r in ledger.iter_all() if r.type == "truth.snapshot_recorded.v1")
    finally:
        ledger.close()
    state = titan_state(ledger_file)

    # breaker: the current state, and every transition exactly as `titan state` lists them
    transitions = state["breaker_transitions"]
    assert transitions, "the seed-7 demo moves the breaker"
    [current] = rows["rm_breaker"]
    assert (current["account_id"], current["state"], current["since_ts_ns"]) == (
        "main", state["breaker"]["state"], state["breaker"]["since_ts_ns"],
    )  # fmt: skip
    assert (current["trigger"], current["position"]) == (transitions[-1]["trigger"], transitions[-1]["position"])
    fields = ("position", "from_state", "to_state", "trigger", "reason", "actor", "ts_ns")
    assert [{**{k: row[k] for k in fields}, "values": row["trigger_values"]} for row in rows["rm_breaker_transitions"]] == [
        {**{k: t[k] for k in fields}, "values": t["values"]} for t in transitions
    ]

    # truth: each venue's latest score, and one history row per snapshot
    assert {row["venue"]: {"score": row["score"], "ts_ns": row["ts_ns"]} for row in rows["rm_truth"]} == state["truth"]
    assert len(rows["rm_truth_history"]) == snapshots

    # venue quality: the status of every venue that ever changed
    assert rows["rm_venue_quality"], "the seed-7 demo degrades the paper venue"
    for row in rows["rm_venue_quality"]:
        assert row["status"] == state["venues"][row["venue"]]["status"]

    # budget: today's row is the core's day and day PnL; a closed day's sum is what its roll recorded
    today = rows["rm_budget"][-1]
    assert today["day"] == state["budget"]["day"]
    assert Decimal(today["pnl_money"]).scaleb(-8) == Decimal(state["budget"]["day_pnl"])
    assert today["fills"] > 0
    for row in rows["rm_budget"][:-1]:
        assert Decimal(row["closed_day_pnl"]) == Decimal(row["pnl_money"]).scaleb(-8)


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, ledger_file: Path) -> str:
    if request.param == "sqlite":
        return "sqlite:///" + str(ledger_file)
    return str(request.getfixturevalue("migrated_pg_url"))


async def live_and_rebuilt(url: str, ledger: SQLiteLedger) -> tuple[dict[str, Any], dict[str, Any]]:
    store = await open_store(url)
    try:
        await Runner(ledger, store, registry.PROJECTIONS, batch_size=97).catch_up()
        live = {}
        for projection in BRAIN:
            snapshot = await store.snapshot(projection)
            live[projection.name] = (snapshot.position, snapshot.digest, snapshot.rows)
        rebuilt = {}
        for projection in BRAIN:
            done = await rebuild(ledger, store, projection, batch_size=500)
            after = await store.snapshot(projection)
            assert (after.digest, after.rows) == (done.digest, done.rows)
            rebuilt[projection.name] = (done.position, done.digest, done.rows)
        return live, rebuilt
    finally:
        await store.close()


def test_a_rebuilt_brain_model_has_the_live_digest(store_url: str, ledger_file: Path) -> None:
    ledger = SQLiteLedger(str(ledger_file))
    try:
        live, rebuilt = run(live_and_rebuilt(store_url, ledger))
        head = ledger.head()[0]
    finally:
        ledger.close()
    assert rebuilt == live
    assert all(position == head and rows > 0 for position, _, rows in live.values())


def test_the_brain_digests_are_the_same_in_either_store(ledger_file: Path, migrated_pg_url: str) -> None:
    ledger = SQLiteLedger(str(ledger_file))
    try:
        embedded = run(live_and_rebuilt("sqlite:///" + str(ledger_file), ledger))[0]
        postgres = run(live_and_rebuilt(migrated_pg_url, ledger))[0]
    finally:
        ledger.close()
    assert embedded == postgres
