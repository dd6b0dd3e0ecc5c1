"""The paper execution engine on NATS (`titan paper run`, docs/paper.md): the seeded paper venue
serving `titan.exec.paper.>` under the execution contract (docs/messaging.md, issue 12).

- It follows every account's active policy from the mirror (`titan.evt.<account>.policy.activated.v1`
  on TITAN_EVT, read from the start by an ephemeral consumer) and refuses a place whose policy hash
  is not the one it last learned: `record_venue_reject.v1`, venue_reason POLICY_HASH_MISMATCH.
- Otherwise it plans the venue's reports with the seeded model (`PaperVenue.accept`), its RNG seeded
  from the engine's seed and the order id, so a restart plans the same reports for the same order.
- The plan and the fact that the message was handled go into the book in one SQLite transaction,
  and the message is acked only after it (adapters/paper/book.py): a redelivery plans nothing new.
- A sender task publishes due reports as signed commands (issuer `execution`, actor
  `execution:paper`, deterministic command ids `x.<order id>.ack|fill.<n>|reject|cancelled`) and
  marks each sent once titan answered; a snapshot task reports the engine's own book every few
  seconds (`x.snap.paper.<account>.<n>`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StorageType
from nats.js.client import JetStreamContext

from adapters.nats import streams, subjects
from adapters.nats.sender import NoReply, NotStored, Sender
from adapters.nats.signing import Keys
from adapters.nats.stream_tail import MirrorError, read_tail
from domain.numbers import decimals_of, format_units, parse_units
from infra.settings import Settings
from schemas import commands as wire
from schemas.canonical import canonical_bytes

from .book import E8, AccountBook, Book, NewOrder, Report
from .venue import PaperInstrument, PaperOrder, PaperVenue

_log = logging.getLogger(__name__)

# The execution contract's names (the gateway's side adds them to subjects.py and streams.py).
EXEC_STREAM: Final = "TITAN_EXEC"
EXEC_PREFIX: Final = "titan.exec"
PAPER_CONSUMER: Final = "titan-paper"
VENUE: Final = "paper"
PAPER_FILTER: Final = f"{EXEC_PREFIX}.{VENUE}.>"
ISSUER: Final = "execution"
ACTOR: Final = f"execution:{VENUE}"
POLICY_ACTIVATED: Final = "policy.activated.v1"
POLICY_FILTER: Final = f"{subjects.EVT_PREFIX}.*.{POLICY_ACTIVATED}"

POLICY_HASH_MISMATCH: Final = "POLICY_HASH_MISMATCH"
UNKNOWN_VENUE: Final = "UNKNOWN_VENUE"
UNKNOWN_SYMBOL: Final = "UNKNOWN_SYMBOL"
MALFORMED: Final = "MALFORMED"
CANCEL_REASON: Final = "CANCELLED_ON_REQUEST"

NS_PER_MS: Final = 1_000_000
MARKET_SLIPPAGE_BPS: Final = 10
"""A MARKET order fills like a limit this far through its reference price (the worst it may slip)."""
FETCH_BATCH: Final = 64
SEND_BATCH: Final = 256
SEND_TIMEOUT_S: Final = 10.0
POLICY_POLL_S: Final = 0.5
MIRROR_LAG_RETRY_S: Final = 1.0
"""A mismatching place the mirror has not caught up with yet is nak'ed with this delay."""
COMMAND_ID_MAX: Final = 120
IDENTIFIER_MAX: Final = 128


def exec_spec(settings: Settings | None = None) -> streams.Spec:
    """TITAN_EXEC and its `titan-paper` consumer as the contract declares them (streams.declared()
    has them once the gateway adds them; this is what the engine checks until then)."""
    declared = streams.declared(settings)
    stream = next((s for s in declared.streams if s.name == EXEC_STREAM), None)
    consumer = next((c for c in declared.consumers if c.stream == EXEC_STREAM and c.durable == PAPER_CONSUMER), None)
    window_s = (settings or Settings()).nats_duplicate_window_s
    stream = stream or streams.StreamSpec(
        EXEC_STREAM,
        (f"{EXEC_PREFIX}.>",),
        RetentionPolicy.LIMITS,
        StorageType.FILE,
        window_s,
        0,
        why="orders and cancels for the execution engines, in ledger order; kept whole: its last "
        "message is the gateway's resume point",
    )
    consumer = consumer or streams.ConsumerSpec(
        EXEC_STREAM,
        PAPER_CONSUMER,
        ack_wait_s=10,
        max_deliver=-1,
        backoff_s=(10,),
        max_ack_pending=1000,
        why="the paper engine: acks an order or cancel after its plan is in the engine's book; never "
        "gives up on an order",
        filter_subject=PAPER_FILTER,
    )
    return streams.Spec((stream,), (consumer,))


# Ids ----------------------------------------------------------------------------------------


def bounded(text: str, limit: int) -> str:
    """`text`, or when longer than `limit`, its head and a hash of the whole (still deterministic)."""
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    return f"{text[: limit - 17]}~{digest}".replace("~", "-")


def report_id(order_id: str, what: str) -> str:
    """`x.<order id>.<what>`: ack, fill.<n>, reject, cancelled (the contract's command ids)."""
    return bounded(f"x.{order_id}.{what}", COMMAND_ID_MAX)


def snapshot_id(account_id: str, number: int) -> str:
    """`x.snap.paper.<account>.<n>`."""
    return bounded(f"x.snap.{VENUE}.{account_id}.{number}", COMMAND_ID_MAX)


# What the engine knows of policies ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scales:
    """An instrument's decimals as its policy states them (tick and step sizes)."""

    price_decimals: int
    qty_decimals: int


@dataclass
class Policies:
    """Each account's active policy hash as execution last learned it, with its instruments."""

    active: dict[str, str] = field(default_factory=dict)
    instruments: dict[str, dict[str, Scales]] = field(default_factory=dict)
    initial_equity_e8: dict[str, int] = field(default_factory=dict)

    def learn(self, account_id: str, envelope: Any) -> bool:
        """Take a mirrored policy.activated record; False when it is not one."""
        data = envelope.get("data") if isinstance(envelope, dict) else None
        policy_hash = data.get("policy_hash") if isinstance(data, dict) else None
        if not isinstance(policy_hash, str) or not policy_hash:
            return False
        assert isinstance(data, dict)
        self.active[account_id] = policy_hash
        document = data.get("policy")
        scales: dict[str, Scales] = {}
        if isinstance(document, dict):
            for item in document.get("instruments") or ():
                if isinstance(item, dict) and item.get("venue") == VENUE:
                    tick, step = str(item.get("tick_size", "")), str(item.get("step_size", ""))
                    scales[str(item.get("symbol"))] = Scales(decimals_of(tick), decimals_of(step))
            allocation = document.get("allocation")
            equity = allocation.get("initial_equity") if isinstance(allocation, dict) else None
            if isinstance(equity, str):
                parsed = parse_units(equity, 8)
                if parsed.ok:
                    self.initial_equity_e8[account_id] = parsed.units
        self.instruments[account_id] = scales
        return True


class PolicyFollower:
    """Reads `titan.evt.*.policy.activated.v1` from TITAN_EVT's start with an ephemeral pull
    consumer (no acks) and keeps `policies` current; `catch_up()` returns once it has read every
    such message the stream holds."""

    def __init__(self, js: JetStreamContext, policies: Policies) -> None:
        self._js = js
        self.policies = policies
        self._sub: JetStreamContext.PullSubscription | None = None
        self._lock = asyncio.Lock()
        self.last_seq = 0
        self.stream_missing = False

    async def _subscribe(self) -> JetStreamContext.PullSubscription:
        if self._sub is None:
            start = self.last_seq + 1
            config = ConsumerConfig(
                ack_policy=AckPolicy.NONE,
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE if self.last_seq else DeliverPolicy.ALL,
                opt_start_seq=start if self.last_seq else None,
                inactive_threshold=300.0,
                filter_subject=POLICY_FILTER,
            )
            self._sub = await self._js.pull_subscribe(POLICY_FILTER, durable=None, stream=subjects.EVT_STREAM, config=config)
        return self._sub

    async def catch_up(self) -> None:
        """Read until the consumer has nothing pending."""
        async with self._lock:
            try:
                sub = await self._subscribe()
                self.stream_missing = False
                while True:
                    info = await sub.consumer_info()
                    if not info.num_pending:
                        return
                    try:
                        batch = await sub.fetch(min(int(info.num_pending), 256), timeout=2)
                    except (nats.errors.TimeoutError, TimeoutError):  # nats-py raises either
                        continue
                    for msg in batch:
                        self._apply(msg)
            except nats.js.errors.NotFoundError:
                # No TITAN_EVT, or the ephemeral consumer vanished (NATS restarted): start again
                # after the last message read.
                self.stream_missing = True
                await self._drop()

    def _apply(self, msg: Msg) -> None:
        self.last_seq = max(self.last_seq, msg.metadata.sequence.stream)
        parts = msg.subject.split(".")
        if len(parts) < 3:
            return
        try:
            account_id = subjects.untoken(parts[2])
            envelope = orjson.loads(msg.data)
        except (ValueError, orjson.JSONDecodeError):
            _log.warning("paper: an unreadable policy.activated message at sequence %s", self.last_seq)
            return
        if self.policies.learn(account_id, envelope):
            _log.info("paper: account %s policy %s", account_id, self.policies.active[account_id])

    async def _drop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def follow(self, stop: asyncio.Event) -> None:
        """Catch up every POLICY_POLL_S until stopped."""
        while not stop.is_set():
            try:
                await self.catch_up()
            except Exception as error:  # noqa: BLE001 - NATS away: keep what is known, try again
                _log.warning("paper: following policies: %s", error or type(error).__name__)
                await self._drop()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), POLICY_POLL_S)
        await self._drop()


# Planning (pure: the message, what is known, the seed and now) -------------------------------


class Malformed(ValueError):
    """An exec message the engine cannot act on; `order_id`/`account_id` when they were readable."""

    def __init__(self, why: str, order_id: str | None, account_id: str | None) -> None:
        super().__init__(why)
        self.order_id = order_id
        self.account_id = account_id


@dataclass(frozen=True, slots=True)
class PlacePlan:
    """What a place message makes: the order (None when refused) and its reports."""

    order: NewOrder | None
    reports: list[Report]
    refused: str | None = None


def _text(document: dict[str, Any], name: str) -> str:
    value = document.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} is missing or not a string")
    return value


def _encode(command: wire.CommandBase) -> bytes:
    return canonical_bytes(command.model_dump(mode="json", exclude_none=True))


def _report(command: wire.CommandBase, kind: str, order_id: str | None, **effect: int) -> Report:
    return Report(
        command_id=command.command_id,
        account_id=command.account_id,
        order_id=order_id,
        kind=kind,
        due_ts_ns=command.ts_ns,
        subject=subjects.command_subject(command.account_id, wire.command_type(type(command))),
        payload=_encode(command),
        **effect,
    )


def read_message(data: bytes) -> dict[str, Any]:
    """The JSON object of an exec message; Malformed (without ids) when it is not one."""
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise Malformed("not JSON", None, None) from None
    if not isinstance(document, dict):
        raise Malformed("not a JSON object", None, None)
    return document


def reject_report(account_id: str, order_id: str, reason: str, ts_ns: int, correlation_id: str | None = None) -> Report:
    """`record_venue_reject.v1` for an order the engine refuses."""
    command = wire.RecordVenueReject(
        command_id=report_id(order_id, "reject"),
        account_id=account_id,
        ts_ns=ts_ns,
        actor=ACTOR,
        correlation_id=correlation_id,
        order_id=order_id,
        venue_reason=reason[:1000],
    )
    return _report(command, "reject", order_id)


def plan_place(document: dict[str, Any], policies: Policies, *, seed: int, now_ns: int) -> PlacePlan:
    """The reports for one place message: a reject on a policy-hash mismatch, an unknown venue or
    symbol, or a malformed field; else the seeded venue's ack, fills, reject or expiry, at times
    from now. Raise Malformed when no reject can be addressed (no order id or account id)."""
    order_id = document.get("order_id") if isinstance(document.get("order_id"), str) else None
    account_id = document.get("account_id") if isinstance(document.get("account_id"), str) else None
    if not order_id or not account_id:
        raise Malformed("no order_id or account_id", order_id or None, account_id or None)
    correlation = document.get("command_id") if isinstance(document.get("command_id"), str) else None
    rng = random.Random(f"{seed}:{order_id}")

    def refuse(reason: str) -> PlacePlan:
        latency_ms = rng.randint(3, 40)
        ts = now_ns + latency_ms * NS_PER_MS
        return PlacePlan(None, [reject_report(account_id, order_id, reason, ts, correlation)], reason)

    try:
        policy_hash = _text(document, "policy_hash")
        venue = _text(document, "venue")
        symbol = _text(document, "symbol")
        side = _text(document, "side")
        quantity = _text(document, "quantity")
        reference = _text(document, "reference_price")
        price = document.get("price")
        if side not in ("BUY", "SELL"):
            raise ValueError(f"side {side[:20]!r} is not BUY or SELL")
        if price is not None and not isinstance(price, str):
            raise ValueError("price is not a decimal string or null")
    except ValueError as error:
        return refuse(f"{MALFORMED}: {error}")
    if policy_hash != policies.active.get(account_id):
        return refuse(POLICY_HASH_MISMATCH)
    if venue != VENUE:
        return refuse(f"{UNKNOWN_VENUE}: this engine serves {VENUE}, not {venue[:64]}")
    scales = policies.instruments.get(account_id, {}).get(symbol)
    if scales is None:
        return refuse(f"{UNKNOWN_SYMBOL}: {symbol[:64]} is not a {VENUE} instrument of the active policy")
    qty = parse_units(quantity, scales.qty_decimals)
    ref = parse_units(reference, scales.price_decimals)
    limit = parse_units(price, scales.price_decimals) if price is not None else None
    if not qty.ok or qty.units <= 0 or not ref.ok or ref.units <= 0 or (limit is not None and (not limit.ok or limit.units <= 0)):
        return refuse(f"{MALFORMED}: quantity or price is not a positive decimal on the instrument's scale")
    if limit is None:  # MARKET: crosses, slipping at most MARKET_SLIPPAGE_BPS
        slip = max(1, ref.units * MARKET_SLIPPAGE_BPS // 10_000)
        price_ticks = ref.units + slip if side == "BUY" else max(1, ref.units - slip)
    else:
        price_ticks = limit.units
    instrument = PaperInstrument(symbol, scales.price_decimals, scales.qty_decimals, ref.units, 0, 1, qty.units)
    paper = PaperVenue(rng, account_id, actor=ACTOR)
    paper.accept(PaperOrder(order_id, instrument, side, price_ticks, qty.units), now_ns, ref.units)
    reports: list[Report] = []
    fills = 0
    for planned in paper.due(2**63 - 1):
        common = {"correlation_id": correlation}
        if isinstance(planned, wire.RecordOrderAck):
            command: wire.CommandBase = planned.model_copy(
                update={"command_id": report_id(order_id, "ack"), "venue_order_id": bounded(f"V-{order_id}", IDENTIFIER_MAX), **common}
            )
            reports.append(_report(command, "ack", order_id))
        elif isinstance(planned, wire.RecordFill):
            fills += 1
            command = planned.model_copy(
                update={
                    "command_id": report_id(order_id, f"fill.{fills}"),
                    "fill_id": bounded(f"{order_id}.{fills}", IDENTIFIER_MAX),
                    **common,
                }
            )
            steps = parse_units(planned.quantity, scales.qty_decimals).units
            ticks = parse_units(planned.price, scales.price_decimals).units
            reports.append(
                _report(
                    command,
                    "fill",
                    order_id,
                    qty_e8=steps * 10 ** (8 - scales.qty_decimals),
                    price_e8=ticks * 10 ** (8 - scales.price_decimals),
                    fee_e8=parse_units(planned.fee, 8).units,
                )
            )
        elif isinstance(planned, wire.RecordVenueReject):
            command = planned.model_copy(update={"command_id": report_id(order_id, "reject"), **common})
            reports.append(_report(command, "reject", order_id))
        elif isinstance(planned, wire.RecordCancelled):
            command = planned.model_copy(update={"command_id": report_id(order_id, "cancelled"), **common})
            reports.append(_report(command, "cancelled", order_id))
    order = NewOrder(order_id, account_id, symbol, side, qty.units * 10 ** (8 - scales.qty_decimals), scales.qty_decimals)
    return PlacePlan(order, reports)


def plan_cancel(
    document: dict[str, Any], book: Book, *, seed: int, now_ns: int
) -> tuple[str, str, list[str], Report | None]:
    """(order id, account id, reports to void, the cancelled report or None) for a cancel message:
    an order still working (its plan has reports due after now and it was not rejected) gets
    `record_cancelled.v1` a venue latency from now, and its later fills and expiry are voided;
    an order not working, or unknown here, gets nothing. Raise Malformed without ids."""
    order_id = document.get("order_id")
    account_id = document.get("account_id")
    if not isinstance(order_id, str) or not order_id or not isinstance(account_id, str) or not account_id:
        raise Malformed("no order_id or account_id", None, None)
    if not book.has_order(order_id) or book.order_rejected(order_id):
        return order_id, account_id, [], None
    future = book.future_reports(order_id, now_ns)
    if not any(kind in ("fill", "cancelled") for _, kind, _ in future):
        return order_id, account_id, [], None  # filled or expired already
    rng = random.Random(f"{seed}:{order_id}:cancel")
    ts = now_ns + rng.randint(3, 40) * NS_PER_MS
    ack_due = [due for _, kind, due in future if kind == "ack"]
    if ack_due:
        ts = max(ts, ack_due[0] + NS_PER_MS)  # the cancel confirms after the ack it follows
    void = [command_id for command_id, kind, _ in future if kind == "fill"]
    correlation = document.get("command_id") if isinstance(document.get("command_id"), str) else None
    command = wire.RecordCancelled(
        command_id=report_id(order_id, "cancelled"),
        account_id=account_id,
        ts_ns=ts,
        actor=ACTOR,
        correlation_id=correlation,
        order_id=order_id,
        venue_reason=CANCEL_REASON,
    )
    return order_id, account_id, void, _report(command, "cancelled", order_id)


def snapshot_report(
    account_id: str, number: int, book: AccountBook, *, start_equity_e8: int, now_ns: int, latency_ms: int
) -> Report:
    """`record_truth_snapshot.v1` of the engine's own book: positions, open orders, equity
    (start + what fills moved + positions marked at their last fill price)."""
    equity = start_equity_e8 + book.cash_e8
    positions: list[wire.VenuePosition] = []
    for row in book.positions:
        equity += row.qty_e8 * row.last_price_e8 // E8
        if row.qty_e8:
            steps = row.qty_e8 // 10 ** (8 - row.qty_decimals) if row.qty_e8 > 0 else -((-row.qty_e8) // 10 ** (8 - row.qty_decimals))
            positions.append(wire.VenuePosition(symbol=row.symbol, quantity=format_units(steps, row.qty_decimals)))
    command = wire.RecordTruthSnapshot(
        command_id=snapshot_id(account_id, number),
        account_id=account_id,
        ts_ns=now_ns,
        actor=ACTOR,
        venue=VENUE,
        positions=positions,
        open_order_ids=list(book.open_order_ids),
        equity=format_units(equity, 8),
        venue_ts_ns=now_ns,
        latency_ms=latency_ms,
    )
    return _report(command, "snapshot", None)


def _snapshot_of(account_id: str, number: int, book: AccountBook, *, start_equity_e8: int, now_ns: int, latency_ms: int) -> Report:
    return snapshot_report(account_id, number, book, start_equity_e8=start_equity_e8, now_ns=now_ns, latency_ms=latency_ms)


# The engine -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineConfig:
    """How `titan paper run` was asked to run."""

    seed: int = 0
    snapshot_every_s: float = 5.0
    accounts: tuple[str, ...] = ()
    """Accounts to snapshot from the start (others once an order for them arrives)."""
    start_equity_e8: int | None = None
    """Equity before any fill; None: the account's policy's initial_equity (else 0)."""


@dataclass
class EngineStats:
    handled: int = 0
    redelivered: int = 0
    refused: int = 0
    sent: int = 0
    unanswered: int = 0
    latency_ms: int = 0


class PaperEngine:
    """Serves `titan.exec.paper.>` from TITAN_EXEC/titan-paper until `stop` is set."""

    def __init__(
        self,
        nc: Client,
        book: Book,
        config: EngineConfig,
        *,
        keys: Keys | None,
        clock: Callable[[], int] = time.time_ns,
        log: Callable[[str], None] = _log.info,
    ) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.book = book
        self.config = config
        self.keys = keys
        self.clock = clock
        self.log = log
        self.policies = Policies()
        self.follower = PolicyFollower(self.js, self.policies)
        self.stats = EngineStats()
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()

    async def run(self, stop: asyncio.Event, spec: streams.Spec | None = None) -> None:
        """Check TITAN_EXEC and the consumer (SpecDrift), learn the policies, then serve."""
        await streams.require_spec(self.js, spec or exec_spec())
        await self.follower.catch_up()
        if self.follower.stream_missing:
            self.log(f"paper: no {subjects.EVT_STREAM} stream: no policy is known, every order is refused")
        self.log(
            f"paper: {len(self.policies.active)} account policies known; {self.book.unsent()} reports to send; "
            f"book {self.book.path}"
        )
        sub = await self.js.pull_subscribe_bind(durable=PAPER_CONSUMER, stream=EXEC_STREAM)
        tasks = [
            asyncio.create_task(self.follower.follow(self._closing), name="paper-policies"),
            asyncio.create_task(self._send_loop(), name="paper-sender"),
            asyncio.create_task(self._snapshot_loop(), name="paper-snapshots"),
        ]
        try:
            await self._serve(sub, stop, tasks)
        finally:
            self._closing.set()
            self._wake.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _serve(self, sub: JetStreamContext.PullSubscription, stop: asyncio.Event, tasks: list[asyncio.Task[None]]) -> None:
        while not stop.is_set():
            for task in tasks:
                error = task.exception() if task.done() else None
                if error is not None:
                    raise error
            try:
                batch = await sub.fetch(FETCH_BATCH, timeout=1)
            except (nats.errors.TimeoutError, TimeoutError):  # nothing to fetch (nats-py raises either)
                continue
            except (nats.errors.Error, OSError):
                await asyncio.sleep(0.2)  # reconnecting: the durable consumer keeps our place
                continue
            for index, msg in enumerate(batch):
                if stop.is_set():  # SIGTERM: the rest come back to the next run at once
                    for rest in batch[index:]:
                        with contextlib.suppress(Exception):
                            await rest.nak()
                    break
                await self.handle(msg)

    async def handle(self, msg: Msg) -> None:
        """Plan one exec message into the book, then ack it (or nak it with a delay)."""
        kind = msg.subject.rsplit(".", 1)[-1]
        try:
            document = read_message(msg.data)
            if kind == "place":
                done = await self._place(document)
            elif kind == "cancel":
                done = self._cancel(document)
            else:
                raise Malformed(f"subject {msg.subject[:200]} is neither place nor cancel", None, None)
        except Malformed as error:
            self.log(f"paper: dropped a message on {msg.subject[:200]}: {error}")
            done = True
        with contextlib.suppress(Exception):  # lost with the connection: redelivered, found in the book
            if done:
                await msg.ack()
            else:
                await msg.nak(delay=MIRROR_LAG_RETRY_S)

    async def _place(self, document: dict[str, Any]) -> bool:
        order_id = document.get("order_id")
        if isinstance(order_id, str) and self.book.handled(order_id):
            self.stats.redelivered += 1
            self._wake.set()  # re-send what titan has not answered yet
            return True
        now = self.clock()
        plan = plan_place(document, self.policies, seed=self.config.seed, now_ns=now)
        if plan.refused == POLICY_HASH_MISMATCH and not await self._mismatch_is_final(document):
            return False
        if plan.refused == POLICY_HASH_MISMATCH:  # learned more while checking: plan again
            plan = plan_place(document, self.policies, seed=self.config.seed, now_ns=now)
        assert isinstance(order_id, str)
        account_id = str(document["account_id"])
        self.book.plan_place(order_id, plan.order, account_id, plan.reports, now)
        self.stats.handled += 1
        if plan.refused:
            self.stats.refused += 1
            self.log(f"paper: refused {order_id}: {plan.refused}")
        self._wake.set()
        return True

    async def _mismatch_is_final(self, document: dict[str, Any]) -> bool:
        """Whether the engine has read the mirror at least up to the order's ledger position, so a
        policy activated before the order cannot still be on its way."""
        await self.follower.catch_up()
        if self.follower.stream_missing:
            return True
        position = document.get("position")
        if not isinstance(position, int) or isinstance(position, bool):
            return True
        try:
            tail = await read_tail(self.js)
        except (MirrorError, nats.js.errors.NotFoundError):
            return True
        if tail.position < position:
            self.log(f"paper: the mirror is at position {tail.position}, before order position {position}: waiting")
            return False
        await self.follower.catch_up()
        return True

    def _cancel(self, document: dict[str, Any]) -> bool:
        order_id = document.get("order_id")
        msg_id = f"cancel.{order_id}"
        if isinstance(order_id, str) and self.book.handled(msg_id):
            self.stats.redelivered += 1
            self._wake.set()
            return True
        if isinstance(order_id, str) and not self.book.handled(order_id):
            # The place is not in the book yet (nak'ed while the mirror caught up, or not delivered
            # yet): the cancel waits for it, or the order would be filled after titan cancelled it.
            return False
        now = self.clock()
        order_id, account_id, void, cancelled = plan_cancel(document, self.book, seed=self.config.seed, now_ns=now)
        self.book.plan_cancel(f"cancel.{order_id}", account_id, void, cancelled, now)
        self.stats.handled += 1
        self._wake.set()
        return True

    # Sending ---------------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        async with Sender(self.nc, keys=self.keys, issuer=ISSUER if self.keys is not None else None) as sender:
            while True:
                closing = self._closing.is_set()
                due = self.book.due(self.clock(), SEND_BATCH)
                if due:
                    answered = await self._send(sender, due)
                    if not answered and not closing:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._closing.wait(), 1.0)
                    if not closing:
                        continue
                if closing:
                    return
                await self._sleep_until_due()

    async def _send(self, sender: Sender, due: list[Any]) -> bool:
        published = []
        for report in due:
            started = time.monotonic()
            stored, outcome = await sender.publish(report.subject, report.payload)
            published.append((report, stored, outcome, started))
        all_answered = True
        for report, stored, outcome, started in published:
            try:
                answer = await sender.wait(stored, outcome, SEND_TIMEOUT_S)
            except (NoReply, NotStored) as error:
                self.stats.unanswered += 1
                all_answered = False
                self.log(f"paper: {report.command_id} unanswered, sent again later: {error}")
                continue
            self.stats.latency_ms = max(0, int((time.monotonic() - started) * 1000))
            if answer.get("outcome") not in ("accepted", "rejected", "duplicate"):
                self.log(f"paper: titan answered {report.command_id} {str(answer.get('outcome'))[:40]}: {str(answer)[:300]}")
            self.book.mark_sent(report.seq)
            self.stats.sent += 1
        return all_answered

    async def _sleep_until_due(self) -> None:
        next_due = self.book.next_due_ts_ns()
        wait_s = 1.0 if next_due is None else max(0.0, min(1.0, (next_due - self.clock()) / 1e9))
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), wait_s)

    # Snapshots -------------------------------------------------------------------------------

    async def _snapshot_loop(self) -> None:
        while not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self.config.snapshot_every_s)
            if self._closing.is_set():
                return
            self.snapshot_now()

    def snapshot_now(self, accounts: Iterable[str] | None = None) -> list[Report]:
        """Plan a truth snapshot for every account seen (and each configured one)."""
        chosen = sorted(set(accounts) if accounts is not None else set(self.book.accounts()) | set(self.config.accounts))
        reports = []
        for account_id in chosen:
            start = self.config.start_equity_e8
            if start is None:
                start = self.policies.initial_equity_e8.get(account_id, 0)
            build = functools.partial(
                _snapshot_of, account_id, start_equity_e8=start, now_ns=self.clock(), latency_ms=self.stats.latency_ms
            )
            reports.append(self.book.plan_snapshot(account_id, build))
        if reports:
            self._wake.set()
        return reports
