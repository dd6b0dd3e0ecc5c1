"""The built-in paper venue: a seeded model of acks, partial fills, venue rejects and cancels.

It answers the orders titan accepted with the venue reports a real venue would send, as
commands (RecordOrderAck, RecordFill, RecordCancelled, RecordVenueReject) scheduled at
future times. Same seed, same reports.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from typing import Literal, TypedDict

from domain.numbers import format_units
from schemas import commands as wire

NS_PER_MS = 1_000_000


class Common(TypedDict):
    """The fields every venue report carries."""

    command_id: str
    account_id: str
    ts_ns: int
    actor: str

FEE_BPS = 2  # taker and maker alike, on notional


@dataclass(frozen=True)
class PaperInstrument:
    """What the paper venue knows of a symbol: its scales and where its price starts."""

    symbol: str
    price_decimals: int
    qty_decimals: int
    start_price_ticks: int
    volatility_ticks: int
    min_qty_steps: int
    max_qty_steps: int

    def price(self, ticks: int) -> str:
        """A price in ticks as a decimal string."""
        return format_units(ticks, self.price_decimals)

    def qty(self, steps: int) -> str:
        """A quantity in steps as a decimal string."""
        return format_units(steps, self.qty_decimals)


@dataclass(order=True)
class Scheduled:
    """A venue report due at a time; `seq` keeps equal times in the order they were made."""

    ts_ns: int
    seq: int
    command: wire.AnyCommand = field(compare=False)


@dataclass
class PaperOrder:
    """An order the venue is working."""

    order_id: str
    instrument: PaperInstrument
    side: str
    price_ticks: int
    qty_steps: int
    filled_steps: int = 0


class PaperVenue:
    """Seeded venue model. `accept()` an order titan accepted; `due(ts)` pops reports up to ts."""

    def __init__(
        self, rng: random.Random, account_id: str, actor: str = "paper-venue", initial_equity_money: int = 0
    ) -> None:
        self._rng = rng
        self._account_id = account_id
        self._actor = actor
        self._queue: list[Scheduled] = []
        self._seq = 0
        self._ids = 0
        self.working: dict[str, PaperOrder] = {}
        # The venue's own book, as of the reports it has delivered: what a truth snapshot shows.
        self.open_ids: set[str] = set()
        self.positions: dict[str, int] = {}  # symbol -> signed steps
        self.cash_money = initial_equity_money
        self.phantom: dict[str, int] = {}  # injected drift: steps only the venue believes in
        self.latency_spike_ms = 0  # injected fault: extra ack latency, up to this many ms

    def _next_id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}{self._ids:07d}"

    def _schedule(self, ts_ns: int, command: wire.AnyCommand) -> None:
        self._seq += 1
        heapq.heappush(self._queue, Scheduled(ts_ns, self._seq, command))


    def _common(self, ts_ns: int) -> Common:
        return {"command_id": self._next_id("pv-"), "account_id": self._account_id, "ts_ns": ts_ns, "actor": self._actor}

    def accept(self, order: PaperOrder, ts_ns: int, reference_ticks: int) -> None:
        """Plan the venue's reports for an order titan accepted at ts_ns.

        An order that crosses the reference (a buy at or above it, a sell at or below) fills at
        once, at a price between the reference and its limit drawn against us (slippage); a
        passive one fills at its limit, partly or wholly, or rests until the venue expires it.
        `latency_spike_ms` (a fault the session injects) delays every ack.
        """
        rng = self._rng
        latency_ms = rng.randint(3, 40) + (rng.randint(self.latency_spike_ms // 2, self.latency_spike_ms) if self.latency_spike_ms else 0)
        t = ts_ns + latency_ms * NS_PER_MS
        if rng.random() < 0.03:
            self._schedule(t, wire.RecordVenueReject(**self._common(t), order_id=order.order_id, venue_reason="INSUFFICIENT_MARGIN"))
            return
        self.working[order.order_id] = order
        self._schedule(t, wire.RecordOrderAck(**self._common(t), order_id=order.order_id, venue_order_id=self._next_id("V")))
        crossing = order.price_ticks >= reference_ticks if order.side == "BUY" else order.price_ticks <= reference_ticks
        if crossing:
            gap = abs(order.price_ticks - reference_ticks)
            slipped = rng.randint(0, gap)
            price = reference_ticks + slipped if order.side == "BUY" else reference_ticks - slipped
            t += rng.randint(1, 20) * NS_PER_MS
            self._schedule(t, self._fill(order, order.qty_steps, t, price, "taker"))
            return
        if rng.random() < 0.7:
            parts = 1 if order.qty_steps < 2 or rng.random() < 0.5 else 2
            remaining = order.qty_steps
            for part in range(parts):
                t += rng.randint(5, 300) * NS_PER_MS
                steps = remaining if part == parts - 1 else rng.randint(1, remaining - 1)
                remaining -= steps
                self._schedule(t, self._fill(order, steps, t, order.price_ticks, "maker"))
        else:
            # rests on the book; the venue cancels it later (expiry)
            t += rng.randint(500, 3000) * NS_PER_MS
            self._schedule(t, wire.RecordCancelled(**self._common(t), order_id=order.order_id, venue_reason="EXPIRED"))

    def _fill(self, order: PaperOrder, steps: int, ts_ns: int, price_ticks: int, liquidity: Literal["maker", "taker"]) -> wire.RecordFill:
        instrument = order.instrument
        # notional in 1e-8 money units: ticks * steps * 10**(8 - pd - qd); fee = notional * bps
        notional = price_ticks * steps * 10 ** (8 - instrument.price_decimals - instrument.qty_decimals)
        fee_units = notional * FEE_BPS // 10_000
        return wire.RecordFill(
            **self._common(ts_ns),
            order_id=order.order_id,
            fill_id=self._next_id("F"),
            quantity=instrument.qty(steps),
            price=instrument.price(price_ticks),
            fee=format_units(fee_units, 8),
            liquidity=liquidity,
        )

    def due(self, ts_ns: int) -> list[wire.AnyCommand]:
        """Reports due at or before ts_ns, in time order; the venue's book moves as they go out."""
        ready: list[wire.AnyCommand] = []
        while self._queue and self._queue[0].ts_ns <= ts_ns:
            report = heapq.heappop(self._queue).command
            self._book(report)
            ready.append(report)
        return ready

    def _book(self, report: wire.AnyCommand) -> None:
        if isinstance(report, wire.RecordOrderAck):
            self.open_ids.add(report.order_id)
        elif isinstance(report, wire.RecordFill):
            order = self.working[report.order_id]
            instrument = order.instrument
            steps = int(report.quantity.replace(".", ""))
            order.filled_steps += steps
            signed = steps if order.side == "BUY" else -steps
            self.positions[instrument.symbol] = self.positions.get(instrument.symbol, 0) + signed
            notional = int(report.price.replace(".", "")) * steps * 10 ** (8 - instrument.price_decimals - instrument.qty_decimals)
            fee = int(report.fee.replace(".", ""))
            self.cash_money += (-notional if order.side == "BUY" else notional) - fee
            if order.filled_steps >= order.qty_steps:
                self.open_ids.discard(report.order_id)
        elif isinstance(report, (wire.RecordCancelled, wire.RecordVenueReject)):
            self.open_ids.discard(report.order_id)

    def snapshot(
        self, ts_ns: int, instruments: dict[str, PaperInstrument], prices: dict[str, int], latency_ms: int, venue: str = "paper"
    ) -> wire.RecordTruthSnapshot:
        """The venue's view of the account now: positions, open orders, marked-to-market equity."""
        equity = self.cash_money
        positions = []
        for symbol in sorted(set(self.positions) | set(self.phantom)):
            steps = self.positions.get(symbol, 0) + self.phantom.get(symbol, 0)
            instrument = instruments[symbol]
            equity += self.positions.get(symbol, 0) * prices[symbol] * 10 ** (8 - instrument.price_decimals - instrument.qty_decimals)
            if steps:
                positions.append(wire.VenuePosition(symbol=symbol, quantity=instrument.qty(steps)))
        return wire.RecordTruthSnapshot(
            **self._common(ts_ns),
            venue=venue,
            positions=positions,
            open_order_ids=sorted(self.open_ids),
            equity=format_units(equity, 8),
            venue_ts_ns=ts_ns - latency_ms * NS_PER_MS,
            latency_ms=latency_ms,
        )

    def pending(self) -> int:
        """How many reports are still scheduled."""
        return len(self._queue)
