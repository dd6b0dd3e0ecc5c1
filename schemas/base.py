"""Shared wire types: strict, frozen pydantic models; decimals as strings; ids safe for stream names.

A `Bound` is a limit that new input must meet (docs/schemas.md, "Bounds"): it is stated in the JSON
Schema and checked whenever a model is validated, except when a command recorded by an earlier
titan is re-validated (`recorded_context()`), so that replay re-decides it exactly as it was
decided. The formats that were always enforced (patterns, id lengths, reason lengths) hold for both.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

RECORDED: Final = "recorded"
"""The validation-context key that marks a re-validation of a recorded command (bounds off)."""

INT64_MAX: Final = 2**63 - 1
INT64_MIN: Final = -(2**63)
INT_DIGITS: Final = 10
"""Digits before the point of a decimal: below 10^10, so that at the finest scale the core reads
(8 decimals) the value is below 10^18 units and fits a signed 64-bit integer (2^63 ≈ 9.22e18)."""
FRACTION_DIGITS: Final = 18
"""Digits after the point: the finest any venue writes (18, Ethereum's wei). The core reads at most
8 of them and refuses a value finer than its instrument's tick or step, as it always has."""
MONEY_DECIMALS: Final = 8
MAX_TEXT_CHARS: Final = 1000
MAX_DURATION_MS: Final = 366 * 24 * 3600 * 1000
"""A duration in milliseconds: at most 366 days (a window, a grace period, a latency)."""
MAX_COUNT: Final = 1_000_000
"""A policy count, weight or bps threshold: at most one million."""

_CONTROL: Final = re.compile("[\x00-\x1f\x7f-\x9f]")
_NO_CONTROL_PATTERN: Final = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"


def recorded_context() -> dict[str, Any]:
    """The validation context for re-validating a command as recorded: the bounds are not applied."""
    return {RECORDED: True}


def is_recorded(context: Any) -> bool:
    """Whether a validation context marks a recorded command."""
    return isinstance(context, dict) and context.get(RECORDED) is True


def refuse(problem: str) -> PydanticCustomError:
    """The validation error of a value outside its bound (the message never repeats the value)."""
    return PydanticCustomError("wire_bound", "{bound}", {"bound": problem})


@dataclass(frozen=True, eq=False)
class Bound:
    """A limit on new input: `check` returns what is wrong (never the value itself) or None;
    `json_schema` states the same limit in the model's JSON Schema."""

    check: Callable[[Any], str | None]
    json_schema: Mapping[str, Any] = field(default_factory=dict)

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.with_info_after_validator_function(self._validate, handler(source))

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        json_schema = dict(handler(schema))
        json_schema.update(self.json_schema)
        return json_schema

    def _validate(self, value: Any, info: core_schema.ValidationInfo) -> Any:
        if not is_recorded(info.context):
            problem = self.check(value)
            if problem is not None:
                raise refuse(problem)
        return value


def decimal_problem(text: str, int_digits: int = INT_DIGITS, fraction_digits: int = FRACTION_DIGITS) -> str | None:
    """What makes a decimal string longer than its bound, or None."""
    whole, _, fraction = text.removeprefix("-").partition(".")
    if len(whole) > int_digits:
        return f"at most {int_digits} digits before the point (got {len(whole)})"
    if len(fraction) > fraction_digits:
        return f"at most {fraction_digits} digits after the point (got {len(fraction)})"
    return None


def _decimal_bound(signed: bool) -> Bound:
    sign = "-?" if signed else ""
    pattern = f"^{sign}[0-9]{{1,{INT_DIGITS}}}(\\.[0-9]{{1,{FRACTION_DIGITS}}})?$"
    return Bound(decimal_problem, {"pattern": pattern})


def _total_problem(text: str) -> str | None:
    problem = decimal_problem(text, INT_DIGITS + 1, MONEY_DECIMALS)
    if problem is not None:
        return problem
    whole, _, fraction = text.removeprefix("-").partition(".")
    if int(whole + fraction.ljust(MONEY_DECIMALS, "0")) > INT64_MAX:
        return "at most 92233720368.54775807 in magnitude (a signed 64-bit integer of 1e-8 units)"
    return None


def text_problem(text: str) -> str | None:
    """What control character (C0, DEL, C1) a text holds, or None."""
    found = _CONTROL.search(text)
    if found is None:
        return None
    return f"no control characters (U+0000-U+001F, U+007F-U+009F); found U+{ord(found.group()):04X} at character {found.start()}"


def at_most(limit: int, meaning: str = "") -> Bound:
    """An integer no greater than `limit` (its lower bound is the field's own `ge`)."""

    def check(value: int) -> str | None:
        return f"at most {limit}{meaning}" if value > limit else None

    return Bound(check, {"maximum": limit})


def items_at_most(limit: int) -> Bound:
    """A list of at most `limit` items."""

    def check(value: list[Any]) -> str | None:
        return f"at most {limit} items (got {len(value)})" if len(value) > limit else None

    return Bound(check, {"maxItems": limit})


def _int64_problem(value: int) -> str | None:
    return None if INT64_MIN <= value <= INT64_MAX else "within -2^63 .. 2^63-1 (a signed 64-bit integer)"


Identifier = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")]
"""Ids used in stream names: letters, digits and . _ : @ -, at most 128 characters."""

CommandId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,119}$")]
"""A command id: like Identifier but at most 120 characters, so `ord-<command_id>` stays an Identifier."""

Decimal = Annotated[str, Field(pattern=r"^-?[0-9]+(\.[0-9]+)?$", examples=["-12.5"]), _decimal_bound(True)]
"""A signed decimal number written as a string (exact; never a binary float); at most 10 digits
before the point and 18 after."""

PositiveDecimal = Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+)?$", examples=["65000.1"]), _decimal_bound(False)]
"""A non-negative decimal number written as a string; at most 10 digits before the point and 18 after."""

Total = Annotated[
    str,
    Field(
        pattern=r"^-?[0-9]+(\.[0-9]+)?$",
        description="a running total: at most 8 decimals and 92233720368.54775807 in magnitude",
    ),
    Bound(_total_problem, {"pattern": f"^-?[0-9]{{1,{INT_DIGITS + 1}}}(\\.[0-9]{{1,{MONEY_DECIMALS}}})?$"}),
]
"""A total the core accumulates over the account's history (a position, PnL or fees to date),
written by the core at money scale; it fits a signed 64-bit integer of 1e-8 units."""

Nanoseconds = Annotated[int, Field(ge=0, le=INT64_MAX)]
"""UTC time in integer nanoseconds since the Unix epoch."""

Int64 = Annotated[int, Bound(_int64_problem, {"minimum": INT64_MIN, "maximum": INT64_MAX})]
"""A signed integer that fits the stores (SQLite INTEGER, PostgreSQL BIGINT)."""

Milliseconds = Annotated[int, Field(ge=0), at_most(MAX_DURATION_MS, " (366 days)")]
"""A duration in integer milliseconds, at most 366 days."""

Count = Annotated[int, Field(ge=0), at_most(MAX_COUNT)]
"""A non-negative count, weight or threshold, at most one million."""

PlainText = Bound(text_problem, {"pattern": _NO_CONTROL_PATTERN})
"""Free text holds no control characters, tab and newline included (pydantic refuses lone surrogates in
every string)."""

Text = Annotated[str, Field(max_length=MAX_TEXT_CHARS), PlainText]
"""Free text: at most 1000 characters, no control characters."""


class WireModel(BaseModel):
    """A strict wire contract: unknown fields are refused, values are not coerced."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
