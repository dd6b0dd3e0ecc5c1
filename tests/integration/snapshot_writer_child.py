"""A group-commit writer with snapshots in its own process, for the crash test: like
writer_child.py, with the database's snapshot store and a small `snapshot_every`; it says which
snapshot it started from (`STARTED <version or 0>`), then `ACK <command_id> <outcome> <position>`
for each answer as it arrives (the parent kills it with SIGKILL mid-run).

    python -m tests.integration.snapshot_writer_child URL ACCOUNT COUNT MAX_BATCH SNAPSHOT_EVERY
"""

from __future__ import annotations

import asyncio
import sys

from adapters.postgres.ledger import PostgresLedger
from adapters.postgres.snapshots import PostgresSnapshotStore
from commands.snapshots import Snapshots
from commands.writer import AccountWriter
from infra.core import load_core
from schemas import commands as wire
from tests.integration.writer_support import activation, orders


async def main(url: str, account: str, count: int, max_batch: int, every: int) -> None:
    ledger = await PostgresLedger.connect(url)
    snapshots = Snapshots(PostgresSnapshotStore(url), ledger)
    writer = AccountWriter(
        account, ledger, load_core("interpreted"), max_batch=max_batch, snapshots=snapshots, snapshot_every=every
    )
    await writer.start()
    print(f"STARTED {writer.started_from.version if writer.started_from else 0} {writer.version}", flush=True)

    async def submit(command: wire.AnyCommand) -> None:
        outcome = await writer.submit(command)
        sys.stdout.write(f"ACK {outcome.command_id} {outcome.outcome} {outcome.position}\n")
        sys.stdout.flush()

    await submit(activation(account))
    await asyncio.gather(*(submit(c) for c in orders(account, count)))
    await writer.stop()
    await asyncio.to_thread(snapshots.close)
    await ledger.close_async()
    print(f"DONE {writer.snapshots_written} {writer.snapshot_failures}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])))
