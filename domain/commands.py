"""Commands as the core sees them: plain typed values, built once at the edge from `schemas/`.

Prices, quantities and fees keep the decimal strings received (refusals record them as they
came), and each is read once, when the command is built at the edge, into a `Number`: its
digits as one integer. The core takes that integer to the scale of the order's instrument, so
a price off its tick still becomes a recorded refusal, not an edge error.
"""

from __future__ import annotations

from typing import Final

from .numbers import read_decimal
from .policy import Policy


class Command:
    """What every command carries into a decision: its id and its time (UTC nanoseconds)."""

    def __init__(self, command_id: str, ts_ns: int) -> None:
        self.command_id: Final = command_id
        self.ts_ns: Final = ts_ns


class PlaceOrder(Command):
    """Place a new order (a phase's intent, after allocation)."""

    def __init__(
        self,
        command_id: str,
        ts_ns: int,
        policy_hash: str,
        phase_id: int,
        intent_id: str,
        client_order_id: str,
        venue: str,
        symbol: str,
        side: str,
        order_type: str,
        quantity: str,
        price: str,
        reference_price: str,
        reduce_only: bool,
    ) -> None:
        super().__init__(command_id, ts_ns)
        self.policy_hash: Final = policy_hash
        self.phase_id: Final = phase_id
        self.intent_id: Final = intent_id
        self.client_order_id: Final = client_order_id
        self.venue: Final = venue
        self.symbol: Final = symbol
        self.side: Final = side
        self.order_type: Final = order_type
        self.quantity: Final = quantity
        self.price: Final = price
        self.reference_price: Final = reference_price
        self.reduce_only: Final = reduce_only
        self.quantity_number: Final = read_decimal(quantity)
        self.price_number: Final = read_decimal(price)
        self.reference_price_number: Final = read_decimal(reference_price)


class CancelOrder(Command):
    """Ask the venue to cancel an open order."""

    def __init__(self, command_id: str, ts_ns: int, order_id: str, reason: str) -> None:
        super().__init__(command_id, ts_ns)
        self.order_id: Final = order_id
        self.reason: Final = reason


class RecordOrderAck(Command):
    """The venue acknowledged an order. `reported_ts_ns` is the time the ack was stamped with: the
    command's own time, unless a late ack is decided at the account's time (rules 2)."""

    def __init__(self, command_id: str, ts_ns: int, order_id: str, venue_order_id: str, reported_ts_ns: int = -1) -> None:
        super().__init__(command_id, ts_ns)
        self.order_id: Final = order_id
        self.venue_order_id: Final = venue_order_id
        self.reported_ts_ns: Final = ts_ns if reported_ts_ns < 0 else reported_ts_ns


class RecordVenueReject(Command):
    """The venue refused an order."""

    def __init__(self, command_id: str, ts_ns: int, order_id: str, venue_reason: str) -> None:
        super().__init__(command_id, ts_ns)
        self.order_id: Final = order_id
        self.venue_reason: Final = venue_reason


class RecordFill(Command):
    """The venue filled (part of) an order."""

    def __init__(
        self,
        command_id: str,
        ts_ns: int,
        order_id: str,
        fill_id: str,
        quantity: str,
        price: str,
        fee: str,
        liquidity: str,
    ) -> None:
        super().__init__(command_id, ts_ns)
        self.order_id: Final = order_id
        self.fill_id: Final = fill_id
        self.quantity: Final = quantity
        self.price: Final = price
        self.fee: Final = fee
        self.liquidity: Final = liquidity
        self.quantity_number: Final = read_decimal(quantity)
        self.price_number: Final = read_decimal(price)
        self.fee_number: Final = read_decimal(fee)


class RecordCancelled(Command):
    """The venue confirmed an order is cancelled (on request or on its own)."""

    def __init__(self, command_id: str, ts_ns: int, order_id: str, venue_reason: str) -> None:
        super().__init__(command_id, ts_ns)
        self.order_id: Final = order_id
        self.venue_reason: Final = venue_reason


class ActivatePolicy(Command):
    """Make a policy document the account's active policy."""

    def __init__(
        self,
        command_id: str,
        ts_ns: int,
        document: dict[str, object],
        policy_hash: str,
        policy: Policy,
    ) -> None:
        super().__init__(command_id, ts_ns)
        self.document: Final = document
        self.policy_hash: Final = policy_hash
        self.policy: Final = policy


class Arm(Command):
    """Allow orders to live venues."""

    def __init__(self, command_id: str, ts_ns: int, reason: str) -> None:
        super().__init__(command_id, ts_ns)
        self.reason: Final = reason


class Disarm(Command):
    """Stop orders to live venues (the paper venue still trades)."""

    def __init__(self, command_id: str, ts_ns: int, reason: str) -> None:
        super().__init__(command_id, ts_ns)
        self.reason: Final = reason


class RecordTruthSnapshot(Command):
    """What a venue reports: positions (parallel symbol/quantity lists), open orders, equity, time."""

    def __init__(
        self,
        command_id: str,
        ts_ns: int,
        venue: str,
        symbols: list[str],
        quantities: list[str],
        open_order_ids: list[str],
        equity: str,
        venue_ts_ns: int,
        latency_ms: int,
    ) -> None:
        super().__init__(command_id, ts_ns)
        self.venue: Final = venue
        self.symbols: Final = symbols
        self.quantities: Final = quantities
        self.open_order_ids: Final = open_order_ids
        self.equity: Final = equity
        self.venue_ts_ns: Final = venue_ts_ns
        self.latency_ms: Final = latency_ms


class SetRegime(Command):
    """The market regime changed (RISK_ON, NEUTRAL, RISK_OFF, CRASH)."""

    def __init__(self, command_id: str, ts_ns: int, regime: str, reason: str) -> None:
        super().__init__(command_id, ts_ns)
        self.regime: Final = regime
        self.reason: Final = reason


class RecordTailRisk(Command):
    """A power-law tail exponent estimate for a symbol."""

    def __init__(self, command_id: str, ts_ns: int, symbol: str, tail_exponent: str, sample_size: int, method: str) -> None:
        super().__init__(command_id, ts_ns)
        self.symbol: Final = symbol
        self.tail_exponent: Final = tail_exponent
        self.sample_size: Final = sample_size
        self.method: Final = method


class Halt(Command):
    """An operator halts the account: the breaker goes HALTED."""

    def __init__(self, command_id: str, ts_ns: int, reason: str) -> None:
        super().__init__(command_id, ts_ns)
        self.reason: Final = reason


class Flatten(Command):
    """An operator flattens: HALTED, cancel every open order, close every position reduce-only."""

    def __init__(self, command_id: str, ts_ns: int, reason: str, policy_hash: str, phase_id: int, intent_id: str) -> None:
        super().__init__(command_id, ts_ns)
        self.reason: Final = reason
        self.policy_hash: Final = policy_hash
        self.phase_id: Final = phase_id
        self.intent_id: Final = intent_id


class Resume(Command):
    """An operator re-enables trading from HALTED (refused while any trigger is active)."""

    def __init__(self, command_id: str, ts_ns: int, reason: str) -> None:
        super().__init__(command_id, ts_ns)
        self.reason: Final = reason


class PurgeDlq(Command):
    """An operator removes dead letters from the DLQ (`entry_ids`, in the order given); the
    removal itself happens on TITAN_DLQ after the purge is recorded. `actor` is recorded in the
    event's data too, so the purge reads whole without its envelope."""

    def __init__(self, command_id: str, ts_ns: int, entry_ids: list[str], reason: str, actor: str) -> None:
        super().__init__(command_id, ts_ns)
        self.entry_ids: Final = entry_ids
        self.reason: Final = reason
        self.actor: Final = actor
