"""`titan bench`: decisions/s of both cores over the same commands, and durable commands/s.

A benchmark, never a test: figures vary with the machine and its load; the spread of repeated
runs is reported so a noisy machine shows itself. Every figure with a goal is judged against it
(`infra.bench.goals`): the JSON's "goals" and the goals table say met, missed or not measured.
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Literal

from rich.console import Console
from rich.table import Table

from commands.handlers import Bus
from commands.writer import AccountWriter
from infra.bench.baseline import baseline_postgres, baseline_sqlite
from infra.bench.figures import throughput
from infra.bench.goals import format_figure, judge, with_unit
from infra.bootstrap import bootstrap, open_ledger
from infra.core import CoreUnavailableError, load_core
from infra.settings import Settings
from infra.submit import default_policy
from schemas import commands as wire
from schemas.policy import policy_hash

START_TS_NS = 1_767_225_600_000_000_000
STEP_NS = 150_000_000  # 150 ms between commands: under the default order-rate limit
ACCOUNT = "bench"
SNAPSHOT_EVERY = 100  # orders between truth snapshots: the default policy gates on a fresh one
NO_POSTGRES: Final = "no PostgreSQL (--pg-url none)"
"""The 40-account case (helper C's module): `run(url, accounts=, rate=, commands=) -> dict`."""
ACCOUNTS: Final = 40
ACCOUNTS_RATE: Final = 2_000


def order_flow(n: int, start: int = 0) -> list[wire.AnyCommand]:
    """A deterministic flow of n commands: place, ack, fill, alternating sides, flat on average."""
    policy = default_policy()
    digest = policy_hash(policy)
    flow: list[wire.AnyCommand] = [
        wire.ActivatePolicy(command_id="bench-policy", account_id=ACCOUNT, ts_ns=START_TS_NS, actor="bench", policy=policy)
    ]
    i = start
    held_steps = 0  # the venue's view of the position, for truth snapshots
    while len(flow) < n:
        ts = START_TS_NS + (i + 1) * STEP_NS
        if i % SNAPSHOT_EVERY == 0:
            flow.append(_snapshot(f"s{i:08d}", ts - 1, held_steps))
        side: Literal["BUY", "SELL"] = "BUY" if (i // 3) % 2 == 0 else "SELL"
        price = f"{65000 + (i % 7)}.0"
        cid = f"b{i:08d}"
        flow.append(
            wire.PlaceOrder(
                command_id=cid, account_id=ACCOUNT, ts_ns=ts, actor="bench", policy_hash=digest, phase_id=1,
                intent_id=cid, client_order_id=cid, venue="paper", symbol="BTCUSDT", side=side,
                quantity="0.010", price=price, reference_price=price,
            )
        )
        flow.append(wire.RecordOrderAck(command_id=cid + "a", account_id=ACCOUNT, ts_ns=ts + 1, actor="bench", order_id="ord-" + cid, venue_order_id="V" + cid))
        flow.append(
            wire.RecordFill(
                command_id=cid + "f", account_id=ACCOUNT, ts_ns=ts + 2, actor="bench", order_id="ord-" + cid,
                fill_id="F" + cid, quantity="0.010", price=price, fee="0.013",
            )
        )
        held_steps += 10 if side == "BUY" else -10
        i += 1
    return flow[:n]


def _snapshot(command_id: str, ts_ns: int, held_steps: int) -> wire.RecordTruthSnapshot:
    sign = "-" if held_steps < 0 else ""
    quantity = f"{sign}{abs(held_steps) // 1000}.{abs(held_steps) % 1000:03d}"
    return wire.RecordTruthSnapshot(
        command_id=command_id, account_id=ACCOUNT, ts_ns=ts_ns, actor="bench", venue="paper",
        positions=[wire.VenuePosition(symbol="BTCUSDT", quantity=quantity)] if held_steps else [],
        open_order_ids=[], equity="100000", venue_ts_ns=ts_ns, latency_ms=1,
    )


def _decisions_per_second(core: Any, flow: list[wire.AnyCommand], repeats: int) -> list[float]:
    from commands.translate import to_core

    commands = [to_core(c, core) for c in flow]
    decide = core.decider.decide
    evolve = core.decider.evolve
    rates = []
    for _ in range(repeats):
        state = core.decider.initial_state(ACCOUNT)
        began = time.perf_counter()
        for command in commands:
            for event in decide(command, state):
                state = evolve(state, event)
        rates.append(len(commands) / (time.perf_counter() - began))
    return rates


def _durable(flow: list[wire.AnyCommand]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as directory:
        url = "sqlite:///" + os.path.join(directory, "bench.db")
        bus: Bus = bootstrap(Settings(ledger_url=url), ledger=open_ledger(url))
        latencies = []
        began = time.perf_counter()
        for command in flow:
            t0 = time.perf_counter()
            bus.handle(command)
            latencies.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - began
        bus.ctx.ledger.close()
    return throughput(latencies, elapsed)


async def submit_flow(writer: AccountWriter, flow: list[wire.AnyCommand], *, window: int | None = None) -> dict[str, Any]:
    """Submit `flow` to a started writer: the first command (the policy) alone, then the rest all
    at once (or `window` at a time, to bound the futures in flight for a long flow); return the
    commands/s and latencies from the first submission after the policy to the last durable answer."""
    import asyncio

    await writer.submit(flow[0])
    latencies: list[float] = []

    async def submit(command: wire.AnyCommand) -> None:
        began = time.perf_counter()
        await writer.submit(command)
        latencies.append(time.perf_counter() - began)

    rest = flow[1:]
    step = window or len(rest) or 1
    began = time.perf_counter()
    for start in range(0, len(rest), step):
        await asyncio.gather(*(submit(c) for c in rest[start : start + step]))
    elapsed = time.perf_counter() - began
    batches = sum(writer.batch_sizes.values())
    return {**throughput(latencies, elapsed), "mean_batch": len(latencies) / batches if batches else 0}


def _embedded_group_commit(flow: list[wire.AnyCommand], core: Any) -> dict[str, Any]:
    """The same commands through the group-commit writer into a fresh embedded ledger."""
    import asyncio

    from infra.writers import lease_store

    async def go(url: str) -> dict[str, Any]:
        ledger = open_ledger(url)
        writer = AccountWriter(ACCOUNT, lease_store(ledger), core, holder="titan-bench")
        await writer.start()
        figures = await submit_flow(writer, flow)
        await writer.stop()
        ledger.close()
        return figures

    with tempfile.TemporaryDirectory() as directory:
        return asyncio.run(go("sqlite:///" + os.path.join(directory, "bench.db")))


def _timed(results: dict[str, Any], key: str, measure: Callable[[], Any]) -> None:
    try:
        results[key] = measure()
    except Exception as exc:  # noqa: BLE001 - a figure that cannot be taken is reported, never hidden
        results[key] = {"unavailable": f"{type(exc).__name__}: {exc}"}


def _postgres_version(url: str) -> str:
    import psycopg

    with psycopg.connect(url) as connection:
        row = connection.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "unknown"


def run(
    n: int,
    durable_n: int = 5_000,
    repeats: int = 3,
    *,
    pg_url: str | None = None,
    quick: bool = False,
    replay_records: int = 20_000,
) -> dict[str, Any]:
    """Measure everything once, side by side (a reduced size with `quick`)."""
    if quick:
        n, durable_n, repeats, replay_records = min(n, 20_000), min(durable_n, 1_000), 2, min(replay_records, 5_000)
    flow = order_flow(n)
    results: dict[str, Any] = {
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "commands": n,
        "repeats": repeats,
        "quick": quick,
    }
    spreads: list[float] = []
    for kind in ("compiled", "interpreted"):
        try:
            rates = _decisions_per_second(load_core(kind), flow, repeats)
        except CoreUnavailableError as exc:
            results[kind] = {"unavailable": str(exc)}
            continue
        spread = (max(rates) - min(rates)) / max(rates)
        spreads.append(spread)
        results[kind] = {"decisions_per_second": max(rates), "spread": spread}
    compiled, interpreted = results["compiled"], results["interpreted"]
    if "decisions_per_second" in compiled and "decisions_per_second" in interpreted:
        results["compiled_speedup"] = compiled["decisions_per_second"] / interpreted["decisions_per_second"]
    core = load_core("auto")
    results["embedded_ledger"] = _durable(flow[:durable_n])
    _timed(results, "embedded_group_commit", lambda: _embedded_group_commit(flow[: durable_n * 4], core))
    _timed(results, "baseline_sqlite", lambda: baseline_sqlite(min(durable_n, 2_000)))
    if pg_url:
        from infra.bench.postgres import run as postgres_run

        results["machine"]["postgresql"] = _postgres_version(pg_url)
        _timed(results, "postgres", lambda: postgres_run(pg_url, durable_n * 2, core=core))
        _timed(results, "accounts", lambda: _accounts(pg_url, quick))
        _timed(results, "baseline_postgres", lambda: baseline_postgres(pg_url, min(durable_n, 2_000)))
    else:
        for key in ("postgres", "accounts", "baseline_postgres"):
            results[key] = {"skipped": NO_POSTGRES}
    _timed(results, "replay_and_export", lambda: _replay_and_export(replay_records))
    _timed(results, "start", lambda: _start(quick))
    _timed(results, "relay", lambda: _relay(quick))
    _timed(results, "console", lambda: _console(quick))
    if pg_url:
        _timed(results, "serve", lambda: _serve(pg_url, quick))
    else:
        results["serve"] = {"skipped": NO_POSTGRES}
    _ratios(results)
    results["noisy"] = bool(spreads) and statistics.fmean(spreads) > 0.2
    results["goals"] = [judged.as_dict() for judged in judge(results)]
    return results


def _accounts(pg_url: str, quick: bool) -> dict[str, Any]:
    """p50/p99 at 2,000 commands/s offered over 40 accounts into PostgreSQL (issue 14), every
    answer after its commit (`infra.bench.accounts`)."""
    from infra.bench.accounts import run as accounts_run

    commands = ACCOUNTS_RATE * (2 if quick else 5)  # seconds of offered load, as the 1,000/s case
    return accounts_run(pg_url, accounts=ACCOUNTS, rate=ACCOUNTS_RATE, commands=commands)


def _replay_and_export(records: int) -> dict[str, Any]:
    """Replay verify (both cores, and the compiled one alone), projection rebuild and export on one
    demo ledger of about `records` records, each in a child process of its own."""
    from infra.bench.replay import demo_ledger
    from infra.bench.replay import measure as replay_measure

    with tempfile.TemporaryDirectory() as directory:
        url = demo_ledger(Path(directory) / "bench.db", records)
        return replay_measure(url, cores=("both", "compiled"), rebuild=True)


def _start(quick: bool) -> dict[str, Any]:
    """First decision after start on a 200,000-event account (20,000 with `quick`), in a fresh
    process; the ledger is kept in TITAN_BENCH_CACHE when set."""
    from infra.bench.start import run as start_run

    return start_run(quick=quick)


def _relay(quick: bool) -> dict[str, Any]:
    """The JetStream mirror: records/s mirrored, and the lag at 5,000 records/s offered."""
    from infra.bench.relay import run as relay_run

    return relay_run(records=10_000, seconds=3.0) if quick else relay_run()


def _console(quick: bool) -> dict[str, Any]:
    """The console over HTTP on a demo ledger of 100,000 records (10,000 with `quick`): explainDecision
    and events pages, p50/p99; the ledger is kept in TITAN_BENCH_CACHE when set."""
    from infra.bench.console import run as console_run

    return console_run(quick=quick)


def _serve(pg_url: str, quick: bool) -> dict[str, Any]:
    """`titan serve` as a child process: commands/s through NATS intake into PostgreSQL with
    replies, publish-to-outcome latency at 1,000 commands/s offered, the standby's takeover."""
    from infra.bench.serve import run as serve_run

    return serve_run(pg_url, quick=quick)


def _ratios(results: dict[str, Any]) -> None:
    embedded = results.get("embedded_group_commit", {})
    base = results.get("baseline_sqlite", {})
    if "commands_per_second" in embedded and "commands_per_second" in base:
        results["ratio_embedded_vs_baseline"] = embedded["commands_per_second"] / base["commands_per_second"]
    pg = results.get("postgres", {}).get("adaptive", {})
    pg_base = results.get("baseline_postgres", {})
    if "commands_per_second" in pg and "commands_per_second" in pg_base:
        results["ratio_postgres_vs_baseline"] = pg["commands_per_second"] / pg_base["commands_per_second"]


def _figure(r: dict[str, Any], key: str = "commands_per_second", unit: str = "/s") -> str:
    for reason in ("unavailable", "skipped"):
        if reason in r:
            return f"{reason}: " + str(r[reason])[:120]
    text = f"{r[key]:,.0f}{unit}"
    if "p50_ms" in r:
        text += f" (p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms)"
    return text


def print_results(console: Console, results: dict[str, Any]) -> None:
    """The benchmark table."""
    machine = results["machine"]
    title = f"titan bench ({machine['cores']} cores, Python {machine['python']}"
    title += f", PostgreSQL {machine['postgresql']})" if "postgresql" in machine else ")"
    table = Table("measure", "figure", title=title)
    for kind in ("compiled", "interpreted"):
        r = results[kind]
        figure = f"{r['decisions_per_second']:,.0f}/s (spread {r['spread']:.0%})" if "decisions_per_second" in r else r["unavailable"]
        table.add_row(f"{kind} core decide+evolve, {results['commands']:,} commands", figure)
    if "compiled_speedup" in results:
        table.add_row("compiled / interpreted", f"{results['compiled_speedup']:.2f}x")
    table.add_row("embedded ledger, one transaction per command", _figure(results["embedded_ledger"]))
    table.add_row("embedded ledger, group commit", _figure(results["embedded_group_commit"]))
    table.add_row("baseline: eventsourcing Application, SQLite", _figure(results["baseline_sqlite"]))
    if "ratio_embedded_vs_baseline" in results:
        table.add_row("embedded group commit / baseline", f"{results['ratio_embedded_vs_baseline']:.1f}x")
    pg = results.get("postgres", {})
    if "unavailable" in pg or "skipped" in pg:
        table.add_row("PostgreSQL", _figure(pg))
    elif pg:
        for key in ("batch_1", "batch_100", "adaptive", "offered"):
            r = pg[key]
            table.add_row(f"PostgreSQL, {r.get('label', key)}", _figure(r))
    _accounts_row(table, results.get("accounts", {}))
    if "baseline_postgres" in results and "skipped" not in results["baseline_postgres"]:
        table.add_row("baseline: eventsourcing Application, PostgreSQL", _figure(results["baseline_postgres"]))
    if "ratio_postgres_vs_baseline" in results:
        table.add_row("PostgreSQL adaptive / baseline", f"{results['ratio_postgres_vs_baseline']:.1f}x")
    replay = results["replay_and_export"]
    if "unavailable" in replay:
        table.add_row("replay / projections / export", _figure(replay))
    else:
        table.add_row(f"demo ledger for replay ({replay['records']:,} records)", "")
        for choice, r in replay["replay_verify"].items():
            table.add_row(f"replay verify ({choice}){_memory(r)}", _figure(r, "records_per_second", " records/s"))
        if "export" in replay:
            table.add_row(f"export{_memory(replay['export'])}", _figure(replay["export"], "rows_per_second", " rows/s"))
        rebuild = replay.get("projections", {})
        if "rebuild_all" in rebuild:
            table.add_row(f"projection rebuild (all, one pass){_memory(rebuild)}", f"{rebuild['rebuild_all']['median']:,} records/s")
        elif rebuild:
            table.add_row("projection rebuild", _figure(rebuild))
    _start_rows(table, results.get("start", {}))
    relay = results.get("relay", {})
    if "unavailable" in relay or "skipped" in relay:
        table.add_row("relay to JetStream", str(relay.get("unavailable") or relay.get("skipped"))[:120])
    elif relay:
        table.add_row(f"relay to JetStream ({relay['relay_records']:,} records; goal ≥ 10,000/s)", f"{relay['relay_records_per_s']:,} records/s")
        table.add_row(
            f"relay lag at {relay['lag_offered_records_per_s']:,} records/s offered (goal < 1 s)",
            f"p50 {relay['lag_p50_s']} s, p99 {relay['lag_p99_s']} s, max {relay['lag_max_s']} s",
        )
    _serve_rows(table, results.get("serve", {}))
    _console_rows(table, results.get("console", {}))
    console.print(table)
    print_goals(console, results.get("goals", []))
    if results["noisy"]:
        console.print("[yellow]warning:[/] repeated runs differ by more than 20%: the machine is busy; figures are unreliable")


def print_goals(console: Console, goals: list[dict[str, Any]]) -> None:
    """The goals table: each goal's figure, the goal and its verdict (`infra.bench.goals.judge`)."""
    table = Table("goal", "figure", "goal", "verdict", title="goals (issue 14's table and earlier issues)")
    colours = {"met": "green", "missed": "red", "not measured": "yellow"}
    for entry in goals:
        verdict = entry["verdict"]
        text = f"[{colours.get(verdict, 'white')}]{verdict}[/]"
        if entry.get("why"):
            text += f": {entry['why']}"
        table.add_row(entry["name"], format_figure(entry["figure"], entry["unit"]), with_unit(entry["goal"], entry["unit"]), text)
    console.print(table)


def _memory(figures: dict[str, Any]) -> str:
    """The child's own peak memory and CPU seconds, beside the figure's name."""
    if "peak_rss_kb" not in figures:
        return ""
    text = f", peak RSS {figures['peak_rss_kb'] / 1024:.0f} MiB"
    if figures.get("helper_peak_rss_kb"):
        text += f" (+ second core {figures['helper_peak_rss_kb'] / 1024:.0f} MiB)"
    if "cpu_s" in figures:
        text += f", CPU {figures['cpu_s']:.1f} s"
    return text


def _accounts_row(table: Table, figures: dict[str, Any]) -> None:
    """The 40-account case (issue 14)."""
    if not figures or "skipped" in figures:
        return
    if "unavailable" in figures:
        table.add_row(f"PostgreSQL, {ACCOUNTS} accounts at {ACCOUNTS_RATE:,}/s offered", _figure(figures))
        return
    mean = figures.get("mean_batch")
    kept_up = figures.get("commands_per_s")
    table.add_row(
        f"PostgreSQL, {ACCOUNTS} accounts at {ACCOUNTS_RATE:,}/s offered" + (f" (mean batch {mean:.1f} per transaction)" if mean else ""),
        (f"{kept_up:,.0f}/s kept up, " if isinstance(kept_up, int | float) else "") + f"p50 {figures['p50_ms']:.2f} ms, p99 {figures['p99_ms']:.2f} ms",
    )


def _start_rows(table: Table, figures: dict[str, Any]) -> None:
    """First decision after start (issue 14)."""
    if not figures:
        return
    if "unavailable" in figures:
        table.add_row("first decision after start", _figure(figures))
        return
    built = "reused" if figures["reused"] else f"written in {figures['build_s']} s"
    table.add_row(
        f"first decision after start, one account of {figures['events']:,} events ({built}; "
        f"{figures['records_read']:,} records read; child peak RSS {figures['peak_rss_kb'] / 1024:.0f} MiB)",
        f"{figures['first_decision_ms']:,.1f} ms (open {figures['open_ms']:,.1f} + load {figures['load_ms']:,.1f} "
        f"+ first answer {figures['first_answer_ms']:,.1f})",
    )


def _serve_rows(table: Table, serve: dict[str, Any]) -> None:
    """`titan serve`'s figures (issue 11), with their goals."""
    if "unavailable" in serve or "skipped" in serve:
        table.add_row("serve: NATS intake into PostgreSQL", str(serve.get("unavailable") or serve.get("skipped"))[:120])
        return
    if not serve:
        return
    batches = serve.get("serve_batches", {})
    mean = batches.get("mean_commands")
    table.add_row(
        f"serve: signed commands via NATS into PostgreSQL, replied ({serve['serve_commands']:,}; goal ≥ 10,000/s)",
        f"{serve['serve_commands_per_s']:,}/s" + (f" (mean batch {mean:g})" if mean else ""),
    )
    table.add_row(
        f"serve: publish to outcome at {serve['serve_latency_offered_per_s']:,.0f} commands/s offered (goal p99 ≤ 5 ms)",
        f"p50 {serve['serve_latency_p50_ms']} ms, p99 {serve['serve_latency_p99_ms']} ms, max {serve['serve_latency_max_ms']} ms",
    )
    if "exec_unavailable" in serve:
        table.add_row("serve: decide to execution (titan.exec)", "unavailable: " + str(serve["exec_unavailable"])[:120])
    elif "exec_latency_p50_ms" in serve:
        table.add_row(
            f"serve: signed order in to its place on titan.exec.paper at {serve['exec_offered_per_s']:,.0f} orders/s offered "
            f"({serve['exec_orders_accepted']:,} of {serve['exec_orders_offered']:,} accepted; goal: report)",
            f"p50 {serve['exec_latency_p50_ms']} ms, p99 {serve['exec_latency_p99_ms']} ms, max {serve['exec_latency_max_ms']} ms",
        )
    if "serve_takeover_ready_s" in serve:
        table.add_row(
            "serve: hot standby's takeover after kill -9 of the leader",
            f"ready in {serve['serve_takeover_ready_s']} s, first outcome in {serve['serve_takeover_first_outcome_s']} s",
        )


def _console_rows(table: Table, figures: dict[str, Any]) -> None:
    """The console's figures: explainDecision and events pages over HTTP on a large demo ledger."""
    if "unavailable" in figures:
        table.add_row("console over HTTP", _figure(figures))
        return
    if not figures:
        return
    built = "reused" if figures["reused"] else f"written in {figures['build_s']} s"
    table.add_row(f"console: demo ledger ({figures['ledger_records']:,} records, {figures['orders']:,} orders, {built})", "")
    explain = figures["explain"]
    table.add_row(
        f"console: explainDecision, {explain['calls']} orders early to late (first call, folding the account: {explain['cold_ms']:,.0f} ms)",
        f"p50 {explain['p50_ms']} ms, p99 {explain['p99_ms']} ms",
    )
    for key, label in (("events", "events(first: 100), random cursors"), ("events_filtered", "events(first: 100, types: order.filled.v1)")):
        page = figures[key]
        table.add_row(f"console: {label}, {page['calls']} pages", f"p50 {page['p50_ms']} ms, p99 {page['p99_ms']} ms")
