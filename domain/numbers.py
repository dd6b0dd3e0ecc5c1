"""Exact decimal strings <-> integers of a fixed scale. No floats, no Decimal in the hot path."""

from __future__ import annotations

from typing import Final

MONEY_DECIMALS: Final = 8
"""Notional, PnL, fees and equity are integers of 1e-8 quote-currency units."""

MONEY_SCALE: Final = 100_000_000
BPS: Final = 10_000
NS_PER_MS: Final = 1_000_000
NS_PER_SECOND: Final = 1_000_000_000


class Parsed:
    """A decimal string read at a scale: `ok` is False when it has more precision than the scale."""

    def __init__(self, ok: bool, units: int) -> None:
        self.ok: Final = ok
        self.units: Final = units


class Number:
    """A decimal string read once, at the edge: whether it is a plain decimal, its sign, and its
    digits as one integer with the count of digits written after the point (trailing zeros
    dropped). `at(decimals)` gives what `parse_units` would, without reading the text again."""

    def __init__(self, text: str, valid: bool, negative: bool, digits: int, places: int) -> None:
        self.text: Final = text
        self.valid: Final = valid
        self.negative: Final = negative
        self.digits: Final = digits
        self.places: Final = places

    def at(self, decimals: int) -> tuple[bool, int]:
        """(exact at the scale, integer of 10**-decimals units, truncated when not exact);
        (False, 0) when the text is not a decimal."""
        if not self.valid:
            return False, 0
        if self.places <= decimals:
            units = self.digits * pow10(decimals - self.places)
            return True, -units if self.negative else units
        units = self.digits // pow10(self.places - decimals)
        return False, -units if self.negative else units


def _ascii_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def read_decimal(text: str) -> Number:
    """Read a decimal string (optional '-', digits, optional '.digits') in one pass."""
    negative = text.startswith("-")
    body = text[1:] if negative else text
    point = body.find(".")
    if point < 0:
        whole = body
        fraction = ""
    else:
        whole = body[:point]
        fraction = body[point + 1 :]
    valid = (
        (whole != "" or fraction != "")
        and (whole == "" or _ascii_digits(whole))
        and (fraction == "" or _ascii_digits(fraction))
        and not body.endswith(".")
    )
    if not valid:
        return Number(text, False, negative, 0, 0)
    fraction = fraction.rstrip("0")
    digits = int(whole + fraction) if whole != "" or fraction != "" else 0
    return Number(text, True, negative, digits, len(fraction))


def is_decimal(text: str) -> bool:
    """Whether text is a plain decimal number: optional '-', digits, optional '.digits'."""
    return read_decimal(text).valid


def decimals_of(text: str) -> int:
    """The number of digits after the point of a decimal string, trailing zeros excluded."""
    point = text.find(".")
    if point < 0:
        return 0
    fraction = text[point + 1 :].rstrip("0")
    return len(fraction)


def parse_units(text: str, decimals: int) -> Parsed:
    """Read a decimal string as an integer of 10**-decimals units, exactly (`ok` False if not a decimal)."""
    ok, units = read_decimal(text).at(decimals)
    return Parsed(ok, units)


def format_units(units: int, decimals: int) -> str:
    """Write an integer of 10**-decimals units as a decimal string with exactly `decimals` places."""
    sign = "-" if units < 0 else ""
    magnitude = -units if units < 0 else units
    if decimals == 0:
        return sign + str(magnitude)
    scale = pow10(decimals)
    fraction = str(magnitude % scale)
    return sign + str(magnitude // scale) + "." + "0" * (decimals - len(fraction)) + fraction


def format_money(units: int) -> str:
    """Write money units (1e-8) as a decimal string without trailing zeros."""
    sign = "-" if units < 0 else ""
    magnitude = -units if units < 0 else units
    whole = magnitude // MONEY_SCALE
    fraction = magnitude % MONEY_SCALE
    if fraction == 0:
        return sign + str(whole) if whole != 0 else "0"
    places = MONEY_DECIMALS
    while fraction % 10 == 0:
        fraction //= 10
        places -= 1
    digits = str(fraction)
    return sign + str(whole) + "." + "0" * (places - len(digits)) + digits


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
