"""`titan bench`: decisions/s of both cores over the same commands, and durable commands/s.

A benchmark, never a test: figures vary with the machine and its load; the spread of repeated
runs is reported so a noisy machine shows itself.
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from typing import Any, Literal

from rich.console import Console
from rich.table import Table

from commands.handlers import Bus
from schemas import commands as wire
from schemas.policy import policy_hash

from .bootstrap import bootstrap, open_ledger
from .core import CoreUnavailableError, load_core
from .settings import Settings
from .submit import default_policy

START_TS_NS = 1_767_225_600_000_000_000
STEP_NS = 150_000_000  # 150 ms between commands: under the default order-rate limit
ACCOUNT = "bench"
SNAPSHOT_EVERY = 100  # orders between truth snapshots: the default policy gates on a fresh one


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
    latencies.sort()
    return {
        "commands": len(flow),
        "commands_per_second": len(flow) / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
    }


def run(n: int, durable_n: int = 5_000, repeats: int = 3) -> dict[str, Any]:
    """Measure everything once, side by side."""
    flow = order_flow(n)
    results: dict[str, Any] = {
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "commands": n,
        "repeats": repeats,
    }
    for kind in ("compiled", "interpreted"):
        try:
            rates = _decisions_per_second(load_core(kind), flow, repeats)
        except CoreUnavailableError as exc:
            results[kind] = {"unavailable": str(exc)}
            continue
        results[kind] = {
            "decisions_per_second": max(rates),
            "spread": (max(rates) - min(rates)) / max(rates),
        }
    compiled, interpreted = results["compiled"], results["interpreted"]
    if "decisions_per_second" in compiled and "decisions_per_second" in interpreted:
        results["compiled_speedup"] = compiled["decisions_per_second"] / interpreted["decisions_per_second"]
    results["embedded_ledger"] = _durable(flow[:durable_n])
    spreads = [r["spread"] for r in (compiled, interpreted) if "spread" in r]
    results["noisy"] = bool(spreads) and statistics.fmean(spreads) > 0.2
    return results


def print_results(console: Console, results: dict[str, Any]) -> None:
    """The benchmark table."""
    machine = results["machine"]
    table = Table("measure", "figure", title=f"titan bench ({machine['cores']} cores, Python {machine['python']})")
    for kind in ("compiled", "interpreted"):
        r = results[kind]
        figure = f"{r['decisions_per_second']:,.0f}/s (spread {r['spread']:.0%})" if "decisions_per_second" in r else r["unavailable"]
        table.add_row(f"{kind} core decide+evolve, {results['commands']:,} commands", figure)
    if "compiled_speedup" in results:
        table.add_row("compiled / interpreted", f"{results['compiled_speedup']:.2f}x")
    e = results["embedded_ledger"]
    table.add_row(
        f"durable commands into the embedded ledger ({e['commands']:,})",
        f"{e['commands_per_second']:,.0f}/s (p50 {e['p50_ms']:.2f} ms, p99 {e['p99_ms']:.2f} ms)",
    )
    console.print(table)
    if results["noisy"]:
        console.print("[yellow]warning:[/] repeated runs differ by more than 20%: the machine is busy; figures are unreliable")
