"""`titan replay`, `titan replay verify|what-if`, `titan explain`, `titan ledger export` and
`titan audit sql` as a user drives them: real processes, real files, exit codes."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from infra.golden import GOLDEN_DIR, load_manifest
from schemas.canonical import GENESIS_HASH, canonical_bytes, record_hash

from .conftest import Titan

pytestmark = pytest.mark.e2e

MANIFEST = load_manifest()


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One demo ledger for the module (each test copies it before changing anything)."""
    directory = tmp_path_factory.mktemp("demo")
    result = Titan(directory)("demo", "--seed", "7", "--orders", "120", "--ledger", "sqlite:///demo.db", "--json")
    assert result.returncode == 0, result.stderr
    (directory / "summary.json").write_text(result.stdout)
    return directory / "demo.db"


def _order_to_explain(demo_db: Path) -> str:
    return str(json.loads((demo_db.parent / "summary.json").read_text())["order_to_explain"])


def _url(path: Path) -> str:
    return "sqlite:///" + str(path)


def _copy(source: Path, tmp_path: Path, name: str = "copy.db") -> Path:
    target = tmp_path / name
    shutil.copyfile(source, target)
    return target


def _golden(tmp_path: Path, name: str) -> Path:
    return _copy(GOLDEN_DIR / MANIFEST["ledgers"][name]["file"], tmp_path, MANIFEST["ledgers"][name]["file"])


def forge(path: Path, position: int, edit: Callable[[dict[str, Any]], None]) -> None:
    """Edit one record and re-seal every later hash and the anchor, as a forger with write access
    would: the chain verifies, but the edited record is not what its command decides."""
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT rowid, state FROM stored_events ORDER BY rowid").fetchall()
        previous = GENESIS_HASH
        for rowid, state in rows:
            envelope = orjson.loads(state)
            if rowid >= position:
                if rowid == position:
                    edit(envelope)
                envelope.pop("hash")
                envelope["prev_hash"] = previous
                envelope["hash"] = record_hash(envelope)
                connection.execute("UPDATE stored_events SET state = ? WHERE rowid = ?", (canonical_bytes(envelope), rowid))
            previous = envelope["hash"]
        connection.execute("UPDATE titan_chain_head SET hash = ? WHERE id = 1", (previous,))


def _first(path: Path, type_name: str) -> tuple[int, dict[str, Any]]:
    with sqlite3.connect(path) as connection:
        row = connection.execute(
            "SELECT rowid, state FROM stored_events WHERE topic = ? ORDER BY rowid LIMIT 1", (type_name,)
        ).fetchone()
    return int(row[0]), orjson.loads(row[1])


# --- titan replay verify -------------------------------------------------------------------------


def test_replay_verify_passes_on_a_demo_ledger(titan: Titan, demo_db: Path, tmp_path: Path) -> None:
    url = _url(_copy(demo_db, tmp_path))
    report = titan.json("replay", "verify", "--ledger", url, "--json")
    assert report["ok"] is True and report["chain_ok"] is True
    assert report["divergence"] is None
    assert report["records"] == report["chain"]["records_checked"] > 0
    cores = {c["kind"]: c for c in report["cores"]}
    assert cores["interpreted"]["available"] is True
    if not cores["compiled"]["available"]:
        assert cores["compiled"]["reason"]
    text = titan("replay", "verify", "--ledger", url)
    assert text.returncode == 0, text.stderr
    assert "ok:" in text.stdout
    if not cores["compiled"]["available"]:
        assert "NOT AVAILABLE" in text.stdout and "interpreted core only" in text.stdout


@pytest.mark.parametrize("name", sorted(MANIFEST["ledgers"]))
def test_replay_verify_passes_on_the_golden_ledgers(titan: Titan, tmp_path: Path, name: str) -> None:
    report = titan.json("replay", "verify", "--ledger", _url(_golden(tmp_path, name)), "--json")
    assert report["ok"] is True, report["summary"]
    assert report["chain"]["head_hash"] == MANIFEST["ledgers"][name]["head_hash"]


def test_replay_verify_catches_a_resealed_forgery_that_the_chain_cannot(titan: Titan, tmp_path: Path) -> None:
    path = _golden(tmp_path, "demo-seed7-orders40")
    position, envelope = _first(path, "order.accepted.v1")

    def double_quantity(e: dict[str, Any]) -> None:
        e["data"]["quantity"] = "9" + e["data"]["quantity"]

    forge(path, position, double_quantity)
    assert titan("ledger", "verify", "--ledger", _url(path)).returncode == 0  # the chain is perfect
    result = titan("replay", "verify", "--ledger", _url(path))
    assert result.returncode == 1
    line = next(li for li in result.stderr.splitlines() if "first divergent command" in li)
    assert envelope["command_id"] in line and f"position {position + 1}" in line
    assert "data.quantity" in result.stderr
    report = json.loads(titan("replay", "verify", "--ledger", _url(path), "--json").stdout)
    divergence = report["divergence"]
    assert divergence["command_id"] == envelope["command_id"]
    assert divergence["position"] == position
    assert divergence["event_id"] == envelope["event_id"]
    paths = {d["path"]: d for d in divergence["diffs"]}
    assert paths["data.quantity"]["recorded"] == "9" + envelope["data"]["quantity"]
    assert paths["data.quantity"]["replayed"] == envelope["data"]["quantity"]


def test_replay_refuses_a_broken_chain_and_points_to_ledger_verify(titan: Titan, tmp_path: Path) -> None:
    path = _golden(tmp_path, "demo-seed2026-orders25")
    with sqlite3.connect(path) as connection:
        connection.execute(
            "UPDATE stored_events SET state = CAST(replace(CAST(state AS TEXT), '\"actor\":\"', '\"actor\":\"x') AS BLOB) "
            "WHERE rowid = 30"
        )
    result = titan("replay", "verify", "--ledger", _url(path))
    assert result.returncode == 1
    assert "titan ledger verify" in result.stderr and "position 30" in result.stderr
    report = json.loads(titan("replay", "verify", "--ledger", _url(path), "--json").stdout)
    assert report["ok"] is False and report["chain_ok"] is False and report["chain"]["position"] == 30


@pytest.mark.parametrize(
    "args",
    [("replay",), ("replay", "--until", "10"), ("explain", "ord-demo-000001"), ("replay", "what-if", "--policy", "POLICY")],
)
def test_every_replay_tool_refuses_a_broken_chain(titan: Titan, tmp_path: Path, args: tuple[str, ...]) -> None:
    path = _golden(tmp_path, "demo-seed7-orders40")
    policy = titan.json("policy", "show", "--ledger", _url(path), "--json")["policy"]
    (tmp_path / "policy.json").write_text(json.dumps(policy))
    with sqlite3.connect(path) as connection:
        connection.execute(
            "UPDATE stored_events SET state = CAST(replace(CAST(state AS TEXT), '\"actor\":\"', '\"actor\":\"x') AS BLOB) "
            "WHERE rowid = 50"
        )
    argv = [str(tmp_path / "policy.json") if a == "POLICY" else a for a in args]
    result = titan(*argv, "--ledger", _url(path))
    assert result.returncode == 1
    assert "position 50" in result.stderr and "titan ledger verify" in result.stderr


# --- titan replay (state at a point) -------------------------------------------------------------


def test_replay_at_the_head_shows_what_titan_state_shows(titan: Titan, demo_db: Path) -> None:
    url = _url(demo_db)
    replayed = titan.json("replay", "--ledger", url, "--json")
    live = titan.json("state", "--ledger", url, "--json")
    (account,) = replayed["accounts"]
    for key in ("mode", "policy_hash", "positions", "open_orders", "last_ts_ns"):
        assert account["state"][key] == live[key]
    text = titan("replay", "--ledger", url, "--until", "40")
    assert text.returncode == 0, text.stderr
    assert "as of position 40" in text.stdout and "positions" in text.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--until", "999999"), "beyond the ledger's head"),
        (("--until", "1969-12-31T23:59:59Z"), "before the first record"),
        (("--until", "yesterday"), "is not a position or a time"),
        (("--until", "0"), "positions start at 1"),
        (("--account", "nobody"), "no account 'nobody'"),
    ],
)
def test_replay_bad_points_are_bad_input(titan: Titan, demo_db: Path, args: tuple[str, ...], message: str) -> None:
    result = titan("replay", "--ledger", _url(demo_db), *args)
    assert result.returncode == 2
    assert message in result.stderr


# --- titan explain -------------------------------------------------------------------------------


def test_explain_shows_every_check_with_value_and_limit(titan: Titan, demo_db: Path) -> None:
    url = _url(demo_db)
    order_id = _order_to_explain(demo_db)
    trace = titan.json("explain", order_id, "--ledger", url, "--json")
    checks = trace["decision"]["checks"]
    assert checks and all({"check", "value", "limit", "verdict"} <= set(c) for c in checks)
    text = titan("explain", order_id, "--ledger", url)
    assert text.returncode == 0, text.stderr
    for check in checks:
        assert check["check"] in text.stdout
    assert "price_collar_bps" in text.stdout and "outcome" in text.stdout


def test_explain_an_unknown_id_is_bad_input(titan: Titan, demo_db: Path) -> None:
    result = titan("explain", "ord-does-not-exist", "--ledger", _url(demo_db))
    assert result.returncode == 2
    assert "no order or command 'ord-does-not-exist'" in result.stderr


# --- titan replay what-if ------------------------------------------------------------------------


def test_what_if_with_a_tighter_collar_reports_the_orders_it_would_refuse(titan: Titan, tmp_path: Path) -> None:
    url = _url(_golden(tmp_path, "demo-seed7-orders40"))
    policy = titan.json("policy", "show", "--ledger", url, "--json")["policy"]
    policy["limits"]["price_collar_bps"] = 2
    (tmp_path / "tight.json").write_text(json.dumps(policy))
    report = titan.json("replay", "what-if", "--policy", "tight.json", "--ledger", url, "--json")
    refused = [c for c in report["changes"] if c["would_be"]["reason"] == "PRICE_COLLAR"]
    assert refused
    assert report["totals"]["would_be_reasons"]["PRICE_COLLAR"] == len(refused)
    text = titan("replay", "what-if", "--policy", "tight.json", "--ledger", url)
    assert text.returncode == 0, text.stderr
    assert "PRICE_COLLAR" in text.stdout and "nothing was written" in text.stdout
    assert titan.json("ledger", "verify", "--ledger", url, "--json")["records_checked"] == MANIFEST["ledgers"]["demo-seed7-orders40"]["records"]


def test_what_if_with_a_policy_that_does_not_validate_is_bad_input(titan: Titan, demo_db: Path, tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text('{"policy_id": "x", "limits": {}}')
    result = titan("replay", "what-if", "--policy", "bad.json", "--ledger", _url(demo_db))
    assert result.returncode == 2
    assert "is not a valid titan policy" in result.stderr


# --- titan ledger export, titan audit sql --------------------------------------------------------


def test_export_then_audit_sql(titan: Titan, demo_db: Path, tmp_path: Path) -> None:
    url = _url(demo_db)
    exported = titan.json("ledger", "export", "--out", "out", "--ledger", url, "--json")
    manifest = exported["manifest"]
    assert json.loads((tmp_path / "out" / "manifest.json").read_text()) == manifest
    head = titan.json("ledger", "verify", "--ledger", url, "--json")
    assert manifest["ledger_head"]["hash"] == head["head_hash"]
    rows = titan.json("audit", "sql", "SELECT count(*) AS n FROM records", "--export", "out", "--json")
    assert rows["rows"] == [{"n": head["records_checked"]}]
    live = titan.json("audit", "sql", "SELECT count(*) AS n FROM commands WHERE outcome = 'rejected'", "--ledger", url, "--json")
    assert live["rows"][0]["n"] > 0
    again = titan("ledger", "export", "--out", "out", "--ledger", url)
    assert again.returncode == 2 and "exists and is not empty" in again.stderr
    bad = titan("audit", "sql", "SELECT nope FROM records", "--export", "out")
    assert bad.returncode == 2 and "the query failed" in bad.stderr
    missing = titan("audit", "sql", "SELECT 1", "--export", "nowhere")
    assert missing.returncode == 2


def test_replay_verify_explain_and_export_on_postgresql(titan: Titan, pg_url: str) -> None:
    demo = titan.json("demo", "--seed", "5", "--orders", "40", "--ledger", pg_url, "--json")
    report = titan.json("replay", "verify", "--ledger", pg_url, "--json")
    assert report["ok"] is True, report["summary"]
    assert report["chain"]["head_hash"] == demo["head_hash"]
    trace = titan.json("explain", demo["order_to_explain"], "--ledger", pg_url, "--json")
    assert trace["decision"]["checks"]
    exported = titan.json("ledger", "export", "--out", "pg-export", "--ledger", pg_url, "--json")
    assert exported["manifest"]["ledger_head"]["hash"] == demo["head_hash"]
    assert exported["manifest"]["files"]["records"]["rows"] == demo["records"]
