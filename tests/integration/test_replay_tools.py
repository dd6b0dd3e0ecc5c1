"""Replay's tools on real ledger files: the state at a point, what-if, explain, export, audit SQL."""

from __future__ import annotations

import re
import shutil
import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from importlib.metadata import requires
from pathlib import Path
from typing import Any

import duckdb
import pytest
from packaging.requirements import Requirement

from commands.envelope import command_stream
from commands.ports import Ledger
from commands.views import state_view
from infra.bootstrap import bootstrap, open_ledger
from infra.core import load_core
from infra.demo import run as run_demo
from infra.golden import GOLDEN_DIR, load_manifest
from infra.read_models import READ_SIDE
from infra.settings import Settings
from replay.audit import AuditInputError, query_export
from replay.explain import explain, slippage_bps
from replay.export import ChainBroken, ExportError, export_ledger, verify_export
from replay.points import parse_point
from replay.state_at import ReplayInputError, replay_state
from replay.whatif import what_if
from schemas.policy import PolicyDocument

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = load_manifest()
T0 = 1_767_225_600_000_000_000


@pytest.fixture
def core() -> Any:
    return load_core("interpreted")


def _copy_golden(tmp_path: Path, name: str) -> Ledger:
    entry = MANIFEST["ledgers"][name]
    copy = tmp_path / entry["file"]
    shutil.copyfile(GOLDEN_DIR / entry["file"], copy)
    return open_ledger("sqlite:///" + str(copy), create=False)


@pytest.fixture
def scenario(tmp_path: Path) -> Iterator[Ledger]:
    ledger = _copy_golden(tmp_path, "scenario-reasons")
    yield ledger
    ledger.close()


@pytest.fixture
def golden_demo(tmp_path: Path) -> Iterator[Ledger]:
    ledger = _copy_golden(tmp_path, "demo-seed7-orders40")
    yield ledger
    ledger.close()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Ledger, Any, dict[str, Any]]]:
    """A fresh demo session by the titan under test (with whatever the Brain adds)."""
    url = "sqlite:///" + str(tmp_path_factory.mktemp("demo") / "demo.db")
    ledger = open_ledger(url)
    bus = bootstrap(Settings(ledger_url=url, core="interpreted"), ledger=ledger)
    summary = run_demo(bus, seed=7, orders=200, ledger_url=url, progress=False)
    yield ledger, bus, summary
    ledger.close()


def _command_position(ledger: Ledger, command_id: str) -> int:
    return ledger.read_stream(command_stream(command_id))[0].position


# --- titan replay (state at a point) -----------------------------------------------------------


def test_replay_at_the_head_equals_the_live_state(demo: tuple[Ledger, Any, dict[str, Any]]) -> None:
    ledger, bus, _ = demo
    core = bus.ctx.core
    result = replay_state(ledger, core)
    assert state_view(core, result.accounts["main"].state) == state_view(core, bus.state("main"))
    assert result.accounts["main"].last_position == ledger.head()[0] - 1  # the last command record follows


def test_replay_until_a_position(scenario: Ledger, core: Any) -> None:
    filled = _command_position(scenario, "s-008")  # the fill that completes ord-s-001
    before = replay_state(scenario, core, parse_point(str(filled - 2)), "main")
    after = replay_state(scenario, core, parse_point(str(filled)), "main")
    view_before = state_view(core, before.accounts["main"].state)
    view_after = state_view(core, after.accounts["main"].state)
    assert [p["quantity"] for p in view_before["positions"]] == ["0.040"]
    assert [p["quantity"] for p in view_after["positions"]] == ["0.100"]
    assert "ord-s-001" in {o["order_id"] for o in view_before["open_orders"]}
    assert "ord-s-001" not in {o["order_id"] for o in view_after["open_orders"]}
    assert after.accounts["main"].last_position == filled - 1


def test_replay_until_a_time_cuts_each_account_stream(scenario: Ledger, core: Any) -> None:
    cut = T0 + 1_000_000_000  # the cancel of an unknown order, one second after the first order
    result = replay_state(scenario, core, parse_point(str(cut)))
    main = result.accounts["main"]
    assert main.last_ts_ns <= cut
    assert state_view(core, main.state)["last_ts_ns"] == cut
    assert "desk-b" not in result.accounts  # its commands came later
    iso = replay_state(scenario, core, parse_point("2026-01-01T00:00:01Z"))
    assert state_view(core, iso.accounts["main"].state) == state_view(core, main.state)


def test_replay_refuses_points_and_accounts_the_ledger_does_not_have(scenario: Ledger, core: Any) -> None:
    head = scenario.head()[0]
    with pytest.raises(ReplayInputError, match=f"beyond the ledger's head \\(position {head}\\)"):
        replay_state(scenario, core, parse_point(str(head + 1)))
    with pytest.raises(ReplayInputError, match="before the first record"):
        replay_state(scenario, core, parse_point("1969-12-31T23:59:59Z"))
    with pytest.raises(ReplayInputError, match="no account 'nobody'.*accounts: desk-b, main"):
        replay_state(scenario, core, None, "nobody")


# --- titan replay what-if ------------------------------------------------------------------------


def _recorded_policy(ledger: Ledger) -> dict[str, Any]:
    for record in ledger.iter_all():
        if record.type == "policy.activated.v1":
            document: dict[str, Any] = record.envelope["data"]["policy"]
            return dict(document)
    raise AssertionError("no policy activated")


def test_what_if_under_the_recorded_policy_changes_nothing(golden_demo: Ledger, core: Any) -> None:
    report = what_if(golden_demo, core, PolicyDocument.model_validate(_recorded_policy(golden_demo)))
    assert report.changes == []
    assert report.considered == MANIFEST["ledgers"]["demo-seed7-orders40"]["records"] // 2


def test_what_if_with_a_tighter_collar_lists_the_orders_it_would_refuse(golden_demo: Ledger, core: Any) -> None:
    document = _recorded_policy(golden_demo)
    document["limits"]["price_collar_bps"] = 2
    head_before = golden_demo.head()
    report = what_if(golden_demo, core, PolicyDocument.model_validate(document))
    assert golden_demo.head() == head_before  # nothing written
    refused = [c for c in report.changes if c["would_be"]["reason"] == "PRICE_COLLAR"]
    assert refused
    for change in refused:
        assert change["type"] == "place_order.v1"
        collar = [c for c in change["checks"] if c["check"] == "price_collar_bps"]
        assert collar and collar[0]["would_be"]["verdict"] == "fail" and collar[0]["would_be"]["limit"] == "2"
        assert Decimal(collar[0]["would_be"]["value"]) > 2
        if change["was"]["outcome"] == "accepted":
            assert collar[0]["was"] == {"value": collar[0]["would_be"]["value"], "limit": "150", "verdict": "pass"}
    consequences = [c for c in report.changes if c["consequence_of"]]
    assert all(c["would_be"]["reason"] in ("UNKNOWN_ORDER",) for c in consequences)
    totals = report.totals()
    assert totals["outcomes_changed"] == len(report.changes)
    assert totals["direct"] + totals["consequential"] == len(report.changes)
    assert totals["would_be_reasons"]["PRICE_COLLAR"] == len(refused)


def test_what_if_from_a_point_keeps_the_history_before_it(golden_demo: Ledger, core: Any) -> None:
    document = _recorded_policy(golden_demo)
    document["limits"]["price_collar_bps"] = 2
    middle = golden_demo.head()[0] // 2
    report = what_if(golden_demo, core, PolicyDocument.model_validate(document), parse_point(str(middle)))
    assert report.changes and all(c["position"] >= middle for c in report.changes)
    assert report.activations and report.activations[0]["outcome"] == "accepted"


def test_what_if_refuses_a_policy_that_would_rescale_what_the_account_holds(scenario: Ledger, core: Any) -> None:
    document = _recorded_policy(scenario)
    for instrument in document["instruments"]:
        if (instrument["venue"], instrument["symbol"]) == ("paper", "BTCUSDT"):
            instrument["tick_size"] = "0.01"
    after_fill = _command_position(scenario, "s-008")
    with pytest.raises(ReplayInputError, match="POLICY_SCALE_CHANGE"):
        what_if(scenario, core, PolicyDocument.model_validate(document), parse_point(str(after_fill + 1)))


# --- titan explain -------------------------------------------------------------------------------


def test_slippage_is_signed_against_us() -> None:
    assert slippage_bps("BUY", "65006.5", "65000.0") == "1.00"
    assert slippage_bps("SELL", "65006.5", "65000.0") == "-1.00"
    assert slippage_bps("SELL", "64993.5", "65000.0") == "1.00"


def test_explain_an_order_from_the_ledger_alone(scenario: Ledger, core: Any) -> None:
    trace = explain(scenario, core, "ord-s-001")
    assert trace["request"]["actor"] == "phase1-scavenger"
    assert trace["request"]["intent_id"] == "intent-s-001"
    assert trace["request"]["correlation_id"] == "corr-s-001"
    assert trace["request"]["phase_id"] == 1
    decision = trace["decision"]
    assert decision["outcome"] == "accepted"
    names = [c["check"] for c in decision["checks"]]
    assert names[:3] == ["policy_hash", "instrument", "mode"]
    assert all(c["value"] is not None and c["limit"] is not None and c["verdict"] == "pass" for c in decision["checks"])
    assert trace["policy"]["active_hash"] == trace["policy"]["carried_hash"]
    assert trace["context"]["state"]["mode"] == "DISARMED"
    assert [r["type"] for r in trace["context"]["set_by"]] == ["policy.activated.v1"]
    life = trace["lifecycle"]
    assert life["status"] == "FILLED"
    assert [f["fill_id"] for f in life["fills"]] == ["F-1", "F-4"]
    assert [f["slippage_bps"] for f in life["fills"]] == ["0.15", "-0.02"]
    assert life["filled_quantity"] == "0.100"
    assert life["position_after"]["quantity"] == "0.100"
    assert trace["context"]["position_before"] is None
    # The refused fills in between are part of the order's story too.
    reasons = [e["data"].get("reason") for e in life["events"] if e["type"] == "command.rejected.v1"]
    assert reasons == ["INVALID_TRANSITION", "DUPLICATE_FILL", "OVERFILL", "INVALID_FILL"]


def test_explain_a_refused_order_shows_the_failing_check(scenario: Ledger, core: Any) -> None:
    trace = explain(scenario, core, "ord-s-020")
    assert (trace["decision"]["outcome"], trace["decision"]["reason"]) == ("rejected", "PRICE_COLLAR")
    collar = next(c for c in trace["decision"]["checks"] if c["check"] == "price_collar_bps")
    assert collar == {"check": "price_collar_bps", "value": "231", "limit": "150", "verdict": "fail"}
    assert trace["lifecycle"]["status"] == "REJECTED"
    assert trace["context"]["position_before"]["quantity"] == "0.100"


def test_explain_a_command_by_its_id_and_refuse_an_unknown_one(scenario: Ledger, core: Any) -> None:
    trace = explain(scenario, core, "s-030")
    assert trace["request"]["type"] == "arm.v1"
    assert trace["decision"]["outcome"] == "accepted"
    later = explain(scenario, core, "ord-s-032")
    assert later["context"]["state"]["mode"] == "ARMED"
    assert "account.armed.v1" in [r["type"] for r in later["context"]["set_by"]]
    with pytest.raises(ReplayInputError, match="no order or command 'ord-nope'"):
        explain(scenario, core, "ord-nope")


def test_explain_the_demo_order_shows_every_check_with_value_and_limit(demo: tuple[Ledger, Any, dict[str, Any]]) -> None:
    ledger, bus, summary = demo
    trace = explain(ledger, bus.ctx.core, summary["order_to_explain"])
    checks = trace["decision"]["checks"]
    assert len(checks) >= 10
    assert all(set(c) >= {"check", "value", "limit", "verdict"} for c in checks)
    assert trace["lifecycle"]["events"]


# --- titan ledger export, titan audit sql --------------------------------------------------------


def test_export_writes_parquet_whose_manifest_matches(demo: tuple[Ledger, Any, dict[str, Any]], tmp_path: Path) -> None:
    ledger, _, _ = demo
    out = tmp_path / "export"
    result = export_ledger(ledger, out, titan_version="test", read_side=READ_SIDE)
    manifest = result.manifest
    assert verify_export(out) == []
    position, head_hash, count = ledger.head()
    assert manifest["ledger_head"] == {"position": position, "hash": head_hash, "record_count": count}
    assert manifest["files"]["records"]["rows"] == count
    commands = sum(1 for r in ledger.iter_all() if r.type == "command.recorded.v1")
    assert manifest["files"]["commands"]["rows"] == commands
    assert manifest["chain_verified"] is True
    assert manifest["schema_versions"]["record_types"]["command.recorded.v1"] == commands
    counted = query_export("SELECT (SELECT count(*) FROM records), (SELECT count(*) FROM commands)", out)
    assert counted.rows == [[count, commands]]
    heads = query_export("SELECT hash FROM records ORDER BY position DESC LIMIT 1", out)
    assert heads.rows == [[head_hash]]
    for name, entry in manifest["files"].items():
        if entry.get("read_model"):
            assert name.startswith("rm_")
            query_export(f"SELECT count(*) FROM {name}", out)


def test_export_refuses_a_directory_that_is_not_empty(golden_demo: Ledger, tmp_path: Path) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    (out / "something").write_text("x")
    with pytest.raises(ExportError, match="exists and is not empty"):
        export_ledger(golden_demo, out, titan_version="test", read_side=READ_SIDE)
    empty = tmp_path / "empty"
    empty.mkdir()
    export_ledger(golden_demo, empty, titan_version="test", read_side=READ_SIDE)
    assert (empty / "manifest.json").exists()


def test_export_refuses_a_broken_chain_and_leaves_nothing(tmp_path: Path) -> None:
    entry = MANIFEST["ledgers"]["demo-seed2026-orders25"]
    copy = tmp_path / entry["file"]
    shutil.copyfile(GOLDEN_DIR / entry["file"], copy)
    with sqlite3.connect(copy) as connection:
        connection.execute(
            "UPDATE stored_events SET state = CAST(replace(CAST(state AS TEXT), '\"actor\":\"', '\"actor\":\"x') AS BLOB) "
            "WHERE rowid = 20"
        )
    ledger = open_ledger("sqlite:///" + str(copy), create=False)
    try:
        with pytest.raises(ChainBroken, match="position 20"):
            export_ledger(ledger, tmp_path / "out", titan_version="test", read_side=READ_SIDE)
    finally:
        ledger.close()
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def _doc_queries() -> list[str]:
    text = (ROOT / "docs" / "audit.md").read_text()
    return re.findall(r"```sql\n(.*?)```", text, flags=re.DOTALL)


def test_the_example_queries_of_docs_audit_md_answer(demo: tuple[Ledger, Any, dict[str, Any]], tmp_path: Path) -> None:
    ledger, _, _ = demo
    out = tmp_path / "export"
    export_ledger(ledger, out, titan_version="test", read_side=READ_SIDE)
    queries = _doc_queries()
    assert len(queries) >= 5
    answered = {}
    for sql in queries:
        result = query_export(sql, out)
        answered[sql.split("\n", 1)[0]] = len(result.rows)
    refused = query_export(queries[0], out)
    assert refused.rows, "orders refused by reason per day"
    breaker = sum(1 for r in ledger.iter_all() if r.type == "breaker.transitioned.v1")
    if breaker:
        transitions = next(q for q in queries if "breaker.transitioned.v1" in q)
        assert len(query_export(transitions, out).rows) == breaker


def test_audit_sql_reports_bad_queries_and_bad_exports(tmp_path: Path) -> None:
    with pytest.raises(AuditInputError, match="not a directory"):
        query_export("SELECT 1", tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(AuditInputError, match="no manifest.json"):
        query_export("SELECT 1", tmp_path / "plain")
    ledger = _copy_golden(tmp_path, "demo-seed2026-orders25")
    try:
        export_ledger(ledger, tmp_path / "ok", titan_version="test", read_side=READ_SIDE)
    finally:
        ledger.close()
    with pytest.raises(AuditInputError, match="the query failed"):
        query_export("SELECT nope FROM records", tmp_path / "ok")
    # The DuckDB installed is one titan declares (pyproject), and it knows every setting the
    # audit's lockdown sets: on a DuckDB without one, `audit sql` could not lock itself down.
    declared = [Requirement(r) for r in requires("titan") or [] if Requirement(r).name == "duckdb"]
    assert len(declared) == 1, declared
    assert declared[0].specifier.contains(duckdb.__version__), (str(declared[0]), duckdb.__version__)
    with duckdb.connect() as connection:
        known = {name for (name,) in connection.execute("SELECT name FROM duckdb_settings()").fetchall()}
    lockdown = {
        "enable_external_access",
        "allowed_paths",
        "autoinstall_known_extensions",
        "autoload_known_extensions",
        "allow_community_extensions",
        "lock_configuration",
    }
    assert lockdown <= known, sorted(lockdown - known)
