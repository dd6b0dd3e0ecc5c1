"""Properties of the execution core over random command sequences (hypothesis).

- the compiled and the interpreted cores produce byte-identical events;
- folding the recorded events (through their wire data) reproduces the live state;
- a duplicate command appends nothing and returns the original outcome.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commands.translate import to_core
from commands.views import state_view
from infra.bootstrap import bootstrap, open_ledger
from infra.core import CoreUnavailableError, load_core
from infra.settings import Settings
from infra.submit import default_policy
from schemas import commands as wire
from schemas.canonical import canonical_bytes
from schemas.policy import policy_hash

ACCOUNT = "prop"
T0 = 1_767_225_600_000_000_000
POLICY = default_policy()
HASH = policy_hash(POLICY)

SYMBOLS = {"BTCUSDT": ("0.1", "0.001"), "ETHUSDT": ("0.01", "0.01"), "DOGEUSDT": ("0.01", "1")}

place_step = st.tuples(
        st.just("place"),
        st.sampled_from(sorted(SYMBOLS)),
        st.sampled_from(["BUY", "SELL"]),
        st.one_of(st.integers(1, 300), st.integers(1, 3000)),  # quantity in steps (some off-limit)
        st.integers(-300, 300),  # price offset in ticks from the reference
        st.sampled_from(["paper", "paper", "paper", "paper", "paper", "binance"]),
        st.sampled_from([False, False, False, False, True]),  # reduce only
        st.sampled_from([HASH, HASH, HASH, HASH, HASH, "f" * 64]),
        st.integers(0, 9),  # client id (collisions wanted)
)
step = st.one_of(
    place_step,
    place_step,
    st.tuples(st.just("ack"), st.integers(0, 40)),
    st.tuples(st.just("fill"), st.integers(0, 40), st.integers(1, 600), st.integers(0, 5)),
    st.tuples(st.just("cancel"), st.integers(0, 40)),
    st.tuples(st.just("cancelled"), st.integers(0, 40)),
    st.tuples(st.just("venue_reject"), st.integers(0, 40)),
    st.tuples(st.just("arm"), st.booleans()),
    st.tuples(st.just("stale"), st.integers(0, 3)),
)


def fmt(units: int, decimals: int) -> str:
    return f"{units // 10**decimals}.{units % 10**decimals:0{decimals}d}"


def build(steps: list[tuple[Any, ...]], gaps: list[int]) -> list[wire.AnyCommand]:
    """Wire commands for a list of steps. Order references mostly point at orders open at that
    moment (the interpreted core, deciding as the list grows, is the oracle), sometimes at
    closed or never-seen ones."""
    oracle = load_core("interpreted")
    state = oracle.decider.initial_state(ACCOUNT)
    commands: list[wire.AnyCommand] = []

    def add(command: wire.AnyCommand) -> None:
        nonlocal state
        commands.append(command)
        for event in oracle.decider.decide(to_core(command, oracle), state):
            state = oracle.decider.evolve(state, event)

    add(wire.ActivatePolicy(command_id="p0", account_id=ACCOUNT, ts_ns=T0, actor="t", policy=POLICY))
    placed: list[tuple[str, str, int]] = []
    ts = T0
    for i, s in enumerate(steps):
        ts += gaps[i % len(gaps)]
        cid = f"c{i}"
        common: dict[str, Any] = {"command_id": cid, "account_id": ACCOUNT, "ts_ns": ts, "actor": "t"}
        kind = s[0]
        if kind == "place":
            _, symbol, side, qty_steps, offset, venue, reduce_only, digest, client = s
            tick, lot = SYMBOLS[symbol]
            ref_ticks = 650_000 if symbol == "BTCUSDT" else 340_000
            decimals = len(tick.split(".")[1])
            price = ref_ticks + offset
            qd = len(lot.split(".")[1]) if "." in lot else 0
            qty = f"{qty_steps // 10**qd}.{qty_steps % 10**qd:0{qd}d}" if qd else str(qty_steps)
            add(
                wire.PlaceOrder(
                    **common, policy_hash=digest, phase_id=1, intent_id=cid, client_order_id=f"k{client}",
                    venue=venue, symbol=symbol, side=side, quantity=qty, price=fmt(price, decimals),
                    reference_price=fmt(ref_ticks, decimals), reduce_only=reduce_only,
                )
            )
            placed.append(("ord-" + cid, symbol, qty_steps))
            continue
        open_now = [p for p in placed if p[0] in state.open_orders]
        if open_now and s[1] < 34:
            target, symbol, qty_steps = open_now[s[1] % len(open_now)]
        elif placed and s[1] < 38:
            target, symbol, qty_steps = placed[s[1] % len(placed)]
        else:
            target, symbol, qty_steps = ("ord-none", "BTCUSDT", 1)
        if kind == "ack":
            add(wire.RecordOrderAck(**common, order_id=target, venue_order_id="v" + cid))
        elif kind == "fill":
            fill_id = f"f{s[3]}-{target}"
            lot_steps = max(1, min(s[2], qty_steps))
            qd = 3 if symbol == "BTCUSDT" else 2
            quantity = f"{lot_steps // 10**qd}.{lot_steps % 10**qd:0{qd}d}"
            price = "65000.0" if symbol == "BTCUSDT" else "3400.00"
            add(
                wire.RecordFill(**common, order_id=target, fill_id=fill_id, quantity=quantity, price=price, fee="0.5")
            )
        elif kind == "cancel":
            add(wire.CancelOrder(**common, order_id=target, reason="test"))
        elif kind == "cancelled":
            add(wire.RecordCancelled(**common, order_id=target, venue_reason="test"))
        elif kind == "venue_reject":
            add(wire.RecordVenueReject(**common, order_id=target, venue_reason="test"))
        elif kind == "arm":
            cls = wire.Arm if s[1] else wire.Disarm
            add(cls(**common, reason="test"))
        elif s[1] == 0:
            common["ts_ns"] = T0 - 1
            add(wire.Disarm(**common, reason="stale"))
    return commands


def run(core: Any, commands: list[wire.AnyCommand]) -> tuple[bytes, Any, list[tuple[str, int, Any]]]:
    state = core.decider.initial_state(ACCOUNT)
    recorded: list[tuple[str, int, Any]] = []
    for command in commands:
        for event in core.decider.decide(to_core(command, core), state):
            recorded.append((event.type_name(), event.ts_ns, event.to_data()))
            state = core.decider.evolve(state, event)
    return canonical_bytes(recorded), state, recorded


def _cores() -> list[Any]:
    cores = [load_core("interpreted")]
    try:
        cores.insert(0, load_core("compiled"))
    except CoreUnavailableError:
        pass
    return cores


sequences = st.tuples(st.lists(step, min_size=1, max_size=60), st.lists(st.integers(0, 400_000_000), min_size=1, max_size=5))
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(sequences)
def test_compiled_and_interpreted_cores_record_identical_bytes(seq: tuple[list[Any], list[int]]) -> None:
    cores = _cores()
    if len(cores) < 2:
        pytest.skip("the compiled core is not built in this environment (no C compiler at install)")
    commands = build(*seq)
    compiled_bytes, _, _ = run(cores[0], commands)
    interpreted_bytes, _, _ = run(cores[1], commands)
    assert compiled_bytes == interpreted_bytes


@FAST
@given(sequences)
def test_folding_recorded_events_reproduces_the_live_state(seq: tuple[list[Any], list[int]]) -> None:
    for core in _cores():
        _, live, recorded = run(core, build(*seq))
        replayed = core.decider.initial_state(ACCOUNT)
        for type_name, ts_ns, data in recorded:
            replayed = core.decider.evolve(replayed, core.events.decode_event(type_name, ts_ns, data, replayed))
        assert canonical_bytes(state_view(core, replayed)) == canonical_bytes(state_view(core, live))
        assert replayed.last_ts_ns == live.last_ts_ns
        assert replayed.order_times_ns == live.order_times_ns
        assert replayed.message_times_ns == live.message_times_ns
        assert sorted(replayed.closed_orders) == sorted(live.closed_orders)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequences, st.data())
def test_a_duplicate_command_appends_nothing_and_returns_the_original_outcome(seq: tuple[list[Any], list[int]], data: st.DataObject) -> None:
    ledger = open_ledger("sqlite:///:memory:")
    bus = bootstrap(Settings(ledger_url="sqlite:///:memory:"), ledger=ledger)
    commands = build(*seq)
    outcomes = [bus.handle(c) for c in commands]
    head = ledger.head()
    index = data.draw(st.integers(0, len(commands) - 1))
    again = bus.handle(commands[index])
    assert ledger.head() == head
    assert again.outcome == "duplicate"
    assert again.reason == outcomes[index].reason
    assert again.position == outcomes[index].position
    assert [e["event_id"] for e in again.events] == [e["event_id"] for e in outcomes[index].events]
    ledger.close()
