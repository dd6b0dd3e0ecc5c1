"""A group-commit writer in its own process, for the crash test: submits a flow of commands with
many concurrent callers and prints `ACK <command_id> <outcome> <position>` for each answer, as it
arrives (the parent kills it with SIGKILL mid-run).

    python -m tests.integration.writer_child URL ACCOUNT COUNT MAX_BATCH
"""

from __future__ import annotations

import asyncio
import sys

from adapters.postgres.ledger import PostgresLedger
from commands.writer import AccountWriter
from infra.core import load_core
from schemas import commands as wire
from tests.integration.writer_support import activation, orders


async def main(url: str, account: str, count: int, max_batch: int) -> None:
    ledger = await PostgresLedger.connect(url)
    writer = AccountWriter(account, ledger, load_core("interpreted"), max_batch=max_batch)
    await writer.start()
    print("STARTED", flush=True)

    async def submit(command: wire.AnyCommand) -> None:
        outcome = await writer.submit(command)
        sys.stdout.write(f"ACK {outcome.command_id} {outcome.outcome} {outcome.position}\n")
        sys.stdout.flush()

    await submit(activation(account))
    await asyncio.gather(*(submit(c) for c in orders(account, count)))
    await writer.stop()
    await ledger.close_async()
    print("DONE", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
