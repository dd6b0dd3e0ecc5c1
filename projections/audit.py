"""What replay and export ask of the read side: a rebuilt-equals-live digest check, and every read
model's rows. Both leave the live read models untouched (they rebuild into staging tables).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from commands.ports import Ledger

from . import registry
from .model import Projection
from .runner import ledger_head, rebuild_many
from .store import ReadModelStore


async def compare_digests(
    ledger: Ledger, store: ReadModelStore, projections: Sequence[Projection] | None = None
) -> dict[str, Any]:
    """Rebuild each projection up to the position its live model has reached, without swapping,
    and compare the two digests. `{"ok", "models": {name: {"position", "live", "rebuilt"}}, "message"}`."""
    chosen = list(projections or registry.PROJECTIONS)
    await store.prepare(chosen)
    models: dict[str, dict[str, Any]] = {}
    differing: list[str] = []
    live = {projection.name: await store.snapshot(projection) for projection in chosen}
    at_position: dict[int, list[Projection]] = {}
    for projection in chosen:  # one pass over the ledger per distinct live position
        at_position.setdefault(live[projection.name].position, []).append(projection)
    for position, group in sorted(at_position.items()):
        for rebuilt in await rebuild_many(ledger, store, group, until=position, swap=False):
            snapshot = live[rebuilt.projection]
            models[rebuilt.projection] = {
                "position": snapshot.position,
                "live": snapshot.digest,
                "rebuilt": rebuilt.digest,
                "rows": snapshot.rows,
            }
            if snapshot.digest != rebuilt.digest or rebuilt.position != snapshot.position:
                differing.append(rebuilt.projection)
    differing.sort(key=[p.name for p in chosen].index)
    if differing:
        message = "rebuilt digest differs from the live one for " + ", ".join(
            f"{name} (at position {models[name]['position']})" for name in differing
        )
    else:
        message = _equal_message(models, ledger.head()[0])
    return {"ok": not differing, "models": models, "message": message}


def _equal_message(models: dict[str, dict[str, Any]], head: int) -> str:
    """Say what was compared: a model never run here (live position 0) had nothing to compare."""
    compared = {name: model for name, model in models.items() if model["position"] > 0 or head == 0}
    never_run = sorted(set(models) - set(compared))
    parts = []
    if compared:
        positions = sorted({model["position"] for model in compared.values()})
        parts.append(
            f"{len(compared)} read models rebuilt, digests equal (at position {', '.join(map(str, positions))})"
        )
    if never_run:
        parts.append(
            f"{len(never_run)} read models were never run on this ledger, so nothing was compared for them "
            "(`titan projections run` builds them)"
        )
    return "; ".join(parts)


async def model_rows(
    ledger: Ledger, store: ReadModelStore, projections: Sequence[Projection] | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Every read model's rows as at the ledger's head, by table name without its `rm_` prefix.

    Live rows when the model is caught up; otherwise rebuilt into staging tables and read from
    there, so the rows always match the records they are exported with.
    """
    chosen = list(projections or registry.PROJECTIONS)
    await store.prepare(chosen)
    head = await ledger_head(ledger)
    tracked = await store.tracked(chosen)
    lagging = [projection for projection in chosen if tracked[projection.name] != head]
    if lagging:
        await rebuild_many(ledger, store, lagging, swap=False, keep_staging=True)
    result: dict[str, list[dict[str, Any]]] = {}
    try:
        for projection in chosen:
            for table in projection.tables:
                rows = await store.rows(table, staging=projection in lagging)
                result[table.name.removeprefix("rm_")] = rows
    finally:
        for projection in lagging:
            await store.drop_staging(projection)
    return result
