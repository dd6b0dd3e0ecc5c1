"""`titan nats verify|apply`: titan's JetStream streams and consumers against their spec in code
(adapters/nats/streams.py, docs/messaging.md).

Exit codes: 0 the server matches (or now matches), 1 it differs (verify) or a change was refused
(apply: one JetStream cannot make in place, without --recreate), 2 bad NATS settings, 3 NATS
unreachable (the message names the URL, password masked).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import nats.errors
import typer
from rich.markup import escape

from adapters.nats import streams
from adapters.nats.connection import NatsSettingsError, NatsUnreachable, connected, display_url
from infra.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_CHECK_FAILED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    JsonOpt,
    err,
    fail,
    out,
    print_json,
)
from infra.settings import Settings

T = TypeVar("T")

NatsOpt = Annotated[
    str | None,
    typer.Option("--nats", help="NATS URL (default: TITAN_NATS_URL, else nats://127.0.0.1:4222)."),
]
RecreateOpt = Annotated[
    bool,
    typer.Option(
        "--recreate",
        help="Delete and create again what JetStream cannot change in place (a stream's messages are lost).",
    ),
]


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    """Add the `nats` command group."""
    group = typer.Typer(
        help="titan's JetStream streams and consumers: compare them with the spec, apply it.",
        no_args_is_help=True,
    )
    app.add_typer(group, name="nats")
    groups["nats"] = group
    group.command("verify")(verify_cmd)
    group.command("apply")(apply_cmd)


def _settings(nats: str | None) -> Settings:
    return Settings(nats_url=nats) if nats else Settings()


def on_jetstream(settings: Settings, work: Callable[[Any], Awaitable[T]], *, name: str, note: str = "") -> T:
    """Connect, run the work on a JetStream context, close; unreachable exits 3, bad settings 2,
    an error JetStream answered that titan did not expect 3. `note` ends every such message."""

    async def session() -> T:
        async with connected(settings, name=name) as client:
            return await work(client.jetstream())

    try:
        return asyncio.run(session())
    except NatsUnreachable as exc:
        fail(f"{exc}{note}", EXIT_UNREACHABLE)
    except NatsSettingsError as exc:
        fail(f"{exc}{note}", EXIT_BAD_INPUT)
    except nats.errors.Error as exc:  # JetStream answered with an error titan did not expect
        fail(f"NATS at {display_url(settings.nats_url)} answered: {exc or type(exc).__name__}{note}", EXIT_UNREACHABLE)


def _run(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    return on_jetstream(settings, work, name="titan nats")


def verify_cmd(nats: NatsOpt = None, as_json: JsonOpt = False) -> None:
    """Compare the live streams and consumers with titan's spec; exit 1 listing every difference."""
    settings = _settings(nats)
    spec = streams.declared(settings)
    drifts = _run(settings, lambda js: streams.verify(js, spec))
    url = display_url(settings.nats_url)
    if as_json:
        print_json({"nats_url": url, "ok": not drifts, "drifts": [drift.to_json() for drift in drifts]})
    elif drifts:
        for drift in drifts:
            out.print(escape(str(drift)))
        summary = f"{len(drifts)} difference(s) from titan's spec at {url}"
        err.print(escape(f"{summary}; `titan nats apply` fixes what can change in place"))
    else:
        counts = f"{len(spec.streams)} streams, {len(spec.consumers)} consumers"
        out.print(escape(f"NATS at {url} matches titan's spec ({counts})"))
    raise typer.Exit(EXIT_CHECK_FAILED if drifts else EXIT_OK)


def apply_cmd(nats: NatsOpt = None, recreate: RecreateOpt = False, as_json: JsonOpt = False) -> None:
    """Create what is missing, update what can change in place; refuse the rest unless --recreate.

    A refusal exits 1 saying why; nothing is deleted without --recreate."""
    settings = _settings(nats)
    spec = streams.declared(settings)
    url = display_url(settings.nats_url)

    async def work(js: Any) -> tuple[list[str], list[str]]:
        try:
            return await streams.apply(js, recreate=recreate, spec=spec), []
        except streams.ApplyRefused as refused:
            return refused.done, refused.reasons

    done, refused = _run(settings, work)
    if as_json:
        print_json({"nats_url": url, "ok": not refused, "done": done, "refused": refused})
    else:
        for line in done:
            out.print(escape(line))
        for reason in refused:
            err.print(f"[bold red]refused:[/] {escape(reason)}")
        if not done and not refused:
            out.print(escape(f"NATS at {url} already matches titan's spec; nothing to do"))
    raise typer.Exit(EXIT_CHECK_FAILED if refused else EXIT_OK)
