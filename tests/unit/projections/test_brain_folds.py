"""The Brain's read models (truth, breaker, budget, venue_quality) as given(commands) /
when(folded) / then(rows): each equals what the core itself keeps (`titan state`)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from commands.ports import Record
from commands.views import breaker_history, state_view
from projections import breaker, budget, registry, truth, venue_quality
from projections.model import Patch, Put
from schemas import commands as wire

ACCOUNT = "main"
NS_PER_DAY = 86_400 * 1_000_000_000


def view_of(session: Any) -> dict[str, Any]:
    return state_view(session.bus.ctx.core, session.bus.state(ACCOUNT))


def record(position: int, type_: str, data: dict[str, Any], ts_ns: int = 5, stream: str = "account-main") -> Record:
    envelope = {"type": type_, "data": data, "ts_ns": ts_ns, "command_id": f"c{position}", "actor": "tester"}
    return Record(position, stream, position, type_, envelope, b"")


def test_the_four_models_are_registered_with_their_tables() -> None:
    assert registry.names()[-4:] == ("truth", "breaker", "budget", "venue_quality")
    tables = {t.name for p in registry.PROJECTIONS for t in p.tables}
    assert {"rm_truth", "rm_truth_history", "rm_breaker", "rm_breaker_transitions", "rm_budget", "rm_venue_quality"} <= tables


def test_truth_keeps_each_venues_latest_snapshot_and_every_snapshot(trading, rows_of):
    session = trading()
    session.truth()
    session.place("b1")
    session.truth()
    records = session.records()
    snapshots = [r for r in records if r.type == "truth.snapshot_recorded.v1"]

    model = rows_of(truth.PROJECTION, records)

    [latest] = model["rm_truth"]
    last = snapshots[-1]
    assert (latest["account_id"], latest["venue"]) == (ACCOUNT, "paper")
    assert latest["score"] == view_of(session)["truth"]["paper"]["score"] == last.envelope["data"]["score"]
    assert latest["ts_ns"] == view_of(session)["truth"]["paper"]["ts_ns"]
    assert latest["components"] == last.envelope["data"]["components"]
    assert latest["components"][0]["component"] == "position_drift"
    assert Decimal(latest["equity"]) == Decimal(view_of(session)["equity"])
    assert latest["position"] == last.position
    history = model["rm_truth_history"]
    assert [row["position"] for row in history] == [r.position for r in snapshots]
    assert all(row["venue"] == "paper" and 0 <= row["score"] <= 100 for row in history)


def test_breaker_state_and_transitions_are_what_titan_state_shows(trading, rows_of):
    session = trading()
    assert rows_of(breaker.PROJECTION, session.records())["rm_breaker"] == []  # never moved: no row
    session.handle(wire.Halt(**session._common("halt"), reason="operator test"))
    session.handle(wire.Resume(**session._common("resume"), reason="all clear"))
    records = session.records()

    model = rows_of(breaker.PROJECTION, records)

    [row] = model["rm_breaker"]
    state = view_of(session)["breaker"]
    assert (row["account_id"], row["state"], row["since_ts_ns"]) == (ACCOUNT, state["state"], state["since_ts_ns"])
    history = breaker_history(session.ledger.read_stream("account-main"))
    assert len(history) >= 2 and history[0]["trigger"] == "operator"
    assert [
        {**{k: t[k] for k in ("position", "from_state", "to_state", "trigger", "reason", "actor", "ts_ns")}, "values": t["trigger_values"]}
        for t in model["rm_breaker_transitions"]
    ] == [{k: h[k] for k in ("position", "from_state", "to_state", "trigger", "reason", "actor", "ts_ns", "values")} for h in history]
    assert row["trigger"] == history[-1]["trigger"] and row["position"] == history[-1]["position"]
    assert model["rm_breaker_transitions"][0]["reason"] == "operator test"


def test_budget_days_roll_and_hold_realized_pnl_net_of_fees(trading, rows_of):
    session = trading()
    session.place("b1", quantity="0.010", price="65000.0")
    session.fill("ord-b1", "f1", "0.010", "65000.0", fee="0.01")
    session.place("s1", side="SELL", quantity="0.010", price="65100.0")
    session.fill("ord-s1", "f2", "0.010", "65100.0", fee="0.02")  # realizes 1.0
    first_day = budget.day_of(session.now)
    session.now += NS_PER_DAY  # the next command rolls the day
    session.place("b2", quantity="0.010", price="65000.0")
    session.fill("ord-b2", "f3", "0.010", "65000.0", fee="0.05")
    records = session.records()

    rows = rows_of(budget.PROJECTION, records)["rm_budget"]

    assert [row["day"] for row in rows] == [first_day, first_day + 1]
    closed, today = rows
    assert (closed["pnl_money"], closed["realized_pnl_money"], closed["fees_money"], closed["fills"]) == (97_000_000, 100_000_000, 3_000_000, 2)
    assert Decimal(closed["closed_day_pnl"]) == Decimal("0.97")  # what the roll recorded equals the fold's sum
    rolls = [r for r in records if r.type == "budget.day_rolled.v1"]
    assert closed["opened_position"] == rolls[0].position and closed["closed_position"] == rolls[1].position
    assert closed["date"] == "2026-01-01" and today["date"] == "2026-01-02"
    assert (today["pnl_money"], today["fills"], today["closed_day_pnl"]) == (-5_000_000, 1, None)
    budget_view = view_of(session)["budget"]
    assert budget_view["day"] == today["day"]
    assert Decimal(budget_view["day_pnl"]) == Decimal(today["pnl_money"]).scaleb(-8)


def test_a_fill_on_a_day_never_rolled_is_not_counted():
    fill = record(3, "order.filled.v1", {"realized_pnl": "-1.5", "fee": "0.25"}, ts_ns=7 * NS_PER_DAY + 1)
    [patch] = budget.fold_record(fill)
    assert patch == Patch("rm_budget", ("main", 7), add={"pnl_money": -175_000_000, "realized_pnl_money": -150_000_000, "fees_money": 25_000_000, "fills": 1})
    from tests.projections_support import fold_rows

    assert fold_rows(budget.PROJECTION, [fill, record(4, "command.recorded.v1", {"command": {}})])["rm_budget"] == []


def test_money_units_are_exact():
    assert budget.money_units("0") == 0
    assert budget.money_units("-0.00000001") == -1
    assert budget.money_units("123.45") == 12_345_000_000
    try:
        budget.money_units("0.000000001")
    except ValueError as error:
        assert "8 decimals" in str(error)
    else:
        raise AssertionError("a ninth decimal must be refused")


def test_venue_quality_keeps_the_last_transition_per_venue():
    changed = {"venue": "paper", "from_status": "OK", "to_status": "DEGRADED", "mean_slippage_bps": 3, "mean_ack_latency_ms": 251, "samples": 20}
    back = {**changed, "from_status": "DEGRADED", "to_status": "OK", "mean_ack_latency_ms": 40, "samples": 21}
    other = {**changed, "venue": "binance"}
    records = [
        record(1, "venue.status_changed.v1", changed, ts_ns=10),
        record(2, "venue.status_changed.v1", other, ts_ns=20),
        record(3, "venue.status_changed.v1", back, ts_ns=30),
        record(4, "order.filled.v1", {}, ts_ns=40),
    ]
    changes = [c for r in records for c in venue_quality.fold_record(r)]
    assert all(isinstance(c, Put) for c in changes) and len(changes) == 3
    from tests.projections_support import fold_rows

    rows = fold_rows(venue_quality.PROJECTION, [*records, record(5, "command.recorded.v1", {"command": {}})])["rm_venue_quality"]
    assert [(r["venue"], r["status"], r["from_status"], r["mean_ack_latency_ms"], r["samples"], r["since_ts_ns"], r["position"]) for r in rows] == [
        ("binance", "DEGRADED", "OK", 251, 20, 20, 2),
        ("paper", "OK", "DEGRADED", 40, 21, 30, 3),
    ]


def test_the_brain_folds_ignore_other_records():
    other = record(1, "order.accepted.v1", {"venue": "paper"})
    assert truth.fold_record(other) == breaker.fold_record(other) == venue_quality.fold_record(other) == []
    assert budget.fold_record(record(2, "regime.changed.v1", {})) == []
