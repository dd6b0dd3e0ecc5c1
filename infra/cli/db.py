"""`titan db upgrade|status`: the PostgreSQL ledger's schema migrations (docs/postgres.md).

Exit codes: 0 done / up to date, 1 `status` found pending or changed migrations, 2 bad input
(not a PostgreSQL URL, not a titan database, a migration that fails), 3 server unreachable.
"""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.table import Table

from adapters.postgres.migrations import SchemaStatus, status, upgrade
from commands.ports import LedgerError, LedgerUnreachable
from infra.bootstrap import POSTGRES_SCHEMES
from infra.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_CHECK_FAILED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    JsonOpt,
    LedgerOpt,
    fail,
    out,
    print_json,
    settings_for,
)


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    """Add the `db` command group."""
    group = typer.Typer(help="The PostgreSQL ledger's schema: upgrade it, show its migrations.", no_args_is_help=True)
    app.add_typer(group, name="db")
    groups["db"] = group
    group.command("upgrade")(upgrade_cmd)
    group.command("status")(status_cmd)


def upgrade_cmd(ledger: LedgerOpt = None, as_json: JsonOpt = False) -> None:
    """Apply every pending migration, in order, each in its own transaction (idempotent)."""
    url = _postgres_url(ledger)
    try:
        applied, after = upgrade(url)
    except LedgerError as exc:
        _fail(exc)
    if as_json:
        print_json({**after.as_dict(), "applied_now": [m.filename for m in applied]})
    elif applied:
        for migration in applied:
            out.print(f"applied {migration.filename}")
        out.print(f"{after.url} is up to date ({len(after.applied)} migrations)")
    else:
        out.print(f"{after.url} is already up to date ({len(after.applied)} migrations); nothing to do")


def status_cmd(ledger: LedgerOpt = None, as_json: JsonOpt = False) -> None:
    """Show applied and pending migrations; exit 1 when any is pending or changed."""
    url = _postgres_url(ledger)
    try:
        current = status(url)
    except LedgerError as exc:
        _fail(exc)
    if as_json:
        print_json(current.as_dict())
    else:
        _print_status(current)
    raise typer.Exit(EXIT_OK if current.up_to_date else EXIT_CHECK_FAILED)


def _print_status(current: SchemaStatus) -> None:
    table = Table("version", "migration", "state", "applied at", title=current.url)
    changed = {applied.version for applied, _ in current.changed}
    for applied in current.applied:
        state = "CHANGED since applied" if applied.version in changed else "applied"
        if applied in current.unknown:
            state = "applied (no such file here)"
        table.add_row(f"{applied.version:04d}", applied.name, state, applied.applied_at.isoformat(timespec="seconds"))
    for migration in current.pending:
        table.add_row(f"{migration.version:04d}", migration.name, "pending", "")
    out.print(table)
    if current.pending:
        out.print(f"{len(current.pending)} pending: run `titan db upgrade --ledger URL`")
    elif not current.changed:
        out.print("up to date")


def _postgres_url(ledger: str | None) -> str:
    url = settings_for(ledger).ledger_url
    if not url.startswith(POSTGRES_SCHEMES):
        fail(
            f"`titan db` manages a PostgreSQL ledger; {url!r} is not a postgresql:// URL "
            "(the embedded ledger needs no migrations)",
            EXIT_BAD_INPUT,
        )
    return url


def _fail(exc: LedgerError) -> NoReturn:
    fail(str(exc), EXIT_UNREACHABLE if isinstance(exc, LedgerUnreachable) else EXIT_BAD_INPUT)
