"""`titan projections status|rebuild|run|bench`: the read models (docs/projections.md)."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.progress import Progress
from rich.table import Table

from commands.ports import Ledger, LedgerError
from infra.bootstrap import UnsupportedLedgerURL
from infra.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_CHECK_FAILED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    JsonOpt,
    LedgerOpt,
    err,
    fail,
    open_or_fail,
    out,
    print_json,
    settings_for,
)
from infra.read_models import open_store, read_only_store
from projections import registry
from projections.model import Projection
from projections.runner import Runner, ledger_head, rebuild_many, status
from projections.store import ReadModelStore, SchemaMismatch, StoreError
from replay.audit import AuditInputError

StoreOpt = Annotated[
    str | None,
    typer.Option("--store", help="Where the read models live (default: beside the ledger, in its file or database)."),
]
NameArg = Annotated[
    str | None,
    typer.Argument(help=f"One projection ({', '.join(registry.names())}); all when omitted.", show_default=False),
]

T = TypeVar("T")


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    """Add the `projections` command group."""
    group = typer.Typer(help="Read models: status, rebuild from the ledger, run the projector.", no_args_is_help=True)
    app.add_typer(group, name="projections")
    groups["projections"] = group
    group.command("status")(status_cmd)
    group.command("rebuild")(rebuild_cmd)
    group.command("run")(run_cmd)
    group.command("bench")(bench_cmd)


def _select(name: str | None) -> list[Projection]:
    try:
        return registry.select(None if name is None else [name])
    except registry.UnknownProjection as exc:
        fail(f"unknown projection {exc.name!r}; accepted: {', '.join(exc.accepted)}", EXIT_BAD_INPUT)


def _run(
    ledger_url: str | None,
    store_url: str | None,
    work: Callable[[Ledger, ReadModelStore], Awaitable[T]],
    *,
    read_only: bool = False,
) -> T:
    """Open the ledger and the store, run `work`, close both; map failures to exit codes. A
    read-only run (status) works on a snapshot of an embedded ledger's read models."""
    settings = settings_for(ledger_url)
    ledger = open_or_fail(settings, create=False)

    async def main() -> T:
        if read_only:
            async with read_only_store(store_url or settings.ledger_url) as snapshot:
                return await work(ledger, snapshot)
        store = await open_store(store_url or settings.ledger_url)
        try:
            return await work(ledger, store)
        finally:
            await store.close()

    try:
        return asyncio.run(main())
    except (UnsupportedLedgerURL, AuditInputError) as exc:  # AuditInputError: no such store file
        fail(str(exc), EXIT_BAD_INPUT)
    except SchemaMismatch as exc:
        fail(f"the read-model tables are not ready: {exc}", EXIT_UNREACHABLE)
    except StoreError as exc:
        fail(str(exc), EXIT_UNREACHABLE)
    except LedgerError as exc:
        fail(str(exc), EXIT_UNREACHABLE)
    except (ValueError, KeyError, TypeError, ArithmeticError) as exc:
        # A record a fold or a store cannot take: a bug of the read side, never a traceback.
        fail(f"a read model cannot take a record of this ledger ({type(exc).__name__}: {str(exc)[:300]}); nothing of the failing batch was applied", EXIT_CHECK_FAILED)
    finally:
        ledger.close()


def _progress(enabled: bool) -> Progress:
    return Progress(disable=not enabled, transient=True, console=err)


def status_cmd(ledger: LedgerOpt = None, store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """Per projection: tracked position, ledger head, lag, row count and digest."""
    projections = registry.select()
    report = _run(ledger, store, lambda lg, st: status(lg, st, projections), read_only=True)
    if as_json:
        print_json({"projections": [item.as_dict() for item in report]})
        return
    table = Table("projection", "position", "head", "lag", "rows", "digest", title="read models")
    for item in report:
        table.add_row(item.projection, str(item.position), str(item.head), str(item.lag), str(item.rows), item.digest)
    out.print(table)


def rebuild_cmd(name: NameArg = None, ledger: LedgerOpt = None, store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """Rebuild read models from position 0 into fresh tables in one pass, then swap each in.

    Readers see the old model or the new one, never a half-built one."""
    projections = _select(name)
    show = not as_json and sys.stderr.isatty()

    from infra.collector import tuned_for_pass

    async def work(lg: Ledger, st: ReadModelStore) -> list[dict[str, Any]]:
        head = await ledger_head(lg)
        with _progress(show) as bar, tuned_for_pass():
            task = bar.add_task(f"rebuilding {', '.join(p.name for p in projections)}", total=head or None)
            done = await rebuild_many(lg, st, projections, on_batch=lambda _n, at: bar.update(task, completed=at))
        return [
            {
                "projection": item.projection,
                "records": item.records,
                "position": item.position,
                "rows": item.rows,
                "digest": item.digest,
                "seconds": round(item.seconds, 4),
                "records_per_second": round(item.records_per_second),
            }
            for item in done
        ]

    results = _run(ledger, store, work)
    if as_json:
        print_json({"rebuilt": results})
        return
    if results:
        first = results[0]
        out.print(
            f"rebuilt {len(results)} read model(s) from {first['records']} records to position "
            f"{first['position']} in {first['seconds']} s ({first['records_per_second']} records/s)"
        )
    for item in results:
        out.print(f"  {item['projection']}: {item['rows']} rows, digest {item['digest']}")


def run_cmd(
    ledger: LedgerOpt = None,
    store: StoreOpt = None,
    follow: Annotated[bool, typer.Option("--follow", help="After catching up, apply new records as they arrive (Ctrl-C stops).")] = False,
    batch: Annotated[int, typer.Option(min=1, help="Records per batch (one transaction).")] = 1000,
    as_json: JsonOpt = False,
) -> None:
    """Catch the read models up with the ledger; with --follow, keep them up to date."""
    projections = registry.select()
    show = not as_json and sys.stderr.isatty()

    async def work(lg: Ledger, st: ReadModelStore) -> dict[str, Any]:
        head = await ledger_head(lg)
        with _progress(show and not follow) as bar:
            task = bar.add_task("catching up", total=head or None)
            runner = Runner(lg, st, projections, batch_size=batch, on_batch=lambda _n, at: bar.update(task, completed=at))
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, runner.stop)
            try:
                if follow:
                    err.print("following the ledger (Ctrl-C stops)")
                    await runner.follow()
                else:
                    await runner.catch_up()
            finally:
                for signum in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(signum)
        positions = await st.tracked(projections)
        return {
            "batches": runner.progress.batches,
            "records": runner.progress.records,
            "positions": positions,
            "head": await ledger_head(lg),
        }

    result = _run(ledger, store, work)
    if as_json:
        print_json(result)
    else:
        out.print(f"applied {result['records']} records in {result['batches']} batches; ledger head {result['head']}")
        for name, position in result["positions"].items():
            out.print(f"  {name}: position {position}")
    raise typer.Exit(EXIT_OK)


def bench_cmd(
    ledger: LedgerOpt = None,
    store: StoreOpt = None,
    repeats: Annotated[int, typer.Option(min=1, help="How many times to measure each figure.")] = 3,
    as_json: JsonOpt = False,
) -> None:
    """Measure rebuild and catch-up records/s of the read models on a ledger (a benchmark)."""
    from infra.bench.projections import measure, print_results

    results = _run(ledger, store, lambda lg, st: measure(lg, st, repeats=repeats))
    if as_json:
        print_json(results)
    else:
        print_results(out, results)
