"""Points in a ledger's history: a position, or a time (`--until`, `--from`).

A plain integer below 10^12 is a position (no ledger has that many records); a plain integer
at or above it is a time in UTC nanoseconds (10^12 ns is 16 minutes after the epoch); anything
else must be an ISO-8601 time (`2026-01-01T00:00:05Z`, `2026-01-01T01:00:05+01:00`, up to 9
fractional digits; without an offset it is read as UTC). `pos:N` and `ns:N` force either reading.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

POSITION: Final = "position"
TIMESTAMP: Final = "timestamp"
TIMESTAMP_THRESHOLD: Final = 10**12
NS_PER_SECOND: Final = 1_000_000_000

_ISO: Final = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})(?:[T ](?P<time>\d{2}:\d{2}(?::\d{2})?)(?:[.,](?P<frac>\d{1,9}))?)?"
    r"(?P<tz>Z|z|[+-]\d{2}:?\d{2})?$"
)


class BadPoint(ValueError):
    """A --until/--from value that is neither a position nor a time."""


@dataclass(frozen=True)
class Point:
    """A position (records up to and including it) or a time (records at or before it)."""

    kind: str
    value: int
    text: str

    def describe(self) -> str:
        """For messages: `position 42` or `2026-01-01T00:00:05Z (1767225605000000000 ns)`."""
        if self.kind == POSITION:
            return f"position {self.value}"
        return f"{format_ns(self.value)} ({self.value} ns)"


def parse_point(text: str) -> Point:
    """Read a --until/--from value; raise BadPoint naming what is accepted."""
    raw = text.strip()
    forced: str | None = None
    for prefix in ("pos:", "ns:"):
        if raw.lower().startswith(prefix):
            forced, raw = prefix[:-1], raw[len(prefix) :].strip()
            break
    if re.fullmatch(r"-?\d+", raw):
        number = int(raw)
        kind = {"pos": POSITION, "ns": TIMESTAMP}.get(forced or "", "")
        if not kind:
            kind = TIMESTAMP if number >= TIMESTAMP_THRESHOLD else POSITION
        if kind == POSITION and number < 1:
            raise BadPoint(f"{text!r}: positions start at 1")
        return Point(kind, number, text)
    if forced is not None:
        raise BadPoint(f"{text!r}: after {forced}: expected an integer")
    return Point(TIMESTAMP, parse_iso_ns(raw, text), text)


def parse_iso_ns(raw: str, original: str | None = None) -> int:
    """An ISO-8601 time as integer UTC nanoseconds (exact: fractions to the nanosecond)."""
    match = _ISO.match(raw)
    if match is None:
        raise BadPoint(
            f"{original or raw!r} is not a position or a time: use a position (e.g. 1200), UTC "
            "nanoseconds (e.g. 1767225605000000000) or ISO-8601 (e.g. 2026-01-01T00:00:05Z)"
        )
    time_part = match["time"] or "00:00:00"
    if time_part.count(":") == 1:
        time_part += ":00"
    tz = match["tz"] or "+00:00"
    if tz in ("Z", "z"):
        tz = "+00:00"
    elif ":" not in tz:
        tz = tz[:3] + ":" + tz[3:]
    try:
        moment = datetime.fromisoformat(f"{match['date']}T{time_part}{tz}")
    except ValueError as error:
        raise BadPoint(f"{original or raw!r}: {error}") from error
    seconds = int((moment - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds())
    fraction = (match["frac"] or "").ljust(9, "0")
    return seconds * NS_PER_SECOND + int(fraction or "0")


def format_ns(ts_ns: int) -> str:
    """UTC nanoseconds as ISO-8601 with a `Z`, keeping every significant fractional digit."""
    seconds, fraction = divmod(ts_ns, NS_PER_SECOND)
    moment = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if fraction:
        moment += "." + f"{fraction:09d}".rstrip("0")
    return moment + "Z"
