"""`titan serve`'s figures for `titan bench` (issues 11 and 12): commands/s through the NATS intake
into PostgreSQL with replies, publish-to-outcome latency at a fixed offered rate, decide-to-execution
latency (command in, order out on `titan.exec`), and the hot standby's takeover after a kill -9.

Call `run(pg_url)`: it starts a private nats-server (infra.private_nats) with titan's streams,
makes a scratch PostgreSQL database on the server `pg_url` names (dropped afterwards), writes a key
file (mode 0600) for the issuers `execution`, `phase1` and `console`, and runs `titan serve --account bench` as
real child processes (the venv's console script), with TITAN_LEDGER_URL, TITAN_NATS_URL,
TITAN_INTAKE_KEYS and TITAN_SERVE_PORT set. This process publishes signed commands through
`adapters.nats.sender.Sender` on one connection: truth snapshots from `execution` (actor
"execution:bench") and, one in five, a place order from `phase1` (actor "phase1-bench"); no `ts_ns`
(the intake stamps it). Figures:

- `serve_commands_per_s`: `commands` commands published in order, at most `WINDOW` unanswered at a
  time; from the first publish to the last outcome (goal >= 10,000/s). The serve's own /metrics
  give the group-commit batch sizes and the mean decision and commit times of that phase;
- `serve_latency_*_ms`: `rate` commands/s offered open loop for `seconds` (one task publishes in
  order, sleeping to the schedule, never waiting for answers); publish-to-outcome latency of each
  (perf_counter at publish and in the outcome's callback): p50, p99, max (goal p99 <= 5 ms);
- `exec_latency_*_ms` (issue 12's "Done when"; goal: none, reported): the orders the phases above
  left open (never filled: no engine runs) are closed by venue rejects from `execution`; the
  console (actor "operator:bench") activates `bench_policy()`, the default policy with every limit
  a 1,000/s flow of small alternating-side orders hits raised; a truth snapshot from `execution`
  first and one about every second after; then `rate` place orders/s from `phase1` carrying that
  policy's hash, offered open loop for `seconds`. Latency of each accepted order from perf_counter
  at its publish to the arrival of its place message on `titan.exec.paper.place` (a core NATS
  subscription on this process's connection, matched by `Titan-Order-Id` = `ord-<command id>`):
  p50, p99, max, next to `exec_orders_accepted` of `exec_orders_offered` and the same orders'
  publish-to-outcome p50/p99 (`exec_outcome_*_ms`: the gateway's share is the difference) and
  the p50 of each second's orders (`exec_latency_p50_by_second_ms`: every order is checked
  against every open one, and none is ever filled here, so the decision slows as they pile up);
- `serve_takeover_*_s`: a leader and a hot standby on the same ledger (the one the phases above
  filled); once the standby's /ready says role "standby", the leader is killed -9; seconds from the
  kill until the standby's /ready answers 200, and until the outcome of a command published right
  after the kill.

The publisher shares the machine with the serve (and nats-server, PostgreSQL): on two cores the
figures are the whole system's, client included.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Self

import nats
import orjson
from nats.aio.client import Client

from adapters.nats import subjects
from adapters.nats.sender import Sender
from adapters.nats.signing import Keys, generate_keys, keys_text
from infra.private_nats import PrivateNats, free_port
from infra.submit import default_policy
from schemas.base import MAX_COUNT
from schemas.policy import MAX_OPEN_ORDERS, PolicyDocument, policy_hash

DEFAULT_COMMANDS: Final = 20_000
QUICK_COMMANDS: Final = 2_000
DEFAULT_RATE: Final = 1_000
DEFAULT_SECONDS: Final = 5.0
QUICK_SECONDS: Final = 2.0
WINDOW: Final = 1_000
"""At most this many commands published and not yet answered in the throughput phase."""
ORDER_EVERY: Final = 5
"""One place order from phase1 per four truth snapshots from execution."""
ACCOUNT: Final = "bench"
WARMUP: Final = 200
READY_TIMEOUT_S: Final = 120.0
OUTCOME_TIMEOUT_S: Final = 120.0
BATCH_METRIC: Final = "titan_writer_batch_commands"
DECISION_METRIC: Final = "titan_intake_decision_seconds"
COMMIT_METRIC: Final = "titan_writer_commit_seconds"
ISSUERS: Final = ("execution", "phase1", "console")
"""The bench's signers: truth snapshots and venue rejects, place orders, the policy activation."""
EXEC_OPERATOR: Final = "operator:bench"
EXEC_MONEY_LIMIT: Final = "1000000000"
"""The bench policy's gross exposure and paper BTCUSDT position limits (USDT): far above 5,000
open orders of 0.010 BTC."""
EXEC_MAX_LEVERAGE: Final = "1000"
EXEC_MISSING_GRACE_MS: Final = 3_600_000
EXEC_ARRIVAL_TIMEOUT_S: Final = 60.0


# Pure helpers -------------------------------------------------------------------------------


def percentile(sorted_values: list[float], fraction: float) -> float:
    """The value at `fraction` (0..1) of an ascending list (nearest rank, the upper one)."""
    if not sorted_values:
        raise ValueError("no values")
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * fraction))]


_SAMPLE: Final = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)')


def histogram(text: str, name: str) -> dict[str, Any]:
    """A Prometheus histogram from /metrics text, summed over its label sets: {"buckets":
    {upper bound: cumulative count}, "sum": float, "count": float}; zeros when absent."""
    buckets: dict[float, float] = {}
    total = {"sum": 0.0, "count": 0.0}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None:
            continue
        sample, value = match["name"], float(match["value"])
        if sample == f"{name}_bucket":
            bound = re.search(r'le="([^"]*)"', match["labels"] or "")
            if bound is not None:
                key = float(bound[1])
                buckets[key] = buckets.get(key, 0.0) + value
        elif sample == f"{name}_sum":
            total["sum"] += value
        elif sample == f"{name}_count":
            total["count"] += value
    return {"buckets": dict(sorted(buckets.items())), **total}


def histogram_delta(after: Mapping[str, Any], before: Mapping[str, Any]) -> dict[str, Any]:
    """What a histogram observed between two scrapes."""
    bounds = sorted(set(after["buckets"]) | set(before["buckets"]))
    return {
        "buckets": {b: after["buckets"].get(b, 0.0) - before["buckets"].get(b, 0.0) for b in bounds},
        "sum": after["sum"] - before["sum"],
        "count": after["count"] - before["count"],
    }


def batch_summary(delta: Mapping[str, Any]) -> dict[str, Any]:
    """Batches committed, their mean size and how many fell in each size bucket (not cumulative)."""
    count = delta["count"]
    per_bucket: dict[str, int] = {}
    previous = 0.0
    for bound, cumulative in sorted(delta["buckets"].items()):
        label = "+Inf" if bound == float("inf") else f"<={bound:g}"
        if cumulative - previous:
            per_bucket[label] = round(cumulative - previous)
        previous = cumulative
    return {
        "batches": round(count),
        "mean_commands": round(delta["sum"] / count, 1) if count else None,
        "by_size": per_bucket,
    }


def mean_ms(delta: Mapping[str, Any]) -> float | None:
    """The mean of a seconds histogram's observations, in milliseconds."""
    return round(delta["sum"] / delta["count"] * 1000, 3) if delta["count"] else None


def phase_metrics(prefix: str, before: str, after: str) -> dict[str, Any]:
    """What the serve's /metrics say about one phase (two scrapes): the group-commit batch sizes,
    the mean time from fetching a command to its outcome, and the mean group commit."""

    def delta(name: str) -> dict[str, Any]:
        return histogram_delta(histogram(after, name), histogram(before, name))

    return {
        f"{prefix}_batches": batch_summary(delta(BATCH_METRIC)),
        f"{prefix}_fetch_to_outcome_mean_ms": mean_ms(delta(DECISION_METRIC)),
        f"{prefix}_commit_mean_ms": mean_ms(delta(COMMIT_METRIC)),
    }


# Commands -----------------------------------------------------------------------------------


class Flow:
    """Signed-command payloads for the bench account: four snapshots, then one order, repeated
    (`next`); and, for the execution phase, single orders, snapshots, venue rejects and a policy
    activation, all numbered by the same counter."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.policy_hash = policy_hash(default_policy())
        self.n = 0
        self.orders = 0
        self.venue_ts_ns = time.time_ns()

    def _cid(self, tag: str) -> str:
        n = self.n
        self.n += 1
        return f"{self.run_id}-{tag}-{n:07d}"

    def next(self, tag: str) -> tuple[str, str, bytes]:
        """(issuer, subject, payload) of the next command; `tag` goes into its command id."""
        n = self.n
        cid = self._cid(tag)
        if n % ORDER_EVERY == ORDER_EVERY - 1:
            return self._order(cid, n, "BUY" if n % 2 else "SELL")
        return self._snapshot(cid)

    def batch(self, tag: str, count: int) -> list[tuple[str, str, bytes]]:
        return [self.next(tag) for _ in range(count)]

    def order(self, tag: str) -> tuple[str, str, bytes]:
        """A place order from phase1 under `policy_hash`, BUY and SELL alternately (0.010 BTC)."""
        n = self.n
        side = "BUY" if self.orders % 2 == 0 else "SELL"
        self.orders += 1
        return self._order(self._cid(tag), n, side)

    def snapshot(self, tag: str) -> tuple[str, str, bytes]:
        """A truth snapshot from execution: flat, no open orders, 100,000 USDT, fresh."""
        return self._snapshot(self._cid(tag))

    def venue_reject(self, tag: str, order_id: str) -> tuple[str, str, bytes]:
        """Execution reports that the venue refused `order_id` (which closes it)."""
        command = {
            "type": "record_venue_reject.v1", "command_id": self._cid(tag), "account_id": ACCOUNT,
            "actor": "execution:bench", "order_id": order_id, "venue_reason": "bench: cleared before the execution phase",
        }
        return "execution", subjects.command_subject(ACCOUNT, str(command["type"])), orjson.dumps(command)

    def activate(self, tag: str, policy: PolicyDocument) -> tuple[str, str, bytes]:
        """The console activates `policy` (actor operator:bench)."""
        command = {
            "type": "activate_policy.v1", "command_id": self._cid(tag), "account_id": ACCOUNT,
            "actor": EXEC_OPERATOR, "policy": policy.model_dump(mode="json"),
        }
        return "console", subjects.command_subject(ACCOUNT, str(command["type"])), orjson.dumps(command)

    def _order(self, cid: str, n: int, side: str) -> tuple[str, str, bytes]:
        price = f"{65000 + n % 7}.0"
        command: dict[str, Any] = {
            "type": "place_order.v1", "command_id": cid, "account_id": ACCOUNT, "actor": "phase1-bench",
            "policy_hash": self.policy_hash, "phase_id": 1, "intent_id": cid, "client_order_id": cid,
            "venue": "paper", "symbol": "BTCUSDT", "side": side,
            "quantity": "0.010", "price": price, "reference_price": price,
        }
        return "phase1", subjects.command_subject(ACCOUNT, str(command["type"])), orjson.dumps(command)

    def _snapshot(self, cid: str) -> tuple[str, str, bytes]:
        self.venue_ts_ns = max(self.venue_ts_ns + 1, time.time_ns() - 1_000_000)
        command = {
            "type": "record_truth_snapshot.v1", "command_id": cid, "account_id": ACCOUNT,
            "actor": "execution:bench", "venue": "paper", "positions": [], "open_order_ids": [],
            "equity": "100000", "venue_ts_ns": self.venue_ts_ns, "latency_ms": 1,
        }
        return "execution", subjects.command_subject(ACCOUNT, str(command["type"])), orjson.dumps(command)


def bench_policy() -> PolicyDocument:
    """The default policy with every limit raised that would refuse `rate` orders/s of small
    alternating-side BTCUSDT orders on paper that are never filled, so each one is accepted: the
    order and message rates and the open orders (to the schema's maxima), the gross exposure, the
    paper BTCUSDT position notional (the orders on one side add up), every band's leverage cap
    (thousands of open orders against 100,000 USDT of equity), and the truth score's grace for
    missing orders (the bench's snapshots list no open orders: without it every order older than
    5 s would count as missing and pull the score down). Everything else is the default's."""
    document = default_policy().model_dump(mode="json")
    document["policy_id"] = "titan-bench-exec"
    document["description"] = "titan bench: the default policy with the limits a 1,000 orders/s flow would hit raised"
    document["limits"].update(
        max_orders_per_second=MAX_COUNT,
        max_messages_per_second=MAX_COUNT,
        max_open_orders=MAX_OPEN_ORDERS,
        max_gross_exposure=EXEC_MONEY_LIMIT,
    )
    for instrument in document["instruments"]:
        if (instrument["venue"], instrument["symbol"]) == ("paper", "BTCUSDT"):
            instrument["max_position_notional"] = EXEC_MONEY_LIMIT
    for band in document["allocation"]["bands"]:
        band["max_leverage"] = EXEC_MAX_LEVERAGE
    document["truth"]["missing_order_grace_ms"] = EXEC_MISSING_GRACE_MS
    return PolicyDocument.model_validate(document)


class Publisher:
    """One NATS connection, a Sender per issuer; publishes in order and times each outcome."""

    def __init__(self, nc: Client, keys: Keys) -> None:
        self.nc = nc
        self.senders = {issuer: Sender(nc, keys=keys, issuer=issuer) for issuer in ISSUERS}
        self.outcomes: Counter[str] = Counter()
        self.accepted_orders: list[str] = []
        """Order ids (`ord-<command id>`) of the place orders accepted so far, in outcome order."""

    async def __aenter__(self) -> Self:
        for sender in self.senders.values():
            await sender.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for sender in self.senders.values():
            await sender.__aexit__(*exc)

    async def publish(
        self, command: tuple[str, str, bytes], on_outcome: Any = None
    ) -> tuple[float, asyncio.Future[dict[str, Any]]]:
        """Publish; return perf_counter at publish and the outcome future (`on_outcome(at)` runs
        in its callback with perf_counter then)."""
        issuer, subject, payload = command
        began = time.perf_counter()
        stored, outcome = await self.senders[issuer].publish(subject, payload)
        stored.add_done_callback(_quiet)

        def done(future: asyncio.Future[dict[str, Any]]) -> None:
            at = time.perf_counter()
            if future.cancelled() or future.exception() is not None:
                return
            answer = future.result()
            reason = answer.get("reason")
            self.outcomes[f"{answer.get('outcome')}: {reason}" if reason else str(answer.get("outcome"))] += 1
            if issuer == "phase1" and answer.get("outcome") == "accepted":
                self.accepted_orders.append(f"ord-{answer.get('command_id')}")
            if on_outcome is not None:
                on_outcome(at)

        outcome.add_done_callback(done)
        return began, outcome


def _quiet(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: a NotStored shows as a missing outcome instead


# The serve child process --------------------------------------------------------------------


class ServeChild:
    """`titan serve --account bench` in a child process, its output in a log file."""

    def __init__(self, directory: Path, env: Mapping[str, str], name: str) -> None:
        self.port = free_port()
        self.log_path = directory / f"{name}.log"
        self.directory = directory
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TITAN_") or k == "TITAN_CORE"}
        self.env.update({**env, "TITAN_SERVE_PORT": str(self.port)})
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServeChild:
        script = Path(sys.executable).parent / "titan"
        command = [str(script)] if script.exists() else [sys.executable, "-m", "infra.cli"]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*command, "serve", "--account", ACCOUNT], cwd=self.directory, env=self.env,
                stdout=log, stderr=subprocess.STDOUT,
            )
        return self

    def readiness(self) -> tuple[int, dict[str, Any]] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ready", timeout=2) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())
        except (OSError, ValueError):
            return None

    def wait(self, *, role: str | None = None, timeout_s: float = READY_TIMEOUT_S, poll_s: float = 0.05) -> float:
        """Until /ready answers 200 (or names `role`); perf_counter then."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"titan serve exited {self.process.returncode}: {self.log()}")
            state = self.readiness()
            if state is not None and (state[1].get("role") == role if role else state[0] == 200):
                return time.perf_counter()
            time.sleep(poll_s)
        raise RuntimeError(f"titan serve not {role or 'ready'} within {timeout_s:g} s: {self.readiness()} {self.log()}")

    def metrics(self) -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as answer:
                return str(answer.read().decode())
        except OSError as error:
            code = self.process.poll() if self.process is not None else None
            raise RuntimeError(f"/metrics of titan serve (exit code {code}): {error}; log: {self.log()}") from error

    def kill9(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def terminate(self, timeout_s: float = 60.0) -> int | None:
        """SIGTERM (the drain), then the exit code; kill -9 when it does not exit in time."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill9()
            return None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-1500:] if self.log_path.exists() else ""


# Phases -------------------------------------------------------------------------------------


async def _warm_up(publisher: Publisher, flow: Flow) -> None:
    """A few commands answered before any clock starts (first-call costs, the writer's cache)."""
    futures = [(await publisher.publish(c))[1] for c in flow.batch("warm", WARMUP)]
    await asyncio.wait_for(asyncio.gather(*futures), OUTCOME_TIMEOUT_S)


async def _throughput(publisher: Publisher, flow: Flow, count: int) -> dict[str, Any]:
    commands = flow.batch("tput", count)
    window = asyncio.Semaphore(WINDOW)
    last = [0.0]
    answered = asyncio.Event()
    remaining = [count]

    def on_outcome(at: float) -> None:
        window.release()
        last[0] = max(last[0], at)
        remaining[0] -= 1
        if not remaining[0]:
            answered.set()

    first = 0.0
    for i, command in enumerate(commands):
        await window.acquire()
        began, _ = await publisher.publish(command, on_outcome)
        if i == 0:
            first = began
    await asyncio.wait_for(answered.wait(), OUTCOME_TIMEOUT_S)
    elapsed = last[0] - first
    return {"serve_commands": count, "serve_commands_per_s": round(count / elapsed), "serve_commands_seconds": round(elapsed, 3)}


async def _latency(publisher: Publisher, flow: Flow, rate: float, seconds: float) -> dict[str, Any]:
    count = max(1, int(rate * seconds))
    commands = flow.batch("lat", count)
    latencies: list[float] = []
    behind: list[float] = []
    futures = []
    start = time.perf_counter() + 0.05
    for i, command in enumerate(commands):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)

        began = time.perf_counter()
        _, outcome = await publisher.publish(command, lambda at, began=began: latencies.append(at - began))
        behind.append(began - due)
        futures.append(outcome)
    await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), OUTCOME_TIMEOUT_S)
    latencies.sort()
    return {
        "serve_latency_offered_per_s": rate,
        "serve_latency_commands": count,
        "serve_latency_answered": len(latencies),
        "serve_latency_p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
        "serve_latency_p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "serve_latency_max_ms": round(latencies[-1] * 1000, 2),
        "serve_latency_publisher_behind_max_ms": round(max(behind) * 1000, 2),
    }


class ExecPhaseError(Exception):
    """The execution phase could not start (its policy or first snapshot was refused)."""


async def _answered(publisher: Publisher, commands: list[tuple[str, str, bytes]]) -> list[dict[str, Any]]:
    """Publish in order and wait for every outcome."""
    futures = [(await publisher.publish(command))[1] for command in commands]
    return list(await asyncio.wait_for(asyncio.gather(*futures), OUTCOME_TIMEOUT_S))


async def _required(publisher: Publisher, command: tuple[str, str, bytes], what: str) -> None:
    (answer,) = await _answered(publisher, [command])
    if answer.get("outcome") != "accepted":
        raise ExecPhaseError(f"{what} was not accepted: {answer.get('outcome')} {answer.get('reason')}")


async def _execution(publisher: Publisher, flow: Flow, rate: float, seconds: float) -> dict[str, Any]:
    """Decide-to-execution latency: signed place orders offered open loop at `rate`/s for
    `seconds` under the bench policy; for each, perf_counter at its publish and when its place
    message (`Titan-Order-Id` = its order id) arrives on titan.exec.paper.place."""
    arrived: dict[str, float] = {}
    repeated = [0]

    async def on_place(msg: Any) -> None:
        at = time.perf_counter()
        order_id = (msg.headers or {}).get(subjects.ORDER_ID)
        if order_id is None:
            return
        if order_id in arrived:
            repeated[0] += 1
        else:
            arrived[order_id] = at

    subscription = await publisher.nc.subscribe(subjects.exec_subject("paper", "place"), cb=on_place)
    try:
        await publisher.nc.flush()
        # What the earlier phases left open (nothing fills them) is cleared by venue rejects, so
        # every order of this phase fits under the policy's open-orders maximum.
        leftover, publisher.accepted_orders = publisher.accepted_orders, []
        cleared = await _answered(publisher, [flow.venue_reject("clear", order_id) for order_id in leftover])
        policy = bench_policy()
        await _required(publisher, flow.activate("policy", policy), "the bench policy's activation")
        flow.policy_hash = policy_hash(policy)
        await _required(publisher, flow.snapshot("exec-truth"), "the first truth snapshot")

        count = max(1, int(rate * seconds))
        snapshot_every = max(1, round(rate))
        orders = [flow.order("exec") for _ in range(count)]
        order_ids = [f"ord-{orjson.loads(payload)['command_id']}" for _, _, payload in orders]
        sent_at: dict[str, float] = {}
        answered_at: dict[str, float] = {}
        behind: list[float] = []
        futures: list[asyncio.Future[dict[str, Any]]] = []
        snapshots: list[asyncio.Future[dict[str, Any]]] = []
        start = time.perf_counter() + 0.05
        for i, command in enumerate(orders):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if i and i % snapshot_every == 0:  # a truth snapshot about every second
                snapshots.append((await publisher.publish(flow.snapshot("exec-truth")))[1])
            began = time.perf_counter()
            sent_at[order_ids[i]] = began
            _, outcome = await publisher.publish(command, lambda at, o=order_ids[i]: answered_at.__setitem__(o, at))
            futures.append(outcome)
            behind.append(began - due)
        answers = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), OUTCOME_TIMEOUT_S)
        snapshot_answers = await asyncio.wait_for(asyncio.gather(*snapshots, return_exceptions=True), OUTCOME_TIMEOUT_S)
        outcomes: Counter[str] = Counter()
        accepted: list[str] = []
        for order_id, answer in zip(order_ids, answers, strict=True):
            if isinstance(answer, BaseException):
                outcomes[type(answer).__name__] += 1
                continue
            reason = answer.get("reason")
            outcomes[f"{answer.get('outcome')}: {reason}" if reason else str(answer.get("outcome"))] += 1
            if answer.get("outcome") == "accepted":
                accepted.append(order_id)
        deadline = time.monotonic() + EXEC_ARRIVAL_TIMEOUT_S
        while time.monotonic() < deadline and any(order_id not in arrived for order_id in accepted):
            await asyncio.sleep(0.05)
    finally:
        await subscription.unsubscribe()
    taken = set(accepted)
    latencies = sorted(arrived[order_id] - sent_at[order_id] for order_id in accepted if order_id in arrived)
    to_outcome = sorted(answered_at[o] - sent_at[o] for o in accepted if o in answered_at)
    per_second: dict[int, list[float]] = {}
    for i, order_id in enumerate(order_ids):
        if order_id in taken and order_id in arrived:
            per_second.setdefault(int(i // snapshot_every), []).append(arrived[order_id] - sent_at[order_id])
    figures: dict[str, Any] = {
        "exec_offered_per_s": rate,
        "exec_orders_offered": count,
        "exec_orders_accepted": len(accepted),
        "exec_orders_reached": len(latencies),
        "exec_orders_refused_reached": sum(1 for o in order_ids if o in arrived and o not in taken),
        "exec_places_repeated": repeated[0],
        "exec_order_outcomes": dict(outcomes),
        "exec_snapshots": len(snapshots) + 1,
        "exec_snapshots_accepted": 1 + sum(1 for a in snapshot_answers if isinstance(a, dict) and a.get("outcome") == "accepted"),
        "exec_cleared_open_orders": sum(1 for a in cleared if a.get("outcome") == "accepted"),
        "exec_policy_hash": flow.policy_hash,
        "exec_publisher_behind_max_ms": round(max(behind) * 1000, 2),
    }
    if latencies:
        figures.update(
            exec_latency_p50_ms=round(percentile(latencies, 0.50) * 1000, 2),
            exec_latency_p99_ms=round(percentile(latencies, 0.99) * 1000, 2),
            exec_latency_max_ms=round(latencies[-1] * 1000, 2),
            exec_latency_p50_by_second_ms=[
                round(percentile(sorted(values), 0.50) * 1000, 1) for _, values in sorted(per_second.items())
            ],
        )
    if to_outcome:
        figures.update(
            exec_outcome_p50_ms=round(percentile(to_outcome, 0.50) * 1000, 2),
            exec_outcome_p99_ms=round(percentile(to_outcome, 0.99) * 1000, 2),
        )
    return figures


async def _takeover(directory: Path, env: Mapping[str, str], nats_url: str, keys: Keys, flow: Flow) -> dict[str, Any]:
    leader = ServeChild(directory, env, "takeover-leader").start()
    standby: ServeChild | None = None
    try:
        leader_start = time.perf_counter()
        await asyncio.to_thread(leader.wait)
        leader_ready_s = time.perf_counter() - leader_start
        standby = ServeChild(directory, env, "takeover-standby").start()
        await asyncio.to_thread(standby.wait, role="standby")
        nc = await nats.connect(nats_url)
        try:
            async with Publisher(nc, keys) as publisher:
                # Prove the leader answers, then kill it.
                await asyncio.wait_for((await publisher.publish(flow.next("pre")))[1], OUTCOME_TIMEOUT_S)
                killed = time.perf_counter()
                leader.kill9()
                ready = asyncio.ensure_future(asyncio.to_thread(standby.wait, poll_s=0.01))
                _, outcome = await publisher.publish(flow.next("post"))
                await asyncio.wait_for(outcome, OUTCOME_TIMEOUT_S)
                first_outcome = time.perf_counter() - killed
                ready_at = await ready
        finally:
            await nc.close()
        return {
            "serve_takeover_ready_s": round(ready_at - killed, 3),
            "serve_takeover_first_outcome_s": round(first_outcome, 3),
            "serve_takeover_leader_start_s": round(leader_ready_s, 3),
        }
    finally:
        leader.kill9()
        if standby is not None:
            standby.terminate()


async def _measure(
    pg_url: str, server: PrivateNats, commands: int, rate: float, seconds: float, takeover: bool
) -> dict[str, Any]:
    from infra.bench.postgres import _drop_database, _scratch_database

    assert server.url is not None
    try:
        ledger_url = await _scratch_database(pg_url)
    except Exception as error:  # noqa: BLE001 - no PostgreSQL: the figure is skipped, not failed
        return {"skipped": f"no PostgreSQL: {type(error).__name__}: {error}"[:300]}
    directory = server.directory
    keys = generate_keys(ISSUERS)
    keys_path = directory / "intake.keys"
    descriptor = os.open(keys_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(keys_text(keys))
    env = {"TITAN_LEDGER_URL": ledger_url, "TITAN_NATS_URL": server.url, "TITAN_INTAKE_KEYS": str(keys_path)}
    flow = Flow(uuid.uuid4().hex[:8])
    results: dict[str, Any] = {}
    try:
        await server.apply_streams()
        serve = ServeChild(directory, env, "serve").start()
        try:
            await asyncio.to_thread(serve.wait)
            nc = await nats.connect(server.url)
            try:
                async with Publisher(nc, keys) as publisher:
                    await _warm_up(publisher, flow)
                    before = await asyncio.to_thread(serve.metrics)
                    results.update(await _throughput(publisher, flow, commands))
                    after = await asyncio.to_thread(serve.metrics)
                    results.update(phase_metrics("serve", before, after))
                    await asyncio.sleep(1.0)  # let the relay and projector catch up before pacing
                    before = await asyncio.to_thread(serve.metrics)
                    results.update(await _latency(publisher, flow, rate, seconds))
                    after = await asyncio.to_thread(serve.metrics)
                    results.update(phase_metrics("serve_latency", before, after))
                    results["serve_outcomes"] = dict(publisher.outcomes)
                    await asyncio.sleep(1.0)
                    before = await asyncio.to_thread(serve.metrics)
                    try:
                        results.update(await _execution(publisher, flow, rate, seconds))
                    except Exception as error:  # noqa: BLE001 - reported; the other figures stand
                        results["exec_unavailable"] = f"{type(error).__name__}: {error}"[:300]
                    else:
                        after = await asyncio.to_thread(serve.metrics)
                        results.update(phase_metrics("exec", before, after))
            finally:
                await nc.close()
        finally:
            results["serve_drain_exit"] = serve.terminate()
        results["serve_account_commands"] = flow.n
        if takeover:
            results.update(await _takeover(directory, env, server.url, keys, flow))
    finally:
        await _drop_database(pg_url, ledger_url)
    return results


def run(
    pg_url: str,
    commands: int = DEFAULT_COMMANDS,
    rate: float = DEFAULT_RATE,
    seconds: float = DEFAULT_SECONDS,
    *,
    quick: bool = False,
    takeover: bool = True,
) -> dict[str, Any]:
    """Measure `titan serve` (see the module docstring); {"skipped": reason} without a nats-server
    binary or PostgreSQL."""
    if quick:
        commands, seconds = min(commands, QUICK_COMMANDS), min(seconds, QUICK_SECONDS)
    with PrivateNats("titan-bench-serve-") as server:
        if server.url is None:
            return {"skipped": server.problem}
        return asyncio.run(_measure(pg_url, server, commands, rate, seconds, takeover))


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--pg-url", default=os.environ.get("TITAN_TEST_PG_URL") or "postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--commands", type=int, default=DEFAULT_COMMANDS)
    parser.add_argument("--quick", action="store_true")
    arguments = parser.parse_args()
    print(json.dumps(run(arguments.pg_url, arguments.commands, quick=arguments.quick), indent=2, default=str))
