"""Each projection's fold as given(commands) / when(folded) / then(rows)."""

from __future__ import annotations

from decimal import Decimal

from commands.views import state_view
from projections import commands, decisions, dlq, orders, positions
from projections.model import Put

ACCOUNT = "main"

POSITION_FIELDS = ("venue", "symbol", "quantity", "avg_price", "cost", "realized_pnl", "fees", "mark_price")


def test_positions_are_the_positions_titan_state_shows(trading, rows_of):
    session = trading()
    session.place("b1", quantity="0.030", price="65000.0")
    session.ack("ord-b1")
    session.fill("ord-b1", "f1", "0.020", "65000.0")
    session.fill("ord-b1", "f2", "0.010", "64990.0")
    session.place("s1", side="SELL", quantity="0.010", price="65100.0")
    session.fill("ord-s1", "f3", "0.010", "65100.0")
    session.place("b2", quantity="0.010", price="65050.0")  # an accepted order moves the mark

    rows = rows_of(positions.PROJECTION, session.records())["rm_positions"]

    expected = state_view(session.bus.ctx.core, session.bus.state(ACCOUNT))["positions"]
    assert [{k: row[k] for k in POSITION_FIELDS} for row in rows] == [{k: p[k] for k in POSITION_FIELDS} for p in expected]
    assert rows[0]["account_id"] == ACCOUNT
    assert rows[0]["mark_price"] == "65050.0"
    assert rows[0]["last_fill_id"] == "f3"


def test_an_accepted_order_without_a_fill_makes_no_position(trading, rows_of):
    session = trading()
    session.place("b1")
    assert rows_of(positions.PROJECTION, session.records())["rm_positions"] == []


def test_an_order_row_follows_its_lifecycle(trading, rows_of):
    session = trading()
    session.place("o1", quantity="0.030")
    session.ack("ord-o1")
    session.fill("ord-o1", "f1", "0.010", "65000.0")
    session.cancel("ord-o1")
    session.cancelled("ord-o1")
    records = session.records()

    [row] = rows_of(orders.PROJECTION, records)["rm_orders"]

    assert row["order_id"] == "ord-o1"
    assert row["command_id"] == "o1"
    assert (row["status"], row["filled_quantity"], row["fill_count"]) == ("CANCELLED", "0.010", 1)
    assert row["venue_order_id"] == "Vord-o1"
    assert row["cancel_requested"] is True
    assert row["venue_reason"] == "expired"
    assert row["reason"] is None
    assert Decimal(row["notional"]) == 1950
    assert row["created_ts_ns"] < row["acknowledged_ts_ns"] < row["closed_ts_ns"] == row["updated_ts_ns"]
    assert row["updated_position"] == max(r.position for r in records if r.type == "order.cancelled.v1")


def test_a_refused_order_has_a_row_with_its_reason(trading, rows_of):
    session = trading()
    outcome = session.place("bad", price="65000.05")  # off the 0.1 tick
    assert outcome.outcome == "rejected"

    [row] = rows_of(orders.PROJECTION, session.records())["rm_orders"]

    assert (row["status"], row["reason"]) == ("REJECTED", outcome.reason)
    assert row["notional"] is None
    assert row["price"] == "65000.05"


def test_a_venue_rejected_order_is_closed(trading, rows_of):
    session = trading()
    session.place("o1")
    session.venue_reject("ord-o1")
    [row] = rows_of(orders.PROJECTION, session.records())["rm_orders"]
    assert (row["status"], row["venue_reason"]) == ("VENUE_REJECTED", "margin")
    assert row["closed_ts_ns"] is not None


def test_open_orders_match_titan_state(trading, rows_of):
    session = trading()
    session.place("o1", quantity="0.030")
    session.ack("ord-o1")
    session.fill("ord-o1", "f1", "0.010", "65000.0")
    session.place("o2", side="SELL", price="65010.0")
    session.cancel("ord-o2")
    session.place("o3")
    session.fill("ord-o3", "f2", "0.010", "65000.0")

    rows = rows_of(orders.PROJECTION, session.records())["rm_orders"]

    fields = ("order_id", "client_order_id", "venue", "symbol", "side", "order_type", "status", "price",
              "quantity", "filled_quantity", "reduce_only", "cancel_requested", "phase_id", "intent_id")
    open_rows = [{k: row[k] for k in fields} for row in rows if row["closed_ts_ns"] is None]
    expected = state_view(session.bus.ctx.core, session.bus.state(ACCOUNT))["open_orders"]
    assert open_rows == [{k: o[k] for k in fields} for o in expected]


def test_a_decision_row_holds_the_checks_and_the_positions_of_its_records(trading, rows_of):
    session = trading()
    session.place("o1")
    refusal = session.place("o2", price="65000.05")
    records = session.records()

    rows = {row["order_id"]: row for row in rows_of(decisions.PROJECTION, records)["rm_decisions"]}

    accepted = next(r for r in records if r.type == "order.accepted.v1")
    command_record = next(r for r in records if r.stream_id == "command-o1")
    row = rows["ord-o1"]
    assert row["outcome"] == "accepted" and row["reason"] is None
    assert row["checks"] == accepted.envelope["data"]["checks"]
    assert all(check["verdict"] == "pass" for check in row["checks"])
    assert row["event_position"] == accepted.position
    assert row["event_positions"] == [r.position for r in records if r.envelope["command_id"] == "o1" and r.stream_id.startswith("account-")]
    assert row["command_position"] == command_record.position
    assert row["command_type"] == "place_order.v1"
    assert (row["actor"], row["phase_id"], row["intent_id"], row["correlation_id"]) == ("tester", 1, "intent-o1", "corr-o1")
    assert row["policy_hash"] == session.policy_hash
    assert row["ts_ns"] == accepted.envelope["ts_ns"]

    refused = rows["ord-o2"]
    assert refused["outcome"] == "rejected"
    assert refused["reason"] == refusal.reason is not None
    assert refused["checks"][-1]["verdict"] == "fail"


def test_a_decision_needs_the_whole_command(trading):
    session = trading()
    session.place("o1")
    records = [r for r in session.records() if r.envelope["command_id"] == "o1"]
    assert decisions.fold(records[:-1])[0].row["command_position"] is None  # type: ignore[union-attr]
    assert decisions.fold(records)[0].row["command_position"] == records[-1].position  # type: ignore[union-attr]


def test_every_command_record_makes_a_command_row(trading, rows_of):
    session = trading()
    session.place("o1")
    session.ack("ord-o1")
    session.ack("ord-o1")  # refused: a second ack
    records = session.records()

    rows = rows_of(commands.PROJECTION, records)["rm_commands"]

    command_records = [r for r in records if r.type == "command.recorded.v1"]
    assert [row["command_id"] for row in rows] == sorted(r.envelope["command_id"] for r in command_records)
    by_id = {row["command_id"]: row for row in rows}
    assert by_id["o1"]["command_type"] == "place_order.v1"
    assert by_id["o1"]["outcome"] == "accepted"
    refused = [row for row in rows if row["outcome"] == "rejected"]
    assert len(refused) == 1 and refused[0]["command_type"] == "record_order_ack.v1" and refused[0]["reason"]
    for record in command_records:
        row = by_id[record.envelope["command_id"]]
        assert row["position"] == record.position
        assert row["account_id"] == ACCOUNT
        assert row["event_ids"] == record.envelope["data"]["event_ids"]


def test_the_ledger_feeds_the_dlq_projection_only_its_purges(trading, rows_of):
    session = trading()
    session.place("o1")
    # rm_dlq itself is fed from TITAN_DLQ (adapters/nats/dlq.py DlqFeed), not from the ledger.
    assert rows_of(dlq.PROJECTION, session.records()) == {"rm_dlq_purges": []}


def test_a_dlq_entry_becomes_a_row_and_unknown_fields_are_named():
    entry = {
        "entry_id": "msg-1",
        "subject": "titan.cmd.main.place_order",
        "headers": {"Nats-Msg-Id": "msg-1"},
        "payload": "{}",
        "reason": "SCHEMA_INVALID",
        "error": "missing field",
        "delivery_count": 1,
        "first_seen_ns": 1,
        "last_seen_ns": 1,
    }
    assert dlq.entry_put(entry) == Put("rm_dlq", entry)
    try:
        dlq.entry_put({**entry, "colour": "red"})
    except ValueError as error:
        assert "colour" in str(error)
    else:
        raise AssertionError("an unknown field must be refused")


def test_folds_ignore_record_types_they_do_not_know(trading):
    session = trading()
    session.place("o1")
    record = session.records()[-2]
    stranger = type(record)(record.position, record.stream_id, record.version, "breaker.transitioned.v1",
                            {**record.envelope, "type": "breaker.transitioned.v1", "data": {}}, b"")
    for fold in (positions.fold_record, orders.fold_record, commands.fold_record, dlq.fold_record):
        assert fold(stranger) == []
