"""Group-commit writers of several accounts in one process on one ledger (one committer), for the
crash test: submits each account's flow with many concurrent callers and prints
`ACK <command_id> <outcome> <position>` for each answer as it arrives (the parent kills it with
SIGKILL mid-run).

    python -m tests.integration.accounts_writer_child URL ACCOUNTS COUNT MAX_BATCH
"""

from __future__ import annotations

import asyncio
import sys

from adapters.postgres.ledger import PostgresLedger
from commands.writer import AccountWriter
from infra.core import load_core
from schemas import commands as wire
from tests.integration.writer_support import activation, orders


def account_names(accounts: int) -> list[str]:
    return [f"acct{i}" for i in range(accounts)]


async def main(url: str, accounts: int, count: int, max_batch: int) -> None:
    ledger = await PostgresLedger.connect(url)
    core = load_core("interpreted")
    writers = {
        name: AccountWriter(name, ledger, core, max_batch=max_batch)
        for name in account_names(accounts)
    }
    for writer in writers.values():
        await writer.start()
    print("STARTED", flush=True)

    async def submit(command: wire.AnyCommand) -> None:
        outcome = await writers[command.account_id].submit(command)
        sys.stdout.write(f"ACK {outcome.command_id} {outcome.outcome} {outcome.position}\n")
        sys.stdout.flush()

    await asyncio.gather(*(submit(activation(name)) for name in writers))
    await asyncio.gather(*(submit(c) for name in writers for c in orders(name, count)))
    for writer in writers.values():
        await writer.stop()
    await ledger.close_async()
    print("DONE", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
