"""The `titan` command line. Entry points only build commands and hand them to the bus.

Exit codes (SPEC §8): 0 ok, 1 a check failed, 2 bad usage or input, 3 a dependency unreachable.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from pydantic import ValidationError
from rich.markup import escape
from rich.table import Table

from adapters.redact import redact
from commands.lease import LeaseRefused
from commands.ports import Ledger, LedgerError, LedgerUnreachable
from schemas.intake import errors_of
from schemas.policy import policy_hash

from . import demo as demo_session
from .bootstrap import bootstrap
from .cli_common import (
    EXIT_BAD_INPUT,
    EXIT_BUSY,
    EXIT_CHECK_FAILED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    AccountOpt,
    JsonOpt,
    LedgerOpt,
    err,
    out,
    writer_for,
)
from .cli_common import fail as _fail
from .cli_common import open_or_fail as _open
from .cli_common import print_json as _print_json
from .cli_common import read_policy_file as _read_policy_file
from .cli_common import settings_for as _settings
from .cli_common import writer as _writer
from .core import compiled_core_active
from .submit import (
    MAX_ACCOUNTS_PER_SUBMIT,
    InvalidLine,
    accounts_named,
    ensure_initialized,
    submit_lines,
)
from .version import titan_version

app = typer.Typer(
    help="titan: the event-sourced control plane and replayable ledger of the Titan trading system.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
policy_app = typer.Typer(help="Risk policies: show the active one, hash a file, activate one.", no_args_is_help=True)
ledger_app = typer.Typer(help="The ledger itself: verify its hash chain.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")
app.add_typer(ledger_app, name="ledger")

@app.command()
def version(as_json: JsonOpt = False) -> None:
    """Print the version and whether the compiled core is active."""
    info = {
        "version": titan_version(),
        "core": "compiled" if compiled_core_active() else "interpreted",
        "python": sys.version.split()[0],
    }
    if as_json:
        _print_json(info)
    else:
        out.print(f"titan {info['version']} (core: {info['core']}, python {info['python']})")


@app.command()
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


@app.command()
def submit(
    file: Annotated[str, typer.Argument(help="A file of JSON-lines commands, or - for standard input.")] = "-",
    ledger: LedgerOpt = None,
    account: AccountOpt = None,
) -> None:
    """Decide each command of a JSON-lines file in order; print one JSON line per command."""
    settings = _settings(ledger, account)
    if file == "-":
        lines = sys.stdin.buffer.read().splitlines()
    else:
        try:
            lines = Path(file).read_bytes().splitlines()
        except OSError as exc:
            _fail(f"cannot read {file!r}: {exc.strerror}", EXIT_BAD_INPUT)
    accounts = accounts_named(lines, settings.account_id)
    if len(accounts) > MAX_ACCOUNTS_PER_SUBMIT:
        _fail(
            f"{file!r} names {len(accounts)} accounts; one submit writes at most {MAX_ACCOUNTS_PER_SUBMIT} "
            "(it holds each account's writer lease): split the file by account",
            EXIT_BAD_INPUT,
        )
    invalid = 0
    with _writer(settings, "submit", accounts) as bus:
        ensure_initialized(bus, settings.account_id)
        latest_ts_ns = time.time_ns() + settings.max_future_skew_s * 1_000_000_000
        for result in submit_lines(bus, lines, latest_ts_ns=latest_ts_ns):
            invalid += isinstance(result, InvalidLine)
            sys.stdout.write(orjson.dumps(result.to_json()).decode() + "\n")
        sys.stdout.flush()
    raise typer.Exit(EXIT_BAD_INPUT if invalid else EXIT_OK)


@app.command()
def state(ledger: LedgerOpt = None, account: AccountOpt = None, as_json: JsonOpt = False) -> None:
    """Show the account's mode, policy hash, positions and open orders."""
    from commands.envelope import account_stream
    from commands.views import breaker_history, state_view

    settings = _settings(ledger, account)
    bus = bootstrap(settings, ledger=_open(settings, create=False))
    view = state_view(bus.ctx.core, bus.state(settings.account_id))
    view["breaker_transitions"] = breaker_history(bus.ctx.ledger.read_stream(account_stream(settings.account_id)))
    if as_json:
        _print_json(view)
        return
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


def _operator(action: str, reason: str, actor: str, ledger: str | None, account: str | None, as_json: bool) -> None:
    from .submit import operator_action

    if not reason.strip():
        _fail("--reason must say why (it is recorded in the ledger)", EXIT_BAD_INPUT)
    settings = _settings(ledger, account)
    with _writer(settings, action, [settings.account_id]) as bus:
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


@app.command()
def halt(reason: ReasonOpt, actor: ActorOpt = "operator", ledger: LedgerOpt = None, account: AccountOpt = None, as_json: JsonOpt = False) -> None:
    """Halt the account: the breaker goes HALTED (only reduce-only orders and cancels pass)."""
    _operator("halt", reason, actor, ledger, account, as_json)


@app.command()
def flatten(reason: ReasonOpt, actor: ActorOpt = "operator", ledger: LedgerOpt = None, account: AccountOpt = None, as_json: JsonOpt = False) -> None:
    """Halt, cancel every open order and close every position with reduce-only orders."""
    _operator("flatten", reason, actor, ledger, account, as_json)


@app.command()
def resume(reason: ReasonOpt, actor: ActorOpt = "operator", ledger: LedgerOpt = None, account: AccountOpt = None, as_json: JsonOpt = False) -> None:
    """Re-enable trading from HALTED (refused while any breaker trigger is active)."""
    _operator("resume", reason, actor, ledger, account, as_json)


@app.command()
def arm(reason: ReasonOpt, actor: ActorOpt = "operator", ledger: LedgerOpt = None, account: AccountOpt = None, as_json: JsonOpt = False) -> None:
    """Allow orders to live venues."""
    _operator("arm", reason, actor, ledger, account, as_json)


@app.command()
def disarm(reason: ReasonOpt, actor: ActorOpt = "operator", ledger: LedgerOpt = None, account: AccountOpt = None, as_json: JsonOpt = False) -> None:
    """Stop orders to live venues (the paper venue still trades)."""
    _operator("disarm", reason, actor, ledger, account, as_json)


@policy_app.command("hash")
def policy_hash_cmd(file: Annotated[Path, typer.Argument(help="A policy JSON document.")]) -> None:
    """Print a policy document's hash (SHA-256 of its canonical JSON)."""
    out.print(policy_hash(_read_policy_file(file)))


@policy_app.command("show")
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


@policy_app.command("activate")
def policy_activate(
    file: Annotated[Path, typer.Argument(help="A policy JSON document.")],
    ledger: LedgerOpt = None,
    account: AccountOpt = None,
    actor: Annotated[str, typer.Option(help="Who activates it (recorded).")] = "operator",
    as_json: JsonOpt = False,
) -> None:
    """Activate a policy for the account (recorded in the ledger, stamped with the time of receipt)."""
    from .submit import activate_policy

    document = _read_policy_file(file)
    settings = _settings(ledger, account)
    with _writer(settings, "policy activate", [settings.account_id]) as bus:
        outcome = activate_policy(bus, settings.account_id, document, actor)
    if as_json:
        _print_json(outcome.to_json())
    else:
        out.print(f"{outcome.outcome}: policy {policy_hash(document)}" + (f" ({outcome.reason})" if outcome.reason else ""))
    raise typer.Exit(EXIT_OK if outcome.outcome != "rejected" else EXIT_CHECK_FAILED)


@ledger_app.command("verify")
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
    from replay.chain import verify_ledger

    from .cli_ledger_checkpoints import check_checkpoints, print_checkpoint_report

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


@app.command()
def demo(
    seed: Annotated[int, typer.Option(help="Seed of the simulated session (same seed, same ledger).")] = 7,
    orders: Annotated[int, typer.Option(min=1, max=1_000_000, help="How many order intents to simulate.")] = 500,
    ledger: LedgerOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run a seeded simulated trading session through the command bus, then summarize it."""
    url = ledger or demo_session.fresh_ledger_url(seed)
    settings = _settings(url)
    store = _open(settings)
    if store.head()[2] != 0:
        _fail(f"ledger {url} is not empty; the demo writes into a new ledger (omit --ledger, or name a new file)", EXIT_BAD_INPUT)
    with writer_for(settings, store, "demo", [demo_session.ACCOUNT]) as bus:
        summary = demo_session.run(bus, seed=seed, orders=orders, ledger_url=redact(url), progress=not as_json and sys.stderr.isatty())
    if as_json:
        _print_json(summary)
    else:
        demo_session.print_summary(out, summary)


@app.command()
def bench(
    commands: Annotated[int, typer.Option(min=1000, help="How many commands per core measurement.")] = 100_000,
    pg_url: Annotated[
        str | None,
        typer.Option("--pg-url", help="PostgreSQL for the durable and baseline figures (default TITAN_TEST_PG_URL; 'none' skips)."),
    ] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Every figure at a reduced size (under a minute).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Every figure side by side: both cores, embedded and PostgreSQL ledgers (group commit),
    the eventsourcing baseline, replay verify, projection rebuild and export."""
    import os

    from . import bench as benchmark

    url = pg_url or os.environ.get("TITAN_TEST_PG_URL") or "postgresql://postgres@127.0.0.1:5432/test"
    results = benchmark.run(commands, pg_url=None if url == "none" else url, quick=quick)
    if as_json:
        _print_json(results)
    else:
        benchmark.print_results(out, results)


# Areas register their own commands: each infra/cli_<area>.py has register(app, groups).
GROUPS: dict[str, typer.Typer] = {"policy": policy_app, "ledger": ledger_app}
for _area in (__import__("infra.cli_replay", fromlist=["register"]), __import__("infra.cli_projections", fromlist=["register"]), __import__("infra.cli_db", fromlist=["register"])):
    _area.register(app, GROUPS)
__import__("infra.cli_ledger_checkpoints", fromlist=["register"]).register(app, GROUPS)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except ImportError as exc:  # a stale compiled core refuses to load
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        sys.exit(EXIT_UNREACHABLE)
    except LedgerUnreachable as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        sys.exit(EXIT_UNREACHABLE)
    except LeaseRefused as exc:  # another writer holds the account: nothing was written
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        sys.exit(EXIT_BUSY)
    except LedgerError as exc:  # a corrupt record, a ledger that cannot be written: said plainly
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        sys.exit(EXIT_BAD_INPUT)



if __name__ == "__main__":
    main()
