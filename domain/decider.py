"""The execution aggregate as a decider: initial_state, decide, evolve. Pure and deterministic.

decide(command, state) never raises for a business reason: a refusal is an event with its
reason code and the values that decided it. Time comes from the command (ts_ns), never a clock.
"""

from __future__ import annotations

from typing import Final

from . import reasons
from .checks import count_since, limit_checks, mode_check, new_order, read_numbers
from .commands import (
    ActivatePolicy,
    Arm,
    CancelOrder,
    Command,
    Disarm,
    PlaceOrder,
    RecordCancelled,
    RecordFill,
    RecordOrderAck,
    RecordVenueReject,
)
from .events import (
    FAIL,
    PASS,
    Check,
    CommandRejected,
    Event,
    ModeChanged,
    OrderAccepted,
    OrderAcknowledged,
    OrderCancelled,
    OrderCancelRequested,
    OrderFilled,
    OrderRejected,
    OrderVenueRejected,
    PolicyActivated,
    is_terminal,
)
from .model import (
    ACCEPTED,
    ARMED,
    BUY,
    CANCELLED,
    CLOSED_ORDER_MEMORY,
    DISARMED,
    FILLED,
    PARTIALLY_FILLED,
    VENUE_REJECTED,
    ClosedOrder,
    Order,
    Position,
    State,
)
from .model import initial_state as _initial_state
from .numbers import (
    MONEY_DECIMALS,
    NS_PER_MS,
    NS_PER_SECOND,
    div_trunc,
    format_units,
    is_decimal,
    parse_units,
)
from .policy import Instrument

ORDER_ID_PREFIX: Final = "ord-"


def initial_state(account_id: str) -> State:
    """A new account: DISARMED, no policy, nothing open."""
    return _initial_state(account_id)


def order_id_for(command_id: str) -> str:
    """The order id a PlaceOrder creates: derived from its command id."""
    return ORDER_ID_PREFIX + command_id


# --- decide -----------------------------------------------------------------------------------


def decide(command: Command, state: State) -> list[Event]:
    """Decide one command against the state; return the events it causes (refusals included)."""
    if command.ts_ns < state.last_ts_ns:
        return [_stale(command, state)]
    if isinstance(command, PlaceOrder):
        return [_place_order(command, state)]
    if isinstance(command, RecordFill):
        return [_record_fill(command, state)]
    if isinstance(command, RecordOrderAck):
        return [_record_ack(command, state)]
    if isinstance(command, CancelOrder):
        return [_cancel_order(command, state)]
    if isinstance(command, RecordCancelled):
        return [_record_cancelled(command, state)]
    if isinstance(command, RecordVenueReject):
        return [_record_venue_reject(command, state)]
    if isinstance(command, ActivatePolicy):
        return [_activate_policy(command, state)]
    if isinstance(command, Arm):
        return [_set_mode(command.ts_ns, state, True, command.reason, "Arm")]
    if isinstance(command, Disarm):
        return [_set_mode(command.ts_ns, state, False, command.reason, "Disarm")]
    raise TypeError("the execution decider has no rule for " + type(command).__name__)


def command_type_name(command: Command) -> str:
    """The command's class name, as recorded in refusals."""
    return type(command).__name__


def _stale(command: Command, state: State) -> Event:
    # The refusal keeps stream time monotonic: it is stamped with the last decided time.
    check = Check("command_time_ns", str(command.ts_ns), ">= " + str(state.last_ts_ns), FAIL)
    if isinstance(command, PlaceOrder):
        return _order_rejected(command, state.last_ts_ns, reasons.STALE_COMMAND, [check])
    detail = {"ts_ns": str(command.ts_ns), "last_ts_ns": str(state.last_ts_ns)}
    return CommandRejected(state.last_ts_ns, command_type_name(command), reasons.STALE_COMMAND, detail)


def _order_rejected(cmd: PlaceOrder, ts_ns: int, reason: str, checks: list[Check]) -> OrderRejected:
    return OrderRejected(
        ts_ns,
        order_id_for(cmd.command_id),
        cmd.client_order_id,
        cmd.venue,
        cmd.symbol,
        cmd.side,
        cmd.order_type,
        cmd.quantity,
        cmd.price,
        cmd.reference_price,
        cmd.reduce_only,
        reason,
        checks,
    )


def _place_order(cmd: PlaceOrder, state: State) -> Event:
    checks: list[Check] = []
    policy = state.policy
    if policy is None:
        checks.append(Check("policy_active", "none", "an active policy", FAIL))
        return _order_rejected(cmd, cmd.ts_ns, reasons.NO_ACTIVE_POLICY, checks)
    hash_check = Check("policy_hash", cmd.policy_hash, state.policy_hash, PASS if cmd.policy_hash == state.policy_hash else FAIL)
    checks.append(hash_check)
    if hash_check.verdict == FAIL:
        return _order_rejected(cmd, cmd.ts_ns, reasons.POLICY_HASH_MISMATCH, checks)
    key = cmd.venue + ":" + cmd.symbol
    instrument = policy.instruments.get(key)
    checks.append(Check("instrument", key, "listed in policy " + policy.policy_id, PASS if instrument is not None else FAIL))
    if instrument is None:
        return _order_rejected(cmd, cmd.ts_ns, reasons.SYMBOL_NOT_ALLOWED, checks)
    mode = mode_check(state, instrument)
    checks.append(mode)
    if mode.verdict == FAIL:
        return _order_rejected(cmd, cmd.ts_ns, reasons.ACCOUNT_DISARMED, checks)
    priced = read_numbers(cmd, instrument, checks)
    failed = priced.failed
    if failed is not None:
        if not checks or checks[-1] is not failed:
            checks.append(failed)
        return _order_rejected(cmd, cmd.ts_ns, priced.reason, checks)
    limits, codes = limit_checks(cmd, state, policy, instrument, priced)
    reason = ""
    for i in range(len(limits)):
        checks.append(limits[i])
        if reason == "" and limits[i].verdict == FAIL:
            reason = codes[i]
    if reason != "":
        return _order_rejected(cmd, cmd.ts_ns, reason, checks)
    order = new_order(cmd, order_id_for(cmd.command_id), instrument, priced, ACCEPTED)
    notional = instrument.notional_money(priced.price_units, priced.qty_units)
    return OrderAccepted(cmd.ts_ns, order, notional, checks)


def _missing_order(command: Command, order_id: str, state: State, fill_id: str) -> Event:
    closed = state.closed_orders.get(order_id)
    name = command_type_name(command)
    if closed is None:
        return CommandRejected(command.ts_ns, name, reasons.UNKNOWN_ORDER, {"order_id": order_id})
    if fill_id != "" and fill_id in closed.fill_ids:
        detail = {"order_id": order_id, "fill_id": fill_id, "status": closed.status}
        return CommandRejected(command.ts_ns, name, reasons.DUPLICATE_FILL, detail)
    return CommandRejected(command.ts_ns, name, reasons.ORDER_CLOSED, {"order_id": order_id, "status": closed.status})


def _invalid_fill(cmd: RecordFill, field: str, value: str, accepted: str) -> Event:
    detail = {"order_id": cmd.order_id, "fill_id": cmd.fill_id, "field": field, "value": value, "accepted": accepted}
    return CommandRejected(cmd.ts_ns, "RecordFill", reasons.INVALID_FILL, detail)


def apply_fill(position: Position | None, instrument: Instrument, signed_qty: int, price_units: int, fee_money: int) -> tuple[Position, int]:
    """The position after a fill, and the PnL the fill realized (money units, fees excluded)."""
    qty = position.qty_units if position is not None else 0
    cost = position.cost_money if position is not None else 0
    realized_total = position.realized_pnl_money if position is not None else 0
    fees = (position.fees_money if position is not None else 0) + fee_money
    trade_money = instrument.notional_money(price_units, abs(signed_qty))
    realized = 0
    if qty == 0 or (qty > 0) == (signed_qty > 0):
        qty += signed_qty
        cost += trade_money if signed_qty > 0 else -trade_money
    else:
        closing = min(abs(signed_qty), abs(qty))
        removed_cost = div_trunc(cost * closing, abs(qty))
        closing_money = instrument.notional_money(price_units, closing)
        realized = closing_money - removed_cost if qty > 0 else -removed_cost - closing_money
        cost -= removed_cost
        qty += signed_qty
        if qty != 0 and (qty > 0) == (signed_qty > 0):
            # the fill flipped the position: the rest opens at the fill price
            opened = instrument.notional_money(price_units, abs(qty))
            cost = opened if qty > 0 else -opened
        elif qty == 0:
            cost = 0
    return Position(instrument, qty, cost, realized_total + realized, fees), realized


def _record_fill(cmd: RecordFill, state: State) -> Event:
    order = state.open_orders.get(cmd.order_id)
    if order is None:
        return _missing_order(cmd, cmd.order_id, state, cmd.fill_id)
    if cmd.fill_id in order.fill_ids:
        detail = {"order_id": cmd.order_id, "fill_id": cmd.fill_id, "status": order.status}
        return CommandRejected(cmd.ts_ns, "RecordFill", reasons.DUPLICATE_FILL, detail)
    instrument = order.instrument
    qty = parse_units(cmd.quantity, instrument.qty_decimals)
    if not is_decimal(cmd.quantity) or not qty.ok or qty.units <= 0 or qty.units % instrument.step_units != 0:
        step = format_units(instrument.step_units, instrument.qty_decimals)
        return _invalid_fill(cmd, "quantity", cmd.quantity, "a positive multiple of " + step)
    price = parse_units(cmd.price, instrument.price_decimals)
    if not is_decimal(cmd.price) or not price.ok or price.units <= 0 or price.units % instrument.tick_units != 0:
        tick = format_units(instrument.tick_units, instrument.price_decimals)
        return _invalid_fill(cmd, "price", cmd.price, "a positive multiple of " + tick)
    fee = parse_units(cmd.fee, MONEY_DECIMALS)
    if not is_decimal(cmd.fee) or not fee.ok:
        return _invalid_fill(cmd, "fee", cmd.fee, "a decimal with at most 8 decimals")
    remaining = order.remaining_units()
    if qty.units > remaining:
        detail = {
            "order_id": cmd.order_id,
            "fill_id": cmd.fill_id,
            "quantity": cmd.quantity,
            "remaining_quantity": format_units(remaining, instrument.qty_decimals),
        }
        return CommandRejected(cmd.ts_ns, "RecordFill", reasons.OVERFILL, detail)
    filled = order.filled_qty_units + qty.units
    status = FILLED if filled == order.qty_units else PARTIALLY_FILLED
    progressed = order.with_progress(status, filled, order.fill_ids + (cmd.fill_id,), order.cancel_requested)
    signed = qty.units if order.side == BUY else -qty.units
    position, realized = apply_fill(state.positions.get(instrument.key), instrument, signed, price.units, fee.units)
    return OrderFilled(cmd.ts_ns, progressed, cmd.fill_id, qty.units, price.units, fee.units, cmd.liquidity, realized, position)


def _invalid_transition(command: Command, order: Order) -> Event:
    detail = {"order_id": order.order_id, "status": order.status}
    return CommandRejected(command.ts_ns, command_type_name(command), reasons.INVALID_TRANSITION, detail)


def _record_ack(cmd: RecordOrderAck, state: State) -> Event:
    order = state.open_orders.get(cmd.order_id)
    if order is None:
        return _missing_order(cmd, cmd.order_id, state, "")
    if order.status != ACCEPTED:
        return _invalid_transition(cmd, order)
    latency_ms = (cmd.ts_ns - order.accepted_ts_ns) // NS_PER_MS
    return OrderAcknowledged(cmd.ts_ns, cmd.order_id, cmd.venue_order_id, latency_ms)


def _record_venue_reject(cmd: RecordVenueReject, state: State) -> Event:
    order = state.open_orders.get(cmd.order_id)
    if order is None:
        return _missing_order(cmd, cmd.order_id, state, "")
    if order.status != ACCEPTED:
        return _invalid_transition(cmd, order)
    return OrderVenueRejected(cmd.ts_ns, cmd.order_id, cmd.venue_reason)


def _record_cancelled(cmd: RecordCancelled, state: State) -> Event:
    order = state.open_orders.get(cmd.order_id)
    if order is None:
        return _missing_order(cmd, cmd.order_id, state, "")
    cancelled = order.with_progress(CANCELLED, order.filled_qty_units, order.fill_ids, order.cancel_requested)
    return OrderCancelled(cmd.ts_ns, cancelled, cmd.venue_reason)


def _cancel_order(cmd: CancelOrder, state: State) -> Event:
    order = state.open_orders.get(cmd.order_id)
    if order is None:
        return _missing_order(cmd, cmd.order_id, state, "")
    if order.cancel_requested:
        detail = {"order_id": cmd.order_id, "status": order.status}
        return CommandRejected(cmd.ts_ns, "CancelOrder", reasons.CANCEL_ALREADY_REQUESTED, detail)
    # Cancels are never refused for rate: they reduce risk. They still count as messages.
    return OrderCancelRequested(cmd.ts_ns, cmd.order_id, cmd.reason)


def _holds(state: State, key: str) -> bool:
    position = state.positions.get(key)
    if position is not None and position.qty_units != 0:
        return True
    for order in state.open_orders.values():
        if order.instrument.key == key:
            return True
    return False


def _activate_policy(cmd: ActivatePolicy, state: State) -> Event:
    if cmd.policy_hash == state.policy_hash:
        return CommandRejected(cmd.ts_ns, "ActivatePolicy", reasons.POLICY_ALREADY_ACTIVE, {"policy_hash": cmd.policy_hash})
    current = state.policy
    if current is not None:
        # Positions and open orders are integers at their instrument's scale: a policy may not
        # change that scale under them (it would silently rescale what the account holds).
        for key, instrument in cmd.policy.instruments.items():
            old = current.instruments.get(key)
            if old is None or not _holds(state, key):
                continue
            if old.price_decimals != instrument.price_decimals or old.qty_decimals != instrument.qty_decimals:
                detail = {
                    "instrument": key,
                    "price_decimals": str(old.price_decimals) + " -> " + str(instrument.price_decimals),
                    "qty_decimals": str(old.qty_decimals) + " -> " + str(instrument.qty_decimals),
                }
                return CommandRejected(cmd.ts_ns, "ActivatePolicy", reasons.POLICY_SCALE_CHANGE, detail)
    return PolicyActivated(cmd.ts_ns, cmd.policy_hash, state.policy_hash, cmd.document, cmd.policy)


def _set_mode(ts_ns: int, state: State, arm: bool, reason: str, name: str) -> Event:
    target = ARMED if arm else DISARMED
    if state.mode == target:
        return CommandRejected(ts_ns, name, reasons.MODE_UNCHANGED, {"mode": state.mode})
    if arm and state.policy is None:
        return CommandRejected(ts_ns, name, reasons.NO_ACTIVE_POLICY, {"mode": state.mode})
    return ModeChanged(ts_ns, arm, state.mode, reason)


# --- evolve -----------------------------------------------------------------------------------


def _window(times_ns: tuple[int, ...], ts_ns: int) -> tuple[int, ...]:
    """The rolling second ending at ts_ns, with ts_ns added."""
    start = ts_ns - NS_PER_SECOND
    kept: list[int] = []
    for t in times_ns:
        if t > start:
            kept.append(t)
    kept.append(ts_ns)
    return tuple(kept)


def _copy(
    state: State,
    ts_ns: int,
    open_orders: dict[str, Order],
    closed_orders: dict[str, ClosedOrder],
    closed_order_ids: tuple[str, ...],
    positions: dict[str, Position],
    marks: dict[str, int],
    order_times_ns: tuple[int, ...],
    message_times_ns: tuple[int, ...],
) -> State:
    return State(
        state.account_id,
        state.mode,
        state.policy,
        state.policy_hash,
        max(state.last_ts_ns, ts_ns),
        open_orders,
        closed_orders,
        closed_order_ids,
        positions,
        marks,
        order_times_ns,
        message_times_ns,
    )


def _advance(state: State, ts_ns: int) -> State:
    return _copy(
        state,
        ts_ns,
        state.open_orders,
        state.closed_orders,
        state.closed_order_ids,
        state.positions,
        state.marks,
        state.order_times_ns,
        state.message_times_ns,
    )


def _replace_order(state: State, ts_ns: int, order: Order) -> State:
    orders = dict(state.open_orders)
    orders[order.order_id] = order
    return _copy(
        state,
        ts_ns,
        orders,
        state.closed_orders,
        state.closed_order_ids,
        state.positions,
        state.marks,
        state.order_times_ns,
        state.message_times_ns,
    )


def _close_order(state: State, ts_ns: int, order: Order, positions: dict[str, Position], marks: dict[str, int]) -> State:
    orders = dict(state.open_orders)
    del orders[order.order_id]
    closed = dict(state.closed_orders)
    closed_ids = state.closed_order_ids + (order.order_id,)
    if len(closed_ids) > CLOSED_ORDER_MEMORY:
        del closed[closed_ids[0]]
        closed_ids = closed_ids[1:]
    closed[order.order_id] = ClosedOrder(order.order_id, order.status, order.fill_ids)
    return _copy(
        state, ts_ns, orders, closed, closed_ids, positions, marks, state.order_times_ns, state.message_times_ns
    )


def evolve(state: State, event: Event) -> State:
    """Apply one recorded event to the state; returns a new state."""
    ts = event.ts_ns
    if isinstance(event, OrderAccepted):
        order = event.order
        orders = dict(state.open_orders)
        orders[order.order_id] = order
        marks = dict(state.marks)
        marks[order.instrument.key] = order.reference_price_units
        return _copy(
            state,
            ts,
            orders,
            state.closed_orders,
            state.closed_order_ids,
            state.positions,
            marks,
            _window(state.order_times_ns, ts),
            _window(state.message_times_ns, ts),
        )
    if isinstance(event, OrderFilled):
        order = event.order
        key = order.instrument.key
        positions = dict(state.positions)
        positions[key] = event.position
        marks = dict(state.marks)
        marks[key] = event.price_units
        if is_terminal(order.status):
            return _close_order(state, ts, order, positions, marks)
        orders = dict(state.open_orders)
        orders[order.order_id] = order
        return _copy(
            state,
            ts,
            orders,
            state.closed_orders,
            state.closed_order_ids,
            positions,
            marks,
            state.order_times_ns,
            state.message_times_ns,
        )
    if isinstance(event, OrderAcknowledged):
        order = state.open_orders[event.order_id]
        acked = order.with_progress("ACKNOWLEDGED", order.filled_qty_units, order.fill_ids, order.cancel_requested)
        return _replace_order(state, ts, acked)
    if isinstance(event, OrderCancelRequested):
        order = state.open_orders[event.order_id]
        flagged = order.with_progress(order.status, order.filled_qty_units, order.fill_ids, True)
        after = _replace_order(state, ts, flagged)
        return _copy(
            after,
            ts,
            after.open_orders,
            after.closed_orders,
            after.closed_order_ids,
            after.positions,
            after.marks,
            after.order_times_ns,
            _window(after.message_times_ns, ts),
        )
    if isinstance(event, OrderCancelled):
        return _close_order(state, ts, event.order, state.positions, state.marks)
    if isinstance(event, OrderVenueRejected):
        order = state.open_orders[event.order_id]
        rejected = order.with_progress(VENUE_REJECTED, order.filled_qty_units, order.fill_ids, order.cancel_requested)
        return _close_order(state, ts, rejected, state.positions, state.marks)
    if isinstance(event, PolicyActivated):
        return State(
            state.account_id,
            state.mode,
            event.policy,
            event.policy_hash,
            max(state.last_ts_ns, ts),
            state.open_orders,
            state.closed_orders,
            state.closed_order_ids,
            state.positions,
            state.marks,
            state.order_times_ns,
            state.message_times_ns,
        )
    if isinstance(event, ModeChanged):
        return State(
            state.account_id,
            ARMED if event.armed else DISARMED,
            state.policy,
            state.policy_hash,
            max(state.last_ts_ns, ts),
            state.open_orders,
            state.closed_orders,
            state.closed_order_ids,
            state.positions,
            state.marks,
            state.order_times_ns,
            state.message_times_ns,
        )
    # Refusals change nothing but the stream's time.
    return _advance(state, ts)


def rate_counts(state: State, ts_ns: int) -> tuple[int, int]:
    """Orders and messages in the rolling second ending at ts_ns (for views)."""
    return count_since(state.order_times_ns, ts_ns), count_since(state.message_times_ns, ts_ns)


def refusal_reason(events: list[Event]) -> str:
    """The reason code when a decision refused its command, else the empty string."""
    for event in events:
        if isinstance(event, OrderRejected):
            return event.reason
        if isinstance(event, CommandRejected):
            return event.reason
    return ""
