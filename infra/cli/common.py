"""What every `titan` subcommand module shares: exit codes, options, output, opening the ledger.

Subcommands live in `infra/cli_<area>.py` modules, each with `register(app)`; `infra/cli.py`
builds the app and registers them.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import orjson
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from commands.lease import LeaseRefused
from commands.ports import Ledger, LedgerError, LedgerUnreachable
from infra.bootstrap import account_writer, open_ledger
from infra.checkpointing import CheckpointError, checkpoint_if_configured
from infra.settings import Settings
from schemas.intake import WireInputError, parse_new_policy
from schemas.policy import PolicyDocument

if TYPE_CHECKING:
    from commands.handlers import Bus

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_UNREACHABLE = 3
EXIT_BUSY = 4
"""Another writer holds the account's lease: nothing was written (try again when it is done)."""

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

LedgerOpt = Annotated[
    str | None,
    typer.Option("--ledger", help="Ledger URL (default: TITAN_LEDGER_URL, else sqlite:///.titan/ledger.db)."),
]
AccountOpt = Annotated[str | None, typer.Option("--account", help="Account id (default: TITAN_ACCOUNT_ID, else main).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]


def settings_for(ledger: str | None = None, account: str | None = None) -> Settings:
    """Settings from the environment, with the command line's --ledger/--account on top."""
    overrides: dict[str, Any] = {}
    if ledger:
        overrides["ledger_url"] = ledger
    if account:
        overrides["account_id"] = account
    try:
        return Settings(**overrides)
    except ValidationError as exc:  # a bad --account or TITAN_* value: named, exit 2
        problems = "; ".join(
            f"{'--account' if e['loc'] == ('account_id',) and account else 'TITAN_' + '_'.join(map(str, e['loc'])).upper()}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        )
        fail(f"bad setting: {problems}", EXIT_BAD_INPUT)


def fail(message: str, code: int) -> NoReturn:
    """Print an error naming what was wrong and exit with the code."""
    err.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def print_json(document: Any) -> None:
    """Pretty, sorted JSON on stdout."""
    sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n")


def read_commands_input(file: str) -> bytes:
    """A commands file (or - for standard input), whole, at most MAX_SUBMIT_BYTES: `titan submit`
    reads everything before deciding, `titan send` before publishing. Exit 2 naming the problem."""
    from infra.submit import MAX_SUBMIT_BYTES

    try:
        if file == "-":
            data = sys.stdin.buffer.read(MAX_SUBMIT_BYTES + 1)
        else:
            with open(file, "rb") as source:
                data = source.read(MAX_SUBMIT_BYTES + 1)
    except OSError as exc:
        fail(f"cannot read {file!r}: {exc.strerror}", EXIT_BAD_INPUT)
    if len(data) > MAX_SUBMIT_BYTES:
        fail(
            f"{file!r} holds more than {MAX_SUBMIT_BYTES // (1024 * 1024)} MiB of commands; "
            "split it into smaller files (each is decided in order, under the account's lease)",
            EXIT_BAD_INPUT,
        )
    return data


def print_json_line(document: Any) -> None:
    """One compact JSON line on stdout (the `titan submit` and `titan send` output), flushed."""
    sys.stdout.write(orjson.dumps(document).decode() + "\n")
    sys.stdout.flush()


def open_or_fail(settings: Settings, *, create: bool = True) -> Ledger:
    """The ledger the settings name, or exit with the reason: 3 if its server is unreachable,
    else 2."""
    try:
        return open_ledger(settings.ledger_url, create=create)
    except LedgerError as exc:
        fail(str(exc), EXIT_UNREACHABLE if isinstance(exc, LedgerUnreachable) else EXIT_BAD_INPUT)


def read_policy_file(path: Path) -> PolicyDocument:
    """A validated policy document from a file (every bound of new input applied), or exit 2
    naming the bad fields and their bounds (escaped: a field name may look like console markup)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        fail(f"cannot read policy file {str(path)!r}: {exc.strerror}", EXIT_BAD_INPUT)
    try:
        return parse_new_policy(raw)
    except WireInputError as exc:
        fail(f"{str(path)!r} is not a valid titan policy: {exc}", EXIT_BAD_INPUT)


@contextmanager
def writer_for(
    settings: Settings, ledger: Ledger, purpose: str, account_ids: Sequence[str], *, wait_s: float = 0.0
) -> Iterator[Bus]:
    """A bus over an open ledger that writes under these accounts' leases; a held lease exits 4
    naming its holder, before anything is written. When a checkpoint key is configured, the head
    the writer leaves is signed into the checkpoint log (docs/ledger.md)."""
    try:
        with account_writer(settings, ledger, purpose, account_ids, wait_s=wait_s) as bus:
            yield bus
        checkpoint_if_configured(ledger, settings)  # the new head, signed outside the database
    except LeaseRefused as exc:
        fail(f"{exc}", EXIT_BUSY)
    except CheckpointError as exc:  # what was decided stays recorded; the head could not be signed
        fail(f"the commands were recorded, but no checkpoint was written: {exc}", exc.exit_code)
    finally:
        ledger.close()


@contextmanager
def writer(settings: Settings, purpose: str, account_ids: Sequence[str], *, wait_s: float = 0.0) -> Iterator[Bus]:
    """Open the settings' ledger (creating it) and write under these accounts' leases."""
    with writer_for(settings, open_or_fail(settings), purpose, account_ids, wait_s=wait_s) as bus:
        yield bus


def printable(value: Any) -> Any:
    """A value fit for the terminal, recursively: control characters shown as escapes (a recorded
    reason may hold an ESC sequence an earlier titan accepted) and console markup escaped (a
    reason may hold `[/]`). JSON output is printed as recorded; only text output goes through this."""
    if isinstance(value, str):
        return escape(_CONTROL.sub(_shown, value))
    if isinstance(value, dict):
        return {printable(k): printable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [printable(item) for item in value]
    return value


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def _shown(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group()):02x}"
