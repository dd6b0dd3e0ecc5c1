"""Properties of the Brain over random command sequences under the shipped default policy.

Sequences mix orders, acks, fills (with slippage), cancels, truth snapshots (exact or with
drift, orphans, missing orders, latency and venue-time lag), tail estimates, regime changes,
halts, resumes, flattens, arming, and time jumps that cross 00:00 UTC. Over every sequence:

- every truth score, and every component of it, is in 0..100, and the score is the weighted
  mean of the components (rounded down);
- the breaker never leaves HALTED except by a Resume (every HALTED -> NORMAL transition is
  `operator_resume`, caused by a Resume, accepted only while no trigger is active), never skips
  a level on the way down, and recovers from DEFENSIVE only after the recovery time;
- folding the recorded events (through their wire data) reproduces the live state, Brain included;
- the compiled and the interpreted cores record byte-identical events.

Commands are built against the interpreted core as the sequence grows (the oracle), so that
order references, fills and "exact" snapshots match the account as it is at that moment.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commands.translate import to_core
from commands.views import state_view
from infra.core import CoreUnavailableError, load_core
from infra.submit import default_policy
from schemas import commands as wire
from schemas.canonical import canonical_bytes
from schemas.policy import policy_hash

ACCOUNT = "brain-prop"
S = 1_000_000_000
MS = 1_000_000
T0 = 1_767_311_880_000_000_000  # 2026-01-01 23:58:00 UTC: the first day ends two minutes in
POLICY = default_policy()
HASH = policy_hash(POLICY)
RECOVERY_NS = 60_000 * MS  # the default policy's breaker.recovery_ms

# (venue, symbol) -> (reference price, tick, step): the default policy's instruments
INSTRUMENTS = {
    ("paper", "BTCUSDT"): ("65000.0", "0.1", "0.001"),
    ("paper", "ETHUSDT"): ("3400.00", "0.01", "0.01"),
    ("paper", "SOLUSDT"): ("150.00", "0.01", "0.1"),
    ("binance", "BTCUSDT"): ("65000.0", "0.1", "0.001"),
    ("binance", "ETHUSDT"): ("3400.00", "0.01", "0.01"),
    ("bybit", "BTCUSDT"): ("65000.0", "0.1", "0.001"),
    ("bybit", "SOLUSDT"): ("150.00", "0.01", "0.1"),
}
KEYS = sorted(INSTRUMENTS)
VENUES = ["paper", "paper", "binance", "bybit"]
EQUITIES = ["100000"] * 8 + ["99000", "96000", "90000", "300000", "20000", "0"]
JUMPS_S = [1, 30, 61, 600, 3600, 6 * 3600, 25 * 3600]


def decimals(text: str) -> int:
    return len(text.split(".")[1]) if "." in text else 0


def fmt(units: int, places: int) -> str:
    sign = "-" if units < 0 else ""
    units = abs(units)
    if places == 0:
        return f"{sign}{units}"
    return f"{sign}{units // 10**places}.{units % 10**places:0{places}d}"


def units_of(text: str) -> int:
    return int(text.replace(".", ""))


place_step = st.tuples(
    st.just("place"),
    st.integers(0, len(KEYS) - 1),
    st.sampled_from(["BUY", "SELL"]),
    st.one_of(st.integers(1, 300), st.integers(1, 3000)),  # quantity in steps (some too large)
    st.one_of(st.integers(-100, 100), st.integers(-2000, 2000)),  # price offset in ticks
    st.sampled_from([False, False, False, True]),  # reduce only
    st.integers(1, 3),  # phase
    st.sampled_from([True] * 9 + [False]),  # the right policy hash
    st.integers(0, 39),  # client order id (collisions wanted)
)
snapshot_step = st.tuples(
    st.just("snapshot"),
    st.sampled_from(VENUES),
    st.sampled_from(["exact", "exact", "perturbed"]),
    st.integers(-40, 40),  # drift in steps on one held instrument
    st.integers(0, 5),  # orphans
    st.booleans(),  # drop our open orders (missing, once past the grace period)
    st.one_of(st.just(0), st.integers(0, 3000)),  # latency_ms
    st.one_of(st.just(0), st.integers(0, 8000)),  # venue time lag, ms
    st.sampled_from(EQUITIES),
)
fill_step = st.tuples(
    st.just("fill"), st.integers(0, 40), st.integers(1, 300), st.integers(-60, 60)
)
step = st.one_of(
    place_step,
    place_step,
    place_step,
    place_step,
    snapshot_step,
    snapshot_step,
    fill_step,
    fill_step,
    fill_step,
    st.tuples(st.just("ack"), st.integers(0, 40)),
    st.tuples(st.just("ack"), st.integers(0, 40)),
    st.tuples(st.just("cancel"), st.integers(0, 40)),
    st.tuples(st.just("cancelled"), st.integers(0, 40)),
    st.tuples(
        st.just("tail"), st.sampled_from(["BTCUSDT", "SOLUSDT"]), st.integers(15_000, 60_000)
    ),
    st.tuples(st.just("regime"), st.sampled_from(["RISK_ON", "NEUTRAL", "RISK_OFF", "CRASH"])),
    st.tuples(st.just("halt")),
    st.tuples(st.just("resume")),
    st.tuples(st.just("resume")),
    st.tuples(st.just("resume")),
    st.tuples(st.just("flatten"), st.sampled_from([True, True, True, False])),
    st.tuples(st.just("arm"), st.sampled_from([True, True, False])),
    st.tuples(st.just("jump"), st.sampled_from(JUMPS_S)),
)
trading_steps = st.lists(  # mostly orders and fills, so that flatten and resume meet positions
    st.one_of(
        place_step,
        place_step,
        snapshot_step,
        fill_step,
        fill_step,
        st.tuples(st.just("ack"), st.integers(0, 40)),
        st.tuples(st.just("flatten"), st.just(True)),
        st.tuples(st.just("resume")),
    ),
    min_size=20,
    max_size=60,
)
sequences = st.tuples(
    st.one_of(st.lists(step, min_size=20, max_size=90), trading_steps),
    st.lists(
        st.one_of(st.integers(0, 50_000_000), st.integers(0, 400_000_000)), min_size=1, max_size=5
    ),
)


class Builder:
    """Wire commands for a sequence of steps, decided on the interpreted core as they are built."""

    def __init__(self) -> None:
        self.oracle = load_core("interpreted")
        self.state = self.oracle.decider.initial_state(ACCOUNT)
        self.commands: list[wire.AnyCommand] = []
        self.placed: list[str] = []
        self.ts = T0
        self.counter = 0

    def common(self) -> dict[str, Any]:
        self.counter += 1
        return {
            "command_id": f"c{self.counter}",
            "account_id": ACCOUNT,
            "ts_ns": self.ts,
            "actor": "t",
        }

    def add(self, command: wire.AnyCommand) -> None:
        self.commands.append(command)
        for event in self.oracle.decider.decide(to_core(command, self.oracle), self.state):
            self.state = self.oracle.decider.evolve(self.state, event)

    def target(self, index: int) -> str:
        open_now: list[str] = sorted(self.state.open_orders)
        if open_now and index < 34:
            return open_now[index % len(open_now)]
        if self.placed and index < 38:
            return self.placed[index % len(self.placed)]
        return "ord-none"

    def snapshot(self, s: tuple[Any, ...]) -> wire.RecordTruthSnapshot:
        _, venue, mode, drift, orphans, drop, latency_ms, lag_ms, equity = s
        positions: dict[str, int] = {}
        places: dict[str, int] = {}
        steps: dict[str, int] = {}
        for position in self.state.positions.values():
            instrument = position.instrument
            if instrument.venue == venue and position.qty_units != 0:
                positions[instrument.symbol] = position.qty_units
                places[instrument.symbol] = instrument.qty_decimals
                steps[instrument.symbol] = instrument.step_units
        order_ids = [
            order_id
            for order_id in sorted(self.state.open_orders)
            if self.state.open_orders[order_id].instrument.venue == venue
        ]
        if mode == "perturbed":
            if positions:
                symbol = sorted(positions)[abs(drift) % len(positions)]
                positions[symbol] += drift * steps[symbol]
            order_ids = ([] if drop else order_ids) + [f"x{i}" for i in range(orphans)]
        return wire.RecordTruthSnapshot(
            **self.common(),
            venue=venue,
            positions=[
                wire.VenuePosition(symbol=symbol, quantity=fmt(qty, places[symbol]))
                for symbol, qty in sorted(positions.items())
            ],
            open_order_ids=order_ids,
            equity=equity,
            venue_ts_ns=max(0, self.ts - lag_ms * MS),
            latency_ms=latency_ms,
        )

    def step(self, s: tuple[Any, ...]) -> None:
        kind = s[0]
        if kind == "place":
            _, key_index, side, qty_steps, offset, reduce_only, phase, right_hash, client = s
            venue, symbol = KEYS[key_index]
            reference, tick, lot = INSTRUMENTS[(venue, symbol)]
            price = max(1, units_of(reference) + offset * units_of(tick))
            common = self.common()
            self.add(
                wire.PlaceOrder(
                    **common,
                    policy_hash=HASH if right_hash else "f" * 64,
                    phase_id=phase,
                    intent_id=common["command_id"],
                    client_order_id=f"k{client}",
                    venue=venue,
                    symbol=symbol,
                    side=side,
                    quantity=fmt(qty_steps * units_of(lot), decimals(lot)),
                    price=fmt(price, decimals(tick)),
                    reference_price=reference,
                    reduce_only=reduce_only,
                )
            )
            self.placed.append("ord-" + common["command_id"])
        elif kind == "snapshot":
            self.add(self.snapshot(s))
        elif kind == "ack":
            self.add(
                wire.RecordOrderAck(**self.common(), order_id=self.target(s[1]), venue_order_id="v")
            )
        elif kind == "fill":
            order_id = self.target(s[1])
            order = self.state.open_orders.get(order_id)
            if order is None:
                quantity, price = "0.001", "65000.0"
            else:
                instrument = order.instrument
                lots = max(1, min(s[2], order.remaining_units() // instrument.step_units))
                quantity = fmt(lots * instrument.step_units, instrument.qty_decimals)
                units = max(
                    instrument.tick_units,
                    order.reference_price_units + s[3] * instrument.tick_units,
                )
                price = fmt(units - units % instrument.tick_units, instrument.price_decimals)
            self.add(
                wire.RecordFill(
                    **self.common(),
                    order_id=order_id,
                    fill_id=f"f{self.counter}",
                    quantity=quantity,
                    price=price,
                    fee="0.5",
                )
            )
        elif kind == "cancel":
            self.add(wire.CancelOrder(**self.common(), order_id=self.target(s[1]), reason="test"))
        elif kind == "cancelled":
            self.add(
                wire.RecordCancelled(
                    **self.common(), order_id=self.target(s[1]), venue_reason="test"
                )
            )
        elif kind == "tail":
            self.add(
                wire.RecordTailRisk(
                    **self.common(),
                    symbol=s[1],
                    tail_exponent=fmt(s[2], 4),
                    sample_size=250,
                    method="hill",
                )
            )
        elif kind == "regime":
            self.add(wire.SetRegime(**self.common(), regime=s[1], reason="test"))
        elif kind == "halt":
            self.add(wire.Halt(**self.common(), reason="test"))
        elif kind == "resume":
            self.add(wire.Resume(**self.common(), reason="test"))
        elif kind == "flatten":
            self.add(
                wire.Flatten(**self.common(), policy_hash=HASH if s[1] else "f" * 64, reason="test")
            )
        elif kind == "arm":
            self.add((wire.Arm if s[1] else wire.Disarm)(**self.common(), reason="test"))
        elif kind == "jump":
            self.ts += s[1] * S


def build(steps: list[tuple[Any, ...]], gaps: list[int]) -> list[wire.AnyCommand]:
    b = Builder()
    b.add(wire.ActivatePolicy(**b.common(), policy=POLICY))
    b.add(wire.Arm(**b.common(), reason="test"))
    for venue in ("paper", "binance", "bybit"):
        b.add(b.snapshot(("snapshot", venue, "exact", 0, 0, False, 0, 0, "100000")))
    for i, s in enumerate(steps):
        b.ts += gaps[i % len(gaps)]
        b.step(s)
    return b.commands


Decision = tuple[str, list[tuple[str, int, Any]]]


def run(core: Any, commands: list[wire.AnyCommand]) -> tuple[bytes, Any, list[Decision], list[Any]]:
    """Decide every command; return the recorded bytes, the live state, each command's type with
    its events as recorded, and the state each command was decided on."""
    state = core.decider.initial_state(ACCOUNT)
    decisions: list[Decision] = []
    before: list[Any] = []
    for command in commands:
        before.append(state)
        recorded = []
        for event in core.decider.decide(to_core(command, core), state):
            recorded.append((event.type_name(), event.ts_ns, event.to_data()))
            state = core.decider.evolve(state, event)
        decisions.append((command.type, recorded))
    flat = [event for _, events in decisions for event in events]
    return canonical_bytes(flat), state, decisions, before


def everything(core: Any, state: Any) -> bytes:
    """The whole state as canonical bytes: the public view, the Brain's internals and the rest."""
    brain = state.brain
    view = state_view(core, state)
    view["internals"] = {
        "last_ts_ns": state.last_ts_ns,
        "marks": dict(sorted(state.marks.items())),
        "order_times_ns": list(state.order_times_ns),
        "message_times_ns": list(state.message_times_ns),
        "closed": [
            (c.order_id, c.status, list(c.fill_ids))
            for c in (state.closed_orders[i] for i in state.closed_order_ids)
        ],
        "orders": [
            (
                o.order_id,
                o.reference_price_units,
                o.accepted_ts_ns,
                list(o.fill_ids),
                o.phase_id,
                o.intent_id,
            )
            for o in (state.open_orders[i] for i in sorted(state.open_orders))
        ],
        "brain": {
            "breaker": [brain.breaker, brain.breaker_since_ns, brain.clear_since_ns],
            "truth": {v: [r.score, r.ts_ns] for v, r in sorted(brain.truth.items())},
            "regime": brain.regime,
            "tail": dict(sorted(brain.tail_exponents.items())),
            "venues": {
                v: [q.status, list(q.ack_latency_ms), list(q.slippage_bps)]
                for v, q in sorted(brain.venues.items())
            },
            "equity": [
                brain.equity_known,
                brain.equity_base_money,
                brain.pnl_since_base_money,
                brain.peak_equity_money,
            ],
            "day": [brain.day, brain.day_pnl_money],
        },
    }
    return canonical_bytes(view)


def _cores() -> list[Any]:
    cores = [load_core("interpreted")]
    try:
        cores.insert(0, load_core("compiled"))
    except CoreUnavailableError:
        pass
    return cores


RANK = {"NORMAL": 0, "DEFENSIVE": 1, "HALTED": 2}
FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(sequences)
def test_the_truth_score_is_always_within_0_and_100(seq: tuple[list[Any], list[int]]) -> None:
    _, _, decisions, _ = run(load_core("interpreted"), build(*seq))
    for _, events in decisions:
        for type_name, _, data in events:
            if type_name != "truth.snapshot_recorded.v1":
                continue
            assert 0 <= data["score"] <= 100
            weighted = sum(c["score"] * c["weight"] for c in data["components"])
            weights = sum(c["weight"] for c in data["components"])
            assert data["score"] == weighted // weights
            for component in data["components"]:
                assert 0 <= component["score"] <= 100


@FAST
@given(sequences)
def test_the_breaker_leaves_halted_only_by_an_operator_resume(
    seq: tuple[list[Any], list[int]],
) -> None:
    core = load_core("interpreted")
    _, live, decisions, before = run(core, build(*seq))
    level = "NORMAL"
    for (command_type, events), state in zip(decisions, before, strict=True):
        for type_name, ts_ns, data in events:
            if type_name != "breaker.transitioned.v1":
                continue
            assert data["from_state"] == level
            assert data["to_state"] != level
            if level == "HALTED" or data["trigger"] == "operator_resume":
                assert (data["from_state"], data["to_state"]) == ("HALTED", "NORMAL")
                assert data["trigger"] == "operator_resume"
                assert command_type == "resume.v1"
                assert core.brain.triggers(state.brain, state.policy.risk) == []
            elif RANK[data["to_state"]] < RANK[level]:
                assert (level, data["to_state"], data["trigger"]) == (
                    "DEFENSIVE",
                    "NORMAL",
                    "recovered",
                )
                assert ts_ns - int(data["values"]["clear_since_ns"]) >= RECOVERY_NS
            level = data["to_state"]
        if command_type == "resume.v1" and state.brain.breaker == "HALTED":
            refused = [
                data["reason"]
                for type_name, _, data in events
                if type_name == "command.rejected.v1"
            ]
            assert refused == (
                []
                if not core.brain.triggers(state.brain, state.policy.risk)
                else ["RESUME_BLOCKED"]
            )
    assert live.brain.breaker == level


@FAST
@given(sequences)
def test_folding_the_recorded_events_reproduces_the_live_state(
    seq: tuple[list[Any], list[int]],
) -> None:
    for core in _cores():
        _, live, decisions, _ = run(core, build(*seq))
        replayed = core.decider.initial_state(ACCOUNT)
        for _, events in decisions:
            for type_name, ts_ns, data in events:
                event = core.events.decode_event(type_name, ts_ns, data, replayed)
                assert event.to_data() == data
                replayed = core.decider.evolve(replayed, event)
        assert everything(core, replayed) == everything(core, live)


def _compiled_unavailable() -> str | None:
    try:
        load_core("compiled")
    except CoreUnavailableError as error:
        return f"the compiled core is not available, so there is nothing to compare: {error}"
    return None


COMPILED_UNAVAILABLE = _compiled_unavailable()


@pytest.mark.skipif(COMPILED_UNAVAILABLE is not None, reason=COMPILED_UNAVAILABLE or "")
@FAST
@given(sequences)
def test_compiled_and_interpreted_cores_record_identical_bytes(
    seq: tuple[list[Any], list[int]],
) -> None:
    compiled = load_core("compiled")
    commands = build(*seq)
    compiled_bytes, compiled_state, _, _ = run(compiled, commands)
    interpreted = load_core("interpreted")
    interpreted_bytes, interpreted_state, _, _ = run(interpreted, commands)
    assert compiled_bytes == interpreted_bytes
    assert everything(compiled, compiled_state) == everything(interpreted, interpreted_state)
