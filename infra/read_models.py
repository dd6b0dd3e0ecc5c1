"""Wiring of the read side: which store holds the read models for a URL.

Read models live where the ledger lives unless told otherwise: the embedded SQLite file (tables
prefixed `rm_`, beside the ledger's), or the PostgreSQL database.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

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
        from adapters.postgres.read_models import PostgresReadModelStore

        return await PostgresReadModelStore.connect(url, listen=listen)
    from adapters.sqlite.read_models import SQLiteReadModelStore

    return SQLiteReadModelStore(sqlite_path(url))


T = TypeVar("T")


class LocalReadSide:
    """The read models beside a ledger (its file, or its database), as replay and export use them
    (`replay.projections_hook.ReadSide`)."""

    def verify_digests(self, ledger: Ledger) -> dict[str, Any]:
        """Rebuild every projection up to where its live model is and compare the digests:
        `{"ok": bool, "models": {name: {"live", "rebuilt", "position", "rows"}}, "message": str}`."""
        from projections.audit import compare_digests

        return _with_store(ledger, lambda store: compare_digests(ledger, store))

    def export_rows(self, ledger: Ledger) -> dict[str, list[dict[str, Any]]]:
        """Every read model's rows as at the ledger's head, by model name (plain JSON values)."""
        from projections.audit import model_rows

        return _with_store(ledger, lambda store: model_rows(ledger, store))


READ_SIDE = LocalReadSide()
"""The read side every CLI command hands to replay and export."""


def _with_store(ledger: Ledger, work: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    async def main() -> T:
        async with read_only_store(store_url_for(ledger)) as store:
            return await work(store)

    return _run_sync(main())


@asynccontextmanager
async def read_only_store(url: str) -> AsyncIterator[ReadModelStore]:
    """The read models a URL names, for a command that must not change the ledger: an embedded
    ledger's are opened on a private snapshot of the file, so preparing tables and rebuilding
    into staging happen in the copy (the ledger file's bytes never change); PostgreSQL's directly
    (its read-model tables are made by `titan db upgrade`, not here)."""
    if is_postgres(url) or sqlite_path(url) == ":memory:":  # nothing on disk to keep unchanged
        store = await open_store(url, listen=False)
        try:
            yield store
        finally:
            await store.close()
        return
    from adapters.sqlite.read_models import SQLiteReadModelStore
    from replay.audit import AuditInputError, snapshot_sqlite

    with tempfile.TemporaryDirectory(prefix="titan-read-models-") as scratch:
        copy = Path(scratch) / "read-models.db"
        path = Path(sqlite_path(url))
        if not path.is_file() or path.stat().st_size == 0:
            raise AuditInputError(f"no read models at {url!r}: no such ledger file (pass --ledger, or --store)")
        snapshot_sqlite(path, copy)
        store = SQLiteReadModelStore(str(copy))
        try:
            yield store
        finally:
            await store.close()


def _run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even when this thread runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="titan-projections") as pool:
        return pool.submit(asyncio.run, coroutine).result()
