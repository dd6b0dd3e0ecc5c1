"""PlaceOrder: the pre-trade checks, one reason code at a time, on both cores.

The test policy (conftest) lists paper:BTCUSDT and binance:BTCUSDT (tick 0.1, step 0.001,
max order qty 2, max position notional 250000) and paper:SOLUSDT (tick 0.05, step 0.5); its
limits are max order notional 100000, collar 150 bps, gross exposure 500000, 10 orders and
20 messages per second, 20 open orders. BTCUSDT notional: 0.100 at 65000.0 is 6500 USDT.
"""

from __future__ import annotations

from typing import Any

import pytest

ACCEPTED = "order.accepted.v1"
REJECTED = "order.rejected.v1"
SECOND_NS = 1_000_000_000


def decided(events: list[Any]) -> dict[str, Any]:
    """The data of the one order event a PlaceOrder decides."""
    assert len(events) == 1
    assert events[0].type_name() in (ACCEPTED, REJECTED)
    data: dict[str, Any] = events[0].to_data()
    return data


def outcome(events: list[Any]) -> str:
    """ "accepted", or the reason the order was rejected."""
    data = decided(events)
    return "accepted" if events[0].type_name() == ACCEPTED else str(data["reason"])


def check(events: list[Any], name: str) -> tuple[str, str, str]:
    """(value, limit, verdict) of the named check, which must be recorded exactly once."""
    found = [c for c in decided(events)["checks"] if c["check"] == name]
    assert len(found) == 1, f"check {name!r} recorded {len(found)} times"
    return found[0]["value"], found[0]["limit"], found[0]["verdict"]


def check_names(events: list[Any]) -> list[str]:
    return [c["check"] for c in decided(events)["checks"]]


# --- acceptance -------------------------------------------------------------------------------


def test_an_order_within_every_limit_is_accepted_with_every_check_recorded_as_pass(
    given, when, then, cmd
):
    state = given(cmd.activate())

    events = when(state, cmd.place("o1", ts_ns=7))

    assert events[0].ts_ns == 7
    assert then(events) == [
        (
            ACCEPTED,
            {
                "order_id": "ord-o1",
                "client_order_id": "cl-o1",
                "venue": "paper",
                "symbol": "BTCUSDT",
                "side": "BUY",
                "order_type": "LIMIT",
                "quantity": "0.100",
                "price": "65000.0",
                "reference_price": "65000.0",
                "reduce_only": False,
                "phase_id": 1,
                "intent_id": "intent-o1",
                "notional": "6500",
                "checks": [
                    {
                        "check": "policy_hash",
                        "value": "policy-A",
                        "limit": "policy-A",
                        "verdict": "pass",
                    },
                    {
                        "check": "instrument",
                        "value": "paper:BTCUSDT",
                        "limit": "listed in policy test-policy",
                        "verdict": "pass",
                    },
                    {
                        "check": "mode",
                        "value": "DISARMED",
                        "limit": "ARMED, or venue paper",
                        "verdict": "pass",
                    },
                    {
                        "check": "quantity_step",
                        "value": "0.100",
                        "limit": "0.001",
                        "verdict": "pass",
                    },
                    {"check": "price_tick", "value": "65000.0", "limit": "0.1", "verdict": "pass"},
                    {
                        "check": "max_order_qty",
                        "value": "0.100",
                        "limit": "2.000",
                        "verdict": "pass",
                    },
                    {
                        "check": "max_order_notional",
                        "value": "6500",
                        "limit": "100000",
                        "verdict": "pass",
                    },
                    {"check": "price_collar_bps", "value": "0", "limit": "150", "verdict": "pass"},
                    {
                        "check": "max_position_notional",
                        "value": "6500",
                        "limit": "250000",
                        "verdict": "pass",
                    },
                    {
                        "check": "max_gross_exposure",
                        "value": "6500",
                        "limit": "500000",
                        "verdict": "pass",
                    },
                    {"check": "orders_per_second", "value": "1", "limit": "10", "verdict": "pass"},
                    {
                        "check": "messages_per_second",
                        "value": "1",
                        "limit": "20",
                        "verdict": "pass",
                    },
                    {"check": "open_orders", "value": "1", "limit": "20", "verdict": "pass"},
                    {
                        "check": "client_order_id",
                        "value": "cl-o1",
                        "limit": "unique among open orders",
                        "verdict": "pass",
                    },
                ],
            },
        )
    ]


def test_every_limit_check_is_recorded_and_the_first_failure_names_the_reason(given, when, cmd):
    state = given(cmd.activate(max_order_notional="1000"))

    # 2.001 BTC is over max_order_qty (checked first) and over max_order_notional (checked second)
    events = when(state, cmd.place("o1", quantity="2.001", price="1000.0"))

    assert outcome(events) == "MAX_ORDER_QTY"
    assert check(events, "max_order_qty") == ("2.001", "2.000", "fail")
    assert check(events, "max_order_notional") == ("2001", "1000", "fail")
    assert check_names(events)[-9:] == [
        "max_order_qty",
        "max_order_notional",
        "price_collar_bps",
        "max_position_notional",
        "max_gross_exposure",
        "orders_per_second",
        "messages_per_second",
        "open_orders",
        "client_order_id",
    ]


# --- structural checks: the decision stops at the first failure --------------------------------


def test_stale_command_is_rejected_and_stamped_with_the_last_decided_time(given, when, cmd):
    state = given(cmd.activate(ts_ns=2_000))

    events = when(state, cmd.place("o1", ts_ns=1_999))

    assert events[0].ts_ns == 2_000
    assert outcome(events) == "STALE_COMMAND"
    assert decided(events)["checks"] == [
        {"check": "command_time_ns", "value": "1999", "limit": ">= 2000", "verdict": "fail"}
    ]


def test_an_order_at_the_last_decided_time_is_not_stale(given, when, cmd):
    state = given(cmd.activate(ts_ns=2_000))

    assert outcome(when(state, cmd.place("o1", ts_ns=2_000))) == "accepted"


def test_no_active_policy(given, when, cmd):
    events = when(given(), cmd.place("o1"))

    assert outcome(events) == "NO_ACTIVE_POLICY"
    assert decided(events)["checks"] == [
        {"check": "policy_active", "value": "none", "limit": "an active policy", "verdict": "fail"}
    ]


def test_policy_hash_mismatch_records_both_hashes(given, when, cmd):
    state = given(cmd.activate())

    events = when(state, cmd.place("o1", policy_hash="policy-B"))

    assert outcome(events) == "POLICY_HASH_MISMATCH"
    assert check_names(events) == ["policy_hash"]
    assert check(events, "policy_hash") == ("policy-B", "policy-A", "fail")


@pytest.mark.parametrize(
    ("venue", "symbol"),
    [("paper", "DOGEUSDT"), ("bybit", "BTCUSDT"), ("binance", "SOLUSDT")],
    ids=["unknown symbol", "unknown venue", "symbol listed on another venue only"],
)
def test_symbol_not_allowed(given, when, cmd, venue, symbol):
    state = given(cmd.activate())

    events = when(state, cmd.place("o1", venue=venue, symbol=symbol))

    assert outcome(events) == "SYMBOL_NOT_ALLOWED"
    assert check_names(events) == ["policy_hash", "instrument"]
    assert check(events, "instrument") == (
        f"{venue}:{symbol}",
        "listed in policy test-policy",
        "fail",
    )


def test_account_disarmed_refuses_a_live_venue(given, when, cmd):
    state = given(cmd.activate())

    events = when(state, cmd.place("o1", venue="binance"))

    assert outcome(events) == "ACCOUNT_DISARMED"
    assert check_names(events) == ["policy_hash", "instrument", "mode"]
    assert check(events, "mode") == ("DISARMED", "ARMED, or venue paper", "fail")


def test_the_paper_venue_trades_while_disarmed_and_a_live_venue_only_after_arm(given, when, cmd):
    disarmed = given(cmd.activate())
    paper = when(disarmed, cmd.place("o1", venue="paper"))
    assert outcome(paper) == "accepted"
    assert check(paper, "mode") == ("DISARMED", "ARMED, or venue paper", "pass")

    armed = given(cmd.arm(), state=disarmed)
    live = when(armed, cmd.place("o2", venue="binance"))
    assert outcome(live) == "accepted"
    assert check(live, "mode") == ("ARMED", "ARMED, or venue paper", "pass")

    disarmed_again = given(cmd.disarm(), state=armed)
    assert outcome(when(disarmed_again, cmd.place("o3", venue="binance"))) == "ACCOUNT_DISARMED"


@pytest.mark.parametrize(
    "quantity", ["0", "0.000", "-0.100", "-0", "abc", "", "1e-3", ".", "0.1.0"]
)
def test_invalid_quantity(given, when, cmd, quantity):
    state = given(cmd.activate())

    events = when(state, cmd.place("o1", quantity=quantity))

    assert outcome(events) == "INVALID_QUANTITY"
    assert check_names(events) == ["policy_hash", "instrument", "mode", "quantity"]
    assert check(events, "quantity") == (quantity, "a positive decimal", "fail")


@pytest.mark.parametrize(
    ("symbol", "quantity", "price", "step"),
    [
        ("BTCUSDT", "0.0005", "65000.0", "0.001"),  # finer than the step's decimals
        ("BTCUSDT", "0.1005", "65000.0", "0.001"),
        ("SOLUSDT", "1.2", "150.00", "0.5"),  # at the step's decimals, not a multiple of it
        ("SOLUSDT", "0.25", "150.00", "0.5"),
    ],
)
def test_quantity_off_step(given, when, cmd, symbol, quantity, price, step):
    state = given(cmd.activate())

    events = when(state, cmd.place("o1", symbol=symbol, quantity=quantity, price=price))

    assert outcome(events) == "QUANTITY_OFF_STEP"
    assert check_names(events) == ["policy_hash", "instrument", "mode", "quantity_step"]
    assert check(events, "quantity_step") == (quantity, step, "fail")


def test_a_quantity_on_a_coarse_step_passes(given, when, cmd):
    state = given(cmd.activate())

    events = when(state, cmd.place("o1", symbol="SOLUSDT", quantity="1.5", price="150.05"))

    assert outcome(events) == "accepted"
    assert check(events, "quantity_step") == ("1.5", "0.5", "pass")
    assert check(events, "price_tick") == ("150.05", "0.05", "pass")


@pytest.mark.parametrize(
    ("price", "reference_price", "failed_check"),
    [
        ("abc", "65000.0", ("price", "abc", "a positive decimal")),
        ("", "65000.0", ("price", "", "a positive decimal")),
        ("0", "65000.0", ("price", "0", "a positive decimal")),
        ("-65000.0", "65000.0", ("price", "-65000.0", "a positive decimal")),
        ("65000.0", "abc", ("reference_price", "abc", "a positive decimal with at most 1 decimals")),
        (
            "65000.0",
            "0.0",
            ("reference_price", "0.0", "a positive decimal with at most 1 decimals"),
        ),
        ("65000.0", "-1", ("reference_price", "-1", "a positive decimal with at most 1 decimals")),
        (
            "65000.0",
            "65000.05",
            ("reference_price", "65000.05", "a positive decimal with at most 1 decimals"),
        ),
    ],
)
def test_invalid_price(given, when, cmd, price, reference_price, failed_check):
    state = given(cmd.activate())

    events = when(state, cmd.place("o1", price=price, reference_price=reference_price))

    name, value, limit = failed_check
    assert outcome(events) == "INVALID_PRICE"
    assert check_names(events) == ["policy_hash", "instrument", "mode", "quantity_step", name]
    assert check(events, name) == (value, limit, "fail")


@pytest.mark.parametrize(
    ("symbol", "quantity", "price", "reference_price", "tick"),
    [
        ("BTCUSDT", "0.100", "65000.05", "65000.0", "0.1"),  # finer than the tick's decimals
        (
            "SOLUSDT",
            "1.0",
            "150.03",
            "150.00",
            "0.05",
        ),  # at the tick's decimals, not a multiple of it
    ],
)
def test_price_off_tick(given, when, cmd, symbol, quantity, price, reference_price, tick):
    state = given(cmd.activate())

    events = when(
        state,
        cmd.place(
            "o1", symbol=symbol, quantity=quantity, price=price, reference_price=reference_price
        ),
    )

    assert outcome(events) == "PRICE_OFF_TICK"
    assert check_names(events) == [
        "policy_hash",
        "instrument",
        "mode",
        "quantity_step",
        "price_tick",
    ]
    assert check(events, "price_tick") == (price, tick, "fail")


# --- limit checks: at the limit passes, one unit over fails -------------------------------------


@pytest.mark.parametrize(
    ("quantity", "verdict", "result"),
    [("2.000", "pass", "accepted"), ("2", "pass", "accepted"), ("2.001", "fail", "MAX_ORDER_QTY")],
)
def test_max_order_qty(given, when, cmd, quantity, verdict, result):
    state = given(cmd.activate())

    events = when(state, cmd.place("o1", quantity=quantity, price="1000.0"))

    assert outcome(events) == result
    assert check(events, "max_order_qty") == (
        quantity if quantity != "2" else "2.000",
        "2.000",
        verdict,
    )


@pytest.mark.parametrize(
    ("limit", "verdict", "result"),
    [("6500", "pass", "accepted"), ("6499.99999999", "fail", "MAX_ORDER_NOTIONAL")],
)
def test_max_order_notional(given, when, cmd, limit, verdict, result):
    state = given(cmd.activate(max_order_notional=limit))

    events = when(state, cmd.place("o1", quantity="0.100", price="65000.0"))

    assert outcome(events) == result
    assert check(events, "max_order_notional") == ("6500", limit, verdict)


@pytest.mark.parametrize(
    ("side", "price", "deviation_bps", "verdict", "result"),
    [
        # |65975.0 - 65000.0| / 65000.0 = 150 bps exactly
        ("BUY", "65975.0", "150", "pass", "accepted"),
        # one tick further: 975.1 / 65000.0 = 150.015 bps, rounded up
        ("BUY", "65975.1", "151", "fail", "PRICE_COLLAR"),
        ("SELL", "64025.0", "150", "pass", "accepted"),
        ("SELL", "64024.9", "151", "fail", "PRICE_COLLAR"),
    ],
)
def test_price_collar_against_the_reference_price(
    given, when, cmd, side, price, deviation_bps, verdict, result
):
    state = given(cmd.activate())

    events = when(state, cmd.place("o1", side=side, price=price, reference_price="65000.0"))

    assert outcome(events) == result
    assert check(events, "price_collar_bps") == (deviation_bps, "150", verdict)


@pytest.mark.parametrize(
    ("limit", "verdict", "result"),
    [("13000", "pass", "accepted"), ("12999.99999999", "fail", "MAX_POSITION_NOTIONAL")],
)
def test_max_position_notional_counts_the_position_and_open_orders_on_the_same_side(
    given, when, cmd, limit, verdict, result
):
    state = given(
        cmd.activate(instruments={"paper:BTCUSDT": {"max_position_notional": limit}}),
        cmd.place("o1", quantity="0.100"),
        cmd.fill("ord-o1", "f1", "0.100", "65000.0"),
        cmd.place("o2", quantity="0.050"),  # open
    )

    # projected: 0.100 held + 0.050 open + 0.050 new = 0.200 at 65000.0 = 13000
    events = when(state, cmd.place("o3", quantity="0.050"))

    assert outcome(events) == result
    assert check(events, "max_position_notional") == ("13000", limit, verdict)


@pytest.mark.parametrize(
    ("limit", "verdict", "result"),
    [("14500", "pass", "accepted"), ("14499.99999999", "fail", "MAX_GROSS_EXPOSURE")],
)
def test_max_gross_exposure_counts_open_orders_positions_and_the_new_order(
    given, when, cmd, limit, verdict, result
):
    state = given(
        cmd.activate(max_gross_exposure=limit),
        cmd.place("o1", quantity="0.100"),
        cmd.fill("ord-o1", "f1", "0.100", "65000.0"),  # position 0.1 BTC marked at 65000.0: 6500
        cmd.place(
            "s1", side="SELL", symbol="SOLUSDT", quantity="10.0", price="150.00"
        ),  # open: 1500
    )

    events = when(state, cmd.place("o2", quantity="0.100"))  # 6500

    assert outcome(events) == result
    assert check(events, "max_gross_exposure") == ("14500", limit, verdict)


@pytest.mark.parametrize(
    ("offset_ns", "orders_in_window", "verdict", "result"),
    [
        (SECOND_NS - 1, "3", "fail", "ORDER_RATE"),
        # the window is the half-open second (ts - 1 s, ts]: orders exactly 1 s old have left it
        (SECOND_NS, "1", "pass", "accepted"),
        (SECOND_NS + 1, "1", "pass", "accepted"),
    ],
)
def test_order_rate_per_rolling_second_of_command_time(
    given, when, cmd, offset_ns, orders_in_window, verdict, result
):
    t0 = 5 * SECOND_NS
    state = given(
        cmd.activate(max_orders_per_second=2, ts_ns=t0),
        cmd.place("o1", ts_ns=t0),
        cmd.place("o2", ts_ns=t0),
    )

    events = when(state, cmd.place("o3", ts_ns=t0 + offset_ns))

    assert outcome(events) == result
    assert check(events, "orders_per_second") == (orders_in_window, "2", verdict)


def test_order_rate_at_the_limit_passes(given, when, cmd):
    state = given(cmd.activate(max_orders_per_second=2), cmd.place("o1"))

    events = when(state, cmd.place("o2"))

    assert outcome(events) == "accepted"
    assert check(events, "orders_per_second") == ("2", "2", "pass")


@pytest.mark.parametrize(
    ("cancel_first", "messages_in_window", "verdict", "result"),
    [(False, "3", "pass", "accepted"), (True, "4", "fail", "MESSAGE_RATE")],
    ids=["two orders", "two orders and a cancel"],
)
def test_message_rate_counts_cancels(
    given, when, cmd, cancel_first, messages_in_window, verdict, result
):
    setup = [cmd.activate(max_messages_per_second=3), cmd.place("o1")]
    if cancel_first:
        setup.append(cmd.cancel("ord-o1"))
    setup.append(cmd.place("o2"))
    state = given(*setup)

    events = when(state, cmd.place("o3"))

    assert outcome(events) == result
    assert check(events, "messages_per_second") == (messages_in_window, "3", verdict)
    assert check(events, "orders_per_second") == ("3", "10", "pass")


@pytest.mark.parametrize(
    ("already_open", "open_after", "verdict", "result"),
    [(1, "2", "pass", "accepted"), (2, "3", "fail", "MAX_OPEN_ORDERS")],
)
def test_max_open_orders(given, when, cmd, already_open, open_after, verdict, result):
    state = given(
        cmd.activate(max_open_orders=2), *[cmd.place(f"o{i}") for i in range(already_open)]
    )

    events = when(state, cmd.place("new"))

    assert outcome(events) == result
    assert check(events, "open_orders") == (open_after, "2", verdict)


def test_closed_orders_do_not_count_as_open(given, when, cmd):
    state = given(
        cmd.activate(max_open_orders=1),
        cmd.place("o1"),
        cmd.fill("ord-o1", "f1", "0.100", "65000.0"),
    )

    events = when(state, cmd.place("o2", side="SELL"))

    assert outcome(events) == "accepted"
    assert check(events, "open_orders") == ("1", "1", "pass")


@pytest.mark.parametrize(
    ("held", "side", "quantity", "verdict", "result"),
    [
        (None, "SELL", "0.100", "fail", "REDUCE_ONLY_WOULD_INCREASE"),  # nothing to reduce
        ("0.200", "BUY", "0.100", "fail", "REDUCE_ONLY_WOULD_INCREASE"),  # same side as the long
        ("0.200", "SELL", "0.300", "fail", "REDUCE_ONLY_WOULD_INCREASE"),  # would flip to a short
        ("0.200", "SELL", "0.200", "pass", "accepted"),  # closes exactly
        ("0.200", "SELL", "0.100", "pass", "accepted"),
    ],
)
def test_reduce_only(given, when, cmd, held, side, quantity, verdict, result):
    setup = [cmd.activate()]
    if held is not None:
        setup += [cmd.place("o1", quantity=held), cmd.fill("ord-o1", "f1", held, "65000.0")]
    state = given(*setup)

    events = when(state, cmd.place("r1", side=side, quantity=quantity, reduce_only=True))

    assert outcome(events) == result
    assert check(events, "reduce_only") == (
        held or "0.000",
        f"an opposite position of at least {quantity}",
        verdict,
    )


def test_reduce_only_counts_the_reduce_only_orders_already_open(given, when, cmd):
    state = given(
        cmd.activate(),
        cmd.place("o1", quantity="0.200"),
        cmd.fill("ord-o1", "f1", "0.200", "65000.0"),
        cmd.place(
            "r1", side="SELL", quantity="0.200", reduce_only=True
        ),  # closes the long if it fills
    )

    # if both fill, the account ends 0.100 short: this one would increase the position
    events = when(state, cmd.place("r2", side="SELL", quantity="0.100", reduce_only=True))

    assert outcome(events) == "REDUCE_ONLY_WOULD_INCREASE"
    assert check(events, "reduce_only")[2] == "fail"


def test_duplicate_client_order_id(given, when, cmd):
    state = given(cmd.activate(), cmd.place("o1", client_order_id="cl-x"))

    events = when(state, cmd.place("o2", client_order_id="cl-x"))

    assert outcome(events) == "DUPLICATE_CLIENT_ORDER_ID"
    assert check(events, "client_order_id") == ("cl-x", "unique among open orders", "fail")


@pytest.mark.parametrize("closed_by", ["filled", "cancelled", "venue rejected"])
def test_a_client_order_id_can_be_reused_once_its_order_closed(given, when, cmd, closed_by):
    close = {
        "filled": [cmd.fill("ord-o1", "f1", "0.100", "65000.0")],
        "cancelled": [cmd.cancel("ord-o1"), cmd.cancelled("ord-o1")],
        "venue rejected": [cmd.venue_reject("ord-o1")],
    }[closed_by]
    state = given(cmd.activate(), cmd.place("o1", client_order_id="cl-x"), *close)

    events = when(state, cmd.place("o2", client_order_id="cl-x"))

    assert outcome(events) == "accepted"
    assert check(events, "client_order_id") == ("cl-x", "unique among open orders", "pass")


# --- MARKET orders ---------------------------------------------------------------------------


def test_a_market_order_is_checked_at_its_reference_price(given, when, then, cmd):
    state = given(cmd.activate())

    events = when(state, cmd.place("m1", order_type="MARKET", price="", reference_price="65000.0"))

    assert outcome(events) == "accepted"
    data = decided(events)
    assert (data["order_type"], data["price"], data["notional"]) == ("MARKET", "65000.0", "6500")
    assert "price_tick" not in check_names(events)
    assert check(events, "max_order_notional") == ("6500", "100000", "pass")
    assert check(events, "price_collar_bps") == ("0", "150", "pass")
    assert check(events, "max_position_notional") == ("6500", "250000", "pass")


def test_a_market_order_over_the_notional_limit_at_its_reference_price_is_rejected(
    given, when, cmd
):
    state = given(cmd.activate(max_order_notional="6499.99999999"))

    # the price field of a MARKET order is ignored: only the reference price counts
    events = when(
        state, cmd.place("m1", order_type="MARKET", price="1.0", reference_price="65000.0")
    )

    assert outcome(events) == "MAX_ORDER_NOTIONAL"
    assert check(events, "max_order_notional") == ("6500", "6499.99999999", "fail")
    assert decided(events)["price"] == "1.0"  # the rejection records the order as asked
