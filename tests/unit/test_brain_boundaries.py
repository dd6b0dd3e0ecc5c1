"""The Brain's comparisons at their exact boundaries, as given / when / then.

Each test sits on a limit and one step past it, so that a comparison turned around (`<` for
`<=`, `>` for `>=`) changes what it records. Fixtures, times and the test policy are those of
tests/unit/test_brain.py (conftest: the shipped default's thresholds, a venue window of 4 samples
and 600 000 ms): T0 = 2026-01-01 12:00:00 UTC, `brain` is activated and snapshotted at T0.

Truth scores here: (40*drift + 15*orphans + 15*missing + 15*staleness + 15*latency) // 100, with
drift 100 - drift_usdt*100 // 1000, staleness 100 - age_ms*100 // 5000 and latency
100 - latency_ms*100 // 2000.
"""

from __future__ import annotations

from typing import Any

import pytest

T0 = 1_767_268_800_000_000_000  # 2026-01-01 12:00:00 UTC
S = 1_000_000_000
MS = 1_000_000

TRUTH = "truth.snapshot_recorded.v1"
BREAKER = "breaker.transitioned.v1"
VENUE = "venue.status_changed.v1"
ACCEPTED = "order.accepted.v1"
REJECTED = "order.rejected.v1"
WINDOW_MS = 600_000  # conftest BRAIN["venue_quality"]["window_ms"]


def types(events: list[Any]) -> list[str]:
    return [event.type_name() for event in events]


def data(events: list[Any], type_name: str) -> dict[str, Any]:
    """The data of the one event of a type among the events."""
    matching = [event.to_data() for event in events if event.type_name() == type_name]
    assert len(matching) == 1, f"expected one {type_name} in {types(events)}"
    found: dict[str, Any] = matching[0]
    return found


def check(events: list[Any], name: str) -> tuple[str, str, str]:
    """One check of the order event among the events: (value, limit, verdict)."""
    decided = [e.to_data() for e in events if e.type_name() in (ACCEPTED, REJECTED)]
    assert len(decided) == 1, types(events)
    found = [(c["value"], c["limit"], c["verdict"]) for c in decided[0]["checks"] if c["check"] == name]
    assert len(found) == 1, decided[0]["checks"]
    return found[0]


@pytest.fixture
def brain(cmd: Any, given: Any) -> Any:
    """Activated with every Brain section and snapshotted at T0: score 100, nothing held."""
    cmd.now_ns = T0
    return given(cmd.activate(brain=cmd.brain_sections()), cmd.snapshot())


def long_at_62500(given: Any, cmd: Any, state: Any) -> Any:
    """Long 0.100 BTCUSDT filled at 62 500.0 (the mark) at T0 + 1 s: each 0.001 of drift is 62.5 USDT."""
    cmd.now_ns = T0 + S
    state = given(cmd.place("b1", quantity="0.100", price="62500.0"), state=state)
    return given(cmd.fill("ord-b1", "f-b1", "0.100", "62500.0"), state=state)


# --- truth score against defensive_below (80) and halt_below (40) -----------------------------


@pytest.mark.parametrize(
    "latency_ms, expected_score, breaker",
    [
        (0, 80, None),  # drift 500 USDT: (40*50 + 15*400) // 100 = 80, not below 80
        (20, 79, "DEFENSIVE"),  # one latency point less: (2000 + 4500 + 15*99) // 100 = 79
    ],
)
def test_a_score_exactly_at_defensive_below_keeps_the_breaker_normal(
    brain, given, when, cmd, latency_ms, expected_score, breaker
):
    state = long_at_62500(given, cmd, brain)
    cmd.now_ns = T0 + 2 * S
    events = when(state, cmd.snapshot(positions={"BTCUSDT": "0.092"}, latency_ms=latency_ms))
    assert data(events, TRUTH)["score"] == expected_score
    if breaker is None:
        assert types(events) == [TRUTH]
    else:
        assert types(events) == [TRUTH, BREAKER]
        assert data(events, BREAKER) == {
            "from_state": "NORMAL",
            "to_state": breaker,
            "trigger": "truth_score",
            "reason": "",
            "values": {"truth_score": "79", "venue": "paper", "defensive_below": "80"},
        }


@pytest.mark.parametrize(
    "latency_ms, expected_score, breaker, threshold",
    [
        # drift 6 250 (score 0), no orders missing or orphaned, 5 000 ms stale (0), latency 600 ms:
        # (15*100 + 15*100 + 15*70) // 100 = 40, not below 40: DEFENSIVE, not HALTED
        (600, 40, "DEFENSIVE", {"defensive_below": "80"}),
        (680, 39, "HALTED", {"halt_below": "40"}),  # latency 66: 3990 // 100 = 39
    ],
)
def test_a_score_exactly_at_halt_below_turns_the_breaker_defensive_not_halted(
    brain, given, when, cmd, latency_ms, expected_score, breaker, threshold
):
    state = long_at_62500(given, cmd, brain)
    cmd.now_ns = T0 + 2 * S
    snapshot = cmd.snapshot(
        positions={"BTCUSDT": "0"}, venue_ts_ns=cmd.now_ns - 5000 * MS, latency_ms=latency_ms
    )
    events = when(state, snapshot)
    assert data(events, TRUTH)["score"] == expected_score
    assert types(events) == [TRUTH, BREAKER]
    assert data(events, BREAKER) == {
        "from_state": "NORMAL",
        "to_state": breaker,
        "trigger": "truth_score",
        "reason": "",
        "values": {"truth_score": str(expected_score), "venue": "paper", **threshold},
    }


# --- two venues tied on the lowest score ------------------------------------------------------


def score_70(cmd: Any, venue: str) -> Any:
    """A snapshot scoring 70 for any venue holding nothing: 5 000 ms stale and 2 000 ms late."""
    return cmd.snapshot(venue, venue_ts_ns=cmd.now_ns - 5000 * MS, latency_ms=2000)


@pytest.mark.parametrize("arrival", [("paper", "binance"), ("binance", "paper")])
def test_two_venues_tied_on_the_lowest_score_record_the_first_by_name(given, when, cmd, arrival):
    # Under a policy that turns DEFENSIVE only below 60, both venues score 70 and nothing trips;
    # the next policy says 80, so the first command decided under it escalates on a tie.
    cmd.now_ns = T0
    lenient = cmd.brain_sections(truth={"defensive_below": 60})
    state = given(cmd.activate(brain=lenient), *[score_70(cmd, venue) for venue in arrival])
    assert {venue: reading.score for venue, reading in state.brain.truth.items()} == {
        "paper": 70,
        "binance": 70,
    }
    assert state.brain.breaker == "NORMAL"
    cmd.now_ns = T0 + S
    state = given(cmd.activate("policy-B", brain=cmd.brain_sections()), state=state)
    events = when(state, cmd.regime("RISK_ON"))
    assert data(events, BREAKER) == {
        "from_state": "NORMAL",
        "to_state": "DEFENSIVE",
        "trigger": "truth_score",
        "reason": "",
        # whichever reported first, the tie names the venue first in name order
        "values": {"truth_score": "70", "venue": "binance", "defensive_below": "80"},
    }


def test_the_tied_trigger_names_the_same_venue_whatever_the_arrival_order(given, cmd, core):
    named = []
    for arrival in [("paper", "binance"), ("binance", "paper"), ("paper", "binance")]:
        cmd.now_ns = T0
        state = given(cmd.activate(brain=cmd.brain_sections()), *[score_70(cmd, v) for v in arrival])
        assert list(state.brain.truth) == list(arrival)  # the readings are held in arrival order
        active = core.brain.triggers(state.brain, state.policy.risk)
        named.append([(t.name, t.level, dict(t.values)) for t in active])
    expected = ("truth_score", "DEFENSIVE", {"truth_score": "70", "venue": "binance", "defensive_below": "80"})
    assert named == [[expected]] * 3


# --- a venue-quality sample exactly window_ms old ----------------------------------------------


@pytest.mark.parametrize(
    "age_ms, status_change",
    [
        (WINDOW_MS - 1, None),  # 1 ms younger than the window: still counted, still HALTED
        (WINDOW_MS, ("HALTED", "OK", 0, 0)),  # exactly window_ms old: no longer counted
        (WINDOW_MS + 1, ("HALTED", "OK", 0, 0)),
    ],
)
def test_a_venue_sample_exactly_window_ms_old_no_longer_counts(
    brain, given, when, cmd, age_ms, status_change
):
    acked = T0 + 2 * S
    state = given(
        cmd.place("o1", quantity="0.001", ts_ns=T0 + S),
        cmd.ack("ord-o1", ts_ns=acked),  # 1 000 ms after acceptance: the venue HALTS
        state=brain,
    )
    assert state.brain.venues["paper"].status == "HALTED"
    events = when(state, cmd.snapshot(ts_ns=acked + age_ms * MS))
    changes = [
        (d["from_status"], d["to_status"], d["mean_ack_latency_ms"], d["samples"])
        for d in (e.to_data() for e in events if e.type_name() == VENUE)
    ]
    assert changes == ([] if status_change is None else [status_change])


# --- leverage exactly at the cap ----------------------------------------------------------------


@pytest.fixture
def leveraged(cmd: Any, given: Any) -> Any:
    """Equity 10 000 USDT (band 1: cap 10x), long 1.000 BTCUSDT at a mark of 65 000."""
    cmd.now_ns = T0
    sections = cmd.brain_sections(allocation={"initial_equity": "10000"})
    state = given(cmd.activate(brain=sections), cmd.snapshot(equity="10000"))
    cmd.now_ns = T0 + S
    state = given(cmd.place("b1", quantity="1.000"), state=state)
    state = given(cmd.fill("ord-b1", "f-b1", "1.000", "65000.0"), state=state)
    cmd.now_ns = T0 + 2 * S
    return state


def test_leverage_exactly_at_the_cap_is_accepted(leveraged, when, cmd):
    # 65 000 + 0.560 x 62 500.0 = 100 000 over 10 000: exactly 10x
    events = when(leveraged, cmd.place("at", quantity="0.560", price="62500.0"))
    assert check(events, "leverage") == ("10.0000", "10.0000", "pass")
    assert types(events) == [ACCEPTED]


def test_leverage_one_step_over_the_cap_is_rejected(leveraged, when, cmd):
    # 65 000 + 0.560 x 62 501.8 = 100 001.008 over 10 000: 10.0001x, the smallest step over
    events = when(leveraged, cmd.place("over", quantity="0.560", price="62501.8"))
    assert check(events, "leverage") == ("10.0001", "10.0000", "fail")
    assert types(events) == [REJECTED]
    assert data(events, REJECTED)["reason"] == "MAX_LEVERAGE"
