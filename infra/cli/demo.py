"""`titan demo`: a seeded simulated session into a new ledger, then its summary."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.markup import escape

from adapters.redact import redact
from infra import demo as demo_session
from infra.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_CHECK_FAILED,
    EXIT_UNREACHABLE,
    JsonOpt,
    LedgerOpt,
    err,
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
    live: Annotated[
        bool,
        typer.Option("--live", help="Play the session over NATS against `titan serve` and `titan paper run` child processes (TITAN_NATS_URL, else a throwaway nats-server)."),
    ] = False,
) -> None:
    """Run a seeded simulated trading session through the command bus, then summarize it."""
    if live:
        _live(seed, orders, ledger, as_json)
        return
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


def _live(seed: int, orders: int, ledger: str | None, as_json: bool) -> None:
    from adapters.nats.connection import NatsUnreachable
    from infra.demo_live import LiveDemoError, fresh_live_ledger_url, run_live

    url = ledger or fresh_live_ledger_url(seed)
    settings = _settings(url)
    store = _open(settings)
    try:
        if store.head()[2] != 0:
            _fail(f"ledger {redact(url)} is not empty; the live demo writes into a new ledger (omit --ledger, or name a new one)", EXIT_BAD_INPUT)
    finally:
        store.close()
    show = not as_json and sys.stderr.isatty()

    def progress(n: int) -> None:
        if show and (n % 25 == 0 or n == orders):
            err.print(f"live demo: {n}/{orders} intents")

    try:
        summary = run_live(
            settings, seed=seed, orders=orders, ledger_url=url, shown_url=redact(url), progress=progress,
            log=lambda line: err.print(escape(line)),
        )
    except NatsUnreachable as error:
        _fail(str(error), EXIT_UNREACHABLE)
    except LiveDemoError as error:
        _fail(str(error), EXIT_CHECK_FAILED)
    if as_json:
        _print_json(summary)
    else:
        demo_session.print_summary(out, summary)
        out.print(f"        titan replay verify --ledger {summary['ledger']}")
        live_info, mirror, execution = summary["live"], summary["live"]["mirror"], summary["live"]["execution"]
        out.print(
            f"live: NATS {live_info['nats']}; mirror {'ok' if mirror['ok'] else 'FAILED: ' + str(mirror.get('message'))} "
            f"({mirror.get('stream_messages')} messages); execution got {execution['places']} orders and "
            f"{execution['cancels']} cancels, each accepted order once: {execution['each_accepted_order_once']}"
        )
