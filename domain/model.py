"""The execution aggregate's state: an immutable value, replaced (never mutated) by `evolve`.

Collections inside a state are copied when they change; the ones that are copied on every
change are bounded (open orders by the policy's max_open_orders, the rate windows by one second
of command time, the closed-order memory by CLOSED_ORDER_MEMORY).
"""

from __future__ import annotations

from typing import Final

from .fills import Fills, no_fills
from .policy import Instrument, Policy

DISARMED: Final = "DISARMED"
ARMED: Final = "ARMED"

BUY: Final = "BUY"
SELL: Final = "SELL"
LIMIT: Final = "LIMIT"
MARKET: Final = "MARKET"

# Order statuses (SPEC §3 lifecycle)
ACCEPTED: Final = "ACCEPTED"
ACKNOWLEDGED: Final = "ACKNOWLEDGED"
PARTIALLY_FILLED: Final = "PARTIALLY_FILLED"
FILLED: Final = "FILLED"
CANCELLED: Final = "CANCELLED"
VENUE_REJECTED: Final = "VENUE_REJECTED"

CLOSED_ORDER_MEMORY: Final = 256
"""How many terminal orders the state remembers, to tell ORDER_CLOSED from UNKNOWN_ORDER."""


class Order:
    """An open order, in its instrument's integer units."""

    def __init__(
        self,
        order_id: str,
        client_order_id: str,
        instrument: Instrument,
        side: str,
        order_type: str,
        price_units: int,
        qty_units: int,
        reference_price_units: int,
        reduce_only: bool,
        phase_id: int,
        intent_id: str,
        status: str,
        filled_qty_units: int,
        fill_ids: tuple[str, ...],
        cancel_requested: bool,
        accepted_ts_ns: int,
    ) -> None:
        self.order_id: Final = order_id
        self.client_order_id: Final = client_order_id
        self.instrument: Final = instrument
        self.side: Final = side
        self.order_type: Final = order_type
        self.price_units: Final = price_units
        self.qty_units: Final = qty_units
        self.reference_price_units: Final = reference_price_units
        self.reduce_only: Final = reduce_only
        self.phase_id: Final = phase_id
        self.intent_id: Final = intent_id
        self.status: Final = status
        self.filled_qty_units: Final = filled_qty_units
        self.fill_ids: Final = fill_ids
        self.cancel_requested: Final = cancel_requested
        self.accepted_ts_ns: Final = accepted_ts_ns

    def remaining_units(self) -> int:
        """Quantity not yet filled."""
        return self.qty_units - self.filled_qty_units

    def signed_remaining_units(self) -> int:
        """Remaining quantity, positive for a buy, negative for a sell."""
        remaining = self.qty_units - self.filled_qty_units
        return remaining if self.side == BUY else -remaining

    def with_progress(
        self, status: str, filled_qty_units: int, fill_ids: tuple[str, ...], cancel_requested: bool
    ) -> Order:
        """This order with a new status, filled quantity, fill ids and cancel flag."""
        return Order(
            self.order_id,
            self.client_order_id,
            self.instrument,
            self.side,
            self.order_type,
            self.price_units,
            self.qty_units,
            self.reference_price_units,
            self.reduce_only,
            self.phase_id,
            self.intent_id,
            status,
            filled_qty_units,
            fill_ids,
            cancel_requested,
            self.accepted_ts_ns,
        )


class ClosedOrder:
    """What the state remembers of a terminal order."""

    def __init__(self, order_id: str, status: str, fill_ids: tuple[str, ...]) -> None:
        self.order_id: Final = order_id
        self.status: Final = status
        self.fill_ids: Final = fill_ids


class Position:
    """A signed position in one instrument; cost and PnL in money units (1e-8 quote currency).

    `cost_money` is the signed cost basis of the open quantity (positive for a long);
    the average entry price is cost / quantity.
    """

    def __init__(
        self,
        instrument: Instrument,
        qty_units: int,
        cost_money: int,
        realized_pnl_money: int,
        fees_money: int,
    ) -> None:
        self.instrument: Final = instrument
        self.qty_units: Final = qty_units
        self.cost_money: Final = cost_money
        self.realized_pnl_money: Final = realized_pnl_money
        self.fees_money: Final = fees_money


class TruthReading:
    """The latest truth score of one venue, when it was taken (command time), and the venue's own
    time of the snapshot it came from."""

    def __init__(self, score: int, ts_ns: int, venue_ts_ns: int) -> None:
        self.score: Final = score
        self.ts_ns: Final = ts_ns
        self.venue_ts_ns: Final = venue_ts_ns


class VenueQuality:
    """A venue's status and its rolling windows: samples with the command time each was taken
    (latest last). Samples older than the policy's window_ms no longer count."""

    def __init__(
        self,
        status: str,
        ack_latency_ms: tuple[int, ...],
        ack_ts_ns: tuple[int, ...],
        slippage_bps: tuple[int, ...],
        slippage_ts_ns: tuple[int, ...],
    ) -> None:
        self.status: Final = status
        self.ack_latency_ms: Final = ack_latency_ms
        self.ack_ts_ns: Final = ack_ts_ns
        self.slippage_bps: Final = slippage_bps
        self.slippage_ts_ns: Final = slippage_ts_ns


VENUE_OK: Final = "OK"
VENUE_DEGRADED: Final = "DEGRADED"
VENUE_HALTED: Final = "HALTED"
NO_CLEAR: Final = -1


class Brain:
    """The Brain's state: breaker, truth, regime, tail risk, venue quality, equity and budget.

    `clear_since_ns` is the command time since which every breaker trigger has been clear
    (NO_CLEAR while one is active); `equity_known` is False until a policy with an initial
    equity or a truth snapshot says what the account holds.
    """

    def __init__(
        self,
        breaker: str,
        breaker_since_ns: int,
        clear_since_ns: int,
        truth: dict[str, TruthReading],
        regime: str,
        tail_exponents: dict[str, int],
        venues: dict[str, VenueQuality],
        equity_known: bool,
        equity_base_money: int,
        pnl_since_base_money: int,
        peak_equity_money: int,
        day: int,
        day_pnl_money: int,
    ) -> None:
        self.breaker: Final = breaker
        self.breaker_since_ns: Final = breaker_since_ns
        self.clear_since_ns: Final = clear_since_ns
        self.truth: Final = truth
        self.regime: Final = regime
        self.tail_exponents: Final = tail_exponents
        self.venues: Final = venues
        self.equity_known: Final = equity_known
        self.equity_base_money: Final = equity_base_money
        self.pnl_since_base_money: Final = pnl_since_base_money
        self.peak_equity_money: Final = peak_equity_money
        self.day: Final = day
        self.day_pnl_money: Final = day_pnl_money

    def equity_money(self) -> int:
        """Equity: the last known base plus realized PnL net of fees since."""
        return self.equity_base_money + self.pnl_since_base_money


def initial_brain() -> Brain:
    """NORMAL breaker, NEUTRAL regime, nothing measured yet."""
    return Brain("NORMAL", 0, NO_CLEAR, {}, "NEUTRAL", {}, {}, False, 0, 0, 0, 0, 0)


class State:
    """One account's execution state: mode, policy, orders, positions, rate windows, the Brain."""

    def __init__(
        self,
        account_id: str,
        mode: str,
        policy: Policy | None,
        policy_hash: str,
        last_ts_ns: int,
        open_orders: dict[str, Order],
        closed_orders: dict[str, ClosedOrder],
        closed_order_ids: tuple[str, ...],
        positions: dict[str, Position],
        marks: dict[str, int],
        order_times_ns: tuple[int, ...],
        message_times_ns: tuple[int, ...],
        brain: Brain,
        fills: Fills,
    ) -> None:
        self.account_id: Final = account_id
        self.mode: Final = mode
        self.policy: Final = policy
        self.policy_hash: Final = policy_hash
        self.last_ts_ns: Final = last_ts_ns
        self.open_orders: Final = open_orders
        self.closed_orders: Final = closed_orders
        self.closed_order_ids: Final = closed_order_ids
        self.positions: Final = positions
        self.marks: Final = marks
        self.order_times_ns: Final = order_times_ns
        self.message_times_ns: Final = message_times_ns
        self.brain: Final = brain
        self.fills: Final = fills


def initial_state(account_id: str) -> State:
    """A new account: DISARMED, no policy, nothing open."""
    return State(account_id, DISARMED, None, "", 0, {}, {}, (), {}, {}, (), (), initial_brain(), no_fills())
