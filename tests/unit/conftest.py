"""Fixtures for the execution decider's tests: both cores, a test policy, given/when/then.

A test reads as

    state = given(cmd.activate(), cmd.place("o1"))     # commands (or events) already decided
    events = when(state, cmd.fill("ord-o1", ...))      # the command under test
    assert then(events) == [("order.filled.v1", {...})]

`cmd` builds commands for the core under test with readable defaults: time `cmd.now_ns` (0 unless
a test moves it), the paper venue, a BUY LIMIT of 0.100 BTCUSDT at 65000.0, carrying the hash
"policy-A" that `cmd.activate()` activates. `cmd.place("o1")` opens order "ord-o1" with client
order id "cl-o1". `view(state)` is the whole state as plain values, to compare two states.

The Brain's tests activate `cmd.activate(brain=cmd.brain_sections())`: the same policy with every
Brain section (`BRAIN`, the shipped default's thresholds with a venue-quality window of 4);
`cmd.brain_sections(without=..., section={field: value})` leaves some out or overrides fields. `cmd.snapshot()`, `cmd.regime()`, `cmd.tail()`,
`cmd.halt()`, `cmd.resume()` and `cmd.flatten()` build the Brain's commands.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from typing import Any

import pytest

from commands.views import state_view
from infra.core import Core, CoreUnavailableError, load_core
from schemas.policy import PolicyDocument

ACCOUNT_ID = "acct-test"
POLICY_HASH = "policy-A"
"""A fake hash: the core compares policy hashes as strings and never computes one."""

INSTRUMENTS: dict[str, dict[str, str]] = {
    "paper:BTCUSDT": {
        "tick_size": "0.1",
        "step_size": "0.001",
        "max_order_qty": "2",
        "max_position_notional": "250000",
    },
    # a tick and a step that are not powers of ten
    "paper:SOLUSDT": {
        "tick_size": "0.05",
        "step_size": "0.5",
        "max_order_qty": "500",
        "max_position_notional": "75000",
    },
    "binance:BTCUSDT": {
        "tick_size": "0.1",
        "step_size": "0.001",
        "max_order_qty": "2",
        "max_position_notional": "250000",
    },
}

LIMITS: dict[str, Any] = {
    "max_order_notional": "100000",
    "price_collar_bps": 150,
    "max_gross_exposure": "500000",
    "max_orders_per_second": 10,
    "max_messages_per_second": 20,
    "max_open_orders": 20,
}


BRAIN: dict[str, Any] = {
    "truth": {
        "weights": {
            "position_drift": 40,
            "orphan_orders": 15,
            "missing_orders": 15,
            "staleness": 15,
            "latency": 15,
        },
        "drift_tolerance": "1000",
        "penalty_per_order": 25,
        "missing_order_grace_ms": 5000,
        "snapshot_max_age_ms": 5000,
        "latency_limit_ms": 2000,
        "stale_after_ms": 60000,
        "min_score_for_new_risk": 70,
        "defensive_below": 80,
        "halt_below": 40,
    },
    "breaker": {"defensive_factor_bps": 5000, "recovery_ms": 60000},
    "venue_quality": {
        "window": 4,
        "window_ms": 600_000,
        "degraded_slippage_bps": 10,
        "halted_slippage_bps": 40,
        "degraded_latency_ms": 250,
        "halted_latency_ms": 1000,
        "degraded_factor_bps": 5000,
    },
    "allocation": {
        "initial_equity": "100000",
        "bands": [
            {"min_equity": "0", "phases": [1], "max_leverage": "10"},
            {"min_equity": "25000", "phases": [1, 2], "max_leverage": "5"},
            {"min_equity": "250000", "phases": [1, 2, 3], "max_leverage": "3"},
        ],
        "regimes": {
            "RISK_ON": {"phases": [1, 2, 3], "leverage_factor_bps": 10000},
            "NEUTRAL": {"phases": [1, 2, 3], "leverage_factor_bps": 10000},
            "RISK_OFF": {"phases": [2, 3], "leverage_factor_bps": 5000},
            "CRASH": {"phases": [3], "leverage_factor_bps": 2500},
        },
    },
    "tail_risk": {"min_tail_exponent": "2.2"},
    "budget": {
        "daily_loss_limit": "2000",
        "max_drawdown_bps": 500,
        "daily_loss_breaker": "HALTED",
        "drawdown_breaker": "DEFENSIVE",
    },
}
"""Every Brain section, with the shipped default policy's thresholds (venue window 4, not 20)."""


def brain_sections(*, without: tuple[str, ...] = (), **overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of BRAIN without some sections, and with some sections' fields overridden:
    `brain_sections(breaker={"recovery_ms": 0}, without=("tail_risk",))`."""
    unknown = (set(overrides) | set(without)) - set(BRAIN)
    if unknown:
        raise TypeError(f"unknown Brain sections: {sorted(unknown)}")
    sections = copy.deepcopy(BRAIN)
    for name, fields in overrides.items():
        sections[name].update(copy.deepcopy(fields))
    for name in without:
        del sections[name]
    return sections


def policy_document(
    instruments: dict[str, dict[str, str]] | None = None,
    *,
    brain: dict[str, Any] | None = None,
    **limits: Any,
) -> dict[str, Any]:
    """The test policy, with some instrument fields or account limits overridden, and the Brain
    sections given (none by default: the pre-Brain policy)."""
    unknown = set(limits) - set(LIMITS)
    if unknown:
        raise TypeError(f"unknown policy limits: {sorted(unknown)}")
    listed = []
    for key, spec in INSTRUMENTS.items():
        venue, symbol = key.split(":")
        listed.append(
            {"venue": venue, "symbol": symbol, **spec, **(instruments or {}).get(key, {})}
        )
    document = {"policy_id": "test-policy", "instruments": listed, "limits": {**LIMITS, **limits}}
    document.update(copy.deepcopy(brain or {}))
    PolicyDocument.model_validate(document)  # only documents the edge would accept reach the core
    return document


class CommandBuilder:
    """Commands of one core, with defaults; every argument can be overridden by keyword."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.now_ns = 0
        """The time of commands built without a ts_ns."""
        self._ids = itertools.count(1)

    def _ts(self, ts_ns: int | None) -> int:
        return self.now_ns if ts_ns is None else ts_ns

    def _next_id(self) -> str:
        return f"cmd-{next(self._ids)}"

    def document(
        self,
        instruments: dict[str, dict[str, str]] | None = None,
        *,
        brain: dict[str, Any] | None = None,
        **limits: Any,
    ) -> dict[str, Any]:
        """A fresh copy of the test policy document, as `activate` would send it."""
        return policy_document(instruments, brain=brain, **limits)

    def activate(
        self,
        policy_hash: str = POLICY_HASH,
        *,
        ts_ns: int | None = None,
        instruments: dict[str, dict[str, str]] | None = None,
        brain: dict[str, Any] | None = None,
        **limits: Any,
    ) -> Any:
        document = self.document(instruments, brain=brain, **limits)
        policy = self.core.policy.policy_from_document(
            self.document(instruments, brain=brain, **limits)
        )
        return self.core.commands.ActivatePolicy(
            self._next_id(), self._ts(ts_ns), document, policy_hash, policy
        )

    def arm(self, *, ts_ns: int | None = None, reason: str = "go live") -> Any:
        return self.core.commands.Arm(self._next_id(), self._ts(ts_ns), reason)

    def disarm(self, *, ts_ns: int | None = None, reason: str = "stand down") -> Any:
        return self.core.commands.Disarm(self._next_id(), self._ts(ts_ns), reason)

    def place(
        self,
        name: str,
        *,
        ts_ns: int | None = None,
        side: str = "BUY",
        quantity: str = "0.100",
        price: str = "65000.0",
        reference_price: str | None = None,
        order_type: str = "LIMIT",
        venue: str = "paper",
        symbol: str = "BTCUSDT",
        reduce_only: bool = False,
        client_order_id: str | None = None,
        policy_hash: str = POLICY_HASH,
        phase_id: int = 1,
    ) -> Any:
        """PlaceOrder with command id `name`: it opens order "ord-<name>". The reference price
        defaults to the limit price."""
        return self.core.commands.PlaceOrder(
            name,
            self._ts(ts_ns),
            policy_hash,
            phase_id,
            f"intent-{name}",
            client_order_id if client_order_id is not None else f"cl-{name}",
            venue,
            symbol,
            side,
            order_type,
            quantity,
            price,
            reference_price if reference_price is not None else price,
            reduce_only,
        )

    def cancel(self, order_id: str, *, ts_ns: int | None = None, reason: str = "operator") -> Any:
        return self.core.commands.CancelOrder(self._next_id(), self._ts(ts_ns), order_id, reason)

    def ack(
        self, order_id: str, *, ts_ns: int | None = None, venue_order_id: str | None = None
    ) -> Any:
        return self.core.commands.RecordOrderAck(
            self._next_id(), self._ts(ts_ns), order_id, venue_order_id or f"v-{order_id}"
        )

    def venue_reject(
        self, order_id: str, *, ts_ns: int | None = None, venue_reason: str = "insufficient margin"
    ) -> Any:
        return self.core.commands.RecordVenueReject(
            self._next_id(), self._ts(ts_ns), order_id, venue_reason
        )

    def cancelled(
        self, order_id: str, *, ts_ns: int | None = None, venue_reason: str = "cancelled"
    ) -> Any:
        return self.core.commands.RecordCancelled(
            self._next_id(), self._ts(ts_ns), order_id, venue_reason
        )

    def fill(
        self,
        order_id: str,
        fill_id: str,
        quantity: str = "0.100",
        price: str = "65000.0",
        *,
        fee: str = "0",
        liquidity: str = "TAKER",
        ts_ns: int | None = None,
    ) -> Any:
        return self.core.commands.RecordFill(
            self._next_id(), self._ts(ts_ns), order_id, fill_id, quantity, price, fee, liquidity
        )

    def brain_sections(
        self, *, without: tuple[str, ...] = (), **overrides: dict[str, Any]
    ) -> dict[str, Any]:
        """Every Brain section (`BRAIN`), some left out or with fields overridden, for
        `activate(brain=...)`: `cmd.brain_sections(breaker={"recovery_ms": 0})`."""
        return brain_sections(without=without, **overrides)

    # the Brain's commands

    def snapshot(
        self,
        venue: str = "paper",
        *,
        positions: dict[str, str] | None = None,
        open_order_ids: list[str] | None = None,
        equity: str = "100000",
        venue_ts_ns: int | None = None,
        latency_ms: int = 0,
        ts_ns: int | None = None,
    ) -> Any:
        """RecordTruthSnapshot: by default a venue that agrees with an account holding nothing,
        reporting at the command's own time with no latency (score 100)."""
        ts = self._ts(ts_ns)
        held = positions or {}
        return self.core.commands.RecordTruthSnapshot(
            self._next_id(),
            ts,
            venue,
            list(held),
            list(held.values()),
            list(open_order_ids or []),
            equity,
            ts if venue_ts_ns is None else venue_ts_ns,
            latency_ms,
        )

    def regime(self, regime: str, *, ts_ns: int | None = None, reason: str = "regime model") -> Any:
        return self.core.commands.SetRegime(self._next_id(), self._ts(ts_ns), regime, reason)

    def tail(
        self,
        symbol: str,
        tail_exponent: str,
        *,
        sample_size: int = 500,
        method: str = "hill",
        ts_ns: int | None = None,
    ) -> Any:
        return self.core.commands.RecordTailRisk(
            self._next_id(), self._ts(ts_ns), symbol, tail_exponent, sample_size, method
        )

    def halt(self, *, ts_ns: int | None = None, reason: str = "operator halt") -> Any:
        return self.core.commands.Halt(self._next_id(), self._ts(ts_ns), reason)

    def resume(self, *, ts_ns: int | None = None, reason: str = "checked, all clear") -> Any:
        return self.core.commands.Resume(self._next_id(), self._ts(ts_ns), reason)

    def purge_dlq(
        self, entry_ids: tuple[str, ...] = ("cmd-1-0123456789abcdef",), *, ts_ns: int | None = None, reason: str = "triaged"
    ) -> Any:
        return self.core.commands.PurgeDlq(self._next_id(), self._ts(ts_ns), list(entry_ids), reason, "operator")

    def flatten(
        self,
        name: str,
        *,
        ts_ns: int | None = None,
        reason: str = "flatten all",
        policy_hash: str = POLICY_HASH,
        phase_id: int = 0,
        intent_id: str = "",
    ) -> Any:
        """Flatten with command id `name`: its closing orders are "ord-<name>.<n>"."""
        return self.core.commands.Flatten(
            name, self._ts(ts_ns), reason, policy_hash, phase_id, intent_id
        )


@pytest.fixture(params=["compiled", "interpreted"])
def core(request: pytest.FixtureRequest) -> Core:
    """The execution core, compiled and interpreted: every decider test runs against both."""
    try:
        return load_core(request.param)
    except CoreUnavailableError as error:
        if request.param != "compiled":
            raise
        pytest.skip(f"compiled core not built in this environment: {error}")


@pytest.fixture
def cmd(core: Core) -> CommandBuilder:
    return CommandBuilder(core)


@pytest.fixture
def given(core: Core) -> Callable[..., Any]:
    """given(*commands_or_events, state=None) -> the state after them.

    Commands are decided and their events evolved; a refused command fails the test, so a
    scenario cannot silently start from a different state than it says. Events are evolved as is.
    """

    def _given(*steps: Any, state: Any = None) -> Any:
        decider = core.decider
        if state is None:
            state = decider.initial_state(ACCOUNT_ID)
        for step in steps:
            if isinstance(step, core.events.Event):
                state = decider.evolve(state, step)
                continue
            events = decider.decide(step, state)
            reason = decider.refusal_reason(events)
            assert reason == "", f"given: {type(step).__name__} was refused with {reason}"
            for event in events:
                state = decider.evolve(state, event)
        return state

    return _given


@pytest.fixture
def when(core: Core) -> Callable[[Any, Any], list[Any]]:
    """when(state, command) -> the events the core decides."""

    def _when(state: Any, command: Any) -> list[Any]:
        return list(core.decider.decide(command, state))

    return _when


def recorded(events: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(event.type_name(), event.to_data()) for event in events]


@pytest.fixture
def then() -> Callable[[list[Any]], list[tuple[str, dict[str, Any]]]]:
    """then(events) -> [(type name, data)]: what the ledger would record."""
    return recorded


def full_view(core: Core, state: Any) -> dict[str, Any]:
    """Everything a state holds, as plain values: the public view plus what it leaves out
    (closed-order memory, rate windows, marks, order internals)."""
    view = state_view(core, state)
    view["marks"] = dict(sorted(state.marks.items()))
    view["order_times_ns"] = list(state.order_times_ns)
    view["message_times_ns"] = list(state.message_times_ns)
    view["closed_orders"] = [
        (closed.order_id, closed.status, list(closed.fill_ids))
        for closed in (state.closed_orders[order_id] for order_id in state.closed_order_ids)
    ]
    view["order_internals"] = [
        (order.order_id, order.reference_price_units, order.accepted_ts_ns, list(order.fill_ids))
        for order in (state.open_orders[order_id] for order_id in sorted(state.open_orders))
    ]
    view["brain_internals"] = brain_internals(state.brain)
    return view


def brain_internals(brain: Any) -> dict[str, Any]:
    """Every field of the Brain, as plain values (the public view leaves the windows out)."""
    return {
        "breaker": brain.breaker,
        "breaker_since_ns": brain.breaker_since_ns,
        "clear_since_ns": brain.clear_since_ns,
        "truth": {venue: (r.score, r.ts_ns) for venue, r in sorted(brain.truth.items())},
        "regime": brain.regime,
        "tail_exponents": dict(sorted(brain.tail_exponents.items())),
        "venues": {
            venue: (q.status, list(q.ack_latency_ms), list(q.slippage_bps))
            for venue, q in sorted(brain.venues.items())
        },
        "equity_known": brain.equity_known,
        "equity_base_money": brain.equity_base_money,
        "pnl_since_base_money": brain.pnl_since_base_money,
        "peak_equity_money": brain.peak_equity_money,
        "day": brain.day,
        "day_pnl_money": brain.day_pnl_money,
    }


@pytest.fixture
def view(core: Core) -> Callable[[Any], dict[str, Any]]:
    """view(state) -> the whole state as plain values, to compare two states."""
    return lambda state: full_view(core, state)


@pytest.fixture
def decode(core: Core) -> Callable[[Any, Any], Any]:
    """decode(state, event) -> the event rebuilt from its recorded form, against the state it was
    decided on (as replay rebuilds it)."""

    def _decode(state: Any, event: Any) -> Any:
        return core.events.decode_event(event.type_name(), event.ts_ns, event.to_data(), state)

    return _decode
