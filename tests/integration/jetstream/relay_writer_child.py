"""Writes a ledger in its own process while a relay mirrors it: truth snapshots (cheap, valid
commands, two records each) through the group-commit writer, `count` of them in groups of
`group`, pausing `pause_s` between groups, and prints `HEAD <position>` after each group.

    python -m tests.integration.jetstream.relay_writer_child URL PREFIX COUNT GROUP PAUSE_S
"""

from __future__ import annotations

import asyncio
import sys

from commands.writer import GroupCommitBus
from infra.bootstrap import open_ledger
from infra.core import load_core
from schemas import commands as wire

T0 = 1_767_225_600_000_000_000


def snapshot(prefix: str, n: int) -> wire.RecordTruthSnapshot:
    ts = T0 + n * 1_000_000
    return wire.RecordTruthSnapshot(
        command_id=f"{prefix}-{n}", account_id="main", ts_ns=ts, actor="paper-venue", venue="paper",
        positions=[], open_order_ids=[], equity="100000", venue_ts_ns=ts, latency_ms=5,
    )


async def main(url: str, prefix: str, count: int, group: int, pause_s: float) -> None:
    from infra.writers import lease_store

    ledger = open_ledger(url)
    bus = GroupCommitBus(lease_store(ledger), load_core(), max_batch=500)
    try:
        for start in range(0, count, group):
            outcomes = await asyncio.gather(
                *(bus.handle(snapshot(prefix, n)) for n in range(start, min(start + group, count)))
            )
            print(f"HEAD {max(o.position for o in outcomes)}", flush=True)
            if pause_s:
                await asyncio.sleep(pause_s)
    finally:
        await bus.stop()
        ledger.close()
    print("DONE", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])))
