"""The execution aggregate as a decider: initial_state, decide, evolve. Pure and deterministic.

decide(command, state) never raises for a business reason: a refusal is an event with its
reason code and the values that decided it. Time comes from the command (ts_ns), never a clock.
"""

from __future__ import annotations

from typing import Final

from . import reasons
from .brain import (
    advance_brain,
    breaker_step,
    day_roll,
    next_brain,
    track_clear,
    trigger_summary,
    triggers,
    truth_snapshot,
    venue_changes,
)
from .checks import limit_checks, mode_check, new_order, read_numbers
from .commands import (
    ActivatePolicy,
    Arm,
    CancelOrder,
    Command,
    Disarm,
    Flatten,
    Halt,
    PlaceOrder,
    PurgeDlq,
    RecordCancelled,
    RecordFill,
    RecordOrderAck,
    RecordTailRisk,
    RecordTruthSnapshot,
    RecordVenueReject,
    Resume,
    SetRegime,
)
from .events import (
    FAIL,
    PASS,
    BreakerTransitioned,
    Check,
    CommandRejected,
    DlqPurged,
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
    RegimeChanged,
    TailRiskRecorded,
    is_terminal,
)
from .fills import Fills
from .lateness import decided_at
from .model import (
    ACCEPTED,
    ARMED,
    BUY,
    CANCELLED,
    DISARMED,
    FILLED,
    LIMIT,
    PARTIALLY_FILLED,
    SELL,
    VENUE_REJECTED,
    Brain,
    ClosedOrder,
    ClosedOrders,
    Order,
    Position,
    State,
)
from .model import initial_state as _initial_state
from .numbers import (
    BPS,
    MONEY_DECIMALS,
    NS_PER_MS,
    NS_PER_SECOND,
    div_trunc,
    format_units,
    parse_units,
)
from .policy import RULES_V1, RULES_V2, Instrument, Policy
from .risk_policy import DEFENSIVE, HALTED, NORMAL, RATIO_DECIMALS

ORDER_ID_PREFIX: Final = "ord-"


def initial_state(account_id: str) -> State:
    """A new account: DISARMED, no policy, nothing open."""
    return _initial_state(account_id)


def order_id_for(command_id: str) -> str:
    """The order id a PlaceOrder creates: derived from its command id."""
    return ORDER_ID_PREFIX + command_id


# --- decide -----------------------------------------------------------------------------------


def decide(command: Command, state: State) -> list[Event]:
    """Decide one command against the state; return the events it causes (refusals included).

    Around the command's own events the Brain may add: the budget day's roll before them, and
    venue-status changes and a breaker transition after them (judged on the state they leave).
    """
    policy = state.policy
    on_time = decided_at(command, state.last_ts_ns, policy.rules_version if policy is not None else RULES_V1)
    if on_time is None:
        return [_stale(command, state)]
    command = on_time
    if policy is None or (not policy.risk.any() and state.brain.breaker == NORMAL):
        return _decide_command(command, state)
    # Only the Brain's part of the state is carried forward here: it is all the day roll, the
    # venue windows and the breaker read, and the command itself is decided on the full state.
    events: list[Event] = []
    current = state
    brain = state.brain
    roll = day_roll(brain, policy, command.ts_ns)
    if roll is not None:
        events.append(roll)
        current = evolve(current, roll)
        brain = current.brain
    for event in _decide_command(command, current):
        events.append(event)
        brain = _brain_after(brain, current, event, policy)
    for change in venue_changes(brain, policy, command.ts_ns):
        events.append(change)
        brain = _brain_after(brain, current, change, policy)
    transition = breaker_step(brain, policy, command.ts_ns)
    if transition is not None:
        events.append(transition)
    return events


def _brain_after(brain: Brain, state: State, event: Event, policy: Policy) -> Brain:
    """The Brain after an event, exactly as `evolve` would leave it."""
    after = advance_brain(brain, state, event)
    if after.breaker == DEFENSIVE:
        after = track_clear(after, policy.risk, event.ts_ns)
    return after


def _decide_command(command: Command, state: State) -> list[Event]:
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
    if isinstance(command, RecordTruthSnapshot):
        return [_record_truth(command, state)]
    if isinstance(command, SetRegime):
        return [_set_regime(command, state)]
    if isinstance(command, RecordTailRisk):
        return [_record_tail_risk(command, state)]
    if isinstance(command, Halt):
        return [_halt(command, state)]
    if isinstance(command, Resume):
        return [_resume(command, state)]
    if isinstance(command, Flatten):
        return _flatten(command, state)
    if isinstance(command, PurgeDlq):
        # An operator's bookkeeping: always accepted, whatever the account's state.
        return [DlqPurged(command.ts_ns, command.entry_ids, command.reason, command.actor)]
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
    closed = state.closed.get(order_id)
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
    policy = state.policy
    if policy is not None and policy.rules_version >= RULES_V2:
        counted_on = state.fills.counted_on(instrument.venue, cmd.fill_id)
        if counted_on != "":
            detail = {"order_id": cmd.order_id, "fill_id": cmd.fill_id, "venue": instrument.venue, "counted_on": counted_on}
            return CommandRejected(cmd.ts_ns, "RecordFill", reasons.DUPLICATE_FILL, detail)
    # The numbers were read once, at the edge (a non-decimal reads as not exact at any scale).
    qty_ok, qty_units = cmd.quantity_number.at(instrument.qty_decimals)
    if not qty_ok or qty_units <= 0 or qty_units % instrument.step_units != 0:
        step = format_units(instrument.step_units, instrument.qty_decimals)
        return _invalid_fill(cmd, "quantity", cmd.quantity, "a positive multiple of " + step)
    price_ok, price_units = cmd.price_number.at(instrument.price_decimals)
    if not price_ok or price_units <= 0 or price_units % instrument.tick_units != 0:
        tick = format_units(instrument.tick_units, instrument.price_decimals)
        return _invalid_fill(cmd, "price", cmd.price, "a positive multiple of " + tick)
    fee_ok, fee_units = cmd.fee_number.at(MONEY_DECIMALS)
    if not fee_ok:
        return _invalid_fill(cmd, "fee", cmd.fee, "a decimal with at most 8 decimals")
    remaining = order.remaining_units()
    if qty_units > remaining:
        detail = {
            "order_id": cmd.order_id,
            "fill_id": cmd.fill_id,
            "quantity": cmd.quantity,
            "remaining_quantity": format_units(remaining, instrument.qty_decimals),
        }
        return CommandRejected(cmd.ts_ns, "RecordFill", reasons.OVERFILL, detail)
    filled = order.filled_qty_units + qty_units
    status = FILLED if filled == order.qty_units else PARTIALLY_FILLED
    progressed = order.with_progress(status, filled, order.fill_ids + (cmd.fill_id,), order.cancel_requested)
    signed = qty_units if order.side == BUY else -qty_units
    position, realized = apply_fill(state.positions.get(instrument.key), instrument, signed, price_units, fee_units)
    return OrderFilled(cmd.ts_ns, progressed, cmd.fill_id, qty_units, price_units, fee_units, cmd.liquidity, realized, position)


def _invalid_transition(command: Command, order: Order) -> Event:
    detail = {"order_id": order.order_id, "status": order.status}
    return CommandRejected(command.ts_ns, command_type_name(command), reasons.INVALID_TRANSITION, detail)


def _record_ack(cmd: RecordOrderAck, state: State) -> Event:
    order = state.open_orders.get(cmd.order_id)
    if order is None:
        return _missing_order(cmd, cmd.order_id, state, "")
    if order.status != ACCEPTED:
        return _invalid_transition(cmd, order)
    # The venue's latency is measured to when the ack was stamped: for a late ack decided at the
    # account's time (rules 2) that is its own time, not the time it was decided.
    latency_ms = max(cmd.reported_ts_ns - order.accepted_ts_ns, 0) // NS_PER_MS
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


def _section_missing(command: Command, section: str) -> Event:
    detail = {"section": section}
    return CommandRejected(command.ts_ns, command_type_name(command), reasons.POLICY_SECTION_MISSING, detail)


def _record_truth(cmd: RecordTruthSnapshot, state: State) -> Event:
    policy = state.policy
    if policy is None:
        return CommandRejected(cmd.ts_ns, "RecordTruthSnapshot", reasons.NO_ACTIVE_POLICY, {})
    truth = policy.risk.truth
    if truth is None:
        return _section_missing(cmd, "truth")
    latest = state.brain.truth.get(cmd.venue)
    if policy.rules_version >= RULES_V2 and latest is not None and cmd.venue_ts_ns < latest.venue_ts_ns:
        # A venue's older view, arriving after a newer one was applied: kept in the ledger (the
        # command record), never scored against positions it did not see, never a new equity base.
        detail = {"venue": cmd.venue, "venue_ts_ns": str(cmd.venue_ts_ns), "latest_venue_ts_ns": str(latest.venue_ts_ns)}
        return CommandRejected(cmd.ts_ns, "RecordTruthSnapshot", reasons.SNAPSHOT_SUPERSEDED, detail)
    equity = parse_units(cmd.equity, MONEY_DECIMALS)
    if not equity.ok or len(cmd.symbols) != len(cmd.quantities):
        detail = {"equity": cmd.equity, "accepted": "a decimal with at most 8 decimals"}
        return CommandRejected(cmd.ts_ns, "RecordTruthSnapshot", reasons.INVALID_SNAPSHOT, detail)
    return truth_snapshot(
        cmd.ts_ns, state, truth, cmd.venue, cmd.symbols, cmd.quantities, cmd.open_order_ids,
        equity.units, cmd.venue_ts_ns, cmd.latency_ms,
    )


def _set_regime(cmd: SetRegime, state: State) -> Event:
    policy = state.policy
    if policy is None:
        return CommandRejected(cmd.ts_ns, "SetRegime", reasons.NO_ACTIVE_POLICY, {})
    if policy.risk.allocation is None:
        return _section_missing(cmd, "allocation")
    if cmd.regime == state.brain.regime:
        return CommandRejected(cmd.ts_ns, "SetRegime", reasons.REGIME_UNCHANGED, {"regime": cmd.regime})
    return RegimeChanged(cmd.ts_ns, state.brain.regime, cmd.regime, cmd.reason)


def _record_tail_risk(cmd: RecordTailRisk, state: State) -> Event:
    policy = state.policy
    if policy is None:
        return CommandRejected(cmd.ts_ns, "RecordTailRisk", reasons.NO_ACTIVE_POLICY, {})
    tail = policy.risk.tail
    if tail is None:
        return _section_missing(cmd, "tail_risk")
    exponent = parse_units(cmd.tail_exponent, RATIO_DECIMALS)
    if not exponent.ok:
        detail = {"tail_exponent": cmd.tail_exponent, "accepted": "a decimal with at most 4 decimals"}
        return CommandRejected(cmd.ts_ns, "RecordTailRisk", reasons.INVALID_SNAPSHOT, detail)
    return TailRiskRecorded(cmd.ts_ns, cmd.symbol, exponent.units, tail.min_tail_exponent, cmd.sample_size, cmd.method)


def _halt(cmd: Halt, state: State) -> Event:
    if state.brain.breaker == HALTED:
        return CommandRejected(cmd.ts_ns, "Halt", reasons.ALREADY_HALTED, {"breaker": HALTED})
    return BreakerTransitioned(cmd.ts_ns, state.brain.breaker, HALTED, "operator", cmd.reason, {})


def _resume(cmd: Resume, state: State) -> Event:
    if state.brain.breaker != HALTED:
        return CommandRejected(cmd.ts_ns, "Resume", reasons.NOT_HALTED, {"breaker": state.brain.breaker})
    policy = state.policy
    active = triggers(state.brain, policy.risk) if policy is not None else []
    if active:
        return CommandRejected(cmd.ts_ns, "Resume", reasons.RESUME_BLOCKED, trigger_summary(active))
    return BreakerTransitioned(cmd.ts_ns, HALTED, NORMAL, "operator_resume", cmd.reason, {})


def _closing_price(mark_units: int, collar_bps: int, tick_units: int, selling: bool) -> int:
    """The collar's edge around the mark on the side that lets the order fill, rounded onto the
    tick toward the mark (so the price stays inside the collar)."""
    if selling:
        edge = -((-mark_units * (BPS - collar_bps)) // BPS)
        return max(tick_units, edge + (tick_units - edge % tick_units) % tick_units)
    edge = mark_units * (BPS + collar_bps) // BPS
    return edge - edge % tick_units


def _flatten(cmd: Flatten, state: State) -> list[Event]:
    policy = state.policy
    if policy is None:
        return [CommandRejected(cmd.ts_ns, "Flatten", reasons.NO_ACTIVE_POLICY, {})]
    if cmd.policy_hash != state.policy_hash:
        detail = {"policy_hash": cmd.policy_hash, "active_policy_hash": state.policy_hash}
        return [CommandRejected(cmd.ts_ns, "Flatten", reasons.POLICY_HASH_MISMATCH, detail)]
    events: list[Event] = []
    if state.brain.breaker != HALTED:
        events.append(BreakerTransitioned(cmd.ts_ns, state.brain.breaker, HALTED, "operator_flatten", cmd.reason, {}))
    for order_id in sorted(state.open_orders):
        if not state.open_orders[order_id].cancel_requested:
            events.append(OrderCancelRequested(cmd.ts_ns, order_id, "flatten: " + cmd.reason))
    index = 0
    for key in sorted(state.positions):
        position = state.positions[key]
        if position.qty_units == 0:
            continue
        instrument = position.instrument
        mark = state.marks.get(key, 0)
        selling = position.qty_units > 0
        price = _closing_price(mark, policy.price_collar_bps, instrument.tick_units, selling)
        qty = abs(position.qty_units)
        order_id = order_id_for(cmd.command_id) + "." + str(index)
        index += 1
        checks = [
            Check("policy_hash", cmd.policy_hash, state.policy_hash, PASS),
            Check("flatten", format_units(position.qty_units, instrument.qty_decimals), "closes the position", PASS),
        ]
        order = Order(
            order_id, "flatten-" + cmd.command_id + "." + str(index - 1), instrument, SELL if selling else BUY, LIMIT,
            price, qty, mark, True, cmd.phase_id, cmd.intent_id, ACCEPTED, 0, (), False, cmd.ts_ns,
        )
        events.append(OrderAccepted(cmd.ts_ns, order, instrument.notional_money(price, qty), checks))
    return events


# --- evolve -----------------------------------------------------------------------------------


def _window(times_ns: tuple[int, ...], ts_ns: int) -> tuple[int, ...]:
    """The rolling second ending at ts_ns, with ts_ns added."""
    start = ts_ns - NS_PER_SECOND
    first = 0
    count = len(times_ns)
    while first < count and times_ns[first] <= start:
        first += 1
    for i in range(first, count):
        if times_ns[i] <= start:
            # out of order: keep exactly the times inside the second, in their order
            kept: list[int] = []
            for t in times_ns:
                if t > start:
                    kept.append(t)
            kept.append(ts_ns)
            return tuple(kept)
    # in order (stream time never runs backwards): the second is a suffix, sliced not rebuilt
    return times_ns[first:] + (ts_ns,)


def _copy(
    state: State,
    ts_ns: int,
    open_orders: dict[str, Order],
    closed: ClosedOrders,
    positions: dict[str, Position],
    marks: dict[str, int],
    order_times_ns: tuple[int, ...],
    message_times_ns: tuple[int, ...],
    fills: Fills | None = None,
) -> State:
    return State(
        state.account_id,
        state.mode,
        state.policy,
        state.policy_hash,
        max(state.last_ts_ns, ts_ns),
        open_orders,
        closed,
        positions,
        marks,
        order_times_ns,
        message_times_ns,
        state.brain,
        state.fills if fills is None else fills,
    )


def _advance(state: State, ts_ns: int) -> State:
    return _copy(
        state,
        ts_ns,
        state.open_orders,
        state.closed,
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
        state.closed,
        state.positions,
        state.marks,
        state.order_times_ns,
        state.message_times_ns,
    )


def _close_order(
    state: State, ts_ns: int, order: Order, positions: dict[str, Position], marks: dict[str, int], fills: Fills | None = None
) -> State:
    orders = dict(state.open_orders)
    del orders[order.order_id]
    # The memory is shared with the states before this one, never copied (model.ClosedOrders).
    closed = state.closed.with_closed(ClosedOrder(order.order_id, order.status, order.fill_ids))
    return _copy(state, ts_ns, orders, closed, positions, marks, state.order_times_ns, state.message_times_ns, fills)


def evolve(state: State, event: Event) -> State:
    """Apply one recorded event to the state; returns a new state."""
    after = _evolve_orders(state, event)
    brain = next_brain(state, event)
    policy = after.policy
    if policy is not None and brain.breaker == DEFENSIVE:
        brain = track_clear(brain, policy.risk, event.ts_ns)
    if brain is after.brain:
        return after
    return _account(after, after.mode, after.policy, after.policy_hash, after.last_ts_ns, brain)


def _account(state: State, mode: str, policy: Policy | None, policy_hash: str, ts_ns: int, brain: Brain) -> State:
    """The state with its account-level parts replaced (orders and positions unchanged)."""
    return State(
        state.account_id,
        mode,
        policy,
        policy_hash,
        max(state.last_ts_ns, ts_ns),
        state.open_orders,
        state.closed,
        state.positions,
        state.marks,
        state.order_times_ns,
        state.message_times_ns,
        brain,
        state.fills,
    )


def _evolve_orders(state: State, event: Event) -> State:
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
            state.closed,
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
        fills = state.fills.with_fill(order.instrument.venue, event.fill_id, order.order_id)
        if is_terminal(order.status):
            return _close_order(state, ts, order, positions, marks, fills)
        orders = dict(state.open_orders)
        orders[order.order_id] = order
        return _copy(
            state,
            ts,
            orders,
            state.closed,
            positions,
            marks,
            state.order_times_ns,
            state.message_times_ns,
            fills,
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
            after.closed,
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
        return _account(state, state.mode, event.policy, event.policy_hash, ts, state.brain)
    if isinstance(event, ModeChanged):
        return _account(state, ARMED if event.armed else DISARMED, state.policy, state.policy_hash, ts, state.brain)
    # Refusals change nothing but the stream's time.
    return _advance(state, ts)


def refusal_reason(events: list[Event]) -> str:
    """The reason code when a decision refused its command, else the empty string."""
    for event in events:
        if isinstance(event, OrderRejected):
            return event.reason
        if isinstance(event, CommandRejected):
            return event.reason
    return ""
