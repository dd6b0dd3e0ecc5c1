"""Read-model values: what each column type stores, its canonical (store-independent) form, and
the encodings that keep every value a ledger can hold exact in both stores.

A ledger written by any titan version may hold values no ordinary column type fits: a decimal of
thousands of digits (a refused order keeps the quantity it was sent), money totals beyond 64 bits
(a fill with a fee of 10^11 USDT is 10^19 money units), text holding U+0000. So:

- `decimal` columns take any exact decimal in plain notation, whatever its length;
- `big_integer` columns take an exact integer of any size (NUMERIC in PostgreSQL, decimal digits
  as TEXT in SQLite); their canonical value is a JSON integer, however long;
- text, and strings inside JSON values, are stored with U+0000 replaced by U+FFFD (PostgreSQL's
  text and jsonb cannot hold U+0000; both stores do the same, so their digests agree). The
  ledger keeps the original: the read model is derived data.

Conversions between integers and text go through `Decimal`, which has no digit limit (Python's
`int(str)` refuses more than 4,300 digits).
"""

from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal

import orjson

ColumnType = Literal["text", "integer", "big_integer", "boolean", "decimal", "json"]
"""Column types every store supports. `integer` is a 64-bit integer; `big_integer` an exact
integer of any size (NUMERIC in PostgreSQL, TEXT digits in SQLite); `decimal` an exact decimal
number (TEXT in SQLite, NUMERIC in PostgreSQL); `json` a JSON value (TEXT in SQLite, jsonb in
PostgreSQL)."""

COLUMN_TYPES: Final[tuple[ColumnType, ...]] = ("text", "integer", "big_integer", "boolean", "decimal", "json")

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1

NUL: Final = "\x00"
NUL_STAND_IN: Final = "\ufffd"
"""What a read model stores for U+0000 (PostgreSQL's text and jsonb cannot hold it)."""

MAX_DECIMAL_EXPONENT: Final = 131_072
"""The largest exponent a decimal given in scientific notation (or as a `Decimal`) may have:
PostgreSQL NUMERIC's own bound, far beyond any value a ledger holds, and a bound that keeps a
malformed value ("1e999999999") from expanding into gigabytes of digits. Plain notation is taken
at any length: it is already as long as it will ever be."""

_PLAIN_DECIMAL: Final = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?")
_PLAIN_INTEGER: Final = re.compile(r"-?[0-9]+")
_LONG_DIGITS: Final = re.compile(r"[0-9]{19}")


def fits_int64(value: int) -> bool:
    """Whether an integer fits a signed 64-bit column."""
    return INT64_MIN <= value <= INT64_MAX


def int_text(value: int) -> str:
    """The decimal digits of an integer of any size."""
    if -(10**18) < value < 10**18:
        return str(value)
    return format(Decimal(value), "f")


def parse_int(value: Any) -> int:
    """An exact integer from an int, a Decimal with no fraction, or a string of digits (any length)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        return int(value)
    if isinstance(value, str) and _PLAIN_INTEGER.fullmatch(value):
        return int(value) if len(value) < 19 else int(Decimal(value))
    raise ValueError(f"{value!r} is not an integer")


def decimal_text(value: Any) -> str:
    """The canonical text of a decimal: plain notation, scale kept, no sign on zero."""
    if isinstance(value, str) and _PLAIN_DECIMAL.fullmatch(value):
        if value[0] == "-" and value.strip("-0.") == "":
            return value[1:]  # negative zero
        return value  # already canonical: the common case, without a Decimal round trip
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a decimal number") from None
    if not number.is_finite() or abs(number.adjusted()) > MAX_DECIMAL_EXPONENT:
        raise ValueError(f"{value!r} is not a finite decimal number of a sane size")
    if number.is_zero():
        number = number.copy_abs()
    return format(number, "f")


def storable_text(value: str) -> str:
    """Text as a read model stores it: U+0000 replaced by U+FFFD."""
    return value.replace(NUL, NUL_STAND_IN) if NUL in value else value


def storable_json(value: Any) -> Any:
    """A JSON value as a read model stores it: U+0000 in any string (or key) replaced by U+FFFD."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, dict):
        return {storable_text(str(k)): storable_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [storable_json(v) for v in value]
    return value


def _fragments(value: Any) -> Any:
    """The value with every integer beyond 64 bits as a raw JSON fragment (orjson refuses them)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if fits_int64(value) else orjson.Fragment(int_text(value))
    if isinstance(value, dict):
        return {k: _fragments(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_fragments(v) for v in value]
    return value


def json_bytes(value: Any) -> bytes:
    """Canonical JSON (keys sorted, compact, UTF-8) of any JSON value, integers of any size included."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return orjson.dumps(_fragments(value), option=orjson.OPT_SORT_KEYS)


def json_text(value: Any) -> str:
    """Canonical JSON text of a JSON column's value."""
    return json_bytes(value).decode()


def storable_json_text(value: Any) -> str:
    """Canonical JSON text of a JSON value as a read model stores it (U+0000 as U+FFFD); the
    common case, no U+0000 anywhere, costs one encoding."""
    text = json_text(value)
    if "\\u0000" in text:  # orjson writes U+0000 as this escape (a false alarm only costs time)
        text = json_text(storable_json(value))
    return text


def json_loads(raw: str | bytes) -> Any:
    """Parse JSON, keeping integers of any size exact (orjson reads those beyond 64 bits as floats)."""
    value = orjson.loads(raw)
    text = raw.decode() if isinstance(raw, bytes) else raw
    if _LONG_DIGITS.search(text) and _has_float(value):
        return json.loads(text, parse_int=parse_int)
    return value


def _has_float(value: Any) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(_has_float(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_float(v) for v in value)
    return False


def canonical_value(type_: ColumnType, value: Any) -> Any:
    """A stored value as plain JSON, the same whichever store held it."""
    if value is None:
        return None
    if type_ == "decimal":
        return decimal_text(value)
    if type_ == "boolean":
        return bool(value)
    if type_ == "integer":
        return int(value)
    if type_ == "big_integer":
        return parse_int(value)
    if type_ == "json":
        return json_loads(value) if isinstance(value, (str, bytes)) else value
    return str(value)
