"""Events the execution aggregate records, and their JSON data (decimals as strings).

`to_data()` is the one place an event becomes wire data; `decode_event()` the one place wire data
becomes an event again. Amounts are read back at the scale of the instrument the state knows.
"""

from __future__ import annotations

from typing import Final

from .model import ACCEPTED, CANCELLED, FILLED, VENUE_REJECTED, Order, Position, State
from .numbers import MONEY_DECIMALS, format_money, format_units, parse_units, pow10
from .policy import Instrument, Policy, policy_from_document

POLICY_ACTIVATED: Final = "policy.activated.v1"
ACCOUNT_ARMED: Final = "account.armed.v1"
ACCOUNT_DISARMED: Final = "account.disarmed.v1"
ORDER_ACCEPTED: Final = "order.accepted.v1"
ORDER_REJECTED: Final = "order.rejected.v1"
ORDER_CANCEL_REQUESTED: Final = "order.cancel_requested.v1"
ORDER_ACKNOWLEDGED: Final = "order.acknowledged.v1"
ORDER_VENUE_REJECTED: Final = "order.venue_rejected.v1"
ORDER_FILLED: Final = "order.filled.v1"
ORDER_CANCELLED: Final = "order.cancelled.v1"
COMMAND_REJECTED: Final = "command.rejected.v1"
TRUTH_RECORDED: Final = "truth.snapshot_recorded.v1"
BREAKER_TRANSITIONED: Final = "breaker.transitioned.v1"
VENUE_STATUS_CHANGED: Final = "venue.status_changed.v1"
REGIME_CHANGED: Final = "regime.changed.v1"
TAIL_RISK_RECORDED: Final = "tail_risk.recorded.v1"
DAY_ROLLED: Final = "budget.day_rolled.v1"
DLQ_PURGED: Final = "dlq.purged.v1"

EVENT_TYPES: Final = (
    POLICY_ACTIVATED,
    ACCOUNT_ARMED,
    ACCOUNT_DISARMED,
    ORDER_ACCEPTED,
    ORDER_REJECTED,
    ORDER_CANCEL_REQUESTED,
    ORDER_ACKNOWLEDGED,
    ORDER_VENUE_REJECTED,
    ORDER_FILLED,
    ORDER_CANCELLED,
    COMMAND_REJECTED,
    TRUTH_RECORDED,
    BREAKER_TRANSITIONED,
    VENUE_STATUS_CHANGED,
    REGIME_CHANGED,
    TAIL_RISK_RECORDED,
    DAY_ROLLED,
    DLQ_PURGED,
)

PASS: Final = "pass"
FAIL: Final = "fail"


TEXT: Final = -2
"""The scale of a check value that is text, written as it is."""
MONEY: Final = -1
"""The scale of a check value in money units, written as `format_money` does."""


class Check:
    """One pre-trade check as decided: the value seen, the limit and the verdict.

    A value or limit is either text or an integer with its scale (decimals >= 0, or MONEY); the
    integer is written as a decimal string only when the check is read or recorded (`to_data`),
    so deciding does no string work for it."""

    def __init__(
        self,
        name: str,
        value: str,
        limit: str,
        verdict: str,
        value_units: int = 0,
        value_scale: int = TEXT,
        limit_units: int = 0,
        limit_scale: int = TEXT,
    ) -> None:
        self.name: Final = name
        self.verdict: Final = verdict
        self.value_text: Final = value
        self.value_units: Final = value_units
        self.value_scale: Final = value_scale
        self.limit_text: Final = limit
        self.limit_units: Final = limit_units
        self.limit_scale: Final = limit_scale

    @property
    def value(self) -> str:
        """The value seen, as recorded."""
        return written(self.value_text, self.value_units, self.value_scale)

    @property
    def limit(self) -> str:
        """The limit, as recorded."""
        return written(self.limit_text, self.limit_units, self.limit_scale)

    def to_data(self) -> dict[str, object]:
        """Wire form."""
        return {"check": self.name, "value": self.value, "limit": self.limit, "verdict": self.verdict}


def measured(name: str, value_units: int, value_scale: int, limit_units: int, limit_scale: int, verdict: str) -> Check:
    """A check whose value and limit are integers at their scales (formatted when recorded)."""
    return Check(name, "", "", verdict, value_units, value_scale, limit_units, limit_scale)


def written(text: str, units: int, scale: int) -> str:
    """A check value as recorded: the text, or the integer at its scale."""
    if scale == TEXT:
        return text
    if scale == MONEY:
        return format_money(units)
    return format_units(units, scale)


class Event:
    """Every event carries its time: the time of the command that caused it."""

    def __init__(self, ts_ns: int) -> None:
        self.ts_ns: Final = ts_ns

    def type_name(self) -> str:
        """The versioned type, e.g. `order.accepted.v1`."""
        raise NotImplementedError

    def to_data(self) -> dict[str, object]:
        """The event's `data` as plain JSON values."""
        raise NotImplementedError


class PolicyActivated(Event):
    def __init__(
        self,
        ts_ns: int,
        policy_hash: str,
        previous_policy_hash: str,
        document: dict[str, object],
        policy: Policy,
    ) -> None:
        super().__init__(ts_ns)
        self.policy_hash: Final = policy_hash
        self.previous_policy_hash: Final = previous_policy_hash
        self.document: Final = document
        self.policy: Final = policy

    def type_name(self) -> str:
        return POLICY_ACTIVATED

    def to_data(self) -> dict[str, object]:
        return {
            "policy_hash": self.policy_hash,
            "previous_policy_hash": self.previous_policy_hash or None,
            "policy": self.document,
        }


class ModeChanged(Event):
    def __init__(self, ts_ns: int, armed: bool, previous_mode: str, reason: str) -> None:
        super().__init__(ts_ns)
        self.armed: Final = armed
        self.previous_mode: Final = previous_mode
        self.reason: Final = reason

    def type_name(self) -> str:
        return ACCOUNT_ARMED if self.armed else ACCOUNT_DISARMED

    def to_data(self) -> dict[str, object]:
        return {"previous_mode": self.previous_mode, "reason": self.reason}


def _checks_data(checks: list[Check]) -> list[object]:
    result: list[object] = []
    for check in checks:
        result.append(check.to_data())
    return result


class OrderAccepted(Event):
    def __init__(self, ts_ns: int, order: Order, notional_money: int, checks: list[Check]) -> None:
        super().__init__(ts_ns)
        self.order: Final = order
        self.notional_money: Final = notional_money
        self.checks: Final = checks

    def type_name(self) -> str:
        return ORDER_ACCEPTED

    def to_data(self) -> dict[str, object]:
        order = self.order
        instrument = order.instrument
        return {
            "order_id": order.order_id,
            "client_order_id": order.client_order_id,
            "venue": instrument.venue,
            "symbol": instrument.symbol,
            "side": order.side,
            "order_type": order.order_type,
            "quantity": format_units(order.qty_units, instrument.qty_decimals),
            "price": format_units(order.price_units, instrument.price_decimals),
            "reference_price": format_units(order.reference_price_units, instrument.price_decimals),
            "reduce_only": order.reduce_only,
            "phase_id": order.phase_id,
            "intent_id": order.intent_id,
            "notional": format_money(self.notional_money),
            "checks": _checks_data(self.checks),
        }


class OrderRejected(Event):
    """A PlaceOrder refused: the order as asked (strings as received), the reason and the checks."""

    def __init__(
        self,
        ts_ns: int,
        order_id: str,
        client_order_id: str,
        venue: str,
        symbol: str,
        side: str,
        order_type: str,
        quantity: str,
        price: str,
        reference_price: str,
        reduce_only: bool,
        reason: str,
        checks: list[Check],
    ) -> None:
        super().__init__(ts_ns)
        self.order_id: Final = order_id
        self.client_order_id: Final = client_order_id
        self.venue: Final = venue
        self.symbol: Final = symbol
        self.side: Final = side
        self.order_type: Final = order_type
        self.quantity: Final = quantity
        self.price: Final = price
        self.reference_price: Final = reference_price
        self.reduce_only: Final = reduce_only
        self.reason: Final = reason
        self.checks: Final = checks

    def type_name(self) -> str:
        return ORDER_REJECTED

    def to_data(self) -> dict[str, object]:
        return {
            "order_id": self.order_id,
            "client_order_id": self.client_order_id,
            "venue": self.venue,
            "symbol": self.symbol,
            "side": self.side,
            "order_type": self.order_type,
            "quantity": self.quantity,
            "price": self.price if self.price != "" else None,
            "reference_price": self.reference_price,
            "reduce_only": self.reduce_only,
            "reason": self.reason,
            "checks": _checks_data(self.checks),
        }


class OrderCancelRequested(Event):
    def __init__(self, ts_ns: int, order_id: str, reason: str) -> None:
        super().__init__(ts_ns)
        self.order_id: Final = order_id
        self.reason: Final = reason

    def type_name(self) -> str:
        return ORDER_CANCEL_REQUESTED

    def to_data(self) -> dict[str, object]:
        return {"order_id": self.order_id, "reason": self.reason}


class OrderAcknowledged(Event):
    def __init__(self, ts_ns: int, order_id: str, venue_order_id: str, ack_latency_ms: int) -> None:
        super().__init__(ts_ns)
        self.order_id: Final = order_id
        self.venue_order_id: Final = venue_order_id
        self.ack_latency_ms: Final = ack_latency_ms

    def type_name(self) -> str:
        return ORDER_ACKNOWLEDGED

    def to_data(self) -> dict[str, object]:
        return {
            "order_id": self.order_id,
            "venue_order_id": self.venue_order_id,
            "ack_latency_ms": self.ack_latency_ms,
        }


class OrderVenueRejected(Event):
    def __init__(self, ts_ns: int, order_id: str, venue_reason: str) -> None:
        super().__init__(ts_ns)
        self.order_id: Final = order_id
        self.venue_reason: Final = venue_reason

    def type_name(self) -> str:
        return ORDER_VENUE_REJECTED

    def to_data(self) -> dict[str, object]:
        return {"order_id": self.order_id, "venue_reason": self.venue_reason}


def position_data(position: Position) -> dict[str, object]:
    """Wire form of a position, average price in money per unit of quantity."""
    instrument = position.instrument
    avg_money = 0
    if position.qty_units != 0:
        scaled = position.cost_money * pow10(instrument.qty_decimals)
        avg_money = abs(scaled) // abs(position.qty_units)
    return {
        "quantity": format_units(position.qty_units, instrument.qty_decimals),
        "avg_price": format_money(avg_money),
        "cost": format_money(position.cost_money),
        "realized_pnl": format_money(position.realized_pnl_money),
        "fees": format_money(position.fees_money),
    }


class OrderFilled(Event):
    """A fill counted: the order's progress and the position it leaves."""

    def __init__(
        self,
        ts_ns: int,
        order: Order,
        fill_id: str,
        qty_units: int,
        price_units: int,
        fee_money: int,
        liquidity: str,
        realized_pnl_money: int,
        position: Position,
    ) -> None:
        super().__init__(ts_ns)
        self.order: Final = order
        self.fill_id: Final = fill_id
        self.qty_units: Final = qty_units
        self.price_units: Final = price_units
        self.fee_money: Final = fee_money
        self.liquidity: Final = liquidity
        self.realized_pnl_money: Final = realized_pnl_money
        self.position: Final = position

    def type_name(self) -> str:
        return ORDER_FILLED

    def to_data(self) -> dict[str, object]:
        order = self.order
        instrument = order.instrument
        return {
            "order_id": order.order_id,
            "fill_id": self.fill_id,
            "venue": instrument.venue,
            "symbol": instrument.symbol,
            "side": order.side,
            "quantity": format_units(self.qty_units, instrument.qty_decimals),
            "price": format_units(self.price_units, instrument.price_decimals),
            "fee": format_money(self.fee_money),
            "liquidity": self.liquidity,
            "status": order.status,
            "filled_quantity": format_units(order.filled_qty_units, instrument.qty_decimals),
            "remaining_quantity": format_units(order.remaining_units(), instrument.qty_decimals),
            "realized_pnl": format_money(self.realized_pnl_money),
            "position": position_data(self.position),
        }


class OrderCancelled(Event):
    def __init__(self, ts_ns: int, order: Order, venue_reason: str) -> None:
        super().__init__(ts_ns)
        self.order: Final = order
        self.venue_reason: Final = venue_reason

    def type_name(self) -> str:
        return ORDER_CANCELLED

    def to_data(self) -> dict[str, object]:
        order = self.order
        return {
            "order_id": order.order_id,
            "venue_reason": self.venue_reason,
            "filled_quantity": format_units(order.filled_qty_units, order.instrument.qty_decimals),
        }


class CommandRejected(Event):
    """A command other than PlaceOrder refused; `detail` holds the values that decided it."""

    def __init__(self, ts_ns: int, command_type: str, reason: str, detail: dict[str, str]) -> None:
        super().__init__(ts_ns)
        self.command_type: Final = command_type
        self.reason: Final = reason
        self.detail: Final = detail

    def type_name(self) -> str:
        return COMMAND_REJECTED

    def to_data(self) -> dict[str, object]:
        detail: dict[str, object] = {}
        for key in sorted(self.detail):
            detail[key] = self.detail[key]
        return {"command_type": self.command_type, "reason": self.reason, "detail": detail}


def _str_map(values: dict[str, str]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key in sorted(values):
        result[key] = values[key]
    return result


class TruthComponent:
    """One component of a truth score: what was measured, its 0-100 score and its weight."""

    def __init__(self, name: str, value: str, score: int, weight: int) -> None:
        self.name: Final = name
        self.value: Final = value
        self.score: Final = score
        self.weight: Final = weight

    def to_data(self) -> dict[str, object]:
        """Wire form."""
        return {"component": self.name, "value": self.value, "score": self.score, "weight": self.weight}


class TruthRecorded(Event):
    """A venue's view compared with ours: the score, each component, and what disagreed."""

    def __init__(
        self,
        ts_ns: int,
        venue: str,
        score: int,
        components: list[TruthComponent],
        equity_money: int,
        venue_ts_ns: int,
        latency_ms: int,
        drifts: dict[str, str],
        orphan_order_ids: list[str],
        missing_order_ids: list[str],
    ) -> None:
        super().__init__(ts_ns)
        self.venue: Final = venue
        self.score: Final = score
        self.components: Final = components
        self.equity_money: Final = equity_money
        self.venue_ts_ns: Final = venue_ts_ns
        self.latency_ms: Final = latency_ms
        self.drifts: Final = drifts
        self.orphan_order_ids: Final = orphan_order_ids
        self.missing_order_ids: Final = missing_order_ids

    def type_name(self) -> str:
        return TRUTH_RECORDED

    def to_data(self) -> dict[str, object]:
        components: list[object] = []
        for component in self.components:
            components.append(component.to_data())
        orphans: list[object] = list(self.orphan_order_ids)
        missing: list[object] = list(self.missing_order_ids)
        return {
            "venue": self.venue,
            "score": self.score,
            "components": components,
            "equity": format_money(self.equity_money),
            "venue_ts_ns": self.venue_ts_ns,
            "latency_ms": self.latency_ms,
            "drifts": _str_map(self.drifts),
            "orphan_order_ids": orphans,
            "missing_order_ids": missing,
        }


class BreakerTransitioned(Event):
    """The circuit breaker moved, with the trigger and the values that moved it."""

    def __init__(self, ts_ns: int, from_state: str, to_state: str, trigger: str, reason: str, values: dict[str, str]) -> None:
        super().__init__(ts_ns)
        self.from_state: Final = from_state
        self.to_state: Final = to_state
        self.trigger: Final = trigger
        self.reason: Final = reason
        self.values: Final = values

    def type_name(self) -> str:
        return BREAKER_TRANSITIONED

    def to_data(self) -> dict[str, object]:
        return {
            "from_state": self.from_state,
            "to_state": self.to_state,
            "trigger": self.trigger,
            "reason": self.reason,
            "values": _str_map(self.values),
        }


class VenueStatusChanged(Event):
    """A venue's quality crossed a threshold (OK, DEGRADED, HALTED)."""

    def __init__(
        self, ts_ns: int, venue: str, from_status: str, to_status: str, slippage_bps: int, ack_latency_ms: int, samples: int
    ) -> None:
        super().__init__(ts_ns)
        self.venue: Final = venue
        self.from_status: Final = from_status
        self.to_status: Final = to_status
        self.slippage_bps: Final = slippage_bps
        self.ack_latency_ms: Final = ack_latency_ms
        self.samples: Final = samples

    def type_name(self) -> str:
        return VENUE_STATUS_CHANGED

    def to_data(self) -> dict[str, object]:
        return {
            "venue": self.venue,
            "from_status": self.from_status,
            "to_status": self.to_status,
            "mean_slippage_bps": self.slippage_bps,
            "mean_ack_latency_ms": self.ack_latency_ms,
            "samples": self.samples,
        }


class RegimeChanged(Event):
    def __init__(self, ts_ns: int, from_regime: str, to_regime: str, reason: str) -> None:
        super().__init__(ts_ns)
        self.from_regime: Final = from_regime
        self.to_regime: Final = to_regime
        self.reason: Final = reason

    def type_name(self) -> str:
        return REGIME_CHANGED

    def to_data(self) -> dict[str, object]:
        return {"from_regime": self.from_regime, "to_regime": self.to_regime, "reason": self.reason}


class TailRiskRecorded(Event):
    """A tail-exponent estimate (1e-4 units), and whether it breaches the policy's minimum."""

    def __init__(
        self, ts_ns: int, symbol: str, exponent: int, minimum: int, sample_size: int, method: str
    ) -> None:
        super().__init__(ts_ns)
        self.symbol: Final = symbol
        self.exponent: Final = exponent
        self.minimum: Final = minimum
        self.sample_size: Final = sample_size
        self.method: Final = method

    def type_name(self) -> str:
        return TAIL_RISK_RECORDED

    def to_data(self) -> dict[str, object]:
        return {
            "symbol": self.symbol,
            "tail_exponent": format_units(self.exponent, 4),
            "min_tail_exponent": format_units(self.minimum, 4),
            "breach": self.exponent < self.minimum,
            "sample_size": self.sample_size,
            "method": self.method,
        }


class DayRolled(Event):
    """The budget day rolled at 00:00 UTC of command time."""

    def __init__(self, ts_ns: int, from_day: int, to_day: int, closed_day_pnl_money: int) -> None:
        super().__init__(ts_ns)
        self.from_day: Final = from_day
        self.to_day: Final = to_day
        self.closed_day_pnl_money: Final = closed_day_pnl_money

    def type_name(self) -> str:
        return DAY_ROLLED

    def to_data(self) -> dict[str, object]:
        return {"from_day": self.from_day, "to_day": self.to_day, "closed_day_pnl": format_money(self.closed_day_pnl_money)}


class DlqPurged(Event):
    """An operator purged dead letters: their entry ids, why, and who. It changes nothing in the
    account's trading state; the DLQ view folds it."""

    def __init__(self, ts_ns: int, entry_ids: list[str], reason: str, actor: str) -> None:
        super().__init__(ts_ns)
        self.entry_ids: Final = entry_ids
        self.reason: Final = reason
        self.actor: Final = actor

    def type_name(self) -> str:
        return DLQ_PURGED

    def to_data(self) -> dict[str, object]:
        entry_ids: list[object] = list(self.entry_ids)
        return {"entry_ids": entry_ids, "reason": self.reason, "actor": self.actor}


# --- decoding ---------------------------------------------------------------------------------


class DecodeError(Exception):
    """Stored event data that this core cannot read."""


def _s(data: dict[str, object], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise DecodeError(f"field {key!r} must be a string")
    return value


def _opt_s(data: dict[str, object], key: str) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DecodeError(f"field {key!r} must be a string or null")
    return value


def _i(data: dict[str, object], key: str) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise DecodeError(f"field {key!r} must be an integer")
    return value


def _b(data: dict[str, object], key: str) -> bool:
    value = data.get(key)
    if not isinstance(value, bool):
        raise DecodeError(f"field {key!r} must be a boolean")
    return value


def _obj(data: dict[str, object], key: str) -> dict[str, object]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise DecodeError(f"field {key!r} must be an object")
    return value


def _str_list(data: dict[str, object], key: str) -> list[str]:
    raw = data.get(key)
    if not isinstance(raw, list):
        raise DecodeError(f"field {key!r} must be a list")
    result: list[str] = []
    for item in raw:
        if not isinstance(item, str):
            raise DecodeError(f"field {key!r} must hold strings")
        result.append(item)
    return result


def _units(text: str, decimals: int) -> int:
    parsed = parse_units(text, decimals)
    if not parsed.ok:
        raise DecodeError(f"{text!r} is finer than {decimals} decimals")
    return parsed.units


def _checks(data: dict[str, object]) -> list[Check]:
    raw = data.get("checks")
    if not isinstance(raw, list):
        raise DecodeError("field 'checks' must be a list")
    checks: list[Check] = []
    for item in raw:
        if not isinstance(item, dict):
            raise DecodeError("each check must be an object")
        checks.append(Check(_s(item, "check"), _s(item, "value"), _s(item, "limit"), _s(item, "verdict")))
    return checks


def _open_order(state: State, data: dict[str, object]) -> Order:
    order_id = _s(data, "order_id")
    order = state.open_orders.get(order_id)
    if order is None:
        raise DecodeError(f"event refers to order {order_id!r}, which is not open")
    return order


def _instrument(state: State, venue: str, symbol: str) -> Instrument:
    policy = state.policy
    instrument = policy.instruments.get(venue + ":" + symbol) if policy is not None else None
    if instrument is None:
        raise DecodeError(f"instrument {venue}:{symbol} is not in the active policy")
    return instrument


def _position(instrument: Instrument, data: dict[str, object]) -> Position:
    return Position(
        instrument,
        _units(_s(data, "quantity"), instrument.qty_decimals),
        _units(_s(data, "cost"), MONEY_DECIMALS),
        _units(_s(data, "realized_pnl"), MONEY_DECIMALS),
        _units(_s(data, "fees"), MONEY_DECIMALS),
    )


def decode_event(type_name: str, ts_ns: int, data: dict[str, object], state: State) -> Event:
    """Rebuild a recorded event against the state it was decided on; raise DecodeError."""
    if type_name == ORDER_FILLED:
        order = _open_order(state, data)
        instrument = order.instrument
        filled = _units(_s(data, "filled_quantity"), instrument.qty_decimals)
        status = _s(data, "status")
        fill_ids = order.fill_ids + (_s(data, "fill_id"),)
        progressed = order.with_progress(status, filled, fill_ids, order.cancel_requested)
        return OrderFilled(
            ts_ns,
            progressed,
            _s(data, "fill_id"),
            _units(_s(data, "quantity"), instrument.qty_decimals),
            _units(_s(data, "price"), instrument.price_decimals),
            _units(_s(data, "fee"), MONEY_DECIMALS),
            _s(data, "liquidity"),
            _units(_s(data, "realized_pnl"), MONEY_DECIMALS),
            _position(instrument, _obj(data, "position")),
        )
    if type_name == ORDER_ACCEPTED:
        instrument = _instrument(state, _s(data, "venue"), _s(data, "symbol"))
        order = Order(
            _s(data, "order_id"),
            _s(data, "client_order_id"),
            instrument,
            _s(data, "side"),
            _s(data, "order_type"),
            _units(_s(data, "price"), instrument.price_decimals),
            _units(_s(data, "quantity"), instrument.qty_decimals),
            _units(_s(data, "reference_price"), instrument.price_decimals),
            _b(data, "reduce_only"),
            _i(data, "phase_id"),
            _s(data, "intent_id"),
            ACCEPTED,
            0,
            (),
            False,
            ts_ns,
        )
        return OrderAccepted(ts_ns, order, _units(_s(data, "notional"), MONEY_DECIMALS), _checks(data))
    if type_name == ORDER_ACKNOWLEDGED:
        return OrderAcknowledged(ts_ns, _s(data, "order_id"), _s(data, "venue_order_id"), _i(data, "ack_latency_ms"))
    if type_name == ORDER_CANCEL_REQUESTED:
        return OrderCancelRequested(ts_ns, _s(data, "order_id"), _s(data, "reason"))
    if type_name == ORDER_CANCELLED:
        order = _open_order(state, data)
        cancelled = order.with_progress(CANCELLED, order.filled_qty_units, order.fill_ids, order.cancel_requested)
        return OrderCancelled(ts_ns, cancelled, _s(data, "venue_reason"))
    if type_name == ORDER_VENUE_REJECTED:
        return OrderVenueRejected(ts_ns, _s(data, "order_id"), _s(data, "venue_reason"))
    if type_name == ORDER_REJECTED:
        return OrderRejected(
            ts_ns,
            _s(data, "order_id"),
            _s(data, "client_order_id"),
            _s(data, "venue"),
            _s(data, "symbol"),
            _s(data, "side"),
            _s(data, "order_type"),
            _s(data, "quantity"),
            _opt_s(data, "price"),
            _s(data, "reference_price"),
            _b(data, "reduce_only"),
            _s(data, "reason"),
            _checks(data),
        )
    if type_name == COMMAND_REJECTED:
        detail: dict[str, str] = {}
        raw = _obj(data, "detail")
        for key in sorted(raw):
            detail[key] = _s(raw, key)
        return CommandRejected(ts_ns, _s(data, "command_type"), _s(data, "reason"), detail)
    if type_name == POLICY_ACTIVATED:
        document = _obj(data, "policy")
        return PolicyActivated(
            ts_ns,
            _s(data, "policy_hash"),
            _opt_s(data, "previous_policy_hash"),
            document,
            policy_from_document(document),
        )
    if type_name == TRUTH_RECORDED:
        components: list[TruthComponent] = []
        raw_components = data.get("components")
        if not isinstance(raw_components, list):
            raise DecodeError("field 'components' must be a list")
        for item in raw_components:
            if not isinstance(item, dict):
                raise DecodeError("each component must be an object")
            components.append(TruthComponent(_s(item, "component"), _s(item, "value"), _i(item, "score"), _i(item, "weight")))
        drifts: dict[str, str] = {}
        raw_drifts = _obj(data, "drifts")
        for key in sorted(raw_drifts):
            drifts[key] = _s(raw_drifts, key)
        return TruthRecorded(
            ts_ns,
            _s(data, "venue"),
            _i(data, "score"),
            components,
            _units(_s(data, "equity"), MONEY_DECIMALS),
            _i(data, "venue_ts_ns"),
            _i(data, "latency_ms"),
            drifts,
            _str_list(data, "orphan_order_ids"),
            _str_list(data, "missing_order_ids"),
        )
    if type_name == BREAKER_TRANSITIONED:
        values: dict[str, str] = {}
        raw_values = _obj(data, "values")
        for key in sorted(raw_values):
            values[key] = _s(raw_values, key)
        return BreakerTransitioned(
            ts_ns, _s(data, "from_state"), _s(data, "to_state"), _s(data, "trigger"), _s(data, "reason"), values
        )
    if type_name == VENUE_STATUS_CHANGED:
        return VenueStatusChanged(
            ts_ns,
            _s(data, "venue"),
            _s(data, "from_status"),
            _s(data, "to_status"),
            _i(data, "mean_slippage_bps"),
            _i(data, "mean_ack_latency_ms"),
            _i(data, "samples"),
        )
    if type_name == REGIME_CHANGED:
        return RegimeChanged(ts_ns, _s(data, "from_regime"), _s(data, "to_regime"), _s(data, "reason"))
    if type_name == TAIL_RISK_RECORDED:
        return TailRiskRecorded(
            ts_ns,
            _s(data, "symbol"),
            _units(_s(data, "tail_exponent"), 4),
            _units(_s(data, "min_tail_exponent"), 4),
            _i(data, "sample_size"),
            _s(data, "method"),
        )
    if type_name == DAY_ROLLED:
        return DayRolled(ts_ns, _i(data, "from_day"), _i(data, "to_day"), _units(_s(data, "closed_day_pnl"), MONEY_DECIMALS))
    if type_name == ACCOUNT_ARMED or type_name == ACCOUNT_DISARMED:
        return ModeChanged(ts_ns, type_name == ACCOUNT_ARMED, _s(data, "previous_mode"), _s(data, "reason"))
    if type_name == DLQ_PURGED:
        return DlqPurged(ts_ns, _str_list(data, "entry_ids"), _s(data, "reason"), _s(data, "actor"))
    raise DecodeError(f"unknown event type {type_name!r}")


def is_terminal(status: str) -> bool:
    """Whether an order status ends the order's life."""
    return status == FILLED or status == CANCELLED or status == VENUE_REJECTED
