"""`titan bench`: every performance figure side by side."""

from __future__ import annotations

from typing import Annotated

import typer

from infra.cli.common import (
    JsonOpt,
    out,
)
from infra.cli.common import print_json as _print_json


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    """Add the bench commands."""
    app.command()(bench)


def bench(
    commands: Annotated[int, typer.Option(min=1000, help="How many commands per core measurement.")] = 100_000,
    pg_url: Annotated[
        str | None,
        typer.Option("--pg-url", help="PostgreSQL for the durable and baseline figures (default TITAN_TEST_PG_URL; 'none' skips)."),
    ] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Every figure at a reduced size (under a minute).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Every figure side by side: both cores, embedded and PostgreSQL ledgers (group commit,
    one account and 40), the eventsourcing baseline, replay verify (both cores and the compiled
    one alone), projection rebuild, export, the first decision after start; then every goal
    with its verdict (met, missed, or not measured and why)."""
    import os

    from infra import bench as benchmark

    url = pg_url or os.environ.get("TITAN_TEST_PG_URL") or "postgresql://postgres@127.0.0.1:5432/test"
    results = benchmark.run(commands, pg_url=None if url == "none" else url, quick=quick)
    if as_json:
        _print_json(results)
    else:
        benchmark.print_results(out, results)
