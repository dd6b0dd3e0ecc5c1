"""Poisoned ledgers (issue 9 §1): records that titan before the input bounds accepted and that
every reader must still handle — a 1,000-digit quantity, U+0000 in reason text, a fee of 10^11
USDT (10^19 money units, past 64 bits), a fee of 40 digits, a latency beyond 2^63.

The wire models now refuse such lines, so the builder bypasses wire validation
(`model_construct`) and decides each command through the real handler and core: the records are
exactly what bdfcdfd wrote for the same lines (same decider, same envelopes, same hashes), and
the ledger replays and verifies like any other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from commands.handlers import HANDLERS, Bus, Context
from commands.ports import Ledger
from infra.core import load_core
from infra.submit import ensure_initialized
from schemas import commands as wire

ACCOUNT: Final = "main"
T0: Final = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
MS: Final = 1_000_000

LONG_QUANTITY: Final = "0." + "1" * 1000
"""A 1,000-digit quantity: refused QUANTITY_OFF_STEP, kept whole in the command and its checks."""
HUGE_FEE: Final = "100000000000"
"""10^11 USDT: 10^19 money units, past a signed 64-bit integer."""
LONG_FEE: Final = "1" * 40
"""A 40-digit fee: past what a 28-digit decimal context sums exactly."""
HUGE_LATENCY: Final = 2**64 - 1
"""The largest integer canonical JSON (orjson) writes: past a signed 64-bit column."""
NUL_HALT: Final = "bad\x00halt"
NUL_RESUME: Final = "re\x00sume"
NUL_VENUE_REASON: Final = "no\x00pe"
LITERAL_ESCAPE: Final = "C:\\u0000 is text, not a NUL"
"""A reason holding the six characters `\\u0000` after a backslash: no NUL, and must stay so."""

FEES_MONEY: Final = int(HUGE_FEE) * 10**8 + int(LONG_FEE) * 10**8
"""The day's fees in money units once both poisoned fills are counted."""


@dataclass
class Poisoned:
    """What a poisoned ledger holds, for the assertions."""

    policy_hash: str
    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def outcome(self, command_id: str) -> str:
        """The recorded outcome of one command."""
        return str(self.outcomes[command_id]["outcome"])


def unchecked(model: type[wire.CommandBase], **fields: Any) -> Any:
    """A wire command built without validation, as an earlier titan would have accepted it."""
    return model.model_construct(**fields)


def poisoned_commands(policy_hash: str) -> list[Any]:
    """The poisoned session, in order (the halt comes before the fee fills: the fee halts the account)."""
    common = {"account_id": ACCOUNT, "issued_ts_ns": None, "correlation_id": None, "causation_id": None}
    risk = {**common, "policy_hash": policy_hash}

    def order(command_id: str, ts: int, quantity: str) -> Any:
        return unchecked(
            wire.PlaceOrder, **risk, command_id=command_id, ts_ns=T0 + ts * MS, actor="phase1", phase_id=1,
            intent_id=f"i-{command_id}", client_order_id=f"c-{command_id}", venue="paper", symbol="BTCUSDT",
            side="BUY", order_type="LIMIT", quantity=quantity, price="65000.0", reference_price="65000.0", reduce_only=False,
        )

    def snapshot(command_id: str, ts: int, latency_ms: int) -> Any:
        return unchecked(
            wire.RecordTruthSnapshot, **common, command_id=command_id, ts_ns=T0 + ts * MS, actor="paper-venue",
            venue="paper", positions=[], open_order_ids=[], equity="100000", venue_ts_ns=T0 + ts * MS, latency_ms=latency_ms,
        )

    def operator(model: type[wire.CommandBase], command_id: str, ts: int, reason: str) -> Any:
        return unchecked(model, **common, command_id=command_id, ts_ns=T0 + ts * MS, actor="operator:bob", reason=reason)

    def fill(command_id: str, ts: int, order_id: str, fee: str) -> Any:
        return unchecked(
            wire.RecordFill, **common, command_id=command_id, ts_ns=T0 + ts * MS, actor="paper-venue", order_id=order_id,
            fill_id=f"F-{command_id}", quantity="0.010", price="65000.0", fee=fee, liquidity="taker",
        )

    return [
        snapshot("s1", 0, 5),
        order("big", 1, LONG_QUANTITY),
        order("c1", 2, "0.010"),
        order("c2", 3, "0.010"),
        order("c3", 4, "0.010"),
        unchecked(
            wire.RecordVenueReject, **common, command_id="vr", ts_ns=T0 + 5 * MS, actor="paper-venue",
            order_id="ord-c2", venue_reason=NUL_VENUE_REASON,
        ),
        operator(wire.Halt, "h1", 6, NUL_HALT),
        operator(wire.Resume, "r1", 7, NUL_RESUME),
        operator(wire.Halt, "h2", 8, LITERAL_ESCAPE),
        operator(wire.Resume, "r2", 9, "resumed"),
        fill("f1", 10, "ord-c1", HUGE_FEE),
        fill("f2", 11, "ord-c3", LONG_FEE),
        snapshot("s2", 12, HUGE_LATENCY),
    ]


def build_poisoned(ledger: Ledger, core: Any = None) -> Poisoned:
    """Initialize the account (the default policy, as `titan init`) and record the poisoned session."""
    bus = Bus(Context(ledger, core if core is not None else load_core("auto")), HANDLERS)
    ensure_initialized(bus, ACCOUNT)
    poisoned = Poisoned(str(bus.state(ACCOUNT).policy_hash))
    for command in poisoned_commands(poisoned.policy_hash):
        poisoned.outcomes[command.command_id] = bus.handle(command).to_json()
    return poisoned
