"""Wiring of the read side: which store holds the read models for a URL.

Read models live where the ledger lives unless told otherwise: the embedded SQLite file (tables
prefixed `rm_`, beside the ledger's), or the PostgreSQL database.
"""

from __future__ import annotations

from commands.ports import Ledger, LedgerError
from projections.store import ReadModelStore

from .bootstrap import sqlite_path

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(url: str) -> bool:
    """Whether a URL names a PostgreSQL database."""
    return url.startswith(POSTGRES_SCHEMES)


def store_url_for(ledger: Ledger) -> str:
    """The URL of the read models that live beside a ledger (its file, or its database)."""
    url = getattr(ledger, "url", None)
    if isinstance(url, str) and is_postgres(url):
        return url
    path = getattr(ledger, "path", None)
    if isinstance(path, str):
        return "sqlite:///" + path
    raise LedgerError(f"cannot tell where the read models of {type(ledger).__name__} live")


async def open_store(url: str, *, listen: bool = True) -> ReadModelStore:
    """Open the read-model store a URL names (sqlite:///… or postgresql://…).

    Raises UnsupportedLedgerURL for another scheme, StoreError when it cannot be opened.
    """
    if is_postgres(url):
        from adapters.postgres_read_models import PostgresReadModelStore

        return await PostgresReadModelStore.connect(url, listen=listen)
    from adapters.sqlite_read_models import SQLiteReadModelStore

    return SQLiteReadModelStore(sqlite_path(url))
