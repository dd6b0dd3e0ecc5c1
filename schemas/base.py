"""Shared wire types: strict, frozen pydantic models; decimals as strings; ids safe for stream names."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

Identifier = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")]
"""Ids used in stream names: letters, digits and . _ : @ -, at most 128 characters."""

CommandId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,119}$")]
"""A command id: like Identifier but at most 120 characters, so `ord-<command_id>` stays an Identifier."""

Decimal = Annotated[str, Field(pattern=r"^-?[0-9]+(\.[0-9]+)?$", examples=["-12.5"])]
"""A signed decimal number written as a string (exact; never a binary float)."""

PositiveDecimal = Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+)?$", examples=["65000.1"])]
"""A non-negative decimal number written as a string."""

Nanoseconds = Annotated[int, Field(ge=0, le=2**63 - 1)]
"""UTC time in integer nanoseconds since the Unix epoch."""

Text = Annotated[str, Field(max_length=1000)]


class WireModel(BaseModel):
    """A strict wire contract: unknown fields are refused, values are not coerced."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
