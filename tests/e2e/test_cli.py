"""The CLI as a user drives it: outcomes, exit codes, files on disk."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from .conftest import Titan

T0 = 1_767_225_600_000_000_000


def place(command_id: str, policy_hash: str, **overrides: object) -> dict[str, object]:
    command: dict[str, object] = {
        "type": "place_order.v1",
        "command_id": command_id,
        "account_id": "main",
        "ts_ns": T0,
        "actor": "phase1-scavenger",
        "policy_hash": policy_hash,
        "phase_id": 1,
        "intent_id": "intent-" + command_id,
        "client_order_id": "cl-" + command_id,
        "venue": "paper",
        "symbol": "BTCUSDT",
        "side": "BUY",
        "quantity": "0.010",
        "price": "65000.0",
        "reference_price": "65000.0",
    }
    command.update(overrides)
    return command


def snapshot(command_id: str = "s0", ts_ns: int = T0) -> dict[str, object]:
    """The paper venue's view: flat, no orders. The default policy gates new risk on a fresh one."""
    return {
        "type": "record_truth_snapshot.v1", "command_id": command_id, "account_id": "main", "ts_ns": ts_ns,
        "actor": "paper-venue", "venue": "paper", "positions": [], "open_order_ids": [], "equity": "100000",
        "venue_ts_ns": ts_ns, "latency_ms": 5,
    }


def lines(*items: object) -> str:
    return "".join((item if isinstance(item, str) else json.dumps(item)) + "\n" for item in items)


def default_hash(titan: Titan) -> str:
    result = titan("policy", "hash", str(Path(__file__).resolve().parents[2] / "infra" / "policies" / "default.json"))
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_version_reports_the_core(titan: Titan) -> None:
    info = titan.json("version", "--json")
    assert info["core"] in ("compiled", "interpreted")
    assert info["version"]


def test_init_activates_the_default_policy_once(titan: Titan, tmp_path: Path) -> None:
    first = titan.json("init", "--json")
    assert first["initialized"] is True
    assert first["policy_hash"] == default_hash(titan)
    assert (tmp_path / ".titan" / "ledger.db").exists()
    again = titan.json("init", "--json")
    assert again["initialized"] is False
    assert again["policy_hash"] == first["policy_hash"]


def test_submit_decides_each_line_and_reports_invalid_ones(titan: Titan) -> None:
    digest = default_hash(titan)
    good = place("c1", digest)
    stdin = lines(
        snapshot(),
        good,
        place("c2", "0" * 64, ts_ns=T0 + 1),
        good,
        "{not json",
        place("c3", digest, quantity=0.01),
        {"type": "fly_to_moon.v1", "command_id": "c4"},
        place("c5", digest, ts_ns=T0 + 2, price="65000.05"),
    )
    result = titan("submit", "-", stdin=stdin)
    assert result.returncode == 2, result.stderr
    out = [json.loads(line) for line in result.stdout.splitlines()][1:]  # after the snapshot
    assert [o["outcome"] for o in out] == ["accepted", "rejected", "duplicate", "invalid", "invalid", "invalid", "rejected"]
    assert out[1]["reason"] == "POLICY_HASH_MISMATCH"
    assert out[6]["reason"] == "PRICE_OFF_TICK"
    assert out[0]["events"] == [{"type": "order.accepted.v1", "event_id": "c1.0"}]
    assert out[2]["events"] == out[0]["events"] and out[2]["position"] == out[0]["position"]
    assert out[4]["command_id"] == "c3" and out[4]["errors"][0]["field"].endswith("quantity")
    assert out[3]["errors"] and out[5]["errors"]
    # nothing of the invalid lines was recorded; the duplicate appended nothing
    report = titan.json("ledger", "verify", "--json")
    # init, c1, c2, c5: an event and a command record each; the snapshot: the day's roll too
    assert report["records_checked"] == 4 * 2 + 3


def test_submit_exits_zero_when_every_line_is_decided(titan: Titan, tmp_path: Path) -> None:
    digest = default_hash(titan)
    path = tmp_path / "commands.jsonl"
    path.write_text(lines(snapshot(), place("c1", digest), place("c2", digest, ts_ns=T0 + 1, quantity="3.000")))
    result = titan("submit", str(path))
    assert result.returncode == 0, result.stderr
    outcomes = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["reason"] for o in outcomes] == [None, None, "MAX_ORDER_QTY"]


def test_state_shows_positions_and_open_orders(titan: Titan) -> None:
    digest = default_hash(titan)
    fill = {
        "type": "record_fill.v1", "command_id": "f1", "account_id": "main", "ts_ns": T0 + 5, "actor": "paper-venue",
        "order_id": "ord-c1", "fill_id": "F1", "quantity": "0.004", "price": "65000.0", "fee": "0.05",
    }
    titan("submit", "-", stdin=lines(snapshot(), place("c1", digest), fill))
    view = titan.json("state", "--json")
    assert view["mode"] == "DISARMED"
    assert view["policy_hash"] == digest
    assert view["positions"] == [
        {
            "venue": "paper", "symbol": "BTCUSDT", "quantity": "0.004", "avg_price": "65000", "cost": "260",
            "realized_pnl": "0", "fees": "0.05", "mark_price": "65000.0",
        }
    ]
    [order] = view["open_orders"]
    assert (order["order_id"], order["status"], order["filled_quantity"]) == ("ord-c1", "PARTIALLY_FILLED", "0.004")


def test_demo_is_deterministic_and_verifies(titan: Titan, tmp_path: Path) -> None:
    first = titan.json("demo", "--seed", "7", "--orders", "120", "--json", "--ledger", f"sqlite:///{tmp_path}/a.db")
    second = titan.json("demo", "--seed", "7", "--orders", "120", "--json", "--ledger", f"sqlite:///{tmp_path}/b.db")
    assert first["head_hash"] == second["head_hash"]
    assert first["orders"]["accepted"] > 0 and first["venue"]["fills"] > 0
    assert len(first["rejections_by_reason"]) >= 3
    assert (tmp_path / "a.db").read_bytes() == (tmp_path / "b.db").read_bytes()
    other = titan.json("demo", "--seed", "8", "--orders", "120", "--json", "--ledger", f"sqlite:///{tmp_path}/c.db")
    assert other["head_hash"] != first["head_hash"]
    assert titan("ledger", "verify", "--ledger", f"sqlite:///{tmp_path}/a.db").returncode == 0
    refused = titan("demo", "--ledger", f"sqlite:///{tmp_path}/a.db")
    assert refused.returncode == 2 and "not empty" in refused.stderr


def test_demo_default_ledger_is_a_new_file_each_run(titan: Titan, tmp_path: Path) -> None:
    one = titan.json("demo", "--orders", "20", "--json")
    two = titan.json("demo", "--orders", "20", "--json")
    assert one["ledger"] != two["ledger"]
    assert one["head_hash"] == two["head_hash"]


def test_ledger_verify_names_the_first_altered_record(titan: Titan, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/l.db"
    titan.json("demo", "--orders", "20", "--json", "--ledger", url)
    with sqlite3.connect(tmp_path / "l.db") as db:
        rowid, state = db.execute("SELECT rowid, state FROM stored_events WHERE rowid = 10").fetchone()
        db.execute("UPDATE stored_events SET state = ? WHERE rowid = ?", (state.replace(b'"actor":"', b'"actor":"X'), rowid))
    result = titan("ledger", "verify", "--ledger", url, "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["position"] == 10


def test_ledger_verify_catches_a_deleted_record(titan: Titan, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/l.db"
    titan.json("demo", "--orders", "20", "--json", "--ledger", url)
    with sqlite3.connect(tmp_path / "l.db") as db:
        db.execute("DELETE FROM stored_events WHERE rowid = 7")
    result = titan("ledger", "verify", "--ledger", url)
    assert result.returncode == 1
    assert "position 8" in result.stderr


def test_policy_activate_records_a_new_policy(titan: Titan, tmp_path: Path) -> None:
    titan.json("init", "--json")
    document = json.loads((Path(__file__).resolve().parents[2] / "infra" / "policies" / "default.json").read_text())
    document["limits"]["price_collar_bps"] = 50
    path = tmp_path / "tight.json"
    path.write_text(json.dumps(document))
    digest = titan("policy", "hash", str(path)).stdout.strip()
    outcome = titan.json("policy", "activate", str(path), "--actor", "risk-officer", "--json")
    assert outcome["outcome"] == "accepted"
    shown = titan.json("policy", "show", "--json")
    assert shown["policy_hash"] == digest
    assert shown["policy"]["limits"]["price_collar_bps"] == 50
    again = titan("policy", "activate", str(path))
    assert again.returncode == 1 and "POLICY_ALREADY_ACTIVE" in again.stdout


def test_bad_policy_file_is_refused_with_the_field(titan: Titan, tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"policy_id": "x", "instruments": [], "limits": {}}))
    result = titan("policy", "hash", str(path))
    assert result.returncode == 2
    assert "instruments" in result.stderr and "Traceback" not in result.stderr


def test_a_file_that_is_not_a_ledger_is_refused_cleanly(titan: Titan, tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database, it is a text file" * 100)
    result = titan("state", "--ledger", f"sqlite:///{junk}")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "junk.db" in result.stderr
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE customers (id INTEGER)")
    result = titan("ledger", "verify", "--ledger", f"sqlite:///{foreign}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert junk.read_bytes().startswith(b"this is not a database")


def test_unsupported_ledger_url_is_bad_usage(titan: Titan) -> None:
    result = titan("state", "--ledger", "mysql://localhost/titan")
    assert result.returncode == 2
    assert "sqlite:///" in result.stderr


def test_the_breaker_walk_scenario_goes_normal_defensive_halted_and_back(titan: Titan) -> None:
    scenario = Path(__file__).resolve().parents[2] / "docs" / "examples" / "breaker-walk.jsonl"
    hashes = {json.loads(line).get("policy_hash") for line in scenario.read_text().splitlines()} - {None}
    assert hashes == {default_hash(titan)}, f"{scenario} names another policy: set its policy_hash to `titan policy hash`"
    result = titan("submit", str(scenario))
    assert result.returncode == 0, result.stderr
    outcomes = {o["command_id"]: o for o in map(json.loads, result.stdout.splitlines())}
    assert outcomes["walk-06"]["reason"] == "RESUME_BLOCKED"
    view = titan.json("state", "--json")
    walk = [(t["from_state"], t["to_state"], t["trigger"]) for t in view["breaker_transitions"]]
    assert walk == [
        ("NORMAL", "DEFENSIVE", "truth_score"),
        ("DEFENSIVE", "HALTED", "truth_score"),
        ("HALTED", "NORMAL", "operator_resume"),
    ]
    assert view["breaker_transitions"][0]["values"] == {"defensive_below": "80", "truth_score": "59", "venue": "paper"}
    assert view["breaker_transitions"][2]["actor"] == "operator:alice"
    assert view["breaker"]["state"] == "NORMAL" and view["breaker"]["active_triggers"] == []


def test_operator_actions_from_the_cli_are_recorded_with_actor_and_reason(titan: Titan) -> None:
    titan.json("init", "--json")
    halted = titan("halt", "--reason", "market data outage", "--actor", "operator:bob", "--json")
    assert halted.returncode == 0, halted.stderr
    again = titan("halt", "--reason", "again")
    assert again.returncode == 1 and "ALREADY_HALTED" in again.stdout
    assert titan("halt", "--reason", "  ").returncode == 2
    view = titan.json("state", "--json")
    [transition] = view["breaker_transitions"]
    assert (transition["to_state"], transition["trigger"], transition["actor"], transition["reason"]) == (
        "HALTED", "operator", "operator:bob", "market data outage",
    )
    assert titan("resume", "--reason", "outage over").returncode == 0
    assert titan.json("state", "--json")["breaker"]["state"] == "NORMAL"
    flattened = titan.json("flatten", "--reason", "end of day", "--json")
    assert flattened["outcome"] == "accepted"
    assert titan.json("state", "--json")["breaker"]["state"] == "HALTED"
