"""What the long-running commands (`titan serve`, `titan relay run`, `titan paper run`) share: how
they connect to NATS at start, stop on SIGTERM/SIGINT, and turn a failure into an exit code."""

from __future__ import annotations

import asyncio
import signal

from nats.aio.client import Client

from adapters.nats import connection, streams
from commands.ports import LedgerError, LedgerUnreachable
from infra.cli.common import EXIT_BAD_INPUT, EXIT_CHECK_FAILED, EXIT_UNREACHABLE, err
from infra.settings import Settings


async def connect_or_exit_code(settings: Settings, name: str) -> Client | int:
    """A reconnecting NATS connection, or the exit code (2 bad settings, 3 unreachable), said."""
    try:
        return await connection.connect(settings, name=name, reconnect=True)
    except connection.NatsSettingsError as error:
        err.print(f"[bold red]error:[/] {error}")
        return EXIT_BAD_INPUT
    except connection.NatsUnreachable as error:
        err.print(f"[bold red]error:[/] {error}")
        return EXIT_UNREACHABLE


def stop_on_signals() -> asyncio.Event:
    """An event SIGTERM and SIGINT set: the service drains and exits 0."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


def failure_exit_code(error: Exception, settings: Settings, who: str) -> int | None:
    """The exit code of a service that stopped on `error`, said in one line: 1 the streams drifted
    or a check failed, 3 NATS or the ledger's server unreachable; None for anything else."""
    if isinstance(error, streams.SpecDrift):
        err.print(f"[bold red]error:[/] {who} refuses to start: {error}")
        return EXIT_CHECK_FAILED
    if isinstance(error, connection.LOST):
        err.print(f"[bold red]error:[/] NATS at {connection.display_url(settings.nats_url)}: {error or type(error).__name__}")
        return EXIT_UNREACHABLE
    if isinstance(error, LedgerUnreachable):
        err.print(f"[bold red]error:[/] {error}")
        return EXIT_UNREACHABLE
    if isinstance(error, LedgerError):
        err.print(f"[bold red]error:[/] {error}")
        return EXIT_CHECK_FAILED
    return None
