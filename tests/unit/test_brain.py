"""The Brain in the execution decider: truth score, breaker, venue quality, allocation, tail risk,
budgets and the operator's actions, as given / when / then.

Every scenario runs under the test policy with every Brain section (`cmd.brain_sections()` from
conftest: the shipped default's thresholds, a venue window of 4) unless it says otherwise. Times
start at T0 = 2026-01-01 12:00:00 UTC; `brain` is an account activated and snapshotted at T0 (score 100),
holding nothing, with 100 000 USDT of equity (phases 1 and 2, leverage up to 5).

BTCUSDT on the paper venue: tick 0.1, step 0.001. SOLUSDT: tick 0.05, step 0.5. Money is in
units of 1e-8 USDT.

The truth score with the test weights (drift 40, orphans 15, missing 15, staleness 15, latency 15)
is (40*drift + 15*orphans + 15*missing + 15*staleness + 15*latency) // 100, each component
scoring 0-100: drift 100 - drift_usdt*100 // 1000; orders 100 - 25 per order; staleness
100 - age_ms*100 // 5000; latency 100 - latency_ms*100 // 2000 (never below 0).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

T0 = 1_767_268_800_000_000_000  # 2026-01-01 12:00:00 UTC
S = 1_000_000_000
MS = 1_000_000
NS_PER_DAY = 86_400 * S
DAY0 = T0 // NS_PER_DAY  # 20454
MIDNIGHT = (DAY0 + 1) * NS_PER_DAY  # 2026-01-02 00:00:00 UTC
USDT = 100_000_000

TRUTH = "truth.snapshot_recorded.v1"
BREAKER = "breaker.transitioned.v1"
VENUE = "venue.status_changed.v1"
REGIME = "regime.changed.v1"
TAIL = "tail_risk.recorded.v1"
DAY_ROLLED = "budget.day_rolled.v1"
ACCEPTED = "order.accepted.v1"
REJECTED = "order.rejected.v1"
REFUSED = "command.rejected.v1"
FILLED = "order.filled.v1"
CANCEL_REQUESTED = "order.cancel_requested.v1"

SECTIONS = ("truth", "breaker", "venue_quality", "allocation", "tail_risk", "budget")
PRE_BRAIN_CHECKS = [
    "policy_hash",
    "instrument",
    "mode",
    "quantity_step",
    "price_tick",
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
BRAIN_CHECKS = [
    "breaker",
    "truth_score",
    "venue_status",
    "phase",
    "leverage",
    "daily_loss",
    "drawdown_bps",
]


# --- helpers ----------------------------------------------------------------------------------


def types(events: list[Any]) -> list[str]:
    return [event.type_name() for event in events]


def data(events: list[Any], type_name: str) -> dict[str, Any]:
    """The data of the one event of a type among the events."""
    matching = [event.to_data() for event in events if event.type_name() == type_name]
    assert len(matching) == 1, f"expected one {type_name} in {types(events)}"
    found: dict[str, Any] = matching[0]
    return found


def checks(events: list[Any]) -> dict[str, tuple[str, str, str]]:
    """The checks of the order event among the events: name -> (value, limit, verdict)."""
    decided = [e for e in events if e.type_name() in (ACCEPTED, REJECTED)]
    assert len(decided) == 1, types(events)
    return {
        c["check"]: (c["value"], c["limit"], c["verdict"]) for c in decided[0].to_data()["checks"]
    }


def reason(events: list[Any]) -> str | None:
    for event in events:
        if event.type_name() in (REJECTED, REFUSED):
            found: str = event.to_data()["reason"]
            return found
    return None


def transition(events: list[Any]) -> dict[str, Any]:
    return data(events, BREAKER)


def score(events: list[Any]) -> int:
    found: int = data(events, TRUTH)["score"]
    return found


def component_scores(events: list[Any]) -> dict[str, tuple[str, int]]:
    return {c["component"]: (c["value"], c["score"]) for c in data(events, TRUTH)["components"]}


@pytest.fixture
def run(core: Any) -> Callable[..., tuple[Any, list[Any]]]:
    """run(state, *commands) -> (state after them, every event they caused). Refusals are kept."""

    def _run(state: Any, *commands: Any) -> tuple[Any, list[Any]]:
        produced: list[Any] = []
        for command in commands:
            events = core.decider.decide(command, state)
            for event in events:
                state = core.decider.evolve(state, event)
            produced.extend(events)
        return state, produced

    return _run


@pytest.fixture
def brain(cmd: Any, given: Any) -> Any:
    """Activated with every Brain section and snapshotted at T0: score 100, nothing held."""
    cmd.now_ns = T0
    return given(cmd.activate(brain=cmd.brain_sections()), cmd.snapshot())


def at(cmd: Any, seconds: float) -> None:
    """Move the time of the next commands to T0 + seconds."""
    cmd.now_ns = T0 + int(seconds * S)


def hold(
    given: Any,
    cmd: Any,
    state: Any,
    name: str,
    *,
    side: str = "BUY",
    quantity: str = "0.100",
    price: str = "65000.0",
    symbol: str = "BTCUSDT",
    fee: str = "0",
) -> Any:
    """Place an order at its reference price and fill it there: the position moves by it."""
    state = given(
        cmd.place(name, side=side, quantity=quantity, price=price, symbol=symbol), state=state
    )
    return given(cmd.fill(f"ord-{name}", f"f-{name}", quantity, price, fee=fee), state=state)


# --- truth score ------------------------------------------------------------------------------


def test_a_venue_that_agrees_scores_100_with_every_component_recorded(brain, when, then, cmd):
    at(cmd, 1)
    events = when(brain, cmd.snapshot(equity="100000.5", latency_ms=0))
    assert then(events) == [
        (
            TRUTH,
            {
                "venue": "paper",
                "score": 100,
                "components": [
                    {"component": "position_drift", "value": "0", "score": 100, "weight": 40},
                    {"component": "orphan_orders", "value": "0", "score": 100, "weight": 15},
                    {"component": "missing_orders", "value": "0", "score": 100, "weight": 15},
                    {"component": "staleness_ms", "value": "0", "score": 100, "weight": 15},
                    {"component": "latency_ms", "value": "0", "score": 100, "weight": 15},
                ],
                "equity": "100000.5",
                "venue_ts_ns": T0 + S,
                "latency_ms": 0,
                "drifts": {},
                "orphan_order_ids": [],
                "missing_order_ids": [],
            },
        )
    ]


@pytest.mark.parametrize(
    "venue_qty, drift_usdt, drift_score, total",
    [
        ("0.100", "0", 100, 100),
        ("0.099", "65", 94, 97),  # 100 - 6500 // 1000; (40*94 + 6000) // 100 = 9760 // 100
        ("0.090", "650", 35, 74),  # 100 - 65
        ("0.085", "975", 3, 61),
        ("0.115", "975", 3, 61),  # drift is the absolute difference
        ("0.084", "1040", 0, 60),  # past the tolerance: 0, never negative
        ("0", "6500", 0, 60),
    ],
)
def test_position_drift_is_priced_at_the_mark_against_the_tolerance(
    brain, given, when, cmd, venue_qty, drift_usdt, drift_score, total
):
    state = hold(given, cmd, brain, "b1")  # long 0.100 BTCUSDT, mark 65000.0
    at(cmd, 2)
    events = when(state, cmd.snapshot(positions={"BTCUSDT": venue_qty}))
    assert component_scores(events)["position_drift"] == (drift_usdt, drift_score)
    assert score(events) == total
    venue_text = venue_qty if "." in venue_qty else "0.000"
    expected = {} if drift_usdt == "0" else {"BTCUSDT": f"ours 0.100, venue {venue_text}"}
    assert data(events, TRUTH)["drifts"] == expected


def test_a_position_the_venue_omits_is_drift_and_so_is_one_we_do_not_hold(brain, given, when, cmd):
    state = hold(given, cmd, brain, "b1")
    at(cmd, 2)
    omitted = when(state, cmd.snapshot())
    assert component_scores(omitted)["position_drift"] == ("6500", 0)
    assert data(omitted, TRUTH)["drifts"] == {"BTCUSDT": "ours 0.100, venue 0.000"}
    # a venue position in a listed instrument we never priced: no mark, so the drift is unpriced
    unpriced = when(state, cmd.snapshot(positions={"BTCUSDT": "0.100", "SOLUSDT": "3"}))
    assert component_scores(unpriced)["position_drift"] == ("unpriced", 0)
    assert data(unpriced, TRUTH)["drifts"] == {"SOLUSDT": "ours 0.0, venue 3.0"}


def test_a_flat_position_in_an_unlisted_symbol_is_no_drift(brain, when, cmd):
    at(cmd, 1)
    events = when(brain, cmd.snapshot(positions={"BTCUSDT": "0", "DOGEUSDT": "0"}))
    assert component_scores(events)["position_drift"] == ("0", 100)
    assert score(events) == 100


def test_orphan_orders_are_what_the_venue_has_open_and_we_do_not(brain, given, when, cmd):
    at(cmd, 1)
    state = given(cmd.place("o1"), state=brain)
    at(cmd, 2)
    two = when(state, cmd.snapshot(open_order_ids=["ord-o1", "x-2", "x-1"]))
    assert component_scores(two)["orphan_orders"] == ("2", 50)
    assert data(two, TRUTH)["orphan_order_ids"] == ["x-1", "x-2"]
    assert score(two) == 92  # (4000 + 15*50 + 4500) // 100
    four = when(state, cmd.snapshot(open_order_ids=["ord-o1", "a", "b", "c", "d", "e"]))
    assert component_scores(four)["orphan_orders"] == ("5", 0)
    assert score(four) == 85


def test_missing_orders_wait_out_the_grace_period_for_in_flight_orders(brain, given, when, cmd):
    at(cmd, 1)
    state = given(cmd.place("o1"), state=brain)  # accepted at T0 + 1 s; the grace is 5 000 ms
    in_flight = when(state, cmd.snapshot(ts_ns=T0 + S + 5000 * MS - 1))
    assert component_scores(in_flight)["missing_orders"] == ("0", 100)
    assert score(in_flight) == 100
    missing = when(state, cmd.snapshot(ts_ns=T0 + S + 5000 * MS))
    assert component_scores(missing)["missing_orders"] == ("1", 75)
    assert data(missing, TRUTH)["missing_order_ids"] == ["ord-o1"]
    assert score(missing) == 96  # (8500 + 15*75) // 100 = 9625 // 100
    reported = when(state, cmd.snapshot(ts_ns=T0 + 60 * S, open_order_ids=["ord-o1"]))
    assert component_scores(reported)["missing_orders"] == ("0", 100)


@pytest.mark.parametrize(
    "age_ms, staleness, total",
    [
        (0, 100, 100),
        (1500, 70, 95),
        (4999, 1, 85),
        (5000, 0, 85),
        (90_000, 0, 85),
        (-3000, 100, 100),
    ],
)
def test_staleness_is_the_age_of_the_venue_time_at_command_time(
    brain, when, cmd, age_ms, staleness, total
):
    at(cmd, 100)
    events = when(brain, cmd.snapshot(venue_ts_ns=cmd.now_ns - age_ms * MS))
    assert component_scores(events)["staleness_ms"] == (str(max(0, age_ms)), staleness)
    assert score(events) == total


@pytest.mark.parametrize(
    "latency_ms, latency_score, total",
    [(0, 100, 100), (20, 99, 99), (500, 75, 96), (1999, 1, 85), (2000, 0, 85), (10_000, 0, 85)],
)
def test_latency_scores_against_its_limit(brain, when, cmd, latency_ms, latency_score, total):
    at(cmd, 1)
    events = when(brain, cmd.snapshot(latency_ms=latency_ms))
    assert component_scores(events)["latency_ms"] == (str(latency_ms), latency_score)
    assert score(events) == total


def test_the_score_bottoms_out_at_0_when_everything_disagrees(brain, given, when, cmd):
    state = hold(given, cmd, brain, "b1")
    for i in range(4):
        state = given(cmd.place(f"o{i}", quantity="0.001"), state=state)
    at(cmd, 10)
    events = when(
        state,
        cmd.snapshot(open_order_ids=["x1", "x2", "x3", "x4"], venue_ts_ns=T0, latency_ms=5000),
    )
    assert {name: s for name, (_, s) in component_scores(events).items()} == {
        "position_drift": 0,
        "orphan_orders": 0,
        "missing_orders": 0,
        "staleness_ms": 0,
        "latency_ms": 0,
    }
    assert score(events) == 0
    assert transition(events)["to_state"] == "HALTED"


def drifted_by_750(given: Any, cmd: Any, state: Any) -> Any:
    """Long 0.100 BTCUSDT filled at 62 500.0: a venue reporting 0.088 drifts by 750 USDT
    (drift score 25, so the score is 70 with nothing else wrong)."""
    at(cmd, 1)
    return hold(given, cmd, state, "b1", price="62500.0")


def test_new_risk_needs_the_policy_minimum_score(brain, given, when, cmd):
    state = drifted_by_750(given, cmd, brain)
    at(cmd, 2)
    at_minimum = given(cmd.snapshot(positions={"BTCUSDT": "0.088"}), state=state)
    assert at_minimum.brain.truth["paper"].score == 70
    at(cmd, 3)
    passed = when(at_minimum, cmd.place("n1", quantity="0.001", price="62500.0"))
    assert checks(passed)["truth_score"] == ("70", "70", "pass")
    assert types(passed) == [ACCEPTED]

    # 20 ms of latency costs one point: (1000 + 15*99 + 4500) // 100 = 69
    below = given(cmd.snapshot(positions={"BTCUSDT": "0.088"}, latency_ms=20), state=state)
    assert below.brain.truth["paper"].score == 69
    refused = when(below, cmd.place("n2", quantity="0.001", price="62500.0"))
    assert reason(refused) == "TRUTH_SCORE_LOW"
    assert checks(refused)["truth_score"] == ("69", "70", "fail")


def test_reduce_only_orders_pass_a_low_score(brain, given, when, cmd):
    state = drifted_by_750(given, cmd, brain)
    at(cmd, 2)
    low = given(cmd.snapshot(positions={"BTCUSDT": "0.088"}, latency_ms=2000), state=state)
    assert low.brain.truth["paper"].score == 55
    at(cmd, 3)
    events = when(
        low, cmd.place("r1", side="SELL", quantity="0.050", price="62500.0", reduce_only=True)
    )
    assert types(events) == [ACCEPTED]
    assert checks(events)["truth_score"] == ("55", "70", "pass")


def test_a_score_goes_stale_when_no_snapshot_arrived_within_the_window(brain, given, when, cmd):
    # the snapshot was taken at T0; stale_after_ms is 60 000, judged on command time
    fresh = when(brain, cmd.place("f", ts_ns=T0 + 60 * S))
    assert checks(fresh)["truth_score"] == ("100", "70", "pass")
    stale = when(brain, cmd.place("s", ts_ns=T0 + 60 * S + 1))
    assert reason(stale) == "TRUTH_SCORE_LOW"
    assert checks(stale)["truth_score"] == ("stale:100", "70", "fail")
    # reduce-only orders still pass
    held = hold(given, cmd, brain, "b1")
    closing = when(held, cmd.place("r", side="SELL", reduce_only=True, ts_ns=T0 + 120 * S))
    assert types(closing) == [ACCEPTED]
    assert checks(closing)["truth_score"] == ("stale:100", "70", "pass")


def test_before_any_snapshot_there_is_no_score(given, when, cmd):
    cmd.now_ns = T0
    state = given(cmd.activate(brain=cmd.brain_sections()))
    events = when(state, cmd.place("o1"))
    assert reason(events) == "TRUTH_SCORE_LOW"
    assert checks(events)["truth_score"] == ("none", "70", "fail")


def test_each_venue_has_its_own_score(brain, given, when, cmd):
    at(cmd, 1)
    armed = given(cmd.arm(), state=brain)
    refused = when(armed, cmd.place("b", venue="binance"))
    assert checks(refused)["truth_score"] == ("none", "70", "fail")
    state = given(cmd.snapshot("binance"), state=armed)
    assert types(when(state, cmd.place("b", venue="binance"))) == [ACCEPTED]


# --- the breaker: into DEFENSIVE and HALTED -----------------------------------------------------


def test_a_low_truth_score_turns_the_breaker_defensive(brain, given, when, cmd):
    state = hold(given, cmd, brain, "b1")
    at(cmd, 2)
    events = when(state, cmd.snapshot(positions={"BTCUSDT": "0.090"}))
    assert types(events) == [TRUTH, BREAKER]
    assert transition(events) == {
        "from_state": "NORMAL",
        "to_state": "DEFENSIVE",
        "trigger": "truth_score",
        "reason": "",
        "values": {"truth_score": "74", "venue": "paper", "defensive_below": "80"},
    }


def test_a_very_low_truth_score_halts_at_once(brain, given, when, cmd):
    state = hold(given, cmd, brain, "b1")
    at(cmd, 2)
    # drift 0, staleness 0, latency 0: (15*100 + 15*100) // 100 = 30, under halt_below 40
    events = when(state, cmd.snapshot(venue_ts_ns=T0 - 10 * S, latency_ms=2000))
    assert score(events) == 30
    assert transition(events) == {
        "from_state": "NORMAL",
        "to_state": "HALTED",
        "trigger": "truth_score",
        "reason": "",
        "values": {"truth_score": "30", "venue": "paper", "halt_below": "40"},
    }


def test_a_tail_risk_breach_turns_the_breaker_defensive(brain, when, then, cmd):
    at(cmd, 1)
    events = when(brain, cmd.tail("BTCUSDT", "1.8", sample_size=250, method="hill-top5pct"))
    assert then(events) == [
        (
            TAIL,
            {
                "symbol": "BTCUSDT",
                "tail_exponent": "1.8000",
                "min_tail_exponent": "2.2000",
                "breach": True,
                "sample_size": 250,
                "method": "hill-top5pct",
            },
        ),
        (
            BREAKER,
            {
                "from_state": "NORMAL",
                "to_state": "DEFENSIVE",
                "trigger": "tail_risk",
                "reason": "",
                "values": {"BTCUSDT": "1.8000", "min_tail_exponent": "2.2000"},
            },
        ),
    ]


def test_a_halted_venue_turns_the_breaker_defensive(brain, given, when, cmd):
    at(cmd, 1)
    state = given(cmd.place("o1"), state=brain)
    events = when(state, cmd.ack("ord-o1", ts_ns=T0 + S + 1000 * MS))
    assert types(events) == ["order.acknowledged.v1", VENUE, BREAKER]
    assert data(events, VENUE) == {
        "venue": "paper",
        "from_status": "OK",
        "to_status": "HALTED",
        "mean_slippage_bps": 0,
        "mean_ack_latency_ms": 1000,
        "samples": 1,
    }
    assert transition(events) == {
        "from_state": "NORMAL",
        "to_state": "DEFENSIVE",
        "trigger": "venue_quality",
        "reason": "",
        "values": {"paper": "HALTED"},
    }


@pytest.mark.parametrize("equity, moves", [("95001", False), ("95000", True), ("60000", True)])
def test_a_drawdown_from_peak_equity_turns_the_breaker_defensive(brain, when, cmd, equity, moves):
    at(cmd, 1)
    # peak 100 000 (the initial equity): (100000 - 95000) * 10000 // 100000 = 500 bps
    events = when(brain, cmd.snapshot(equity=equity))
    if not moves:
        assert types(events) == [TRUTH]
        return
    drawdown = (100_000 - int(equity)) * 10_000 // 100_000
    assert transition(events) == {
        "from_state": "NORMAL",
        "to_state": "DEFENSIVE",
        "trigger": "drawdown",
        "reason": "",
        "values": {"drawdown_bps": str(drawdown), "max_drawdown_bps": "500"},
    }


def lose(given: Any, cmd: Any, state: Any, sell_price: str) -> Any:
    """Buy 1 BTCUSDT at 65 000.0, then place a reduce-only sale of it at `sell_price`."""
    at(cmd, 1)
    state = hold(given, cmd, state, "b1", quantity="1.000")
    at(cmd, 2)
    return given(
        cmd.place("s1", side="SELL", quantity="1.000", price=sell_price, reduce_only=True),
        state=state,
    )


def test_the_daily_loss_limit_halts_at_once_fees_included(brain, given, when, cmd):
    under = lose(given, cmd, brain, "63000.1")
    events = when(under, cmd.fill("ord-s1", "f-s1", "1.000", "63000.1"))
    assert types(events) == [FILLED]  # a loss of 1 999.9
    assert under.brain.breaker == "NORMAL"

    events = when(under, cmd.fill("ord-s1", "f-s1", "1.000", "63000.1", fee="0.1"))
    assert data(events, FILLED)["realized_pnl"] == "-1999.9"
    assert transition(events) == {
        "from_state": "NORMAL",
        "to_state": "HALTED",
        "trigger": "daily_loss",
        "reason": "",
        "values": {"daily_loss": "2000", "limit": "2000"},
    }


def test_escalation_from_defensive_to_halted_is_immediate(brain, given, when, cmd):
    at(cmd, 1)
    defensive = given(cmd.tail("BTCUSDT", "1.5"), state=brain)
    assert defensive.brain.breaker == "DEFENSIVE"
    events = when(defensive, cmd.snapshot(venue_ts_ns=T0 - 10 * S, latency_ms=5000, positions={}))
    assert score(events) == 70
    # 70 is DEFENSIVE-level: no move; a worse one goes straight on
    assert types(events) == [TRUTH]
    state = hold(given, cmd, defensive, "b1")
    events = when(state, cmd.snapshot(venue_ts_ns=T0 - 10 * S, latency_ms=5000))
    assert score(events) == 30
    assert transition(events)["from_state"] == "DEFENSIVE"
    assert transition(events)["to_state"] == "HALTED"


# --- DEFENSIVE scales size and leverage ------------------------------------------------------


def test_defensive_halves_order_size_notional_and_the_leverage_cap(brain, given, when, cmd):
    at(cmd, 1)
    normal = when(brain, cmd.place("n", quantity="1.000"))
    assert checks(normal)["max_order_qty"] == ("1.000", "2.000", "pass")
    assert checks(normal)["max_order_notional"] == ("65000", "100000", "pass")
    assert checks(normal)["leverage"] == ("0.6500", "5.0000", "pass")

    defensive = given(cmd.tail("BTCUSDT", "1.5"), state=brain)
    events = when(defensive, cmd.place("d", quantity="1.000"))
    assert checks(events)["breaker"] == (
        "DEFENSIVE",
        "NORMAL or DEFENSIVE; reduce-only while HALTED",
        "pass",
    )
    assert checks(events)["max_order_qty"] == ("1.000", "1.000", "pass")
    assert checks(events)["max_order_notional"] == ("65000", "50000", "fail")
    assert checks(events)["leverage"] == ("0.6500", "2.5000", "pass")
    assert reason(events) == "MAX_ORDER_NOTIONAL"
    too_big = when(defensive, cmd.place("d2", quantity="1.001", price="40000.0"))
    assert reason(too_big) == "MAX_ORDER_QTY"


# --- DEFENSIVE -> NORMAL: recovery with hysteresis ----------------------------------------------


def test_defensive_recovers_only_once_every_trigger_is_clear_for_the_recovery_time(
    brain, given, when, cmd
):
    at(cmd, 1)
    state = given(cmd.tail("BTCUSDT", "1.5"), state=brain)
    at(cmd, 10)
    state = given(cmd.tail("BTCUSDT", "2.2"), state=state)  # not below the minimum: clear
    assert state.brain.breaker == "DEFENSIVE"
    assert state.brain.clear_since_ns == T0 + 10 * S

    early = when(state, cmd.snapshot(ts_ns=T0 + 70 * S - 1))
    assert types(early) == [TRUTH]
    recovered = when(state, cmd.snapshot(ts_ns=T0 + 70 * S))
    assert types(recovered) == [TRUTH, BREAKER]
    assert transition(recovered) == {
        "from_state": "DEFENSIVE",
        "to_state": "NORMAL",
        "trigger": "recovered",
        "reason": "",
        "values": {"clear_since_ns": str(T0 + 10 * S), "recovery_ms": "60000"},
    }


def test_a_trigger_reappearing_restarts_the_recovery_clock(brain, given, when, cmd, run):
    at(cmd, 1)
    state = given(cmd.tail("BTCUSDT", "1.5"), state=brain)
    at(cmd, 10)
    state = given(cmd.tail("BTCUSDT", "3"), state=state)
    at(cmd, 40)
    state, events = run(state, cmd.tail("BTCUSDT", "2.1"))
    assert types(events) == [TAIL]  # already DEFENSIVE: no transition
    assert state.brain.clear_since_ns == -1
    at(cmd, 50)
    state = given(cmd.tail("BTCUSDT", "3"), state=state)
    assert types(when(state, cmd.snapshot(ts_ns=T0 + 70 * S))) == [TRUTH]
    assert types(when(state, cmd.snapshot(ts_ns=T0 + 110 * S - 1))) == [TRUTH]
    assert transition(when(state, cmd.snapshot(ts_ns=T0 + 110 * S)))["to_state"] == "NORMAL"


def test_a_score_oscillating_around_the_threshold_does_not_flap(brain, cmd, run):
    # stale venue time (staleness 0) and latency 750 ms (63) score 79; latency 470 ms (77), 81
    def snapshot(seconds: int, latency_ms: int) -> Any:
        ts = T0 + seconds * S
        return cmd.snapshot(ts_ns=ts, venue_ts_ns=ts - 5 * S, latency_ms=latency_ms)

    state, events = run(brain, *[snapshot(10 * i, 750 if i % 2 else 470) for i in range(1, 31)])
    assert [e.to_data()["score"] for e in events if e.type_name() == TRUTH] == [79, 81] * 15
    moves = [e.to_data() for e in events if e.type_name() == BREAKER]
    assert [(m["from_state"], m["to_state"]) for m in moves] == [("NORMAL", "DEFENSIVE")]
    assert state.brain.breaker == "DEFENSIVE"

    # the last 81 came at T0 + 300 s and it stays there: back to NORMAL 60 s later, not before
    state, events = run(state, *[snapshot(310 + 10 * i, 470) for i in range(8)])
    moved = [e for e in events if e.type_name() == BREAKER]
    assert len(moved) == 1
    assert moved[0].ts_ns == T0 + 360 * S
    assert moved[0].to_data()["to_state"] == "NORMAL"


# --- HALTED: only Resume leaves it ------------------------------------------------------------


def test_halt_is_an_operator_transition_and_halting_twice_is_refused(brain, given, when, then, cmd):
    at(cmd, 1)
    events = when(brain, cmd.halt(reason="fat finger on desk 2"))
    assert then(events) == [
        (
            BREAKER,
            {
                "from_state": "NORMAL",
                "to_state": "HALTED",
                "trigger": "operator",
                "reason": "fat finger on desk 2",
                "values": {},
            },
        )
    ]
    halted = given(*events, state=brain)
    assert then(when(halted, cmd.halt())) == [
        (
            REFUSED,
            {"command_type": "Halt", "reason": "ALREADY_HALTED", "detail": {"breaker": "HALTED"}},
        )
    ]


def test_halted_never_leaves_without_resume(brain, given, when, then, cmd, run):
    at(cmd, 1)
    state = given(cmd.halt(), state=brain)
    # a day and a half of clean snapshots, across midnight: still HALTED
    commands = [cmd.snapshot(ts_ns=T0 + i * 1800 * S) for i in range(1, 73)]
    state, events = run(state, *commands)
    assert BREAKER not in types(events)
    assert DAY_ROLLED in types(events)
    assert state.brain.breaker == "HALTED"

    at(cmd, 72 * 1800 + 1)
    assert then(when(state, cmd.resume(reason="desk 2 checked"))) == [
        (
            BREAKER,
            {
                "from_state": "HALTED",
                "to_state": "NORMAL",
                "trigger": "operator_resume",
                "reason": "desk 2 checked",
                "values": {},
            },
        )
    ]


def test_resume_is_refused_while_a_trigger_is_active_saying_which(brain, given, when, then, cmd):
    at(cmd, 1)
    state = given(cmd.halt(), cmd.tail("BTCUSDT", "1.9"), state=brain)
    assert then(when(state, cmd.resume())) == [
        (
            REFUSED,
            {
                "command_type": "Resume",
                "reason": "RESUME_BLOCKED",
                "detail": {"tail_risk": "DEFENSIVE"},
            },
        )
    ]
    worse = given(
        cmd.snapshot(
            venue_ts_ns=T0 - 10 * S, latency_ms=2000, open_order_ids=["x1", "x2", "x3", "x4"]
        ),
        state=state,
    )
    assert worse.brain.truth["paper"].score == 55
    assert when(worse, cmd.resume())[0].to_data()["detail"] == {
        "tail_risk": "DEFENSIVE",
        "truth_score": "DEFENSIVE",
    }
    cleared = given(cmd.tail("BTCUSDT", "2.5"), cmd.snapshot(), state=worse)
    assert transition(when(cleared, cmd.resume()))["to_state"] == "NORMAL"


@pytest.mark.parametrize("defensive", [False, True])
def test_resume_is_refused_when_not_halted(brain, given, when, then, cmd, defensive):
    at(cmd, 1)
    state = given(cmd.tail("BTCUSDT", "1.9"), state=brain) if defensive else brain
    level = "DEFENSIVE" if defensive else "NORMAL"
    assert then(when(state, cmd.resume())) == [
        (REFUSED, {"command_type": "Resume", "reason": "NOT_HALTED", "detail": {"breaker": level}})
    ]


def test_halted_refuses_new_risk_but_accepts_reduce_only_orders_and_cancels(
    brain, given, when, cmd
):
    state = hold(given, cmd, brain, "b1")
    at(cmd, 2)
    state = given(
        cmd.place("open", quantity="0.010", price="64500.0", reference_price="65000.0"),
        cmd.halt(),
        state=state,
    )
    refused = when(state, cmd.place("n1", quantity="0.001"))
    assert reason(refused) == "BREAKER_HALTED"
    assert checks(refused)["breaker"] == (
        "HALTED",
        "NORMAL or DEFENSIVE; reduce-only while HALTED",
        "fail",
    )
    selling = when(state, cmd.place("r1", side="SELL", quantity="0.050", reduce_only=True))
    assert types(selling) == [ACCEPTED]
    assert checks(selling)["breaker"][2] == "pass"
    assert types(when(state, cmd.cancel("ord-open"))) == [CANCEL_REQUESTED]


# --- venue quality ----------------------------------------------------------------------------


def test_the_ack_latency_window_degrades_the_venue_and_recovers_it(brain, given, when, cmd, run):
    state = brain
    statuses = []
    for i, latency_ms in enumerate([100, 100, 100, 700, 100, 100, 100, 100]):
        placed = T0 + (i + 1) * S
        state = given(cmd.place(f"o{i}", quantity="0.001", ts_ns=placed), state=state)
        state, events = run(state, cmd.ack(f"ord-o{i}", ts_ns=placed + latency_ms * MS))
        statuses.append([e.to_data() for e in events if e.type_name() == VENUE])
    # window of 4: (100, 100, 100, 700) averages 250, the DEGRADED threshold; the 700 leaves the
    # window with the eighth ack
    assert statuses == [
        [],
        [],
        [],
        [
            {
                "venue": "paper",
                "from_status": "OK",
                "to_status": "DEGRADED",
                "mean_slippage_bps": 0,
                "mean_ack_latency_ms": 250,
                "samples": 4,
            }
        ],
        [],
        [],
        [],
        [
            {
                "venue": "paper",
                "from_status": "DEGRADED",
                "to_status": "OK",
                "mean_slippage_bps": 0,
                "mean_ack_latency_ms": 100,
                "samples": 4,
            }
        ],
    ]
    assert state.brain.venues["paper"].ack_latency_ms == (100, 100, 100, 100)
    assert state.brain.breaker == "NORMAL"  # DEGRADED is not a breaker trigger


def degraded(given: Any, cmd: Any, state: Any) -> Any:
    at(cmd, 1)
    state = given(cmd.place("slow", quantity="0.001"), state=state)
    state = given(cmd.ack("ord-slow", ts_ns=T0 + S + 300 * MS), state=state)
    assert state.brain.venues["paper"].status == "DEGRADED"
    return state


def test_a_degraded_venue_scales_size_and_with_defensive_both_apply(brain, given, when, cmd):
    state = degraded(given, cmd, brain)
    at(cmd, 2)
    events = when(state, cmd.place("n", quantity="1.001", price="40000.0"))
    assert checks(events)["venue_status"] == ("DEGRADED", "OK or DEGRADED", "pass")
    assert checks(events)["max_order_qty"] == ("1.001", "1.000", "fail")
    assert checks(events)["max_order_notional"] == ("40040", "50000", "pass")
    assert reason(events) == "MAX_ORDER_QTY"
    both = given(cmd.tail("BTCUSDT", "1.5"), state=state)
    events = when(both, cmd.place("d", quantity="0.500", price="40000.0"))
    assert checks(events)["max_order_qty"] == ("0.500", "0.500", "pass")
    assert checks(events)["max_order_notional"] == ("20000", "25000", "pass")
    # 20 000 + the open 65 over 100 000; the venue scales size only, not the leverage cap
    assert checks(events)["leverage"] == ("0.2006", "2.5000", "pass")


def test_a_halted_venue_refuses_new_orders_and_recovers_when_the_window_is_back_under(
    brain, given, when, cmd, run
):
    # o0 at T0 + 1 s; o1..o4 just before o0's ack, which comes 1 000 ms late
    state = given(cmd.place("o0", quantity="0.001", ts_ns=T0 + S), state=brain)
    ahead = [cmd.place(f"o{i}", quantity="0.001", ts_ns=T0 + 2 * S - 10 * MS) for i in range(1, 5)]
    state = given(*ahead, state=state)
    state, events = run(state, cmd.ack("ord-o0", ts_ns=T0 + 2 * S))
    assert data(events, VENUE)["to_status"] == "HALTED"
    assert transition(events)["trigger"] == "venue_quality"
    refused = when(state, cmd.place("n", quantity="0.001", ts_ns=T0 + 3 * S))
    assert reason(refused) == "VENUE_HALTED"
    assert checks(refused)["venue_status"] == ("HALTED", "OK or DEGRADED", "fail")

    # acks of the orders already open, 10 ms each: (1000, 10) averages 505, (1000, 10, 10) 340,
    # (1000, 10, 10, 10) 257, then the 1 000 leaves the window of 4
    moves: list[tuple[str, str, int]] = []
    for i in range(1, 5):
        state, events = run(state, cmd.ack(f"ord-o{i}", ts_ns=T0 + 2 * S + i))
        moves.extend(
            (d["from_status"], d["to_status"], d["mean_ack_latency_ms"])
            for d in [e.to_data() for e in events if e.type_name() == VENUE]
        )
    assert moves == [("HALTED", "DEGRADED", 505), ("DEGRADED", "OK", 10)]
    assert state.brain.breaker == "DEFENSIVE"
    assert state.brain.clear_since_ns == T0 + 2 * S + 1  # the venue trigger cleared at DEGRADED
    accepted = when(state, cmd.place("n", quantity="0.001", ts_ns=T0 + 3 * S))
    assert checks(accepted)["venue_status"] == ("OK", "OK or DEGRADED", "pass")


def test_a_halted_venue_still_takes_reduce_only_orders(brain, given, when, cmd):
    held = hold(given, cmd, brain, "b1")
    held = given(cmd.place("h0", quantity="0.001"), state=held)
    held = given(cmd.ack("ord-h0", ts_ns=T0 + S), state=held)  # 1 000 ms: HALTED
    assert held.brain.venues["paper"].status == "HALTED"
    at(cmd, 1)
    reducing = when(held, cmd.place("r", side="SELL", quantity="0.050", reduce_only=True))
    assert types(reducing) == [ACCEPTED]
    assert checks(reducing)["venue_status"] == ("HALTED", "OK or DEGRADED", "pass")


def test_a_venue_halted_for_quality_with_nothing_open_does_not_block_the_account_forever(
    brain, given, when, cmd
):
    state = given(
        cmd.place("o1", quantity="0.001", ts_ns=T0 + S),
        cmd.ack("ord-o1", ts_ns=T0 + 2 * S),  # 1 000 ms: the venue HALTS, the breaker DEFENSIVE
        cmd.cancel("ord-o1", ts_ns=T0 + 3 * S),
        cmd.cancelled("ord-o1", ts_ns=T0 + 3 * S),
        state=brain,
    )
    hour = 3600 * S
    state = given(*[cmd.snapshot(ts_ns=T0 + h * hour) for h in range(1, 49)], state=state)
    state = given(cmd.halt(ts_ns=T0 + 48 * hour), state=state)
    # two days of clean snapshots and nothing outstanding: the operator should be able to resume
    assert transition(when(state, cmd.resume(ts_ns=T0 + 48 * hour)))["to_state"] == "NORMAL"


@pytest.mark.parametrize(
    "side, fill_price, slippage_bps",
    [
        ("BUY", "65065.0", 10),  # paid more than the reference: against us
        ("BUY", "64935.0", -10),
        ("SELL", "64935.0", 10),  # sold for less than the reference: against us
        ("SELL", "65065.0", -10),
        ("BUY", "65000.0", 0),
        ("BUY", "65006.4", 0),  # 0.98 bp: truncated toward zero
        ("SELL", "65006.4", 0),
    ],
)
def test_slippage_is_signed_against_us_for_buys_and_sells(
    brain, given, when, cmd, core, side, fill_price, slippage_bps
):
    at(cmd, 1)
    state = given(
        cmd.place(
            "o",
            side=side,
            price="65100.0" if side == "BUY" else "64900.0",
            reference_price="65000.0",
        ),
        state=brain,
    )
    events = when(state, cmd.fill("ord-o", "f", "0.100", fill_price))
    filled = given(*events, state=state)
    assert filled.brain.venues["paper"].slippage_bps == (slippage_bps,)
    statuses = [e.to_data()["to_status"] for e in events if e.type_name() == VENUE]
    assert statuses == (["DEGRADED"] if slippage_bps >= 10 else [])
    units = int(fill_price.replace(".", ""))
    assert core.brain.slippage_bps(side, 650_000, units) == slippage_bps


# --- allocation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "initial_equity, allowed, cap",
    [("20000", "1", "10.0000"), ("25000", "1,2", "5.0000"), ("250000", "1,2,3", "3.0000")],
)
def test_the_initial_equity_picks_the_band(given, when, cmd, initial_equity, allowed, cap):
    cmd.now_ns = T0
    sections = cmd.brain_sections(allocation={"initial_equity": initial_equity})
    state = given(cmd.activate(brain=sections), cmd.snapshot(equity=initial_equity))
    at(cmd, 1)
    for phase in (1, 2, 3):
        events = when(state, cmd.place(f"p{phase}", phase_id=phase, quantity="0.001"))
        assert checks(events)["phase"] == (
            str(phase),
            allowed,
            "pass" if str(phase) in allowed else "fail",
        )
        assert checks(events)["leverage"][1] == cap
        assert reason(events) == (None if str(phase) in allowed else "PHASE_NOT_ALLOWED")


def test_equity_follows_snapshots_then_realized_pnl_net_of_fees(given, when, cmd, view):
    cmd.now_ns = T0
    sections = cmd.brain_sections(budget={"max_drawdown_bps": 0})  # no drawdown trigger here
    state = given(cmd.activate(brain=sections), cmd.snapshot(equity="300000"))
    at(cmd, 1)
    assert types(when(state, cmd.place("p3", phase_id=3, quantity="0.001"))) == [ACCEPTED]
    state = given(cmd.snapshot(equity="25000.5"), state=state)
    assert view(state)["allowed_phases"] == [1, 2]
    # a round trip at one price, 0.25 of fees a fill: 25 000.5 - 0.5 = 25 000, still band 2
    state = hold(given, cmd, state, "b1", quantity="0.001", fee="0.25")
    state = hold(given, cmd, state, "s1", side="SELL", quantity="0.001", fee="0.25")
    assert view(state)["equity"] == "25000"
    assert view(state)["allowed_phases"] == [1, 2]
    # a loss of 0.1 (bought at 65 000.0, sold at 64 900.0) and no fee: 24 999.9, band 1
    state = hold(given, cmd, state, "b2", quantity="0.001")
    state = hold(given, cmd, state, "s2", side="SELL", quantity="0.001", price="64900.0")
    assert view(state)["equity"] == "24999.9"
    assert state.brain.equity_money() == 24_999_9 * USDT // 10
    events = when(state, cmd.place("p2", phase_id=2, quantity="0.001"))
    assert reason(events) == "PHASE_NOT_ALLOWED"
    assert checks(events)["phase"] == ("2", "1", "fail")
    assert checks(events)["leverage"][1] == "10.0000"


@pytest.mark.parametrize(
    "regime, allowed, cap",
    [("RISK_ON", "1,2", "5.0000"), ("RISK_OFF", "2", "2.5000"), ("CRASH", "none", "1.2500")],
)
def test_the_regime_scales_the_cap_and_forbids_phases(
    brain, given, when, then, cmd, regime, allowed, cap
):
    at(cmd, 1)
    events = when(brain, cmd.regime(regime, reason="vol regime model v3"))
    assert then(events) == [
        (REGIME, {"from_regime": "NEUTRAL", "to_regime": regime, "reason": "vol regime model v3"})
    ]
    state = given(*events, state=brain)
    for phase in (1, 2):
        placed = when(state, cmd.place(f"p{phase}", phase_id=phase, quantity="0.001"))
        ok = str(phase) in allowed.split(",")
        assert checks(placed)["phase"] == (str(phase), allowed, "pass" if ok else "fail")
        assert checks(placed)["leverage"] == ("0.0006", cap, "pass")
        assert reason(placed) == (None if ok else "PHASE_NOT_ALLOWED")


def test_reduce_only_orders_pass_a_forbidden_phase(brain, given, when, cmd):
    state = hold(given, cmd, brain, "b1")
    at(cmd, 2)
    state = given(cmd.regime("CRASH"), state=state)
    events = when(state, cmd.place("r", side="SELL", reduce_only=True, phase_id=1))
    assert types(events) == [ACCEPTED]
    assert checks(events)["phase"] == ("1", "none", "pass")


def test_setting_the_same_regime_is_refused(brain, when, then, cmd):
    at(cmd, 1)
    assert then(when(brain, cmd.regime("NEUTRAL"))) == [
        (
            REFUSED,
            {
                "command_type": "SetRegime",
                "reason": "REGIME_UNCHANGED",
                "detail": {"regime": "NEUTRAL"},
            },
        )
    ]


def test_leverage_counts_positions_at_their_mark_and_open_orders(given, when, cmd):
    cmd.now_ns = T0
    sections = cmd.brain_sections(allocation={"initial_equity": "10000"})  # band 1: cap 10
    state = given(cmd.activate(brain=sections), cmd.snapshot(equity="10000"))
    state = hold(given, cmd, state, "b1", quantity="1.000")  # 65 000 at the mark
    at(cmd, 2)
    # 65 000 + 34 970 = 99 970 over 10 000: 9.9970
    within = when(state, cmd.place("ok", quantity="0.538"))
    assert checks(within)["leverage"] == ("9.9970", "10.0000", "pass")
    over = when(state, cmd.place("no", quantity="0.539"))
    assert checks(over)["leverage"] == ("10.0035", "10.0000", "fail")
    assert reason(over) == "MAX_LEVERAGE"
    # an open order counts at its limit price: 65 000 + 13 000 + 26 000 over 10 000
    state = given(cmd.place("o1", quantity="0.200"), state=state)
    events = when(state, cmd.place("o2", quantity="0.400"))
    assert checks(events)["leverage"] == ("10.4000", "10.0000", "fail")


def test_without_equity_no_leverage_is_allowed(given, when, cmd):
    cmd.now_ns = T0
    state = given(cmd.activate(brain=cmd.brain_sections()), cmd.snapshot(equity="0"))
    assert state.brain.breaker == "DEFENSIVE"  # a drawdown of 100%: the band-1 cap 10 halves
    events = when(state, cmd.place("o1", quantity="0.001", ts_ns=T0 + S))
    assert checks(events)["leverage"] == ("no equity", "5.0000", "fail")


# --- tail risk --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exponent, breach", [("2.1999", True), ("2.2", False), ("2.2000", False), ("4", False)]
)
def test_the_tail_minimum_is_a_strict_bound(brain, when, cmd, exponent, breach):
    at(cmd, 1)
    events = when(brain, cmd.tail("SOLUSDT", exponent))
    assert data(events, TAIL)["breach"] is breach
    assert (BREAKER in types(events)) is breach


def test_a_later_estimate_above_the_minimum_clears_the_tail_trigger(brain, given, core, cmd):
    at(cmd, 1)
    state = given(cmd.tail("BTCUSDT", "1.5"), cmd.tail("SOLUSDT", "3"), state=brain)
    active = core.brain.triggers(state.brain, state.policy.risk)
    assert [(t.name, t.values) for t in active] == [
        ("tail_risk", {"BTCUSDT": "1.5000", "min_tail_exponent": "2.2000"})
    ]
    at(cmd, 2)
    state = given(cmd.tail("BTCUSDT", "2.6"), state=state)
    assert core.brain.triggers(state.brain, state.policy.risk) == []
    assert state.brain.clear_since_ns == T0 + 2 * S


def test_a_tail_estimate_finer_than_four_decimals_is_refused(brain, when, then, cmd):
    at(cmd, 1)
    assert then(when(brain, cmd.tail("BTCUSDT", "2.12345"))) == [
        (
            REFUSED,
            {
                "command_type": "RecordTailRisk",
                "reason": "INVALID_SNAPSHOT",
                "detail": {
                    "tail_exponent": "2.12345",
                    "accepted": "a decimal with at most 4 decimals",
                },
            },
        )
    ]


def test_a_snapshot_equity_finer_than_the_money_scale_is_refused(brain, when, cmd):
    at(cmd, 1)
    events = when(brain, cmd.snapshot(equity="1.000000001"))
    assert reason(events) == "INVALID_SNAPSHOT"


# --- budgets ----------------------------------------------------------------------------------


def test_the_day_rolls_at_midnight_utc_of_command_time_and_resets_the_daily_loss(
    brain, given, when, then, cmd, view
):
    state = hold(given, cmd, brain, "b1", fee="0.5")
    assert view(state)["budget"] == {"day": DAY0, "day_pnl": "-0.5"}
    agreeing = {"BTCUSDT": "0.100"}
    last_ns = when(state, cmd.snapshot(positions=agreeing, ts_ns=MIDNIGHT - 1))
    assert types(last_ns) == [TRUTH]
    events = when(state, cmd.snapshot(positions=agreeing, ts_ns=MIDNIGHT))
    assert then(events)[0] == (
        DAY_ROLLED,
        {"from_day": DAY0, "to_day": DAY0 + 1, "closed_day_pnl": "-0.5"},
    )
    assert types(events) == [DAY_ROLLED, TRUTH]
    rolled = given(*events, state=state)
    assert view(rolled)["budget"] == {"day": DAY0 + 1, "day_pnl": "0"}
    next_day_end = cmd.snapshot(positions=agreeing, ts_ns=MIDNIGHT + NS_PER_DAY - 1)
    assert types(when(rolled, next_day_end)) == [TRUTH]


def test_the_daily_loss_halt_can_be_resumed_after_the_day_rolls(brain, given, when, then, cmd):
    state = lose(given, cmd, brain, "63000.0")
    state = given(cmd.fill("ord-s1", "f-s1", "1.000", "63000.0"), state=state)
    assert state.brain.breaker == "HALTED"
    assert then(when(state, cmd.resume(ts_ns=MIDNIGHT - 1))) == [
        (
            REFUSED,
            {
                "command_type": "Resume",
                "reason": "RESUME_BLOCKED",
                "detail": {"daily_loss": "HALTED"},
            },
        )
    ]
    events = when(state, cmd.resume(ts_ns=MIDNIGHT))
    assert types(events) == [DAY_ROLLED, BREAKER]
    assert transition(events)["to_state"] == "NORMAL"


def test_daily_loss_limit_refuses_new_risk(given, when, cmd):
    cmd.now_ns = T0
    # in this policy the daily loss only turns the breaker DEFENSIVE, so the check decides
    sections = cmd.brain_sections(budget={"daily_loss_breaker": "DEFENSIVE"})
    state = given(cmd.activate(brain=sections), cmd.snapshot())
    state = lose(given, cmd, state, "63000.0")
    state = given(cmd.fill("ord-s1", "f-s1", "1.000", "63000.0"), state=state)
    assert state.brain.breaker == "DEFENSIVE"
    at(cmd, 3)
    events = when(state, cmd.place("n", quantity="0.001"))
    assert reason(events) == "DAILY_LOSS_LIMIT"
    assert checks(events)["daily_loss"] == ("2000", "2000", "fail")
    assert checks(events)["drawdown_bps"] == ("200", "500", "pass")  # 98 000 of 100 000


def test_under_the_default_levels_a_daily_loss_refuses_as_breaker_halted(brain, given, when, cmd):
    state = lose(given, cmd, brain, "63000.0")
    state = given(cmd.fill("ord-s1", "f-s1", "1.000", "63000.0"), state=state)
    at(cmd, 3)
    events = when(state, cmd.place("n", quantity="0.001"))
    assert reason(events) == "BREAKER_HALTED"
    assert checks(events)["daily_loss"] == ("2000", "2000", "fail")


def test_max_drawdown_refuses_new_risk(brain, given, when, cmd):
    at(cmd, 1)
    state = given(cmd.snapshot(equity="95000"), state=brain)
    assert state.brain.breaker == "DEFENSIVE"
    events = when(state, cmd.place("n", quantity="0.001"))
    assert reason(events) == "MAX_DRAWDOWN"
    assert checks(events)["drawdown_bps"] == ("500", "500", "fail")
    held = hold(given, cmd, brain, "b1")
    held = given(cmd.snapshot(equity="95000", positions={"BTCUSDT": "0.100"}), state=held)
    reducing = when(held, cmd.place("r", side="SELL", reduce_only=True))
    assert types(reducing) == [ACCEPTED]
    assert checks(reducing)["drawdown_bps"] == ("500", "500", "pass")


def test_the_peak_rises_with_snapshots_and_profitable_fills(brain, given, view, cmd):
    at(cmd, 1)
    state = given(cmd.snapshot(equity="120000"), state=brain)
    state = hold(given, cmd, state, "b1", quantity="1.000")
    state = hold(given, cmd, state, "s1", side="SELL", quantity="1.000", price="65500.0")
    assert view(state)["peak_equity"] == "120500"
    state = given(cmd.snapshot(equity="114475", positions={}), state=state)
    assert view(state)["drawdown_bps"] == 500  # 6 025 * 10 000 // 120 500
    assert state.brain.breaker == "DEFENSIVE"


# --- Flatten ----------------------------------------------------------------------------------


def flattenable(given: Any, cmd: Any, state: Any) -> Any:
    """Long 0.100 BTCUSDT (mark 65 000.0), short 10 SOLUSDT (mark 150.00), one open BTC buy."""
    state = hold(given, cmd, state, "b1")
    state = hold(
        given, cmd, state, "s1", side="SELL", quantity="10", price="150.00", symbol="SOLUSDT"
    )
    at(cmd, 2)
    return given(
        cmd.place("open", quantity="0.050", price="64900.0", reference_price="65000.0"), state=state
    )


def test_flatten_halts_cancels_every_open_order_and_closes_every_position(
    brain, given, when, then, cmd, view
):
    state = flattenable(given, cmd, brain)
    at(cmd, 3)
    events = when(state, cmd.flatten("fl", reason="end of the world"))
    flatten_checks = [
        {"check": "policy_hash", "value": "policy-A", "limit": "policy-A", "verdict": "pass"},
    ]
    assert then(events) == [
        (
            BREAKER,
            {
                "from_state": "NORMAL",
                "to_state": "HALTED",
                "trigger": "operator_flatten",
                "reason": "end of the world",
                "values": {},
            },
        ),
        (CANCEL_REQUESTED, {"order_id": "ord-open", "reason": "flatten: end of the world"}),
        (
            ACCEPTED,
            {
                "order_id": "ord-fl.0",
                "client_order_id": "flatten-fl.0",
                "venue": "paper",
                "symbol": "BTCUSDT",
                "side": "SELL",
                "order_type": "LIMIT",
                "quantity": "0.100",
                "price": "64025.0",  # 65 000.0 less the 150 bps collar, on the tick
                "reference_price": "65000.0",
                "reduce_only": True,
                "phase_id": 0,
                "intent_id": "",
                "notional": "6402.5",
                "checks": flatten_checks
                + [
                    {
                        "check": "flatten",
                        "value": "0.100",
                        "limit": "closes the position",
                        "verdict": "pass",
                    }
                ],
            },
        ),
        (
            ACCEPTED,
            {
                "order_id": "ord-fl.1",
                "client_order_id": "flatten-fl.1",
                "venue": "paper",
                "symbol": "SOLUSDT",
                "side": "BUY",
                "order_type": "LIMIT",
                "quantity": "10.0",
                "price": "152.25",  # 150.00 plus 150 bps
                "reference_price": "150.00",
                "reduce_only": True,
                "phase_id": 0,
                "intent_id": "",
                "notional": "1522.5",
                "checks": flatten_checks
                + [
                    {
                        "check": "flatten",
                        "value": "-10.0",
                        "limit": "closes the position",
                        "verdict": "pass",
                    }
                ],
            },
        ),
    ]

    flattened = given(*events, state=state)
    at(cmd, 4)
    done = given(
        cmd.cancelled("ord-open"),
        cmd.fill("ord-fl.0", "x1", "0.100", "64025.0"),
        cmd.fill("ord-fl.1", "x2", "10.0", "152.25"),
        state=flattened,
    )
    assert view(done)["open_orders"] == []
    assert [p["quantity"] for p in view(done)["positions"]] == ["0.000", "0.0"]
    assert done.brain.breaker == "HALTED"


@pytest.mark.parametrize(
    "mark, sell_at, buy_at",
    [
        # on the tick already
        ("150.00", "147.75", "152.25"),
        # 147.799.. and 152.300.. rounded onto the tick toward the mark (inside the collar)
        ("150.05", "147.80", "152.30"),
    ],
)
def test_flatten_prices_sit_on_the_tick_at_the_collar(
    brain, given, when, cmd, mark, sell_at, buy_at
):
    long = hold(given, cmd, brain, "l", quantity="10", price=mark, symbol="SOLUSDT")
    short = hold(given, cmd, brain, "s", side="SELL", quantity="10", price=mark, symbol="SOLUSDT")
    at(cmd, 2)
    assert data(when(long, cmd.flatten("fl")), ACCEPTED)["price"] == sell_at
    assert data(when(short, cmd.flatten("fl")), ACCEPTED)["price"] == buy_at


def test_flatten_when_halted_adds_no_transition_and_skips_cancels_already_asked(
    brain, given, when, cmd
):
    state = flattenable(given, cmd, brain)
    state = given(cmd.halt(), cmd.cancel("ord-open"), state=state)
    at(cmd, 3)
    events = when(state, cmd.flatten("fl"))
    assert types(events) == [ACCEPTED, ACCEPTED]


def test_flatten_with_nothing_open_only_halts(brain, when, cmd):
    at(cmd, 1)
    assert types(when(brain, cmd.flatten("fl"))) == [BREAKER]


def test_flatten_with_a_wrong_policy_hash_is_refused(brain, given, when, then, cmd):
    state = flattenable(given, cmd, brain)
    at(cmd, 3)
    assert then(when(state, cmd.flatten("fl", policy_hash="policy-B"))) == [
        (
            REFUSED,
            {
                "command_type": "Flatten",
                "reason": "POLICY_HASH_MISMATCH",
                "detail": {"policy_hash": "policy-B", "active_policy_hash": "policy-A"},
            },
        )
    ]


def test_flatten_before_any_policy_is_refused(when, cmd, core):
    assert (
        when(core.decider.initial_state("a"), cmd.flatten("fl"))[0].to_data()["reason"]
        == "NO_ACTIVE_POLICY"
    )


# --- policies without the Brain's sections ------------------------------------------------------


def test_brain_commands_need_their_policy_section(given, when, then, cmd):
    cmd.now_ns = T0
    state = given(cmd.activate())
    for command, name, section in [
        (cmd.snapshot(), "RecordTruthSnapshot", "truth"),
        (cmd.regime("CRASH"), "SetRegime", "allocation"),
        (cmd.tail("BTCUSDT", "1.5"), "RecordTailRisk", "tail_risk"),
    ]:
        assert then(when(state, command)) == [
            (
                REFUSED,
                {
                    "command_type": name,
                    "reason": "POLICY_SECTION_MISSING",
                    "detail": {"section": section},
                },
            )
        ]
    # one section present is not enough for the others
    partial = given(
        cmd.activate("policy-B", brain=cmd.brain_sections(without=("truth", "tail_risk"))),
        state=state,
    )
    assert reason(when(partial, cmd.snapshot())) == "POLICY_SECTION_MISSING"
    assert types(when(partial, cmd.regime("CRASH"))) == [DAY_ROLLED, REGIME]


def test_a_policy_without_brain_sections_records_exactly_the_pre_brain_checks(
    given, when, cmd, run
):
    cmd.now_ns = T0
    state = given(cmd.activate())
    # a loss of 3 400 with fees, across midnight, and a phase 3 order: no Brain event, no check
    commands = [
        cmd.place("o1", ts_ns=T0 + S),
        cmd.ack("ord-o1", ts_ns=T0 + S + 2000 * MS),
        cmd.fill("ord-o1", "f1", "0.100", "64000.0", fee="3000", ts_ns=T0 + 4 * S),
        cmd.place("o2", side="SELL", reduce_only=True, price="60000.0", ts_ns=MIDNIGHT),
        cmd.fill("ord-o2", "f2", "0.100", "60000.0", ts_ns=MIDNIGHT + S),
        cmd.place("o3", quantity="3", ts_ns=MIDNIGHT + 2 * S),
        cmd.place("o4", phase_id=3, ts_ns=MIDNIGHT + 3 * S),
    ]
    state, events = run(state, *commands)
    assert types(events) == [
        ACCEPTED,
        "order.acknowledged.v1",
        FILLED,
        ACCEPTED,
        FILLED,
        REJECTED,
        ACCEPTED,
    ]
    for event in events:
        if event.type_name() in (ACCEPTED, REJECTED):
            names = [c["check"] for c in event.to_data()["checks"]]
            reducing = ["reduce_only"] if event.to_data()["reduce_only"] else []
            assert names == PRE_BRAIN_CHECKS[:-1] + reducing + PRE_BRAIN_CHECKS[-1:]
    assert state.brain.day == 0 and state.brain.breaker == "NORMAL"


@pytest.mark.parametrize(
    "section, added",
    [
        ("truth", ["truth_score"]),
        ("breaker", ["breaker"]),
        ("venue_quality", ["venue_status"]),
        ("allocation", ["phase", "leverage"]),
        ("tail_risk", []),
        ("budget", ["daily_loss", "drawdown_bps"]),
        ("all", BRAIN_CHECKS),
    ],
)
def test_each_brain_section_adds_only_its_own_checks(given, when, cmd, section, added):
    cmd.now_ns = T0
    kept = SECTIONS if section == "all" else (section,)
    only = cmd.brain_sections(without=tuple(name for name in SECTIONS if name not in kept))
    state = given(cmd.activate(brain=only))
    names = list(checks(when(state, cmd.place("o1", ts_ns=T0 + S))))
    assert names == PRE_BRAIN_CHECKS[:5] + added + PRE_BRAIN_CHECKS[5:]


# --- decoding the Brain's events -------------------------------------------------------------


def test_every_brain_event_decodes_to_itself_and_evolves_to_the_same_state(
    brain, cmd, core, decode, view
):
    commands = [
        cmd.place("o1", ts_ns=T0 + S),
        cmd.ack("ord-o1", ts_ns=T0 + S + 300 * MS),  # DEGRADED
        cmd.fill("ord-o1", "f1", "0.100", "65000.0", fee="0.5", ts_ns=T0 + 2 * S),
        cmd.snapshot(positions={"BTCUSDT": "0.090"}, open_order_ids=["x1"], ts_ns=T0 + 3 * S),
        cmd.regime("RISK_OFF", ts_ns=T0 + 4 * S),
        cmd.tail("BTCUSDT", "1.7", ts_ns=T0 + 5 * S),
        cmd.place("o2", quantity="0.010", phase_id=2, ts_ns=T0 + 6 * S),
        cmd.halt(ts_ns=T0 + 7 * S),
        cmd.flatten("fl", ts_ns=MIDNIGHT),
        cmd.tail("BTCUSDT", "2.9", ts_ns=MIDNIGHT + S),
        cmd.snapshot(
            positions={"BTCUSDT": "0.100"},
            open_order_ids=["ord-o2", "ord-fl.0"],
            ts_ns=MIDNIGHT + 2 * S,
        ),
        cmd.resume(ts_ns=MIDNIGHT + 3 * S),
    ]
    state = brain
    seen: list[str] = []
    for command in commands:
        for event in core.decider.decide(command, state):
            decoded = decode(state, event)
            assert decoded.type_name() == event.type_name()
            assert decoded.ts_ns == event.ts_ns
            assert decoded.to_data() == event.to_data()
            live = core.decider.evolve(state, event)
            assert view(core.decider.evolve(state, decoded)) == view(live)
            seen.append(event.type_name())
            state = live
    assert {TRUTH, BREAKER, VENUE, REGIME, TAIL, DAY_ROLLED, CANCEL_REQUESTED, ACCEPTED} <= set(
        seen
    )
    assert state.brain.breaker == "NORMAL"
