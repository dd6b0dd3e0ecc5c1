"""The Brain: truth score, venue quality, breaker triggers, allocation and budget. Pure functions.

Everything here reads the state and the policy and returns numbers or events; nothing reads a
clock: time is the command's `ts_ns`. Formulas are documented, with worked examples, in
docs/risk.md.
"""

from __future__ import annotations

from typing import Final

from .events import (
    BreakerTransitioned,
    DayRolled,
    Event,
    OrderAcknowledged,
    OrderFilled,
    PolicyActivated,
    RegimeChanged,
    TailRiskRecorded,
    TruthComponent,
    TruthRecorded,
    VenueStatusChanged,
)
from .model import (
    BUY,
    NO_CLEAR,
    VENUE_DEGRADED,
    VENUE_HALTED,
    VENUE_OK,
    Brain,
    State,
    TruthReading,
    VenueQuality,
    WindowSum,
)
from .numbers import (
    BPS,
    NS_PER_MS,
    div_trunc,
    format_money,
    format_units,
    parse_units,
)
from .policy import Policy
from .risk_policy import (
    DEFENSIVE,
    HALTED,
    NORMAL,
    RATIO_DECIMALS,
    RiskPolicy,
    TruthPolicy,
    VenueQualityPolicy,
)

NS_PER_DAY: Final = 86_400 * 1_000_000_000


def level_rank(level: str) -> int:
    """NORMAL 0 < DEFENSIVE 1 < HALTED 2."""
    if level == HALTED:
        return 2
    if level == DEFENSIVE:
        return 1
    return 0


def day_of(ts_ns: int) -> int:
    """Days since the epoch of a UTC time: the budget day rolls at 00:00 UTC."""
    return ts_ns // NS_PER_DAY


def _scaled_score(measured: int, limit: int) -> int:
    """100 at 0, falling linearly to 0 at `limit` (0 at once when the limit is 0)."""
    if measured <= 0:
        return 100
    if limit <= 0:
        return 0
    return max(0, 100 - measured * 100 // limit)


def _count_score(count: int, penalty: int) -> int:
    return max(0, 100 - count * penalty)


# --- truth score ------------------------------------------------------------------------------


def truth_snapshot(
    ts_ns: int,
    state: State,
    truth: TruthPolicy,
    venue: str,
    symbols: list[str],
    quantities: list[str],
    open_order_ids: list[str],
    equity_money: int,
    venue_ts_ns: int,
    latency_ms: int,
) -> TruthRecorded:
    """Compare a venue's report with our state and score the agreement (0-100)."""
    policy = state.policy
    venue_qty: dict[str, int] = {}
    drifts: dict[str, str] = {}
    unpriced = False
    for i in range(len(symbols)):
        if quantities[i].replace("-", "").replace(".", "").strip("0") == "":
            continue  # venues list flat symbols too: a zero is no position, listed or not
        key = venue + ":" + symbols[i]
        instrument = policy.instruments.get(key) if policy is not None else None
        held = state.positions.get(key)
        if instrument is None and held is not None:
            instrument = held.instrument
        if instrument is None:
            drifts[symbols[i]] = "venue " + quantities[i] + ", not an instrument of the policy"
            unpriced = True
            continue
        parsed = parse_units(quantities[i], instrument.qty_decimals)
        if not parsed.ok:
            drifts[symbols[i]] = "venue " + quantities[i] + ", finer than the step"
            unpriced = True
            continue
        venue_qty[key] = venue_qty.get(key, 0) + parsed.units
    keys: list[str] = list(venue_qty)
    for key, held_position in state.positions.items():
        if held_position.instrument.venue == venue and key not in venue_qty:
            keys.append(key)
    drift_money = 0
    for key in sorted(keys):
        position = state.positions.get(key)
        ours = position.qty_units if position is not None else 0
        theirs = venue_qty.get(key, 0)
        if ours == theirs:
            continue
        instrument = position.instrument if position is not None else None
        if instrument is None and policy is not None:
            instrument = policy.instruments.get(key)
        if instrument is None:
            continue
        mark = state.marks.get(key, 0)
        if mark == 0:
            unpriced = True
        drift_money += instrument.notional_money(mark, abs(ours - theirs))
        drifts[instrument.symbol] = (
            "ours " + format_units(ours, instrument.qty_decimals) + ", venue " + format_units(theirs, instrument.qty_decimals)
        )
    drift_score = 0 if unpriced else _scaled_score(drift_money, truth.drift_tolerance_money)

    reported: dict[str, bool] = {}
    for order_id in open_order_ids:
        reported[order_id] = True
    orphans: list[str] = []
    for order_id in sorted(reported):
        order = state.open_orders.get(order_id)
        if order is None or order.instrument.venue != venue:
            orphans.append(order_id)
    missing: list[str] = []
    grace_start = ts_ns - truth.missing_order_grace_ms * NS_PER_MS
    for order_id in sorted(state.open_orders):
        order = state.open_orders[order_id]
        if order.instrument.venue == venue and order_id not in reported and order.accepted_ts_ns <= grace_start:
            missing.append(order_id)

    age_ms = max(0, ts_ns - venue_ts_ns) // NS_PER_MS
    components = [
        TruthComponent("position_drift", format_money(drift_money) if not unpriced else "unpriced", drift_score, truth.w_drift),
        TruthComponent("orphan_orders", str(len(orphans)), _count_score(len(orphans), truth.penalty_per_order), truth.w_orphan),
        TruthComponent("missing_orders", str(len(missing)), _count_score(len(missing), truth.penalty_per_order), truth.w_missing),
        TruthComponent("staleness_ms", str(age_ms), _scaled_score(age_ms, truth.snapshot_max_age_ms), truth.w_staleness),
        TruthComponent("latency_ms", str(latency_ms), _scaled_score(latency_ms, truth.latency_limit_ms), truth.w_latency),
    ]
    weighted = 0
    weights = 0
    for component in components:
        weighted += component.score * component.weight
        weights += component.weight
    score = weighted // weights
    return TruthRecorded(ts_ns, venue, score, components, equity_money, venue_ts_ns, latency_ms, drifts, orphans, missing)


def truth_for_venue(brain: Brain, truth: TruthPolicy, venue: str, ts_ns: int) -> tuple[int, bool]:
    """The venue's latest score, and whether it is stale (none within stale_after_ms)."""
    reading = brain.truth.get(venue)
    if reading is None:
        return 0, True
    return reading.score, ts_ns - reading.ts_ns > truth.stale_after_ms * NS_PER_MS


# --- venue quality ----------------------------------------------------------------------------


def _window(
    samples: tuple[int, ...], times: tuple[int, ...], summed: WindowSum, sample: int, ts_ns: int, size: int
) -> tuple[tuple[int, ...], tuple[int, ...], WindowSum]:
    """A window with one more sample, keeping the last `size`, and its sum (kept up to date
    with what enters and leaves, not recounted)."""
    added = samples + (sample,)
    added_times = times + (ts_ns,)
    total = summed.total + sample
    ordered = summed.ordered and (len(times) == 0 or ts_ns >= times[len(times) - 1])
    if len(added) > size:
        dropped = len(added) - size
        for i in range(dropped):
            total -= added[i]
        return added[dropped:], added_times[dropped:], WindowSum(total, ordered)
    return added, added_times, WindowSum(total, ordered)


def _all_recent(times: tuple[int, ...], summed: WindowSum, start: int) -> bool:
    """Whether every sample of a window was taken after `start` (known without a pass when the
    times are in order)."""
    return len(times) == 0 or (summed.ordered and times[0] > start)


NO_SAMPLES: Final = VenueQuality(VENUE_OK, (), (), (), ())
"""The quality record of a venue never measured."""


def venue_quality(brain: Brain, venue: str) -> VenueQuality:
    """A venue's quality record (OK and empty when never measured)."""
    found = brain.venues.get(venue)
    return found if found is not None else NO_SAMPLES



def _recent_total(samples: tuple[int, ...], times: tuple[int, ...], start: int) -> tuple[int, int]:
    """Sum and count of the samples taken after `start` (what `recent` keeps, without a copy)."""
    total = 0
    count = 0
    for i in range(len(samples)):
        if times[i] > start:
            total += samples[i]
            count += 1
    return total, count


def venue_means(policy: VenueQualityPolicy, quality: VenueQuality, ts_ns: int) -> tuple[int, int, int]:
    """Mean ack latency (ms), mean slippage (bps) and sample count of the window at ts_ns."""
    start = ts_ns - policy.window_ms * NS_PER_MS
    if _all_recent(quality.ack_ts_ns, quality.ack_sum, start):
        latency_total, latencies = quality.ack_sum.total, len(quality.ack_latency_ms)
    else:
        latency_total, latencies = _recent_total(quality.ack_latency_ms, quality.ack_ts_ns, start)
    if _all_recent(quality.slippage_ts_ns, quality.slippage_sum, start):
        slippage_total, slippages = quality.slippage_sum.total, len(quality.slippage_bps)
    else:
        slippage_total, slippages = _recent_total(quality.slippage_bps, quality.slippage_ts_ns, start)
    latency = latency_total // latencies if latencies > 0 else 0
    slippage = slippage_total // slippages if slippages > 0 else 0
    return latency, slippage, max(latencies, slippages)


def venue_status(policy: VenueQualityPolicy, quality: VenueQuality, ts_ns: int) -> str:
    """The status the window calls for at ts_ns (OK once old samples have aged out)."""
    latency, slippage, _ = venue_means(policy, quality, ts_ns)
    if latency >= policy.halted_latency_ms or slippage >= policy.halted_slippage_bps:
        return VENUE_HALTED
    if latency >= policy.degraded_latency_ms or slippage >= policy.degraded_slippage_bps:
        return VENUE_DEGRADED
    return VENUE_OK


def slippage_bps(side: str, reference_units: int, fill_units: int) -> int:
    """Fill price against the reference, in bps, positive when it went against us."""
    if reference_units <= 0:
        return 0
    moved = fill_units - reference_units if side == BUY else reference_units - fill_units
    return div_trunc(moved * BPS, reference_units)


def size_factor_bps(state: State, risk: RiskPolicy, venue: str) -> int:
    """How much of the normal size limits applies now: DEFENSIVE and DEGRADED each scale it."""
    factor = BPS
    brain = state.brain
    if brain.breaker == DEFENSIVE and risk.breaker is not None:
        factor = factor * risk.breaker.defensive_factor_bps // BPS
    vq = risk.venue_quality
    if vq is not None and venue_quality(brain, venue).status == VENUE_DEGRADED:
        factor = factor * vq.degraded_factor_bps // BPS
    return factor


# --- breaker triggers -------------------------------------------------------------------------


class Trigger:
    """An active breaker trigger: its name, the level it calls for and the values behind it."""

    def __init__(self, name: str, level: str, values: dict[str, str]) -> None:
        self.name: Final = name
        self.level: Final = level
        self.values: Final = values


def drawdown_bps(brain: Brain) -> int:
    """Drawdown of equity from its peak, in bps (0 before equity is known)."""
    if not brain.equity_known or brain.peak_equity_money <= 0:
        return 0
    return max(0, (brain.peak_equity_money - brain.equity_money()) * BPS // brain.peak_equity_money)


def triggers(brain: Brain, risk: RiskPolicy) -> list[Trigger]:
    """Every active trigger, in a fixed order: truth, tail risk, venue quality, daily loss, drawdown."""
    active: list[Trigger] = []
    truth = risk.truth
    if truth is not None and brain.truth:
        lowest = 101
        lowest_venue = ""
        for venue in sorted(brain.truth):
            if brain.truth[venue].score < lowest:
                lowest = brain.truth[venue].score
                lowest_venue = venue
        values = {"truth_score": str(lowest), "venue": lowest_venue}
        if lowest < truth.halt_below:
            values["halt_below"] = str(truth.halt_below)
            active.append(Trigger("truth_score", HALTED, values))
        elif lowest < truth.defensive_below:
            values["defensive_below"] = str(truth.defensive_below)
            active.append(Trigger("truth_score", DEFENSIVE, values))
    tail = risk.tail
    if tail is not None:
        breaches: dict[str, str] = {}
        for symbol in sorted(brain.tail_exponents):
            exponent = brain.tail_exponents[symbol]
            if exponent < tail.min_tail_exponent:
                breaches[symbol] = format_units(exponent, RATIO_DECIMALS)
        if breaches:
            breaches["min_tail_exponent"] = format_units(tail.min_tail_exponent, RATIO_DECIMALS)
            active.append(Trigger("tail_risk", DEFENSIVE, breaches))
    if risk.venue_quality is not None:
        halted: dict[str, str] = {}
        for venue in sorted(brain.venues):
            if brain.venues[venue].status == VENUE_HALTED:
                halted[venue] = VENUE_HALTED
        if halted:
            active.append(Trigger("venue_quality", DEFENSIVE, halted))
    budget = risk.budget
    if budget is not None:
        loss = -brain.day_pnl_money
        if budget.daily_loss_limit_money > 0 and loss >= budget.daily_loss_limit_money:
            values = {"daily_loss": format_money(loss), "limit": format_money(budget.daily_loss_limit_money)}
            active.append(Trigger("daily_loss", budget.daily_loss_breaker, values))
        drawdown = drawdown_bps(brain)
        if budget.max_drawdown_bps > 0 and drawdown >= budget.max_drawdown_bps:
            values = {"drawdown_bps": str(drawdown), "max_drawdown_bps": str(budget.max_drawdown_bps)}
            active.append(Trigger("drawdown", budget.drawdown_breaker, values))
    return active


def worst_level(brain: Brain, risk: RiskPolicy) -> str:
    """The highest level any active trigger calls for ("" when none is active): what `triggers`
    decides, without building the values it records (they are built only for a transition)."""
    rank = 0
    truth = risk.truth
    if truth is not None and brain.truth:
        lowest = 101
        for reading in brain.truth.values():
            lowest = min(lowest, reading.score)
        if lowest < truth.halt_below:
            return HALTED
        if lowest < truth.defensive_below:
            rank = 1
    tail = risk.tail
    if tail is not None and rank < 1:
        for exponent in brain.tail_exponents.values():
            if exponent < tail.min_tail_exponent:
                rank = 1
                break
    if risk.venue_quality is not None and rank < 1:
        for quality in brain.venues.values():
            if quality.status == VENUE_HALTED:
                rank = 1
                break
    budget = risk.budget
    if budget is not None:
        loss = -brain.day_pnl_money
        if budget.daily_loss_limit_money > 0 and loss >= budget.daily_loss_limit_money:
            rank = max(rank, level_rank(budget.daily_loss_breaker))
        drawdown = drawdown_bps(brain)
        if budget.max_drawdown_bps > 0 and drawdown >= budget.max_drawdown_bps:
            rank = max(rank, level_rank(budget.drawdown_breaker))
    if rank == 2:
        return HALTED
    return DEFENSIVE if rank == 1 else ""


def trigger_summary(active: list[Trigger]) -> dict[str, str]:
    """Active triggers as a detail map: name -> level."""
    summary: dict[str, str] = {}
    for trigger in active:
        summary[trigger.name] = trigger.level
    return summary


def venue_changes(brain: Brain, policy: Policy, ts_ns: int) -> list[Event]:
    """Venue status transitions the current windows call for."""
    vq = policy.risk.venue_quality
    changes: list[Event] = []
    if vq is None:
        return changes
    for venue in sorted(brain.venues):
        quality = brain.venues[venue]
        status = venue_status(vq, quality, ts_ns)
        if status != quality.status:
            latency, slippage, samples = venue_means(vq, quality, ts_ns)
            changes.append(VenueStatusChanged(ts_ns, venue, quality.status, status, slippage, latency, samples))
    return changes


def breaker_step(brain: Brain, policy: Policy, ts_ns: int) -> Event | None:
    """Escalate at once to the highest active trigger's level; leave DEFENSIVE for NORMAL once
    every trigger has been clear for the recovery time. HALTED waits for an operator's Resume."""
    breaker = policy.risk.breaker
    if breaker is None and brain.breaker != DEFENSIVE:
        return None
    level = worst_level(brain, policy.risk)
    if level == "" and brain.breaker != DEFENSIVE:
        return None
    if level != "" and (breaker is None or level_rank(level) <= level_rank(brain.breaker)):
        return None
    active = triggers(brain, policy.risk)
    worst: Trigger | None = None
    for trigger in active:
        if worst is None or level_rank(trigger.level) > level_rank(worst.level):
            worst = trigger
    if breaker is not None and worst is not None and level_rank(worst.level) > level_rank(brain.breaker):
        return BreakerTransitioned(ts_ns, brain.breaker, worst.level, worst.name, "", worst.values)
    if brain.breaker == DEFENSIVE and worst is None:
        # Without a breaker section (a policy swapped in while DEFENSIVE) recovery is immediate.
        recovery_ms = breaker.recovery_ms if breaker is not None else 0
        clear_since = brain.clear_since_ns if brain.clear_since_ns != NO_CLEAR else ts_ns
        if ts_ns - clear_since >= recovery_ms * NS_PER_MS:
            values = {"clear_since_ns": str(clear_since), "recovery_ms": str(recovery_ms)}
            return BreakerTransitioned(ts_ns, DEFENSIVE, NORMAL, "recovered", "", values)
    return None


def day_roll(brain: Brain, policy: Policy, ts_ns: int) -> Event | None:
    """The budget day's roll, when a command is the first of a new UTC day."""
    if policy.risk.budget is None:
        return None
    day = day_of(ts_ns)
    if day == brain.day:
        return None
    return DayRolled(ts_ns, brain.day, day, brain.day_pnl_money)


# --- allocation -------------------------------------------------------------------------------


def allowed_phases(state: State, risk: RiskPolicy) -> tuple[int, ...]:
    """Phases the equity band and the regime both allow (all when allocation is off)."""
    allocation = risk.allocation
    if allocation is None:
        return (1, 2, 3)
    band = allocation.band_for(state.brain.equity_money())
    regime = allocation.regimes[state.brain.regime]
    allowed: list[int] = []
    for phase in band.phases:
        if phase in regime.phases:
            allowed.append(phase)
    return tuple(allowed)


def max_leverage(state: State, risk: RiskPolicy) -> int:
    """The leverage cap now (1e-4 units): the band's, scaled by regime and breaker."""
    allocation = risk.allocation
    if allocation is None:
        return 0
    cap = allocation.band_for(state.brain.equity_money()).max_leverage
    cap = cap * allocation.regimes[state.brain.regime].leverage_factor_bps // BPS
    if state.brain.breaker == DEFENSIVE and risk.breaker is not None:
        cap = cap * risk.breaker.defensive_factor_bps // BPS
    return cap


# --- evolving the Brain -----------------------------------------------------------------------


def _with_venue(b: Brain, venue: str, quality: VenueQuality) -> dict[str, VenueQuality]:
    venues = dict(b.venues)
    venues[venue] = quality
    return venues


def next_brain(state: State, event: Event) -> Brain:
    """The Brain after an event (the same object when the event does not touch it)."""
    return advance_brain(state.brain, state, event)


def advance_brain(b: Brain, state: State, event: Event) -> Brain:
    """`b` after an event; `state` gives the policy and the open orders the event refers to."""
    policy = state.policy
    risk = policy.risk if policy is not None else None
    if isinstance(event, OrderFilled):
        delta = event.realized_pnl_money - event.fee_money
        pnl = b.pnl_since_base_money + delta
        peak = b.peak_equity_money
        if b.equity_known and b.equity_base_money + pnl > peak:
            peak = b.equity_base_money + pnl
        venues = b.venues
        vq = risk.venue_quality if risk is not None else None
        if vq is not None:
            order = event.order
            quality = venue_quality(b, order.instrument.venue)
            sample = slippage_bps(order.side, order.reference_price_units, event.price_units)
            slippages, times, summed = _window(
                quality.slippage_bps, quality.slippage_ts_ns, quality.slippage_sum, sample, event.ts_ns, vq.window
            )
            updated = VenueQuality(
                quality.status, quality.ack_latency_ms, quality.ack_ts_ns, slippages, times, quality.ack_sum, summed
            )
            venues = _with_venue(b, order.instrument.venue, updated)
        return Brain(
            b.breaker, b.breaker_since_ns, b.clear_since_ns, b.truth, b.regime, b.tail_exponents, venues,
            b.equity_known, b.equity_base_money, pnl, peak, b.day, b.day_pnl_money + delta,
        )
    if isinstance(event, OrderAcknowledged):
        vq = risk.venue_quality if risk is not None else None
        acked = state.open_orders.get(event.order_id)
        if vq is None or acked is None:
            return b
        quality = venue_quality(b, acked.instrument.venue)
        latencies, times, summed = _window(
            quality.ack_latency_ms, quality.ack_ts_ns, quality.ack_sum, event.ack_latency_ms, event.ts_ns, vq.window
        )
        updated = VenueQuality(
            quality.status, latencies, times, quality.slippage_bps, quality.slippage_ts_ns, summed, quality.slippage_sum
        )
        return Brain(
            b.breaker, b.breaker_since_ns, b.clear_since_ns, b.truth, b.regime, b.tail_exponents,
            _with_venue(b, acked.instrument.venue, updated), b.equity_known, b.equity_base_money,
            b.pnl_since_base_money, b.peak_equity_money, b.day, b.day_pnl_money,
        )
    if isinstance(event, TruthRecorded):
        truth = dict(b.truth)
        truth[event.venue] = TruthReading(event.score, event.ts_ns, event.venue_ts_ns)
        peak = event.equity_money if not b.equity_known else max(b.peak_equity_money, event.equity_money)
        return Brain(
            b.breaker, b.breaker_since_ns, b.clear_since_ns, truth, b.regime, b.tail_exponents, b.venues,
            True, event.equity_money, 0, peak, b.day, b.day_pnl_money,
        )
    if isinstance(event, BreakerTransitioned):
        return Brain(
            event.to_state, event.ts_ns, NO_CLEAR, b.truth, b.regime, b.tail_exponents, b.venues,
            b.equity_known, b.equity_base_money, b.pnl_since_base_money, b.peak_equity_money, b.day, b.day_pnl_money,
        )
    if isinstance(event, VenueStatusChanged):
        quality = venue_quality(b, event.venue)
        updated = VenueQuality(
            event.to_status,
            quality.ack_latency_ms,
            quality.ack_ts_ns,
            quality.slippage_bps,
            quality.slippage_ts_ns,
            quality.ack_sum,
            quality.slippage_sum,
        )
        return Brain(
            b.breaker, b.breaker_since_ns, b.clear_since_ns, b.truth, b.regime, b.tail_exponents,
            _with_venue(b, event.venue, updated), b.equity_known, b.equity_base_money,
            b.pnl_since_base_money, b.peak_equity_money, b.day, b.day_pnl_money,
        )
    if isinstance(event, RegimeChanged):
        return Brain(
            b.breaker, b.breaker_since_ns, b.clear_since_ns, b.truth, event.to_regime, b.tail_exponents, b.venues,
            b.equity_known, b.equity_base_money, b.pnl_since_base_money, b.peak_equity_money, b.day, b.day_pnl_money,
        )
    if isinstance(event, TailRiskRecorded):
        tail = dict(b.tail_exponents)
        tail[event.symbol] = event.exponent
        return Brain(
            b.breaker, b.breaker_since_ns, b.clear_since_ns, b.truth, b.regime, tail, b.venues,
            b.equity_known, b.equity_base_money, b.pnl_since_base_money, b.peak_equity_money, b.day, b.day_pnl_money,
        )
    if isinstance(event, DayRolled):
        return Brain(
            b.breaker, b.breaker_since_ns, b.clear_since_ns, b.truth, b.regime, b.tail_exponents, b.venues,
            b.equity_known, b.equity_base_money, b.pnl_since_base_money, b.peak_equity_money, event.to_day, 0,
        )
    if isinstance(event, PolicyActivated):
        allocation = event.policy.risk.allocation
        if b.equity_known or allocation is None:
            return b
        initial = allocation.initial_equity_money
        return Brain(
            b.breaker, b.breaker_since_ns, b.clear_since_ns, b.truth, b.regime, b.tail_exponents, b.venues,
            True, initial, 0, initial, b.day, b.day_pnl_money,
        )
    return b


def track_clear(b: Brain, risk: RiskPolicy, ts_ns: int) -> Brain:
    """While DEFENSIVE, remember since when every trigger has been clear (hysteresis by time)."""
    if b.breaker != DEFENSIVE:
        return b
    clear = worst_level(b, risk) == ""
    if clear and b.clear_since_ns == NO_CLEAR:
        since = ts_ns
    elif not clear and b.clear_since_ns != NO_CLEAR:
        since = NO_CLEAR
    else:
        return b
    return Brain(
        b.breaker, b.breaker_since_ns, since, b.truth, b.regime, b.tail_exponents, b.venues,
        b.equity_known, b.equity_base_money, b.pnl_since_base_money, b.peak_equity_money, b.day, b.day_pnl_money,
    )

