"""Exact decimal strings <-> integers of a fixed scale. No floats, no Decimal in the hot path."""

from __future__ import annotations

from typing import Final

MONEY_DECIMALS: Final = 8
"""Notional, PnL, fees and equity are integers of 1e-8 quote-currency units."""

BPS: Final = 10_000
NS_PER_MS: Final = 1_000_000
NS_PER_SECOND: Final = 1_000_000_000


class Parsed:
    """A decimal string read at a scale: `ok` is False when it has more precision than the scale."""

    def __init__(self, ok: bool, units: int) -> None:
        self.ok: Final = ok
        self.units: Final = units


def is_decimal(text: str) -> bool:
    """Whether text is a plain decimal number: optional '-', digits, optional '.digits'."""
    if text == "":
        return False
    start = 1 if text[0] == "-" else 0
    if start == len(text):
        return False
    seen_point = False
    digits = 0
    for i in range(start, len(text)):
        ch = text[i]
        if ch == ".":
            if seen_point:
                return False
            seen_point = True
        elif "0" <= ch <= "9":
            digits += 1
        else:
            return False
    return digits > 0 and text[-1] != "."


def decimals_of(text: str) -> int:
    """The number of digits after the point of a decimal string, trailing zeros excluded."""
    point = text.find(".")
    if point < 0:
        return 0
    fraction = text[point + 1 :].rstrip("0")
    return len(fraction)


def parse_units(text: str, decimals: int) -> Parsed:
    """Read a decimal string as an integer of 10**-decimals units, exactly (`ok` False if not a decimal)."""
    if not is_decimal(text):
        return Parsed(False, 0)
    negative = text.startswith("-")
    body = text[1:] if negative else text
    point = body.find(".")
    if point < 0:
        whole = body
        fraction = ""
    else:
        whole = body[:point]
        fraction = body[point + 1 :]
    extra = fraction[decimals:]
    ok = extra.strip("0") == ""
    fraction = fraction[:decimals]
    fraction = fraction + "0" * (decimals - len(fraction))
    units = int((whole or "0") + fraction) if (whole or fraction) else 0
    return Parsed(ok, -units if negative else units)


def format_units(units: int, decimals: int) -> str:
    """Write an integer of 10**-decimals units as a decimal string with exactly `decimals` places."""
    sign = "-" if units < 0 else ""
    digits = str(-units if units < 0 else units)
    if decimals == 0:
        return sign + digits
    digits = digits.rjust(decimals + 1, "0")
    return sign + digits[:-decimals] + "." + digits[-decimals:]


def format_money(units: int) -> str:
    """Write money units (1e-8) as a decimal string without trailing zeros."""
    text = format_units(units, MONEY_DECIMALS)
    text = text.rstrip("0").rstrip(".")
    return "0" if text in ("", "-", "-0") else text


def pow10(exponent: int) -> int:
    """10 to a non-negative integer power."""
    result = 1
    for _ in range(exponent):
        result *= 10
    return result


def div_trunc(numerator: int, denominator: int) -> int:
    """Integer division rounding toward zero (denominator > 0)."""
    if numerator >= 0:
        return numerator // denominator
    return -((-numerator) // denominator)


def div_ceil(numerator: int, denominator: int) -> int:
    """Integer division rounding up, for non-negative operands."""
    return -((-numerator) // denominator)
