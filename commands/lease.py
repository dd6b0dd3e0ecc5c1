"""Ports of the group-commit writer: a store that grants one writer lease per stream (SPEC §2).

A lease makes its holder the only writer of one aggregate stream (`account-<id>`). Appends made
through it are checked inside the append transaction: a holder that lost the lease cannot append.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from .ports import LedgerError, NewRecord, Record


class LeaseRefused(LedgerError):
    """Another writer holds the stream's lease: this one may not write it."""

    def __init__(self, stream_id: str, holder: str) -> None:
        super().__init__(
            f"{stream_id} already has a writer ({holder}); a second writer for it is refused. "
            "Stop that writer, or send the commands to it."
        )
        self.stream_id = stream_id
        self.holder = holder


class LeaseLost(LedgerError):
    """The writer no longer holds its lease (its session ended): it may not append."""

    def __init__(self, stream_id: str, detail: str) -> None:
        super().__init__(f"the writer of {stream_id} lost its lease: {detail}")
        self.stream_id = stream_id


class StreamLease(Protocol):
    """A held writer lease on one stream, and the ledger access that goes with it."""

    @property
    def holder(self) -> str:
        """Who holds the lease (printed when a second writer is refused)."""
        ...

    async def append(self, records: Sequence[NewRecord]) -> list[Record]:
        """Append records atomically under the lease; raise LeaseLost if it is gone."""
        ...

    async def read_stream(self, stream_id: str, after_version: int = 0) -> list[Record]:
        """Return one stream's records in version order."""
        ...

    async def first_records(self, stream_ids: Sequence[str]) -> dict[str, Record]:
        """Return the version-1 record of each of these streams that exists."""
        ...

    async def release(self) -> None:
        """Give the lease up (idempotent)."""
        ...


class LeaseStore(Protocol):
    """Grants writer leases on a ledger."""

    async def acquire_lease(self, stream_id: str, holder: str) -> StreamLease:
        """Take the stream's lease for `holder`; raise LeaseRefused when another writer has it."""
        ...
