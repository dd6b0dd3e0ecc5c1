"""`titan demo`: a seeded simulated session into a new ledger, then its summary."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from adapters.redact import redact
from infra import demo as demo_session
from infra.cli.common import (
    EXIT_BAD_INPUT,
    JsonOpt,
    LedgerOpt,
    out,
    writer_for,
)
from infra.cli.common import fail as _fail
from infra.cli.common import open_or_fail as _open
from infra.cli.common import print_json as _print_json
from infra.cli.common import settings_for as _settings


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    """Add the demo commands."""
    app.command()(demo)


def demo(
    seed: Annotated[int, typer.Option(help="Seed of the simulated session (same seed, same ledger).")] = 7,
    orders: Annotated[int, typer.Option(min=1, max=1_000_000, help="How many order intents to simulate.")] = 500,
    ledger: LedgerOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run a seeded simulated trading session through the command bus, then summarize it."""
    url = ledger or demo_session.fresh_ledger_url(seed)
    settings = _settings(url)
    store = _open(settings)
    if store.head()[2] != 0:
        _fail(f"ledger {url} is not empty; the demo writes into a new ledger (omit --ledger, or name a new file)", EXIT_BAD_INPUT)
    with writer_for(settings, store, "demo", [demo_session.ACCOUNT]) as bus:
        summary = demo_session.run(bus, seed=seed, orders=orders, ledger_url=redact(url), progress=not as_json and sys.stderr.isatty())
    if as_json:
        _print_json(summary)
    else:
        demo_session.print_summary(out, summary)
