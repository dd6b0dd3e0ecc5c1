"""The read side: projections fold ledger records into read models (docs/projections.md).

`verify_digests(ledger)` and `export_rows(ledger)` are the hooks `titan replay verify` and
`titan ledger export` call (replay/projections_hook.py). They find the read models beside the
ledger through the composition root (`infra.read_models`), imported when called.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from commands.ports import Ledger

T = TypeVar("T")


def verify_digests(ledger: Ledger) -> dict[str, Any]:
    """Rebuild every projection up to where its live model is and compare the digests:
    `{"ok": bool, "models": {name: {"live", "rebuilt", "position", "rows"}}, "message": str}`."""
    from .audit import compare_digests

    return _with_store(ledger, lambda store: compare_digests(ledger, store))


def export_rows(ledger: Ledger) -> dict[str, list[dict[str, Any]]]:
    """Every read model's rows as at the ledger's head, by model name (plain JSON values)."""
    from .audit import model_rows

    return _with_store(ledger, lambda store: model_rows(ledger, store))


def _with_store(ledger: Ledger, work: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    from infra.read_models import open_store, store_url_for

    async def main() -> T:
        store = await open_store(store_url_for(ledger), listen=False)
        try:
            return await work(store)
        finally:
            await store.close()

    return _run_sync(main())


def _run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even when this thread runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="titan-projections") as pool:
        return pool.submit(asyncio.run, coroutine).result()
