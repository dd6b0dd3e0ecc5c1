"""The execution contract's payloads (schemas/execution.py): what they accept and refuse, their
canonical wire form, the committed JSON Schemas, and the subjects and ids of adapters/nats."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from adapters.nats import subjects
from schemas.canonical import canonical_bytes
from schemas.execution import CANCEL_SCHEMA, PLACE_SCHEMA, ExecCancel, ExecPlace, parse_exec
from schemas.jsonschema import JSON_DIRECTORY, generate, render

HASH = "ab" * 32


def place(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "schema": PLACE_SCHEMA,
        "account_id": "main",
        "order_id": "ord-c1",
        "client_order_id": "a1",
        "venue": "paper",
        "symbol": "BTCUSDT",
        "side": "BUY",
        "order_type": "LIMIT",
        "quantity": "0.010",
        "price": "65000.0",
        "reference_price": "65000.0",
        "reduce_only": False,
        "policy_hash": HASH,
        "command_id": "c1",
        "intent_id": "i1",
        "phase_id": 1,
        "position": 6,
        "ts_ns": 1_767_225_600_000_000_000,
    }
    document.update(changes)
    return document


def cancel(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "schema": CANCEL_SCHEMA,
        "account_id": "main",
        "order_id": "ord-c1",
        "venue": "paper",
        "reason": "flatten: operator",
        "policy_hash": HASH,
        "command_id": "k1",
        "position": 9,
        "ts_ns": 1_767_225_600_000_000_000,
    }
    document.update(changes)
    return document


def test_a_place_round_trips_through_its_canonical_payload() -> None:
    message = ExecPlace.model_validate(place())
    assert message.wire() == place()
    assert message.payload() == canonical_bytes(place())
    assert parse_exec("place", message.payload()) == message


def test_a_market_order_has_no_price_and_a_limit_order_needs_one() -> None:
    assert ExecPlace.model_validate(place(order_type="MARKET", price=None)).price is None
    with pytest.raises(ValidationError, match="MARKET order has no price"):
        ExecPlace.model_validate(place(order_type="MARKET"))
    with pytest.raises(ValidationError, match="LIMIT order needs a price"):
        ExecPlace.model_validate(place(price=None))


def test_a_flattens_closing_order_has_phase_0_and_no_intent() -> None:
    closing = place(order_id="ord-fl1.0", client_order_id="flatten-fl1.0", phase_id=0, intent_id="", reduce_only=True)
    assert ExecPlace.model_validate(closing).reduce_only


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("schema", "titan.exec.place.v2"),
        ("order_id", "c1"),  # not an order id
        ("policy_hash", "not-a-hash"),
        ("quantity", 0.01),  # a float, never
        ("position", 0),
        ("phase_id", 4),
        ("side", "buy"),
        ("extra", 1),
    ],
)
def test_a_place_refuses_what_is_not_the_contract(field: str, value: Any) -> None:
    with pytest.raises(ValidationError):
        ExecPlace.model_validate(place(**{field: value}))


def test_a_cancel_round_trips_and_refuses_a_missing_field() -> None:
    message = ExecCancel.model_validate(cancel())
    assert parse_exec("cancel", message.payload()) == message and message.wire() == cancel()
    document = cancel()
    del document["venue"]
    with pytest.raises(ValidationError):
        ExecCancel.model_validate(document)
    with pytest.raises(ValidationError):
        parse_exec("cancel", canonical_bytes(place()))
    with pytest.raises(ValueError, match="place or cancel"):
        parse_exec("amend", b"{}")


def test_the_committed_json_schemas_are_the_models() -> None:
    schemas = generate()
    for name in ("execution/place.v1.json", "execution/cancel.v1.json"):
        committed = (Path(JSON_DIRECTORY) / name).read_text(encoding="utf-8")
        assert committed == render(schemas[name]), f"run `python -m schemas.jsonschema` ({name})"
    place_schema = json.loads((Path(JSON_DIRECTORY) / "execution/place.v1.json").read_text(encoding="utf-8"))
    assert set(place_schema["required"]) == set(place()) - {"schema"}
    assert place_schema["properties"]["schema"]["const"] == PLACE_SCHEMA


def test_subjects_and_ids_of_the_contract() -> None:
    assert subjects.exec_subject("paper", "place") == "titan.exec.paper.place"
    assert subjects.exec_subject("bin.ance", "cancel") == "titan.exec.bin%2Eance.cancel"
    assert subjects.exec_filter("paper") == "titan.exec.paper.>"
    assert subjects.cancel_msg_id("ord-c1") == "cancel.ord-c1"
    with pytest.raises(ValueError):
        subjects.exec_subject("paper", "amend")
