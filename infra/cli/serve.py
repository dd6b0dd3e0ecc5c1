"""`titan serve`: the live Brain on NATS (docs/operations.md); `titan send`: signed commands to it.

Exit codes: 0 drained after SIGTERM/SIGINT; 1 the streams drifted from the spec, or a task of the
service failed; 2 bad input (settings, a key file that does not parse, no keys without
--unsigned); 3 NATS or the ledger unreachable at start.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from adapters.nats.signing import KeyFileError, Keys, load_keys
from commands.ports import Ledger, LedgerError
from infra.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_CHECK_FAILED,
    EXIT_OK,
    LedgerOpt,
    err,
    fail,
    open_or_fail,
    settings_for,
)
from infra.core import load_core
from infra.settings import Settings

if TYPE_CHECKING:
    from adapters.console.auth import TokenBook

AccountsOpt = Annotated[
    list[str] | None,
    typer.Option("--account", help="An account this serve writes from the start (repeat for more; default TITAN_ACCOUNT_ID, else main). Others start on their first command."),
]
KeysOpt = Annotated[
    Path | None, typer.Option("--keys", help="The intake's key file (default TITAN_INTAKE_KEYS).")
]


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    """Add `serve` and `send`."""
    app.command("serve")(serve_cmd)
    from infra.cli.send import send_cmd

    app.command("send")(send_cmd)


def keys_or_fail(path: Path | str | None) -> Keys | None:
    """The key file's keys (None when no file is named), or exit 2 naming the bad line."""
    if path is None:
        return None
    try:
        return load_keys(Path(path))
    except KeyFileError as error:
        fail(str(error), EXIT_BAD_INPUT)


def serve_cmd(
    ledger: LedgerOpt = None,
    account: AccountsOpt = None,
    keys: KeysOpt = None,
    unsigned: Annotated[
        bool, typer.Option("--unsigned", help="Run without keys: take unsigned commands (a single-user trial; TITAN_INTAKE_UNSIGNED).")
    ] = False,
    host: Annotated[str | None, typer.Option("--host", help="Address of /health, /ready, /metrics (TITAN_SERVE_HOST).")] = None,
    port: Annotated[int | None, typer.Option("--port", help="Port of /health, /ready, /metrics; 0 picks one (TITAN_SERVE_PORT).")] = None,
    no_projector: Annotated[bool, typer.Option("--no-projector", help="Do not keep the read models (another process does).")] = False,
) -> None:
    """Run the live Brain: signed commands from TITAN_CMD decided through the group-commit writer,
    the relay to TITAN_EVT, the projector, the DLQ; a second serve is a hot standby. SIGTERM drains."""
    settings = settings_for(ledger)
    if port is not None and not 0 <= port <= 65_535:
        fail(f"--port {port} is not a TCP port: give 0..65535", EXIT_BAD_INPUT)
    key_path = keys or (Path(settings.intake_keys) if settings.intake_keys else None)
    loaded = keys_or_fail(key_path)
    if loaded is None and not (unsigned or settings.intake_unsigned):
        fail(
            "no intake keys: give --keys FILE (or TITAN_INTAKE_KEYS; make one with `titan keys generate "
            "--out FILE`), or --unsigned to take unsigned commands on a single-user trial",
            EXIT_BAD_INPUT,
        )
    accounts = list(dict.fromkeys(account or [settings.account_id]))
    for account_id in accounts:
        settings_for(ledger, account_id)  # each is a valid account id, or exit 2 naming it
    from infra.cli.console import tokens_or_fail

    tokens = tokens_or_fail(settings, None)
    core = load_core(settings.core)
    store = open_or_fail(settings, create=True)
    try:
        code = asyncio.run(
            _serve(
                settings,
                store,
                core,
                accounts,
                loaded,
                tokens,
                host=host or settings.serve_host,
                port=settings.serve_port if port is None else port,
                projector=not no_projector,
            )
        )
    finally:
        store.close()
    raise typer.Exit(code)


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


async def _serve(
    settings: Settings,
    store: Ledger,
    core: object,
    accounts: list[str],
    keys: Keys | None,
    tokens: TokenBook,
    *,
    host: str,
    port: int,
    projector: bool,
) -> int:
    # Imported here: every `titan` command loads this module, only `titan serve` needs these.
    from adapters.console.app import console_app
    from adapters.console.server import EmbeddedServer
    from adapters.nats import connection
    from infra.checkpointing import checkpoint_if_configured
    from infra.cli.services import connect_or_exit_code, failure_exit_code, stop_on_signals
    from infra.collector import tune_for_service
    from infra.console import DlqActions, ServeCommands, open_console
    from infra.serve import Service
    from infra.telemetry import configure_tracing

    nc = await connect_or_exit_code(settings, "titan serve")
    if isinstance(nc, int):
        return nc
    stop_tracing = configure_tracing(settings) or (lambda: None)
    service = Service(settings, store, nc, core, accounts=accounts, keys=keys, log=_log, projector=projector)
    tune_for_service()
    try:
        console = await open_console(
            settings, store, core, tokens, ServeCommands(service.leading_bus, DlqActions(nc, keys))
        )
    except LedgerError as error:
        await connection.close(nc)
        stop_tracing()
        code = failure_exit_code(error, settings, "serve")
        return EXIT_CHECK_FAILED if code is None else code
    http = EmbeddedServer(console_app(console.services, service.state.readiness, service.registry), host, port)
    stop = stop_on_signals()
    try:
        try:
            await http.start()
        except OSError as error:
            err.print(f"[bold red]error:[/] {error}")
            return EXIT_BAD_INPUT
        url = f"http://{host}:{http.port}/"
        _log(f"serve: console on {url}, probes on {url}ready; {'signed' if keys else 'UNSIGNED'} intake")
        if tokens.generated is not None:
            _log(f"serve: no console tokens configured; this run's token opens {url}#token={tokens.generated}")
        try:
            await service.run(stop)
        except Exception as error:
            code = failure_exit_code(error, settings, "serve")
            if code is None:
                raise
            return code
        try:
            await asyncio.to_thread(checkpoint_if_configured, store, settings)
        except LedgerError as error:
            err.print(f"[bold red]error:[/] drained, but the checkpoint was not written: {error}")
            return EXIT_CHECK_FAILED
        _log("serve: drained")
        return EXIT_OK
    finally:
        await http.stop()
        await console.close()
        await connection.close(nc)
        stop_tracing()
