"""`titan paper run`: the paper execution engine on NATS (docs/paper.md).

Exit codes: 0 stopped after SIGTERM/SIGINT; 1 TITAN_EXEC or its `titan-paper` consumer is missing
or drifted from the contract, or a task of the engine failed; 2 bad input (options, settings, a key
file that does not parse or has no `execution` key); 3 NATS unreachable.
Run it as `titan paper run …` or `python -m infra.cli.paper run …`.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from infra.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    fail,
    settings_for,
)

if TYPE_CHECKING:
    from adapters.nats.signing import Keys
    from adapters.paper.book import Book
    from adapters.paper.engine import EngineConfig
    from infra.settings import Settings

DEFAULT_BOOK = Path(".titan") / "paper-book.db"

paper_app = typer.Typer(help="The paper execution engine: serves titan.exec.paper.> over NATS.", no_args_is_help=True, add_completion=False)


@paper_app.callback()
def _paper() -> None:
    """The paper execution engine (docs/paper.md)."""


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    """Add `paper run`."""
    app.add_typer(paper_app, name="paper")
    groups["paper"] = paper_app


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@paper_app.command("run")
def paper_run(
    keys: Annotated[Path | None, typer.Option("--keys", help="Key file with the `execution` key (default TITAN_INTAKE_KEYS).")] = None,
    book: Annotated[Path, typer.Option("--book", help="The engine's SQLite book (created 0600).")] = DEFAULT_BOOK,
    seed: Annotated[int, typer.Option("--seed", help="Seeds the venue model, with each order id.")] = 0,
    snapshot_every: Annotated[float, typer.Option("--snapshot-every", help="Seconds between truth snapshots (per account).")] = 5.0,
    account: Annotated[
        list[str] | None, typer.Option("--account", help="An account to snapshot from the start (repeat); others once an order arrives.")
    ] = None,
    start_equity: Annotated[
        str | None, typer.Option("--start-equity", help="Equity before any fill (default: the policy's initial_equity).")
    ] = None,
    unsigned: Annotated[bool, typer.Option("--unsigned", help="Send reports unsigned (to a `titan serve --unsigned`).")] = False,
) -> None:
    """Serve titan.exec.paper.> from TITAN_EXEC: acks, fills, rejects, expiries and truth snapshots
    back to titan's intake as signed `execution` commands; the book survives kill -9. SIGTERM stops."""
    from adapters.paper.book import Book
    from adapters.paper.engine import ISSUER, EngineConfig
    from domain.numbers import parse_units
    from infra.cli.serve import keys_or_fail

    settings = settings_for()
    if not 0.05 <= snapshot_every <= 86_400:
        fail(f"--snapshot-every {snapshot_every:g} is out of range: give 0.05 to 86400 seconds", EXIT_BAD_INPUT)
    accounts = list(dict.fromkeys(account or []))
    for account_id in accounts:
        settings_for(None, account_id)  # a valid account id, or exit 2 naming it
    start_e8: int | None = None
    if start_equity is not None:
        parsed = parse_units(start_equity, 8)
        if not parsed.ok or start_equity.startswith("-") or not start_equity.replace(".", "", 1).isdigit():
            fail(f"--start-equity {start_equity!r} is not a non-negative decimal with at most 8 decimals", EXIT_BAD_INPUT)
        start_e8 = parsed.units
    key_path = keys or (Path(settings.intake_keys) if settings.intake_keys else None)
    loaded = None if unsigned else keys_or_fail(key_path)
    if not unsigned and loaded is None:
        fail("no key file: give --keys FILE (or TITAN_INTAKE_KEYS) holding the `execution` key, or --unsigned", EXIT_BAD_INPUT)
    if loaded is not None and ISSUER not in loaded:
        fail(f"the key file has no key for issuer {ISSUER!r}; it has: {', '.join(loaded)}", EXIT_BAD_INPUT)
    try:
        store = Book(book)
    except OSError as error:
        fail(f"cannot open the book {str(book)!r}: {error.strerror or error}", EXIT_BAD_INPUT)
    config = EngineConfig(seed=seed, snapshot_every_s=snapshot_every, accounts=tuple(accounts), start_equity_e8=start_e8)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        code = asyncio.run(_run(settings, store, config, loaded))
    finally:
        store.close()
    raise typer.Exit(code)


async def _run(settings: Settings, store: Book, config: EngineConfig, keys: Keys | None) -> int:
    from adapters.nats import connection
    from adapters.paper.engine import PaperEngine, exec_spec
    from infra.cli.services import connect_or_exit_code, failure_exit_code, stop_on_signals

    nc = await connect_or_exit_code(settings, "titan paper")
    if isinstance(nc, int):
        return nc
    stop = stop_on_signals()
    engine = PaperEngine(nc, store, config, keys=keys, log=_log)
    try:
        _log(f"paper: serving titan.exec.paper.> on {connection.display_url(settings.nats_url)}, seed {config.seed}")
        await engine.run(stop, exec_spec(settings))
    except Exception as error:
        code = failure_exit_code(error, settings, "the paper engine")
        if code is None:
            raise
        return code
    finally:
        await connection.close(nc)
    s = engine.stats
    _log(f"paper: stopped: {s.handled} messages handled, {s.redelivered} redelivered, {s.refused} refused, {s.sent} reports sent, {store.unsent()} unsent")
    return EXIT_OK


if __name__ == "__main__":
    paper_app(prog_name="titan paper")
