"""First decision after start (issue 14), for `titan bench`: how long a writer takes, in a fresh
process, from opening an embedded ledger that holds one long account to the durable answer of
that account's next order.

- The ledger: one account (`infra.bench.ACCOUNT`) of at least `DEFAULT_EVENTS` events
  (`QUICK_EVENTS` with `--quick`), the bench's order flow (`infra.bench.order_flow`) written
  through the group-commit writer (`infra.bench.submit_flow`), in a child process. It is kept in
  a cache directory (`--cache`, else TITAN_BENCH_CACHE, else a scratch directory removed
  afterwards) under a name that says the events, with the next command of the flow (a
  PlaceOrder) beside it; a second run reuses both. The cached file is never written by a
  measurement: each one starts from a copy of it.
- The measurement, in another fresh child (nothing imported, loaded or folded before it): the
  modules are imported, the core loaded, the command read and the collector tuned as `titan
  serve` tunes it before its writers start (`setup_ms`, after the interpreter and the module's
  own imports; `process_ms`, the whole child as its parent saw it, interpreter start and exit
  included), then the clock runs over
  opening the ledger (`open_ms`), `AccountWriter.start()` — the lease and the account's state
  (`load_ms`) — and submitting the next order until its records are durable
  (`first_answer_ms`); `first_decision_ms` is their sum. `records_read` counts the ledger records
  the writer read to start; `peak_rss_kb` is the child's own high-water mark (VmHWM).

The operating system's file cache is warm (the copy was just read): the figure is the process's
own start, not a cold disk.

    python -m infra.bench.start [--quick] [--events N] [--cache DIR] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import orjson

from commands.lease import LeaseStore, StreamLease
from commands.ports import Ledger, NewRecord, Record
from commands.writer import AccountWriter
from infra.bench.console import CACHE_ENV
from infra.bench.figures import print_results
from schemas import commands as wire

DEFAULT_EVENTS: Final = 200_000
QUICK_EVENTS: Final = 20_000
EVENTS_MARGIN: Final = 1.01
"""Commands per event to write, with a margin: the order flow records one event per command,
plus the day roll and the odd truth snapshot (measured 1.0003)."""
WINDOW: Final = 10_000
"""Commands in flight at once while writing (a long flow's futures, bounded)."""
HOLDER: Final = "titan-bench-start"
LAYOUT: Final = 2
"""Part of the cached ledger's name: raise it when `_writer` changes what the writer stores beside
the ledger, so a ledger written the old way is not reused (2: with the writer's snapshots)."""
LEDGER_FILE: Final = "ledger.db"
NEXT_COMMAND_FILE: Final = "next-command.json"


def _writer(ledger: Ledger, core: Any, leases: LeaseStore | None = None) -> AccountWriter:
    """The account's writer, built the same way where the ledger is written and where the start
    is timed (the one place to pass it the snapshot option when there is one). `leases` (default:
    the ledger's own, `infra.writers.lease_store`) lets the timed start count what it reads. The
    writer takes snapshots as `titan serve`'s do (TITAN_SNAPSHOT_EVERY, default every 1,000
    events, and one when it stops) and starts from the newest; `_close` closes their store."""
    from infra.bench import ACCOUNT
    from infra.settings import Settings
    from infra.writers import lease_store, snapshot_options

    options = snapshot_options(ledger, Settings())
    return AccountWriter(ACCOUNT, leases or lease_store(ledger), core, holder=HOLDER, **options)


def _close(writer: AccountWriter) -> None:
    if writer.snapshots is not None:
        writer.snapshots.close()


class _CountedLease:
    """A held lease that counts the ledger records read through it; anything else it is asked
    for passes on to the lease."""

    def __init__(self, lease: StreamLease, counter: list[int]) -> None:
        self._lease = lease
        self._counter = counter

    @property
    def holder(self) -> str:
        return self._lease.holder

    async def append(self, records: Sequence[NewRecord]) -> list[Record]:
        return await self._lease.append(records)

    async def read_stream(self, stream_id: str, after_version: int = 0) -> list[Record]:
        records = await self._lease.read_stream(stream_id, after_version)
        self._counter[0] += len(records)
        return records

    async def first_records(self, stream_ids: Sequence[str]) -> dict[str, Record]:
        found = await self._lease.first_records(stream_ids)
        self._counter[0] += len(found)
        return found

    async def release(self) -> None:
        await self._lease.release()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._lease, name)


class _CountedLeases:
    """A lease store whose leases count the records read through them (`records`)."""

    def __init__(self, store: LeaseStore) -> None:
        self._store = store
        self._counter = [0]

    @property
    def records(self) -> int:
        return self._counter[0]

    async def acquire_lease(self, stream_id: str, holder: str) -> _CountedLease:
        return _CountedLease(await self._store.acquire_lease(stream_id, holder), self._counter)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def _split_flow(events: int) -> tuple[list[wire.AnyCommand], wire.PlaceOrder]:
    """The commands to write for at least `events` events, and the next PlaceOrder of the flow
    (the command the timed start answers)."""
    from infra.bench import order_flow

    wanted = int(events * EVENTS_MARGIN) + 1
    flow = order_flow(wanted + 4)  # a PlaceOrder comes at least every fourth command
    nxt = next(i for i in range(wanted, len(flow)) if isinstance(flow[i], wire.PlaceOrder))
    following = flow[nxt]
    assert isinstance(following, wire.PlaceOrder)
    return flow[:nxt], following


def _child_write(directory: str, events: int) -> dict[str, Any]:
    """Write the account's ledger and its next command into `directory` (a child of its own:
    the flow and the writer's memory stay out of the bench's process)."""
    from infra.bench import submit_flow
    from infra.bootstrap import open_ledger
    from infra.collector import tuned_for_pass
    from infra.core import load_core

    written, following = _split_flow(events)
    core = load_core("auto")
    url = "sqlite:///" + str(Path(directory) / LEDGER_FILE)

    async def go() -> dict[str, Any]:
        ledger = open_ledger(url)
        try:
            writer = _writer(ledger, core)
            await writer.start()
            figures = await submit_flow(writer, written, window=WINDOW)
            version = writer.version
            await writer.stop()
            _close(writer)
        finally:
            ledger.close()
        return {"commands": len(written), "events": version, **figures}

    with tuned_for_pass():
        figures = asyncio.run(go())
    if figures["events"] < events:
        raise RuntimeError(f"wrote {figures['events']:,} events, fewer than the {events:,} asked for")
    (Path(directory) / NEXT_COMMAND_FILE).write_text(following.model_dump_json())
    return {"events": figures["events"], "commands": figures["commands"], "commands_per_second": figures["commands_per_second"]}


def _child_start(directory: str) -> dict[str, Any]:
    """Open the ledger in `directory`, start the account's writer, answer its next command: the
    three times, the records read, this process's own peak memory."""
    began = time.perf_counter()
    from infra.bench.replay import peak_rss_kb
    from infra.bootstrap import open_ledger
    from infra.collector import tune_for_service
    from infra.core import load_core
    from infra.writers import lease_store

    core = load_core("auto")
    command = wire.COMMANDS.validate_json((Path(directory) / NEXT_COMMAND_FILE).read_bytes())
    url = "sqlite:///" + str(Path(directory) / LEDGER_FILE)
    tune_for_service()  # as `titan serve` does before its writers start
    set_up = time.perf_counter()

    async def go() -> dict[str, Any]:
        t0 = time.perf_counter()
        ledger = open_ledger(url)
        t1 = time.perf_counter()
        try:
            counted = _CountedLeases(lease_store(ledger))
            writer = _writer(ledger, core, counted)
            await writer.start()
            t2 = time.perf_counter()
            read, events = counted.records, writer.version
            outcome = await writer.submit(command)
            t3 = time.perf_counter()
            started_from = writer.started_from
            await writer.stop()
            _close(writer)
        finally:
            ledger.close()
        return {
            "open_ms": round((t1 - t0) * 1000, 2),
            "load_ms": round((t2 - t1) * 1000, 2),
            "first_answer_ms": round((t3 - t2) * 1000, 2),
            "first_decision_ms": round((t3 - t0) * 1000, 2),
            "records_read": read,
            "snapshot_version": started_from.version if started_from is not None else 0,
            "events": events,
            "outcome": outcome.outcome,
            "core": core.kind,
        }

    figures = asyncio.run(go())
    return {**figures, "setup_ms": round((set_up - began) * 1000, 2), "peak_rss_kb": peak_rss_kb()}


def cached_ledger(directory: Path, events: int) -> tuple[Path, float | None, dict[str, Any] | None]:
    """The account's ledger directory in `directory`: reused when complete, else written (in a
    child) into a scratch directory beside it and moved into place only once complete. Returns
    the directory, the seconds writing it took and the writing child's figures (None when reused)."""
    from infra.bench.replay import in_subprocess

    name = f"start-account-events{events}-layout{LAYOUT}"
    final = directory / name
    if (final / LEDGER_FILE).exists() and (final / NEXT_COMMAND_FILE).exists():
        return final, None, None
    building = Path(tempfile.mkdtemp(prefix=name + ".", suffix=".building", dir=directory))
    began = time.perf_counter()
    try:
        written = in_subprocess("infra.bench.start", "write", str(building), str(events))
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    elapsed = time.perf_counter() - began
    try:
        building.rename(final)
    except OSError:  # another run finished the same ledger first: use that one
        shutil.rmtree(building, ignore_errors=True)
    return final, elapsed, written


def _copy_ledger(source: Path, target: Path) -> None:
    """Copy the ledger (and its write-ahead log and next command) so the measurement never
    writes the cached one."""
    target.mkdir(parents=True, exist_ok=True)
    for name in (LEDGER_FILE, LEDGER_FILE + "-wal", NEXT_COMMAND_FILE):
        if (source / name).exists():
            shutil.copyfile(source / name, target / name)


def run(*, quick: bool = False, events: int | None = None, cache: str | None = None) -> dict[str, Any]:
    """Write (or reuse) the account's ledger, then time the first decision after start."""
    from infra.bench.replay import in_subprocess

    wanted = events if events is not None else (QUICK_EVENTS if quick else DEFAULT_EVENTS)
    chosen = cache or os.environ.get(CACHE_ENV) or None
    scratch = None if chosen else tempfile.mkdtemp(prefix="titan-bench-start-")
    directory = Path(chosen or str(scratch))
    directory.mkdir(parents=True, exist_ok=True)
    try:
        ledger_dir, build_s, written = cached_ledger(directory, wanted)
        with tempfile.TemporaryDirectory(prefix="titan-bench-start-run-", dir=directory) as run_dir:
            _copy_ledger(ledger_dir, Path(run_dir))
            spawned = time.perf_counter()
            figures = in_subprocess("infra.bench.start", "start", run_dir)
            figures["process_ms"] = round((time.perf_counter() - spawned) * 1000, 1)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return {
        "events_wanted": wanted,
        "ledger": str(ledger_dir / LEDGER_FILE) if chosen else None,
        "reused": build_s is None,
        "build_s": None if build_s is None else round(build_s, 1),
        "build_commands_per_second": None if written is None else round(written["commands_per_second"]),
        **figures,
    }


def format_results(results: dict[str, Any]) -> list[str]:
    """Lines for a terminal or a document."""
    built = "reused" if results["reused"] else f"written in {results['build_s']} s"
    timed = (
        f"first decision after start: {results['first_decision_ms']:,.1f} ms = open {results['open_ms']:,.1f} ms "
        f"+ start (lease + load, {results['records_read']:,} records read) {results['load_ms']:,.1f} ms "
        f"+ first answer ({results['outcome']}) {results['first_answer_ms']:,.1f} ms; "
        f"the whole child process {results['process_ms']:,.0f} ms; peak RSS {results['peak_rss_kb'] / 1024:.0f} MiB"
    )
    return [f"ledger: one account of {results['events']:,} events ({built})", timed]


def main(argv: list[str] | None = None) -> int:
    """`python -m infra.bench.start [--quick] [--events N] [--cache DIR] [--json]`."""
    parser = argparse.ArgumentParser(prog="python -m infra.bench.start")
    sub = parser.add_subparsers(dest="action")
    child = sub.add_parser("_child")
    child.add_argument("what", choices=["write", "start"])
    child.add_argument("directory")
    child.add_argument("events", nargs="?", type=int, default=DEFAULT_EVENTS)
    parser.add_argument("--quick", action="store_true", help=f"an account of {QUICK_EVENTS:,} events instead of {DEFAULT_EVENTS:,}")
    parser.add_argument("--events", type=int, default=None, help="at least this many events in the account")
    parser.add_argument("--cache", default=None, help=f"keep and reuse the ledger here (default {CACHE_ENV}, else a scratch directory)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.action == "_child":
        if args.what == "write":
            result = _child_write(args.directory, args.events)
        else:
            result = _child_start(args.directory)
        sys.stdout.write(orjson.dumps(result).decode() + "\n")
        return 0
    results = run(quick=args.quick, events=args.events, cache=args.cache)
    print_results(results, args.json, format_results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
