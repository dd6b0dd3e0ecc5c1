"""The risk-policy document (SPEC §3). Its hash is SHA-256 of its canonical JSON."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from .base import Identifier, PositiveDecimal, Text, WireModel
from .canonical import document_hash

MONEY_DECIMALS = 8


def _decimals(text: str) -> int:
    point = text.find(".")
    return 0 if point < 0 else len(text[point + 1 :].rstrip("0"))


def _is_zero(text: str) -> bool:
    return text.replace(".", "").strip("0") == ""


class InstrumentSpec(WireModel):
    """A tradable symbol on a venue, its price tick, quantity step and per-symbol limits."""

    venue: Identifier
    symbol: Identifier
    tick_size: PositiveDecimal
    step_size: PositiveDecimal
    max_order_qty: PositiveDecimal
    max_position_notional: PositiveDecimal

    @model_validator(mode="after")
    def _scales_fit(self) -> InstrumentSpec:
        if _decimals(self.tick_size) + _decimals(self.step_size) > MONEY_DECIMALS:
            raise ValueError(
                f"tick_size and step_size together have more than {MONEY_DECIMALS} decimals"
            )
        if _is_zero(self.tick_size) or _is_zero(self.step_size):
            raise ValueError("tick_size and step_size must be positive")
        if _decimals(self.max_order_qty) > _decimals(self.step_size):
            raise ValueError("max_order_qty is finer than step_size")
        if _decimals(self.max_position_notional) > MONEY_DECIMALS:
            raise ValueError(f"max_position_notional has more than {MONEY_DECIMALS} decimals")
        return self


Count = Annotated[int, Field(ge=0)]


class Limits(WireModel):
    """Account-wide limits; money in the quote currency, as decimal strings."""

    max_order_notional: PositiveDecimal
    price_collar_bps: Count
    max_gross_exposure: PositiveDecimal
    max_orders_per_second: Count
    max_messages_per_second: Count
    max_open_orders: Count


class PolicyDocument(WireModel):
    """A complete risk policy; exactly one is active per account."""

    policy_id: Identifier
    description: Text = ""
    quote_currency: Identifier = "USDT"
    instruments: Annotated[list[InstrumentSpec], Field(min_length=1)]
    limits: Limits

    @model_validator(mode="after")
    def _unique_instruments(self) -> PolicyDocument:
        seen: set[str] = set()
        for instrument in self.instruments:
            key = f"{instrument.venue}:{instrument.symbol}"
            if key in seen:
                raise ValueError(f"instrument {key} is listed twice")
            seen.add(key)
        return self


def policy_hash(policy: PolicyDocument) -> str:
    """SHA-256 of the policy's canonical JSON, defaults included (what `titan policy hash` prints)."""
    return document_hash(policy.model_dump(mode="json"))
