"""Projection throughput, for `titan bench` and `titan projections bench` (a benchmark, never a
test): ledger records/s of a rebuild of each read model alone and of all of them in one pass, and
of a live runner catching all of them up from position 0.

Measured on whatever ledger and store it is given; rebuilding replaces the live read models with
identical ones (the digests are checked), so running it on a live system is safe but not free.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from commands.ports import Ledger
from projections import registry
from projections.model import Projection
from projections.runner import REBUILD_BATCH, Runner, ledger_head, rebuild, rebuild_many
from projections.store import ReadModelStore


async def _reset(store: ReadModelStore, projections: Sequence[Projection]) -> None:
    """Empty the live models and put them back at position 0 (through an empty swap)."""
    for projection in projections:
        await store.begin_staging(projection)
        await store.swap(projection, 0)


async def measure(
    ledger: Ledger,
    store: ReadModelStore,
    *,
    projections: Sequence[Projection] | None = None,
    repeats: int = 3,
    batch_size: int = REBUILD_BATCH,
    runner_batch_size: int = 1000,
) -> dict[str, Any]:
    """Measure, `repeats` times each: the rebuild of each projection alone, the rebuild of all of
    them in one pass over the ledger (`titan projections rebuild`), and a runner catching all of
    them up from 0 (`titan projections run`); ledger records/s of each run.

    Every run must end with the same digests as the first (else RuntimeError): the figures are
    only worth something if the work was the same.
    """
    chosen = list(projections or registry.PROJECTIONS)
    await store.prepare(chosen)
    head = await ledger_head(ledger)
    per_projection: dict[str, list[float]] = {p.name: [] for p in chosen}
    all_rates: list[float] = []
    catch_up_rates: list[float] = []
    digests: dict[str, str] = {}
    records = 0

    def check(name: str, digest: str) -> None:
        if digests.setdefault(name, digest) != digest:
            raise RuntimeError(f"projection {name}: digest changed between runs ({digests[name]} then {digest})")

    for _ in range(repeats):
        for projection in chosen:
            done = await rebuild(ledger, store, projection, batch_size=batch_size)
            records = done.records
            per_projection[projection.name].append(done.records_per_second)
            check(projection.name, done.digest)
        together = await rebuild_many(ledger, store, chosen, batch_size=batch_size)
        all_rates.append(together[0].records_per_second if together else 0.0)
        for done in together:
            check(done.projection, done.digest)

        await _reset(store, chosen)
        runner = Runner(ledger, store, chosen, batch_size=runner_batch_size)
        began = time.perf_counter()
        await runner.catch_up()
        seconds = time.perf_counter() - began
        catch_up_rates.append(runner.progress.records / seconds if seconds else 0.0)
        for projection in chosen:
            check(projection.name, (await store.snapshot(projection)).digest)

    def summary(rates: list[float]) -> dict[str, Any]:
        return {
            "records_per_second": [round(rate) for rate in rates],
            "median": round(statistics.median(rates)) if rates else 0,
        }

    return {
        "machine": {"python": platform.python_version(), "cpus": _cpus(), "platform": platform.platform()},
        "store": type(store).__name__,
        "ledger_records": records,
        "ledger_head": head,
        "repeats": repeats,
        "rebuild": {name: summary(rates) for name, rates in per_projection.items()},
        "rebuild_all": summary(all_rates),
        "rebuild_batch_size": batch_size,
        "catch_up_all": {**summary(catch_up_rates), "batch_size": runner_batch_size},
        "digests": digests,
    }


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


def print_results(console: Console, results: dict[str, Any]) -> None:
    """The figures as a table."""
    table = Table("what", "records/s (median)", "runs", title=f"read models on {results['store']}, {results['ledger_records']} records")
    for name, figures in results["rebuild"].items():
        table.add_row(f"rebuild {name}", str(figures["median"]), ", ".join(map(str, figures["records_per_second"])))
    table.add_row("rebuild all (one pass)", str(results["rebuild_all"]["median"]), ", ".join(map(str, results["rebuild_all"]["records_per_second"])))
    catch = results["catch_up_all"]
    table.add_row(f"catch up all (one runner, batch {catch['batch_size']})", str(catch["median"]), ", ".join(map(str, catch["records_per_second"])))
    console.print(table)
