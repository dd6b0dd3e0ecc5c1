"""The `orders` read model: every order ever decided, accepted or refused, and where it stands.

An order's row is put when its PlaceOrder (or Flatten) is decided, then patched by the venue's
acknowledgement, fills, cancel request, cancellation or venue rejection. Statuses are the core's
(`ACCEPTED`, `ACKNOWLEDGED`, `PARTIALLY_FILLED`, `FILLED`, `CANCELLED`, `VENUE_REJECTED`), plus
`REJECTED` for an order the pre-trade checks refused (its `reason` says why).
"""

from __future__ import annotations

from typing import Any, Final

from commands.ports import Record

from .model import Change, Column, Patch, Projection, Put, Table, account_of, each_record

ORDER_ACCEPTED: Final = "order.accepted.v1"
ORDER_REJECTED: Final = "order.rejected.v1"
ORDER_ACKNOWLEDGED: Final = "order.acknowledged.v1"
ORDER_FILLED: Final = "order.filled.v1"
ORDER_CANCEL_REQUESTED: Final = "order.cancel_requested.v1"
ORDER_CANCELLED: Final = "order.cancelled.v1"
ORDER_VENUE_REJECTED: Final = "order.venue_rejected.v1"

REJECTED: Final = "REJECTED"

ORDERS: Final = Table(
    "rm_orders",
    (
        Column("order_id", "text"),
        Column("account_id", "text"),
        Column("command_id", "text", doc="the command that decided the order"),
        Column("client_order_id", "text"),
        Column("venue", "text"),
        Column("symbol", "text"),
        Column("side", "text"),
        Column("order_type", "text"),
        Column("quantity", "decimal"),
        Column("price", "decimal", nullable=True, doc="null for a refused MARKET order"),
        Column("reference_price", "decimal"),
        Column("reduce_only", "boolean"),
        Column("phase_id", "integer", nullable=True),
        Column("intent_id", "text", nullable=True),
        Column("notional", "decimal", nullable=True, doc="null when refused"),
        Column("status", "text"),
        Column("reason", "text", nullable=True, doc="the reason code when refused"),
        Column("filled_quantity", "decimal", doc="at the quantity's scale"),
        Column("fill_count", "integer", default=0),
        Column("venue_order_id", "text", nullable=True),
        Column("ack_latency_ms", "integer", nullable=True),
        Column("cancel_requested", "boolean", default=False),
        Column("venue_reason", "text", nullable=True, doc="why the venue cancelled or refused it"),
        Column("created_ts_ns", "integer", doc="command time of the decision"),
        Column("acknowledged_ts_ns", "integer", nullable=True),
        Column("closed_ts_ns", "integer", nullable=True, doc="filled, cancelled or venue-rejected"),
        Column("updated_ts_ns", "integer"),
        Column("created_position", "integer", doc="ledger position of the decision"),
        Column("updated_position", "integer", doc="ledger position of the last change"),
    ),
    key=("order_id",),
    indexes=(("account_id", "status"),),
    doc="One row per order, accepted or refused.",
)


def zero_like(quantity: str) -> str:
    """Zero at the scale of a decimal string ("0.010" -> "0.000"), as the core writes it."""
    _, dot, decimals = quantity.partition(".")
    return "0." + "0" * len(decimals) if dot and decimals else "0"


def _opened(record: Record, data: dict[str, Any], status: str) -> Put:
    envelope = record.envelope
    refused = status == REJECTED
    return Put(
        ORDERS.name,
        {
            "order_id": data["order_id"],
            "account_id": account_of(record),
            "command_id": envelope["command_id"],
            "client_order_id": data["client_order_id"],
            "venue": data["venue"],
            "symbol": data["symbol"],
            "side": data["side"],
            "order_type": data["order_type"],
            "quantity": data["quantity"],
            "price": data.get("price"),
            "reference_price": data["reference_price"],
            "reduce_only": data["reduce_only"],
            "phase_id": data.get("phase_id", envelope.get("phase_id")),
            "intent_id": data.get("intent_id", envelope.get("intent_id")),
            "notional": None if refused else data["notional"],
            "status": status,
            "reason": data["reason"] if refused else None,
            "filled_quantity": zero_like(data["quantity"]),
            "created_ts_ns": envelope["ts_ns"],
            "updated_ts_ns": envelope["ts_ns"],
            "created_position": record.position,
            "updated_position": record.position,
        },
    )


def fold_record(record: Record) -> list[Change]:
    """Put an order when it is decided; patch it as the venue reports on it."""
    kind = record.type
    if not kind.startswith("order."):
        return []
    data: dict[str, Any] = record.envelope["data"]
    if kind == ORDER_ACCEPTED:
        return [_opened(record, data, "ACCEPTED")]
    if kind == ORDER_REJECTED:
        return [_opened(record, data, REJECTED)]
    ts_ns = record.envelope["ts_ns"]
    touched = {"updated_ts_ns": ts_ns, "updated_position": record.position}
    key = (data["order_id"],)
    if kind == ORDER_ACKNOWLEDGED:
        values = {
            "status": "ACKNOWLEDGED",
            "venue_order_id": data["venue_order_id"],
            "ack_latency_ms": data["ack_latency_ms"],
            "acknowledged_ts_ns": ts_ns,
        }
        return [Patch(ORDERS.name, key, set={**values, **touched})]
    if kind == ORDER_FILLED:
        values = {"status": data["status"], "filled_quantity": data["filled_quantity"]}
        if data["status"] == "FILLED":
            values["closed_ts_ns"] = ts_ns
        return [Patch(ORDERS.name, key, set={**values, **touched}, add={"fill_count": 1})]
    if kind == ORDER_CANCEL_REQUESTED:
        return [Patch(ORDERS.name, key, set={"cancel_requested": True, **touched})]
    if kind == ORDER_CANCELLED:
        values = {
            "status": "CANCELLED",
            "filled_quantity": data["filled_quantity"],
            "venue_reason": data["venue_reason"],
            "closed_ts_ns": ts_ns,
        }
        return [Patch(ORDERS.name, key, set={**values, **touched})]
    if kind == ORDER_VENUE_REJECTED:
        values = {"status": "VENUE_REJECTED", "venue_reason": data["venue_reason"], "closed_ts_ns": ts_ns}
        return [Patch(ORDERS.name, key, set={**values, **touched})]
    return []


PROJECTION: Final = Projection(
    "orders",
    (ORDERS,),
    each_record(fold_record),
    doc="Every order: status, filled quantity, venue order id, timestamps, reason if refused.",
)
