"""Wire contracts: the committed JSON Schemas match the models, every event the core produces
validates against its data model, and the policy and command models refuse bad input.

The pre-Brain scenarios run under the shipped default policy with its Brain sections removed
(the pre-Brain path must keep producing valid events); the Brain scenarios run under the full
default policy, and one under the default with a single threshold changed."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from commands import envelope as envelopes
from domain import commands as dc
from domain import decider, reasons
from domain.events import EVENT_TYPES, Event, OrderRejected
from domain.policy import PolicyError, policy_from_document
from schemas.canonical import GENESIS_HASH, document_hash, record_hash
from schemas.commands import COMMANDS, PlaceOrder
from schemas.events import COMMAND_RECORDED, EVENT_DATA_MODELS, CommandRecorded, Envelope
from schemas.events import OrderRejected as RejectedData
from schemas.jsonschema import JSON_DIRECTORY, generate, render
from schemas.policy import PolicyDocument, policy_hash

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_POLICY = ROOT / "infra" / "policies" / "default.json"
REGENERATE = "python -m schemas.jsonschema"

T0 = 1_700_000_000_000_000_000
SECOND = 1_000_000_000
MS = 1_000_000


BRAIN_SECTIONS = ("truth", "breaker", "venue_quality", "allocation", "tail_risk", "budget")


def load_default_policy() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DEFAULT_POLICY.read_text(encoding="utf-8"))
    return document


def pre_brain_policy() -> dict[str, Any]:
    """The default policy without any Brain section: what a policy written before the Brain is."""
    document = load_default_policy()
    for section in BRAIN_SECTIONS:
        del document[section]
    return document


ALL_REASON_CODES = {
    value for name, value in vars(reasons).items() if name.isupper() and isinstance(value, str)
}


# --- (1) committed JSON Schemas ----------------------------------------------------------------


def test_committed_json_schemas_match_the_models() -> None:
    expected = {name: render(schema) for name, schema in generate().items()}
    committed = {
        path.relative_to(JSON_DIRECTORY).as_posix(): path for path in JSON_DIRECTORY.rglob("*.json")
    }
    for name, text in expected.items():
        path = JSON_DIRECTORY / name
        assert name in committed, f"schemas/json/{name} is missing; run `{REGENERATE}`"
        assert path.read_text(encoding="utf-8") == text, (
            f"schemas/json/{name} differs from its pydantic model; run `{REGENERATE}` "
            "and commit schemas/json/"
        )
    stale = sorted(set(committed) - set(expected))
    assert not stale, f"schemas/json/ has files no model generates: {stale}; run `{REGENERATE}`"


def test_every_event_type_has_a_data_model() -> None:
    assert set(EVENT_DATA_MODELS) == set(EVENT_TYPES) | {COMMAND_RECORDED}


# --- (2) every event the core produces validates ------------------------------------------------


DAY_ROLLED = "budget.day_rolled.v1"


class Account:
    """Drives the core through wire-valid commands: each command is first validated by the
    `schemas` models, then handed to the decider; every event is validated and evolved.

    `brain=False` runs under the pre-Brain policy, `brain=True` under the full default policy;
    `document` under any other."""

    def __init__(
        self,
        account_id: str = "main",
        *,
        brain: bool = False,
        document: dict[str, Any] | None = None,
    ) -> None:
        self.account_id = account_id
        self.state = decider.initial_state(account_id)
        self.now = T0
        self.counter = 0
        self.events: list[Event] = []
        self.last: list[Event] = []
        """The events of the last command decided."""
        if document is None:
            document = load_default_policy() if brain else pre_brain_policy()
        self.policy_document = document
        self.policy_hash = document_hash(self.policy_document)

    # time and identity

    def advance(self, ns: int = 2 * SECOND) -> None:
        self.now += ns

    def _common(self, type_name: str, ts_ns: int | None) -> dict[str, Any]:
        self.counter += 1
        return {
            "type": type_name,
            "command_id": f"cmd-{self.counter:04d}",
            "account_id": self.account_id,
            "ts_ns": self.now if ts_ns is None else ts_ns,
            "actor": "test",
        }

    # deciding

    def decide(self, wire: dict[str, Any]) -> list[Event]:
        """Every event the command produced, each validated as built and as stored."""
        command = COMMANDS.validate_python(wire)
        domain_command = to_domain(command, wire)
        produced = decider.decide(domain_command, self.state)
        assert produced
        for event in produced:
            data = event.to_data()
            model = EVENT_DATA_MODELS[event.type_name()]
            model.model_validate(data, strict=True)
            # and as it is stored: canonical JSON read back
            model.model_validate_json(json.dumps(data), strict=True)
            self.state = decider.evolve(self.state, event)
            self.events.append(event)
        self.last = list(produced)
        return self.last

    def expect(self, wire: dict[str, Any], type_name: str, reason: str | None = None) -> Event:
        """The command's own (first) event, after the budget day's roll if there is one."""
        produced = [event for event in self.decide(wire) if event.type_name() != DAY_ROLLED]
        assert produced, "only a day roll"
        event = produced[0]
        data = event.to_data()
        assert event.type_name() == type_name, data
        if reason is not None:
            assert data["reason"] == reason, data
        return event

    def last_types(self) -> list[str]:
        return [event.type_name() for event in self.last]

    def transition(self) -> dict[str, Any]:
        """The data of the breaker transition the last command caused."""
        moved = [e.to_data() for e in self.last if e.type_name() == "breaker.transitioned.v1"]
        assert len(moved) == 1, self.last_types()
        return moved[0]

    # commands

    def activate(
        self, document: dict[str, Any] | None = None, ts_ns: int | None = None
    ) -> dict[str, Any]:
        wire = self._common("activate_policy.v1", ts_ns)
        wire["policy"] = document if document is not None else self.policy_document
        return wire

    def place(
        self,
        client_order_id: str,
        quantity: str,
        price: str | None,
        reference_price: str | None = None,
        *,
        side: str = "BUY",
        venue: str = "paper",
        symbol: str = "BTCUSDT",
        reduce_only: bool = False,
        policy_hash: str | None = None,
        ts_ns: int | None = None,
        phase_id: int = 2,
    ) -> dict[str, Any]:
        wire = self._common("place_order.v1", ts_ns)
        wire.update(
            policy_hash=self.policy_hash if policy_hash is None else policy_hash,
            phase_id=phase_id,
            intent_id=f"intent-{client_order_id}",
            client_order_id=client_order_id,
            venue=venue,
            symbol=symbol,
            side=side,
            order_type="LIMIT" if price is not None else "MARKET",
            quantity=quantity,
            reference_price=reference_price if reference_price is not None else (price or "0"),
            reduce_only=reduce_only,
        )
        if price is not None:
            wire["price"] = price
        return wire

    def order_id(self, wire: dict[str, Any]) -> str:
        return decider.order_id_for(wire["command_id"])

    def ack(self, order_id: str) -> dict[str, Any]:
        wire = self._common("record_order_ack.v1", None)
        wire.update(order_id=order_id, venue_order_id=f"v-{order_id}")
        return wire

    def venue_reject(self, order_id: str) -> dict[str, Any]:
        wire = self._common("record_venue_reject.v1", None)
        wire.update(order_id=order_id, venue_reason="insufficient margin")
        return wire

    def fill(
        self,
        order_id: str,
        fill_id: str,
        quantity: str,
        price: str,
        fee: str = "0",
        liquidity: str = "taker",
    ) -> dict[str, Any]:
        wire = self._common("record_fill.v1", None)
        wire.update(
            order_id=order_id,
            fill_id=fill_id,
            quantity=quantity,
            price=price,
            fee=fee,
            liquidity=liquidity,
        )
        return wire

    def cancel(self, order_id: str) -> dict[str, Any]:
        wire = self._common("cancel_order.v1", None)
        wire.update(order_id=order_id, reason="strategy withdrew")
        return wire

    def cancelled(self, order_id: str) -> dict[str, Any]:
        wire = self._common("record_cancelled.v1", None)
        wire.update(order_id=order_id, venue_reason="cancelled on request")
        return wire

    def arm(self, ts_ns: int | None = None) -> dict[str, Any]:
        wire = self._common("arm.v1", ts_ns)
        wire["reason"] = "go live"
        return wire

    def disarm(self) -> dict[str, Any]:
        wire = self._common("disarm.v1", None)
        wire["reason"] = "end of session"
        return wire

    def snapshot(
        self,
        venue: str = "paper",
        *,
        positions: dict[str, str] | None = None,
        open_order_ids: list[str] | None = None,
        equity: str = "100000",
        age_ms: int = 0,
        latency_ms: int = 0,
    ) -> dict[str, Any]:
        wire = self._common("record_truth_snapshot.v1", None)
        wire.update(
            venue=venue,
            positions=[{"symbol": s, "quantity": q} for s, q in (positions or {}).items()],
            open_order_ids=open_order_ids or [],
            equity=equity,
            venue_ts_ns=self.now - age_ms * MS,
            latency_ms=latency_ms,
        )
        return wire

    def regime(self, regime: str) -> dict[str, Any]:
        wire = self._common("set_regime.v1", None)
        wire.update(regime=regime, reason="regime model")
        return wire

    def tail(self, symbol: str, tail_exponent: str) -> dict[str, Any]:
        wire = self._common("record_tail_risk.v1", None)
        wire.update(symbol=symbol, tail_exponent=tail_exponent, sample_size=500, method="hill")
        return wire

    def halt(self) -> dict[str, Any]:
        wire = self._common("halt.v1", None)
        wire["reason"] = "operator halt"
        return wire

    def purge_dlq(self) -> dict[str, Any]:
        wire = self._common("purge_dlq.v1", None)
        wire["entry_ids"] = ["cmd-7-0123456789abcdef"]
        wire["reason"] = "triaged: a forged message"
        return wire

    def resume(self) -> dict[str, Any]:
        wire = self._common("resume.v1", None)
        wire["reason"] = "all clear"
        return wire

    def flatten(self, policy_hash: str | None = None, **fields: Any) -> dict[str, Any]:
        wire = self._common("flatten.v1", None)
        wire.update(
            policy_hash=self.policy_hash if policy_hash is None else policy_hash,
            reason="flatten everything",
        )
        wire.update(fields)
        return wire

    def reasons_seen(self) -> set[str]:
        seen: set[str] = set()
        for event in self.events:
            reason = event.to_data().get("reason")
            if isinstance(reason, str) and reason in ALL_REASON_CODES:
                seen.add(reason)
        return seen


def to_domain(command: Any, wire: dict[str, Any]) -> dc.Command:
    """The edge conversion of a validated wire command into the core's command (test-local)."""
    kind = command.type
    if kind == "place_order.v1":
        return dc.PlaceOrder(
            command.command_id,
            command.ts_ns,
            command.policy_hash,
            command.phase_id,
            command.intent_id,
            command.client_order_id,
            command.venue,
            command.symbol,
            command.side,
            command.order_type,
            command.quantity,
            command.price if command.price is not None else "",
            command.reference_price,
            command.reduce_only,
        )
    if kind == "activate_policy.v1":
        document: dict[str, object] = wire["policy"]  # as received: what is hashed and recorded
        return dc.ActivatePolicy(
            command.command_id,
            command.ts_ns,
            document,
            document_hash(document),
            policy_from_document(document),
        )
    if kind == "cancel_order.v1":
        return dc.CancelOrder(command.command_id, command.ts_ns, command.order_id, command.reason)
    if kind == "record_order_ack.v1":
        return dc.RecordOrderAck(
            command.command_id, command.ts_ns, command.order_id, command.venue_order_id
        )
    if kind == "record_venue_reject.v1":
        return dc.RecordVenueReject(
            command.command_id, command.ts_ns, command.order_id, command.venue_reason
        )
    if kind == "record_fill.v1":
        return dc.RecordFill(
            command.command_id,
            command.ts_ns,
            command.order_id,
            command.fill_id,
            command.quantity,
            command.price,
            command.fee,
            command.liquidity,
        )
    if kind == "record_cancelled.v1":
        return dc.RecordCancelled(
            command.command_id, command.ts_ns, command.order_id, command.venue_reason
        )
    if kind == "arm.v1":
        return dc.Arm(command.command_id, command.ts_ns, command.reason)
    if kind == "disarm.v1":
        return dc.Disarm(command.command_id, command.ts_ns, command.reason)
    if kind == "record_truth_snapshot.v1":
        return dc.RecordTruthSnapshot(
            command.command_id,
            command.ts_ns,
            command.venue,
            [p.symbol for p in command.positions],
            [p.quantity for p in command.positions],
            list(command.open_order_ids),
            command.equity,
            command.venue_ts_ns,
            command.latency_ms,
        )
    if kind == "set_regime.v1":
        return dc.SetRegime(command.command_id, command.ts_ns, command.regime, command.reason)
    if kind == "record_tail_risk.v1":
        return dc.RecordTailRisk(
            command.command_id,
            command.ts_ns,
            command.symbol,
            command.tail_exponent,
            command.sample_size,
            command.method,
        )
    if kind == "halt.v1":
        return dc.Halt(command.command_id, command.ts_ns, command.reason)
    if kind == "resume.v1":
        return dc.Resume(command.command_id, command.ts_ns, command.reason)
    if kind == "flatten.v1":
        return dc.Flatten(
            command.command_id,
            command.ts_ns,
            command.reason,
            command.policy_hash,
            command.phase_id or 0,
            command.intent_id or "",
        )
    if kind == "purge_dlq.v1":
        return dc.PurgeDlq(command.command_id, command.ts_ns, list(command.entry_ids), command.reason, command.actor)
    raise AssertionError(f"the core has no command for {kind}")


def lifecycle_scenario() -> Account:
    """Policy, mode, every structural refusal, most limit refusals and the order lifecycle."""
    a = Account()
    rejected = "order.rejected.v1"
    refused = "command.rejected.v1"

    # before any policy
    a.expect(a.place("c0", "0.1", "65000"), rejected, reasons.NO_ACTIVE_POLICY)
    a.expect(a.arm(), refused, reasons.NO_ACTIVE_POLICY)
    a.expect(a.disarm(), refused, reasons.MODE_UNCHANGED)
    a.expect(a.purge_dlq(), "dlq.purged.v1")  # an operator action: needs no policy

    # policy
    activated = a.expect(a.activate(), "policy.activated.v1")
    assert activated.to_data()["previous_policy_hash"] is None
    assert activated.to_data()["policy_hash"] == a.policy_hash
    a.expect(a.activate(), refused, reasons.POLICY_ALREADY_ACTIVE)

    # structural refusals, in check order
    a.expect(
        a.place("c1", "0.1", "65000", policy_hash="0" * 64), rejected, reasons.POLICY_HASH_MISMATCH
    )
    a.expect(a.place("c1", "1", "0.2", symbol="DOGEUSDT"), rejected, reasons.SYMBOL_NOT_ALLOWED)
    a.expect(a.place("c1", "0.1", "65000", venue="binance"), rejected, reasons.ACCOUNT_DISARMED)
    a.expect(a.place("c1", "0", "65000"), rejected, reasons.INVALID_QUANTITY)
    a.expect(a.place("c1", "0.0005", "65000"), rejected, reasons.QUANTITY_OFF_STEP)
    a.expect(a.place("c1", "0.0005", None, "65000"), rejected, reasons.QUANTITY_OFF_STEP)  # MARKET
    a.expect(a.place("c1", "0.1", "65000", "0"), rejected, reasons.INVALID_PRICE)
    a.expect(a.place("c1", "0.1", "65000", "65000.05"), rejected, reasons.INVALID_PRICE)
    a.expect(a.place("c1", "0.1", "0", "65000"), rejected, reasons.INVALID_PRICE)
    a.expect(a.place("c1", "0.1", "65000.05", "65000"), rejected, reasons.PRICE_OFF_TICK)

    # limit refusals
    a.expect(a.place("c1", "3", "10000"), rejected, reasons.MAX_ORDER_QTY)
    a.expect(a.place("c1", "40", "3000", symbol="ETHUSDT"), rejected, reasons.MAX_ORDER_NOTIONAL)
    a.expect(a.place("c1", "0.1", "60000", "65000"), rejected, reasons.PRICE_COLLAR)
    a.expect(a.place("c1", "500", "200", symbol="SOLUSDT"), rejected, reasons.MAX_POSITION_NOTIONAL)
    a.expect(
        a.place("c1", "0.1", "65000", reduce_only=True),
        rejected,
        reasons.REDUCE_ONLY_WOULD_INCREASE,
    )

    # order A: acknowledged, partially then fully filled
    place_a = a.place("a", "1", "65000")
    accepted = a.expect(place_a, "order.accepted.v1")
    assert accepted.to_data()["notional"] == "65000"
    order_a = a.order_id(place_a)
    a.expect(a.place("a", "0.1", "65000"), rejected, reasons.DUPLICATE_CLIENT_ORDER_ID)
    a.advance(5 * MS)
    ack = a.expect(a.ack(order_a), "order.acknowledged.v1")
    assert ack.to_data()["ack_latency_ms"] == 5
    a.expect(a.ack(order_a), refused, reasons.INVALID_TRANSITION)
    a.expect(a.venue_reject(order_a), refused, reasons.INVALID_TRANSITION)
    partial = a.expect(a.fill(order_a, "f1", "0.4", "65000", fee="1.3"), "order.filled.v1")
    assert partial.to_data()["status"] == "PARTIALLY_FILLED"
    a.expect(a.fill(order_a, "f1", "0.4", "65000"), refused, reasons.DUPLICATE_FILL)
    a.expect(a.fill(order_a, "f2", "0.7", "65000"), refused, reasons.OVERFILL)
    a.expect(a.fill(order_a, "f2", "0.0005", "65000"), refused, reasons.INVALID_FILL)
    a.expect(a.fill(order_a, "f2", "0.6", "64999.95"), refused, reasons.INVALID_FILL)
    a.expect(
        a.fill(order_a, "f2", "0.6", "64900", fee="0.000000001"), refused, reasons.INVALID_FILL
    )
    full = a.expect(
        a.fill(order_a, "f2", "0.6", "64900", fee="0.78", liquidity="maker"), "order.filled.v1"
    )
    assert full.to_data()["status"] == "FILLED"
    assert full.to_data()["remaining_quantity"] == "0.000"
    a.expect(a.fill(order_a, "f2", "0.6", "64900"), refused, reasons.DUPLICATE_FILL)
    a.expect(a.fill(order_a, "f3", "0.1", "64900"), refused, reasons.ORDER_CLOSED)
    a.expect(a.cancel(order_a), refused, reasons.ORDER_CLOSED)

    # order B: a MARKET sell that closes the long and opens a short, with a maker rebate
    place_b = a.place("b", "1.5", None, "65100", side="SELL")
    accepted_b = a.expect(place_b, "order.accepted.v1")
    assert accepted_b.to_data()["price"] == "65100.0"
    flip = a.expect(
        a.fill(a.order_id(place_b), "f4", "1.5", "65200", fee="-0.5", liquidity="maker"),
        "order.filled.v1",
    )
    position = flip.to_data()["position"]
    assert isinstance(position, dict) and position["quantity"] == "-0.500"

    # order C: reduce-only buy, partly filled, cancel requested, then cancelled by the venue
    place_c = a.place("c", "0.5", "65200", reduce_only=True)
    a.expect(place_c, "order.accepted.v1")
    order_c = a.order_id(place_c)
    a.expect(a.fill(order_c, "f5", "0.2", "65300"), "order.filled.v1")
    a.expect(a.cancel(order_c), "order.cancel_requested.v1")
    a.expect(a.cancel(order_c), refused, reasons.CANCEL_ALREADY_REQUESTED)
    cancelled = a.expect(a.cancelled(order_c), "order.cancelled.v1")
    assert cancelled.to_data()["filled_quantity"] == "0.200"

    # order D: refused by the venue
    place_d = a.place("d", "1", "3000", symbol="ETHUSDT")
    a.expect(place_d, "order.accepted.v1")
    order_d = a.order_id(place_d)
    a.expect(a.venue_reject(order_d), "order.venue_rejected.v1")
    a.expect(a.ack(order_d), refused, reasons.ORDER_CLOSED)

    # unknown orders
    a.expect(a.ack("ord-nope"), refused, reasons.UNKNOWN_ORDER)
    a.expect(a.cancel("ord-nope"), refused, reasons.UNKNOWN_ORDER)
    a.expect(a.fill("ord-nope", "f9", "1", "1"), refused, reasons.UNKNOWN_ORDER)
    a.expect(a.cancelled("ord-nope"), refused, reasons.UNKNOWN_ORDER)
    a.expect(a.venue_reject("ord-nope"), refused, reasons.UNKNOWN_ORDER)

    # mode
    a.expect(a.arm(), "account.armed.v1")
    a.expect(a.arm(), refused, reasons.MODE_UNCHANGED)
    a.expect(
        a.place("live", "0.01", "3000", venue="binance", symbol="ETHUSDT"), "order.accepted.v1"
    )
    a.expect(a.disarm(), "account.disarmed.v1")

    # a second policy: the previous hash is recorded
    tighter = copy.deepcopy(a.policy_document)
    tighter["policy_id"] = "tighter"
    tighter["limits"]["price_collar_bps"] = 50
    second = a.expect(a.activate(tighter), "policy.activated.v1")
    assert second.to_data()["previous_policy_hash"] == a.policy_hash
    a.policy_hash = document_hash(tighter)

    # time never runs backwards
    a.expect(a.place("late", "0.1", "65000", ts_ns=a.now - SECOND), rejected, reasons.STALE_COMMAND)
    a.expect(a.arm(ts_ns=a.now - SECOND), refused, reasons.STALE_COMMAND)
    return a


def exposure_scenario() -> Account:
    """Gross exposure: open orders on both sides add up past the account limit."""
    a = Account()
    a.expect(a.activate(), "policy.activated.v1")
    for i, side in enumerate(["BUY", "SELL", "BUY", "SELL"]):
        a.advance()
        a.expect(a.place(f"g{i}", "2", "50000", side=side), "order.accepted.v1")
    a.advance()
    a.expect(a.place("g4", "40", "2500", symbol="ETHUSDT"), "order.accepted.v1")
    a.advance()
    a.expect(
        a.place("g5", "10", "100", symbol="SOLUSDT"),
        "order.rejected.v1",
        reasons.MAX_GROSS_EXPOSURE,
    )
    # open orders on BTCUSDT: a policy may not change its quantity scale under them
    coarser = copy.deepcopy(a.policy_document)
    for instrument in coarser["instruments"]:
        if instrument["symbol"] == "BTCUSDT":
            instrument["step_size"] = "0.01"
            instrument["max_order_qty"] = "2"
    a.advance()
    a.expect(a.activate(coarser), "command.rejected.v1", reasons.POLICY_SCALE_CHANGE)
    return a


def rate_scenario() -> Account:
    """Order rate, message rate (cancels count) and open orders."""
    a = Account()
    a.expect(a.activate(), "policy.activated.v1")
    a.advance()
    placed: list[str] = []
    for i in range(10):
        a.advance(10 * MS)
        wire = a.place(f"r{i}", "0.001", "50000")
        a.expect(wire, "order.accepted.v1")
        placed.append(a.order_id(wire))
    a.advance(10 * MS)
    a.expect(a.place("r10", "0.001", "50000"), "order.rejected.v1", reasons.ORDER_RATE)

    a.advance()
    wire = a.place("r11", "0.001", "50000")
    a.expect(wire, "order.accepted.v1")
    placed.append(a.order_id(wire))

    a.advance()
    for order_id in placed:  # 11 cancels
        a.advance(MS)
        a.expect(a.cancel(order_id), "order.cancel_requested.v1")
    for i in range(12, 21):  # 9 orders: 20 messages, 20 open orders
        a.advance(MS)
        a.expect(a.place(f"r{i}", "0.001", "50000"), "order.accepted.v1")
    a.advance(MS)
    refused = a.expect(a.place("r21", "0.001", "50000"), "order.rejected.v1", reasons.MESSAGE_RATE)
    recorded = RejectedData.model_validate(refused.to_data(), strict=True)
    failing = [check.check for check in recorded.checks if check.verdict == "fail"]
    assert failing == ["messages_per_second", "open_orders"]

    a.advance()
    a.expect(a.place("r22", "0.001", "50000"), "order.rejected.v1", reasons.MAX_OPEN_ORDERS)
    return a


NS_PER_DAY = 86_400 * SECOND
ACCEPTED = "order.accepted.v1"
REJECTED = "order.rejected.v1"
REFUSED = "command.rejected.v1"
TRUTH = "truth.snapshot_recorded.v1"
BREAKER = "breaker.transitioned.v1"
VENUE = "venue.status_changed.v1"


def brain_scenario() -> Account:
    """Truth score, allocation and regime, tail risk, the breaker and the operator's actions,
    under the full default policy (equity 100 000: phases 1 and 2, leverage up to 5)."""
    a = Account(brain=True)
    a.expect(a.activate(), "policy.activated.v1")

    # no snapshot yet: new risk is refused; the first decision under the policy rolls the day
    a.advance()
    a.expect(a.place("t0", "0.1", "65000"), REJECTED, reasons.TRUTH_SCORE_LOW)
    assert a.last_types() == [DAY_ROLLED, REJECTED]
    a.expect(a.snapshot(equity="1.000000001"), REFUSED, reasons.INVALID_SNAPSHOT)
    truth = a.expect(a.snapshot(), TRUTH)
    assert truth.to_data()["score"] == 100
    # an older view of the same venue, after a newer one: kept, not scored (rules 2)
    a.advance()
    a.expect(a.snapshot(age_ms=5000), REFUSED, reasons.SNAPSHOT_SUPERSEDED)

    # allocation and regime
    a.expect(a.place("p3", "0.1", "65000", phase_id=3), REJECTED, reasons.PHASE_NOT_ALLOWED)
    a.expect(a.regime("NEUTRAL"), REFUSED, reasons.REGIME_UNCHANGED)
    a.expect(a.regime("RISK_OFF"), "regime.changed.v1")
    place_l1 = a.place("l1", "1.5", "65000")
    a.expect(place_l1, ACCEPTED)
    a.expect(a.place("l2", "1.5", "65000"), ACCEPTED)
    # RISK_OFF halves the cap to 2.5: 97 500 + 97 500 + 65 000 over 100 000 of equity is 2.6
    a.expect(a.place("l3", "1", "65000"), REJECTED, reasons.MAX_LEVERAGE)
    a.expect(a.regime("NEUTRAL"), "regime.changed.v1")

    # tail risk, halt and resume
    a.expect(a.tail("BTCUSDT", "1.12345"), REFUSED, reasons.INVALID_SNAPSHOT)
    a.expect(a.tail("BTCUSDT", "1.8"), "tail_risk.recorded.v1")
    assert a.transition()["trigger"] == "tail_risk"
    a.expect(a.resume(), REFUSED, reasons.NOT_HALTED)
    a.expect(a.halt(), BREAKER)
    a.expect(a.halt(), REFUSED, reasons.ALREADY_HALTED)
    a.expect(a.place("h1", "0.1", "65000"), REJECTED, reasons.BREAKER_HALTED)
    blocked = a.expect(a.resume(), REFUSED, reasons.RESUME_BLOCKED)
    assert blocked.to_data()["detail"] == {"tail_risk": "DEFENSIVE"}
    a.expect(a.tail("BTCUSDT", "3.1"), "tail_risk.recorded.v1")
    a.expect(a.resume(), BREAKER)
    assert a.transition()["trigger"] == "operator_resume"

    # the truth score moves the breaker: drift alone (0.1 BTC = 6 500 > 1 000) scores 60
    order_l1 = a.order_id(place_l1)
    a.expect(a.fill(order_l1, "f1", "1.5", "65000"), "order.filled.v1")
    open_now = sorted(a.state.open_orders)  # l2
    low = a.expect(a.snapshot(positions={"BTCUSDT": "1.4"}, open_order_ids=open_now), TRUTH)
    assert low.to_data()["score"] == 60
    assert a.transition()["trigger"] == "truth_score"
    a.expect(a.place("t1", "0.1", "65000"), REJECTED, reasons.TRUTH_SCORE_LOW)
    # orphans, staleness and latency as well: HALTED (a view 5 s old, still newer than the last:
    # under rules 2 a venue's view older than one already applied is SNAPSHOT_SUPERSEDED)
    a.advance(6 * SECOND)
    a.expect(
        a.snapshot(
            positions={"BTCUSDT": "1.4"},
            open_order_ids=["x1", "x2", "x3", "x4"],
            age_ms=5000,
            latency_ms=2000,
        ),
        TRUTH,
    )
    assert a.transition()["to_state"] == "HALTED"
    # reduce-only orders still go out while HALTED
    a.expect(a.place("r1", "0.5", "65000", side="SELL", reduce_only=True), ACCEPTED)

    # flatten: a cancel request for each open order and a reduce-only order closing the position
    a.expect(a.flatten(policy_hash="0" * 64), REFUSED, reasons.POLICY_HASH_MISMATCH)
    flatten = a.flatten()
    a.decide(flatten)
    assert a.last_types() == ["order.cancel_requested.v1"] * 2 + [ACCEPTED]
    closing: dict[str, Any] = a.last[-1].to_data()
    assert closing["phase_id"] == 0 and closing["intent_id"] == ""
    assert closing["client_order_id"] == f"flatten-{flatten['command_id']}.0"
    for order_id in sorted(a.state.open_orders):
        if order_id != closing["order_id"]:
            a.expect(a.cancelled(order_id), "order.cancelled.v1")
    a.expect(a.fill(closing["order_id"], "f2", "1.5", closing["price"]), "order.filled.v1")
    assert not a.state.open_orders
    # the fill 150 bps under its reference halts the paper venue for quality
    assert VENUE in a.last_types()
    stuck: dict[str, Any] = a.expect(a.resume(), REFUSED, reasons.RESUME_BLOCKED).to_data()
    assert "venue_quality" in stuck["detail"]
    return a


def venue_scenario() -> Account:
    """Ack latency degrades, then halts a venue (default policy: mean of up to 20 samples)."""
    a = Account(brain=True)
    a.expect(a.activate(), "policy.activated.v1")
    a.advance()
    a.expect(a.snapshot(), TRUTH)
    place_v1 = a.place("v1", "0.01", "65000")
    a.expect(place_v1, ACCEPTED)
    a.advance(300 * MS)
    a.expect(a.ack(a.order_id(place_v1)), "order.acknowledged.v1")
    assert a.last_types() == ["order.acknowledged.v1", VENUE]
    assert a.last[-1].to_data()["to_status"] == "DEGRADED"
    # DEGRADED halves the size limits: 1.5 BTC is over 2 x 50%
    a.expect(a.place("big", "1.5", "65000"), REJECTED, reasons.MAX_ORDER_QTY)
    place_v2 = a.place("v2", "0.01", "65000")
    a.expect(place_v2, ACCEPTED)
    a.advance(3 * SECOND)
    a.expect(a.ack(a.order_id(place_v2)), "order.acknowledged.v1")
    assert a.last_types() == ["order.acknowledged.v1", VENUE, BREAKER]
    assert a.transition()["trigger"] == "venue_quality"
    a.expect(a.place("v3", "0.01", "65000"), REJECTED, reasons.VENUE_HALTED)
    return a


def next_midnight(ts_ns: int) -> int:
    return (ts_ns // NS_PER_DAY + 1) * NS_PER_DAY


def budget_scenario() -> Account:
    """The daily loss budget (tripping DEFENSIVE in this variant of the default policy), the day's
    roll at 00:00 UTC, and the drawdown from peak equity."""
    document = load_default_policy()
    document["budget"]["daily_loss_breaker"] = "DEFENSIVE"
    a = Account(document=document)
    a.expect(a.activate(), "policy.activated.v1")
    a.advance()
    a.expect(a.snapshot(), TRUTH)
    buy = a.place("b1", "1", "65000")
    a.expect(buy, ACCEPTED)
    a.expect(a.fill(a.order_id(buy), "f1", "1", "65000"), "order.filled.v1")
    sell = a.place("s1", "1", "62900", side="SELL")
    a.expect(sell, ACCEPTED)
    # a realized loss of 2 100 reaches the 2 000 daily limit
    a.expect(a.fill(a.order_id(sell), "f2", "1", "62900"), "order.filled.v1")
    assert a.transition()["trigger"] == "daily_loss"
    a.expect(a.place("b2", "0.1", "65000"), REJECTED, reasons.DAILY_LOSS_LIMIT)

    a.now = next_midnight(a.now)
    a.expect(a.snapshot(equity="90000"), TRUTH)
    assert a.last_types()[0] == DAY_ROLLED
    assert a.last[0].to_data()["closed_day_pnl"] == "-2100"
    # 90 000 against a peak of 100 000: a drawdown of 1 000 bps, over the 500 allowed
    a.expect(a.place("b3", "0.1", "65000"), REJECTED, reasons.MAX_DRAWDOWN)
    return a


def sections_scenario() -> Account:
    """The Brain's commands under a policy without Brain sections; halt and resume still work."""
    a = Account()
    a.expect(a.activate(), "policy.activated.v1")
    a.advance()
    for wire, section in [
        (a.snapshot(), "truth"),
        (a.regime("CRASH"), "allocation"),
        (a.tail("BTCUSDT", "1.5"), "tail_risk"),
    ]:
        event = a.expect(wire, REFUSED, reasons.POLICY_SECTION_MISSING)
        assert event.to_data()["detail"] == {"section": section}
    a.expect(a.halt(), BREAKER)
    a.expect(a.place("h", "0.1", "65000"), REJECTED, reasons.BREAKER_HALTED)
    a.expect(a.resume(), BREAKER)
    a.expect(a.place("ok", "0.1", "65000"), ACCEPTED)
    return a


SCENARIOS = [
    lifecycle_scenario,
    exposure_scenario,
    rate_scenario,
    brain_scenario,
    venue_scenario,
    budget_scenario,
    sections_scenario,
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_events_of_the_core_validate_against_their_data_models(scenario: Any) -> None:
    account = scenario()
    assert account.events


def test_scenarios_cover_every_event_type_and_reason_code() -> None:
    types: set[str] = set()
    seen: set[str] = set()
    for scenario in SCENARIOS:
        account = scenario()
        types |= {event.type_name() for event in account.events}
        seen |= account.reasons_seen()
    assert types == set(EVENT_TYPES), f"no scenario produces {sorted(set(EVENT_TYPES) - types)}"
    assert seen == ALL_REASON_CODES, (
        f"no scenario provokes {sorted(ALL_REASON_CODES - seen)}: add a step that does, "
        "so that its event data is validated"
    )


def test_a_market_order_refusal_records_a_null_price() -> None:
    account = Account()
    event = account.expect(account.place("m", "0.0005", None, "65000"), "order.rejected.v1")
    assert isinstance(event, OrderRejected)
    assert event.to_data()["price"] is None


def test_strict_validation_refuses_what_the_core_never_writes() -> None:
    account = lifecycle_scenario()
    filled = next(e for e in account.events if e.type_name() == "order.filled.v1")
    model = EVENT_DATA_MODELS["order.filled.v1"]
    data = filled.to_data()
    for field, bad in [("quantity", 0.4), ("status", "CANCELLED"), ("liquidity", "MAKER")]:
        with pytest.raises(ValidationError):
            model.model_validate({**data, field: bad}, strict=True)
    with pytest.raises(ValidationError, match="extra"):
        model.model_validate({**data, "note": "x"}, strict=True)
    accepted = next(e for e in account.events if e.type_name() == "order.accepted.v1")
    with pytest.raises(ValidationError):
        EVENT_DATA_MODELS["order.accepted.v1"].model_validate(
            {**accepted.to_data(), "phase_id": "2"}, strict=True
        )


def test_a_flatten_with_the_longest_ids_and_reason_writes_valid_events() -> None:
    """A 120-character command id makes a 130-character `flatten-<id>.0` client order id, and
    a 1000-character reason a 1009-character `flatten: <reason>` cancel reason."""
    a = Account(brain=True)
    a.expect(a.activate(), "policy.activated.v1")
    a.advance()
    a.expect(a.snapshot(), TRUTH)
    buy = a.place("b", "0.1", "65000")
    a.expect(buy, ACCEPTED)
    a.expect(a.fill(a.order_id(buy), "f1", "0.05", "65000"), "order.filled.v1")
    command_id = "c" * 120
    a.decide(a.flatten(command_id=command_id, reason="r" * 1000, phase_id=3, intent_id="i-1"))
    assert a.last_types() == [BREAKER, "order.cancel_requested.v1", ACCEPTED]
    closing = a.last[-1].to_data()
    assert closing["client_order_id"] == f"flatten-{command_id}.0"
    assert closing["order_id"] == f"ord-{command_id}.0"
    assert (closing["phase_id"], closing["intent_id"]) == (3, "i-1")
    COMMANDS.validate_python(a.fill(closing["order_id"], "f2", "0.05", "64025"))


@functools.cache
def first_event_data() -> dict[str, dict[str, Any]]:
    """The data of the first event of each type the Brain scenarios write."""
    written: dict[str, dict[str, Any]] = {}
    for scenario in (brain_scenario, venue_scenario, budget_scenario):
        for event in scenario().events:
            written.setdefault(event.type_name(), event.to_data())
    return written


@pytest.mark.parametrize(
    "type_name, change",
    [
        ("breaker.transitioned.v1", {"to_state": "NORMAL", "from_state": "NORMAL"}),
        ("breaker.transitioned.v1", {"trigger": "cosmic_rays"}),
        ("breaker.transitioned.v1", {"to_state": "OFF"}),
        ("truth.snapshot_recorded.v1", {"score": 101}),
        ("truth.snapshot_recorded.v1", {"score": -1}),
        ("truth.snapshot_recorded.v1", {"equity": 100000}),
        ("truth.snapshot_recorded.v1", {"components": []}),
        ("truth.snapshot_recorded.v1", {"missing_order_ids": ["o1"]}),
        ("venue.status_changed.v1", {"to_status": "OK", "from_status": "OK"}),
        ("venue.status_changed.v1", {"to_status": "SLOW"}),
        ("regime.changed.v1", {"to_regime": "PANIC"}),
        ("tail_risk.recorded.v1", {"tail_exponent": "-1.5"}),
        ("tail_risk.recorded.v1", {"sample_size": 0}),
        ("budget.day_rolled.v1", {"to_day": "19676"}),
        ("order.accepted.v1", {"phase_id": 4}),
        ("order.accepted.v1", {"client_order_id": "flatten-" + "c" * 121 + ".0"}),
        ("order.accepted.v1", {"intent_id": "has space"}),
    ],
)
def test_strict_validation_refuses_brain_data_the_core_never_writes(
    type_name: str, change: dict[str, Any]
) -> None:
    written = first_event_data()
    model = EVENT_DATA_MODELS[type_name]
    model.model_validate(written[type_name], strict=True)
    with pytest.raises(ValidationError):
        model.model_validate({**written[type_name], **change}, strict=True)
    with pytest.raises(ValidationError, match="extra"):
        model.model_validate({**written[type_name], "note": "x"}, strict=True)


def test_every_order_id_the_core_derives_can_be_named_on_the_wire() -> None:
    with pytest.raises(ValidationError):
        PlaceOrder.model_validate(Account().place("x", "1", "1") | {"command_id": "c" * 121})
    command_id = "c" * 120
    PlaceOrder.model_validate(Account().place("x", "1", "1") | {"command_id": command_id})
    COMMANDS.validate_python(
        {
            "type": "cancel_order.v1",
            "command_id": "k",
            "account_id": "main",
            "ts_ns": T0,
            "actor": "test",
            "order_id": decider.order_id_for(command_id),
            "reason": "r",
        }
    )


# --- envelope and command record -----------------------------------------------------------------


def sealed_envelope(**changes: Any) -> dict[str, Any]:
    envelope: dict[str, Any] = {
        "event_id": "cmd-0001:0",
        "stream_id": "account-main",
        "version": 1,
        "type": "account.armed.v1",
        "ts_ns": T0,
        "command_id": "cmd-0001",
        "correlation_id": None,
        "causation_id": None,
        "intent_id": None,
        "phase_id": None,
        "actor": "ops",
        "policy_hash": None,
        "data": {"previous_mode": "DISARMED", "reason": "go live"},
        "prev_hash": GENESIS_HASH,
    }
    envelope.update(changes)
    envelope["hash"] = record_hash(envelope)
    return envelope


def test_envelope_accepts_a_sealed_record() -> None:
    envelope = Envelope.model_validate(sealed_envelope(), strict=True)
    EVENT_DATA_MODELS[envelope.type].model_validate(envelope.data, strict=True)
    Envelope.model_validate(
        sealed_envelope(policy_hash="a" * 64, phase_id=3, intent_id="i-1"), strict=True
    )


@pytest.mark.parametrize(
    "changes",
    [
        {"phase_id": 4},
        {"phase_id": "1"},
        {"policy_hash": ""},
        {"prev_hash": "0" * 63},
        {"prev_hash": "A" * 64},
        {"type": "order.accepted"},
        {"stream_id": "orders-main"},
        {"version": 0},
        {"ts_ns": -1},
        {"data": []},
        {"extra": 1},
    ],
)
def test_envelope_refuses_malformed_records(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Envelope.model_validate(sealed_envelope(**changes), strict=True)


def test_envelope_requires_every_field() -> None:
    envelope = sealed_envelope()
    for field in envelope:
        partial = {key: value for key, value in envelope.items() if key != field}
        with pytest.raises(ValidationError):
            Envelope.model_validate(partial, strict=True)


ARM = {
    "type": "arm.v1",
    "command_id": "c1",
    "account_id": "main",
    "ts_ns": T0,
    "actor": "ops",
    "reason": "go",
}


def command_record(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "command": ARM,
        "outcome": "accepted",
        "reason": None,
        "event_ids": ["c1.0"],
        "event_types": ["account.armed.v1"],
    }
    record.update(changes)
    return record


def test_command_record_names_its_reason_only_when_rejected() -> None:
    CommandRecorded.model_validate(command_record(), strict=True)
    rejected = {
        "outcome": "rejected",
        "reason": "MODE_UNCHANGED",
        "event_types": ["command.rejected.v1"],
    }
    CommandRecorded.model_validate(command_record(**rejected), strict=True)
    bad: list[dict[str, Any]] = [
        {"outcome": "rejected"},
        {"reason": "MODE_UNCHANGED"},
        {"outcome": "duplicate"},
        {"event_types": []},
        {"event_types": ["account.armed"]},
        {"event_ids": ["c1 0"]},
    ]
    for changes in bad:
        with pytest.raises(ValidationError):
            CommandRecorded.model_validate(command_record(**changes), strict=True)


def test_the_ledger_writer_produces_valid_envelopes_and_command_records() -> None:
    account = Account()
    wire = account.activate()
    command = COMMANDS.validate_python(wire)
    event = decider.decide(to_domain(command, wire), account.state)[0]
    stream = envelopes.account_stream(command.account_id)
    event_id = envelopes.event_id(command.command_id, 0)
    records = [
        envelopes.envelope(
            command,
            stream_id=stream,
            version=1,
            type_name=event.type_name(),
            ts_ns=event.ts_ns,
            event_id=event_id,
            causation_id=command.command_id,
            policy_hash="",
            data=event.to_data(),
        ),
        envelopes.envelope(
            command,
            stream_id=envelopes.command_stream(command.command_id),
            version=1,
            type_name=envelopes.COMMAND_RECORDED,
            ts_ns=command.ts_ns,
            event_id=f"{command.command_id}.cmd",
            causation_id=None,
            policy_hash="",
            data=envelopes.command_record_data(
                command, "accepted", "", [event_id], [event.type_name()]
            ),
        ),
    ]
    prev_hash = GENESIS_HASH
    for record in records:
        record["prev_hash"] = prev_hash
        record["hash"] = prev_hash = record_hash(record)
        envelope = Envelope.model_validate(json.loads(json.dumps(record)), strict=True)
        assert envelope.policy_hash is None
        EVENT_DATA_MODELS[envelope.type].model_validate(envelope.data, strict=True)


# --- (3) policy documents -------------------------------------------------------------------------


def test_the_default_policy_validates() -> None:
    document = load_default_policy()
    policy = PolicyDocument.model_validate(document, strict=True)
    PolicyDocument.model_validate_json(DEFAULT_POLICY.read_bytes())
    assert policy.model_dump(mode="json") == document


def test_the_default_policy_turns_on_every_part_of_the_brain() -> None:
    risk = policy_from_document(load_default_policy()).risk
    sections = [
        risk.truth,
        risk.breaker,
        risk.venue_quality,
        risk.allocation,
        risk.tail,
        risk.budget,
    ]
    assert all(section is not None for section in sections)
    assert risk.allocation is not None and risk.allocation.initial_equity_money == 100_000 * 10**8


def test_a_policy_without_brain_sections_keeps_its_canonical_form() -> None:
    """A section left out is left out of the canonical JSON too (not written as null), so a
    policy written before the Brain keeps its hash and its ledgers replay unchanged."""
    document = pre_brain_policy()
    policy = PolicyDocument.model_validate(document, strict=True)
    assert policy.model_dump(mode="json") == document
    assert policy_hash(policy) == document_hash(document)
    assert not policy_from_document(document).risk.any()


def test_budget_breaker_levels_default_to_halted_and_defensive() -> None:
    document = load_default_policy()
    del document["budget"]["daily_loss_breaker"]
    del document["budget"]["drawdown_breaker"]
    budget = PolicyDocument.model_validate(document, strict=True).budget
    assert budget is not None
    assert (budget.daily_loss_breaker, budget.drawdown_breaker) == ("HALTED", "DEFENSIVE")


def _policy_with(change: Any) -> dict[str, Any]:
    document = load_default_policy()
    change(document)
    return document


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda d: d["instruments"][0].update(tick_size="0.00001", step_size="0.0001"),
            "more than 8 decimals",
        ),
        (lambda d: d["instruments"].append(dict(d["instruments"][0])), "listed twice"),
        (lambda d: d.update(owner="me"), "Extra inputs are not permitted"),
        (lambda d: d["limits"].update(leverage=3), "Extra inputs are not permitted"),
        (lambda d: d["limits"].pop("max_open_orders"), "Field required"),
        (lambda d: d["limits"].update(max_open_orders="20"), "valid integer"),
        (lambda d: d["limits"].update(max_order_notional=100000), "valid string"),
        (lambda d: d["instruments"][0].update(tick_size="0"), "must be positive"),
        (lambda d: d.update(instruments=[]), "at least 1 item"),
    ],
    ids=[
        "tick-and-step-finer-than-8-decimals",
        "duplicate-instrument",
        "unknown-field",
        "unknown-limit",
        "missing-limit",
        "string-integer",
        "float-money",
        "zero-tick",
        "no-instruments",
    ],
)
def test_bad_policies_are_refused(change: Any, message: str) -> None:
    document = _policy_with(change)
    with pytest.raises(ValidationError, match=message):
        PolicyDocument.model_validate(document)
    with pytest.raises(ValidationError, match=message):
        PolicyDocument.model_validate_json(json.dumps(document))


def _bands_descending(document: dict[str, Any]) -> None:
    document["allocation"]["bands"].reverse()


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda d: d["truth"].update(halt_below=90),
            "halt_below must not exceed truth.defensive_below",
        ),
        (
            lambda d: d["truth"].update(
                weights={k: 0 for k in d["truth"]["weights"]},
            ),
            "weights must not all be zero",
        ),
        (_bands_descending, "bands must ascend by min_equity"),
        (
            lambda d: d["allocation"]["bands"][1].update(min_equity="0"),
            "bands must ascend by min_equity",
        ),
        (lambda d: d["budget"].update(daily_loss_breaker="NORMAL"), "'DEFENSIVE' or 'HALTED'"),
        (lambda d: d["budget"].update(drawdown_breaker="defensive"), "'DEFENSIVE' or 'HALTED'"),
        (lambda d: d["truth"].update(grace_ms=10), "Extra inputs are not permitted"),
        (lambda d: d["breaker"].update(cooldown_ms=10), "Extra inputs are not permitted"),
        (lambda d: d["truth"]["weights"].update(vibes=1), "Extra inputs are not permitted"),
        (
            lambda d: d["allocation"]["regimes"].update(
                BUBBLE={"phases": [], "leverage_factor_bps": 0}
            ),
            "Extra inputs are not permitted",
        ),
        (lambda d: d["allocation"]["regimes"].pop("CRASH"), "Field required"),
        (lambda d: d["truth"].pop("stale_after_ms"), "Field required"),
        (lambda d: d["truth"].update(min_score_for_new_risk=101), "less than or equal to 100"),
        (lambda d: d["breaker"].update(defensive_factor_bps=10001), "less than or equal to 10000"),
        (lambda d: d["breaker"].update(recovery_ms="60000"), "valid integer"),
        (lambda d: d["venue_quality"].update(window=0), "greater than or equal to 1"),
        (
            lambda d: d["venue_quality"].update(degraded_latency_ms=2000),
            "degraded thresholds must not exceed halted ones",
        ),
        (lambda d: d["allocation"]["bands"][0].update(phases=[4]), "less than or equal to 3"),
        (lambda d: d["allocation"].update(bands=[]), "at least 1 item"),
        (lambda d: d["tail_risk"].update(min_tail_exponent=2.2), "valid string"),
        (lambda d: d["budget"].update(daily_loss_limit="-5"), "should match pattern"),
    ],
    ids=[
        "halt-below-over-defensive-below",
        "all-zero-weights",
        "descending-bands",
        "equal-bands",
        "bad-daily-loss-level",
        "bad-drawdown-level",
        "unknown-truth-field",
        "unknown-breaker-field",
        "unknown-weight",
        "unknown-regime",
        "missing-regime",
        "missing-truth-field",
        "score-over-100",
        "factor-over-10000",
        "string-integer",
        "empty-window",
        "degraded-over-halted",
        "phase-4",
        "no-bands",
        "float-exponent",
        "negative-money",
    ],
)
def test_bad_brain_sections_are_refused(change: Any, message: str) -> None:
    document = _policy_with(change)
    with pytest.raises(ValidationError, match=message):
        PolicyDocument.model_validate(document)
    with pytest.raises(ValidationError, match=message):
        PolicyDocument.model_validate_json(json.dumps(document))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["truth"].update(weights={k: 0 for k in d["truth"]["weights"]}), "all be zero"),
        (_bands_descending, "ascend by min_equity"),
        (lambda d: d["budget"].update(daily_loss_breaker="NORMAL"), "DEFENSIVE or HALTED"),
        (lambda d: d["allocation"]["regimes"].pop("CRASH"), "CRASH is missing"),
        (lambda d: d["truth"].pop("stale_after_ms"), "'stale_after_ms' is missing"),
    ],
    ids=["all-zero-weights", "descending-bands", "bad-level", "missing-regime", "missing-field"],
)
def test_the_core_refuses_bad_brain_sections_too(change: Any, message: str) -> None:
    """The core guards itself as well, should a document reach it unvalidated."""
    with pytest.raises(PolicyError, match=message):
        policy_from_document(_policy_with(change))


# --- (4) command models ---------------------------------------------------------------------------


def place_order_wire(**changes: Any) -> dict[str, Any]:
    wire = Account().place("x", "0.1", "65000")
    wire.update(changes)
    return {key: value for key, value in wire.items() if value is not ...}


def test_a_valid_place_order_is_accepted() -> None:
    command = COMMANDS.validate_python(place_order_wire())
    assert isinstance(command, PlaceOrder)
    COMMANDS.validate_json(json.dumps(place_order_wire()))


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"nonce": 1}, "Extra inputs are not permitted"),
        ({"ts_ns": str(T0)}, "valid integer"),
        ({"phase_id": "2"}, "valid integer"),
        ({"ts_ns": float(T0)}, "valid integer"),
        ({"quantity": 0.1}, "valid string"),
        ({"price": ...}, "a LIMIT order needs a price"),
        ({"order_type": "MARKET"}, "a MARKET order takes no price"),
        ({"phase_id": 0}, "greater than or equal to 1"),
        ({"phase_id": 4}, "less than or equal to 3"),
        ({"phase_id": None}, "valid integer"),
        ({"side": "buy"}, "'BUY' or 'SELL'"),
        ({"quantity": "-1"}, "should match pattern"),
        ({"quantity": "1e3"}, "should match pattern"),
        ({"type": "place_order.v2"}, "does not match any of the expected tags"),
        ({"command_id": "has space"}, "should match pattern"),
    ],
)
def test_place_order_refuses_bad_input(changes: dict[str, Any], message: str) -> None:
    wire = place_order_wire(**changes)
    with pytest.raises(ValidationError, match=message):
        COMMANDS.validate_python(wire)
    with pytest.raises(ValidationError, match=message):
        COMMANDS.validate_json(json.dumps(wire))


def test_other_commands_refuse_unknown_fields_and_string_integers() -> None:
    account = Account()
    for wire in [
        account.arm(),
        account.cancel("ord-1"),
        account.fill("ord-1", "f", "1", "1"),
        account.activate(),
    ]:
        COMMANDS.validate_python(wire)
        with pytest.raises(ValidationError, match="Extra inputs"):
            COMMANDS.validate_python({**wire, "unexpected": True})
        with pytest.raises(ValidationError, match="valid integer"):
            COMMANDS.validate_json(json.dumps({**wire, "ts_ns": str(wire["ts_ns"])}))
    flatten = {
        "type": "flatten.v1",
        "command_id": "f",
        "account_id": "main",
        "ts_ns": T0,
        "actor": "ops",
        "policy_hash": account.policy_hash,
        "reason": "panic",
    }
    COMMANDS.validate_python(flatten)
    for phase_id in (0, 4, "1", True):
        with pytest.raises(ValidationError):
            COMMANDS.validate_python({**flatten, "phase_id": phase_id})


# --- (5) bounds of new input, and recorded commands (docs/schemas.md, "Bounds") -----------------

GOLDEN = ROOT / "tests" / "fixtures" / "golden"


def recorded_commands(name: str, scratch: Path) -> dict[str, dict[str, Any]]:
    """command_id -> the command as recorded, from a copy of a golden ledger."""
    from infra.bootstrap import open_ledger

    copy_path = scratch / f"{name}.db"
    copy_path.write_bytes((GOLDEN / f"{name}.db").read_bytes())
    ledger = open_ledger("sqlite:///" + str(copy_path), create=False)
    try:
        return {
            str(record.envelope["command_id"]): record.envelope["data"]["command"]
            for record in ledger.iter_all()
            if record.type == COMMAND_RECORDED
        }
    finally:
        ledger.close()


def golden_names() -> list[str]:
    manifest = json.loads((GOLDEN / "golden.json").read_text(encoding="utf-8"))
    return sorted(manifest["ledgers"])


@pytest.mark.parametrize("name", golden_names())
def test_every_recorded_command_of_every_golden_ledger_re_validates_as_recorded(name: str, tmp_path: Path) -> None:
    from schemas.commands import parse_recorded_command

    commands = recorded_commands(name, tmp_path)
    assert commands
    for command_id, raw in commands.items():
        assert parse_recorded_command(raw).command_id == command_id


def test_the_bounds_refuse_what_the_poisoned_ledger_recorded_and_only_for_new_input(tmp_path: Path) -> None:
    """poisoned-inputs-v0 holds what titan recorded before the bounds: as new input each of those
    commands is refused at the field that broke a bound; re-validated as recorded, it passes."""
    from schemas.commands import parse_recorded_command

    refused: dict[str, list[tuple[str, str]]] = {}
    for command_id, raw in recorded_commands("poisoned-inputs-v0", tmp_path).items():
        parse_recorded_command(raw)
        try:
            COMMANDS.validate_python(raw)
        except ValidationError as error:
            refused[command_id] = [(".".join(str(p) for p in e["loc"][1:]), e["type"]) for e in error.errors()]
    assert refused == {
        "poison-09": [("quantity", "wire_bound")],  # 998 digits after the point
        "poison-10": [("quantity", "wire_bound")],  # 1,000 digits before it
        "poison-16": [("reason", "wire_bound")],  # a NUL
        "poison-17": [("reason", "wire_bound")],  # a tab
        "poison-20": [("fee", "wire_bound")],  # 10^11 USDT
    }
