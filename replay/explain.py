"""`titan explain ORDER_ID|COMMAND_ID`: a decision's trace, from the ledger alone (SPEC §6).

1. The request: the command as recorded (actor, time, phase, intent, correlation, causation).
2. The decision: the policy hash in force and the one the command carried, every check with its
   value, limit and verdict, the outcome and reason, the events it produced.
3. The context at that moment: the account replayed up to the decision (the state view: mode,
   policy, positions, open orders — and the Brain's breaker, truth score, regime and allocation
   once the state view carries them), with the last event of every kind that sets context
   (policy activations, arm/disarm, and any Brain event type), i.e. the events that set it.
4. For an order: its life after the decision — acks, fills (with slippage in basis points against
   the order's reference price, signed so that positive is worse for us), cancels, venue
   rejects — and the effect on the position.

Only the account's own stream is read, in position order (version order within a stream), from
a start point up to the decision and then after it until the order is closed. A caller that keeps
the account folded (the console) passes a `StartPoint` near the decision, so a trace costs the
records since that point rather than the whole stream; `titan explain` starts from the newest
trusted stored snapshot before the decision (`snapshot_start`), which carries its `set_by`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import MAX_EMAX, MIN_EMIN, Context, Decimal, localcontext
from itertools import chain
from typing import Any, Final

from commands.accounts import fold
from commands.envelope import account_stream, command_stream
from commands.ports import Ledger, Record, RecordFilter
from commands.snapshots import ORDER_FLOW_TYPES, AccountStart, Snapshots, context_ref
from commands.views import state_view

from .points import format_ns
from .state_at import ReplayInputError

ORDER_PREFIX: Final = "ord-"
BPS: Final = Decimal(10_000)
SLIPPAGE_QUANTUM: Final = Decimal("0.01")
PRICE_QUANTUM: Final = Decimal("0.00000001")
ORDINARY_DIGITS: Final = 14

TERMINAL_TYPES: Final = frozenset({"order.cancelled.v1", "order.venue_rejected.v1"})
FIRST_PAGE: Final = 64
"""Records of the first page read after a point: an order is usually closed a few records on."""
MAX_PAGE: Final = 1000
"""Pages double up to this many records."""
MAX_SCAN: Final = 50_000
"""Ledger records one read looks at (other accounts' records are passed over, bounded)."""


@dataclass(frozen=True)
class Subject:
    """What was asked about: the command record, and the order id when the command opened one."""

    command_record: Record
    order_id: str | None

    @property
    def account_id(self) -> str:
        """The account the command was for."""
        command = (self.command_record.envelope.get("data") or {}).get("command") or {}
        return str(command.get("account_id"))

    @property
    def first_event_position(self) -> int:
        """Where the decision's first event is, as titan's writers lay a decision out (its events
        right before its command record): a start point before it is before the decision."""
        event_ids = (self.command_record.envelope.get("data") or {}).get("event_ids") or []
        return self.command_record.position - len(event_ids)


@dataclass(frozen=True)
class StartPoint:
    """An account folded through a stream version, where a replay up to a later decision may
    begin: the state (the core's states are immutable values, so keeping one is safe), the
    version and ledger position of the last record folded (0 and 0 before the first), and the
    last record of each context-setting type up to it, as the trace's `set_by` lists them."""

    state: Any
    version: int
    position: int
    set_by: Mapping[str, Mapping[str, Any]]


def initial_point(core: Any, account_id: str) -> StartPoint:
    """An account before its first record."""
    return StartPoint(core.decider.initial_state(account_id), 0, 0, {})


def point_of(start: AccountStart) -> StartPoint:
    """A start point from where a fold of the account begins (a trusted stored snapshot)."""
    set_by = {kind: with_time(ref) for kind, ref in start.set_by.items()}
    return StartPoint(start.state, start.version, start.position, set_by)


def snapshot_start(ledger: Ledger, core: Any, snapshots: Snapshots, ident: str) -> StartPoint | None:
    """The newest trusted stored snapshot of the subject's account before its decision, as a
    start point (None when there is none: the trace then starts from the first record)."""
    subject = find_subject(ledger, ident)
    before = subject.first_event_position - 1
    if before < 1:
        return None
    start = snapshots.start(core, subject.account_id, max_position=before)
    return point_of(start) if start.snapshot is not None else None


def advance(core: Any, point: StartPoint, records: Sequence[Record]) -> StartPoint:
    """Fold the account's next records (in stream order, none skipped) onto a start point."""
    if not records:
        return point
    set_by = dict(point.set_by)
    for record in records:
        if record.type not in ORDER_FLOW_TYPES:
            set_by[record.type] = _ref(record)
    last = records[-1]
    return StartPoint(fold(core, point.state, records), last.version, last.position, set_by)


def find_subject(ledger: Ledger, ident: str) -> Subject:
    """The command record for an order id (`ord-<command_id>`) or a command id."""
    candidates = [ident]
    if ident.startswith(ORDER_PREFIX):
        candidates.insert(0, ident[len(ORDER_PREFIX) :])
    for command_id in candidates:
        found = ledger.read_stream(command_stream(command_id))
        if found:
            record = found[0]
            command = (record.envelope.get("data") or {}).get("command") or {}
            order_id = ORDER_PREFIX + command_id if command.get("type") == "place_order.v1" else command.get("order_id")
            return Subject(record, order_id)
    raise ReplayInputError(
        f"no order or command {ident!r} in this ledger: give an order id (ord-<command id>, e.g. from "
        "`titan state` or the demo's summary) or a command id"
    )


def exact_context(*texts: str) -> Context:
    """A decimal context precise enough for sums, products and quotients of these numbers, so
    that a value of any length (an earlier titan recorded a fee of 10^11 and 1,000-digit
    quantities) is summed exactly and rounded only where a quantum says so."""
    digits = max((len(text) for text in texts), default=0)
    # Ordinary prices and amounts keep the default 28 digits (the traces earlier versions printed).
    return Context(prec=28 if digits <= ORDINARY_DIGITS else 2 * digits + 40, Emax=MAX_EMAX, Emin=MIN_EMIN)


def slippage_bps(side: str, fill_price: str, reference_price: str) -> str | None:
    """Fill price against the reference price, in basis points, positive when worse for us."""
    try:
        with localcontext(exact_context(fill_price, reference_price)):
            fill, reference = Decimal(fill_price), Decimal(reference_price)
            if reference <= 0:
                return None
            signed = (fill - reference) if side == "BUY" else (reference - fill)
            return str((signed * BPS / reference).quantize(SLIPPAGE_QUANTUM))
    except ArithmeticError:
        return None


def _plain(value: Decimal) -> str:
    """A decimal without trailing zeros and never in exponent notation."""
    return format(value.normalize(), "f")


def _ref(record: Record) -> dict[str, Any]:
    return with_time(context_ref(record))


def with_time(ref: Mapping[str, Any]) -> dict[str, Any]:
    """A record reference (`commands.snapshots.context_ref`) as a trace shows it: with its time."""
    return {
        "position": ref["position"],
        "event_id": ref["event_id"],
        "type": ref["type"],
        "ts_ns": ref["ts_ns"],
        "time": format_ns(int(ref["ts_ns"] if ref["ts_ns"] is not None else 0)),
        "command_id": ref["command_id"],
        "actor": ref["actor"],
    }


def _context(view: dict[str, Any]) -> dict[str, Any]:
    """The state view without its long lists (positions and open orders are reported apart)."""
    return {key: value for key, value in view.items() if not isinstance(value, list)}


def _position_of(view: dict[str, Any], venue: str | None, symbol: str | None) -> dict[str, Any] | None:
    for position in view.get("positions") or []:
        if position.get("venue") == venue and position.get("symbol") == symbol:
            return dict(position)
    return None


def explain(ledger: Ledger, core: Any, ident: str, *, start: StartPoint | None = None) -> dict[str, Any]:
    """The decision trace of an order or a command, as plain JSON values.

    `start`: the command's account folded through some version before the decision (from a cache
    the caller keeps), to replay from there instead of from the stream's first record. One at or
    after the decision's first event is not used (the replay then starts from the first record),
    so the trace is the same with or without it.
    """
    subject = find_subject(ledger, ident)
    record = subject.command_record
    envelope = record.envelope
    data = envelope.get("data") or {}
    command = data.get("command") or {}
    account_id = subject.account_id
    stream_id = account_stream(account_id)
    event_ids = list(data.get("event_ids") or [])
    wanted = set(event_ids)

    # Replay the account up to the decision; collect the decision's own events on the way.
    first = initial_point(core, account_id)
    origin = start if start is not None and start.position < record.position else first
    before, decision_events = _replay_before(ledger, core, stream_id, record.position, wanted, origin)
    if origin is not first and not wanted <= {e.envelope.get("event_id") for e in decision_events}:
        # A decision event lies at or before the start point: it was past the decision.
        before, decision_events = _replay_before(ledger, core, stream_id, record.position, wanted, first)
    view_before = state_view(core, before.state)

    decision_data = [e.envelope.get("data") or {} for e in decision_events]
    checks: list[dict[str, Any]] = []
    for event_data in decision_data:
        for check in event_data.get("checks") or []:
            checks.append(dict(check))
    trace: dict[str, Any] = {
        "subject": ident,
        "order_id": subject.order_id,
        "command_id": envelope.get("command_id"),
        "request": {
            "type": command.get("type"),
            "account_id": account_id,
            "actor": command.get("actor"),
            "ts_ns": command.get("ts_ns"),
            "time": format_ns(int(command.get("ts_ns", 0))),
            "issued_ts_ns": command.get("issued_ts_ns"),
            "phase_id": command.get("phase_id"),
            "intent_id": command.get("intent_id"),
            "correlation_id": command.get("correlation_id"),
            "causation_id": command.get("causation_id"),
            "command": command,
        },
        "policy": {
            "active_hash": envelope.get("policy_hash"),
            "carried_hash": command.get("policy_hash"),
            "policy_id": view_before.get("policy_id"),
        },
        "decision": {
            "position": record.position,
            "outcome": data.get("outcome"),
            "reason": data.get("reason"),
            "checks": checks,
            "detail": next((d.get("detail") for d in decision_data if isinstance(d.get("detail"), dict)), None),
            "events": [{**_ref(e), "data": e.envelope.get("data")} for e in decision_events],
            "command_record": {"position": record.position, "hash": envelope.get("hash")},
        },
        "context": {
            "as_of_position": record.position,
            "state": _context(view_before),
            "open_orders": len(view_before.get("open_orders") or []),
            "set_by": sorted((dict(ref) for ref in before.set_by.values()), key=lambda r: int(r["position"])),
        },
    }
    accepted = next((d for e, d in zip(decision_events, decision_data, strict=True) if e.type == "order.accepted.v1"), None)
    if subject.order_id is not None and command.get("type") == "place_order.v1":
        venue, symbol = command.get("venue"), command.get("symbol")
        trace["context"]["position_before"] = _position_of(view_before, venue, symbol)
        trace["lifecycle"] = _lifecycle(ledger, stream_id, subject.order_id, record.position, accepted, command)
    return trace


def _replay_before(
    ledger: Ledger, core: Any, stream_id: str, decided_at: int, wanted: set[str], origin: StartPoint
) -> tuple[StartPoint, list[Record]]:
    """The account folded up to a decision (its command record at `decided_at`), from `origin`;
    and the decision's own events (by event id), which are not part of "before"."""
    point = origin
    decision_events: list[Record] = []
    first_version: int | None = None
    for page, _ in stream_pages(ledger, stream_id, origin.position, decided_at):
        before: list[Record] = []
        for item in page:
            if item.position > decided_at:
                break
            if item.envelope.get("event_id") in wanted:
                decision_events.append(item)
                first_version = item.version if first_version is None else first_version
                continue
            if first_version is not None and item.version > first_version:
                continue  # interleaved later decision (group commit): not part of "before"
            before.append(item)
        point = advance(core, point, before)
    return point, decision_events


def stream_pages(ledger: Ledger, stream_id: str, after: int, upto: int | None = None) -> Iterator[tuple[list[Record], int]]:
    """The stream's records after a position, in position order (a stream's version order), a
    page at a time, each with the ledger position its read reached (a reader resumes after it;
    a page may be empty where other streams' records were passed over): up to position `upto`
    (pages may run past it), else to the ledger's end. Pages start small and double, so a reader
    that stops early reads little."""
    try:
        where = RecordFilter(stream_ids=(stream_id,))
    except ValueError:  # a stream id no filter can name (U+0000, from a forged record): read it whole
        records = [r for r in ledger.read_stream(stream_id) if r.position > after]
        yield records, records[-1].position if records else after
        return
    page = FIRST_PAGE
    while upto is None or after < upto:
        limit = page if upto is None else max(1, min(page, upto - after))
        scan = MAX_SCAN if upto is None else max(limit, min(MAX_SCAN, upto - after))
        records, reached = ledger.read_matching(after, limit, where, scan_limit=scan)
        if reached <= after:
            return
        yield records, reached
        after = reached
        page = min(2 * page, MAX_PAGE)


def _lifecycle(
    ledger: Ledger,
    stream_id: str,
    order_id: str,
    after: int,
    accepted: dict[str, Any] | None,
    command: dict[str, Any],
) -> dict[str, Any]:
    """Everything that happened to an order after it was decided, and its effect on the position."""
    if accepted is None:
        return {"status": "REJECTED", "events": [], "fills": [], "position_after": None}
    side = str(command.get("side"))
    reference = str(accepted.get("reference_price"))
    events: list[dict[str, Any]] = []
    fills: list[dict[str, Any]] = []
    status = "ACCEPTED"
    position_after: dict[str, Any] | None = None
    notional = Decimal(0)
    quantity = Decimal(0)
    context = exact_context(reference, str(command.get("quantity")))
    for item in chain.from_iterable(page for page, _ in stream_pages(ledger, stream_id, after)):
        data = item.envelope.get("data") or {}
        detail = data.get("detail")
        detail_order = detail.get("order_id") if isinstance(detail, dict) else None
        if data.get("order_id") != order_id and detail_order != order_id:
            continue
        entry = {**_ref(item), "data": data}
        events.append(entry)
        if item.type == "order.acknowledged.v1":
            status = "ACKNOWLEDGED" if status == "ACCEPTED" else status
        elif item.type == "order.filled.v1":
            status = str(data.get("status"))
            fill = {
                **_ref(item),
                "fill_id": data.get("fill_id"),
                "quantity": data.get("quantity"),
                "price": data.get("price"),
                "fee": data.get("fee"),
                "liquidity": data.get("liquidity"),
                "reference_price": reference,
                "slippage_bps": slippage_bps(side, str(data.get("price")), reference),
                "realized_pnl": data.get("realized_pnl"),
            }
            fills.append(fill)
            position_after = data.get("position")
            texts = [str(data.get(name)) for name in ("price", "quantity", "fee", "realized_pnl")]
            context.prec = max(context.prec, exact_context(*texts, str(notional), str(quantity)).prec)
            try:
                notional = context.add(notional, context.multiply(Decimal(texts[0]), Decimal(texts[1])))
                quantity = context.add(quantity, Decimal(texts[1]))
            except ArithmeticError:
                pass
        elif item.type == "order.cancelled.v1":
            status = "CANCELLED"
        elif item.type == "order.venue_rejected.v1":
            status = "VENUE_REJECTED"
        if status in ("FILLED", "CANCELLED", "VENUE_REJECTED"):
            break
    with localcontext(context):
        average = (notional / quantity) if quantity else None
        return {
            "status": status,
            "events": events,
            "fills": fills,
            "filled_quantity": str(quantity) if fills else "0",
            "average_fill_price": None if average is None else _plain(average.quantize(PRICE_QUANTUM)),
            "average_slippage_bps": None if average is None else slippage_bps(side, str(average), reference),
            "realized_pnl": _total(f["realized_pnl"] for f in fills) if fills else "0",
            "fees": _total(f["fee"] for f in fills) if fills else "0",
            "position_after": position_after,
        }


def _total(values: Iterable[Any]) -> str:
    """The exact sum of decimal strings (in the current context), or "?" if one is not a number."""
    try:
        return str(sum((Decimal(str(value)) for value in values), Decimal(0)))
    except ArithmeticError:
        return "?"
