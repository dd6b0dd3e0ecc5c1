"""`titan ledger keygen|checkpoint` and `titan ledger verify --checkpoints`: signed checkpoints.

Exit codes: 0 ok; 1 a check failed (the ledger does not extend the last checkpoint, a checkpoint
names a truncation or a forgery, a line's signature does not verify); 2 bad input (no key, an
existing key file, no checkpoint log, an empty ledger); 3 the ledger's server unreachable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer

from adapters.checkpoint_file import CheckpointFileError, public_key_hex, write_new_key
from commands.ports import Ledger, LedgerError, LedgerUnreachable
from infra.checkpointing import (
    CheckpointError,
    checkpoint_paths,
    log_for,
    verify_log,
    verifying_key,
    write_checkpoint,
)
from infra.cli.common import (
    EXIT_BAD_INPUT,
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
from infra.settings import Settings
from replay.checkpoints import CheckpointReport, key_id

SHOWN_FINDINGS = 20


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    """Add `ledger keygen` and `ledger checkpoint`."""
    groups["ledger"].command("keygen")(keygen_cmd)
    groups["ledger"].command("checkpoint")(checkpoint_cmd)


def _fail(error: CheckpointError) -> NoReturn:
    fail(str(error), error.exit_code)


def keygen_cmd(
    out_path: Annotated[
        Path | None,
        typer.Option("--out", help="Where to write the private key (default: TITAN_CHECKPOINT_KEY, else checkpoint.key beside the ledger)."),
    ] = None,
    ledger: LedgerOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an Ed25519 checkpoint key (a new 0600 file) and print its public key."""
    path = out_path or checkpoint_paths(settings_for(ledger)).key
    if path is None:
        fail("an in-memory ledger has no default key path: pass --out PATH", EXIT_BAD_INPUT)
    try:
        public = write_new_key(path)
    except CheckpointFileError as error:
        fail(str(error), EXIT_BAD_INPUT)
    result = {"private_key": str(path), "public_key": public_key_hex(public), "key_id": key_id(public)}
    if as_json:
        print_json(result)
        return
    out.print(f"wrote private key {path} (mode 0600; keep it off the database's host if you can)")
    out.print(f"public key {result['public_key']} (key id {result['key_id']})")
    out.print(f"verify anywhere with: TITAN_CHECKPOINT_PUBLIC_KEY={result['public_key']} titan ledger verify --checkpoints FILE")


def checkpoint_cmd(
    ledger: LedgerOpt = None,
    key: Annotated[Path | None, typer.Option("--key", help="The private key (default: TITAN_CHECKPOINT_KEY, else beside the ledger).")] = None,
    file: Annotated[Path | None, typer.Option("--file", help="The checkpoint log (default: TITAN_CHECKPOINT_FILE, else beside the ledger).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Sign the ledger's head and append it to the checkpoint log, once the chain since the last
    checkpoint is checked."""
    settings = settings_for(ledger)
    store = open_or_fail(settings, create=False)
    try:
        checkpoint = write_checkpoint(store, settings, key=key, log=file)
    except CheckpointError as error:
        _fail(error)
    except LedgerError as error:
        fail(str(error), EXIT_UNREACHABLE if isinstance(error, LedgerUnreachable) else EXIT_BAD_INPUT)
    finally:
        store.close()
    assert checkpoint is not None  # only `only_if_moved` writes nothing
    log = file or checkpoint_paths(settings).log
    if as_json:
        print_json({"file": str(log), "checkpoint": checkpoint.payload()})
        return
    out.print(
        f"checkpoint: position {checkpoint.position} hash {checkpoint.hash} "
        f"({checkpoint.record_count} records) appended to {log}"
    )


def check_checkpoints(store: Ledger, settings: Settings, given: str | None) -> CheckpointReport:
    """The ledger checked against its checkpoint log, or exit 2 when the log or key is unusable."""
    try:
        return verify_log(store, log_for(settings, given), verifying_key(settings))
    except CheckpointError as error:
        _fail(error)


def print_checkpoint_report(report: CheckpointReport) -> None:
    """One line when the checkpoints hold; else one line per finding (the first few)."""
    if report.ok:
        last = report.last
        where = "" if last is None else f", the last at position {last.position} ({last.hash})"
        out.print(
            f"checkpoints ok: {report.checkpoints} signed checkpoint{'s' if report.checkpoints != 1 else ''} "
            f"agree{'s' if report.checkpoints == 1 else ''} with the ledger{where}; "
            f"the ledger ends at {report.ledger_end}"
        )
        return
    for finding in report.findings[:SHOWN_FINDINGS]:
        err.print(f"[bold red]checkpoints:[/] {finding.message}")
    if len(report.findings) > SHOWN_FINDINGS:
        err.print(f"… and {len(report.findings) - SHOWN_FINDINGS} more (--json lists every one)")
