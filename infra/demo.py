"""`titan demo`: a seeded trading session through the same command bus as production.

A market (infra/sim_market.py) moves; the three phases (infra/sim_strategies.py) emit order
intents; the paper venue (adapters/paper_venue.py) acknowledges, fills with slippage, rejects and
expires them and reports truth snapshots; a regime signal and Hill tail-risk estimates feed the
Brain. Scheduled faults make every part of the Brain act:

- a latency spike at the venue (its quality degrades),
- a position drift only the venue knows (the truth score drops: DEFENSIVE),
- a fat-tailed crash (tail risk, regime, drawdown),
- an operator halt, then resumes (refused while a trigger is active),
- and, every 50 intents, one faulty intent (a fat finger, an off-tick price, a stale policy hash,
  a burst over the order rate, a reduce-only order with nothing to reduce, a reused client order
  id, an order to a live venue while DISARMED) for the pre-trade checks to refuse.

Same seed, same ledger, byte for byte.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.progress import Progress

from adapters.paper.hill import HillError, default_k, hill_exponent, quantized
from adapters.paper.market import Market, Regime
from adapters.paper.strategies import PHASES, Intent
from adapters.paper.venue import PaperInstrument, PaperOrder, PaperVenue
from commands.envelope import account_stream
from commands.handlers import Bus, Outcome
from commands.views import breaker_history, state_view
from schemas import commands as wire

from .submit import ensure_initialized

START_TS_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z: demo time, not the wall clock
ACCOUNT = "main"
INITIAL_EQUITY_MONEY = 100_000 * 10**8  # the default policy's initial equity, in 1e-8 USDT
SNAPSHOT_EVERY = 10  # intents between truth snapshots from the venue
TAIL_EVERY = 25  # intents between tail-risk estimates
REGIME_EVERY = 20  # intents between regime signals
TAIL_WINDOW = 150  # returns the Hill estimator looks at

INSTRUMENTS = (
    PaperInstrument("BTCUSDT", 1, 3, 650_000, 40, 1, 60),
    PaperInstrument("ETHUSDT", 2, 2, 340_000, 60, 1, 300),
    PaperInstrument("SOLUSDT", 2, 1, 15_000, 12, 1, 800),
)

# Faulty intents, by intent number modulo 50: each provokes one pre-trade refusal.
FAT_FINGER, OFF_TICK, STALE_HASH, BURST, NAKED_REDUCE, REUSED_CLIENT_ID, LIVE_WHILE_DISARMED = 7, 13, 19, 23, 29, 37, 43


class Schedule:
    """When the session's scheduled faults and operator actions happen, scaled to its length."""

    def __init__(self, orders: int) -> None:
        self.spike = (orders * 15 // 100, orders * 25 // 100)
        self.drift = (orders * 35 // 100, orders * 45 // 100)
        self.crash = orders * 55 // 100
        self.halt = orders * 70 // 100
        self.resumes = (orders * 75 // 100, orders * 88 // 100, orders * 95 // 100)


def order_fields(
    n: int, intent: Intent, fault: int, mid: int, client_id: str, last_client_id: str, policy_hash: str
) -> dict[str, Any]:
    """The fields of intent `n`'s PlaceOrder, with the session's fault for it (if any) applied:
    shared by `titan demo` and `titan demo --live`."""
    instrument = intent.instrument
    price = instrument.price(intent.price_ticks)
    venue, reduce_only = "paper", False
    if fault == FAT_FINGER:
        price = instrument.price(mid + mid // 20 if intent.side == "BUY" else mid - mid // 20)
    elif fault == OFF_TICK:
        price = instrument.price(intent.price_ticks) + "5"
    elif fault == STALE_HASH:
        policy_hash = "0" * 64
    elif fault == NAKED_REDUCE:
        reduce_only = True
    elif fault == REUSED_CLIENT_ID and last_client_id:
        client_id = last_client_id
    elif fault == LIVE_WHILE_DISARMED:
        venue = "binance"
    return {
        "correlation_id": f"intent-{n:06d}",
        "policy_hash": policy_hash,
        "phase_id": intent.phase,
        "intent_id": f"{intent.style}-{n:06d}",
        "client_order_id": client_id,
        "venue": venue,
        "symbol": instrument.symbol,
        "side": intent.side,
        "quantity": instrument.qty(intent.qty_steps),
        "price": price,
        "reference_price": instrument.price(mid),
        "reduce_only": reduce_only,
    }


def fresh_ledger_url(seed: int) -> str:
    """A new embedded ledger file for a demo run: never one that already holds records."""
    base = os.path.join(".titan", f"demo-seed{seed}")
    path = base + ".db"
    n = 1
    while os.path.exists(path):
        n += 1
        path = f"{base}-{n}.db"
    return "sqlite:///" + path


class Session:
    """The market, the phases and the venue of one seeded run."""

    def __init__(self, bus: Bus, seed: int) -> None:
        self.bus = bus
        self.rng = random.Random(seed)
        self.market = Market(random.Random(seed * 31 + 7), INSTRUMENTS, TAIL_WINDOW)
        self.venue = PaperVenue(random.Random(seed * 7919 + 1), ACCOUNT, initial_equity_money=INITIAL_EQUITY_MONEY)
        self.now = START_TS_NS
        self.seq = 0
        self.outcomes: list[tuple[wire.AnyCommand, Outcome]] = []
        self.last_client_id = ""
        self.equity_curve: list[str] = []
        self.regime: Regime = "NEUTRAL"
        self.policy_hash = ""

    def submit(self, command: wire.AnyCommand) -> Outcome:
        outcome = self.bus.handle(command)
        self.outcomes.append((command, outcome))
        return outcome

    def _common(self, prefix: str, n: int, actor: str) -> dict[str, Any]:
        return {"command_id": f"demo-{prefix}-{n:06d}", "account_id": ACCOUNT, "ts_ns": self.now, "actor": actor}

    def drain_venue(self, until_ns: int) -> None:
        for report in self.venue.due(until_ns):
            self.submit(report)

    def snapshot(self) -> None:
        instruments = {i.symbol: i for i in INSTRUMENTS}
        self.submit(self.venue.snapshot(self.now, instruments, self.market.prices, self.rng.randint(20, 200)))
        equity = self.bus.state(ACCOUNT).brain
        self.equity_curve.append(self.bus.ctx.core.numbers.format_money(equity.equity_money()))

    def tail_risk(self, n: int) -> None:
        for symbol in sorted(self.market.returns):
            sample = self.market.returns[symbol]
            try:
                exponent = hill_exponent(sample, default_k(len(sample)))
            except HillError:
                continue
            self.submit(
                wire.RecordTailRisk(
                    **self._common(f"tail-{symbol}", n, "power-law-lab"),
                    symbol=symbol, tail_exponent=quantized(exponent), sample_size=len(sample), method="hill",
                )
            )

    def signal_regime(self, n: int) -> None:
        regime = self.market.regime()
        if regime != self.regime:
            self.regime = regime
            self.submit(wire.SetRegime(**self._common("regime", n, "ai-quant"), regime=regime, reason="realized vol / drawdown"))

    def operator(self, kind: type[wire.Halt | wire.Resume], n: int, reason: str) -> None:
        self.submit(kind(**self._common("operator", n, "operator:alice"), reason=reason))

    def order(self, n: int, intent: Intent, fault: int) -> wire.PlaceOrder:
        instrument = intent.instrument
        mid = self.market.prices[instrument.symbol]
        self.seq += 1
        fields = order_fields(n, intent, fault, mid, f"{PHASES[intent.phase][0]}-{self.seq:06d}", self.last_client_id, self.policy_hash)
        self.last_client_id = fields["client_order_id"]
        return wire.PlaceOrder(**self._common("order", n, f"phase{intent.phase}-{PHASES[intent.phase][0]}"), **fields)

    def place(self, command: wire.PlaceOrder, intent: Intent) -> None:
        outcome = self.submit(command)
        if outcome.outcome != "accepted":
            return
        order = PaperOrder(f"ord-{command.command_id}", intent.instrument, command.side, intent.price_ticks, intent.qty_steps)
        self.venue.accept(order, command.ts_ns, self.market.prices[intent.instrument.symbol])

    def intents(self) -> list[Intent]:
        phase = self.rng.choice((1, 1, 2, 2, 3))
        return PHASES[phase][1](self.rng, self.market)


def run(bus: Bus, *, seed: int, orders: int, ledger_url: str, progress: bool) -> dict[str, Any]:
    """Run the session and return its summary."""
    ensure_initialized(bus, ACCOUNT)
    session = Session(bus, seed)
    session.policy_hash = bus.state(ACCOUNT).policy_hash
    plan = Schedule(orders)
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("trading", total=orders)
        for n in range(1, orders + 1):
            session.now += session.rng.randint(20, 400) * 1_000_000
            session.drain_venue(session.now)
            session.market.step()
            _faults(session, plan, n)
            if n == 1 or n % SNAPSHOT_EVERY == 0 or n in plan.drift:
                session.snapshot()
            if n % TAIL_EVERY == 0:
                session.tail_risk(n)
            if n % REGIME_EVERY == 0:
                session.signal_regime(n)
            fault = n % 50
            burst = 12 if fault == BURST else 1
            for b in range(burst):
                for k, intent in enumerate(session.intents()):
                    session.place(session.order(n * 100 + b * 10 + k, intent, fault), intent)
            bar.advance(task)
        session.now += 3_600 * 1_000_000_000
        session.drain_venue(session.now)
        session.snapshot()
    decided = [(c.type, o.outcome, o.reason, c.command_id) for c, o in session.outcomes]
    return summarize(bus, decided, session.equity_curve, seed, ledger_url)


def _faults(session: Session, plan: Schedule, n: int) -> None:
    if n == plan.spike[0]:
        session.venue.latency_spike_ms = 600  # acks slow down: the venue's quality degrades
    elif n == plan.spike[1]:
        session.venue.latency_spike_ms = 0
    if n == plan.drift[0]:
        session.venue.phantom["BTCUSDT"] = 50  # a position only the venue knows: truth drops
    elif n == plan.drift[1]:
        session.venue.phantom.clear()
    if n == plan.crash:
        session.market.crash(8)  # a fat-tailed move: tail risk, regime, drawdown
    if n == plan.halt:
        session.operator(wire.Halt, n, "demo: operator halts after the crash")
    elif n in plan.resumes:
        session.operator(wire.Resume, n, "demo: operator tries to resume")


Decided = tuple[str, str, str | None, str]
"""A decided command: its type, outcome, reason and command id."""


def summarize(bus: Bus, decided: Sequence[Decided], equity_curve: Sequence[str], seed: int, ledger_url: str) -> dict[str, Any]:
    """Counts, refusals by reason, breaker transitions, equity, final positions, an order to explain."""
    kinds: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    explain = None
    for command_type, outcome, reason, command_id in decided:
        kinds[f"{command_type}:{outcome}"] += 1
        if reason and outcome == "rejected":  # a duplicate repeats an old refusal
            reasons[reason] += 1
        if explain is None and command_type == "place_order.v1" and outcome == "accepted":
            explain = f"ord-{command_id}"
    position, head_hash, count = bus.ctx.ledger.head()
    view = state_view(bus.ctx.core, bus.state(ACCOUNT))
    curve = [int(e.split(".")[0]) for e in equity_curve]
    return {
        "seed": seed,
        "ledger": ledger_url,
        "records": count,
        "head_position": position,
        "head_hash": head_hash,
        "orders": {
            "placed": kinds["place_order.v1:accepted"] + kinds["place_order.v1:rejected"],
            "accepted": kinds["place_order.v1:accepted"],
            "rejected": kinds["place_order.v1:rejected"],
        },
        "venue": {
            "acks": kinds["record_order_ack.v1:accepted"],
            "fills": kinds["record_fill.v1:accepted"],
            "venue_rejects": kinds["record_venue_reject.v1:accepted"],
            "cancelled": kinds["record_cancelled.v1:accepted"],
            "truth_snapshots": kinds["record_truth_snapshot.v1:accepted"],
        },
        "rejections_by_reason": dict(sorted(reasons.items())),
        "breaker_transitions": breaker_history(bus.ctx.ledger.read_stream(account_stream(ACCOUNT))),
        "breaker": view["breaker"]["state"],
        "truth": view["truth"],
        "regime": view["regime"],
        "equity": {
            "start": equity_curve[0] if equity_curve else None,
            "min": str(min(curve)) if curve else None,
            "max": str(max(curve)) if curve else None,
            "end": view["equity"],
            "drawdown_bps": view["drawdown_bps"],
        },
        "positions": view["positions"],
        "open_orders": len(view["open_orders"]),
        "mode": view["mode"],
        "policy_hash": view["policy_hash"],
        "order_to_explain": explain,
    }


def print_summary(console: Console, summary: dict[str, Any]) -> None:
    """The human-readable summary."""
    from rich.table import Table

    o, v, e = summary["orders"], summary["venue"], summary["equity"]
    console.print(f"[bold]titan demo[/] seed {summary['seed']}: {o['placed']} orders, {o['accepted']} accepted, {o['rejected']} rejected")
    console.print(
        f"venue: {v['acks']} acks, {v['fills']} fills, {v['venue_rejects']} venue rejects, "
        f"{v['cancelled']} expired, {v['truth_snapshots']} truth snapshots"
    )
    reasons = Table("reason", "count", title="rejections by reason")
    for reason, count in summary["rejections_by_reason"].items():
        reasons.add_row(reason, str(count))
    console.print(reasons)
    transitions = Table("from", "to", "trigger", "by", "values", title="breaker transitions")
    for t in summary["breaker_transitions"]:
        values = ", ".join(f"{k}={val}" for k, val in t["values"].items())
        transitions.add_row(t["from_state"], t["to_state"], t["trigger"], t["actor"], values)
    console.print(transitions)
    truth = ", ".join(f"{venue} {reading['score']}" for venue, reading in summary["truth"].items())
    console.print(
        f"breaker now {summary['breaker']}; regime {summary['regime']}; truth score {truth or 'none'}; "
        f"equity {e['start'] or 'n/a'} -> {e['end']} (min {e['min'] or 'n/a'}, max {e['max'] or 'n/a'}, drawdown {e['drawdown_bps']} bps)"
    )
    positions = Table("symbol", "quantity", "avg price", "realized pnl", "fees", title="final positions")
    for p in summary["positions"]:
        positions.add_row(f"{p['venue']}:{p['symbol']}", p["quantity"], p["avg_price"], p["realized_pnl"], p["fees"])
    console.print(positions)
    ledger = summary["ledger"]
    console.print(f"ledger: {ledger} ({summary['records']} records, head {summary['head_hash']})")
    console.print(f"try:    titan state --ledger {ledger}")
    console.print(f"        titan ledger verify --ledger {ledger}")
    if summary["order_to_explain"]:
        console.print(f"        titan explain {summary['order_to_explain']} --ledger {ledger}")
