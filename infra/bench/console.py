"""The console's figures for `titan bench` (a benchmark, never a timed test): `explainDecision` and
`events` pages over real HTTP, on an embedded ledger of at least 100,000 records that titan itself
wrote.

- The ledger: `titan demo --seed 7 --orders N` (in-process, the demo's own bus: every command
  decided and recorded), N from `RECORDS_PER_ORDER`, kept in a cache directory (`--cache`, else
  TITAN_BENCH_CACHE, else a scratch directory removed afterwards) under a name that says the seed
  and N, so a second run reuses it; `build_s` is how long writing it took (null when reused). The
  read models beside it are caught up once (the projections runner) before anything is measured.
- The console: the real app (`adapters.console.app.console_app` over `infra.console.open_console`)
  served by uvicorn on 127.0.0.1 (`EmbeddedServer`, port 0), an auditor's token; one keep-alive
  httpx client in the same process sends every request in turn (client and server share the
  machine: the figures are the whole round trip).
- `explain`: `explainDecision(orderId)` with every field of the trace, for `EXPLAIN_CALLS` orders
  drawn (fixed seed) in equal numbers from the first, middle and last third of the ledger's orders;
  p50/p99/max, and the p50 of each third. `cold_ms` is the first call, on an account the console
  has not folded yet (it folds it once, keeping snapshots); the measured calls come after a
  warm-up. `events` and `events_filtered`: `events(first: 100)` from `EVENTS_CALLS` cursors drawn at
  random (fixed seed) over the ledger, without a filter and with `types: EVENT_TYPES`.

`--quick`: a ledger of `QUICK_RECORDS` and `QUICK_CALLS` calls.

    python -m infra.bench.console [--quick] [--records N] [--cache DIR] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

from infra.bench.figures import print_results

DEFAULT_RECORDS: Final = 100_000
QUICK_RECORDS: Final = 10_000
RECORDS_PER_ORDER: Final = 3.8
"""Ledger records `titan demo` writes per order intent, with a margin: 4.95 at 1,000 intents, 4.12
at 20,000, 3.97 at 25,000 (measured: a longer session refuses more of its intents, and a refusal
writes fewer records), so N = records / 3.8 is enough at these sizes."""
DEMO_SEED: Final = 7
CHOICE_SEED: Final = 2026
EXPLAIN_CALLS: Final = 51
"""Orders explained (17 from each third of the ledger)."""
EVENTS_CALLS: Final = 200
QUICK_CALLS: Final = (15, 50)
"""Orders explained and pages of each kind read with `--quick`."""
WARMUP_CALLS: Final = 5
PAGE: Final = 100
EVENT_TYPES: Final = ("order.filled.v1",)
CACHE_ENV: Final = "TITAN_BENCH_CACHE"
PLACE_ORDER: Final = "place_order.v1"

EXPLAIN_QUERY: Final = """query($id: String!) { explainDecision(orderId: $id) {
  subject orderId commandId
  request { type accountId actor tsNs time issuedTsNs phaseId intentId correlationId causationId command }
  policy { activeHash carriedHash policyId }
  decision { position outcome reason checks { check value limit verdict } detail
             events { position eventId type tsNs time commandId actor data } commandRecord { position hash } }
  context { asOfPosition state openOrders setBy { position eventId type tsNs time commandId actor } positionBefore }
  lifecycle { status events { position eventId type tsNs time commandId actor data }
              fills { position eventId tsNs time fillId quantity price fee liquidity referencePrice slippageBps realizedPnl }
              filledQuantity averageFillPrice averageSlippageBps realizedPnl fees positionAfter }
} }"""

EVENTS_QUERY: Final = """query($first: Int!, $after: String, $types: [String!]) {
  events(first: $first, after: $after, types: $types) {
    edges { cursor node { position streamId version type eventId tsNs commandId actor correlationId causationId policyHash hash data } }
    pageInfo { hasNextPage endCursor }
    headPosition
  }
}"""


def summary(latencies_s: list[float]) -> dict[str, Any]:
    """Calls and p50/p99/max latency (ms, nearest rank) of one measured series."""
    ordered = sorted(latencies_s)
    if not ordered:
        return {"calls": 0}
    return {
        "calls": len(ordered),
        "p50_ms": round(ordered[len(ordered) // 2] * 1000, 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


def demo_orders(records: int) -> int:
    """How many demo order intents write at least `records` records."""
    return max(1, math.ceil(records / RECORDS_PER_ORDER))


def demo_ledger(directory: Path, orders: int, seed: int = DEMO_SEED) -> tuple[Path, float | None]:
    """The demo ledger of `orders` intents in `directory`: reused when there, else written (as
    `titan demo --orders N --ledger sqlite:///PATH` writes it) and moved into place only once
    complete. Returns its path and the seconds writing it took (None when reused)."""
    from adapters.sqlite.ledger import SQLiteLedger
    from infra import demo as demo_session
    from infra.bootstrap import account_writer
    from infra.settings import Settings

    name = f"console-demo-seed{seed}-orders{orders}"
    final = directory / name
    path = final / "ledger.db"
    if path.exists():
        return path, None
    building = Path(tempfile.mkdtemp(prefix=name + ".", suffix=".building", dir=directory))
    url = "sqlite:///" + str(building / "ledger.db")
    began = time.perf_counter()
    ledger = SQLiteLedger(str(building / "ledger.db"))
    try:
        with account_writer(Settings(ledger_url=url), ledger, "bench", [demo_session.ACCOUNT]) as bus:
            demo_session.run(bus, seed=seed, orders=orders, ledger_url=url, progress=False)
    finally:
        ledger.close()
    elapsed = time.perf_counter() - began
    try:
        building.rename(final)
    except OSError:  # another run finished the same ledger first: use that one
        shutil.rmtree(building, ignore_errors=True)
    return path, elapsed


def order_ids(ledger: Any) -> list[str]:
    """Every order id of the ledger, in position order (from its place-order command records)."""
    from commands.ports import RecordFilter
    from replay.explain import ORDER_PREFIX

    found: list[str] = []
    after = 0
    where = RecordFilter(types=("command.recorded.v1",))
    while True:
        records, reached = ledger.read_matching(after, 10_000, where, scan_limit=100_000)
        for record in records:
            command = (record.envelope.get("data") or {}).get("command") or {}
            if command.get("type") == PLACE_ORDER:
                found.append(ORDER_PREFIX + str(command.get("command_id")))
        if reached <= after:
            return found
        after = reached


def spread_choice(items: list[str], calls: int, seed: int) -> list[tuple[str, str]]:
    """`calls` items drawn in equal numbers from the first, middle and last third (fixed seed),
    each with the name of its third, interleaved so no third is measured all at once."""
    rng = random.Random(seed)
    thirds = [("early", items[: len(items) // 3]), ("middle", items[len(items) // 3 : 2 * len(items) // 3]), ("late", items[2 * len(items) // 3 :])]
    per = max(1, calls // 3)
    drawn = [[(name, item) for item in rng.sample(part, min(per, len(part)))] for name, part in thirds if part]
    chosen = [pick for round_ in zip(*drawn, strict=False) for pick in round_]
    return chosen


async def measure(path: Path, *, explain_calls: int = EXPLAIN_CALLS, events_calls: int = EVENTS_CALLS, warmup: int = WARMUP_CALLS) -> dict[str, Any]:
    """Serve the console over the ledger at `path` and measure it over HTTP."""
    import httpx
    from prometheus_client import CollectorRegistry

    from adapters.console.app import console_app
    from adapters.console.auth import TokenBook, new_token, token_line
    from adapters.console.graphql.events import encode_cursor
    from adapters.console.probes import Check, Readiness
    from adapters.console.server import EmbeddedServer
    from adapters.sqlite.ledger import SQLiteLedger
    from infra.console import DlqActions, LocalCommands, open_console
    from infra.core import load_core
    from infra.settings import Settings
    from projections import registry
    from projections.runner import Runner

    url = "sqlite:///" + str(path)
    settings = Settings(ledger_url=url)
    ledger = SQLiteLedger(str(path))
    token = new_token()
    book = TokenBook(lines=token_line("bench-auditor", ["auditor"], token))
    core = load_core("auto")
    opened = await open_console(settings, ledger, core, book, LocalCommands(settings, ledger, DlqActions(None, None)))
    server: EmbeddedServer | None = None
    try:
        began = time.perf_counter()
        await Runner(ledger, opened.store, registry.select()).catch_up()
        catch_up_s = time.perf_counter() - began
        head, _, records = ledger.head()
        orders = order_ids(ledger)
        if not orders:
            raise RuntimeError(f"ledger {path} holds no orders to explain")
        app = console_app(opened.services, lambda: Readiness("console", {"ledger": Check(True, "bench")}), CollectorRegistry())
        server = EmbeddedServer(app, "127.0.0.1", 0)
        await server.start()
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", headers=headers, timeout=300.0) as client:

            async def ask(query: str, variables: dict[str, Any]) -> float:
                sent = time.perf_counter()
                response = await client.post("/graphql", json={"query": query, "variables": variables})
                took = time.perf_counter() - sent
                body = response.json()
                if response.status_code != 200 or body.get("errors"):
                    raise RuntimeError(f"console answered {response.status_code}: {str(body)[:300]}")
                return took

            rng = random.Random(CHOICE_SEED)
            cold_ms = round(await ask(EXPLAIN_QUERY, {"id": orders[-1]}) * 1000, 2)
            for _ in range(warmup):
                await ask(EXPLAIN_QUERY, {"id": rng.choice(orders)})
                await ask(EVENTS_QUERY, {"first": PAGE, "after": encode_cursor(rng.randrange(head))})
            by_third: dict[str, list[float]] = {}
            for third, order_id in spread_choice(orders, explain_calls, CHOICE_SEED):
                by_third.setdefault(third, []).append(await ask(EXPLAIN_QUERY, {"id": order_id}))
            explained = [took for series in by_third.values() for took in series]
            plain = [await ask(EVENTS_QUERY, {"first": PAGE, "after": encode_cursor(rng.randrange(head))}) for _ in range(events_calls)]
            filtered = [
                await ask(EVENTS_QUERY, {"first": PAGE, "after": encode_cursor(rng.randrange(head)), "types": list(EVENT_TYPES)})
                for _ in range(events_calls)
            ]
    finally:
        if server is not None:
            await server.stop()
        await opened.close()
        ledger.close()
    return {
        "ledger_records": records,
        "ledger_head": head,
        "orders": len(orders),
        "catch_up_s": round(catch_up_s, 2),
        "explain": {
            **summary(explained),
            "cold_ms": cold_ms,
            **{f"{third}_p50_ms": summary(series)["p50_ms"] for third, series in by_third.items()},
        },
        "events": {**summary(plain), "first": PAGE},
        "events_filtered": {**summary(filtered), "first": PAGE, "types": list(EVENT_TYPES)},
    }


def run(*, quick: bool = False, records: int | None = None, cache: str | None = None, calls: tuple[int, int] | None = None) -> dict[str, Any]:
    """Write (or reuse) the demo ledger and measure the console over it."""
    wanted = records if records is not None else (QUICK_RECORDS if quick else DEFAULT_RECORDS)
    orders = demo_orders(wanted)
    chosen = cache or os.environ.get(CACHE_ENV) or None
    scratch = None if chosen else tempfile.mkdtemp(prefix="titan-bench-console-")
    directory = Path(chosen or str(scratch))
    directory.mkdir(parents=True, exist_ok=True)
    try:
        path, build_s = demo_ledger(directory, orders)
        explain_calls, events_calls = calls or (QUICK_CALLS if quick else (EXPLAIN_CALLS, EVENTS_CALLS))
        figures = asyncio.run(measure(path, explain_calls=explain_calls, events_calls=events_calls, warmup=min(WARMUP_CALLS, explain_calls)))
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return {
        "records_wanted": wanted,
        "demo_orders": orders,
        "demo_seed": DEMO_SEED,
        "ledger": str(path) if chosen else None,
        "build_s": None if build_s is None else round(build_s, 1),
        "reused": build_s is None,
        **figures,
    }


def format_results(results: dict[str, Any]) -> list[str]:
    """Lines for a terminal or a document."""
    explain, plain, filtered = results["explain"], results["events"], results["events_filtered"]
    built = "reused" if results["reused"] else f"written in {results['build_s']} s"
    thirds = ", ".join(f"{third} {explain[f'{third}_p50_ms']} ms" for third in ("early", "middle", "late") if f"{third}_p50_ms" in explain)
    lines = [f"ledger: {results['ledger_records']:,} records, {results['orders']:,} orders (titan demo --orders {results['demo_orders']:,}, {built})"]
    lines.append(
        f"explainDecision ({explain['calls']} orders): p50 {explain['p50_ms']} ms, p99 {explain['p99_ms']} ms, max {explain['max_ms']} ms"
        f" (p50 by third: {thirds}); first call, folding the account: {explain['cold_ms']} ms"
    )
    for page in (plain, filtered):
        where = f", types: {page['types']}" if "types" in page else ""
        lines.append(f"events(first: {page['first']}{where}) from random cursors ({page['calls']}): p50 {page['p50_ms']} ms, p99 {page['p99_ms']} ms")
    return lines


def main(argv: list[str] | None = None) -> int:
    """`python -m infra.bench.console [--quick] [--records N] [--cache DIR] [--json]`."""
    parser = argparse.ArgumentParser(prog="python -m infra.bench.console")
    parser.add_argument("--quick", action="store_true", help=f"a ledger of {QUICK_RECORDS:,} records instead of {DEFAULT_RECORDS:,}")
    parser.add_argument("--records", type=int, default=None, help="at least this many ledger records")
    parser.add_argument("--cache", default=None, help=f"keep and reuse the ledger here (default {CACHE_ENV}, else a scratch directory)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = run(quick=args.quick, records=args.records, cache=args.cache)
    print_results(results, args.json, format_results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
