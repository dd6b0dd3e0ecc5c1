"""Latency of many accounts writing one PostgreSQL ledger at once (issue 14: p99 at 2,000 commands/s
over 40 accounts).

For `titan bench` (call `run(url)`): a scratch database on the server the URL names (created, then
dropped), one group-commit writer per account in one process, all on one `PostgresLedger`, each
holding its account's lease. Every account gets the deterministic order flow of the
single-account measurement (`infra.bench.order_flow`), renamed to its account and command ids.
One pacer offers the commands round-robin over the accounts at a fixed total rate (open loop: each
is queued at its scheduled time whether or not earlier ones were answered, and never ahead of an
earlier one); latency is from queueing to the durable answer, which the writer gives only after
COMMIT returned.

`mean_batch` is commands per ledger transaction: what the accounts' batches share. Transactions are
counted from the ledger's own `NOTIFY titan_ledger` (one per committed transaction), heard on a
separate connection. Once the writers are started and the commands to offer built, the collector
is tuned as `titan serve` tunes it after start-up (`infra.collector`; for the measurement only):
with its defaults its pauses, not the ledger, set the p99.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any, Final

import asyncpg

from adapters.postgres.ledger import NOTIFY_CHANNEL, PostgresLedger, connect
from adapters.postgres.migrations import upgrade_async
from commands.writer import AccountWriter
from infra.bench import order_flow
from infra.bench.postgres import (
    Answers,
    _drop_database,
    _percentile,
    _scratch_database,
    default_core,
)
from infra.collector import tuned_for_pass
from schemas import commands as wire

DEFAULT_ACCOUNTS: Final = 40
DEFAULT_RATE: Final = 2_000
DEFAULT_SECONDS: Final = 5
_NOTIFY_DRAIN_S: Final = 2.0


def account_flow(account: str, count: int) -> list[wire.AnyCommand]:
    """`count` commands of the benchmark's order flow for one account: its policy first, then the
    same orders, acks, fills and truth snapshots, with command ids `<account>.<id>` (command ids are
    unique across the ledger) and the order ids that follow from them."""
    renamed: list[wire.AnyCommand] = []
    for command in order_flow(count):
        document = command.model_dump()
        document["account_id"] = account
        document["command_id"] = f"{account}.{command.command_id}"
        if "order_id" in document:  # ord-<the placing command's id>: follows the rename
            document["order_id"] = f"ord-{account}.{document['order_id'].removeprefix('ord-')}"
        renamed.append(type(command).model_validate(document))
    return renamed


async def _transactions_heard(url: str, heard: list[str]) -> asyncpg.Connection[asyncpg.Record]:
    connection = await connect(url, application_name="titan-bench-listener")
    await connection.add_listener(NOTIFY_CHANNEL, lambda *args: heard.append(str(args[3])))
    return connection


async def _measure(
    url: str, core: Any, accounts: int, rate: float, commands: int, one_round_trip: bool
) -> dict[str, Any]:
    names = [f"a{i:03d}" for i in range(accounts)]
    per_account = max(2, -(-commands // accounts) + 1)  # the policy, then its share of commands
    flows = {name: account_flow(name, per_account) for name in names}
    scratch = await _scratch_database(url)
    try:
        await upgrade_async(scratch)
        ledger = await PostgresLedger.connect(scratch, one_round_trip=one_round_trip)
        writers: dict[str, AccountWriter] = {}
        try:
            for name in names:
                writers[name] = AccountWriter(name, ledger, core, holder=f"titan-bench {name}")
                await writers[name].start()
            await asyncio.gather(*(writers[name].submit(flows[name][0]) for name in names))
            for writer in writers.values():
                writer.batch_sizes.clear()
            # Round-robin over the accounts, in each account's order.
            offered = [flows[name][k] for k in range(1, per_account) for name in names][:commands]
            heard: list[str] = []
            listener = await _transactions_heard(scratch, heard)
            try:
                head_before = (await ledger.head_async())[0]
                answers = Answers()
                loop = asyncio.get_running_loop()
                # Started up: the collector as `titan serve` leaves it (the commands to offer are
                # frozen with the rest, as input that has not arrived yet).
                with tuned_for_pass():
                    start = loop.time() + 0.05
                    began = time.perf_counter()
                    for i, command in enumerate(offered):
                        delay = start + i / rate - loop.time()
                        if delay > 0:
                            await asyncio.sleep(delay)
                        answers.add(writers[command.account_id].enqueue(command))
                    latencies = await answers.wait()
                    elapsed = time.perf_counter() - began
                head_after = (await ledger.head_async())[0]
                deadline = loop.time() + _NOTIFY_DRAIN_S
                while str(head_after) not in heard and loop.time() < deadline:
                    await asyncio.sleep(0.01)
                transactions = sum(1 for payload in heard if int(payload) > head_before)
            finally:
                await listener.close()
            sizes: Counter[int] = Counter()
            for writer in writers.values():
                sizes.update(writer.batch_sizes)
        finally:
            for writer in writers.values():
                await writer.stop()
            await ledger.close_async()
    finally:
        await _drop_database(url, scratch)
    latencies.sort()
    account_batches = sum(sizes.values())
    return {
        "label": f"{accounts} accounts at {rate:,.0f} commands/s offered",
        "accounts": accounts,
        "commands": len(latencies),
        "offered_per_s": rate,
        "seconds": elapsed,
        "commands_per_s": len(latencies) / elapsed,
        "p50_ms": _percentile(latencies, 0.50) * 1000,
        "p99_ms": _percentile(latencies, 0.99) * 1000,
        "transactions": transactions,
        "mean_batch": len(latencies) / transactions if transactions else 0.0,
        "account_batches": account_batches,
        "mean_account_batch": len(latencies) / account_batches if account_batches else 0.0,
        "core": core.kind,
        "append": "one round trip (titan_append)" if one_round_trip else "four round trips",
        "collector": "tuned as titan serve tunes it (infra.collector)",
    }


async def run_async(
    url: str,
    accounts: int = DEFAULT_ACCOUNTS,
    rate: float = DEFAULT_RATE,
    commands: int | None = None,
    *,
    core: Any = None,
    one_round_trip: bool = True,
) -> dict[str, Any]:
    """Offer `commands` (default: five seconds' worth) at `rate` commands/s round-robin over
    `accounts` writers of one ledger; return p50_ms, p99_ms, commands_per_s, mean_batch
    (commands per ledger transaction) and the rest of the figures. `one_round_trip=False`:
    each writer appends alone in four round trips, as on a ledger without titan_append()."""
    if accounts < 1 or rate <= 0:
        raise ValueError(
            f"need at least one account and a positive rate, not {accounts} and {rate}"
        )
    total = int(rate * DEFAULT_SECONDS) if commands is None else commands
    if total < 1:
        raise ValueError(f"need at least one command to offer, not {total}")
    return await _measure(url, core or default_core(), accounts, rate, total, one_round_trip)


def run(
    url: str,
    accounts: int = DEFAULT_ACCOUNTS,
    rate: float = DEFAULT_RATE,
    commands: int | None = None,
    *,
    core: Any = None,
    one_round_trip: bool = True,
) -> dict[str, Any]:
    """The sync form of `run_async`, for `titan bench`."""
    return asyncio.run(
        run_async(url, accounts, rate, commands, core=core, one_round_trip=one_round_trip)
    )


def main() -> None:
    """`python -m infra.bench.accounts URL [ACCOUNTS [RATE [COMMANDS]]] [--four-round-trips]`:
    print the figures as JSON."""
    import sys

    import orjson

    four = "--four-round-trips" in sys.argv[1:]
    argv = [a for a in sys.argv[1:] if a != "--four-round-trips"]
    if not argv:
        raise SystemExit(
            "usage: python -m infra.bench.accounts postgresql://… [ACCOUNTS [RATE [COMMANDS]]] "
            "[--four-round-trips]"
        )
    accounts = int(argv[1]) if len(argv) > 1 else DEFAULT_ACCOUNTS
    rate = float(argv[2]) if len(argv) > 2 else DEFAULT_RATE
    commands = int(argv[3]) if len(argv) > 3 else None
    figures = run(argv[0], accounts, rate, commands, one_round_trip=not four)
    print(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
