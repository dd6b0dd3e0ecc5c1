"""Durable commands/s into the PostgreSQL ledger through the group-commit writer (SPEC §9).

For `titan bench` (call `run(url)`): each measurement gets a scratch database on the server the URL
names (created, then dropped: the role needs CREATEDB), a writer with its lease, and the same
deterministic order flow as the embedded measurement (`infra.bench.order_flow`). Figures:

- batch size 1, 100 and adaptive: every command offered at once; commands/s from the first
  submission to the last durable answer, with the batch sizes the writer actually committed;
- latency at a fixed offered rate (default 1,000 commands/s, open loop: each command is submitted
  at its scheduled time whether or not earlier ones were answered): p50/p99 from submission to the
  durable answer;
- the server's own ceiling, one-row INSERT commits/s, to read the others against.

An answer is durable: the writer answers after COMMIT returns, with synchronous_commit on (the
server's `fsync` setting is reported alongside). Appends take one round trip each (titan_append(),
docs/postgres.md "One committer, one round trip"); `one_round_trip=False` (`--four-round-trips`)
measures the path of a ledger without that function, to compare. Many accounts at once:
`infra.bench.accounts`.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections import Counter
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from rich.console import Console
from rich.table import Table

from adapters.postgres.ledger import PostgresLedger, connect
from adapters.postgres.migrations import upgrade_async
from adapters.redact import redact
from commands.writer import DEFAULT_MAX_BATCH, AccountWriter
from infra.bench import ACCOUNT, order_flow
from infra.core import CoreUnavailableError, load_core
from schemas import commands as wire

DEFAULT_COMMANDS: Final = 5_000
DEFAULT_RATE: Final = 1_000


async def _scratch_database(url: str) -> str:
    name = f"titan_bench_{uuid.uuid4().hex[:12]}"
    connection = await connect(url, application_name="titan-bench")
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


async def _drop_database(url: str, scratch: str) -> None:
    connection = await connect(url, application_name="titan-bench")
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{urlsplit(scratch).path.lstrip("/")}" WITH (FORCE)')
    finally:
        await connection.close()


class Answers:
    """The latency of each command queued, taken when its answer comes. The answer itself is
    dropped then, as a client that got it would: keeping a task, a coroutine or the outcome of
    every command alive made the collector's pauses over them the figures' tail."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self._pending = 0
        self._all = asyncio.Event()
        self._all.set()
        self._error: BaseException | None = None

    def add(self, outcome: asyncio.Future[Any]) -> None:
        """Time a command queued now until its outcome is set."""
        queued = time.perf_counter()
        self._pending += 1
        self._all.clear()
        outcome.add_done_callback(lambda answered: self._answered(answered, queued))

    async def wait(self) -> list[float]:
        """Every latency, once every command is answered (raises a failed command's error)."""
        await self._all.wait()
        if self._error is not None:
            raise self._error
        return self.latencies

    def _answered(self, outcome: asyncio.Future[Any], queued: float) -> None:
        self.latencies.append(time.perf_counter() - queued)
        if self._error is None:
            self._error = asyncio.CancelledError() if outcome.cancelled() else outcome.exception()
        self._pending -= 1
        if not self._pending:
            self._all.set()


def _percentile(sorted_values: list[float], fraction: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * fraction))]


def _summary(
    label: str, latencies: list[float], elapsed: float, sizes: Counter[int], records: int
) -> dict[str, Any]:
    latencies.sort()
    batches = sum(sizes.values())
    commands = len(latencies)
    return {
        "label": label,
        "commands": commands,
        "records": records,
        "seconds": elapsed,
        "commands_per_second": commands / elapsed,
        "records_per_second": records / elapsed,
        "p50_ms": _percentile(latencies, 0.50) * 1000,
        "p99_ms": _percentile(latencies, 0.99) * 1000,
        "batches": batches,
        "mean_batch": commands / batches if batches else 0.0,
        "max_batch": max(sizes) if sizes else 0,
    }


async def _measure(
    url: str,
    core: Any,
    flow: list[wire.AnyCommand],
    *,
    max_batch: int,
    rate: float | None,
    label: str,
    one_round_trip: bool = True,
) -> dict[str, Any]:
    scratch = await _scratch_database(url)
    try:
        await upgrade_async(scratch)
        ledger = await PostgresLedger.connect(scratch, one_round_trip=one_round_trip)
        try:
            writer = AccountWriter(ACCOUNT, ledger, core, max_batch=max_batch, holder="titan-bench")
            await writer.start()
            await writer.submit(flow[0])  # the policy, before the clock starts
            writer.batch_sizes.clear()
            commands = flow[1:]
            answers = Answers()
            loop = asyncio.get_running_loop()
            # One pacer queues the commands in order, each at its time (open loop: it never waits
            # for answers); a stall delays the ones behind it but never lets one overtake another.
            start = loop.time() + 0.05
            began = time.perf_counter()
            for i, command in enumerate(commands):
                if rate is not None:
                    delay = start + i / rate - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                answers.add(writer.enqueue(command))
            latencies = await answers.wait()
            elapsed = time.perf_counter() - began
            sizes = Counter(writer.batch_sizes)
            await writer.stop()
            _, _, records = await ledger.head_async()
        finally:
            await ledger.close_async()
    finally:
        await _drop_database(url, scratch)
    return _summary(label, latencies, elapsed, sizes, records)


async def _commit_ceiling(url: str, count: int = 300) -> float:
    """The server's own ceiling: one-row INSERT transactions/s, nothing of titan's in the way."""
    scratch = await _scratch_database(url)
    try:
        connection = await connect(scratch, application_name="titan-bench")
        try:
            await connection.execute("CREATE TABLE ceiling (id bigserial PRIMARY KEY, state bytea)")
            row = b"x" * 200
            began = time.perf_counter()
            for _ in range(count):
                await connection.execute("INSERT INTO ceiling (state) VALUES ($1)", row)
            return count / (time.perf_counter() - began)
        finally:
            await connection.close()
    finally:
        await _drop_database(url, scratch)


def default_core() -> Any:
    """The compiled core when it is built, else the interpreted one."""
    try:
        return load_core("compiled")
    except CoreUnavailableError:
        return load_core("interpreted")


async def run_async(
    url: str,
    commands: int = DEFAULT_COMMANDS,
    *,
    rate: float = DEFAULT_RATE,
    core: Any = None,
    one_round_trip: bool = True,
) -> dict[str, Any]:
    """Measure batch sizes 1, 100 and adaptive, and latency at `rate` offered; return figures.

    `one_round_trip=False` appends the way a ledger without titan_append() does (four round trips
    per append, on each writer's own connection), for comparison."""
    if core is None:
        core = default_core()
    flow = order_flow(commands + 1)
    probe: asyncpg.Connection[asyncpg.Record] = await connect(url, application_name="titan-bench")
    try:
        server = {
            "version": await probe.fetchval("SHOW server_version"),
            "fsync": await probe.fetchval("SHOW fsync"),
            "synchronous_commit": "on (set by titan on every ledger connection)",
        }
    finally:
        await probe.close()
    results: dict[str, Any] = {
        "server": server,
        "ledger": redact(url),
        "core": core.kind,
        "append": "one round trip (titan_append)" if one_round_trip else "four round trips",
    }
    results["server"]["single_row_commits_per_second"] = await _commit_ceiling(url)
    measure = functools.partial(_measure, url, core, one_round_trip=one_round_trip)
    # The single-command flow is slow: measure it on a fifth of the commands.
    single = flow[: max(2, commands // 5) + 1]
    results["batch_1"] = await measure(single, max_batch=1, rate=None, label="batch size 1")
    results["batch_100"] = await measure(flow, max_batch=100, rate=None, label="batch size 100")
    results["adaptive"] = await measure(
        flow, max_batch=DEFAULT_MAX_BATCH, rate=None, label=f"adaptive (cap {DEFAULT_MAX_BATCH})"
    )
    paced = flow[: min(len(flow), int(rate * 5) + 1)]  # five seconds of offered load
    results["offered"] = await measure(
        paced,
        max_batch=DEFAULT_MAX_BATCH,
        rate=rate,
        label=f"adaptive at {rate:,.0f} commands/s offered",
    )
    results["offered"]["offered_per_second"] = rate
    return results


def run(
    url: str,
    commands: int = DEFAULT_COMMANDS,
    *,
    rate: float = DEFAULT_RATE,
    core: Any = None,
    one_round_trip: bool = True,
) -> dict[str, Any]:
    """Measure batch sizes 1, 100 and adaptive, and latency at `rate` offered; return figures."""
    return asyncio.run(
        run_async(url, commands, rate=rate, core=core, one_round_trip=one_round_trip)
    )


def print_results(console: Console, results: dict[str, Any]) -> None:
    """The PostgreSQL group-commit table."""
    server = results["server"]
    table = Table(
        "group commit",
        "commands/s",
        "records/s",
        "p50 ms",
        "p99 ms",
        "batches (mean / max size)",
        title=(
            f"durable commands into PostgreSQL {server['version']} (fsync {server['fsync']}, "
            f"core {results['core']}, {results.get('append', 'one round trip (titan_append)')})"
        ),
        caption=f"the server's ceiling here: {server['single_row_commits_per_second']:,.0f} one-row commits/s",
    )
    for key in ("batch_1", "batch_100", "adaptive", "offered"):
        r = results[key]
        table.add_row(
            f"{r['label']} ({r['commands']:,} commands)",
            f"{r['commands_per_second']:,.0f}",
            f"{r['records_per_second']:,.0f}",
            f"{r['p50_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            f"{r['batches']:,} ({r['mean_batch']:.1f} / {r['max_batch']})",
        )
    console.print(table)



def main() -> None:
    """`python -m infra.bench.postgres URL [COMMANDS [RATE]] [--four-round-trips]`: print the table
    and the JSON (`--four-round-trips`: append as a ledger without titan_append() does)."""
    import sys

    import orjson

    four = "--four-round-trips" in sys.argv[1:]
    argv = [a for a in sys.argv[1:] if a != "--four-round-trips"]
    if not argv:
        raise SystemExit(
            "usage: python -m infra.bench.postgres postgresql://… [COMMANDS [RATE]] [--four-round-trips]"
        )
    commands = int(argv[1]) if len(argv) > 1 else DEFAULT_COMMANDS
    rate = float(argv[2]) if len(argv) > 2 else DEFAULT_RATE
    results = run(argv[0], commands, rate=rate, one_round_trip=not four)
    print_results(Console(), results)
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
