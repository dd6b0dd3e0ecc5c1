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
)

PASS: Final = "pass"
FAIL: Final = "fail"


class Check:
    """One pre-trade check as decided: the value seen, the limit and the verdict."""

    def __init__(self, name: str, value: str, limit: str, verdict: str) -> None:
        self.name: Final = name
        self.value: Final = value
        self.limit: Final = limit
        self.verdict: Final = verdict

    def to_data(self) -> dict[str, object]:
        """Wire form."""
        return {"check": self.name, "value": self.value, "limit": self.limit, "verdict": self.verdict}


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
    if type_name == ACCOUNT_ARMED or type_name == ACCOUNT_DISARMED:
        return ModeChanged(ts_ns, type_name == ACCOUNT_ARMED, _s(data, "previous_mode"), _s(data, "reason"))
    raise DecodeError(f"unknown event type {type_name!r}")


def is_terminal(status: str) -> bool:
    """Whether an order status ends the order's life."""
    return status == FILLED or status == CANCELLED or status == VENUE_REJECTED
