"""`titan ledger verify`: the hash chain, the anchor, and the anchors outside the database: the
signed checkpoint log (--checkpoints) and the JetStream mirror (--mirror)."""

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
    mirror: Annotated[
        bool,
        typer.Option(
            "--mirror",
            help="Also prove the JetStream mirror (TITAN_NATS_URL) matches the ledger record for record; "
            "a ledger shorter than its mirror is a truncated tail.",
        ),
    ] = False,
    checkpoints_mirror: Annotated[
        bool,
        typer.Option(
            "--checkpoints-mirror",
            help="Also check the ledger against its signed checkpoints on JetStream (TITAN_CHECKPOINTS, TITAN_NATS_URL), "
            "as --checkpoints does the file's; with --checkpoints too, name every mirrored line the file lacks or holds "
            "differently (the file rolled back).",
        ),
    ] = False,
    checkpoint_log: Annotated[
        str | None, typer.Argument(metavar="[FILE]", help="The checkpoint log that --checkpoints reads.", show_default=False)
    ] = None,
) -> None:
    """Verify the hash chain, per-stream versions, position order and the head anchor; with
    --checkpoints, also that no signed checkpoint was truncated away or forged; with --mirror, that
    the JetStream mirror holds the same records (a truncated or forged tail disagrees with it); with
    --checkpoints-mirror, the same as --checkpoints against the checkpoints on JetStream."""
    from pathlib import Path

    from infra.checkpointing import log_for
    from infra.cli.checkpoints import (
        check_checkpoint_mirror,
        check_checkpoints,
        print_checkpoint_mirror_report,
        print_checkpoint_report,
    )
    from infra.cli.relay import mirror_report, print_mirror_report
    from infra.collector import tuned_for_pass
    from replay.chain import verify_ledger

    if checkpoint_log is not None and not checkpoints:
        _fail(f"{checkpoint_log!r} would be a checkpoint log: pass it as --checkpoints {checkpoint_log}", EXIT_BAD_INPUT)
    settings = _settings(ledger)
    store = _open(settings, create=False)
    try:
        with tuned_for_pass():
            report = verify_ledger(store)
        anchored = check_checkpoints(store, settings, checkpoint_log) if checkpoints else None
        mirrored = mirror_report(store, settings) if mirror else None
        file: Path | None = log_for(settings, checkpoint_log) if checkpoints else None
        anchors = check_checkpoint_mirror(store, settings, file) if checkpoints_mirror else None
    except LedgerError as exc:
        _fail(str(exc), EXIT_BAD_INPUT)
    finally:
        store.close()
    ok = (
        report.ok
        and (anchored is None or anchored.ok)
        and (mirrored is None or mirrored.ok)
        and (anchors is None or anchors.ok)
    )
    if as_json:
        document = report.as_dict()
        if anchored is not None or mirrored is not None or anchors is not None:
            document = {**document, "ok": ok, "chain_ok": report.ok}
        if anchored is not None:
            document["checkpoints"] = anchored.as_dict()
        if mirrored is not None:
            document["mirror"] = mirrored.as_dict()
        if anchors is not None:
            document["checkpoints_mirror"] = anchors.as_dict()
        _print_json(document)
    else:
        if report.ok:
            out.print(f"ok: {report.records_checked} records, {report.streams_checked} streams, head {report.head_position} {report.head_hash}")
        else:
            err.print(f"[bold red]ledger verification failed[/] at position {report.position}: {report.code}: {report.message}")
        if anchored is not None:
            print_checkpoint_report(anchored)
        if mirrored is not None:
            print_mirror_report(mirrored)
        if anchors is not None:
            print_checkpoint_mirror_report(anchors)
    raise typer.Exit(EXIT_OK if ok else EXIT_CHECK_FAILED)
