"""The simulated market of `titan demo`: seeded price paths with volatility regimes, jumps and a
scheduled crash, the realized-volatility/drawdown regime signal, and returns for the Hill estimator.

Prices are integers of each instrument's tick; returns are exact Decimals. Same seed, same path.
"""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Literal

from adapters.paper.venue import PaperInstrument

Regime = Literal["RISK_ON", "NEUTRAL", "RISK_OFF", "CRASH"]
CALM, VOLATILE = 1, 3  # volatility multipliers
SWITCH_PROBABILITY = 0.02  # per step, calm <-> volatile
JUMP_PROBABILITY = 0.01
JUMP_SIZE = 3
CRASH_STEP_BPS = 150  # each crash step takes 1.5% off every price


class Market:
    """Mid prices (in ticks) of every instrument, stepped once per intent."""

    def __init__(self, rng: random.Random, instruments: tuple[PaperInstrument, ...], window: int) -> None:
        self._rng = rng
        self.instruments = instruments
        self.prices = {i.symbol: i.start_price_ticks for i in instruments}
        self.highs = dict(self.prices)
        self.returns: dict[str, list[Decimal]] = {i.symbol: [] for i in instruments}
        self.history: dict[str, list[int]] = {i.symbol: [i.start_price_ticks] for i in instruments}
        self.volatility = CALM
        self.crash_steps = 0
        self._window = window

    def crash(self, steps: int) -> None:
        """A fat-tailed move: every price falls CRASH_STEP_BPS a step for `steps` steps."""
        self.crash_steps = steps

    def step(self) -> None:
        rng = self._rng
        if rng.random() < SWITCH_PROBABILITY:
            self.volatility = VOLATILE if self.volatility == CALM else CALM
        for instrument in self.instruments:
            v = instrument.volatility_ticks * self.volatility
            move = rng.randint(-v, v) + rng.randint(-v, v) + rng.randint(-v, v)
            if rng.random() < JUMP_PROBABILITY:
                move *= JUMP_SIZE
            before = self.prices[instrument.symbol]
            if self.crash_steps > 0:
                move = -before * CRASH_STEP_BPS // 10_000 - abs(move)
            after = max(instrument.volatility_ticks * 10, before + move)
            self.prices[instrument.symbol] = after
            self.highs[instrument.symbol] = max(self.highs[instrument.symbol], after)
            self.returns[instrument.symbol].append(Decimal(after - before) / Decimal(before))
            del self.returns[instrument.symbol][: -self._window]
            self.history[instrument.symbol].append(after)
            del self.history[instrument.symbol][:-200]
        if self.crash_steps > 0:
            self.crash_steps -= 1

    def move_bps(self, symbol: str, steps: int) -> int:
        """The price change over the last `steps` steps, in bps."""
        path = self.history[symbol]
        past = path[-steps - 1] if len(path) > steps else path[0]
        return (path[-1] - past) * 10_000 // past

    def realized_vol_bps(self, symbol: str, steps: int = 50) -> int:
        """Mean absolute return over the last `steps` steps, in bps."""
        recent = self.returns[symbol][-steps:]
        if not recent:
            return 0
        return int(sum(abs(r) for r in recent) * 10_000 / len(recent))

    def drawdown_bps(self, symbol: str) -> int:
        """How far the price is below its high, in bps."""
        return (self.highs[symbol] - self.prices[symbol]) * 10_000 // self.highs[symbol]

    def regime(self) -> Regime:
        """The regime signal, from BTC's realized volatility and drawdown."""
        vol = self.realized_vol_bps("BTCUSDT")
        drawdown = self.drawdown_bps("BTCUSDT")
        if drawdown >= 800:
            return "CRASH"
        if drawdown >= 300 or vol >= 2:
            return "RISK_OFF"
        if vol < 1 and self.move_bps("BTCUSDT", 50) > 0:
            return "RISK_ON"
        return "NEUTRAL"
