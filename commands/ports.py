"""Ports the command side depends on. Adapters implement them; bootstrap picks one."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

MAX_MATCHING_LIMIT: Final = 10_000
"""The most records one `read_matching` call returns."""
DEFAULT_SCAN_LIMIT: Final = 50_000
"""How many records one `read_matching` call looks at, unless told otherwise."""
_MAX_INT64: Final = 2**63 - 1
_SCAN_BATCH: Final = 1000


class LedgerError(Exception):
    """The ledger cannot be opened or read (not a titan ledger, corrupt, unreachable)."""


class LedgerUnreachable(LedgerError):
    """The ledger's server cannot be reached: refused, timed out, lost, or it refused the login."""


class VersionConflict(LedgerError):
    """A record's (stream_id, version) already exists: another writer got there first."""

    def __init__(self, stream_id: str, version: int) -> None:
        super().__init__(f"stream {stream_id!r} already has version {version}")
        self.stream_id = stream_id
        self.version = version


class NewRecord:
    """A record to append: its stream, version, type and envelope (without prev_hash/hash)."""

    __slots__ = ("envelope", "stream_id", "type", "version")

    def __init__(self, stream_id: str, version: int, type: str, envelope: dict[str, Any]) -> None:
        self.stream_id = stream_id
        self.version = version
        self.type = type
        self.envelope = envelope


class Record:
    """A sealed ledger record: position (notification id), stream, version, type and envelope."""

    __slots__ = ("envelope", "position", "state", "stream_id", "type", "version")

    def __init__(
        self,
        position: int,
        stream_id: str,
        version: int,
        type: str,
        envelope: dict[str, Any],
        state: bytes,
    ) -> None:
        self.position = position
        self.stream_id = stream_id
        self.version = version
        self.type = type
        self.envelope = envelope
        self.state = state


@dataclass(frozen=True)
class RecordFilter:
    """Which records a filtered read returns: every field given must match (an empty one matches
    all). `types` and `stream_ids` match any of their values; `from_ts_ns` and `to_ts_ns` are
    inclusive bounds on the envelope's `ts_ns`, `command_id` is the envelope's `command_id`.
    Text values must be valid Unicode without U+0000 (ValueError otherwise)."""

    types: tuple[str, ...] = ()
    stream_ids: tuple[str, ...] = ()
    command_id: str | None = None
    from_ts_ns: int | None = None
    to_ts_ns: int | None = None

    def __post_init__(self) -> None:
        for name in ("types", "stream_ids"):
            values: object = getattr(self, name)
            if not isinstance(values, tuple) or not all(isinstance(v, str) for v in values):
                raise ValueError(f"{name} must be a tuple of strings, not {values!r:.200}")
            for value in values:
                _check_text(name, value)
        if self.command_id is not None:
            if not isinstance(self.command_id, str):
                raise ValueError(
                    f"command_id must be a string or None, not {self.command_id!r:.200}"
                )
            _check_text("command_id", self.command_id)
        for name in ("from_ts_ns", "to_ts_ns"):
            bound: object = getattr(self, name)
            if bound is not None and not _is_int_in(bound, -_MAX_INT64 - 1, _MAX_INT64):
                raise ValueError(
                    f"{name} must be None or an integer of nanoseconds within signed 64 bits, "
                    f"not {bound!r:.200}"
                )
        if (
            self.from_ts_ns is not None
            and self.to_ts_ns is not None
            and self.from_ts_ns > self.to_ts_ns
        ):
            raise ValueError(
                f"from_ts_ns ({self.from_ts_ns}) must not be after to_ts_ns ({self.to_ts_ns})"
            )

    def matches(self, record: Record) -> bool:
        """Return whether a record passes every condition of this filter."""
        if self.types and record.type not in self.types:
            return False
        if self.stream_ids and record.stream_id not in self.stream_ids:
            return False
        envelope = record.envelope
        if self.command_id is not None and envelope.get("command_id") != self.command_id:
            return False
        if self.from_ts_ns is None and self.to_ts_ns is None:
            return True
        ts_ns = envelope.get("ts_ns")
        # A number, not a bool; the SQL adapters compare JSON numbers only, the same way.
        if not isinstance(ts_ns, (int, float)) or isinstance(ts_ns, bool):
            return False
        if self.from_ts_ns is not None and ts_ns < self.from_ts_ns:
            return False
        return self.to_ts_ns is None or ts_ns <= self.to_ts_ns


def _check_text(name: str, value: str) -> None:
    # Stored text is UTF-8 and PostgreSQL's cannot hold U+0000: such a value could match nothing,
    # and a database driver would refuse it with an error of its own.
    if "\x00" in value:
        raise ValueError(f"{name} must not contain U+0000, got {value!r:.200}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"{name} must be valid Unicode text, got {value!r:.200}") from error


def _is_int_in(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def check_matching_arguments(
    after_position: int, limit: int, where: object, scan_limit: int
) -> None:
    """Refuse `read_matching` arguments outside their ranges (ValueError naming the argument)."""
    if not _is_int_in(after_position, 0, _MAX_INT64):
        raise ValueError(
            f"after_position must be an integer from 0 to {_MAX_INT64}, not {after_position!r:.200}"
        )
    if not _is_int_in(limit, 1, MAX_MATCHING_LIMIT):
        raise ValueError(
            f"limit must be an integer from 1 to {MAX_MATCHING_LIMIT}, not {limit!r:.200}"
        )
    if not _is_int_in(scan_limit, limit, _MAX_INT64):
        raise ValueError(
            f"scan_limit must be an integer from limit ({limit}) to {_MAX_INT64}, "
            f"not {scan_limit!r:.200}"
        )
    if not isinstance(where, RecordFilter):
        raise TypeError(f"where must be a RecordFilter, not {type(where).__name__}")


class Ledger(ABC):
    """The append-only, hash-chained record store (SPEC §2)."""

    @abstractmethod
    def append(self, records: Sequence[NewRecord]) -> list[Record]:
        """Append records atomically, sealing each into the hash chain; raise VersionConflict."""

    @abstractmethod
    def read_stream(self, stream_id: str, after_version: int = 0) -> list[Record]:
        """Return one stream's records in version order."""

    @abstractmethod
    def read_all(self, after_position: int = 0, limit: int = 1000) -> list[Record]:
        """Return up to `limit` records after a position, in position order."""

    def iter_all(self, after_position: int = 0, batch: int = 1000) -> Iterator[Record]:
        """Stream every record after a position, in position order, in batches."""
        while True:
            records = self.read_all(after_position, batch)
            if not records:
                return
            yield from records
            after_position = records[-1].position

    def read_matching(
        self,
        after_position: int,
        limit: int,
        where: RecordFilter,
        *,
        scan_limit: int = DEFAULT_SCAN_LIMIT,
    ) -> tuple[list[Record], int]:
        """Return up to `limit` records after a position that match, in position order, looking at
        no more than `scan_limit` records; and the position the scan reached (the last position
        looked at: a caller resumes after it, so a page of a rare filter is bounded work and still
        complete)."""
        check_matching_arguments(after_position, limit, where, scan_limit)
        found: list[Record] = []
        reached = after_position
        left = scan_limit
        while left > 0:
            batch = self.read_all(reached, min(left, _SCAN_BATCH))
            if not batch:
                break
            for record in batch[:left]:
                reached = record.position
                left -= 1
                if where.matches(record):
                    found.append(record)
                    if len(found) == limit:
                        return found, reached
        return found, reached

    @abstractmethod
    def head(self) -> tuple[int, str, int]:
        """Return the anchored head: last position, its chain hash and the record count."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""
