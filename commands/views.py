"""Plain-JSON views of an account's state, for `titan state` and the console."""

from __future__ import annotations

from typing import Any


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
    return {
        "account_id": state.account_id,
        "mode": state.mode,
        "policy_id": policy.policy_id if policy is not None else None,
        "policy_hash": state.policy_hash or None,
        "last_ts_ns": state.last_ts_ns,
        "positions": positions,
        "open_orders": orders,
    }
