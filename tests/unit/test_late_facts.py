"""Rules version 2: late venue reports are facts, the kill switch always works, a venue fill id
counts once (docs/decisions.md, "Decider rules"). Rules version 1 (a policy without
`rules_version`) keeps deciding exactly as before: recorded ledgers replay byte for byte."""

from __future__ import annotations

from typing import Any

import pytest

RULES_V2 = {"rules_version": 2}
T = 10_000_000_000  # the account's last decided time in these scenarios
EARLY = T - 5_000_000_000


def v2_with_open_order(cmd: Any, given: Any, *, brain: dict[str, Any] | None = None) -> Any:
    """An account under rules 2 with order ord-o1 open (accepted at 0) and its clock at T."""
    sections = {**(brain or {}), **RULES_V2}
    first = [cmd.snapshot(ts_ns=0)] if "truth" in sections else []
    return given(
        cmd.activate(brain=sections),
        *first,
        cmd.place("o1"),
        cmd.cancel("ord-o1", ts_ns=T, reason="later request"),
    )


def types(events: list[Any]) -> list[str]:
    return [event.type_name() for event in events]


def test_a_late_fill_is_counted_at_the_account_time(cmd, given, when, then) -> None:
    state = v2_with_open_order(cmd, given)
    events = when(state, cmd.fill("ord-o1", "F1", ts_ns=EARLY))
    assert types(events) == ["order.filled.v1"]
    assert events[0].ts_ns == T  # decided at the account's time; the command record keeps EARLY
    data = then(events)[0][1]
    assert data["fill_id"] == "F1" and data["quantity"] == "0.100"


@pytest.mark.parametrize("report", ["ack", "venue_reject", "cancelled", "snapshot"])
def test_every_late_venue_report_is_decided(cmd, given, when, then, report) -> None:
    state = v2_with_open_order(cmd, given, brain={"truth": cmd.brain_sections()["truth"]})
    command = {
        "ack": lambda: cmd.ack("ord-o1", ts_ns=EARLY),
        "venue_reject": lambda: cmd.venue_reject("ord-o1", ts_ns=EARLY),
        "cancelled": lambda: cmd.cancelled("ord-o1", ts_ns=EARLY),
        "snapshot": lambda: cmd.snapshot(ts_ns=EARLY, open_order_ids=["ord-o1"], positions={}),
    }[report]()
    events = when(state, command)
    assert "command.rejected.v1" not in types(events), then(events)
    assert all(event.ts_ns == T for event in events)


def test_a_late_snapshot_is_judged_as_old_as_it_is_at_the_account_time(cmd, given, when, then) -> None:
    state = v2_with_open_order(cmd, given, brain={"truth": cmd.brain_sections()["truth"]})
    events = when(state, cmd.snapshot(ts_ns=EARLY, venue_ts_ns=EARLY, open_order_ids=["ord-o1"]))
    recorded = dict(then(events))["truth.snapshot_recorded.v1"]
    staleness = [c for c in recorded["components"] if c["component"] == "staleness_ms"]
    assert staleness[0]["value"] == "5000", staleness


@pytest.mark.parametrize("action", ["halt", "flatten"])
def test_the_kill_switch_works_after_a_command_from_the_future(cmd, given, when, action) -> None:
    future = 4_102_444_800 * 10**9  # 2100-01-01
    state = given(cmd.activate(brain=RULES_V2), cmd.place("o1", ts_ns=future))
    command = cmd.halt(ts_ns=T) if action == "halt" else cmd.flatten("fl", ts_ns=T)
    events = when(state, command)
    assert "breaker.transitioned.v1" in types(events)
    assert "command.rejected.v1" not in types(events)
    assert all(event.ts_ns == future for event in events)


@pytest.mark.parametrize("late", ["place", "resume", "arm", "regime", "tail"])
def test_requests_for_something_new_stay_refused_when_late(cmd, given, when, late) -> None:
    state = v2_with_open_order(cmd, given, brain=cmd.brain_sections())
    command = {
        "place": lambda: cmd.place("o2", ts_ns=EARLY),
        "resume": lambda: cmd.resume(ts_ns=EARLY),
        "arm": lambda: cmd.arm(ts_ns=EARLY),
        "regime": lambda: cmd.regime("RISK_OFF", ts_ns=EARLY),
        "tail": lambda: cmd.tail("BTCUSDT", "3.0", ts_ns=EARLY),
    }[late]()
    events = when(state, command)
    assert len(events) == 1
    data = events[0].to_data()
    assert data["reason"] == "STALE_COMMAND"


def test_rules_v1_still_refuses_a_late_fill(cmd, given, when) -> None:
    state = given(cmd.activate(), cmd.place("o1"), cmd.cancel("ord-o1", ts_ns=T, reason="later"))
    events = when(state, cmd.fill("ord-o1", "F1", ts_ns=EARLY))
    assert [e.to_data()["reason"] for e in events] == ["STALE_COMMAND"]


def test_a_venue_fill_id_counts_once_whichever_order_it_names(cmd, given, when) -> None:
    state = given(cmd.activate(brain=RULES_V2), cmd.place("o1"), cmd.place("o2"), cmd.fill("ord-o1", "F1", "0.050"))
    events = when(state, cmd.fill("ord-o2", "F1", "0.050"))
    data = events[0].to_data()
    assert data["reason"] == "DUPLICATE_FILL"
    assert data["detail"] == {"order_id": "ord-o2", "fill_id": "F1", "venue": "paper", "counted_on": "ord-o1"}


def test_the_same_fill_id_on_another_venue_is_another_fill(cmd, given, when) -> None:
    state = given(
        cmd.activate(brain=RULES_V2), cmd.arm(), cmd.place("o1"), cmd.place("o2", venue="binance"),
        cmd.fill("ord-o1", "F1", "0.050"),
    )
    events = when(state, cmd.fill("ord-o2", "F1", "0.050"))
    assert types(events) == ["order.filled.v1"]


def test_fill_ids_are_remembered_after_their_order_closed(cmd, given, when) -> None:
    steps = [cmd.activate(brain=RULES_V2), cmd.place("o1"), cmd.fill("ord-o1", "F1")]
    # close many orders so the old one leaves the closed-order memory; its fill id must not
    second = 10**9
    steps += [
        step
        for i in range(1, 301)
        for step in (cmd.place(f"x{i}", ts_ns=i * second), cmd.cancelled(f"ord-x{i}", ts_ns=i * second))
    ]
    state = given(*steps, cmd.place("o2", ts_ns=301 * second))
    assert "ord-o1" not in state.closed_orders  # out of the 256-order memory
    events = when(state, cmd.fill("ord-o2", "F1", ts_ns=302 * second))
    assert events[0].to_data()["reason"] == "DUPLICATE_FILL"


def test_rules_v1_counted_a_reused_fill_id_again(cmd, given, when) -> None:
    state = given(cmd.activate(), cmd.place("o1"), cmd.place("o2"), cmd.fill("ord-o1", "F1", "0.050"))
    assert types(when(state, cmd.fill("ord-o2", "F1", "0.050"))) == ["order.filled.v1"]


def test_a_state_decided_again_from_an_older_point_does_not_see_later_fills(cmd, given, core) -> None:
    """The fill memory is shared along a lineage; a branch from an older state must not see the
    fills counted after it (what-if, a retried decision)."""
    decider = core.decider
    base = given(cmd.activate(brain=RULES_V2), cmd.place("o1"), cmd.place("o2"))
    first = base
    for event in decider.decide(cmd.fill("ord-o1", "F1", "0.050"), base):
        first = decider.evolve(first, event)
    # branch from `base`: F1 was not counted there, so o2 may take it
    branch_events = decider.decide(cmd.fill("ord-o2", "F1", "0.050"), base)
    assert types(branch_events) == ["order.filled.v1"]
    branch = base
    for event in branch_events:
        branch = decider.evolve(branch, event)
    # and the first lineage still sees F1 on o1, the branch sees it on o2
    assert first.fills.counted_on("paper", "F1") == "ord-o1"
    assert branch.fills.counted_on("paper", "F1") == "ord-o2"
    assert base.fills.counted_on("paper", "F1") == ""


def test_a_policy_asks_for_rules_the_core_knows(core) -> None:
    from tests.unit.conftest import policy_document

    document = policy_document()
    document["rules_version"] = 3
    with pytest.raises(core.policy.PolicyError, match="rules_version"):
        core.policy.policy_from_document(document)


def test_a_late_ack_measures_the_venue_latency_to_its_own_stamp(cmd, given, when) -> None:
    """Decided at the account's time, but the venue answered 300 ms after acceptance: 300 ms."""
    state = given(cmd.activate(brain=RULES_V2), cmd.place("o1", ts_ns=0), cmd.cancel("ord-o1", ts_ns=T, reason="later"))
    events = when(state, cmd.ack("ord-o1", ts_ns=300_000_000))
    assert [e.type_name() for e in events] == ["order.acknowledged.v1"]
    assert events[0].ts_ns == T
    assert events[0].to_data()["ack_latency_ms"] == 300


def test_an_older_view_of_a_venue_never_replaces_a_newer_one(cmd, given, when) -> None:
    """A snapshot whose venue time is older than the one applied is kept (its command record) but
    neither scored against positions it never saw nor taken as the new equity base."""
    truth = {"truth": cmd.brain_sections()["truth"]}
    newer = cmd.snapshot(ts_ns=T, venue_ts_ns=T, equity="90000")
    state = given(cmd.activate(brain={**truth, **RULES_V2}), newer)
    events = when(state, cmd.snapshot(ts_ns=T + 1, venue_ts_ns=T - 1, equity="100000"))
    data = events[0].to_data()
    assert data["reason"] == "SNAPSHOT_SUPERSEDED"
    assert data["detail"] == {"venue": "paper", "venue_ts_ns": str(T - 1), "latest_venue_ts_ns": str(T)}
    assert state.brain.equity_base_money == 90_000 * 10**8


def test_rules_v1_still_applies_an_older_view(cmd, given, when) -> None:
    truth = {"truth": cmd.brain_sections()["truth"]}
    state = given(cmd.activate(brain=truth), cmd.snapshot(ts_ns=T, venue_ts_ns=T))
    events = when(state, cmd.snapshot(ts_ns=T + 1, venue_ts_ns=T - 1))
    assert [e.type_name() for e in events] == ["truth.snapshot_recorded.v1"]
