"""Order lifecycle, positions, policy and mode; and that every recorded event decodes to itself.

Money is in units of 1e-8 USDT. BTCUSDT prices have 1 decimal and quantities 3, so one price
unit times one quantity unit is 1e-4 USDT = 10_000 money units.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

FILLED = "order.filled.v1"
REJECTED = "command.rejected.v1"
USDT = 100_000_000  # money units


def rejection(command_type: str, reason: str, **detail: str) -> tuple[str, dict[str, Any]]:
    return (REJECTED, {"command_type": command_type, "reason": reason, "detail": detail})


def only_data(events: list[Any], type_name: str) -> dict[str, Any]:
    assert [event.type_name() for event in events] == [type_name]
    data: dict[str, Any] = events[0].to_data()
    return data


def open_order(view: Any, state: Any, order_id: str) -> dict[str, Any]:
    matching: list[dict[str, Any]] = [
        order for order in view(state)["open_orders"] if order["order_id"] == order_id
    ]
    assert len(matching) == 1, f"{order_id} is not open"
    return matching[0]


def position(view: Any, state: Any) -> dict[str, Any]:
    held: list[dict[str, Any]] = view(state)["positions"]
    assert len(held) == 1
    return held[0]


# --- the lifecycle ----------------------------------------------------------------------------


def test_accepted_acknowledged_partially_filled_filled(given, when, then, view, cmd):
    accepted = given(cmd.activate(), cmd.place("o1", ts_ns=1_000_000))
    assert open_order(view, accepted, "ord-o1")["status"] == "ACCEPTED"

    ack = when(accepted, cmd.ack("ord-o1", ts_ns=13_345_678))
    assert then(ack) == [
        (
            "order.acknowledged.v1",
            {"order_id": "ord-o1", "venue_order_id": "v-ord-o1", "ack_latency_ms": 12},
        )
    ]
    acknowledged = given(*ack, state=accepted)
    assert open_order(view, acknowledged, "ord-o1")["status"] == "ACKNOWLEDGED"

    first = when(
        acknowledged, cmd.fill("ord-o1", "f1", "0.040", "65000.0", fee="0.52", ts_ns=20_000_000)
    )
    assert then(first) == [
        (
            FILLED,
            {
                "order_id": "ord-o1",
                "fill_id": "f1",
                "venue": "paper",
                "symbol": "BTCUSDT",
                "side": "BUY",
                "quantity": "0.040",
                "price": "65000.0",
                "fee": "0.52",
                "liquidity": "TAKER",
                "status": "PARTIALLY_FILLED",
                "filled_quantity": "0.040",
                "remaining_quantity": "0.060",
                "realized_pnl": "0",
                "position": {
                    "quantity": "0.040",
                    "avg_price": "65000",
                    "cost": "2600",
                    "realized_pnl": "0",
                    "fees": "0.52",
                },
            },
        )
    ]
    partially_filled = given(*first, state=acknowledged)
    assert open_order(view, partially_filled, "ord-o1")["status"] == "PARTIALLY_FILLED"
    assert open_order(view, partially_filled, "ord-o1")["filled_quantity"] == "0.040"

    last = when(
        partially_filled, cmd.fill("ord-o1", "f2", "0.060", "65000.0", fee="0.78", ts_ns=30_000_000)
    )
    data = only_data(last, FILLED)
    assert (data["status"], data["filled_quantity"], data["remaining_quantity"]) == (
        "FILLED",
        "0.100",
        "0.000",
    )
    assert data["position"] == {
        "quantity": "0.100",
        "avg_price": "65000",
        "cost": "6500",
        "realized_pnl": "0",
        "fees": "1.3",
    }
    filled = given(*last, state=partially_filled)
    assert view(filled)["open_orders"] == []
    assert view(filled)["closed_orders"] == [("ord-o1", "FILLED", ["f1", "f2"])]
    assert position(view, filled)["quantity"] == "0.100"
    assert position(view, filled)["mark_price"] == "65000.0"


def test_accepted_straight_to_filled(given, when, view, cmd):
    state = given(cmd.activate(), cmd.place("o1"))

    events = when(state, cmd.fill("ord-o1", "f1", "0.100", "65000.0"))

    data = only_data(events, FILLED)
    assert (data["status"], data["filled_quantity"], data["remaining_quantity"]) == (
        "FILLED",
        "0.100",
        "0.000",
    )
    assert view(given(*events, state=state))["open_orders"] == []


def test_cancel_request_then_cancelled(given, when, then, view, cmd):
    state = given(
        cmd.activate(),
        cmd.place("o1"),
        cmd.ack("ord-o1"),
        cmd.fill("ord-o1", "f1", "0.040", "65000.0"),
    )

    requested = when(state, cmd.cancel("ord-o1", reason="operator"))
    assert then(requested) == [
        ("order.cancel_requested.v1", {"order_id": "ord-o1", "reason": "operator"})
    ]
    state = given(*requested, state=state)
    order = open_order(view, state, "ord-o1")
    assert (order["status"], order["cancel_requested"]) == ("PARTIALLY_FILLED", True)

    cancelled = when(state, cmd.cancelled("ord-o1", venue_reason="user cancel"))
    assert then(cancelled) == [
        (
            "order.cancelled.v1",
            {"order_id": "ord-o1", "venue_reason": "user cancel", "filled_quantity": "0.040"},
        )
    ]
    state = given(*cancelled, state=state)
    assert view(state)["open_orders"] == []
    assert view(state)["closed_orders"] == [("ord-o1", "CANCELLED", ["f1"])]
    assert position(view, state)["quantity"] == "0.040"  # what filled stays filled


def test_the_venue_may_cancel_an_order_nobody_asked_to_cancel(given, when, then, cmd):
    state = given(cmd.activate(), cmd.place("o1"), cmd.ack("ord-o1"))

    events = when(state, cmd.cancelled("ord-o1", venue_reason="expired"))

    assert then(events) == [
        (
            "order.cancelled.v1",
            {"order_id": "ord-o1", "venue_reason": "expired", "filled_quantity": "0.000"},
        )
    ]


def test_cancel_already_requested(given, when, then, cmd):
    state = given(cmd.activate(), cmd.place("o1"), cmd.ack("ord-o1"), cmd.cancel("ord-o1"))

    events = when(state, cmd.cancel("ord-o1"))

    assert then(events) == [
        rejection(
            "CancelOrder", "CANCEL_ALREADY_REQUESTED", order_id="ord-o1", status="ACKNOWLEDGED"
        )
    ]


def test_venue_reject_before_ack_closes_the_order(given, when, then, view, cmd):
    state = given(cmd.activate(), cmd.place("o1"))

    events = when(state, cmd.venue_reject("ord-o1", venue_reason="insufficient margin"))

    assert then(events) == [
        ("order.venue_rejected.v1", {"order_id": "ord-o1", "venue_reason": "insufficient margin"})
    ]
    state = given(*events, state=state)
    assert view(state)["open_orders"] == []
    assert view(state)["closed_orders"] == [("ord-o1", "VENUE_REJECTED", [])]
    assert then(when(state, cmd.ack("ord-o1"))) == [
        rejection("RecordOrderAck", "ORDER_CLOSED", order_id="ord-o1", status="VENUE_REJECTED")
    ]


def test_acknowledging_twice_is_an_invalid_transition(given, when, then, cmd):
    state = given(cmd.activate(), cmd.place("o1"), cmd.ack("ord-o1"))

    events = when(state, cmd.ack("ord-o1"))

    assert then(events) == [
        rejection("RecordOrderAck", "INVALID_TRANSITION", order_id="ord-o1", status="ACKNOWLEDGED")
    ]


def test_a_venue_reject_after_ack_is_an_invalid_transition(given, when, then, cmd):
    state = given(cmd.activate(), cmd.place("o1"), cmd.ack("ord-o1"))

    events = when(state, cmd.venue_reject("ord-o1"))

    assert then(events) == [
        rejection(
            "RecordVenueReject", "INVALID_TRANSITION", order_id="ord-o1", status="ACKNOWLEDGED"
        )
    ]


def test_a_fill_on_a_cancelled_order_is_refused(given, when, then, cmd):
    state = given(cmd.activate(), cmd.place("o1"), cmd.cancel("ord-o1"), cmd.cancelled("ord-o1"))

    events = when(state, cmd.fill("ord-o1", "f1"))

    assert then(events) == [
        rejection("RecordFill", "ORDER_CLOSED", order_id="ord-o1", status="CANCELLED")
    ]


def test_a_fill_on_an_unknown_order_is_refused(given, when, then, cmd):
    state = given(cmd.activate())

    events = when(state, cmd.fill("ord-nope", "f1"))

    assert then(events) == [rejection("RecordFill", "UNKNOWN_ORDER", order_id="ord-nope")]


def test_a_duplicate_fill_on_an_open_order_is_refused(given, when, then, cmd):
    state = given(cmd.activate(), cmd.place("o1"), cmd.fill("ord-o1", "f1", "0.040", "65000.0"))

    events = when(state, cmd.fill("ord-o1", "f1", "0.040", "65000.0"))

    assert then(events) == [
        rejection(
            "RecordFill",
            "DUPLICATE_FILL",
            fill_id="f1",
            order_id="ord-o1",
            status="PARTIALLY_FILLED",
        )
    ]


def test_a_duplicate_fill_on_a_filled_order_is_refused(given, when, then, cmd):
    state = given(cmd.activate(), cmd.place("o1"), cmd.fill("ord-o1", "f1", "0.100", "65000.0"))

    assert then(when(state, cmd.fill("ord-o1", "f1", "0.100", "65000.0"))) == [
        rejection("RecordFill", "DUPLICATE_FILL", fill_id="f1", order_id="ord-o1", status="FILLED")
    ]
    # a new fill id on the same filled order is not a duplicate: the order is closed
    assert then(when(state, cmd.fill("ord-o1", "f2", "0.100", "65000.0"))) == [
        rejection("RecordFill", "ORDER_CLOSED", order_id="ord-o1", status="FILLED")
    ]


def test_an_overfill_is_refused(given, when, then, cmd):
    state = given(cmd.activate(), cmd.place("o1"), cmd.fill("ord-o1", "f1", "0.040", "65000.0"))

    events = when(state, cmd.fill("ord-o1", "f2", "0.061", "65000.0"))

    assert then(events) == [
        rejection(
            "RecordFill",
            "OVERFILL",
            fill_id="f2",
            order_id="ord-o1",
            quantity="0.061",
            remaining_quantity="0.060",
        )
    ]


@pytest.mark.parametrize(
    ("field", "value", "accepted"),
    [
        ("price", "65000.05", "a positive multiple of 0.1"),
        ("price", "0", "a positive multiple of 0.1"),
        ("quantity", "0.0005", "a positive multiple of 0.001"),
        ("quantity", "0", "a positive multiple of 0.001"),
        ("quantity", "-0.010", "a positive multiple of 0.001"),
        ("fee", "0.000000001", "a decimal with at most 8 decimals"),
        ("quantity", "abc", "a positive multiple of 0.001"),
    ],
)
def test_an_invalid_fill_is_refused(given, when, then, cmd, field, value, accepted):
    state = given(cmd.activate(), cmd.place("o1"))

    events = when(state, cmd.fill("ord-o1", "f1", **{field: value}))  # the rest: 0.100 at 65000.0

    assert then(events) == [
        rejection(
            "RecordFill",
            "INVALID_FILL",
            accepted=accepted,
            field=field,
            fill_id="f1",
            order_id="ord-o1",
            value=value,
        )
    ]


def test_a_fill_on_a_coarse_step_instrument_must_be_a_multiple_of_the_step(given, when, then, cmd):
    state = given(cmd.activate(), cmd.place("s1", symbol="SOLUSDT", quantity="2.0", price="150.00"))

    events = when(state, cmd.fill("ord-s1", "f1", "1.2", "150.00"))

    assert then(events) == [
        rejection(
            "RecordFill",
            "INVALID_FILL",
            accepted="a positive multiple of 0.5",
            field="quantity",
            fill_id="f1",
            order_id="ord-s1",
            value="1.2",
        )
    ]


# --- refusals change nothing --------------------------------------------------------------------

REFUSALS = {
    "duplicate fill": (lambda cmd: cmd.fill("ord-o1", "f1", "0.040", "65000.0"), "DUPLICATE_FILL"),
    "overfill": (lambda cmd: cmd.fill("ord-o1", "f2", "0.061", "65000.0"), "OVERFILL"),
    "fill off tick": (lambda cmd: cmd.fill("ord-o1", "f2", "0.010", "65000.05"), "INVALID_FILL"),
    "fill on a cancelled order": (lambda cmd: cmd.fill("ord-o2", "f9"), "ORDER_CLOSED"),
    "fill on an unknown order": (lambda cmd: cmd.fill("ord-nope", "f9"), "UNKNOWN_ORDER"),
    "second ack": (lambda cmd: cmd.ack("ord-o1"), "INVALID_TRANSITION"),
    "venue reject after ack": (lambda cmd: cmd.venue_reject("ord-o1"), "INVALID_TRANSITION"),
    "cancel of a closed order": (lambda cmd: cmd.cancel("ord-o2"), "ORDER_CLOSED"),
    "cancelled of an unknown order": (lambda cmd: cmd.cancelled("ord-nope"), "UNKNOWN_ORDER"),
    "same policy again": (lambda cmd: cmd.activate(), "POLICY_ALREADY_ACTIVE"),
    "disarm while disarmed": (lambda cmd: cmd.disarm(), "MODE_UNCHANGED"),
    "policy rescaling a held instrument": (
        lambda cmd: cmd.activate("policy-B", instruments={"paper:BTCUSDT": {"step_size": "0.01"}}),
        "POLICY_SCALE_CHANGE",
    ),
    "order with a stale hash": (
        lambda cmd: cmd.place("o3", policy_hash="policy-old"),
        "POLICY_HASH_MISMATCH",
    ),
    "order over a limit": (lambda cmd: cmd.place("o3", quantity="2.001"), "MAX_ORDER_QTY"),
    "stale fill": (
        lambda cmd: cmd.fill("ord-o1", "f2", "0.010", "65000.0", ts_ns=999),
        "STALE_COMMAND",
    ),
    "stale order": (lambda cmd: cmd.place("o3", ts_ns=999), "STALE_COMMAND"),
}


@pytest.mark.parametrize("refusal", list(REFUSALS))
def test_a_refusal_leaves_the_state_unchanged(core, given, when, view, cmd, refusal):
    build: Any = REFUSALS[refusal][0]
    reason = REFUSALS[refusal][1]
    before = given(
        cmd.activate(),
        cmd.place("o1"),
        cmd.ack("ord-o1"),
        cmd.fill("ord-o1", "f1", "0.040", "65000.0"),
        cmd.place("o2", side="SELL", price="65100.0"),
        cmd.cancel("ord-o2"),
        cmd.cancelled("ord-o2", ts_ns=1_000),
    )
    cmd.now_ns = 1_000  # the refusal comes at the last decided time, so not even time moves

    events = when(before, build(cmd))

    assert core.decider.refusal_reason(events) == reason
    after = given(*events, state=before)
    assert view(after) == view(before)
    assert after.open_orders == before.open_orders  # the very same Order values
    assert after.positions == before.positions


# --- positions ----------------------------------------------------------------------------------


def buy_and_fill(cmd: Any, name: str, quantity: str, price: str, fee: str = "0") -> list[Any]:
    return [
        cmd.place(name, quantity=quantity, price=price),
        cmd.fill(f"ord-{name}", f"f-{name}", quantity, price, fee=fee),
    ]


def sell(cmd: Any, name: str, quantity: str, price: str) -> Any:
    return cmd.place(name, side="SELL", quantity=quantity, price=price)


def test_a_partial_close_realizes_exact_pnl(given, when, view, cmd):
    state = given(
        cmd.activate(),
        *buy_and_fill(cmd, "b1", "0.500", "65000.0"),
        sell(cmd, "s1", "0.200", "66000.0"),
    )

    events = when(state, cmd.fill("ord-s1", "f-s1", "0.200", "66000.0"))

    # 0.2 BTC bought at 65000.0 and sold at 66000.0: 0.2 * 1000 = 200 USDT
    [filled] = events
    assert filled.realized_pnl_money == 20_000_000_000
    # the 0.3 BTC left keep their cost: 0.3 * 65000 = 19500 USDT
    assert (filled.position.qty_units, filled.position.cost_money) == (300, 1_950_000_000_000)
    assert filled.position.realized_pnl_money == 20_000_000_000
    data = only_data(events, FILLED)
    assert data["realized_pnl"] == "200"
    assert data["position"] == {
        "quantity": "0.300",
        "avg_price": "65000",
        "cost": "19500",
        "realized_pnl": "200",
        "fees": "0",
    }
    assert position(view, given(*events, state=state))["quantity"] == "0.300"


def test_selling_more_than_held_flips_the_position_at_the_fill_price(given, when, cmd):
    state = given(
        cmd.activate(),
        *buy_and_fill(cmd, "b1", "0.100", "65000.0"),
        sell(cmd, "s1", "0.300", "66000.0"),
    )

    events = when(state, cmd.fill("ord-s1", "f-s1", "0.300", "66000.0"))

    # closes 0.1 at +1000 (100 USDT); opens a 0.2 short at 66000.0 (cost -13200 USDT)
    [filled] = events
    assert filled.realized_pnl_money == 10_000_000_000
    assert (filled.position.qty_units, filled.position.cost_money) == (-200, -1_320_000_000_000)
    assert only_data(events, FILLED)["position"] == {
        "quantity": "-0.200",
        "avg_price": "66000",
        "cost": "-13200",
        "realized_pnl": "100",
        "fees": "0",
    }


def test_covering_part_of_a_short_below_its_entry_realizes_a_profit(given, when, cmd):
    state = given(
        cmd.activate(),
        sell(cmd, "s1", "0.200", "66000.0"),
        cmd.fill("ord-s1", "f-s1", "0.200", "66000.0"),
        cmd.place("b1", quantity="0.100", price="65500.0"),
    )

    events = when(state, cmd.fill("ord-b1", "f-b1", "0.100", "65500.0"))

    # 0.1 short from 66000.0 bought back at 65500.0: 0.1 * 500 = 50 USDT
    [filled] = events
    assert filled.realized_pnl_money == 5_000_000_000
    assert (filled.position.qty_units, filled.position.cost_money) == (-100, -660_000_000_000)


def test_average_price_of_a_long_built_in_two_fills(given, cmd, view):
    state = given(
        cmd.activate(),
        *buy_and_fill(cmd, "b1", "0.100", "65000.0"),
        *buy_and_fill(cmd, "b2", "0.300", "66000.0"),
    )

    # (6500 + 19800) / 0.4 = 65750
    held = position(view, state)
    assert (held["quantity"], held["cost"], held["avg_price"]) == ("0.400", "26300", "65750")


def test_an_average_price_that_does_not_divide_is_truncated_to_money_units(given, cmd, view):
    state = given(
        cmd.activate(),
        *buy_and_fill(cmd, "b1", "0.100", "65000.0"),
        *buy_and_fill(cmd, "b2", "0.200", "65000.1"),
    )

    # (6500 + 13000.02) / 0.3 = 65000.0666...
    held = position(view, state)
    assert (held["quantity"], held["cost"], held["avg_price"]) == (
        "0.300",
        "19500.02",
        "65000.06666666",
    )
    assert state.positions["paper:BTCUSDT"].cost_money == 1_950_002_000_000


def test_closing_in_parts_loses_no_money_unit_to_rounding(given, when, cmd):
    # 0.1 at 65000.0 and 0.2 at 65000.1: cost 19500.02 USDT = 1_950_002_000_000
    state = given(
        cmd.activate(),
        *buy_and_fill(cmd, "b1", "0.100", "65000.0"),
        *buy_and_fill(cmd, "b2", "0.200", "65000.1"),
        sell(cmd, "s1", "0.100", "65000.0"),
    )

    # a third of the cost, 650_000_666_666.67, truncated; sold for 650_000_000_000
    [first] = when(state, cmd.fill("ord-s1", "f-s1", "0.100", "65000.0"))
    assert first.realized_pnl_money == -666_666
    assert first.position.cost_money == 1_300_001_333_334

    state = given(first, sell(cmd, "s2", "0.200", "65000.0"), state=state)
    [second] = when(state, cmd.fill("ord-s2", "f-s2", "0.200", "65000.0"))
    assert second.realized_pnl_money == -1_333_334
    # the round trip lost exactly 0.2 * 0.1 = 0.02 USDT
    assert second.position.realized_pnl_money == -2_000_000
    assert (second.position.qty_units, second.position.cost_money) == (0, 0)
    assert second.to_data()["position"]["realized_pnl"] == "-0.02"


def test_fees_accumulate_on_the_position_and_stay_out_of_realized_pnl(given, when, cmd):
    state = given(
        cmd.activate(),
        *buy_and_fill(cmd, "b1", "0.100", "65000.0", fee="1.25"),
        sell(cmd, "s1", "0.100", "66000.0"),
    )

    events = when(state, cmd.fill("ord-s1", "f-s1", "0.100", "66000.0", fee="0.00000001"))

    [filled] = events
    assert filled.fee_money == 1
    assert filled.position.fees_money == 125_000_001
    assert filled.realized_pnl_money == 100 * USDT
    assert only_data(events, FILLED)["position"] == {
        "quantity": "0.000",
        "avg_price": "0",
        "cost": "0",
        "realized_pnl": "100",
        "fees": "1.25000001",
    }


# --- policy and mode -------------------------------------------------------------------------


def test_activate_policy(given, when, then, view, cmd):
    events = when(given(), cmd.activate())

    assert then(events) == [
        (
            "policy.activated.v1",
            {"policy_hash": "policy-A", "previous_policy_hash": None, "policy": cmd.document()},
        )
    ]
    state = given(*events)
    assert (view(state)["policy_id"], view(state)["policy_hash"]) == ("test-policy", "policy-A")


def test_activating_a_new_policy_replaces_the_hash_orders_must_carry(given, when, then, cmd):
    state = given(cmd.activate())
    events = when(state, cmd.activate("policy-B", max_open_orders=5))

    assert then(events) == [
        (
            "policy.activated.v1",
            {
                "policy_hash": "policy-B",
                "previous_policy_hash": "policy-A",
                "policy": cmd.document(max_open_orders=5),
            },
        )
    ]
    state = given(*events, state=state)
    stale = when(state, cmd.place("o1", policy_hash="policy-A"))
    assert stale[0].reason == "POLICY_HASH_MISMATCH"
    assert stale[0].to_data()["checks"] == [
        {"check": "policy_hash", "value": "policy-A", "limit": "policy-B", "verdict": "fail"}
    ]
    fresh = when(state, cmd.place("o1", policy_hash="policy-B"))
    assert fresh[0].type_name() == "order.accepted.v1"
    assert {"check": "open_orders", "value": "1", "limit": "5", "verdict": "pass"} in fresh[
        0
    ].to_data()["checks"]


def test_policy_already_active(given, when, then, cmd):
    state = given(cmd.activate())

    events = when(state, cmd.activate())

    assert then(events) == [
        rejection("ActivatePolicy", "POLICY_ALREADY_ACTIVE", policy_hash="policy-A")
    ]


@pytest.mark.parametrize(
    "holding",
    [
        lambda cmd: [cmd.place("o1")],
        lambda cmd: [cmd.place("o1"), cmd.fill("ord-o1", "f1", "0.100", "65000.0")],
    ],
    ids=["an open order", "a position"],
)
def test_a_new_policy_may_not_rescale_an_instrument_the_account_holds(
    given, when, then, cmd, holding
):
    state = given(cmd.activate(), *holding(cmd))

    events = when(
        state, cmd.activate("policy-B", instruments={"paper:BTCUSDT": {"tick_size": "0.01"}})
    )

    assert then(events) == [
        rejection(
            "ActivatePolicy",
            "POLICY_SCALE_CHANGE",
            instrument="paper:BTCUSDT",
            price_decimals="1 -> 2",
            qty_decimals="3 -> 3",
        )
    ]


def test_a_new_policy_may_rescale_an_instrument_the_account_does_not_hold(given, when, cmd):
    state = given(cmd.activate(), cmd.place("s1", symbol="SOLUSDT", quantity="1.0", price="150.00"))

    events = when(
        state,
        cmd.activate(
            "policy-B", instruments={"paper:BTCUSDT": {"tick_size": "0.01", "step_size": "0.0001"}}
        ),
    )

    assert [event.type_name() for event in events] == ["policy.activated.v1"]


def test_arm_then_disarm(given, when, then, view, cmd):
    state = given(cmd.activate())

    armed = when(state, cmd.arm(reason="go live"))
    assert then(armed) == [("account.armed.v1", {"previous_mode": "DISARMED", "reason": "go live"})]
    state = given(*armed, state=state)
    assert view(state)["mode"] == "ARMED"

    disarmed = when(state, cmd.disarm(reason="stand down"))
    assert then(disarmed) == [
        ("account.disarmed.v1", {"previous_mode": "ARMED", "reason": "stand down"})
    ]
    assert view(given(*disarmed, state=state))["mode"] == "DISARMED"


def test_mode_unchanged(given, when, then, cmd):
    disarmed = given(cmd.activate())
    assert then(when(disarmed, cmd.disarm())) == [
        rejection("Disarm", "MODE_UNCHANGED", mode="DISARMED")
    ]

    armed = given(cmd.arm(), state=disarmed)
    assert then(when(armed, cmd.arm())) == [rejection("Arm", "MODE_UNCHANGED", mode="ARMED")]


def test_arm_without_a_policy(given, when, then, cmd):
    events = when(given(), cmd.arm())

    assert then(events) == [rejection("Arm", "NO_ACTIVE_POLICY", mode="DISARMED")]


STALE = {
    "Arm": lambda cmd: cmd.arm(ts_ns=4_999),
    "Disarm": lambda cmd: cmd.disarm(ts_ns=4_999),
    "ActivatePolicy": lambda cmd: cmd.activate("policy-B", ts_ns=4_999),
    "CancelOrder": lambda cmd: cmd.cancel("ord-o1", ts_ns=4_999),
    "RecordOrderAck": lambda cmd: cmd.ack("ord-o1", ts_ns=4_999),
    "RecordVenueReject": lambda cmd: cmd.venue_reject("ord-o1", ts_ns=4_999),
    "RecordFill": lambda cmd: cmd.fill("ord-o1", "f1", ts_ns=4_999),
    "RecordCancelled": lambda cmd: cmd.cancelled("ord-o1", ts_ns=4_999),
}


@pytest.mark.parametrize("command_type", list(STALE))
def test_a_stale_command_is_rejected_at_the_last_decided_time(given, when, then, cmd, command_type):
    state = given(cmd.activate(), cmd.place("o1", ts_ns=5_000))

    events = when(state, STALE[command_type](cmd))

    assert events[0].ts_ns == 5_000
    assert then(events) == [
        rejection(command_type, "STALE_COMMAND", last_ts_ns="5000", ts_ns="4999")
    ]


# --- recorded events decode to themselves -------------------------------------------------------


SCENARIOS: dict[str, Callable[[Any], list[Any]]] = {
    "full lifecycle": lambda cmd: [
        cmd.activate(),
        cmd.place("o1", ts_ns=1_000_000),
        cmd.ack("ord-o1", ts_ns=13_345_678),
        cmd.fill("ord-o1", "f1", "0.040", "65000.0", fee="0.52", ts_ns=20_000_000),
        cmd.fill("ord-o1", "f2", "0.060", "65000.0", fee="0.78", ts_ns=30_000_000),
        cmd.place(
            "o2", side="SELL", quantity="0.100", price="66000.0", reduce_only=True, ts_ns=40_000_000
        ),
        cmd.fill("ord-o2", "f3", "0.100", "66000.0", ts_ns=50_000_000),
    ],
    "venue reject and transitions": lambda cmd: [
        cmd.activate(),
        cmd.place("o1"),
        cmd.venue_reject("ord-o1"),
        cmd.ack("ord-o1"),
        cmd.place("o2"),
        cmd.ack("ord-o2"),
        cmd.ack("ord-o2"),
        cmd.venue_reject("ord-o2"),
        cmd.cancel("ord-o2"),
        cmd.cancel("ord-o2"),
    ],
    "fill refusals": lambda cmd: [
        cmd.activate(),
        cmd.place("o1"),
        cmd.fill("ord-o1", "f1", "0.040", "65000.0"),
        cmd.fill("ord-o1", "f1", "0.040", "65000.0"),
        cmd.fill("ord-o1", "f2", "0.061", "65000.0"),
        cmd.fill("ord-o1", "f2", "0.010", "65000.05"),
        cmd.fill("ord-o1", "f2", "0.010", "65000.0", fee="0.000000001"),
        cmd.fill("ord-nope", "f9"),
        cmd.fill("ord-o1", "f2", "0.060", "65000.0"),
        cmd.fill("ord-o1", "f2", "0.060", "65000.0"),
        cmd.fill("ord-o1", "f3", "0.010", "65000.0"),
    ],
    "order rejections": lambda cmd: [
        cmd.place("o0"),
        cmd.activate(ts_ns=10, max_open_orders=1),
        cmd.place("o1", ts_ns=9),
        cmd.place("o1", policy_hash="policy-B", ts_ns=10),
        cmd.place("o1", symbol="DOGEUSDT", ts_ns=10),
        cmd.place("o1", venue="binance", ts_ns=10),
        cmd.place("o1", quantity="0", ts_ns=10),
        cmd.place("o1", quantity="0.0005", ts_ns=10),
        cmd.place("o1", price="0", ts_ns=10),
        cmd.place("o1", price="65000.05", reference_price="65000.0", ts_ns=10),
        cmd.place("o1", quantity="2.001", price="1000.0", ts_ns=10),
        cmd.place("o1", price="65975.1", reference_price="65000.0", ts_ns=10),
        cmd.place("o1", side="SELL", reduce_only=True, ts_ns=10),
        cmd.place("o1", order_type="MARKET", price="", reference_price="65000.0", ts_ns=10),
        cmd.place("o2", client_order_id="cl-o1", ts_ns=10),
    ],
    "positions": lambda cmd: [
        cmd.activate(),
        *buy_and_fill(cmd, "b1", "0.100", "65000.0", fee="1.25"),
        *buy_and_fill(cmd, "b2", "0.200", "65000.1"),
        sell(cmd, "s1", "0.500", "66000.0"),
        cmd.fill("ord-s1", "f-s1a", "0.100", "66000.0"),
        cmd.fill("ord-s1", "f-s1b", "0.400", "66000.0", fee="0.00000001"),
        cmd.place("x1", symbol="SOLUSDT", quantity="1.5", price="150.05"),
        cmd.fill("ord-x1", "f-x1", "1.5", "150.05"),
    ],
    "policy and mode": lambda cmd: [
        cmd.arm(),
        cmd.activate(),
        cmd.activate(),
        cmd.disarm(),
        cmd.arm(),
        cmd.arm(),
        cmd.activate("policy-B", max_open_orders=5),
        cmd.place("o1", venue="binance", policy_hash="policy-B"),
        cmd.activate("policy-C", instruments={"binance:BTCUSDT": {"tick_size": "0.01"}}),
        cmd.disarm(ts_ns=5),
        cmd.arm(ts_ns=4),
    ],
    "the brain": lambda cmd: [
        cmd.activate(brain=cmd.brain_sections(), ts_ns=0),
        cmd.snapshot(ts_ns=0),
        cmd.place("b1", ts_ns=0),
        cmd.ack("ord-b1", ts_ns=2_000_000_000),  # a 2 s ack: the venue's quality suffers
        cmd.fill("ord-b1", "f1", "0.100", "65000.0", ts_ns=2_000_000_000),
        cmd.regime("RISK_OFF", ts_ns=2_000_000_000),
        cmd.tail("BTCUSDT", "1.5", ts_ns=2_000_000_000),
        cmd.halt(ts_ns=2_000_000_000),
        cmd.flatten("fl", ts_ns=2_000_000_000),
        cmd.resume(ts_ns=86_400_000_000_000),  # the next UTC day: the budget rolls
        cmd.purge_dlq(ts_ns=86_400_000_000_000),  # an operator's DLQ purge, recorded
    ],
    "cancellation": lambda cmd: [
        cmd.activate(),
        cmd.place("o1"),
        cmd.ack("ord-o1"),
        cmd.fill("ord-o1", "f1", "0.040", "65000.0"),
        cmd.cancel("ord-o1"),
        cmd.cancelled("ord-o1"),
        cmd.fill("ord-o1", "f2", "0.010", "65000.0"),
    ],
}
SCENARIO_MARKS: dict[str, Any] = {}


@pytest.mark.parametrize(
    "name", [pytest.param(name, marks=SCENARIO_MARKS.get(name, ())) for name in SCENARIOS]
)
def test_every_recorded_event_decodes_to_the_same_event_and_state(core, decode, view, cmd, name):
    state = core.decider.initial_state("acct-test")
    for command in SCENARIOS[name](cmd):
        for event in core.decider.decide(command, state):
            decoded = decode(state, event)

            assert (decoded.type_name(), decoded.ts_ns, decoded.to_data()) == (
                event.type_name(),
                event.ts_ns,
                event.to_data(),
            )
            live = core.decider.evolve(state, event)
            assert view(core.decider.evolve(state, decoded)) == view(live)
            state = live


def test_the_decode_scenarios_cover_every_event_type(core, cmd):
    seen = set()
    for scenario in SCENARIOS.values():
        state = core.decider.initial_state("acct-test")
        for command in scenario(cmd):
            for event in core.decider.decide(command, state):
                seen.add(event.type_name())
                state = core.decider.evolve(state, event)

    assert seen == set(core.events.EVENT_TYPES)


def test_a_fill_after_a_replayed_cancellation_reports_the_order_cancelled(
    core, given, when, then, decode, cmd
):
    state = given(cmd.activate(), cmd.place("o1"), cmd.ack("ord-o1"))
    [cancelled] = when(state, cmd.cancelled("ord-o1"))
    replayed = given(decode(state, cancelled), state=state)

    events = when(replayed, cmd.fill("ord-o1", "f1"))

    assert then(events) == [
        rejection("RecordFill", "ORDER_CLOSED", order_id="ord-o1", status="CANCELLED")
    ]
