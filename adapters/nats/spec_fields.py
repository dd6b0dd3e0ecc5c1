"""Reading stream and consumer configurations field by field, in one unit, for the drift check.

nats-py hands durations over as float seconds (the server's JSON holds integer nanoseconds) and
leaves enums as their strings; an unset field comes back as None or is filled by the server. Every
value titan compares is first normalised here: durations to integer nanoseconds (no float noise),
enums to their value, unset subjects, filters and lists to empty ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Final

Value = str | int | tuple[str, ...] | tuple[int, ...]
"""A normalised field value: text, an integer (durations in nanoseconds), or a tuple of them."""

NANOSECONDS_PER_S: Final = 1_000_000_000
DURATIONS: Final = frozenset({"max_age", "duplicate_window", "ack_wait"})
DURATION_LISTS: Final = frozenset({"backoff"})
TEXT_LISTS: Final = frozenset({"subjects"})
EMPTY_MEANS: Final = {"filter_subject": "(whole stream)", "deliver_subject": "(pull)"}


def nanoseconds(seconds: float) -> int:
    """Seconds (nats-py's unit) as integer nanoseconds (the server's)."""
    return round(seconds * NANOSECONDS_PER_S)


def normalise(field: str, raw: object) -> Value:
    """One field of a config as nats-py gives it, in the form titan compares."""
    if field in DURATIONS:
        return nanoseconds(float(raw)) if isinstance(raw, (int, float)) else 0
    if field in DURATION_LISTS:
        return tuple(nanoseconds(float(item)) for item in _items(raw) if isinstance(item, (int, float)))
    if field in TEXT_LISTS:
        return tuple(sorted(str(_plain(item)) for item in _items(raw)))
    if field == "filter_subject" and raw in (None, "", ">"):
        return ""  # every spelling of "the whole stream"
    plain = _plain(raw)
    if plain is None:
        return ""
    if isinstance(plain, bool):
        return int(plain)
    if isinstance(plain, int):
        return plain
    return str(plain)


def _items(raw: object) -> Iterable[object]:
    if raw is None:
        return ()
    if isinstance(raw, (list, tuple)):
        return list(raw)
    return (raw,)


def _plain(raw: object) -> object:
    return raw.value if isinstance(raw, Enum) else raw


def live_fields(config: object, names: Iterable[str]) -> dict[str, Value]:
    """The named fields of a live nats-py config object, normalised."""
    return {name: normalise(name, getattr(config, name, None)) for name in names}


def show(field: str, value: Value) -> str:
    """A normalised value as `titan nats verify` prints it: durations in seconds."""
    if field in DURATIONS and isinstance(value, int):
        return _seconds_text(value)
    if isinstance(value, tuple):
        items = [
            _seconds_text(v) if field in DURATION_LISTS and isinstance(v, int) else str(v) for v in value
        ]
        return "[" + ", ".join(items) + "]"
    if value == "" and field in EMPTY_MEANS:
        return EMPTY_MEANS[field]
    if value == -1:
        return "-1 (unlimited)"
    return str(value)


def _seconds_text(value_ns: int) -> str:
    if value_ns % NANOSECONDS_PER_S == 0:
        return f"{value_ns // NANOSECONDS_PER_S}s"
    return f"{value_ns / NANOSECONDS_PER_S:g}s"


def as_json(field: str, value: Value | None) -> object:
    """A normalised value for `--json`: durations in seconds, lists as lists."""
    if value is None:
        return None
    if field in DURATIONS and isinstance(value, int):
        return value / NANOSECONDS_PER_S
    if isinstance(value, tuple):
        return [v / NANOSECONDS_PER_S if field in DURATION_LISTS and isinstance(v, int) else v for v in value]
    return value


@dataclass(frozen=True)
class Drift:
    """One way the server differs from titan's spec: a field's value, or a missing stream or consumer."""

    stream: str
    consumer: str | None
    field: str | None
    """None: the stream or consumer does not exist on the server."""
    declared: Value | None = None
    live: Value | None = None

    @property
    def where(self) -> str:
        """`TITAN_EVT`, or `TITAN_CMD/titan-intake` for a consumer."""
        return self.stream if self.consumer is None else f"{self.stream}/{self.consumer}"

    def __str__(self) -> str:
        if self.field is None:
            kind = "stream" if self.consumer is None else "consumer"
            return f"{self.where}: missing (the {kind} is declared but not on the server)"
        assert self.declared is not None and self.live is not None
        return (
            f"{self.where}.{self.field}: declared {show(self.field, self.declared)}, "
            f"live {show(self.field, self.live)}"
        )

    def to_json(self) -> dict[str, object]:
        """The drift as a JSON object (`titan nats verify --json`)."""
        field = self.field or ""
        return {
            "stream": self.stream,
            "consumer": self.consumer,
            "field": self.field,
            "missing": self.field is None,
            "declared": as_json(field, self.declared),
            "live": as_json(field, self.live),
            "text": str(self),
        }


def differences(
    stream: str, consumer: str | None, declared: Mapping[str, Value], live: Mapping[str, Value]
) -> list[Drift]:
    """Every declared field whose live value differs, in the order they are declared."""
    return [
        Drift(stream, consumer, name, value, live[name])
        for name, value in declared.items()
        if live.get(name) != value
    ]
