"""The three phases of `titan demo`, each emitting order intents in its own style.

Phase 1 Scavenger: small, high-leverage trap and breakout entries. Phase 2 Hunter: medium-size
momentum. Phase 3 Sentinel: low-leverage market-neutral pairs (BTC against ETH). Intents are
plain values; the session turns them into PlaceOrder commands.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from adapters.paper.market import Market
from adapters.paper.venue import PaperInstrument

Side = Literal["BUY", "SELL"]


@dataclass(frozen=True)
class Intent:
    """What a phase wants: a limit order in ticks and steps."""

    phase: int
    instrument: PaperInstrument
    side: Side
    qty_steps: int
    price_ticks: int
    style: str


def scavenger(rng: random.Random, market: Market) -> list[Intent]:
    """Breakouts chase the move through the book; traps fade it with a passive order."""
    instrument = rng.choice(market.instruments)
    mid = market.prices[instrument.symbol]
    move = market.move_bps(instrument.symbol, 10)
    size = rng.randint(instrument.min_qty_steps, max(instrument.min_qty_steps, instrument.max_qty_steps // 6))
    side: Side
    if abs(move) >= 5:
        side = "BUY" if move > 0 else "SELL"
        price = mid + 2 if side == "BUY" else mid - 2
        return [Intent(1, instrument, side, size, price, "breakout")]
    side = "SELL" if move > 0 else "BUY"
    offset = rng.randint(2, 6)
    return [Intent(1, instrument, side, size, mid - offset if side == "BUY" else mid + offset, "trap")]


def hunter(rng: random.Random, market: Market) -> list[Intent]:
    """Momentum: trade with the last 30 steps' direction, crossing by a tick."""
    instrument = rng.choice(market.instruments)
    mid = market.prices[instrument.symbol]
    side: Side = "BUY" if market.move_bps(instrument.symbol, 30) >= 0 else "SELL"
    size = rng.randint(instrument.min_qty_steps, max(instrument.min_qty_steps, instrument.max_qty_steps // 3))
    return [Intent(2, instrument, side, size, mid + 1 if side == "BUY" else mid - 1, "momentum")]


def sentinel(rng: random.Random, market: Market) -> list[Intent]:
    """Pairs: sell the leg that outperformed over 50 steps, buy the other, equal notional, passive."""
    btc, eth = market.instruments[0], market.instruments[1]
    spread = market.move_bps(btc.symbol, 50) - market.move_bps(eth.symbol, 50)
    rich, cheap = (btc, eth) if spread >= 0 else (eth, btc)
    rich_steps = rng.randint(rich.min_qty_steps, max(rich.min_qty_steps, rich.max_qty_steps // 8))
    rich_notional = rich_steps * market.prices[rich.symbol] * 10 ** (8 - rich.price_decimals - rich.qty_decimals)
    cheap_unit = market.prices[cheap.symbol] * 10 ** (8 - cheap.price_decimals - cheap.qty_decimals)
    cheap_steps = max(cheap.min_qty_steps, rich_notional // cheap_unit)
    return [
        Intent(3, rich, "SELL", rich_steps, market.prices[rich.symbol] + 1, "pairs"),
        Intent(3, cheap, "BUY", cheap_steps, market.prices[cheap.symbol] - 1, "pairs"),
    ]


PHASES = {1: ("scavenger", scavenger), 2: ("hunter", hunter), 3: ("sentinel", sentinel)}
