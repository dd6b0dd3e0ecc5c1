"""Pre-trade checks of PlaceOrder. Each returns a Check (value seen, limit, verdict).

Structural checks (policy, instrument, mode, tick, step) stop the decision at the first failure,
because the later checks need a known instrument and exact numbers. The limit checks all run and
are all recorded; the first failing one names the reason.
"""

from __future__ import annotations

from typing import Final

from . import reasons
from .brain import (
    allowed_phases,
    drawdown_bps,
    max_leverage,
    size_factor_bps,
    truth_for_venue,
    venue_quality,
)
from .commands import PlaceOrder
from .events import FAIL, MONEY, PASS, TEXT, Check, measured
from .model import ARMED, BUY, LIMIT, VENUE_HALTED, Order, State
from .numbers import (
    BPS,
    NS_PER_SECOND,
    div_ceil,
    format_units,
)
from .policy import PAPER_VENUE, Instrument, Policy
from .risk_policy import HALTED, NORMAL, RATIO_DECIMALS, RiskPolicy


def verdict(ok: bool) -> str:
    """The recorded verdict of a check."""
    return PASS if ok else FAIL


class Priced:
    """A PlaceOrder read at its instrument's scale, or the structural check it failed."""

    def __init__(self, failed: Check | None, reason: str, qty_units: int, price_units: int, reference_units: int) -> None:
        self.failed: Final = failed
        self.reason: Final = reason
        self.qty_units: Final = qty_units
        self.price_units: Final = price_units
        self.reference_units: Final = reference_units


def _refuse(check: Check, reason: str) -> Priced:
    return Priced(check, reason, 0, 0, 0)


def read_numbers(cmd: PlaceOrder, instrument: Instrument, checks: list[Check]) -> Priced:
    """Take quantity, price and reference price (read at the edge) to the instrument's tick and step."""
    qty_decimals = instrument.qty_decimals
    price_decimals = instrument.price_decimals
    quantity = cmd.quantity_number
    if not quantity.valid or quantity.negative:
        return _refuse(Check("quantity", cmd.quantity, "a positive decimal", FAIL), reasons.INVALID_QUANTITY)
    qty_ok, qty_units = quantity.at(qty_decimals)
    if qty_units <= 0 and qty_ok:
        return _refuse(Check("quantity", cmd.quantity, "a positive decimal", FAIL), reasons.INVALID_QUANTITY)
    on_step = qty_ok and qty_units % instrument.step_units == 0
    step_check = Check("quantity_step", cmd.quantity, "", verdict(on_step), 0, TEXT, instrument.step_units, qty_decimals)
    checks.append(step_check)
    if not on_step:
        return _refuse(step_check, reasons.QUANTITY_OFF_STEP)
    reference_ok, reference_units = cmd.reference_price_number.at(price_decimals)
    if not reference_ok or reference_units <= 0:
        limit = "a positive decimal with at most " + str(price_decimals) + " decimals"
        return _refuse(Check("reference_price", cmd.reference_price, limit, FAIL), reasons.INVALID_PRICE)
    if cmd.order_type != LIMIT:
        return Priced(None, "", qty_units, reference_units, reference_units)
    price = cmd.price_number
    if not price.valid or price.negative:
        return _refuse(Check("price", cmd.price, "a positive decimal", FAIL), reasons.INVALID_PRICE)
    price_ok, price_units = price.at(price_decimals)
    if price_units <= 0 and price_ok:
        return _refuse(Check("price", cmd.price, "a positive decimal", FAIL), reasons.INVALID_PRICE)
    on_tick = price_ok and price_units % instrument.tick_units == 0
    tick_check = Check("price_tick", cmd.price, "", verdict(on_tick), 0, TEXT, instrument.tick_units, price_decimals)
    checks.append(tick_check)
    if not on_tick:
        return _refuse(tick_check, reasons.PRICE_OFF_TICK)
    return Priced(None, "", qty_units, price_units, reference_units)


MODE_LIMIT: Final = "ARMED, or venue " + PAPER_VENUE


def mode_check(state: State, instrument: Instrument) -> Check:
    """Live venues need an ARMED account; the paper venue trades either way."""
    ok = state.mode == ARMED or instrument.venue == PAPER_VENUE
    return Check("mode", state.mode, MODE_LIMIT, verdict(ok))


def count_since(times_ns: tuple[int, ...], ts_ns: int) -> int:
    """How many times fall in the rolling second ending at ts_ns."""
    start = ts_ns - NS_PER_SECOND
    count = 0
    for t in times_ns:
        if t > start:
            count += 1
    return count


def limit_checks(
    cmd: PlaceOrder, state: State, policy: Policy, instrument: Instrument, priced: Priced
) -> tuple[list[Check], list[str]]:
    """Every limit check of a priced order, with the reason code of each (for the failing ones)."""
    checks: list[Check] = []
    codes: list[str] = []
    qty = priced.qty_units
    price = priced.price_units
    signed = qty if cmd.side == BUY else -qty
    notional = instrument.notional_money(price, qty)
    risk = policy.risk

    position = state.positions.get(instrument.key)
    position_qty = position.qty_units if position is not None else 0
    pending_same_side = 0
    pending_reduce_only = 0
    open_notional = 0
    duplicate_client_id = False
    for order in state.open_orders.values():
        open_notional += order.instrument.notional_money(order.price_units, order.remaining_units())
        if order.client_order_id == cmd.client_order_id:
            duplicate_client_id = True
        if order.instrument.key == instrument.key and order.side == cmd.side:
            pending_same_side += order.signed_remaining_units()
            if order.reduce_only:
                pending_reduce_only += order.remaining_units()
    gross = open_notional + notional
    for key, held in state.positions.items():
        mark = state.marks.get(key, 0)
        gross += held.instrument.notional_money(mark, abs(held.qty_units))

    if risk.any() or state.brain.breaker != NORMAL:
        brain_checks(cmd, state, risk, instrument, gross, checks, codes)
    factor = size_factor_bps(state, risk, instrument.venue)
    max_qty = instrument.max_order_qty_units * factor // BPS
    max_notional = policy.max_order_notional_money * factor // BPS

    qty_decimals = instrument.qty_decimals
    checks.append(measured("max_order_qty", qty, qty_decimals, max_qty, qty_decimals, verdict(qty <= max_qty)))
    codes.append(reasons.MAX_ORDER_QTY)

    checks.append(
        measured("max_order_notional", notional, MONEY, max_notional, MONEY, verdict(notional <= max_notional))
    )
    codes.append(reasons.MAX_ORDER_NOTIONAL)

    deviation_bps = div_ceil(abs(price - priced.reference_units) * BPS, priced.reference_units)
    collar = policy.price_collar_bps
    checks.append(measured("price_collar_bps", deviation_bps, 0, collar, 0, verdict(deviation_bps <= collar)))
    codes.append(reasons.PRICE_COLLAR)

    projected = abs(position_qty + pending_same_side + signed)
    projected_notional = instrument.notional_money(price, projected)
    position_limit = instrument.max_position_notional_money
    checks.append(
        measured(
            "max_position_notional",
            projected_notional,
            MONEY,
            position_limit,
            MONEY,
            verdict(projected_notional <= position_limit),
        )
    )
    codes.append(reasons.MAX_POSITION_NOTIONAL)

    gross_limit = policy.max_gross_exposure_money
    checks.append(measured("max_gross_exposure", gross, MONEY, gross_limit, MONEY, verdict(gross <= gross_limit)))
    codes.append(reasons.MAX_GROSS_EXPOSURE)

    orders_in_window = count_since(state.order_times_ns, cmd.ts_ns) + 1
    order_rate = policy.max_orders_per_second
    checks.append(
        measured("orders_per_second", orders_in_window, 0, order_rate, 0, verdict(orders_in_window <= order_rate))
    )
    codes.append(reasons.ORDER_RATE)

    messages_in_window = count_since(state.message_times_ns, cmd.ts_ns) + 1
    message_rate = policy.max_messages_per_second
    checks.append(
        measured(
            "messages_per_second", messages_in_window, 0, message_rate, 0, verdict(messages_in_window <= message_rate)
        )
    )
    codes.append(reasons.MESSAGE_RATE)

    open_after = len(state.open_orders) + 1
    max_open = policy.max_open_orders
    checks.append(measured("open_orders", open_after, 0, max_open, 0, verdict(open_after <= max_open)))
    codes.append(reasons.MAX_OPEN_ORDERS)

    if cmd.reduce_only:
        # Reduce-only orders already open count too: together they may not flip the position.
        needed = qty + pending_reduce_only
        reduces = position_qty != 0 and (position_qty > 0) != (signed > 0) and needed <= abs(position_qty)
        checks.append(
            Check(
                "reduce_only",
                "",
                "an opposite position of at least " + format_units(needed, qty_decimals),
                verdict(reduces),
                position_qty,
                qty_decimals,
            )
        )
        codes.append(reasons.REDUCE_ONLY_WOULD_INCREASE)

    checks.append(
        Check(
            "client_order_id",
            cmd.client_order_id,
            "unique among open orders",
            verdict(not duplicate_client_id),
        )
    )
    codes.append(reasons.DUPLICATE_CLIENT_ORDER_ID)
    return checks, codes


def brain_checks(
    cmd: PlaceOrder, state: State, risk: RiskPolicy, instrument: Instrument, gross_money: int, checks: list[Check], codes: list[str]
) -> None:
    """The Brain's checks, each recorded only when the policy has its section (so ledgers from
    before the Brain replay to identical events). Reduce-only orders pass every one of them:
    they take risk off."""
    brain = state.brain
    reducing = cmd.reduce_only
    if risk.breaker is not None or brain.breaker != NORMAL:
        checks.append(
            Check("breaker", brain.breaker, "NORMAL or DEFENSIVE; reduce-only while HALTED", verdict(reducing or brain.breaker != HALTED))
        )
        codes.append(reasons.BREAKER_HALTED)
    truth = risk.truth
    if truth is not None:
        score, stale = truth_for_venue(brain, truth, instrument.venue, cmd.ts_ns)
        minimum = truth.min_score_for_new_risk
        ok = reducing or (not stale and score >= minimum)
        if not stale:
            checks.append(measured("truth_score", score, 0, minimum, 0, verdict(ok)))
        else:
            value = ("stale:" + str(score)) if instrument.venue in brain.truth else "none"
            checks.append(Check("truth_score", value, "", verdict(ok), 0, TEXT, minimum, 0))
        codes.append(reasons.TRUTH_SCORE_LOW)
    if risk.venue_quality is not None:
        status = venue_quality(brain, instrument.venue).status
        checks.append(Check("venue_status", status, "OK or DEGRADED", verdict(reducing or status != VENUE_HALTED)))
        codes.append(reasons.VENUE_HALTED)
    if risk.allocation is not None:
        allowed = allowed_phases(state, risk)
        names: list[str] = []
        for phase in allowed:
            names.append(str(phase))
        checks.append(
            Check(
                "phase",
                "",
                ",".join(names) if names else "none",
                verdict(reducing or cmd.phase_id in allowed),
                cmd.phase_id,
                0,
            )
        )
        codes.append(reasons.PHASE_NOT_ALLOWED)
        equity = brain.equity_money()
        cap = max_leverage(state, risk)
        leverage = gross_money * BPS // equity if equity > 0 else -1
        leverage_ok = verdict(reducing or (leverage >= 0 and leverage <= cap))
        if leverage >= 0:
            checks.append(measured("leverage", leverage, RATIO_DECIMALS, cap, RATIO_DECIMALS, leverage_ok))
        else:
            checks.append(Check("leverage", "no equity", "", leverage_ok, 0, TEXT, cap, RATIO_DECIMALS))
        codes.append(reasons.MAX_LEVERAGE)
    budget = risk.budget
    if budget is not None:
        loss = max(0, -brain.day_pnl_money)
        loss_limit = budget.daily_loss_limit_money
        checks.append(
            measured(
                "daily_loss", loss, MONEY, loss_limit, MONEY, verdict(reducing or loss_limit == 0 or loss < loss_limit)
            )
        )
        codes.append(reasons.DAILY_LOSS_LIMIT)
        drawdown = drawdown_bps(brain)
        max_drawdown = budget.max_drawdown_bps
        checks.append(
            measured(
                "drawdown_bps",
                drawdown,
                0,
                max_drawdown,
                0,
                verdict(reducing or max_drawdown == 0 or drawdown < max_drawdown),
            )
        )
        codes.append(reasons.MAX_DRAWDOWN)


def new_order(cmd: PlaceOrder, order_id: str, instrument: Instrument, priced: Priced, status: str) -> Order:
    """The order an accepted PlaceOrder opens."""
    return Order(
        order_id,
        cmd.client_order_id,
        instrument,
        cmd.side,
        cmd.order_type,
        priced.price_units,
        priced.qty_units,
        priced.reference_units,
        cmd.reduce_only,
        cmd.phase_id,
        cmd.intent_id,
        status,
        0,
        (),
        False,
        cmd.ts_ns,
    )
