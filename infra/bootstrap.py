"""The composition root: the only module that names concrete adapters."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from adapters.sqlite.ledger import SQLiteLedger, empty_file_message
from commands.handlers import HANDLERS, Bus, Context
from commands.lease import LeaseRefused
from commands.ports import Ledger, LedgerError

from .core import load_core
from .settings import Settings


class UnsupportedLedgerURL(LedgerError):
    """A ledger URL this build cannot open."""


ACCEPTED_URLS = (
    "sqlite:///relative/path, sqlite:////absolute/path, sqlite:///:memory: "
    "or postgresql://user@host:port/database"
)
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def sqlite_path(url: str) -> str:
    """The filesystem path (or :memory:) of a sqlite:/// URL; raise UnsupportedLedgerURL."""
    if not url.startswith("sqlite:///") or url == "sqlite:///":
        raise UnsupportedLedgerURL(f"ledger URL {url!r} is not accepted; use {ACCEPTED_URLS}")
    return url[len("sqlite:///") :]


def open_ledger(url: str, *, create: bool = True) -> Ledger:
    """Open the ledger a URL names; a missing embedded file is created when `create` is true.

    Without `create` (every read-only command) the ledger must exist, and an embedded file is
    opened read-only: nothing is created, converted or written. An empty file is never a ledger
    (it is what a truncated one looks like), with or without `create`. A new file is readable by
    its owner only, and so is a directory made for it. A postgresql:// URL names an existing
    database: with `create`, its pending migrations are applied first (`titan db upgrade`); an
    unreachable server raises LedgerUnreachable.
    """
    if url.startswith(POSTGRES_SCHEMES):
        from adapters.postgres.ledger import PostgresLedger
        from adapters.postgres.migrations import upgrade

        if create:
            upgrade(url)
        return PostgresLedger(url)
    path = sqlite_path(url)
    if path == ":memory:":
        return SQLiteLedger(path)
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise LedgerError(empty_file_message(path))
    if not create:
        if not os.path.exists(path):
            raise LedgerError(f"no ledger at {path!r} (run `titan init` or pass --ledger)")
        return SQLiteLedger(path, read_only=True)
    return SQLiteLedger(path)


def bootstrap(settings: Settings | None = None, *, ledger: Ledger | None = None, core: Any = None) -> Bus:
    """Wire the command bus: ledger, core and handlers."""
    settings = settings or Settings()
    ledger = ledger or open_ledger(settings.ledger_url)
    core = core or load_core(settings.core)
    return Bus(Context(ledger, core), HANDLERS)


@contextmanager
def account_writer(
    settings: Settings, ledger: Ledger, purpose: str, account_ids: Iterable[str], *, wait_s: float = 0.0
) -> Iterator[Bus]:
    """A bus that writes only under the writer leases of these accounts (SPEC §2: one writer per
    account, whatever the entry point). The leases are all taken before anything is decided, so a
    second writer is refused (LeaseRefused, naming the holder) having written nothing; they are
    released on the way out, and by the kernel or the database if the process dies. With
    `wait_s`, a held lease is asked for again until that many seconds have passed."""
    from adapters.leased_ledger import LeasedLedger, holder_name
    from commands.envelope import account_stream

    from .writers import lease_store

    leased = LeasedLedger(ledger, lease_store(ledger), holder_name(purpose))
    streams = [account_stream(account_id) for account_id in account_ids]
    deadline = time.monotonic() + wait_s
    try:
        while True:
            try:
                leased.acquire(streams)
                break
            except LeaseRefused:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)
        yield bootstrap(settings, ledger=leased)
    finally:
        leased.release()
