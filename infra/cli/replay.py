"""`titan replay`, `titan replay verify|what-if`, `titan explain`, `titan ledger export`, `titan audit sql`.

Exit codes (SPEC §8): 0 ok; 1 a check failed (a divergence, a broken chain); 2 bad input (an
unknown id, a point the ledger does not have, a policy that does not validate, an export
directory that is not empty, a query DuckDB refuses); 3 a dependency unavailable (the compiled
core asked for by name).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, cast

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from adapters.redact import redact, redact_text
from commands.ports import Ledger, LedgerError, LedgerUnreachable
from commands.snapshots import SnapshotInfo, Snapshots, used_note
from infra.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_CHECK_FAILED,
    EXIT_UNREACHABLE,
    AccountOpt,
    JsonOpt,
    LedgerOpt,
    err,
    fail,
    open_or_fail,
    out,
    print_json,
    printable,
    read_policy_file,
    settings_for,
)
from infra.core import CoreUnavailableError, load_core
from infra.read_models import READ_SIDE
from infra.version import titan_version
from infra.writers import ledger_snapshots, snapshots_to_prove

UntilOpt = Annotated[
    str | None,
    typer.Option(
        "--until",
        help="A position (e.g. 1200), UTC nanoseconds, or an ISO-8601 UTC time (2026-01-01T00:05:00Z).",
    ),
]
FromOpt = Annotated[
    str | None,
    typer.Option("--from", help="Where the what-if policy takes over: a position or a time (default: the start)."),
]
CoreOpt = Annotated[
    str,
    typer.Option(
        "--core",
        help="Which cores re-decide: both (the compiled one when it is available), compiled, interpreted.",
    ),
]

NoSnapshotsOpt = Annotated[
    bool,
    typer.Option(
        "--no-snapshots",
        help="Fold every account from its first record, ignoring the ledger's stored snapshots "
        "(for forensic work: a snapshot is proved only by `titan replay verify`).",
    ),
]

replay_app = typer.Typer(
    help="Replay the ledger: the state at any point, the determinism gate, what-if under another policy.",
    invoke_without_command=True,
    no_args_is_help=False,
)
audit_app = typer.Typer(help="Auditors' tools: SQL (DuckDB) over a Parquet export or the live ledger.", no_args_is_help=True)


# --- helpers ----------------------------------------------------------------------------------


@contextmanager
def _progress(label: str, total: int | None, enabled: bool) -> Iterator[Callable[[int], None] | None]:
    """A rich progress bar on stderr when it is a terminal; yields the update function (or None)."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda done: bar.update(task, completed=done)


def _ledger(ledger: str | None, ctx: typer.Context | None = None) -> tuple[str, Ledger]:
    url = ledger or (ctx.obj.get("ledger") if ctx is not None and isinstance(ctx.obj, dict) else None)
    settings = settings_for(url)
    return redact(settings.ledger_url), open_or_fail(settings, create=False)


def _require_intact(store: Ledger, url: str) -> None:
    """Replay refuses a ledger whose chain is broken: what it would show could have been altered."""
    from replay.chain import verify_ledger

    try:
        report = verify_ledger(store)
    except LedgerError as error:
        store.close()
        fail(str(error), EXIT_BAD_INPUT)
    if not report.ok:
        store.close()
        fail(
            f"the ledger's hash chain is broken at position {report.position} ({report.code}: {report.message}); "
            f"replay refuses to run on it: run `titan ledger verify --ledger {url}`",
            EXIT_CHECK_FAILED,
        )


def _core() -> Any:
    settings = settings_for()
    return load_core(settings.core)


def _point(text: str | None, option: str) -> Any:
    from replay.points import BadPoint, parse_point

    if text is None:
        return None
    try:
        return parse_point(text)
    except BadPoint as error:
        fail(f"{option} {error}", EXIT_BAD_INPUT)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (dict, list)):
        import orjson

        if not value:
            return "(none)"

        return orjson.dumps(value).decode()
    return str(value)


def _is_nested(value: Any) -> bool:
    if isinstance(value, dict):
        return bool(value)
    return isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value)


def render_view(console: Console, view: dict[str, Any], title: str) -> None:
    """Render any state view: scalars as a grid, lists of objects as tables, objects as grids.

    Generic on purpose: the view grows (the Brain's breaker, truth score, regime, budgets, venue
    quality) and `titan replay` shows whatever it holds without knowing its fields.
    """
    scalars = Table(show_header=False, title=title, title_justify="left", box=None, padding=(0, 2))
    scalars.add_column(style="bold")
    scalars.add_column()
    nested: list[tuple[str, Any]] = []
    for key, value in view.items():
        if _is_nested(value):
            nested.append((key, value))
        elif isinstance(value, list):
            scalars.add_row(key, ", ".join(_cell(v) for v in value) or "(none)")
        else:
            scalars.add_row(key, _cell(value))
    console.print(scalars)
    for key, value in nested:
        if isinstance(value, dict) and all(isinstance(v, dict) for v in value.values()):
            # e.g. truth or venue quality per venue: one row per key
            rows: list[dict[str, Any]] = [{"": k, **v} for k, v in value.items()]
        elif isinstance(value, list):
            rows = [row if isinstance(row, dict) else {"value": row} for row in value]
        else:
            render_view(console, value, key)
            continue
        columns = list(dict.fromkeys(column for row in rows for column in row))
        table = Table(*columns, title=key, title_justify="left")
        for row in rows:
            table.add_row(*(_cell(row.get(c)) for c in columns))
        console.print(table)


def reader_snapshots(store: Ledger, no_snapshots: bool) -> Snapshots | None:
    """The ledger's snapshots for a reader to start from (None with --no-snapshots)."""
    return None if no_snapshots else ledger_snapshots(store)


def note_snapshots_used(used: Iterable[SnapshotInfo]) -> None:
    """Say on stderr, one line each, which stored snapshots an answer started from: stdout (the
    `--json` document too) stays byte for byte what the fold from zero prints."""
    for info in used:
        err.print(printable(used_note(info)), markup=False)


# --- titan replay -----------------------------------------------------------------------------


@replay_app.callback()
def replay_state_cmd(
    ctx: typer.Context,
    until: UntilOpt = None,
    account: AccountOpt = None,
    ledger: LedgerOpt = None,
    as_json: JsonOpt = False,
    no_snapshots: NoSnapshotsOpt = False,
) -> None:
    """The state of every account (or one) at a point: positions, open orders, policy, mode, and
    everything else the state view holds. Without --until: at the head. Each account starts from
    its newest trusted stored snapshot within the cut (said on stderr) unless --no-snapshots."""
    ctx.obj = {"ledger": ledger}
    if ctx.invoked_subcommand is not None:
        return
    from replay.state_at import ReplayInputError, replay_state

    point = _point(until, "--until")
    url, store = _ledger(ledger)
    _require_intact(store, url)
    core = _core()
    snapshots = reader_snapshots(store, no_snapshots)  # each account from its newest trusted one within the cut
    try:
        with _progress("replaying", store.head()[2], not as_json) as progress:
            result = replay_state(store, core, point, account, progress=progress, snapshots=snapshots)
    except ReplayInputError as error:
        fail(str(error), EXIT_BAD_INPUT)
    finally:
        if snapshots is not None:
            snapshots.close()
        store.close()
    document = result.as_dict(core)
    note_snapshots_used(
        at.start.snapshot for _, at in sorted(result.accounts.items()) if at.start is not None and at.start.snapshot is not None
    )
    if as_json:
        print_json(document)
        return
    cut = point.describe() if point is not None else f"the head (position {result.head_position})"
    out.print(f"[bold]replay[/] as of {cut}: {len(document['accounts'])} account(s)")
    for entry in document["accounts"]:
        as_of = entry["as_of"]
        out.print()
        render_view(
            out,
            printable(entry["state"]),
            f"account {entry['state'].get('account_id')} — last event at position {as_of['position']} "
            f"(stream version {as_of['stream_version']}, {as_of['time']})",
        )


@replay_app.command("verify")
def replay_verify_cmd(
    ctx: typer.Context,
    ledger: LedgerOpt = None,
    core: CoreOpt = "both",
    projections: Annotated[
        bool, typer.Option("--projections/--no-projections", help="Also rebuild every projection and compare digests.")
    ] = True,
    as_json: JsonOpt = False,
) -> None:
    """The determinism gate: re-decide every recorded command with the compiled and the
    interpreted core and compare every record, field by field and hash by hash; then rebuild
    every projection and compare digests."""
    from infra.collector import tuned_for_pass
    from infra.core import load_cores
    from replay.cores import CORE_CHOICES, CoreChoice
    from replay.verify import verify_replay

    if core not in CORE_CHOICES:
        fail(f"--core {core!r}: use one of {', '.join(CORE_CHOICES)}", EXIT_BAD_INPUT)
    try:
        slots = load_cores(cast(CoreChoice, core))
    except CoreUnavailableError as error:
        fail(f"--core compiled: {error}", EXIT_UNREACHABLE)
    url, store = _ledger(ledger, ctx)
    snapshots = snapshots_to_prove(store)  # every stored snapshot is proved, none is used
    try:
        with _progress("re-deciding", store.head()[2], not as_json) as progress, tuned_for_pass():
            report = verify_replay(
                store,
                slots,
                progress=progress,
                read_side=READ_SIDE if projections else None,
                snapshots=snapshots,
            )
    except LedgerError as error:
        fail(str(error), EXIT_BAD_INPUT)
    finally:
        if snapshots is not None:
            snapshots.close()
        store.close()
    if as_json:
        print_json({"ledger": url, **report.as_dict()})
    else:
        _print_verify(url, report)
    raise typer.Exit(0 if report.ok else EXIT_CHECK_FAILED)


def _print_verify(url: str, report: Any) -> None:
    out.print(f"[bold]titan replay verify[/] {url}")
    for slot in report.cores:
        if slot.core is not None:
            out.print(f"  core {slot.kind}: used")
        else:
            out.print(f"  core {slot.kind}: [yellow]NOT AVAILABLE[/] — {slot.unavailable}")
    if len(report.cores_run) < len(report.cores):
        out.print(f"  [yellow]verified with the {' and '.join(report.cores_run)} core only[/]")
    chain = report.chain
    if report.chain_broken:
        err.print(
            f"[bold red]refused:[/] the ledger's hash chain is broken at position {chain.position} "
            f"({chain.code}: {chain.message}). Replaying an altered ledger proves nothing: run "
            f"`titan ledger verify --ledger {url}`"
        )
        return
    out.print(f"  chain: ok, {chain.records_checked} records, head {chain.head_position} {chain.head_hash}")
    divergence = report.divergence
    if divergence is None:
        out.print(
            f"[bold green]ok[/]: {report.summary()} ({report.records_per_second:,.0f} records/s, {report.elapsed_s:.2f} s)"
        )
    else:
        _print_divergence(divergence)
    _print_snapshots(report.snapshots)
    projections = report.projections or {}
    if projections.get("available") is False:
        out.print(f"  projections: not compared — {projections.get('message')}")
    elif projections:
        out.print(f"  projections: {'ok' if projections.get('ok') else 'DIFFER'} — {projections.get('message', '')}")


def _print_snapshots(snapshots: Any) -> None:
    if snapshots is None or (snapshots.stored == 0 and snapshots.ok):
        return
    if snapshots.unavailable is not None:
        err.print(f"  snapshots: [bold red]NOT CHECKED[/] — {snapshots.unavailable}")
        return
    if snapshots.ok:
        unchecked = f", {snapshots.unchecked} not reached (the gate stopped first)" if snapshots.unchecked else ""
        removed = (
            f", {snapshots.removed} removed from the store while the gate ran (not checked)" if snapshots.removed else ""
        )
        out.print(f"  snapshots: ok, {snapshots.proved} of {snapshots.stored} proved equal to the fold{unchecked}{removed}")
        return
    err.print(
        f"  snapshots: [bold red]{snapshots.finding_count} of {snapshots.stored} NOT proved[/] "
        "(an untrusted one is skipped by every reader; one that differs from the fold but passes "
        "the trust rule would be used: delete those rows, see docs/ledger.md)"
    )
    for finding in snapshots.findings:
        err.print(f"    {finding.kind}{f' ({finding.code})' if finding.code else ''}: {printable(finding.message)}")
    if snapshots.finding_count > len(snapshots.findings):
        err.print(f"    … and {snapshots.finding_count - len(snapshots.findings)} more (see --json)")


def _print_divergence(d: Any) -> None:
    err.print(f"[bold red]DIVERGED[/] ({d.kind}): {d.message}")
    grid = Table(show_header=False, box=None, padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    if d.command_id:
        grid.add_row("first divergent command", f"{d.command_id} ({d.command_type}, account {d.account_id}), command record at position {d.command_position}")
    if d.core:
        grid.add_row("core", d.core)
    if d.position is not None or d.event_id:
        grid.add_row("event", f"position {d.position}  {d.event_id}  recorded {d.recorded_type} → replayed {d.replayed_type}")
    if d.recorded_outcome or d.replayed_outcome:
        grid.add_row(
            "outcome",
            f"recorded {d.recorded_outcome} ({d.recorded_reason or 'no reason'}) → replayed "
            f"{d.replayed_outcome or '?'} ({d.replayed_reason or 'no reason'})",
        )
    err.print(grid)
    if d.diffs:
        table = Table("field", "recorded", "replayed", title="differing fields", title_justify="left")
        for diff in d.diffs[:40]:
            table.add_row(diff.path, _cell(diff.recorded) if diff.change != "extra" else "(absent)", _cell(diff.replayed) if diff.change != "missing" else "(absent)")
        err.print(table)
        if len(d.diffs) > 40:
            err.print(f"… and {len(d.diffs) - 40} more (see --json)")


@replay_app.command("what-if")
def replay_what_if_cmd(
    ctx: typer.Context,
    policy: Annotated[Path, typer.Option("--policy", help="The policy document to decide under.")],
    start: FromOpt = None,
    until: UntilOpt = None,
    ledger: LedgerOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-decide the recorded commands under another policy (writes nothing) and list every
    command whose outcome would change, with the checks that differ, plus totals."""
    from replay.state_at import ReplayInputError
    from replay.whatif import what_if

    document = read_policy_file(policy)
    start_point = _point(start, "--from")
    until_point = _point(until, "--until")
    url, store = _ledger(ledger, ctx)
    _require_intact(store, url)
    core = _core()
    try:
        with _progress("re-deciding", store.head()[2], not as_json) as progress:
            report = what_if(store, core, document, start_point, until_point, progress=progress)
    except ReplayInputError as error:
        fail(str(error), EXIT_BAD_INPUT)
    finally:
        store.close()
    result = report.as_dict()
    if as_json:
        print_json(result)
        return
    totals = result["totals"]
    out.print(
        f"[bold]what-if[/] policy {result['policy_id']} ({result['policy_hash']}): "
        f"{totals['commands_considered']} commands re-decided, {totals['outcomes_changed']} outcomes would change "
        f"({totals['direct']} direct, {totals['consequential']} as their consequence); nothing was written"
    )
    table = Table("position", "command", "type", "was", "would be", "checks that differ (value / limit)", "consequence of")
    for change in result["changes"]:
        checks = "; ".join(
            f"{c['check']}: "
            + (f"{c['was']['value']}/{c['was']['limit']} {c['was']['verdict']}" if c["was"] else "—")
            + " → "
            + (f"{c['would_be']['value']}/{c['would_be']['limit']} {c['would_be']['verdict']}" if c["would_be"] else "—")
            for c in change["checks"]
        )
        table.add_row(
            str(change["position"]),
            change["command_id"],
            change["type"],
            f"{change['was']['outcome']} {change['was']['reason'] or ''}".strip(),
            f"{change['would_be']['outcome']} {change['would_be']['reason'] or ''}".strip(),
            checks,
            change["consequence_of"] or "",
        )
    out.print(table)
    by = Table("transition", "commands", title="totals", title_justify="left")
    for key, count in totals["by_transition"].items():
        by.add_row(key, str(count))
    for key, count in totals["would_be_reasons"].items():
        by.add_row(f"would be refused {key}", str(count))
    by.add_row("recorded policy activations superseded", str(totals["superseded_policy_activations"]))
    out.print(by)


# --- titan explain ----------------------------------------------------------------------------


UNBOUNDED_WIDTH = 1_000_000
"""The width `explain` and `audit sql` render at when stdout is not a terminal: wider than any line."""


def full_console() -> Console:
    """Stdout's console on a terminal; piped, one as wide as any line, so nothing is ever cut
    (rich would otherwise lay tables out in 80 columns and cut hashes and check names)."""
    if out.is_terminal:
        return out
    return Console(highlight=False, soft_wrap=True, width=UNBOUNDED_WIDTH)


def unclipped(table: Table) -> Table:
    """The table with every column folding a long value onto more lines instead of cutting it."""
    for column in table.columns:
        column.overflow = "fold"
    return table


def explain_cmd(
    ident: Annotated[str, typer.Argument(metavar="ORDER_ID|COMMAND_ID", help="An order id (ord-…) or a command id.")],
    ledger: LedgerOpt = None,
    as_json: JsonOpt = False,
    no_snapshots: NoSnapshotsOpt = False,
) -> None:
    """The decision trace of an order or a command, from the ledger alone. The replay to the
    decision starts from the newest trusted stored snapshot before it (said on stderr) unless
    --no-snapshots."""
    from replay.explain import explain, snapshot_start
    from replay.state_at import ReplayInputError

    url, store = _ledger(ledger)
    _require_intact(store, url)
    core = _core()
    snapshots = reader_snapshots(store, no_snapshots)  # the replay to the decision starts from the newest trusted one
    try:
        start = snapshot_start(store, core, snapshots, ident) if snapshots is not None else None
        trace = explain(store, core, ident, start=start)
    except ReplayInputError as error:
        fail(str(error), EXIT_BAD_INPUT)
    finally:
        if snapshots is not None:
            snapshots.close()
        store.close()
    note_snapshots_used(snapshots.used if snapshots is not None and start is not None else ())
    if as_json:
        print_json(trace)
        return
    _print_trace(printable(trace), full_console())


def _print_trace(trace: dict[str, Any], console: Console) -> None:
    request, decision, policy, context = trace["request"], trace["decision"], trace["policy"], trace["context"]
    title = trace["order_id"] if trace.get("order_id") and request["type"] == "place_order.v1" else trace["command_id"]
    console.print(f"[bold]explain[/] {title}")
    grid = Table(show_header=False, box=None, padding=(0, 2), title="request", title_justify="left")
    grid.add_column(style="bold")
    grid.add_column()
    for key in ("type", "account_id", "actor", "time", "ts_ns", "issued_ts_ns", "phase_id", "intent_id", "correlation_id", "causation_id"):
        if request.get(key) is not None:
            grid.add_row(key, _cell(request[key]))
    command = request["command"]
    if request["type"] == "place_order.v1":
        price = command.get("price") or "MARKET"
        grid.add_row(
            "order",
            f"{command.get('side')} {command.get('quantity')} {command.get('venue')}:{command.get('symbol')} @ {price} "
            f"(reference {command.get('reference_price')}{', reduce-only' if command.get('reduce_only') else ''})",
        )
    console.print(unclipped(grid))
    pol = Table(show_header=False, box=None, padding=(0, 2), title="policy", title_justify="left")
    pol.add_column(style="bold")
    pol.add_column()
    pol.add_row("active", f"{policy['policy_id']} {policy['active_hash']}")
    if policy.get("carried_hash") is not None:
        same = "same" if policy["carried_hash"] == policy["active_hash"] else "[red]DIFFERENT[/]"
        pol.add_row("carried by the command", f"{policy['carried_hash']} ({same})")
    console.print(unclipped(pol))
    if decision["checks"]:
        checks = Table("check", "value", "limit", "verdict", title="checks", title_justify="left")
        for check in decision["checks"]:
            verdict = check.get("verdict")
            style = "green" if verdict == "pass" else "bold red"
            checks.add_row(str(check.get("check")), _cell(check.get("value")), _cell(check.get("limit")), f"[{style}]{verdict}[/]")
        console.print(unclipped(checks))
    outcome = decision["outcome"]
    style = "green" if outcome == "accepted" else "bold red"
    console.print(f"[bold]outcome[/] [{style}]{outcome}[/]" + (f" {decision['reason']}" if decision["reason"] else "") + f" (command record at position {decision['position']})")
    if decision.get("detail"):
        console.print(f"  detail: {_cell(decision['detail'])}")
    for event in decision["events"]:
        if event["type"] in ("order.accepted.v1", "order.rejected.v1") or not event.get("data"):
            console.print(f"  event {event['position']}: {event['type']} {event['event_id']}")
        else:  # what a non-order decision recorded (a truth score's components, a transition's values …)
            render_view(console, event["data"], f"event {event['position']}: {event['type']} {event['event_id']}")
    render_view(console, context["state"], f"context at position {context['as_of_position']} (the account replayed up to the decision)")
    console.print(f"  open orders then: {context['open_orders']}")
    if context.get("position_before") is not None:
        p = context["position_before"]
        console.print(f"  position then: {p.get('quantity')} @ {p.get('avg_price')} (realized {p.get('realized_pnl')})")
    elif "position_before" in context:
        console.print("  position then: none")
    if context["set_by"]:
        setters = Table("position", "type", "time", "actor", "command", title="set by", title_justify="left")
        for ref in context["set_by"]:
            setters.add_row(str(ref["position"]), ref["type"], ref["time"], _cell(ref["actor"]), _cell(ref["command_id"]))
        console.print(unclipped(setters))
    life = trace.get("lifecycle")
    if life is None:
        return
    if life["events"]:
        events = Table("position", "type", "time", "actor", "detail", title=f"after the decision: {life['status']}", title_justify="left")
        for event in life["events"]:
            data = event["data"]
            summary = {k: v for k, v in data.items() if k in ("venue_order_id", "ack_latency_ms", "fill_id", "quantity", "price", "status", "venue_reason", "reason")}
            events.add_row(str(event["position"]), event["type"], event["time"], _cell(event["actor"]), _cell(summary))
        console.print(unclipped(events))
    else:
        console.print(f"after the decision: {life['status']} (no venue reports)")
    if life["fills"]:
        fills = Table("fill", "quantity", "price", "reference", "slippage bps", "fee", "realized pnl", title="fills", title_justify="left")
        for fill in life["fills"]:
            fills.add_row(str(fill["fill_id"]), str(fill["quantity"]), str(fill["price"]), str(fill["reference_price"]), str(fill["slippage_bps"]), str(fill["fee"]), str(fill["realized_pnl"]))
        console.print(unclipped(fills))
        console.print(
            f"  filled {life['filled_quantity']} at {life['average_fill_price']} on average "
            f"(slippage {life['average_slippage_bps']} bps), fees {life['fees']}, realized {life['realized_pnl']}"
        )
    if life.get("position_after") is not None:
        p = life["position_after"]
        console.print(f"  position after: {p.get('quantity')} @ {p.get('avg_price')} (realized {p.get('realized_pnl')}, fees {p.get('fees')})")


# --- titan ledger export, titan audit sql ------------------------------------------------------


def ledger_export_cmd(
    out_dir: Annotated[Path, typer.Option("--out", help="A new (or empty) directory for the export.")],
    ledger: LedgerOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Export the ledger to Parquet (records, commands, read models) with a manifest."""
    from adapters.sqlite.ledger import LEDGER_FORMAT
    from infra.collector import tuned_for_pass
    from replay.export import ChainBroken, ExportError, check_out_dir, export_ledger

    try:
        check_out_dir(out_dir)
    except ExportError as error:
        fail(str(error), EXIT_BAD_INPUT)
    url, store = _ledger(ledger)
    try:
        with _progress("exporting", store.head()[2], not as_json) as progress, tuned_for_pass():
            result = export_ledger(
                store, out_dir, titan_version=titan_version(), progress=progress, ledger_format=LEDGER_FORMAT, read_side=READ_SIDE
            )
    except ExportError as error:
        fail(str(error), EXIT_BAD_INPUT)
    except ChainBroken as error:
        fail(str(error), EXIT_CHECK_FAILED)
    except LedgerError as error:  # the ledger went away, or a record cannot be read, mid-export
        fail(redact_text(str(error)), EXIT_UNREACHABLE if isinstance(error, LedgerUnreachable) else EXIT_BAD_INPUT)
    finally:
        store.close()
    manifest = result.manifest
    if as_json:
        print_json({"out": str(out_dir), "ledger": url, "rows_per_second": round(result.rows_per_second, 1), "manifest": manifest})
        return
    table = Table("table", "file", "rows", "bytes", "sha256", title=f"export of {url} → {out_dir}", title_justify="left")
    for name, entry in manifest["files"].items():
        table.add_row(name, entry["file"], f"{entry['rows']:,}", f"{entry['bytes']:,}", entry["sha256"])
    out.print(table)
    head = manifest["ledger_head"]
    out.print(f"ledger head: position {head['position']} hash {head['hash']} ({head['record_count']} records); chain verified")
    out.print(f"{result.rows:,} rows in {result.elapsed_s:.2f} s ({result.rows_per_second:,.0f} rows/s); manifest: {out_dir / 'manifest.json'}")
    for note in result.notes:
        out.print(f"[yellow]note:[/] {note}")


@audit_app.command("sql")
def audit_sql_cmd(
    query: Annotated[str, typer.Argument(help='One read-only DuckDB SELECT, e.g. "SELECT type, count(*) FROM records GROUP BY 1".')],
    export: Annotated[Path | None, typer.Option("--export", help="Query this export (default: the live ledger, read-only).")] = None,
    ledger: LedgerOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run one read-only SELECT (DuckDB) over an export's tables (records, commands, read models)
    or the live ledger, which is only ever read (docs/audit.md)."""
    from replay.audit import AuditInputError, query_export, single_select
    from replay.export import ChainBroken

    try:
        single_select(query)
        result = query_export(query, export) if export is not None else _audit_live(query, ledger)
    except AuditInputError as error:
        fail(str(error), EXIT_BAD_INPUT)
    except ChainBroken as error:
        fail(str(error), EXIT_CHECK_FAILED)
    if as_json:
        print_json(result.as_dict())
        return
    console = full_console()
    table = unclipped(Table(*(printable(str(c)) for c in result.columns)))
    for row in result.rows:
        table.add_row(*(printable(_cell(v)) for v in row))
    console.print(table)
    console.print(f"{len(result.rows)} row(s)")
    for note in result.notes:
        err.print(f"[yellow]note:[/] {printable(note)}")


def _audit_live(query: str, ledger: str | None) -> Any:
    """Query the live ledger without writing to it: a read-only snapshot of a SQLite file, or
    read-only sessions on PostgreSQL."""
    from infra.bootstrap import POSTGRES_SCHEMES, open_ledger, sqlite_path
    from replay.audit import query_live, query_sqlite_ledger, read_only_url

    url = settings_for(ledger).ledger_url
    try:
        if url.startswith(POSTGRES_SCHEMES):
            store = open_ledger(read_only_url(url), create=False)
            try:
                return query_live(query, store, titan_version=titan_version())
            finally:
                store.close()
        path = sqlite_path(url)
        if path == ":memory:":
            fail(f"--ledger {url}: an in-memory ledger holds nothing to query; pass a ledger file", EXIT_BAD_INPUT)
        return query_sqlite_ledger(
            query,
            Path(path),
            open_copy=lambda copy: open_ledger("sqlite:///" + str(copy), create=False),
            titan_version=titan_version(),
            read_side=READ_SIDE,
        )
    except LedgerError as error:
        fail(redact_text(str(error)), EXIT_UNREACHABLE if isinstance(error, LedgerUnreachable) else EXIT_BAD_INPUT)


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    """Add replay, explain, ledger export and audit to the `titan` app."""
    app.add_typer(replay_app, name="replay")
    app.command("explain")(explain_cmd)
    groups["ledger"].command("export")(ledger_export_cmd)
    app.add_typer(audit_app, name="audit")
