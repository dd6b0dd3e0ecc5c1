"""`titan console`: the operator console (GraphQL API and page) over a ledger, alone; `titan
console token`: grant a token. Inside `titan serve` the console runs in-process on the serve's port.

Exit codes: 0 stopped by SIGTERM/SIGINT; 2 bad input (a token file that does not parse, a port in
use); 3 the ledger unreachable.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from commands.ports import Ledger, LedgerError
from infra.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    AccountOpt,
    LedgerOpt,
    err,
    fail,
    out,
    settings_for,
)
from infra.settings import Settings

if TYPE_CHECKING:
    from adapters.console.auth import TokenBook

console_app = typer.Typer(help="The operator console: GraphQL API and web page.", no_args_is_help=False)

TokensOpt = Annotated[Path | None, typer.Option("--tokens", help="The console's token file (default TITAN_CONSOLE_TOKENS).")]


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    """Add `console` and `console token`."""
    app.add_typer(console_app, name="console")


@console_app.callback(invoke_without_command=True)
def console_cmd(
    ctx: typer.Context,
    ledger: LedgerOpt = None,
    account: AccountOpt = None,
    host: Annotated[str | None, typer.Option("--host", help="Address to listen on (TITAN_CONSOLE_HOST, default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option("--port", help="Port; 0 picks one (TITAN_CONSOLE_PORT, default 8480).")] = None,
    tokens: TokensOpt = None,
    no_projector: Annotated[bool, typer.Option("--no-projector", help="Do not keep the read models (another process does).")] = False,
    dev: Annotated[bool, typer.Option("--dev", help="Development mode: the GraphiQL IDE at /graphql and queries over GET.")] = False,
    demo: Annotated[bool, typer.Option("--demo", help="First play `titan demo` into a new ledger (or --ledger, which must be new), then open it.")] = False,
) -> None:
    """Run the console against a ledger: the page at /, GraphQL at /graphql, /health, /ready, /metrics."""
    if ctx.invoked_subcommand is not None:
        return
    if demo:
        ledger = _play_demo(ledger)
    settings = settings_for(ledger, account)
    if port is not None and not 0 <= port <= 65_535:
        fail(f"--port {port} is not a TCP port: give 0..65535", EXIT_BAD_INPUT)
    book = tokens_or_fail(settings, tokens)
    from infra.cli.common import open_or_fail
    from infra.core import load_core

    _require_existing(settings)
    core = load_core(settings.core)
    store = open_or_fail(settings, create=True)
    try:
        code = asyncio.run(
            _run(
                settings,
                store,
                core,
                book,
                host=host or settings.console_host,
                port=settings.console_port if port is None else port,
                projector=not no_projector,
                production=not dev,
            )
        )
    finally:
        store.close()
    raise typer.Exit(code)


def _require_existing(settings: Settings) -> None:
    """The console opens a ledger, never makes one: a mistyped path must not show an empty desk
    that accepts a halt."""
    from infra.bootstrap import sqlite_path
    from infra.read_models import is_postgres

    if is_postgres(settings.ledger_url):
        return
    path = sqlite_path(settings.ledger_url)
    if path == ":memory:" or not Path(path).is_file():
        fail(f"no ledger at {settings.ledger_url}: give an existing ledger (or --demo to play one first)", EXIT_BAD_INPUT)


def _play_demo(ledger: str | None) -> str:
    """A new demo ledger's URL, after playing the seeded session into it (as `titan demo`)."""
    from adapters.redact import redact
    from infra import demo as demo_session
    from infra.cli.common import open_or_fail, writer_for

    url = ledger or demo_session.fresh_ledger_url(7)
    settings = settings_for(url)
    store = open_or_fail(settings)
    if store.head()[2] != 0:
        store.close()
        fail(f"ledger {redact(url)} is not empty; --demo writes into a new ledger (omit --ledger, or name a new file)", EXIT_BAD_INPUT)
    with writer_for(settings, store, "demo", [demo_session.ACCOUNT]) as bus:
        summary = demo_session.run(bus, seed=7, orders=500, ledger_url=redact(url), progress=False)
    _log(f"console: played the demo into {summary['ledger']}; an order to explain: {summary['order_to_explain']}")
    return url


def tokens_or_fail(settings: Settings, path: Path | None) -> TokenBook:
    """The configured token book, or exit 2 naming the bad line."""
    from adapters.console.auth import TokenBook, TokenFileError

    chosen = str(path) if path is not None else settings.console_tokens
    try:
        return TokenBook.configured(chosen, settings.console_token_lines)
    except TokenFileError as error:
        fail(str(error), EXIT_BAD_INPUT)


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


async def _run(
    settings: Settings, ledger: Ledger, core: object, book: TokenBook, *, host: str, port: int, projector: bool, production: bool
) -> int:
    from adapters.console.app import console_app as make_app
    from adapters.console.server import EmbeddedServer
    from infra.cli.services import stop_on_signals
    from infra.console import (
        DlqActions,
        LocalCommands,
        console_readiness,
        open_console,
        optional_nats,
    )

    stop = stop_on_signals()
    nc = await optional_nats(settings)
    try:
        opened = await open_console(settings, ledger, core, book, LocalCommands(settings, ledger, DlqActions(nc, None)))
    except LedgerError as error:
        err.print(f"[bold red]error:[/] {error}")
        return 3
    http = EmbeddedServer(make_app(opened.services, console_readiness(opened, nc), opened.registry, production=production), host, port)
    tasks: list[asyncio.Task[None]] = []
    try:
        try:
            await http.start()
        except OSError as error:
            err.print(f"[bold red]error:[/] {error}")
            return EXIT_BAD_INPUT
        if projector:
            tasks.append(asyncio.ensure_future(opened.follow(stop)))
        url = f"http://{host}:{http.port}/"
        if book.generated is not None:
            _log(f"console: no tokens configured; this run's token opens {url}#token={book.generated}")
        _log(f"console: {url} (GraphQL at {url}graphql) over {settings.ledger_url if '@' not in settings.ledger_url else 'the ledger'}")
        await stop.wait()
        return EXIT_OK
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await http.stop()
        await opened.close()
        if nc is not None:
            from adapters.nats import connection

            await connection.close(nc)


@console_app.command("sdl")
def sdl_cmd() -> None:
    """Print the GraphQL schema (SDL), as committed in schemas/console.graphql."""
    from adapters.console.graphql.schema import sdl

    sys.stdout.write(sdl())


@console_app.command("token")
def token_cmd(
    subject: Annotated[str, typer.Option("--subject", help="Who holds it: recorded as the actor of their actions.")],
    role: Annotated[list[str], typer.Option("--role", help="viewer, operator, risk or auditor (repeat for more).")],
    tokens: TokensOpt = None,
) -> None:
    """Grant a token: append its hashed line to the token file (0600) and print the token once."""
    from adapters.console.auth import TokenFileError, new_token, parse_lines, token_line

    settings = settings_for()
    chosen = tokens or (Path(settings.console_tokens) if settings.console_tokens else None)
    if chosen is None:
        fail("give --tokens FILE (or TITAN_CONSOLE_TOKENS): where the hashed token is kept", EXIT_BAD_INPUT)
    token = new_token()
    line = token_line(subject, sorted(dict.fromkeys(role)), token)
    try:
        parse_lines([line], "--subject/--role")
        existing = chosen.read_text(encoding="utf-8").splitlines() if chosen.exists() else []
        parse_lines(existing, str(chosen))
    except (TokenFileError, OSError, UnicodeDecodeError) as error:
        fail(str(error), EXIT_BAD_INPUT)
    fd = os.open(chosen, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as handle:
        handle.write(line + "\n")
    out.print(token)
