"""The projection runner: catch up from each projection's tracked position in batches, then
follow the ledger live; and `rebuild`, which refolds one projection from position 0 into staging
tables and swaps them in.

Exactly once: a batch's row changes and the projection's new tracked position are written in one
store transaction, which first checks that the tracked position is still where the batch starts
(else nothing is written, the runner re-reads the positions and goes on). A runner killed at any
point leaves every projection at the end of a batch it applied in full, and starts from there.

Batches end on command boundaries: the records one command appended (its events, then its
command record) are always applied together, so a read model never shows half a decision.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from commands.ports import Ledger, Record

from .model import Change, Projection, split_units
from .store import Batch, ReadModelStore, Snapshot, TrackingMoved

DEFAULT_BATCH: Final = 1000
REBUILD_BATCH: Final = 2000
"""Records a rebuild reads, folds and writes at a time. Each batch's row changes go to the staging
tables as one statement per table and kind of change, so the batch need not be large to be bulk:
at 2,000 records a rebuild ran 15–25% faster than at 5,000 (docs/performance.md, "Projection
rebuild"), the larger batches' records and rows outliving more collections and caches."""


async def read_records(ledger: Ledger, after: int, limit: int) -> list[Record]:
    """`ledger.read_all`, through the ledger's async API when it has one (`read_all_async`)."""
    read_async = getattr(ledger, "read_all_async", None)
    result: Any = read_async(after, limit) if read_async is not None else ledger.read_all(after, limit)
    if inspect.isawaitable(result):
        result = await result
    records: list[Record] = result
    return records


async def ledger_head(ledger: Ledger) -> int:
    """The ledger's last position, through its async API when it has one (`head_async`)."""
    head_async = getattr(ledger, "head_async", None)
    result: Any = head_async() if head_async is not None else ledger.head()
    if inspect.isawaitable(result):
        result = await result
    return int(result[0])


async def read_units(ledger: Ledger, after: int, limit: int) -> list[list[Record]]:
    """The complete commands among the next `limit` records after a position, reading further
    when one command alone has more records than that. Records at the ledger's end whose
    command is not complete yet are left for the next read."""
    while True:
        records = await read_records(ledger, after, limit)
        units, _covered = split_units(records)
        if units or len(records) < limit:
            return units
        limit *= 2


@dataclass
class Progress:
    """What a runner has done so far."""

    batches: int = 0
    records: int = 0
    retries: int = 0


class Runner:
    """Keeps several projections up to date in one store, from one ledger."""

    def __init__(
        self,
        ledger: Ledger,
        store: ReadModelStore,
        projections: Sequence[Projection],
        *,
        batch_size: int = DEFAULT_BATCH,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.ledger = ledger
        self.store = store
        self.projections = list(projections)
        self.batch_size = batch_size
        self.on_batch = on_batch
        """Called after each applied batch with (records in it, position reached)."""
        self.progress = Progress()
        self._stop = asyncio.Event()
        self._prepared = False

    def stop(self) -> None:
        """Ask the runner to stop after the batch it is applying (if any)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def catch_up(self) -> dict[str, int]:
        """Apply every complete command in the ledger; return each projection's position."""
        if not self._prepared:
            await self.store.prepare(self.projections)
            self._prepared = True
        tracked = await self.store.tracked(self.projections)
        while not self.stopping:
            after = min(tracked.values(), default=0)
            units = await read_units(self.ledger, after, self.batch_size)
            if not units:
                break
            batches = self._batches(units, tracked)
            try:
                await self.store.apply(batches)
            except TrackingMoved:
                # Another runner or a rebuild moved a projection: start again from the store.
                self.progress.retries += 1
                tracked = await self.store.tracked(self.projections)
                continue
            for batch in batches:
                tracked[batch.projection.name] = batch.to
            records = sum(len(unit) for unit in units)
            self.progress.batches += 1
            self.progress.records += records
            if self.on_batch is not None:
                self.on_batch(records, units[-1][-1].position)
        return tracked

    def _batches(self, units: list[list[Record]], tracked: dict[str, int]) -> list[Batch]:
        batches: list[Batch] = []
        end = units[-1][-1].position
        for projection in self.projections:
            after = tracked[projection.name]
            if after >= end:
                continue
            changes: list[Change] = []
            for unit in units:
                if unit[-1].position > after:
                    changes.extend(projection.fold(unit))
            batches.append(Batch(projection, changes, after, end))
        return batches

    async def follow(self) -> None:
        """Catch up, then apply new records as they are appended, until `stop()`."""
        while not self.stopping:
            await self.catch_up()
            if self.stopping:
                break
            waiter = asyncio.ensure_future(self.store.wait_for_ledger(self.store.poll_interval_s))
            stopper = asyncio.ensure_future(self._stop.wait())
            done, pending = await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if waiter in done:
                waiter.result()


@dataclass(frozen=True)
class Rebuilt:
    """The outcome of one rebuild."""

    projection: str
    records: int
    position: int
    rows: int
    digest: str
    seconds: float
    swapped: bool

    @property
    def records_per_second(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


async def rebuild(
    ledger: Ledger,
    store: ReadModelStore,
    projection: Projection,
    *,
    until: int | None = None,
    swap: bool = True,
    batch_size: int = REBUILD_BATCH,
    on_batch: Callable[[int, int], None] | None = None,
    keep_staging: bool = False,
) -> Rebuilt:
    """Refold a projection from position 0 into staging tables, then (with `swap`) replace the
    live model with them in one transaction. `until` stops at that position (the default is the
    ledger's end); without `swap` the staging copy is measured and dropped (to check a live
    model), or kept with `keep_staging` (the caller reads it, then drops it).
    """
    [done] = await rebuild_many(
        ledger,
        store,
        [projection],
        until=until,
        swap=swap,
        batch_size=batch_size,
        on_batch=on_batch,
        keep_staging=keep_staging,
    )
    return done


async def rebuild_many(
    ledger: Ledger,
    store: ReadModelStore,
    projections: Sequence[Projection],
    *,
    until: int | None = None,
    swap: bool = True,
    batch_size: int = REBUILD_BATCH,
    on_batch: Callable[[int, int], None] | None = None,
    keep_staging: bool = False,
) -> list[Rebuilt]:
    """`rebuild` for several projections in one pass over the ledger (each is swapped in on its
    own, in its own transaction). Every result reports the time of the whole pass."""
    chosen = list(projections)
    await store.prepare(chosen)
    began = time.perf_counter()
    try:
        for projection in chosen:
            await store.begin_staging(projection)
        after = 0
        records = 0
        while until is None or after < until:
            units = await read_units(ledger, after, batch_size)
            if until is not None:
                units = [unit for unit in units if unit[-1].position <= until]
            if not units:
                break
            for projection in chosen:
                changes: list[Change] = []
                for unit in units:
                    changes.extend(projection.fold(unit))
                await store.apply_staging(projection, changes)
            batch_records = sum(len(unit) for unit in units)
            records += batch_records
            after = units[-1][-1].position
            if on_batch is not None:
                on_batch(batch_records, after)
        if swap:
            for projection in chosen:
                await store.swap(projection, after)
        seconds = time.perf_counter() - began
        results: list[Rebuilt] = []
        for projection in chosen:
            snapshot = await store.snapshot(projection, staging=not swap)
            results.append(
                Rebuilt(projection.name, records, after, snapshot.rows, snapshot.digest, seconds, swap)
            )
    except BaseException:
        for projection in chosen:
            with contextlib.suppress(Exception):
                await store.drop_staging(projection)
        raise
    if not swap and not keep_staging:
        for projection in chosen:
            await store.drop_staging(projection)
    return results


@dataclass(frozen=True)
class Status:
    """Where one projection stands against the ledger."""

    projection: str
    position: int
    head: int
    rows: int
    digest: str

    @property
    def lag(self) -> int:
        """Ledger positions not yet applied."""
        return max(0, self.head - self.position)

    def as_dict(self) -> dict[str, Any]:
        return {
            "projection": self.projection,
            "position": self.position,
            "head": self.head,
            "lag": self.lag,
            "rows": self.rows,
            "digest": self.digest,
        }


async def status(ledger: Ledger, store: ReadModelStore, projections: Sequence[Projection]) -> list[Status]:
    """Each projection's tracked position, the ledger head, lag, row count and digest."""
    await store.prepare(projections)
    head = await ledger_head(ledger)
    result: list[Status] = []
    for projection in projections:
        snapshot: Snapshot = await store.snapshot(projection)
        result.append(Status(projection.name, snapshot.position, head, snapshot.rows, snapshot.digest))
    return result
