"""`titan ledger verify`: the hash chain, the anchor, and (with --checkpoints) the signed log."""

from __future__ import annotations

from typing import Annotated

import typer

from commands.ports import LedgerError
from infra.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_CHECK_FAILED,
    EXIT_OK,
    JsonOpt,
    LedgerOpt,
    err,
    out,
)
from infra.cli.common import fail as _fail
from infra.cli.common import open_or_fail as _open
from infra.cli.common import print_json as _print_json
from infra.cli.common import settings_for as _settings


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    """Add the ledger commands."""
    groups["ledger"].command("verify")(ledger_verify)


def ledger_verify(
    ledger: LedgerOpt = None,
    as_json: JsonOpt = False,
    checkpoints: Annotated[
        bool,
        typer.Option(
            "--checkpoints",
            help="Also check the ledger against a signed checkpoint log: FILE, else TITAN_CHECKPOINT_FILE, else "
            "<ledger>.checkpoints.jsonl beside it; the key: TITAN_CHECKPOINT_PUBLIC_KEY, else the private key file's.",
        ),
    ] = False,
    checkpoint_log: Annotated[
        str | None, typer.Argument(metavar="[FILE]", help="The checkpoint log that --checkpoints reads.", show_default=False)
    ] = None,
) -> None:
    """Verify the hash chain, per-stream versions, position order and the head anchor; with
    --checkpoints, also that no signed checkpoint was truncated away or forged."""
    from infra.cli.checkpoints import check_checkpoints, print_checkpoint_report
    from replay.chain import verify_ledger

    if checkpoint_log is not None and not checkpoints:
        _fail(f"{checkpoint_log!r} would be a checkpoint log: pass it as --checkpoints {checkpoint_log}", EXIT_BAD_INPUT)
    settings = _settings(ledger)
    store = _open(settings, create=False)
    try:
        report = verify_ledger(store)
        anchored = check_checkpoints(store, settings, checkpoint_log) if checkpoints else None
    except LedgerError as exc:
        _fail(str(exc), EXIT_BAD_INPUT)
    ok = report.ok and (anchored is None or anchored.ok)
    if as_json:
        _print_json(report.as_dict() if anchored is None else {**report.as_dict(), "ok": ok, "chain_ok": report.ok, "checkpoints": anchored.as_dict()})
    else:
        if report.ok:
            out.print(f"ok: {report.records_checked} records, {report.streams_checked} streams, head {report.head_position} {report.head_hash}")
        else:
            err.print(f"[bold red]ledger verification failed[/] at position {report.position}: {report.code}: {report.message}")
        if anchored is not None:
            print_checkpoint_report(anchored)
    raise typer.Exit(EXIT_OK if ok else EXIT_CHECK_FAILED)
