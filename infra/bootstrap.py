"""The composition root: the only module that names concrete adapters."""

from __future__ import annotations

import os
from typing import Any

from adapters.sqlite_ledger import SQLiteLedger
from commands.handlers import HANDLERS, Bus, Context
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

    A postgresql:// URL names an existing database: with `create`, its pending migrations are
    applied first (`titan db upgrade`); an unreachable server raises LedgerUnreachable.
    """
    if url.startswith(POSTGRES_SCHEMES):
        from adapters.postgres_ledger import PostgresLedger

        from .pg_migrations import upgrade

        if create:
            upgrade(url)
        return PostgresLedger(url)
    path = sqlite_path(url)
    if path != ":memory:":
        if not create and not os.path.exists(path):
            raise LedgerError(f"no ledger at {path!r} (run `titan init` or pass --ledger)")
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
    return SQLiteLedger(path)


def bootstrap(settings: Settings | None = None, *, ledger: Ledger | None = None, core: Any = None) -> Bus:
    """Wire the command bus: ledger, core and handlers."""
    settings = settings or Settings()
    ledger = ledger or open_ledger(settings.ledger_url)
    core = core or load_core(settings.core)
    return Bus(Context(ledger, core), HANDLERS)
