"""The risk policy as the core reads it: instruments with their scales, and the account limits.

The document itself is JSON (validated at the edge by `schemas.policy`); this module turns a
validated document into integers of each instrument's units, once, when a policy is activated.
"""

from __future__ import annotations

from typing import Final

from .numbers import MONEY_DECIMALS, decimals_of, is_decimal, parse_units, pow10
from .risk_policy import RiskPolicy, RiskPolicyError, risk_policy_from_document

PAPER_VENUE: Final = "paper"
"""The built-in paper venue: it may trade while the account is DISARMED."""

RULES_V1: Final = 1
"""The decider's first rules: every command older than the account's last one is STALE_COMMAND."""
RULES_V2: Final = 2
"""Venue reports are facts, decided at the account's time when late; halt and flatten always take
effect; a venue fill id counts once, whichever order it names (docs/decisions.md)."""
LATEST_RULES: Final = RULES_V2


class PolicyError(Exception):
    """The document is not a usable policy (the edge validates first; this guards the core)."""


class Instrument:
    """A tradable symbol on a venue, with its price tick and quantity step as integer scales."""

    def __init__(
        self,
        venue: str,
        symbol: str,
        price_decimals: int,
        tick_units: int,
        qty_decimals: int,
        step_units: int,
        max_order_qty_units: int,
        max_position_notional_money: int,
    ) -> None:
        self.venue: Final = venue
        self.symbol: Final = symbol
        self.key: Final = venue + ":" + symbol
        self.price_decimals: Final = price_decimals
        self.tick_units: Final = tick_units
        self.qty_decimals: Final = qty_decimals
        self.step_units: Final = step_units
        self.max_order_qty_units: Final = max_order_qty_units
        self.max_position_notional_money: Final = max_position_notional_money
        # money units per (price unit x quantity unit): 10**(8 - pd - qd)
        self.money_factor: Final = pow10(MONEY_DECIMALS - price_decimals - qty_decimals)

    def notional_money(self, price_units: int, qty_units: int) -> int:
        """Notional in money units of a quantity at a price, both in this instrument's units."""
        return price_units * qty_units * self.money_factor


class Policy:
    """Account limits in integer units, and the instruments keyed by `venue:symbol`.

    `document` is the JSON document the policy was read from, kept (never changed) so that a
    state can be written out as data and read back (snapshot.py) by reading it again.
    """

    def __init__(
        self,
        policy_id: str,
        instruments: dict[str, Instrument],
        max_order_notional_money: int,
        price_collar_bps: int,
        max_gross_exposure_money: int,
        max_orders_per_second: int,
        max_messages_per_second: int,
        max_open_orders: int,
        risk: RiskPolicy,
        rules_version: int,
        document: dict[str, object],
    ) -> None:
        self.policy_id: Final = policy_id
        self.risk: Final = risk
        self.rules_version: Final = rules_version
        self.instruments: Final = instruments
        self.max_order_notional_money: Final = max_order_notional_money
        self.price_collar_bps: Final = price_collar_bps
        self.max_gross_exposure_money: Final = max_gross_exposure_money
        self.max_orders_per_second: Final = max_orders_per_second
        self.max_messages_per_second: Final = max_messages_per_second
        self.max_open_orders: Final = max_open_orders
        self.document: Final = document


def _text(doc: dict[str, object], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str):
        raise PolicyError(f"policy field {key!r} must be a string")
    return value


def _decimal(doc: dict[str, object], key: str) -> str:
    value = _text(doc, key)
    if not is_decimal(value) or value.startswith("-"):
        raise PolicyError(f"policy field {key!r} must be a non-negative decimal string, got {value!r}")
    return value


def _int(doc: dict[str, object], key: str) -> int:
    value = doc.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise PolicyError(f"policy field {key!r} must be a non-negative integer")
    return value


def _object(doc: dict[str, object], key: str) -> dict[str, object]:
    value = doc.get(key)
    if not isinstance(value, dict):
        raise PolicyError(f"policy field {key!r} must be an object")
    return value


def _money(doc: dict[str, object], key: str) -> int:
    parsed = parse_units(_decimal(doc, key), MONEY_DECIMALS)
    if not parsed.ok:
        raise PolicyError(f"policy field {key!r} has more than {MONEY_DECIMALS} decimals")
    return parsed.units


def _instrument(doc: dict[str, object]) -> Instrument:
    tick = _decimal(doc, "tick_size")
    step = _decimal(doc, "step_size")
    price_decimals = decimals_of(tick)
    qty_decimals = decimals_of(step)
    if price_decimals + qty_decimals > MONEY_DECIMALS:
        raise PolicyError(
            f"instrument {doc.get('symbol')!r}: tick and step decimals add up to more than {MONEY_DECIMALS}"
        )
    tick_units = parse_units(tick, price_decimals).units
    step_units = parse_units(step, qty_decimals).units
    if tick_units <= 0 or step_units <= 0:
        raise PolicyError(f"instrument {doc.get('symbol')!r}: tick_size and step_size must be positive")
    max_qty = parse_units(_decimal(doc, "max_order_qty"), qty_decimals)
    if not max_qty.ok:
        raise PolicyError(f"instrument {doc.get('symbol')!r}: max_order_qty is finer than step_size")
    return Instrument(
        _text(doc, "venue"),
        _text(doc, "symbol"),
        price_decimals,
        tick_units,
        qty_decimals,
        step_units,
        max_qty.units,
        _money(doc, "max_position_notional"),
    )


def policy_from_document(doc: dict[str, object]) -> Policy:
    """Read a policy document (plain JSON values) into integer limits; raise PolicyError."""
    raw_instruments = doc.get("instruments")
    if not isinstance(raw_instruments, list) or not raw_instruments:
        raise PolicyError("policy field 'instruments' must be a non-empty list")
    instruments: dict[str, Instrument] = {}
    for raw in raw_instruments:
        if not isinstance(raw, dict):
            raise PolicyError("each instrument must be an object")
        instrument = _instrument(raw)
        if instrument.key in instruments:
            raise PolicyError(f"instrument {instrument.key!r} is listed twice")
        instruments[instrument.key] = instrument
    limits = _object(doc, "limits")
    return Policy(
        _text(doc, "policy_id"),
        instruments,
        _money(limits, "max_order_notional"),
        _int(limits, "price_collar_bps"),
        _money(limits, "max_gross_exposure"),
        _int(limits, "max_orders_per_second"),
        _int(limits, "max_messages_per_second"),
        _int(limits, "max_open_orders"),
        _risk(doc),
        _rules_version(doc),
        doc,
    )


def _rules_version(doc: dict[str, object]) -> int:
    """The decider rules the policy asks for; a policy written before they were versioned gets 1."""
    if doc.get("rules_version") is None:
        return RULES_V1
    version = _int(doc, "rules_version")
    if version < RULES_V1 or version > LATEST_RULES:
        raise PolicyError(f"policy field 'rules_version' must be {RULES_V1}..{LATEST_RULES}, got {version}")
    return version


def _risk(doc: dict[str, object]) -> RiskPolicy:
    try:
        return risk_policy_from_document(doc)
    except RiskPolicyError as exc:
        raise PolicyError(str(exc)) from exc
