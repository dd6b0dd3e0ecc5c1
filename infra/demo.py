"""`titan demo`: a seeded trading session through the same command bus as production.

Three phases emit order intents on the paper venue; the paper venue acknowledges, fills, rejects
and expires them; a few intents are faulty on purpose (a fat finger, an off-tick price, a stale
policy hash, a burst, a reduce-only order with nothing to reduce, a reused client order id, an
order to a live venue while DISARMED) so the ledger shows the pre-trade checks refusing them.
Same seed, same ledger, byte for byte.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from typing import Any

from rich.console import Console
from rich.progress import Progress

from adapters.paper_venue import PaperInstrument, PaperOrder, PaperVenue
from commands.handlers import Bus, Outcome
from commands.views import state_view
from schemas import commands as wire

from .submit import ensure_initialized

START_TS_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z: demo time, not the wall clock
ACCOUNT = "main"

INSTRUMENTS = (
    PaperInstrument("BTCUSDT", 1, 3, 650_000, 40, 1, 60),
    PaperInstrument("ETHUSDT", 2, 2, 340_000, 60, 1, 300),
    PaperInstrument("SOLUSDT", 2, 1, 15_000, 12, 1, 800),
)
PHASES = {1: "scavenger", 2: "hunter", 3: "sentinel"}

# Faults, by intent number modulo 50: each provokes one pre-trade refusal.
FAT_FINGER, OFF_TICK, STALE_HASH, BURST, NAKED_REDUCE, REUSED_CLIENT_ID, LIVE_WHILE_DISARMED = 7, 13, 19, 23, 29, 37, 43


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
        self.venue = PaperVenue(random.Random(seed * 7919 + 1), ACCOUNT)
        self.prices = {i.symbol: i.start_price_ticks for i in INSTRUMENTS}
        self.now = START_TS_NS
        self.seq = 0
        self.outcomes: list[tuple[wire.AnyCommand, Outcome]] = []
        self.last_client_id = ""

    def submit(self, command: wire.AnyCommand) -> Outcome:
        outcome = self.bus.handle(command)
        self.outcomes.append((command, outcome))
        return outcome

    def drain_venue(self, until_ns: int) -> None:
        for report in self.venue.due(until_ns):
            self.submit(report)

    def step_market(self) -> None:
        for instrument in INSTRUMENTS:
            move = self.rng.randint(-instrument.volatility_ticks, instrument.volatility_ticks)
            if self.rng.random() < 0.02:  # a fat-tailed jump
                move *= 8
            self.prices[instrument.symbol] = max(instrument.volatility_ticks * 10, self.prices[instrument.symbol] + move)

    def intent(self, n: int, policy_hash: str) -> wire.PlaceOrder:
        rng = self.rng
        instrument = INSTRUMENTS[rng.randrange(len(INSTRUMENTS))]
        phase = rng.choice((1, 1, 2, 2, 3))
        mid = self.prices[instrument.symbol]
        side = rng.choice(("BUY", "SELL"))
        offset = rng.randint(0, 4)
        price_ticks = mid - offset if side == "BUY" else mid + offset
        steps = rng.randint(instrument.min_qty_steps, instrument.max_qty_steps // (4 - phase))
        self.seq += 1
        client_id = f"{PHASES[phase]}-{self.seq:06d}"
        price = instrument.price(price_ticks)
        venue = "paper"
        reduce_only = False
        fault = n % 50
        if fault == FAT_FINGER:
            price = instrument.price(mid + mid // 20 if side == "BUY" else mid - mid // 20)
        elif fault == OFF_TICK:
            price = instrument.price(price_ticks) + "5"
        elif fault == STALE_HASH:
            policy_hash = "0" * 64
        elif fault == NAKED_REDUCE:
            reduce_only = True
        elif fault == REUSED_CLIENT_ID and self.last_client_id:
            client_id = self.last_client_id
        elif fault == LIVE_WHILE_DISARMED:
            venue = "binance"
            instrument = INSTRUMENTS[0]
            price = instrument.price(self.prices["BTCUSDT"])
            mid = self.prices["BTCUSDT"]
        self.last_client_id = client_id
        return wire.PlaceOrder(
            command_id=f"demo-{n:06d}",
            account_id=ACCOUNT,
            ts_ns=self.now,
            actor=f"phase{phase}-{PHASES[phase]}",
            correlation_id=f"intent-{n:06d}",
            policy_hash=policy_hash,
            phase_id=phase,
            intent_id=f"intent-{n:06d}",
            client_order_id=client_id,
            venue=venue,
            symbol=instrument.symbol,
            side=side,  # type: ignore[arg-type]
            quantity=instrument.qty(steps),
            price=price,
            reference_price=instrument.price(mid),
            reduce_only=reduce_only,
        )

    def place(self, command: wire.PlaceOrder) -> None:
        outcome = self.submit(command)
        if outcome.outcome != "accepted":
            return
        instrument = next(i for i in INSTRUMENTS if i.symbol == command.symbol)
        price_ticks = int(command.price.replace(".", "")) if command.price else 0
        steps = int(command.quantity.replace(".", ""))
        order = PaperOrder(f"ord-{command.command_id}", instrument, command.side, price_ticks, steps)
        self.venue.accept(order, command.ts_ns, latency_spike=self.rng.random() < 0.03)


def run(bus: Bus, *, seed: int, orders: int, ledger_url: str, progress: bool) -> dict[str, Any]:
    """Run the session and return its summary."""
    ensure_initialized(bus, ACCOUNT)
    session = Session(bus, seed)
    policy_hash = bus.state(ACCOUNT).policy_hash
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("trading", total=orders)
        for n in range(1, orders + 1):
            session.now += session.rng.randint(20, 400) * 1_000_000
            session.drain_venue(session.now)
            session.step_market()
            if n % 50 == BURST:
                for burst in range(12):
                    command = session.intent(n * 100 + burst, policy_hash)
                    session.place(command)
            else:
                session.place(session.intent(n, policy_hash))
            bar.advance(task)
        session.drain_venue(session.now + 3_600 * 1_000_000_000)
    return summarize(bus, session, seed, ledger_url)


def summarize(bus: Bus, session: Session, seed: int, ledger_url: str) -> dict[str, Any]:
    """Counts, refusals by reason, final positions, the ledger head and an order to explain."""
    kinds: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    explain = None
    for command, outcome in session.outcomes:
        kinds[f"{command.type}:{outcome.outcome}"] += 1
        if outcome.reason:
            reasons[outcome.reason] += 1
        if explain is None and isinstance(command, wire.PlaceOrder) and outcome.outcome == "accepted":
            explain = f"ord-{command.command_id}"
    position, head_hash, count = bus.ctx.ledger.head()
    view = state_view(bus.ctx.core, bus.state(ACCOUNT))
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
        },
        "rejections_by_reason": dict(sorted(reasons.items())),
        "positions": view["positions"],
        "open_orders": len(view["open_orders"]),
        "mode": view["mode"],
        "policy_hash": view["policy_hash"],
        "order_to_explain": explain,
    }


def print_summary(console: Console, summary: dict[str, Any]) -> None:
    """The human-readable summary."""
    from rich.table import Table

    o, v = summary["orders"], summary["venue"]
    console.print(f"[bold]titan demo[/] seed {summary['seed']}: {o['placed']} orders, {o['accepted']} accepted, {o['rejected']} rejected")
    console.print(f"venue: {v['acks']} acks, {v['fills']} fills, {v['venue_rejects']} venue rejects, {v['cancelled']} expired")
    reasons = Table("reason", "count", title="rejections by reason")
    for reason, count in summary["rejections_by_reason"].items():
        reasons.add_row(reason, str(count))
    console.print(reasons)
    positions = Table("symbol", "quantity", "avg price", "realized pnl", "fees", title="final positions")
    for p in summary["positions"]:
        positions.add_row(f"{p['venue']}:{p['symbol']}", p["quantity"], p["avg_price"], p["realized_pnl"], p["fees"])
    console.print(positions)
    ledger = summary["ledger"]
    console.print(f"ledger: {ledger} ({summary['records']} records, head {summary['head_hash']})")
    console.print(f"try:    titan state --ledger {ledger}")
    console.print(f"        titan ledger verify --ledger {ledger}")
    if summary["order_to_explain"]:
        console.print(f"        order to explain: {summary['order_to_explain']}")
