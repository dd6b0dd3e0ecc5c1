"""`titan relay run|status|verify`: the ledger's mirror on JetStream (docs/messaging.md, "The mirror").

Exit codes: 0 ok; 1 a check failed (a broken chain, a mirror that disagrees with its ledger, drifted
streams); 2 bad input; 3 NATS or the ledger's server unreachable at start; 4 another relay holds
the ledger's relay lease (it wrote nothing).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import nats.js.errors
import typer
from nats.aio.client import Client

from adapters.leased_ledger import holder_name
from adapters.nats import connection, streams, subjects
from adapters.nats.ledger_follow import wakeups_for
from adapters.nats.mirror_check import MirrorReport, mirror_status, verify_mirror
from adapters.nats.relay import DEFAULT_BATCH, MirrorError, Relay
from adapters.nats.relay_metrics import RelayMetrics
from commands.lease import LeaseRefused
from commands.ports import Ledger
from infra.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_BUSY,
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
from infra.cli.services import failure_exit_code, stop_on_signals
from infra.settings import Settings

T = TypeVar("T")

RELAY_LEASE_PREFIX = "relay-"
MAX_BATCH = 10_000

relay_app = typer.Typer(help="The ledger's mirror on NATS JetStream: run the relay, show its lag, verify it.", no_args_is_help=True)


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    """Add the relay commands."""
    app.add_typer(relay_app, name="relay")
    groups["relay"] = relay_app


def relay_lease_stream(stream: str = subjects.EVT_STREAM) -> str:
    """The lease that makes one relay the only one mirroring a ledger onto a stream."""
    return f"{RELAY_LEASE_PREFIX}{stream}"


@relay_app.command("run")
def relay_run(
    ledger: LedgerOpt = None,
    once: Annotated[bool, typer.Option("--once", help="Mirror up to the ledger's current head, then exit.")] = False,
    batch: Annotated[int, typer.Option("--batch", help=f"Records read from the ledger at a time (1..{MAX_BATCH}).")] = DEFAULT_BATCH,
    metrics_port: Annotated[
        int | None, typer.Option("--metrics-port", help="Serve Prometheus metrics on HOST:PORT/metrics.")
    ] = None,
    metrics_host: Annotated[
        str, typer.Option("--metrics-host", help="The address metrics are served on (0.0.0.0 inside a container).")
    ] = "127.0.0.1",
) -> None:
    """Mirror every ledger record, in position order and exactly once, to titan.evt.<account>.<type>
    on TITAN_EVT; follow the ledger until SIGTERM (or, with --once, stop at its head)."""
    if not 1 <= batch <= MAX_BATCH:
        fail(f"--batch {batch} is out of range: give 1..{MAX_BATCH}", EXIT_BAD_INPUT)
    if metrics_port is not None and not 1 <= metrics_port <= 65_535:
        fail(f"--metrics-port {metrics_port} is not a TCP port: give 1..65535", EXIT_BAD_INPUT)
    settings = settings_for(ledger)
    store = open_or_fail(settings, create=False)
    try:
        code = asyncio.run(
            _relay(settings, store, once=once, batch=batch, metrics_port=metrics_port, metrics_host=metrics_host)
        )
    finally:
        store.close()
    raise typer.Exit(code)


async def _relay(
    settings: Settings, store: Ledger, *, once: bool, batch: int, metrics_port: int | None, metrics_host: str = "127.0.0.1"
) -> int:
    from adapters.postgres.ledger import NOTIFY_CHANNEL
    from infra.writers import lease_store

    nc = await _connect(settings, reconnect=True)
    lease = None
    try:
        try:
            lease = await lease_store(store).acquire_lease(relay_lease_stream(), holder_name("relay run"))
        except LeaseRefused as error:
            err.print(f"[bold red]error:[/] another relay mirrors this ledger: {error.holder}; this one wrote nothing")
            return EXIT_BUSY
        metrics = RelayMetrics()
        if metrics_port is not None:
            try:
                metrics.serve(metrics_port, metrics_host)
            except OSError as error:
                err.print(f"[bold red]error:[/] cannot serve metrics on {metrics_host}:{metrics_port}: {error.strerror or error}")
                return EXIT_BAD_INPUT
        relay = Relay(
            store,
            nc,
            batch=batch,
            wakeups=wakeups_for(settings.ledger_url, NOTIFY_CHANNEL),
            metrics=metrics,
            spec_check=lambda js: streams.require_spec(js, streams.declared(settings)),
            log=lambda line: print(line, file=sys.stderr, flush=True),
        )
        stop = stop_on_signals()
        try:
            progress = await relay.run(once=once, stop=stop)
        except MirrorError as error:
            err.print(f"[bold red]error:[/] {error}")
            return EXIT_CHECK_FAILED
        except Exception as error:
            code = failure_exit_code(error, settings, "the relay")
            if code is None:
                raise
            return code
        out.print(
            f"mirrored up to position {progress.mirrored_position} ({subjects.EVT_STREAM} sequence "
            f"{progress.stream_seq}): {progress.published} records published, {progress.retries} retries"
        )
        return EXIT_OK
    finally:
        if lease is not None:
            await lease.release()
        await connection.close(nc)


@relay_app.command("status")
def relay_status(ledger: LedgerOpt = None, as_json: JsonOpt = False) -> None:
    """The ledger's head, the last position the stream holds, and the lag between them."""
    settings = settings_for(ledger)
    store = open_or_fail(settings, create=False)
    try:
        status = _with_stream(settings, lambda nc: mirror_status(store, nc.jetstream()))
    finally:
        store.close()
    if as_json:
        print_json(status.as_dict())
    else:
        out.print(
            f"ledger head {status.ledger_head_position} ({status.ledger_records} records); "
            f"{status.stream} holds position {status.mirrored_position} at sequence {status.stream_last_seq} "
            f"({status.stream_messages} messages); lag {status.lag_records} records"
        )
    raise typer.Exit(EXIT_OK)


@relay_app.command("verify")
def relay_verify(ledger: LedgerOpt = None, as_json: JsonOpt = False) -> None:
    """Read the whole stream and the ledger and prove they match record for record (position, id,
    hash, payload), each once and in order; exit 1 naming the first mismatch."""
    settings = settings_for(ledger)
    store = open_or_fail(settings, create=False)
    try:
        report = mirror_report(store, settings)
    finally:
        store.close()
    if as_json:
        print_json(report.as_dict())
    else:
        print_mirror_report(report)
    raise typer.Exit(EXIT_OK if report.ok else EXIT_CHECK_FAILED)


def mirror_report(store: Ledger, settings: Settings) -> MirrorReport:
    """`verify_mirror` over a connection from the settings (for `titan ledger verify --mirror`);
    exits 3 when NATS is unreachable, 1 when the stream does not exist."""
    return _with_stream(settings, lambda nc: verify_mirror(store, nc.jetstream()))


def print_mirror_report(report: MirrorReport) -> None:
    """One line: what the mirror holds, or its first mismatch."""
    if report.ok:
        out.print(
            f"mirror ok: {report.stream_messages} messages on {report.stream} match the ledger record for "
            f"record, through position {report.mirrored_position}; {report.unmirrored} records not yet mirrored"
        )
    else:
        err.print(f"[bold red]mirror verification failed[/]: {report.code}: {report.message}")


def _with_stream(settings: Settings, work: Callable[[Client], Awaitable[T]]) -> T:
    async def run() -> T:
        nc = await _connect(settings, reconnect=False)
        try:
            return await work(nc)
        finally:
            await connection.close(nc)

    try:
        return asyncio.run(run())
    except nats.js.errors.NotFoundError:
        fail(
            f"stream {subjects.EVT_STREAM} does not exist on NATS at {connection.display_url(settings.nats_url)}: "
            "run `titan nats apply`",
            EXIT_CHECK_FAILED,
        )
    except MirrorError as error:
        fail(str(error), EXIT_CHECK_FAILED)
    except connection.LOST as error:
        fail(f"NATS at {connection.display_url(settings.nats_url)}: {error or type(error).__name__}", EXIT_UNREACHABLE)


async def _connect(settings: Settings, *, reconnect: bool) -> Client:
    try:
        return await connection.connect(settings, name="titan relay", reconnect=reconnect)
    except connection.NatsSettingsError as error:
        fail(str(error), EXIT_BAD_INPUT)
    except connection.NatsUnreachable as error:
        fail(str(error), EXIT_UNREACHABLE)
