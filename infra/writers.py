"""Wiring of the group-commit writer: the lease store each kind of ledger gives it, and the
snapshot store beside each kind of ledger."""

from __future__ import annotations

import os
from typing import Any, NoReturn

from adapters.leased_ledger import LeasedLedger
from adapters.sqlite.lease import LocalLeaseStore
from adapters.sqlite.ledger import MEMORY, SQLiteLedger
from adapters.sqlite.snapshots import SQLiteSnapshotStore
from commands.lease import LeaseStore
from commands.ports import Ledger, LedgerError
from commands.snapshots import (
    Snapshot,
    SnapshotInfo,
    Snapshots,
    SnapshotStore,
    SnapshotStoreError,
    log,
)

from .settings import Settings


def lease_store(ledger: Ledger) -> LeaseStore:
    """The ledger's own leases (PostgreSQL), or local ones over its sync API (SQLite).

    An embedded ledger file gets lock files next to it, so that a writer in another process is
    refused too.
    """
    if isinstance(ledger, SQLiteLedger):
        # The real path: a symlink to the ledger must meet the same locks (a hard link is another
        # name for the same file, and is not followed: see docs/decisions.md).
        lock_path = None if ledger.path == MEMORY else os.path.realpath(ledger.path)
        return LocalLeaseStore(ledger, lock_path)
    from adapters.postgres.ledger import PostgresLedger

    if isinstance(ledger, PostgresLedger):
        return ledger
    return LocalLeaseStore(ledger)


def snapshot_store(ledger: Ledger) -> SnapshotStore | None:
    """The snapshots beside a ledger: in its file (embedded) or its database (PostgreSQL); None
    for any other ledger. Read-only for a ledger opened read-only."""
    if isinstance(ledger, LeasedLedger):
        ledger = ledger.inner
    if isinstance(ledger, SQLiteLedger):
        return SQLiteSnapshotStore.for_ledger(ledger)
    from adapters.postgres.ledger import PostgresLedger

    if isinstance(ledger, PostgresLedger):
        from adapters.postgres.snapshots import PostgresSnapshotStore

        return PostgresSnapshotStore(ledger.url, connect_timeout_s=ledger.connect_timeout_s)
    return None


def ledger_snapshots(ledger: Ledger) -> Snapshots | None:
    """A ledger's snapshots with the ledger they are checked against (None when it has none, or
    they cannot be opened: a reader then folds from zero, as without snapshots; logged)."""
    try:
        store = snapshot_store(ledger)
    except LedgerError as error:
        log.warning("the ledger's snapshots cannot be opened (folding from zero): %s", error)
        return None
    return Snapshots(store, ledger) if store is not None else None


def snapshots_to_prove(ledger: Ledger) -> SnapshotStore | None:
    """The store `titan replay verify` proves (None when the ledger has none). One that cannot be
    opened is no reason to prove nothing and pass: it comes back as a store that cannot be read,
    which the gate reports as unavailable, failing (docs/replay.md)."""
    try:
        return snapshot_store(ledger)
    except LedgerError as error:
        return UnreadableSnapshotStore(str(error))


class UnreadableSnapshotStore(SnapshotStore):
    """A snapshot store that could not be opened: every call raises, naming why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def _refuse(self) -> NoReturn:
        raise SnapshotStoreError(f"the ledger's snapshots cannot be opened: {self.reason}")

    def save(self, snapshot: Snapshot) -> bool:
        """Refuse: the store could not be opened."""
        self._refuse()

    def nearest(
        self, stream_id: str, *, max_version: int | None = None, max_position: int | None = None
    ) -> Snapshot | None:
        """Refuse: the store could not be opened."""
        self._refuse()

    def get(self, stream_id: str, version: int) -> Snapshot | None:
        """Refuse: the store could not be opened."""
        self._refuse()

    def listing(self, stream_id: str | None = None) -> list[SnapshotInfo]:
        """Refuse: the store could not be opened."""
        self._refuse()

    def count(self) -> int:
        """Refuse: the store could not be opened."""
        self._refuse()

    def prune(self, stream_id: str, keep: int, at_most_version: int) -> int:
        """Refuse: the store could not be opened."""
        self._refuse()

    def close(self) -> None:
        """Nothing to release."""


def snapshot_options(ledger: Ledger, settings: Settings) -> dict[str, Any]:
    """The group-commit writer's snapshot options (`AccountWriter(..., **options)`) for a ledger:
    none when `snapshot_every` is 0. The caller closes `options["snapshots"]` when done."""
    if settings.snapshot_every == 0:
        return {}
    snapshots = ledger_snapshots(ledger)
    if snapshots is None:
        return {}
    return {"snapshots": snapshots, "snapshot_every": settings.snapshot_every}
