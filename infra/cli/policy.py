"""`titan policy show|hash|activate`: the account's risk policy."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from commands.ports import Ledger
from infra.bootstrap import bootstrap
from infra.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_CHECK_FAILED,
    EXIT_OK,
    AccountOpt,
    JsonOpt,
    LedgerOpt,
    out,
)
from infra.cli.common import fail as _fail
from infra.cli.common import open_or_fail as _open
from infra.cli.common import print_json as _print_json
from infra.cli.common import read_policy_file as _read_policy_file
from infra.cli.common import settings_for as _settings
from infra.cli.common import writer as _writer
from schemas.policy import policy_hash


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    """Add the policy commands."""
    groups["policy"].command("hash")(policy_hash_cmd)
    groups["policy"].command("show")(policy_show)
    groups["policy"].command("activate")(policy_activate)


def policy_hash_cmd(file: Annotated[Path, typer.Argument(help="A policy JSON document.")]) -> None:
    """Print a policy document's hash (SHA-256 of its canonical JSON)."""
    out.print(policy_hash(_read_policy_file(file)))


def policy_show(ledger: LedgerOpt = None, account: AccountOpt = None, as_json: JsonOpt = False) -> None:
    """Show the account's active policy and its hash."""
    settings = _settings(ledger, account)
    bus = bootstrap(settings, ledger=_open(settings, create=False))
    current = bus.state(settings.account_id)
    if current.policy is None:
        _fail(f"account {settings.account_id!r} has no active policy (run `titan init`)", EXIT_BAD_INPUT)
    document = _active_document(bus.ctx.ledger, settings.account_id, current.policy_hash)
    result = {"account_id": settings.account_id, "policy_hash": current.policy_hash, "policy": document}
    if as_json:
        _print_json(result)
    else:
        out.print(f"policy {current.policy.policy_id}  hash {current.policy_hash}")
        out.print_json(orjson.dumps(document).decode())


def _active_document(ledger: Ledger, account_id: str, active_hash: str) -> Any:
    document: Any = None
    for record in ledger.read_stream(f"account-{account_id}"):
        if record.type == "policy.activated.v1" and record.envelope["data"]["policy_hash"] == active_hash:
            document = record.envelope["data"]["policy"]
    return document


def policy_activate(
    file: Annotated[Path, typer.Argument(help="A policy JSON document.")],
    ledger: LedgerOpt = None,
    account: AccountOpt = None,
    actor: Annotated[str, typer.Option(help="Who activates it (recorded).")] = "operator",
    as_json: JsonOpt = False,
) -> None:
    """Activate a policy for the account (recorded in the ledger, stamped with the time of receipt)."""
    from infra.submit import activate_policy

    document = _read_policy_file(file)
    settings = _settings(ledger, account)
    with _writer(settings, "policy activate", [settings.account_id]) as bus:
        outcome = activate_policy(bus, settings.account_id, document, actor)
    if as_json:
        _print_json(outcome.to_json())
    else:
        out.print(f"{outcome.outcome}: policy {policy_hash(document)}" + (f" ({outcome.reason})" if outcome.reason else ""))
    raise typer.Exit(EXIT_OK if outcome.outcome != "rejected" else EXIT_CHECK_FAILED)
