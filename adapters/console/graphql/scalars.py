"""Scalars that keep titan's numbers exact on the wire.

GraphQL's `Int` is 32 bits and JSON numbers lose digits past 2^53 in a browser, so nanosecond
times and ledger positions travel as `BigInt` (decimal digits in a string); money, prices and
quantities as `Decimal` (the ledger's own decimal strings, never floats). Both are NewTypes that
the schema maps to their scalar definitions (`SCALARS`), so the type checker sees plain int / str.
"""

from __future__ import annotations

from typing import Any, Final, NewType

import strawberry
from strawberry.scalars import JSON
from strawberry.types.scalar import ScalarDefinition

__all__ = ["JSON", "SCALARS", "BigInt", "Decimal"]

MAX_DIGITS: Final = 20
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1

BigInt = NewType("BigInt", int)
Decimal = NewType("Decimal", str)


def parse_big_int(value: Any) -> int:
    """An argument given as a BigInt: decimal digits (or a JSON integer)."""
    if isinstance(value, bool):
        raise TypeError("BigInt: give an integer as decimal digits, not a boolean")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and 0 < len(value) <= MAX_DIGITS and value.lstrip("-").isdigit() and value.isascii():
        number = int(value)
    else:
        raise ValueError("BigInt: give an integer as decimal digits, e.g. \"1767225600000000000\"")
    if not INT64_MIN <= number <= INT64_MAX:
        raise ValueError(f"BigInt: {value} is outside the 64-bit range an argument may take ({INT64_MIN} to {INT64_MAX})")
    return number


SCALARS: Final[dict[object, ScalarDefinition]] = {
    BigInt: strawberry.scalar(
        name="BigInt",
        description="An integer of any size (nanosecond times, ledger positions), as decimal digits in a string.",
        serialize=lambda value: str(int(value)),
        parse_value=parse_big_int,
    ),
    Decimal: strawberry.scalar(
        name="Decimal",
        description="An exact decimal number as the ledger records it (a string, never a float).",
        serialize=str,
        parse_value=str,
    ),
}
