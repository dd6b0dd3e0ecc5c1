"""`titan init`, `submit`, `state` and the operator actions: the account's command side, written
under its writer lease (docs/decisions.md, "One writer per account")."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Annotated

import orjson
import typer
from pydantic import ValidationError
from rich.table import Table

from adapters.redact import redact
from infra.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_CHECK_FAILED,
    EXIT_OK,
    AccountOpt,
    JsonOpt,
    LedgerOpt,
    out,
    printable,
    read_commands_input,
)
from infra.cli.common import fail as _fail
from infra.cli.common import open_or_fail as _open
from infra.cli.common import print_json as _print_json
from infra.cli.common import settings_for as _settings
from infra.cli.common import writer as _writer
from infra.cli.replay import NoSnapshotsOpt, note_snapshots_used, reader_snapshots
from infra.submit import (
    MAX_ACCOUNTS_PER_SUBMIT,
    InvalidLine,
    accounts_of,
    decide_lines,
    ensure_initialized,
    parse_lines,
)
from schemas.intake import errors_of


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    """Add the account commands."""
    app.command()(init)
    app.command()(submit)
    app.command()(state)
    for action, summary in OPERATOR_COMMANDS:
        app.command(action)(operator_command(action, summary))


def init(ledger: LedgerOpt = None, account: AccountOpt = None, as_json: JsonOpt = False) -> None:
    """Create the ledger (if needed) with the default policy active for the account."""
    settings = _settings(ledger, account)
    with _writer(settings, "init", [settings.account_id]) as bus:
        outcome = ensure_initialized(bus, settings.account_id)
        state = bus.state(settings.account_id)
    shown = redact(settings.ledger_url)
    result = {
        "ledger": shown,
        "account_id": settings.account_id,
        "policy_hash": state.policy_hash or None,
        "initialized": outcome is not None and outcome.outcome == "accepted",
    }
    if as_json:
        _print_json(result)
    elif result["initialized"]:
        out.print(f"initialized {shown}: account {settings.account_id}, policy {state.policy_hash}")
    else:
        out.print(f"{shown} already has account {settings.account_id} (policy {state.policy_hash or 'none'})")


def submit(
    file: Annotated[str, typer.Argument(help="A file of JSON-lines commands, or - for standard input.")] = "-",
    ledger: LedgerOpt = None,
    account: AccountOpt = None,
) -> None:
    """Decide each command of a JSON-lines file in order; print one JSON line per command."""
    settings = _settings(ledger, account)
    latest_ts_ns = time.time_ns() + settings.max_future_skew_s * 1_000_000_000
    parsed = parse_lines(read_commands_input(file).splitlines(), latest_ts_ns=latest_ts_ns)
    accounts = accounts_of(parsed, settings.account_id)
    if len(accounts) > MAX_ACCOUNTS_PER_SUBMIT:
        _fail(
            f"{file!r} names {len(accounts)} accounts; one submit writes at most {MAX_ACCOUNTS_PER_SUBMIT} "
            "(it holds each account's writer lease): split the file by account",
            EXIT_BAD_INPUT,
        )
    invalid = 0
    with _writer(settings, "submit", accounts) as bus:
        ensure_initialized(bus, settings.account_id)
        for result in decide_lines(bus, parsed):
            invalid += isinstance(result, InvalidLine)
            sys.stdout.write(orjson.dumps(result.to_json()).decode() + "\n")
        sys.stdout.flush()
    raise typer.Exit(EXIT_BAD_INPUT if invalid else EXIT_OK)



def state(
    ledger: LedgerOpt = None, account: AccountOpt = None, as_json: JsonOpt = False, no_snapshots: NoSnapshotsOpt = False
) -> None:
    """Show the account's mode, policy hash, positions and open orders. The fold starts from the
    newest trusted stored snapshot (said on stderr) unless --no-snapshots."""
    from commands.accounts import AccountCache
    from commands.envelope import account_stream
    from commands.views import breaker_history, state_view
    from infra.core import load_core

    settings = _settings(ledger, account)
    store = _open(settings, create=False)
    core = load_core(settings.core)
    snapshots = reader_snapshots(store, no_snapshots)  # the fold starts from the newest trusted one
    try:
        stream_id = account_stream(settings.account_id)
        current, _ = AccountCache(core, store, snapshots).current(settings.account_id, stream_id)
        view = state_view(core, current)
        view["breaker_transitions"] = breaker_history(store.read_stream(stream_id))
    finally:
        if snapshots is not None:
            snapshots.close()
    note_snapshots_used(snapshots.used if snapshots is not None else ())
    if as_json:
        _print_json(view)
        return
    view = printable(view)
    out.print(f"account [bold]{view['account_id']}[/]  mode [bold]{view['mode']}[/]  policy {view['policy_id']} {view['policy_hash']}")
    breaker = view["breaker"]
    out.print(
        f"breaker [bold]{breaker['state']}[/]  regime {view['regime']}  equity {view['equity']}  "
        f"drawdown {view['drawdown_bps']} bps  day pnl {view['budget']['day_pnl']}  phases {view['allowed_phases']}"
    )
    for venue, truth in view["truth"].items():
        out.print(f"truth {venue}: {truth['score']}")
    for trigger in breaker["active_triggers"]:
        out.print(f"active trigger: {trigger['trigger']} -> {trigger['level']} {trigger['values']}")
    for t in view["breaker_transitions"]:
        out.print(f"breaker {t['from_state']} -> {t['to_state']} ({t['trigger']}) by {t['actor']} {t['values'] or ''} {t['reason']}")
    positions = Table("venue", "symbol", "quantity", "avg price", "realized pnl", "fees", "mark", title="positions")
    for p in view["positions"]:
        positions.add_row(p["venue"], p["symbol"], p["quantity"], p["avg_price"], p["realized_pnl"], p["fees"], p["mark_price"] or "")
    out.print(positions)
    orders = Table("order", "venue", "symbol", "side", "price", "qty", "filled", "status", title="open orders")
    for o in view["open_orders"]:
        orders.add_row(o["order_id"], o["venue"], o["symbol"], o["side"], o["price"], o["quantity"], o["filled_quantity"], o["status"])
    out.print(orders)


def _operator(
    action: str, reason: str, actor: str, ledger: str | None, account: str | None, as_json: bool, wait_s: float = 0.0
) -> None:
    from infra.submit import operator_action

    if not reason.strip():
        _fail("--reason must say why (it is recorded in the ledger)", EXIT_BAD_INPUT)
    settings = _settings(ledger, account)
    with _writer(settings, action, [settings.account_id], wait_s=wait_s) as bus:
        ensure_initialized(bus, settings.account_id)
        try:
            outcome = operator_action(bus, settings.account_id, action, actor, reason)
        except ValidationError as exc:  # a reason or actor outside its bound: nothing is recorded
            problems = "; ".join(f"{e['field']}: {e['error']}" for e in errors_of(exc, "(action)"))
            _fail(f"{action} was not recorded: {problems}", EXIT_BAD_INPUT)
        breaker = bus.state(settings.account_id).brain.breaker
    if as_json:
        _print_json(outcome.to_json())
    else:
        line = f"{action}: {outcome.outcome}" + (f" ({outcome.reason})" if outcome.reason else "")
        out.print(line + f"; breaker {breaker}")
    raise typer.Exit(EXIT_OK if outcome.outcome == "accepted" else EXIT_CHECK_FAILED)


ReasonOpt = Annotated[str, typer.Option("--reason", help="Why (recorded in the ledger with the actor).")]


ActorOpt = Annotated[str, typer.Option("--actor", help="Who acts (recorded).")]
WaitOpt = Annotated[
    float,
    typer.Option("--wait", min=0, max=3600, help="Seconds to keep asking for the account's lease while another writer holds it."),
]


OPERATOR_COMMANDS: tuple[tuple[str, str], ...] = (
    ("halt", "Halt the account: the breaker goes HALTED (only reduce-only orders and cancels pass)."),
    ("flatten", "Halt, cancel every open order and close every position with reduce-only orders."),
    ("resume", "Re-enable trading from HALTED (refused while any breaker trigger is active)."),
    ("arm", "Allow orders to live venues."),
    ("disarm", "Stop orders to live venues (the paper venue still trades)."),
)


def operator_command(action: str, summary: str) -> Callable[..., None]:
    """The CLI command of one operator action (they differ only in the action and its summary)."""

    def command(
        reason: ReasonOpt,
        actor: ActorOpt = "operator",
        ledger: LedgerOpt = None,
        account: AccountOpt = None,
        as_json: JsonOpt = False,
        wait: WaitOpt = 0.0,
    ) -> None:
        _operator(action, reason, actor, ledger, account, as_json, wait)

    command.__name__ = action
    command.__doc__ = summary
    return command
