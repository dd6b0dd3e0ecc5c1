"""Wiring of the group-commit writer: the lease store each kind of ledger gives it."""

from __future__ import annotations

import os

from adapters.sqlite.lease import LocalLeaseStore
from adapters.sqlite.ledger import MEMORY, SQLiteLedger
from commands.lease import LeaseStore
from commands.ports import Ledger


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
