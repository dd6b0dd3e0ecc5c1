"""Wire contracts: the committed JSON Schemas match the models, every event the core produces
validates against its data model, and the policy and command models refuse bad input."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from domain import commands as dc
from domain import decider, reasons
from domain.events import EVENT_TYPES, Event, OrderRejected
from domain.policy import policy_from_document
from schemas.canonical import GENESIS_HASH, document_hash, record_hash
from schemas.commands import COMMANDS, PlaceOrder
from schemas.events import COMMAND_RECORDED, EVENT_DATA_MODELS, CommandRecorded, Envelope
from schemas.events import OrderRejected as RejectedData
from schemas.jsonschema import JSON_DIRECTORY, generate, render
from schemas.policy import PolicyDocument

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_POLICY = ROOT / "infra" / "policies" / "default.json"
REGENERATE = "python -m schemas.jsonschema"

T0 = 1_700_000_000_000_000_000
SECOND = 1_000_000_000
MS = 1_000_000


def load_default_policy() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DEFAULT_POLICY.read_text(encoding="utf-8"))
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


class Account:
    """Drives the core through wire-valid commands: each command is first validated by the
    `schemas` models, then handed to the decider; every event is validated and evolved."""

    def __init__(self, account_id: str = "main") -> None:
        self.account_id = account_id
        self.state = decider.initial_state(account_id)
        self.now = T0
        self.counter = 0
        self.events: list[Event] = []
        self.policy_document = load_default_policy()
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

    def decide(self, wire: dict[str, Any]) -> Event:
        command = COMMANDS.validate_python(wire)
        domain_command = to_domain(command, wire)
        produced = decider.decide(domain_command, self.state)
        assert len(produced) == 1
        for event in produced:
            data = event.to_data()
            model = EVENT_DATA_MODELS[event.type_name()]
            model.model_validate(data, strict=True)
            # and as it is stored: canonical JSON read back
            model.model_validate_json(json.dumps(data), strict=True)
            self.state = decider.evolve(self.state, event)
            self.events.append(event)
        return produced[0]

    def expect(self, wire: dict[str, Any], type_name: str, reason: str | None = None) -> Event:
        event = self.decide(wire)
        data = event.to_data()
        assert event.type_name() == type_name, data
        if reason is not None:
            assert data["reason"] == reason, data
        return event

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
    ) -> dict[str, Any]:
        wire = self._common("place_order.v1", ts_ns)
        wire.update(
            policy_hash=self.policy_hash if policy_hash is None else policy_hash,
            phase_id=2,
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


SCENARIOS = [lifecycle_scenario, exposure_scenario, rate_scenario]


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
    event = account.decide(account.place("m", "0.0005", None, "65000"))
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
    envelopes = pytest.importorskip("commands.envelope")
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
