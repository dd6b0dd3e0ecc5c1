"""What every `titan` subcommand module shares: exit codes, options, output, opening the ledger.

Subcommands live in `infra/cli_<area>.py` modules, each with `register(app)`; `infra/cli.py`
builds the app and registers them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import orjson
import typer
from pydantic import ValidationError
from rich.console import Console

from commands.ports import Ledger, LedgerError, LedgerUnreachable
from schemas.policy import PolicyDocument

from .bootstrap import open_ledger
from .settings import Settings

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_UNREACHABLE = 3

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
    return Settings(**overrides)


def fail(message: str, code: int) -> NoReturn:
    """Print an error naming what was wrong and exit with the code."""
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def print_json(document: Any) -> None:
    """Pretty, sorted JSON on stdout."""
    sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n")


def open_or_fail(settings: Settings, *, create: bool = True) -> Ledger:
    """The ledger the settings name, or exit with the reason: 3 if its server is unreachable,
    else 2."""
    try:
        return open_ledger(settings.ledger_url, create=create)
    except LedgerError as exc:
        fail(str(exc), EXIT_UNREACHABLE if isinstance(exc, LedgerUnreachable) else EXIT_BAD_INPUT)


def read_policy_file(path: Path) -> PolicyDocument:
    """A validated policy document from a file, or exit 2 naming the bad fields."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        fail(f"cannot read policy file {str(path)!r}: {exc.strerror}", EXIT_BAD_INPUT)
    try:
        return PolicyDocument.model_validate_json(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(document)'}: {e['msg']}" for e in exc.errors())
        fail(f"{str(path)!r} is not a valid titan policy: {problems}", EXIT_BAD_INPUT)
