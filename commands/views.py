"""Plain-JSON views of an account's state, for `titan state` and the console.

Numbers are decimal strings, counts and times integers. An integer beyond 64 bits (a drawdown in
basis points after a fill with an absurd fee, which earlier titan versions recorded) is given as
its decimal digits instead, so every JSON encoder prints the view exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any, Final

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1


def json_safe(value: Any) -> Any:
    """The value with every integer beyond 64 bits as its decimal digits (exact, any size)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if INT64_MIN <= value <= INT64_MAX else format(Decimal(value), "f")
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def state_view(core: Any, state: Any) -> dict[str, Any]:
    """The account's mode, policy, positions and open orders, numbers as decimal strings."""
    fmt = core.numbers.format_units
    positions = []
    for key in sorted(state.positions):
        position = state.positions[key]
        instrument = position.instrument
        view = core.events.position_data(position)
        mark = state.marks.get(key)
        positions.append(
            {
                "venue": instrument.venue,
                "symbol": instrument.symbol,
                **view,
                "mark_price": fmt(mark, instrument.price_decimals) if mark is not None else None,
            }
        )
    orders = []
    for order_id in sorted(state.open_orders):
        order = state.open_orders[order_id]
        instrument = order.instrument
        orders.append(
            {
                "order_id": order.order_id,
                "client_order_id": order.client_order_id,
                "venue": instrument.venue,
                "symbol": instrument.symbol,
                "side": order.side,
                "order_type": order.order_type,
                "status": order.status,
                "price": fmt(order.price_units, instrument.price_decimals),
                "quantity": fmt(order.qty_units, instrument.qty_decimals),
                "filled_quantity": fmt(order.filled_qty_units, instrument.qty_decimals),
                "reduce_only": order.reduce_only,
                "cancel_requested": order.cancel_requested,
                "phase_id": order.phase_id,
                "intent_id": order.intent_id,
            }
        )
    policy = state.policy
    view = {
        "account_id": state.account_id,
        "mode": state.mode,
        "policy_id": policy.policy_id if policy is not None else None,
        "policy_hash": state.policy_hash or None,
        "last_ts_ns": state.last_ts_ns,
        "positions": positions,
        "open_orders": orders,
        **brain_view(core, state),
    }
    return dict(json_safe(view))


def brain_view(core: Any, state: Any) -> dict[str, Any]:
    """The Brain's part of the state: breaker, truth, regime, allocation, venues, equity, budget."""
    brain = state.brain
    policy = state.policy
    risk = policy.risk if policy is not None else None
    money = core.numbers.format_money
    brain_mod = core.brain
    venues = {}
    vq = risk.venue_quality if risk is not None else None
    for venue in sorted(brain.venues):
        quality = brain.venues[venue]
        latency, slippage, samples = brain_mod.venue_means(vq, quality, state.last_ts_ns) if vq is not None else (0, 0, 0)
        venues[venue] = {
            "status": quality.status,
            "mean_ack_latency_ms": latency,
            "mean_slippage_bps": slippage,
            "samples": samples,
        }
    active = brain_mod.triggers(brain, risk) if risk is not None else []
    view = {
        "breaker": {
            "state": brain.breaker,
            "since_ts_ns": brain.breaker_since_ns,
            "clear_since_ts_ns": brain.clear_since_ns if brain.clear_since_ns >= 0 else None,
            "active_triggers": [{"trigger": t.name, "level": t.level, "values": dict(t.values)} for t in active],
        },
        "truth": {venue: {"score": r.score, "ts_ns": r.ts_ns} for venue, r in sorted(brain.truth.items())},
        "regime": brain.regime,
        "tail_exponents": {s: core.numbers.format_units(e, 4) for s, e in sorted(brain.tail_exponents.items())},
        "venues": venues,
        "equity": money(brain.equity_money()) if brain.equity_known else None,
        "peak_equity": money(brain.peak_equity_money) if brain.equity_known else None,
        "drawdown_bps": brain_mod.drawdown_bps(brain),
        "budget": {"day": brain.day, "day_pnl": money(brain.day_pnl_money)},
        "allowed_phases": list(brain_mod.allowed_phases(state, risk)) if risk is not None else [],
        "max_leverage": core.numbers.format_units(brain_mod.max_leverage(state, risk), 4)
        if risk is not None and risk.allocation is not None
        else None,
    }
    return dict(json_safe(view))


BREAKER_TRANSITIONED = "breaker.transitioned.v1"


def breaker_history(records: Iterable[Any]) -> list[dict[str, Any]]:
    """Every breaker transition of an account stream, with its trigger, values, actor and time."""
    history = []
    for record in records:
        if record.type != BREAKER_TRANSITIONED:
            continue
        envelope = record.envelope
        history.append({**envelope["data"], "ts_ns": envelope["ts_ns"], "actor": envelope["actor"], "position": record.position})
    return list(json_safe(history))
