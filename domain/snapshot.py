"""An account's state as plain data and back: what an account snapshot stores (docs/decisions.md,
"Account snapshots: the state as data").

`state_to_snapshot` writes every part of a `State` that a decision or an `evolve` can read, as
JSON values only (str, int, bool, None, lists, objects with str keys; never a float), so that the
canonical encoding (sorted keys) gives the same bytes for the same state. That is why every
mapping whose order can matter (open orders, positions, marks, truth readings, tail exponents,
venues, the fill-id and closed-order memories) is written as a list in its order, never as an
object: sorting an object's keys would lose it. An integer beyond 64 bits (totals of a ledger
written before the input bounds) is written as its decimal digits, so every JSON encoder can
write it exactly; every other integer is a JSON integer.

`state_from_snapshot` reads such data back, refusing anything it does not know (a missing or
unknown field, a wrong type, a bool where an integer belongs, an unknown status, a negative time)
with a `SnapshotError` naming the field and what is accepted: a snapshot is read from a table a
writer does not own, so it is checked as strictly as a command from the network. The state it
rebuilds decides and evolves exactly as the one written: the policy is read again from its
document, each order and position keeps the instrument it was opened with (which an older policy
may have defined), and the shared append-only memories start fresh logs holding what the state
saw, in the same order (their sequence numbers count from 0, which changes nothing: only their
order and the last CLOSED_ORDER_MEMORY entries are ever read).
"""

from __future__ import annotations

from typing import Final, cast

from .fills import FillLog, Fills, fill_key
from .model import (
    ACCEPTED,
    ACKNOWLEDGED,
    ARMED,
    BUY,
    CANCELLED,
    CLOSED_ORDER_MEMORY,
    DISARMED,
    FILLED,
    LIMIT,
    MARKET,
    NO_CLEAR,
    PARTIALLY_FILLED,
    SELL,
    VENUE_DEGRADED,
    VENUE_HALTED,
    VENUE_OK,
    VENUE_REJECTED,
    Brain,
    ClosedOrder,
    ClosedOrders,
    Order,
    Position,
    State,
    TruthReading,
    VenueQuality,
    WindowSum,
    no_closed_orders,
)
from .numbers import MONEY_DECIMALS
from .policy import Instrument, Policy, PolicyError, policy_from_document
from .risk_policy import BREAKER_LEVELS, REGIMES

SNAPSHOT_FORMAT: Final = "titan.state.v1"
"""The layout written by this module; a snapshot of another format is refused, never guessed at."""

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
MAX_WIDE_DIGITS: Final = 4300
"""The most digits a wide integer may have (Python's own limit on reading one from text)."""
MAX_DOCUMENT_DEPTH: Final = 64
"""How deeply a policy document may nest (the policy schema needs a handful of levels)."""

OPEN_STATUSES: Final = (ACCEPTED, ACKNOWLEDGED, PARTIALLY_FILLED)
CLOSED_STATUSES: Final = (FILLED, CANCELLED, VENUE_REJECTED)
MODES: Final = (DISARMED, ARMED)
SIDES: Final = (BUY, SELL)
ORDER_TYPES: Final = (LIMIT, MARKET)
VENUE_STATUSES: Final = (VENUE_OK, VENUE_DEGRADED, VENUE_HALTED)

STATE_FIELDS: Final = (
    "format",
    "account_id",
    "mode",
    "policy",
    "policy_hash",
    "last_ts_ns",
    "open_orders",
    "positions",
    "marks",
    "order_times_ns",
    "message_times_ns",
    "closed_orders",
    "fills",
    "brain",
)
INSTRUMENT_FIELDS: Final = (
    "venue",
    "symbol",
    "price_decimals",
    "tick_units",
    "qty_decimals",
    "step_units",
    "max_order_qty_units",
    "max_position_notional_money",
)
ORDER_FIELDS: Final = (
    "order_id",
    "client_order_id",
    "instrument",
    "side",
    "order_type",
    "price_units",
    "qty_units",
    "reference_price_units",
    "reduce_only",
    "phase_id",
    "intent_id",
    "status",
    "filled_qty_units",
    "fill_ids",
    "cancel_requested",
    "accepted_ts_ns",
)
POSITION_FIELDS: Final = ("instrument", "qty_units", "cost_money", "realized_pnl_money", "fees_money")
MARK_FIELDS: Final = ("instrument", "price_units")
CLOSED_FIELDS: Final = ("order_id", "status", "fill_ids")
BRAIN_FIELDS: Final = (
    "breaker",
    "breaker_since_ns",
    "clear_since_ns",
    "truth",
    "regime",
    "tail_exponents",
    "venues",
    "equity_known",
    "equity_base_money",
    "pnl_since_base_money",
    "peak_equity_money",
    "day",
    "day_pnl_money",
)
TRUTH_FIELDS: Final = ("venue", "score", "ts_ns", "venue_ts_ns")
TAIL_FIELDS: Final = ("symbol", "exponent")
VENUE_FIELDS: Final = (
    "venue",
    "status",
    "ack_latency_ms",
    "ack_ts_ns",
    "ack_sum",
    "slippage_bps",
    "slippage_ts_ns",
    "slippage_sum",
)
SUM_FIELDS: Final = ("total", "ordered")


class SnapshotError(ValueError):
    """A snapshot that cannot be read as a state: the message names the field and what is accepted."""


# --- writing ----------------------------------------------------------------------------------


def state_to_snapshot(state: State) -> dict[str, object]:
    """The state as JSON data (see the module docstring); `state_from_snapshot` reads it back."""
    policy = state.policy
    open_orders: list[object] = []
    for order in state.open_orders.values():
        open_orders.append(_order_data(order))
    positions: list[object] = []
    for position in state.positions.values():
        positions.append(
            {
                "instrument": _instrument_data(position.instrument),
                "qty_units": _int_data(position.qty_units),
                "cost_money": _int_data(position.cost_money),
                "realized_pnl_money": _int_data(position.realized_pnl_money),
                "fees_money": _int_data(position.fees_money),
            }
        )
    marks: list[object] = []
    for key, price_units in state.marks.items():
        marks.append({"instrument": key, "price_units": _int_data(price_units)})
    return {
        "format": SNAPSHOT_FORMAT,
        "account_id": state.account_id,
        "mode": state.mode,
        "policy": _json_copy(policy.document, "policy", 0) if policy is not None else None,
        "policy_hash": state.policy_hash,
        "last_ts_ns": _int_data(state.last_ts_ns),
        "open_orders": open_orders,
        "positions": positions,
        "marks": marks,
        "order_times_ns": _ints_data(state.order_times_ns),
        "message_times_ns": _ints_data(state.message_times_ns),
        "closed_orders": _closed_data(state.closed),
        "fills": _fills_data(state.fills),
        "brain": _brain_data(state.brain),
    }


def _int_data(value: int) -> object:
    """A JSON integer, or its decimal digits when it does not fit 64 bits."""
    if INT64_MIN <= value <= INT64_MAX:
        return value
    return str(value)


def _ints_data(values: tuple[int, ...]) -> list[object]:
    written: list[object] = []
    for value in values:
        written.append(_int_data(value))
    return written


def _strs_data(values: tuple[str, ...]) -> list[object]:
    written: list[object] = list(values)
    return written


def _instrument_data(instrument: Instrument) -> dict[str, object]:
    return {
        "venue": instrument.venue,
        "symbol": instrument.symbol,
        "price_decimals": instrument.price_decimals,
        "tick_units": _int_data(instrument.tick_units),
        "qty_decimals": instrument.qty_decimals,
        "step_units": _int_data(instrument.step_units),
        "max_order_qty_units": _int_data(instrument.max_order_qty_units),
        "max_position_notional_money": _int_data(instrument.max_position_notional_money),
    }


def _order_data(order: Order) -> dict[str, object]:
    return {
        "order_id": order.order_id,
        "client_order_id": order.client_order_id,
        "instrument": _instrument_data(order.instrument),
        "side": order.side,
        "order_type": order.order_type,
        "price_units": _int_data(order.price_units),
        "qty_units": _int_data(order.qty_units),
        "reference_price_units": _int_data(order.reference_price_units),
        "reduce_only": order.reduce_only,
        "phase_id": _int_data(order.phase_id),
        "intent_id": order.intent_id,
        "status": order.status,
        "filled_qty_units": _int_data(order.filled_qty_units),
        "fill_ids": _strs_data(order.fill_ids),
        "cancel_requested": order.cancel_requested,
        "accepted_ts_ns": _int_data(order.accepted_ts_ns),
    }


def _closed_data(closed: ClosedOrders) -> list[object]:
    """The remembered closed orders, oldest first (an id closed twice is listed at both places,
    with what is remembered of it: the later one, as `ClosedOrders` reads it)."""
    written: list[object] = []
    for order_id in closed.ids():
        remembered = closed[order_id]
        written.append(
            {"order_id": order_id, "status": remembered.status, "fill_ids": _strs_data(remembered.fill_ids)}
        )
    return written


def _fills_data(fills: Fills) -> list[object]:
    """The fill ids this state has counted, in the order they were counted, with their order."""
    count = fills.count
    by_sequence: list[list[object] | None] = [None] * count
    log = fills.log
    lock = log.lock
    lock.acquire()  # the writer may be counting a fill into the shared log meanwhile
    try:
        for key, entry in log.entries.items():
            sequence = entry[0]
            if sequence < count:
                venue, _, fill_id = key.partition("\x00")
                by_sequence[sequence] = [venue, fill_id, entry[1]]
    finally:
        lock.release()
    written: list[object] = []
    for item in by_sequence:
        if item is not None:
            written.append(item)
    return written


def _window_data(summed: WindowSum) -> dict[str, object]:
    return {"total": _int_data(summed.total), "ordered": summed.ordered}


def _brain_data(brain: Brain) -> dict[str, object]:
    truth: list[object] = []
    for venue, reading in brain.truth.items():
        truth.append(
            {
                "venue": venue,
                "score": _int_data(reading.score),
                "ts_ns": _int_data(reading.ts_ns),
                "venue_ts_ns": _int_data(reading.venue_ts_ns),
            }
        )
    tail: list[object] = []
    for symbol, exponent in brain.tail_exponents.items():
        tail.append({"symbol": symbol, "exponent": _int_data(exponent)})
    venues: list[object] = []
    for venue, quality in brain.venues.items():
        venues.append(
            {
                "venue": venue,
                "status": quality.status,
                "ack_latency_ms": _ints_data(quality.ack_latency_ms),
                "ack_ts_ns": _ints_data(quality.ack_ts_ns),
                "ack_sum": _window_data(quality.ack_sum),
                "slippage_bps": _ints_data(quality.slippage_bps),
                "slippage_ts_ns": _ints_data(quality.slippage_ts_ns),
                "slippage_sum": _window_data(quality.slippage_sum),
            }
        )
    return {
        "breaker": brain.breaker,
        "breaker_since_ns": _int_data(brain.breaker_since_ns),
        "clear_since_ns": _int_data(brain.clear_since_ns),
        "truth": truth,
        "regime": brain.regime,
        "tail_exponents": tail,
        "venues": venues,
        "equity_known": brain.equity_known,
        "equity_base_money": _int_data(brain.equity_base_money),
        "pnl_since_base_money": _int_data(brain.pnl_since_base_money),
        "peak_equity_money": _int_data(brain.peak_equity_money),
        "day": _int_data(brain.day),
        "day_pnl_money": _int_data(brain.day_pnl_money),
    }


# --- reading ----------------------------------------------------------------------------------


def state_from_snapshot(data: object) -> State:
    """The state a snapshot holds; raise SnapshotError when it is not exactly such data."""
    if not isinstance(data, dict):
        raise SnapshotError(f"a state snapshot must be a JSON object, got {_kind(data)}")
    found_format = data.get("format")
    if found_format != SNAPSHOT_FORMAT:
        raise SnapshotError(
            f"snapshot field 'format' must be {SNAPSHOT_FORMAT!r} (the only layout this core reads), "
            f"got {_shown(found_format)}"
        )
    fields = _fields(data, "", STATE_FIELDS)
    policy = _policy(fields["policy"])
    policy_hash = _text(fields["policy_hash"], "policy_hash", policy is None)
    if (policy is None) != (policy_hash == ""):
        raise SnapshotError(
            "snapshot field 'policy_hash' must be empty exactly when 'policy' is null, got "
            f"{_shown(policy_hash)} with {'no policy' if policy is None else 'a policy'}"
        )
    instruments = _Instruments(policy)
    open_orders: dict[str, Order] = {}
    raw_orders = _list(fields["open_orders"], "open_orders")
    for i in range(len(raw_orders)):
        order = _order(raw_orders[i], _item("open_orders", i), instruments)
        if order.order_id in open_orders:
            raise SnapshotError(f"snapshot field {_item('open_orders', i)!r}: order {order.order_id!r} is listed twice")
        open_orders[order.order_id] = order
    positions: dict[str, Position] = {}
    raw_positions = _list(fields["positions"], "positions")
    for i in range(len(raw_positions)):
        position = _position(raw_positions[i], _item("positions", i), instruments)
        key = position.instrument.key
        if key in positions:
            raise SnapshotError(f"snapshot field {_item('positions', i)!r}: instrument {key!r} has two positions")
        positions[key] = position
    return State(
        _text(fields["account_id"], "account_id", False),
        _choice(fields["mode"], "mode", MODES),
        policy,
        policy_hash,
        _int(fields["last_ts_ns"], "last_ts_ns", 0),
        open_orders,
        _closed(fields["closed_orders"], "closed_orders"),
        positions,
        _marks(fields["marks"], "marks"),
        _ints(fields["order_times_ns"], "order_times_ns", 0),
        _ints(fields["message_times_ns"], "message_times_ns", 0),
        _brain(fields["brain"], "brain"),
        _fills(fields["fills"], "fills"),
    )


def _at(path: str, key: str) -> str:
    return key if path == "" else path + "." + key


def _item(path: str, index: int) -> str:
    return path + "[" + str(index) + "]"


def _kind(value: object) -> str:
    """What a JSON value is, for a message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a binary float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return "a " + type(value).__name__


def _shown(value: object) -> str:
    """A value for a message: short strings as they are, anything else by its kind."""
    if isinstance(value, str) and len(value) <= 64:
        return repr(value)
    return _kind(value)


def _problem(path: str, accepted: str, value: object) -> SnapshotError:
    return SnapshotError(f"snapshot field {path!r} must be {accepted}, got {_shown(value)}")


def _fields(value: object, path: str, names: tuple[str, ...]) -> dict[str, object]:
    """An object with exactly these fields."""
    if not isinstance(value, dict):
        raise _problem(path or "snapshot", "an object with fields " + ", ".join(names), value)
    for name in names:
        if name not in value:
            raise SnapshotError(f"snapshot field {_at(path, name)!r} is missing")
    if len(value) != len(names):
        for key in value:
            if not isinstance(key, str) or key not in names:
                where = path or "the snapshot"
                raise SnapshotError(
                    f"{where} has an unknown field {_shown(key)}; accepted: {', '.join(names)}"
                )
    fields: dict[str, object] = value
    return fields


def _list(value: object, path: str) -> list[object]:
    if not isinstance(value, list):
        raise _problem(path, "a list", value)
    items: list[object] = value
    return items


def _text(value: object, path: str, empty_ok: bool) -> str:
    if not isinstance(value, str):
        raise _problem(path, "a string", value)
    if not empty_ok and value == "":
        raise _problem(path, "a non-empty string", value)
    return value


def _texts(value: object, path: str) -> tuple[str, ...]:
    raw = _list(value, path)
    texts: list[str] = []
    for i in range(len(raw)):
        texts.append(_text(raw[i], _item(path, i), False))
    return tuple(texts)


def _flag(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise _problem(path, "true or false", value)
    return value


def _choice(value: object, path: str, accepted: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in accepted:
        raise _problem(path, "one of " + ", ".join(accepted), value)
    return value


def _int(value: object, path: str, minimum: int | None) -> int:
    """An integer (a JSON integer, or the digits of one beyond 64 bits), at least `minimum`."""
    number = 0
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and _wide_digits(value):
        number = int(value)
        if INT64_MIN <= number <= INT64_MAX:
            raise _problem(path, "a JSON integer (digits in a string only beyond 64 bits)", value)
    else:
        raise _problem(path, "an integer", value)
    if minimum is not None and number < minimum:
        raise SnapshotError(f"snapshot field {path!r} must be at least {minimum}, got {number}")
    return number


def _wide_digits(text: str) -> bool:
    """Whether the text is an integer's decimal digits, as `_int_data` writes them."""
    digits = text.removeprefix("-")
    return (
        0 < len(digits) <= MAX_WIDE_DIGITS
        and digits.isascii()
        and digits.isdigit()
        and not digits.startswith("0")
    )


def _ints(value: object, path: str, minimum: int | None) -> tuple[int, ...]:
    raw = _list(value, path)
    numbers: list[int] = []
    for i in range(len(raw)):
        numbers.append(_int(raw[i], _item(path, i), minimum))
    return tuple(numbers)


def _json_copy(value: object, path: str, depth: int) -> object:
    """A copy of plain JSON data (no binary floats, object keys strings), refusing anything else."""
    if depth > MAX_DOCUMENT_DEPTH:
        raise SnapshotError(f"snapshot field {path!r} nests deeper than {MAX_DOCUMENT_DEPTH} levels")
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, list):
        items: list[object] = []
        for i in range(len(value)):
            items.append(_json_copy(value[i], _item(path, i), depth + 1))
        return items
    if isinstance(value, dict):
        copied: dict[str, object] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _problem(path, "an object with string keys", key)
            copied[key] = _json_copy(item, _at(path, key), depth + 1)
        return copied
    raise _problem(path, "JSON data (string, integer, boolean, null, list or object)", value)


def _policy(value: object) -> Policy | None:
    if value is None:
        return None
    document = _json_copy(value, "policy", 0)
    if not isinstance(document, dict):
        raise _problem("policy", "a policy document (an object) or null", value)
    try:
        return policy_from_document(document)
    except (PolicyError, ValueError) as error:
        raise SnapshotError(f"snapshot field 'policy' is not a policy document this core reads: {error}") from error


class _Instruments:
    """Instruments read from a snapshot, each built once: the active policy's own when it is the
    same instrument, else one of its own (an order or position opened under an older policy)."""

    def __init__(self, policy: Policy | None) -> None:
        self.policy: Final = policy
        self.known: Final[dict[str, list[Instrument]]] = {}

    def read(self, value: object, path: str) -> Instrument:
        fields = _fields(value, path, INSTRUMENT_FIELDS)
        venue = _text(fields["venue"], _at(path, "venue"), False)
        symbol = _text(fields["symbol"], _at(path, "symbol"), False)
        price_decimals = _int(fields["price_decimals"], _at(path, "price_decimals"), 0)
        qty_decimals = _int(fields["qty_decimals"], _at(path, "qty_decimals"), 0)
        if price_decimals + qty_decimals > MONEY_DECIMALS:
            raise SnapshotError(
                f"snapshot field {path!r}: price_decimals and qty_decimals must add up to at most "
                f"{MONEY_DECIMALS}, got {price_decimals} + {qty_decimals}"
            )
        read = Instrument(
            venue,
            symbol,
            price_decimals,
            _int(fields["tick_units"], _at(path, "tick_units"), 1),
            qty_decimals,
            _int(fields["step_units"], _at(path, "step_units"), 1),
            _int(fields["max_order_qty_units"], _at(path, "max_order_qty_units"), 0),
            _int(fields["max_position_notional_money"], _at(path, "max_position_notional_money"), 0),
        )
        candidates = self.known.get(read.key)
        if candidates is None:
            candidates = []
            policy = self.policy
            listed = policy.instruments.get(read.key) if policy is not None else None
            if listed is not None:
                candidates.append(listed)
            self.known[read.key] = candidates
        for candidate in candidates:
            if _same_instrument(candidate, read):
                return candidate
        candidates.append(read)
        return read


def _same_instrument(a: Instrument, b: Instrument) -> bool:
    return (
        a.venue == b.venue
        and a.symbol == b.symbol
        and a.price_decimals == b.price_decimals
        and a.tick_units == b.tick_units
        and a.qty_decimals == b.qty_decimals
        and a.step_units == b.step_units
        and a.max_order_qty_units == b.max_order_qty_units
        and a.max_position_notional_money == b.max_position_notional_money
    )


def _order(value: object, path: str, instruments: _Instruments) -> Order:
    fields = _fields(value, path, ORDER_FIELDS)
    qty_units = _int(fields["qty_units"], _at(path, "qty_units"), 1)
    filled = _int(fields["filled_qty_units"], _at(path, "filled_qty_units"), 0)
    if filled > qty_units:
        raise SnapshotError(
            f"snapshot field {_at(path, 'filled_qty_units')!r} must be at most qty_units ({qty_units}), got {filled}"
        )
    return Order(
        _text(fields["order_id"], _at(path, "order_id"), False),
        _text(fields["client_order_id"], _at(path, "client_order_id"), False),
        instruments.read(fields["instrument"], _at(path, "instrument")),
        _choice(fields["side"], _at(path, "side"), SIDES),
        _choice(fields["order_type"], _at(path, "order_type"), ORDER_TYPES),
        _int(fields["price_units"], _at(path, "price_units"), 0),
        qty_units,
        _int(fields["reference_price_units"], _at(path, "reference_price_units"), 0),
        _flag(fields["reduce_only"], _at(path, "reduce_only")),
        _int(fields["phase_id"], _at(path, "phase_id"), 0),
        _text(fields["intent_id"], _at(path, "intent_id"), True),
        _choice(fields["status"], _at(path, "status"), OPEN_STATUSES),
        filled,
        _texts(fields["fill_ids"], _at(path, "fill_ids")),
        _flag(fields["cancel_requested"], _at(path, "cancel_requested")),
        _int(fields["accepted_ts_ns"], _at(path, "accepted_ts_ns"), 0),
    )


def _position(value: object, path: str, instruments: _Instruments) -> Position:
    fields = _fields(value, path, POSITION_FIELDS)
    return Position(
        instruments.read(fields["instrument"], _at(path, "instrument")),
        _int(fields["qty_units"], _at(path, "qty_units"), None),
        _int(fields["cost_money"], _at(path, "cost_money"), None),
        _int(fields["realized_pnl_money"], _at(path, "realized_pnl_money"), None),
        _int(fields["fees_money"], _at(path, "fees_money"), None),
    )


def _marks(value: object, path: str) -> dict[str, int]:
    raw = _list(value, path)
    marks: dict[str, int] = {}
    for i in range(len(raw)):
        where = _item(path, i)
        fields = _fields(raw[i], where, MARK_FIELDS)
        key = _text(fields["instrument"], _at(where, "instrument"), False)
        if key in marks:
            raise SnapshotError(f"snapshot field {where!r}: instrument {key!r} has two marks")
        marks[key] = _int(fields["price_units"], _at(where, "price_units"), 0)
    return marks


def _closed(value: object, path: str) -> ClosedOrders:
    """The closed-order memory, rebuilt by closing the listed orders again, oldest first."""
    raw = _list(value, path)
    if len(raw) > CLOSED_ORDER_MEMORY:
        raise SnapshotError(
            f"snapshot field {path!r} must list at most {CLOSED_ORDER_MEMORY} closed orders "
            f"(what a state remembers), got {len(raw)}"
        )
    closed = no_closed_orders()
    for i in range(len(raw)):
        where = _item(path, i)
        fields = _fields(raw[i], where, CLOSED_FIELDS)
        order_id = _text(fields["order_id"], _at(where, "order_id"), False)
        status = _choice(fields["status"], _at(where, "status"), CLOSED_STATUSES)
        fill_ids = _texts(fields["fill_ids"], _at(where, "fill_ids"))
        earlier = closed.get(order_id)
        if earlier is not None and (earlier.status != status or earlier.fill_ids != fill_ids):
            raise SnapshotError(
                f"snapshot field {where!r}: order {order_id!r} is listed again with another status or "
                "fill ids (an order closed twice is remembered as its last close, at both places)"
            )
        closed = closed.with_closed(ClosedOrder(order_id, status, fill_ids))
    return closed


def _fills(value: object, path: str) -> Fills:
    """The fill-id memory: the listed `[venue, fill_id, order_id]` triples, in the order they were
    counted, into a fresh log (built directly: an account's memory holds every fill it ever had)."""
    raw = _list(value, path)
    log = FillLog()
    entries = log.entries
    for i in range(len(raw)):
        item = raw[i]
        # The common case checked without building the field's path (it is built on a failure).
        if not (
            isinstance(item, list)
            and len(item) == 3
            and isinstance(item[0], str)
            and isinstance(item[1], str)
            and isinstance(item[2], str)
            and item[0] != ""
            and item[1] != ""
            and item[2] != ""
        ):
            _bad_fill(item, _item(path, i))
        triple = cast(list[str], item)
        venue = triple[0]
        fill_id = triple[1]
        key = fill_key(venue, fill_id)
        if key in entries:
            raise SnapshotError(
                f"snapshot field {_item(path, i)!r}: fill {fill_id!r} of venue {venue!r} is counted twice"
            )
        entries[key] = (i, triple[2])
    log.size = len(raw)
    return Fills(log, len(raw))


def _bad_fill(item: object, where: str) -> None:
    """Raise the SnapshotError that names what is wrong with one fill-id entry."""
    if not isinstance(item, list) or len(item) != 3:
        raise _problem(where, "a [venue, fill_id, order_id] list of three strings", item)
    for k in range(3):
        _text(item[k], where + "[" + str(k) + "]", False)
    raise _problem(where, "a [venue, fill_id, order_id] list of three strings", item)


def _window(fields: dict[str, object], path: str, samples_name: str, times_name: str, sum_name: str, minimum: int | None) -> tuple[tuple[int, ...], tuple[int, ...], WindowSum]:
    """A venue window: its samples, their times and their sum, which must agree."""
    samples = _ints(fields[samples_name], _at(path, samples_name), minimum)
    times = _ints(fields[times_name], _at(path, times_name), 0)
    if len(samples) != len(times):
        raise SnapshotError(
            f"snapshot field {_at(path, times_name)!r} must have one time per sample of {samples_name} "
            f"({len(samples)}), got {len(times)}"
        )
    where = _at(path, sum_name)
    summed = _fields(fields[sum_name], where, SUM_FIELDS)
    total = _int(summed["total"], _at(where, "total"), None)
    ordered = _flag(summed["ordered"], _at(where, "ordered"))
    counted = 0
    for sample in samples:
        counted += sample
    if total != counted:
        raise SnapshotError(f"snapshot field {_at(where, 'total')!r} must be the sum of {samples_name} ({counted}), got {total}")
    if ordered:
        for i in range(1, len(times)):
            if times[i] < times[i - 1]:
                raise SnapshotError(
                    f"snapshot field {_at(where, 'ordered')!r} may be true only when {times_name} never decreases"
                )
    return samples, times, WindowSum(total, ordered)


def _brain(value: object, path: str) -> Brain:
    fields = _fields(value, path, BRAIN_FIELDS)
    clear_since = _int(fields["clear_since_ns"], _at(path, "clear_since_ns"), NO_CLEAR)
    truth: dict[str, TruthReading] = {}
    raw_truth = _list(fields["truth"], _at(path, "truth"))
    for i in range(len(raw_truth)):
        where = _item(_at(path, "truth"), i)
        reading = _fields(raw_truth[i], where, TRUTH_FIELDS)
        venue = _text(reading["venue"], _at(where, "venue"), False)
        if venue in truth:
            raise SnapshotError(f"snapshot field {where!r}: venue {venue!r} has two truth readings")
        score = _int(reading["score"], _at(where, "score"), 0)
        if score > 100:
            raise SnapshotError(f"snapshot field {_at(where, 'score')!r} must be 0..100, got {score}")
        truth[venue] = TruthReading(
            score, _int(reading["ts_ns"], _at(where, "ts_ns"), 0), _int(reading["venue_ts_ns"], _at(where, "venue_ts_ns"), 0)
        )
    tail: dict[str, int] = {}
    raw_tail = _list(fields["tail_exponents"], _at(path, "tail_exponents"))
    for i in range(len(raw_tail)):
        where = _item(_at(path, "tail_exponents"), i)
        entry = _fields(raw_tail[i], where, TAIL_FIELDS)
        symbol = _text(entry["symbol"], _at(where, "symbol"), False)
        if symbol in tail:
            raise SnapshotError(f"snapshot field {where!r}: symbol {symbol!r} has two tail exponents")
        tail[symbol] = _int(entry["exponent"], _at(where, "exponent"), 0)
    venues: dict[str, VenueQuality] = {}
    raw_venues = _list(fields["venues"], _at(path, "venues"))
    for i in range(len(raw_venues)):
        where = _item(_at(path, "venues"), i)
        entry = _fields(raw_venues[i], where, VENUE_FIELDS)
        venue = _text(entry["venue"], _at(where, "venue"), False)
        if venue in venues:
            raise SnapshotError(f"snapshot field {where!r}: venue {venue!r} is listed twice")
        status = _choice(entry["status"], _at(where, "status"), VENUE_STATUSES)
        latencies, ack_times, ack_sum = _window(entry, where, "ack_latency_ms", "ack_ts_ns", "ack_sum", 0)
        slippages, slippage_times, slippage_sum = _window(
            entry, where, "slippage_bps", "slippage_ts_ns", "slippage_sum", None
        )
        venues[venue] = VenueQuality(status, latencies, ack_times, slippages, slippage_times, ack_sum, slippage_sum)
    return Brain(
        _choice(fields["breaker"], _at(path, "breaker"), BREAKER_LEVELS),
        _int(fields["breaker_since_ns"], _at(path, "breaker_since_ns"), 0),
        clear_since,
        truth,
        _choice(fields["regime"], _at(path, "regime"), REGIMES),
        tail,
        venues,
        _flag(fields["equity_known"], _at(path, "equity_known")),
        _int(fields["equity_base_money"], _at(path, "equity_base_money"), None),
        _int(fields["pnl_since_base_money"], _at(path, "pnl_since_base_money"), None),
        _int(fields["peak_equity_money"], _at(path, "peak_equity_money"), None),
        _int(fields["day"], _at(path, "day"), 0),
        _int(fields["day_pnl_money"], _at(path, "day_pnl_money"), None),
    )
