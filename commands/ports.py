"""Ports the command side depends on. Adapters implement them; bootstrap picks one."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any


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

    @abstractmethod
    def head(self) -> tuple[int, str, int]:
        """Return the anchored head: last position, its chain hash and the record count."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""
