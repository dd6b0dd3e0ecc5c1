"""`titan projections status|rebuild|run` as an operator drives them: outputs and exit codes."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from .conftest import ROOT, Titan, titan_command

pytestmark = pytest.mark.e2e

NAMES = ["positions", "orders", "decisions", "commands", "dlq", "truth", "breaker", "budget", "venue_quality"]


def by_name(report: dict[str, Any], key: str) -> dict[str, Any]:
    return {item["projection"]: item for item in report[key]}


def demo(titan: Titan, ledger: str, orders: int = 60) -> dict[str, Any]:
    summary: dict[str, Any] = titan.json("demo", "--orders", str(orders), "--ledger", ledger, "--json")
    return summary


def test_status_run_and_rebuild_on_the_embedded_ledger(titan: Titan, tmp_path: Path) -> None:
    ledger = "sqlite:///demo.db"
    summary = demo(titan, ledger)
    head = summary["head_position"]

    before = by_name(titan.json("projections", "status", "--ledger", ledger, "--json"), "projections")
    assert list(before) == NAMES
    assert all(item["position"] == 0 and item["lag"] == head and item["rows"] == 0 for item in before.values())

    ran = titan.json("projections", "run", "--ledger", ledger, "--json")
    assert ran["positions"] == {name: head for name in NAMES}
    assert ran["records"] == summary["records"]

    live = by_name(titan.json("projections", "status", "--ledger", ledger, "--json"), "projections")
    assert all(item["lag"] == 0 and item["head"] == head for item in live.values())
    assert live["orders"]["rows"] == summary["orders"]["placed"]

    rebuilt = by_name(titan.json("projections", "rebuild", "--ledger", ledger, "--json"), "rebuilt")
    assert list(rebuilt) == NAMES
    assert {name: item["digest"] for name, item in rebuilt.items()} == {name: item["digest"] for name, item in live.items()}
    assert all(item["position"] == head for item in rebuilt.values())

    one = titan.json("projections", "rebuild", "orders", "--ledger", ledger, "--json")["rebuilt"]
    assert [item["projection"] for item in one] == ["orders"]
    assert one[0]["digest"] == live["orders"]["digest"]

    human = titan("projections", "status", "--ledger", ledger)
    assert human.returncode == 0 and "positions" in human.stdout and live["positions"]["digest"] in human.stdout


def test_the_positions_read_model_is_what_titan_state_shows(titan: Titan, tmp_path: Path) -> None:
    demo(titan, "sqlite:///demo.db", 80)
    titan.json("projections", "run", "--ledger", "sqlite:///demo.db", "--json")
    state = titan.json("state", "--ledger", "sqlite:///demo.db", "--json")

    with sqlite3.connect(tmp_path / "demo.db") as db:  # read models are plain tables in the ledger file
        db.row_factory = sqlite3.Row
        rows = [dict(row) for row in db.execute("SELECT * FROM rm_positions ORDER BY account_id, venue, symbol")]

    fields = ("venue", "symbol", "quantity", "avg_price", "cost", "realized_pnl", "fees", "mark_price")
    assert state["positions"]
    assert [{k: row[k] for k in fields} for row in rows] == [{k: p[k] for k in fields} for p in state["positions"]]


def test_an_unknown_projection_is_refused_naming_the_accepted_ones(titan: Titan) -> None:
    demo(titan, "sqlite:///demo.db", 5)
    result = titan("projections", "rebuild", "nope", "--ledger", "sqlite:///demo.db")
    assert result.returncode == 2
    assert "nope" in result.stderr
    for name in NAMES:
        assert name in result.stderr


def test_a_missing_ledger_is_bad_input_and_is_not_created(titan: Titan, tmp_path: Path) -> None:
    for command in (["status"], ["rebuild"], ["run"]):
        result = titan("projections", *command, "--ledger", "sqlite:///missing.db")
        assert result.returncode == 2, result
        assert "missing.db" in result.stderr
    assert not (tmp_path / "missing.db").exists()


def test_an_unreachable_read_model_database_exits_3(titan: Titan) -> None:
    demo(titan, "sqlite:///demo.db", 5)
    result = titan("projections", "status", "--ledger", "sqlite:///demo.db", "--store", "postgresql://nobody@127.0.0.1:1/none")
    assert result.returncode == 3
    assert "127.0.0.1:1" in result.stderr or "none" in result.stderr


def test_run_follow_keeps_up_and_stops_cleanly_on_sigint(titan: Titan, tmp_path: Path) -> None:
    ledger = "sqlite:///demo.db"
    demo(titan, ledger, 20)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TITAN_") or k == "TITAN_CORE"}
    env["PYTHONPATH"] = str(ROOT)
    follower = subprocess.Popen(
        [*titan_command(), "projections", "run", "--follow", "--ledger", ledger, "--json"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        state = titan.json("state", "--ledger", ledger, "--json")
        late = {"type": "record_order_ack.v1", "command_id": "late-ack", "account_id": "main",
                "ts_ns": state["last_ts_ns"] + 1, "actor": "venue", "order_id": "ord-nothing", "venue_order_id": "v"}
        submitted = titan("submit", "-", "--ledger", ledger, stdin=json.dumps(late) + "\n")
        assert submitted.returncode == 0, submitted.stderr
        head = json.loads(submitted.stdout)["position"]
        deadline = time.monotonic() + 30
        while True:
            report = by_name(titan.json("projections", "status", "--ledger", ledger, "--json"), "projections")
            if all(item["position"] == head for item in report.values()):
                break
            assert time.monotonic() < deadline, f"the follower did not reach {head}: {report}"
            assert follower.poll() is None, follower.communicate()
            time.sleep(0.1)
    finally:
        follower.send_signal(signal.SIGINT)
        out, err = follower.communicate(timeout=30)
    assert follower.returncode == 0, err
    assert json.loads(out)["positions"] == {name: head for name in NAMES}


def test_status_and_rebuild_on_a_postgresql_ledger(titan: Titan, pg_url: str) -> None:
    summary = demo(titan, pg_url, 30)
    ran = titan.json("projections", "run", "--ledger", pg_url, "--json")
    assert ran["positions"] == {name: summary["head_position"] for name in NAMES}
    live = by_name(titan.json("projections", "status", "--ledger", pg_url, "--json"), "projections")
    rebuilt = by_name(titan.json("projections", "rebuild", "--ledger", pg_url, "--json"), "rebuilt")
    assert {n: i["digest"] for n, i in rebuilt.items()} == {n: i["digest"] for n, i in live.items()}
    state = titan.json("state", "--ledger", pg_url, "--json")
    assert live["positions"]["rows"] == len(state["positions"])
    assert sum(Decimal(p["quantity"]) != 0 for p in state["positions"]) <= live["positions"]["rows"]
