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
from .events import FAIL, PASS, Check
from .model import ARMED, BUY, LIMIT, VENUE_HALTED, Order, State
from .numbers import (
    BPS,
    NS_PER_SECOND,
    div_ceil,
    format_money,
    format_units,
    is_decimal,
    parse_units,
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
    """Read quantity, price and reference price exactly at the instrument's tick and step."""
    step = format_units(instrument.step_units, instrument.qty_decimals)
    tick = format_units(instrument.tick_units, instrument.price_decimals)
    if not is_decimal(cmd.quantity) or cmd.quantity.startswith("-"):
        return _refuse(Check("quantity", cmd.quantity, "a positive decimal", FAIL), reasons.INVALID_QUANTITY)
    qty = parse_units(cmd.quantity, instrument.qty_decimals)
    if qty.units <= 0 and qty.ok:
        return _refuse(Check("quantity", cmd.quantity, "a positive decimal", FAIL), reasons.INVALID_QUANTITY)
    on_step = qty.ok and qty.units % instrument.step_units == 0
    step_check = Check("quantity_step", cmd.quantity, step, verdict(on_step))
    checks.append(step_check)
    if not on_step:
        return _refuse(step_check, reasons.QUANTITY_OFF_STEP)
    reference = parse_units(cmd.reference_price, instrument.price_decimals)
    if not is_decimal(cmd.reference_price) or not reference.ok or reference.units <= 0:
        limit = "a positive decimal with at most " + str(instrument.price_decimals) + " decimals"
        return _refuse(Check("reference_price", cmd.reference_price, limit, FAIL), reasons.INVALID_PRICE)
    if cmd.order_type != LIMIT:
        return Priced(None, "", qty.units, reference.units, reference.units)
    if not is_decimal(cmd.price) or cmd.price.startswith("-"):
        return _refuse(Check("price", cmd.price, "a positive decimal", FAIL), reasons.INVALID_PRICE)
    price = parse_units(cmd.price, instrument.price_decimals)
    if price.units <= 0 and price.ok:
        return _refuse(Check("price", cmd.price, "a positive decimal", FAIL), reasons.INVALID_PRICE)
    on_tick = price.ok and price.units % instrument.tick_units == 0
    tick_check = Check("price_tick", cmd.price, tick, verdict(on_tick))
    checks.append(tick_check)
    if not on_tick:
        return _refuse(tick_check, reasons.PRICE_OFF_TICK)
    return Priced(None, "", qty.units, price.units, reference.units)


def mode_check(state: State, instrument: Instrument) -> Check:
    """Live venues need an ARMED account; the paper venue trades either way."""
    ok = state.mode == ARMED or instrument.venue == PAPER_VENUE
    return Check("mode", state.mode, "ARMED, or venue " + PAPER_VENUE, verdict(ok))


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

    checks.append(
        Check(
            "max_order_qty",
            format_units(qty, instrument.qty_decimals),
            format_units(max_qty, instrument.qty_decimals),
            verdict(qty <= max_qty),
        )
    )
    codes.append(reasons.MAX_ORDER_QTY)

    checks.append(
        Check(
            "max_order_notional",
            format_money(notional),
            format_money(max_notional),
            verdict(notional <= max_notional),
        )
    )
    codes.append(reasons.MAX_ORDER_NOTIONAL)

    deviation_bps = div_ceil(abs(price - priced.reference_units) * BPS, priced.reference_units)
    checks.append(
        Check(
            "price_collar_bps",
            str(deviation_bps),
            str(policy.price_collar_bps),
            verdict(deviation_bps <= policy.price_collar_bps),
        )
    )
    codes.append(reasons.PRICE_COLLAR)

    projected = abs(position_qty + pending_same_side + signed)
    projected_notional = instrument.notional_money(price, projected)
    checks.append(
        Check(
            "max_position_notional",
            format_money(projected_notional),
            format_money(instrument.max_position_notional_money),
            verdict(projected_notional <= instrument.max_position_notional_money),
        )
    )
    codes.append(reasons.MAX_POSITION_NOTIONAL)

    checks.append(
        Check(
            "max_gross_exposure",
            format_money(gross),
            format_money(policy.max_gross_exposure_money),
            verdict(gross <= policy.max_gross_exposure_money),
        )
    )
    codes.append(reasons.MAX_GROSS_EXPOSURE)

    orders_in_window = count_since(state.order_times_ns, cmd.ts_ns) + 1
    checks.append(
        Check(
            "orders_per_second",
            str(orders_in_window),
            str(policy.max_orders_per_second),
            verdict(orders_in_window <= policy.max_orders_per_second),
        )
    )
    codes.append(reasons.ORDER_RATE)

    messages_in_window = count_since(state.message_times_ns, cmd.ts_ns) + 1
    checks.append(
        Check(
            "messages_per_second",
            str(messages_in_window),
            str(policy.max_messages_per_second),
            verdict(messages_in_window <= policy.max_messages_per_second),
        )
    )
    codes.append(reasons.MESSAGE_RATE)

    open_after = len(state.open_orders) + 1
    checks.append(
        Check("open_orders", str(open_after), str(policy.max_open_orders), verdict(open_after <= policy.max_open_orders))
    )
    codes.append(reasons.MAX_OPEN_ORDERS)

    if cmd.reduce_only:
        # Reduce-only orders already open count too: together they may not flip the position.
        needed = qty + pending_reduce_only
        reduces = position_qty != 0 and (position_qty > 0) != (signed > 0) and needed <= abs(position_qty)
        checks.append(
            Check(
                "reduce_only",
                format_units(position_qty, instrument.qty_decimals),
                "an opposite position of at least " + format_units(needed, instrument.qty_decimals),
                verdict(reduces),
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
        value = ("stale:" + str(score)) if stale and instrument.venue in brain.truth else ("none" if stale else str(score))
        ok = reducing or (not stale and score >= truth.min_score_for_new_risk)
        checks.append(Check("truth_score", value, str(truth.min_score_for_new_risk), verdict(ok)))
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
            Check("phase", str(cmd.phase_id), ",".join(names) if names else "none", verdict(reducing or cmd.phase_id in allowed))
        )
        codes.append(reasons.PHASE_NOT_ALLOWED)
        equity = brain.equity_money()
        cap = max_leverage(state, risk)
        leverage = gross_money * BPS // equity if equity > 0 else -1
        value = format_units(leverage, RATIO_DECIMALS) if leverage >= 0 else "no equity"
        checks.append(
            Check("leverage", value, format_units(cap, RATIO_DECIMALS), verdict(reducing or (leverage >= 0 and leverage <= cap)))
        )
        codes.append(reasons.MAX_LEVERAGE)
    budget = risk.budget
    if budget is not None:
        loss = max(0, -brain.day_pnl_money)
        checks.append(
            Check(
                "daily_loss",
                format_money(loss),
                format_money(budget.daily_loss_limit_money),
                verdict(reducing or budget.daily_loss_limit_money == 0 or loss < budget.daily_loss_limit_money),
            )
        )
        codes.append(reasons.DAILY_LOSS_LIMIT)
        drawdown = drawdown_bps(brain)
        checks.append(
            Check(
                "drawdown_bps",
                str(drawdown),
                str(budget.max_drawdown_bps),
                verdict(reducing or budget.max_drawdown_bps == 0 or drawdown < budget.max_drawdown_bps),
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
