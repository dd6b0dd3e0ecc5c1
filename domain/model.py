"""The execution aggregate's state: an immutable value, replaced (never mutated) by `evolve`.

Collections inside a state are copied when they change; the ones that are copied on every
change are bounded (open orders by the policy's max_open_orders, the rate windows by one second
of command time). The closed-order memory is not copied: the states of one lineage share an
append-only log of closed orders, and each state sees the last CLOSED_ORDER_MEMORY entries
written before it (`ClosedOrders`), the way they share the fill-id memory (fills.py).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
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


class ClosedLog:
    """The shared, append-only log of closed orders: `ids[i]` was closed `base + i`-th, and
    `orders` holds each id's (sequence, what is remembered of it). A log is only ever appended
    to; a state that needs anything else (a branch, a compaction) starts a fresh log."""

    def __init__(self, base: int) -> None:
        self.base: Final = base
        self.ids: Final[list[str]] = []
        self.orders: Final[dict[str, tuple[int, ClosedOrder]]] = {}
        self.lock: Final = threading.Lock()

    def size(self) -> int:
        """The sequence the next entry gets."""
        return self.base + len(self.ids)


CLOSED_LOG_LIMIT: Final = 4 * CLOSED_ORDER_MEMORY
"""Entries a log may hold before the newest state compacts its memory into a fresh log."""


class ClosedOrders:
    """The closed orders one state remembers: the last CLOSED_ORDER_MEMORY of the first `count`
    entries of a shared log. Reads like the dict it replaces: `order_id in`, `[order_id]`,
    `get`, iteration over the remembered ids (oldest first), `len`."""

    def __init__(self, log: ClosedLog, count: int) -> None:
        self.log: Final = log
        self.count: Final = count

    def get(self, order_id: str) -> ClosedOrder | None:
        """What is remembered of a closed order, or None if it is not (or no longer) remembered."""
        entry = self.log.orders.get(order_id)
        if entry is None:
            return None
        sequence = entry[0]
        if sequence >= self.count or sequence < self.count - CLOSED_ORDER_MEMORY:
            return None
        return entry[1]

    def __contains__(self, order_id: object) -> bool:
        return isinstance(order_id, str) and self.get(order_id) is not None

    def __getitem__(self, order_id: str) -> ClosedOrder:
        found = self.get(order_id)
        if found is None:
            raise KeyError(order_id)
        return found

    def ids(self) -> tuple[str, ...]:
        """The remembered ids, oldest first."""
        log = self.log
        first = max(self.count - CLOSED_ORDER_MEMORY, log.base)
        kept: list[str] = []
        for i in range(first - log.base, self.count - log.base):
            order_id = log.ids[i]
            if self.get(order_id) is not None:
                kept.append(order_id)
        return tuple(kept)

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids())

    def __len__(self) -> int:
        return len(self.ids())

    def with_closed(self, closed: ClosedOrder) -> ClosedOrders:
        """This memory and one more closed order (the oldest is forgotten past the limit)."""
        lock = self.log.lock
        lock.acquire()  # acquire/release: cheaper than `with` in compiled code
        try:
            log = self.log
            if (
                log.size() != self.count
                or closed.order_id in log.orders
                or len(log.ids) >= CLOSED_LOG_LIMIT
            ):
                # Not the newest state of its log (a branch), an id closed twice, or a full log:
                # a fresh log of what this state remembers, so no other state sees the new entry.
                log = self._fresh_log()
            log.orders[closed.order_id] = (log.size(), closed)
            log.ids.append(closed.order_id)
            return ClosedOrders(log, log.size())
        finally:
            lock.release()

    def _fresh_log(self) -> ClosedLog:
        remembered = self.ids()
        fresh = ClosedLog(self.count - len(remembered))
        for order_id in remembered:
            fresh.orders[order_id] = (fresh.size(), self.log.orders[order_id][1])
            fresh.ids.append(order_id)
        return fresh


def no_closed_orders() -> ClosedOrders:
    """A memory of no closed order."""
    return ClosedOrders(ClosedLog(0), 0)


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


class WindowSum:
    """What a window's samples add up to, and whether their times never decrease (then the first
    is the oldest): kept beside the window so that, while no sample has aged out, its mean is
    one division instead of a pass over the samples."""

    def __init__(self, total: int, ordered: bool) -> None:
        self.total: Final = total
        self.ordered: Final = ordered


def window_sum(samples: tuple[int, ...], times: tuple[int, ...]) -> WindowSum:
    """The sum of a window, counted from its samples."""
    total = 0
    ordered = True
    for i in range(len(samples)):
        total += samples[i]
        if i > 0 and times[i] < times[i - 1]:
            ordered = False
    return WindowSum(total, ordered)


class VenueQuality:
    """A venue's status and its rolling windows: samples with the command time each was taken
    (latest last). Samples older than the policy's window_ms no longer count. `ack_sum` and
    `slippage_sum` summarize the windows (counted from them unless given)."""

    def __init__(
        self,
        status: str,
        ack_latency_ms: tuple[int, ...],
        ack_ts_ns: tuple[int, ...],
        slippage_bps: tuple[int, ...],
        slippage_ts_ns: tuple[int, ...],
        ack_sum: WindowSum | None = None,
        slippage_sum: WindowSum | None = None,
    ) -> None:
        self.status: Final = status
        self.ack_latency_ms: Final = ack_latency_ms
        self.ack_ts_ns: Final = ack_ts_ns
        self.slippage_bps: Final = slippage_bps
        self.slippage_ts_ns: Final = slippage_ts_ns
        self.ack_sum: Final = ack_sum if ack_sum is not None else window_sum(ack_latency_ms, ack_ts_ns)
        self.slippage_sum: Final = (
            slippage_sum if slippage_sum is not None else window_sum(slippage_bps, slippage_ts_ns)
        )


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
        closed: ClosedOrders,
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
        self.closed: Final = closed
        self.positions: Final = positions
        self.marks: Final = marks
        self.order_times_ns: Final = order_times_ns
        self.message_times_ns: Final = message_times_ns
        self.brain: Final = brain
        self.fills: Final = fills

    @property
    def closed_orders(self) -> ClosedOrders:
        """The closed-order memory, read like a dict: order id -> ClosedOrder."""
        return self.closed

    @property
    def closed_order_ids(self) -> tuple[str, ...]:
        """The remembered closed order ids, oldest first."""
        return self.closed.ids()


def initial_state(account_id: str) -> State:
    """A new account: DISARMED, no policy, nothing open."""
    return State(account_id, DISARMED, None, "", 0, {}, no_closed_orders(), {}, {}, (), (), initial_brain(), no_fills())
