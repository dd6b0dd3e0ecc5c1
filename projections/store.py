"""The read-model store port: where projections keep their rows and their tracking positions.

Adapters: `adapters.sqlite.read_models` (tables in the embedded ledger file) and
`adapters.postgres.read_models` (tables in the PostgreSQL database). Both are proven to behave
the same by one contract test (tests/integration/projections/test_store_contract.py).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from .model import Change, Projection, Table

TRACKING_TABLE: Final = "rm_tracking"
STAGING_SUFFIX: Final = "__rebuild"


class StoreError(Exception):
    """The read-model store cannot be opened, read or written."""


class SchemaMismatch(StoreError):
    """A read-model table in the database differs from the table its projection declares."""


class TrackingMoved(StoreError):
    """A projection's tracked position is not the one a batch starts from: another runner or a
    rebuild moved it. Nothing of the batch was applied."""

    def __init__(self, projection: str, expected: int, found: int | None) -> None:
        super().__init__(
            f"projection {projection}: expected tracked position {expected}, found {found}"
        )
        self.projection = projection
        self.expected = expected
        self.found = found


@dataclass(frozen=True)
class Batch:
    """The changes one projection makes for the records after `after` up to `to` (inclusive)."""

    projection: Projection
    changes: Sequence[Change]
    after: int
    to: int


@dataclass(frozen=True)
class Snapshot:
    """A consistent look at one read model: tracked position, row count, digest."""

    projection: str
    position: int
    rows: int
    digest: str


def check_latest(table: Table, order_by: str, limit: int) -> None:
    """Refuse an ordering column that is not an integer column of the table, or a bad limit."""
    column = table.by_name.get(order_by)
    if column is None or column.type not in ("integer", "big_integer"):
        raise ValueError(f"table {table.name}: order by an integer column, not {order_by!r}")
    if not 1 <= limit <= 100_000:
        raise ValueError(f"limit must be 1..100000, not {limit}")


def staging_name(table: Table) -> str:
    """The name of a table's staging copy, which a rebuild fills before the swap."""
    return table.name + STAGING_SUFFIX


class ReadModelStore(ABC):
    """Read-model tables plus `rm_tracking(projection, position)`, written together."""

    poll_interval_s: float = 0.2
    """How long a follower waits for a new record before it looks at the ledger again."""

    @abstractmethod
    async def prepare(self, projections: Sequence[Projection]) -> None:
        """Make sure the projections' tables and tracking rows exist and match their declaration."""

    @abstractmethod
    async def tracked(self, projections: Sequence[Projection]) -> dict[str, int]:
        """Return each projection's tracked position (0: nothing applied)."""

    @abstractmethod
    async def apply(self, batches: Sequence[Batch]) -> None:
        """Apply every batch's changes and move its tracked position, all in one transaction;
        raise TrackingMoved (and apply nothing) if a batch does not start where its projection is."""

    @abstractmethod
    async def begin_staging(self, projection: Projection) -> None:
        """Create the projection's empty staging tables (dropping any left by an earlier try)."""

    @abstractmethod
    async def apply_staging(self, projection: Projection, changes: Sequence[Change]) -> None:
        """Apply changes to the projection's staging tables."""

    @abstractmethod
    async def swap(self, projection: Projection, position: int) -> None:
        """Replace the projection's rows with its staging rows and its tracked position with
        `position`, in one transaction (readers see the old model or the new, never a mix);
        then drop the staging tables."""

    @abstractmethod
    async def drop_staging(self, projection: Projection) -> None:
        """Drop the projection's staging tables, if any."""

    @abstractmethod
    async def snapshot(self, projection: Projection, *, staging: bool = False) -> Snapshot:
        """Return the tracked position, row count and digest of the model (or of its staging
        copy, whose position is reported as -1), read in one consistent snapshot."""

    @abstractmethod
    async def rows(
        self, table: Table, where: Mapping[str, Any] | None = None, *, staging: bool = False
    ) -> list[dict[str, Any]]:
        """Return a table's rows (matching `where`, column = value) as canonical values, in key
        order; from its staging copy with `staging`."""

    @abstractmethod
    async def latest(
        self, table: Table, order_by: str, limit: int, where: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Return at most `limit` rows matching `where`, highest `order_by` first (an integer
        column: a position or a time), as canonical values."""

    @abstractmethod
    async def wait_for_ledger(self, timeout_s: float) -> bool:
        """Wait until the ledger may have new records (a notification) or the timeout; return
        True when notified."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections."""
