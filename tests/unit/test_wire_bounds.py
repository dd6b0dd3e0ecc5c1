"""Every bound of new input (docs/schemas.md, "Bounds"): accepted at its limit, refused one past it
with an error naming the field and the bound and never the value, stated in the JSON Schema, and
not applied when a recorded command is re-validated. Then the line: size, UTF-8, nesting, 64-bit
integers, objects, `type`, and bounded echoes."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from schemas import base, events, intake
from schemas.commands import COMMANDS, parse_recorded_command
from schemas.jsonschema import generate
from schemas.policy import PolicyDocument

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_POLICY: dict[str, Any] = json.loads((ROOT / "infra" / "policies" / "default.json").read_text(encoding="utf-8"))
T0 = 1_767_225_600_000_000_000
HASH = "e" * 64
MAX_MS = 366 * 24 * 3600 * 1000


def common(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "command_id": "c1", "account_id": "main", "ts_ns": T0, "actor": "t", **fields}


def place(**fields: Any) -> dict[str, Any]:
    order = {
        "policy_hash": HASH, "phase_id": 1, "intent_id": "i", "client_order_id": "o", "venue": "paper",
        "symbol": "BTCUSDT", "side": "BUY", "quantity": "1", "price": "1", "reference_price": "1",
    }
    return common("place_order.v1", **{**order, **fields})


def fill(**fields: Any) -> dict[str, Any]:
    return common("record_fill.v1", **{"order_id": "ord-c0", "fill_id": "f", "quantity": "1", "price": "1", **fields})


def snapshot(**fields: Any) -> dict[str, Any]:
    shot = {"venue": "paper", "positions": [], "open_order_ids": [], "equity": "1", "venue_ts_ns": T0, "latency_ms": 1}
    return common("record_truth_snapshot.v1", **{**shot, **fields})


def halt(reason: str) -> dict[str, Any]:
    return common("halt.v1", reason=reason)


def tail(sample_size: int) -> dict[str, Any]:
    return common("record_tail_risk.v1", symbol="BTCUSDT", tail_exponent="2.5", sample_size=sample_size, method="hill")


def policy(path: str, value: Any) -> dict[str, Any]:
    """The default policy with one field (dotted path, list indexes as numbers) replaced."""
    document = copy.deepcopy(DEFAULT_POLICY)
    *parents, last = path.split(".")
    target: Any = document
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    target[int(last) if isinstance(target, list) else last] = value
    return document


def instruments(count: int) -> list[dict[str, str]]:
    return [
        {"venue": "paper", "symbol": f"S{n}", "tick_size": "0.1", "step_size": "0.001", "max_order_qty": "2", "max_position_notional": "1000"}
        for n in range(count)
    ]


def bands(count: int) -> list[dict[str, Any]]:
    return [{"min_equity": str(n * 1000), "phases": [1], "max_leverage": "2"} for n in range(count)]


def activate(document: dict[str, Any]) -> dict[str, Any]:
    return common("activate_policy.v1", policy=document)


DIGITS_10_18 = "9999999999." + "9" * 18

# (name, build(value) -> command, value at the limit, value one past it, the field's loc, the bound's words)
COMMAND_BOUNDS: list[tuple[str, Callable[[Any], dict[str, Any]], Any, Any, str, str]] = [
    ("quantity: 10 digits before the point", lambda v: place(quantity=v, price="0.00000001", reference_price="0.00000001"),
     "9999999999", "10000000000", "quantity", "at most 10 digits before the point"),
    ("quantity: 18 digits after the point", lambda v: place(quantity=v), "0." + "1" * 18, "0." + "1" * 19,
     "quantity", "at most 18 digits after the point"),
    ("price: 10 + 18 digits", lambda v: place(price=v, quantity="0.000000001"), DIGITS_10_18, "1" + DIGITS_10_18,
     "price", "at most 10 digits before the point"),
    ("fee, signed", lambda v: fill(fee=v), "-" + DIGITS_10_18, "-1" + DIGITS_10_18, "fee", "at most 10 digits before the point"),
    ("equity, signed", lambda v: snapshot(equity=v), "-" + DIGITS_10_18, "-" + DIGITS_10_18 + "9", "equity",
     "at most 18 digits after the point"),
    ("position quantity", lambda v: snapshot(positions=[{"symbol": "BTCUSDT", "quantity": v}]), "-9999999999", "-99999999999",
     "positions.0.quantity", "at most 10 digits before the point"),
    ("tail exponent", lambda v: tail(1) | {"tail_exponent": v}, "9999999999", "99999999999", "tail_exponent", "at most 10 digits"),
    ("quantity × price", lambda v: place(quantity="2", price=v, reference_price="1"), "4999999999.99999999", "5000000000",
     "place_order.v1", "quantity × price must be below 10^10"),
    ("quantity × reference_price", lambda v: place(quantity="2", reference_price=v), "4999999999.99999999", "5000000000",
     "place_order.v1", "quantity × reference_price must be below 10^10"),
    ("quantity × reference_price, MARKET", lambda v: place(order_type="MARKET", price=None, quantity="2", reference_price=v),
     "4999999999.99999999", "5000000000", "place_order.v1", "quantity × reference_price must be below 10^10"),
    ("fill quantity × price", lambda v: fill(quantity="1000", price=v), "9999999.999999999999999999", "10000000",
     "record_fill.v1", "quantity × price must be below 10^10"),
    ("latency_ms", lambda v: snapshot(latency_ms=v), MAX_MS, MAX_MS + 1, "latency_ms", f"at most {MAX_MS} (366 days)"),
    ("sample_size", tail, 10**9, 10**9 + 1, "sample_size", "at most 1000000000"),
    ("positions", lambda n: snapshot(positions=[{"symbol": f"S{i}", "quantity": "1"} for i in range(n)]), 1000, 1001,
     "positions", "at most 1000 items (got 1001)"),
    ("open_order_ids", lambda n: snapshot(open_order_ids=[f"ord-{i}" for i in range(n)]), 5000, 5001,
     "open_order_ids", "at most 5000 items (got 5001)"),
    ("reason: NUL", halt, "ok é € \u00a0 \u200b 😀", "a\x00b", "reason", "found U+0000 at character 1"),
    ("reason: tab", halt, "a b", "a\tb", "reason", "found U+0009"),
    ("reason: newline", halt, "a b", "a\nb", "reason", "found U+000A"),
    ("reason: last C0", halt, "a b", "a\x1fb", "reason", "found U+001F"),
    ("reason: DEL", halt, "a~b", "a\x7fb", "reason", "found U+007F"),
    ("reason: first C1", halt, "a\u00a0b", "a\x80b", "reason", "found U+0080"),
    ("reason: last C1", halt, "a\u00a0b", "a\x9fb", "reason", "found U+009F"),
    ("reason: venue's", lambda v: common("record_cancelled.v1", order_id="ord-c0", venue_reason=v), "x" * 1000, "x\x00",
     "venue_reason", "no control characters"),
    ("policy_hash text", lambda v: place(policy_hash=v), "z" * 128, "z\x00", "policy_hash", "no control characters"),
    ("max_open_orders", lambda v: activate(policy("limits.max_open_orders", v)), 5000, 5001,
     "policy.limits.max_open_orders", "at most 5000"),
    ("price_collar_bps", lambda v: activate(policy("limits.price_collar_bps", v)), 1_000_000, 1_000_001,
     "policy.limits.price_collar_bps", "at most 1000000"),
    ("truth weight", lambda v: activate(policy("truth.weights.latency", v)), 1_000_000, 1_000_001,
     "policy.truth.weights.latency", "at most 1000000"),
    ("recovery_ms", lambda v: activate(policy("breaker.recovery_ms", v)), MAX_MS, MAX_MS + 1, "policy.breaker.recovery_ms",
     "(366 days)"),
    ("window_ms", lambda v: activate(policy("venue_quality.window_ms", v)), MAX_MS, MAX_MS + 1,
     "policy.venue_quality.window_ms", "(366 days)"),
    ("stale_after_ms", lambda v: activate(policy("truth.stale_after_ms", v)), MAX_MS, MAX_MS + 1,
     "policy.truth.stale_after_ms", "(366 days)"),
    ("instruments", lambda n: activate(policy("instruments", instruments(n))), 1000, 1001, "policy.instruments",
     "at most 1000 items (got 1001)"),
    ("bands", lambda n: activate(policy("allocation.bands", bands(n))), 100, 101, "policy.allocation.bands",
     "at most 100 items (got 101)"),
    ("policy decimal", lambda v: activate(policy("limits.max_order_notional", v)), "9999999999", "10000000000",
     "policy.limits.max_order_notional", "at most 10 digits before the point"),
    ("description", lambda v: activate(policy("description", v)), "é" * 1000, "line one\nline two", "policy.description",
     "found U+000A"),
]


def _refusal(error: ValidationError, loc: str) -> Any:
    matching = [e for e in error.errors() if ".".join(str(p) for p in e["loc"][1:]) == loc or ".".join(map(str, e["loc"])) == loc]
    assert matching, f"no error at {loc}: {error.errors()}"
    return matching[0]


@pytest.mark.parametrize("name, build, at_limit, past_limit, loc, words", COMMAND_BOUNDS, ids=[c[0] for c in COMMAND_BOUNDS])
def test_a_command_bound_holds_at_its_limit_and_refuses_one_past_it(
    name: str, build: Callable[[Any], dict[str, Any]], at_limit: Any, past_limit: Any, loc: str, words: str
) -> None:
    COMMANDS.validate_python(build(at_limit))
    refused = build(past_limit)
    with pytest.raises(ValidationError) as caught:
        COMMANDS.validate_python(refused)
    error = _refusal(caught.value, loc)
    assert words in error["msg"]
    assert error["type"] in ("wire_bound", "string_too_long")
    if isinstance(past_limit, str) and len(past_limit) > 8:
        assert past_limit not in error["msg"], "the error repeats the value"
    # a command an earlier titan recorded with this value re-validates, its values unchanged
    dumped = parse_recorded_command(refused).model_dump(mode="json")
    assert {key: dumped[key] for key in refused} == refused
    assert COMMANDS.validate_python(refused, context=base.recorded_context()).model_dump(mode="json") == dumped


def test_a_lone_surrogate_is_never_a_string_new_or_recorded() -> None:
    for validate in (COMMANDS.validate_python, parse_recorded_command):
        with pytest.raises(ValidationError, match="valid string"):
            validate(halt("a\ud800b"))


def test_the_notional_bound_is_exact_at_ten_billion() -> None:
    COMMANDS.validate_python(place(quantity="0.000000001", price="9999999999.999999999999999999"))
    COMMANDS.validate_python(fill(quantity="99999.99999", price="100000"))  # 9,999,999,999
    with pytest.raises(ValidationError, match="quantity × price"):
        COMMANDS.validate_python(fill(quantity="100000.0", price="100000.0"))  # exactly 10^10


def test_the_integer_bounds_of_the_wire_fit_64_bits() -> None:
    COMMANDS.validate_python(snapshot(venue_ts_ns=2**63 - 1, ts_ns=2**63 - 1))
    with pytest.raises(ValidationError, match="less than or equal to 9223372036854775807"):
        COMMANDS.validate_python(snapshot(venue_ts_ns=2**63))


@pytest.mark.parametrize(
    "value, refused",
    [
        ("92233720368.54775807", None),
        ("-92233720368.54775807", None),
        ("92233720368.54775808", "at most 92233720368.54775807 in magnitude"),
        ("99999999999", "at most 92233720368.54775807 in magnitude"),
        ("999999999999", "at most 11 digits before the point"),
        ("1.123456789", "at most 8 digits after the point"),
    ],
)
def test_a_total_the_core_writes_fits_a_signed_64_bit_count_of_1e8(value: str, refused: str | None) -> None:
    position = {"quantity": "1", "avg_price": "1", "cost": value, "realized_pnl": "0", "fees": "0"}
    if refused is None:
        events.PositionState.model_validate(position)
        return
    with pytest.raises(ValidationError, match=refused):
        events.PositionState.model_validate(position)


@pytest.mark.parametrize("value, ok", [(2**63 - 1, True), (-(2**63), True), (2**63, False), (-(2**63) - 1, False)])
def test_a_signed_event_integer_fits_64_bits(value: int, ok: bool) -> None:
    change = {"venue": "paper", "from_status": "OK", "to_status": "DEGRADED", "mean_slippage_bps": value, "mean_ack_latency_ms": 0, "samples": 1}
    if ok:
        events.VenueStatusChanged.model_validate(change)
    else:
        with pytest.raises(ValidationError, match="signed 64-bit"):
            events.VenueStatusChanged.model_validate(change)


# --- the JSON Schemas state the bounds -----------------------------------------------------------


def test_the_json_schemas_state_each_bound() -> None:
    schemas = generate()
    fill_schema = schemas["commands/record_fill.v1.json"]
    assert fill_schema["properties"]["fee"]["pattern"] == "^-?[0-9]{1,10}(\\.[0-9]{1,18})?$"
    assert fill_schema["properties"]["quantity"]["pattern"] == "^[0-9]{1,10}(\\.[0-9]{1,18})?$"
    assert "below 10^10" in fill_schema["description"]
    snap = schemas["commands/record_truth_snapshot.v1.json"]["properties"]
    assert snap["latency_ms"]["maximum"] == MAX_MS
    assert snap["positions"]["maxItems"] == 1000 and snap["open_order_ids"]["maxItems"] == 5000
    halt_reason = schemas["commands/halt.v1.json"]["properties"]["reason"]
    assert halt_reason["pattern"] == "^[^\\u0000-\\u001f\\u007f-\\u009f]*$" and halt_reason["maxLength"] == 1000
    assert schemas["commands/record_tail_risk.v1.json"]["properties"]["sample_size"]["maximum"] == 10**9
    policy_schema = schemas["policy.v1.json"]
    assert policy_schema["properties"]["instruments"]["maxItems"] == 1000
    assert policy_schema["$defs"]["Limits"]["properties"]["max_open_orders"]["maximum"] == 5000
    assert policy_schema["$defs"]["Limits"]["properties"]["price_collar_bps"]["maximum"] == 1_000_000
    assert policy_schema["$defs"]["BreakerSection"]["properties"]["recovery_ms"]["maximum"] == MAX_MS
    assert policy_schema["$defs"]["AllocationSection"]["properties"]["bands"]["maxItems"] == 100


def _unbounded(node: Any, defs: dict[str, Any], path: str, seen: set[str]) -> list[str]:
    """Leaves of a JSON Schema with no upper bound (string length, integer range, list size)."""
    if not isinstance(node, dict):
        return []
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[1]
        return [] if name in seen else _unbounded(defs[name], defs, path, seen | {name})
    found: list[str] = []
    for key in ("anyOf", "oneOf", "allOf"):
        for option in node.get(key, []):
            found += _unbounded(option, defs, path, seen)
    kind = node.get("type")
    if kind == "object":
        for name, child in node.get("properties", {}).items():
            found += _unbounded(child, defs, f"{path}.{name}", seen)
    elif kind == "array":
        if "maxItems" not in node:
            found.append(path)
        found += _unbounded(node.get("items"), defs, path + "[]", seen)
    elif kind == "string":
        bounded_pattern = "pattern" in node and "+" not in node["pattern"] and "*" not in node["pattern"]
        if not ("maxLength" in node or "enum" in node or "const" in node or bounded_pattern):
            found.append(path)
    elif kind == "integer" and "maximum" not in node:
        found.append(path)
    return found


def test_every_field_of_every_command_and_of_the_policy_is_bounded() -> None:
    for name, schema in generate().items():
        if name.startswith("commands/") or name == "policy.v1.json":
            assert _unbounded(schema, schema.get("$defs", {}), name, set()) == [], name


# --- the line (schemas/intake.py) ----------------------------------------------------------------


def line(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def refusal(raw: bytes) -> intake.WireInputError:
    with pytest.raises(intake.WireInputError) as caught:
        intake.parse_new_command(raw)
    return caught.value


def test_a_line_of_one_mebibyte_is_read_and_one_byte_more_is_refused() -> None:
    command = halt("x")
    padding = intake.MAX_LINE_BYTES - len(line(command)) - len(b',"causation_id":""') - 1
    at_limit = line(command)[:-1] + b"," + b" " * padding + b'"causation_id":"c"}'
    assert len(at_limit) == intake.MAX_LINE_BYTES
    assert intake.parse_new_command(at_limit).causation_id == "c"
    error = refusal(at_limit + b" ")
    assert error.errors == [{"field": "(line)", "error": "at most 1048576 bytes (1 MiB) accepted; got 1048577"}]


def nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def test_nesting_is_read_to_64_levels_and_refused_past_them_naming_the_field() -> None:
    assert intake.json_bound_problems(nested(64)) == []
    assert refusal(line({**halt("x"), "extra": nested(63)})).errors[0]["error"] != "nested deeper than 64 levels"
    error = refusal(line({**halt("x"), "extra": nested(64)}))
    assert error.errors[0]["field"].startswith("extra.0.0") and error.errors[0]["error"] == "nested deeper than 64 levels"
    assert error.command_id == "c1"
    deep = refusal(b'{"type":"halt.v1","x":' + b"[" * 1000 + b"]" * 1000 + b"}")  # beyond Python's recursion limit
    assert deep.errors[0]["field"].startswith("x.0.0") and deep.errors[0]["error"] == "nested deeper than 64 levels"
    deeper = refusal(b'{"type":"halt.v1","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}")  # beyond orjson's
    assert deeper.errors == [{"field": "(line)", "error": "nested deeper than 64 levels"}]


@pytest.mark.parametrize(
    "number",
    ["9223372036854775808", "18446744073709551616", "-9223372036854775809", "9" * 5000, "-" + "9" * 5000, "1.5", "1e3", "1e400"],
    ids=["2^63", "2^64", "-2^63-1", "5000 digits", "-5000 digits", "fraction", "exponent", "1e400"],
)
def test_a_number_that_is_not_a_64_bit_integer_is_refused_naming_its_field(number: str) -> None:
    raw = line(snapshot(latency_ms=0)).replace(b'"latency_ms":0', b'"latency_ms":' + number.encode())
    error = refusal(raw)
    assert error.errors == [{"field": "latency_ms", "error": "numbers are integers within -2^63 .. 2^63-1 (decimals are written as strings)"}]
    assert error.command_id == "c1"


@pytest.mark.parametrize("value", [2**63 - 1, -(2**63)])
def test_the_extreme_64_bit_integers_pass_the_line(value: int) -> None:
    assert intake.json_bound_problems({"a": [value]}) == []


def test_invalid_utf8_and_non_objects_are_refused() -> None:
    bad = b'{"type":"halt.v1","reason":"\xff"}'
    assert refusal(bad).errors == [{"field": "(line)", "error": f"not valid UTF-8 (byte {bad.index(0xFF)})"}]
    for raw, kind in [(b"[1]", "an array"), (b'"halt"', "a string"), (b"12", "a number"), (b"null", "null"), (b"true", "a boolean")]:
        assert refusal(raw).errors == [{"field": "(line)", "error": f"a command is a JSON object; got {kind}"}]
    assert refusal(b"{not json").errors[0]["error"].startswith("not valid JSON: ")
    assert refusal(b'{"reason":"\\ud800"}').errors[0]["error"].startswith("not valid JSON: ")
    assert refusal(b'{"a":NaN}').errors[0]["error"].startswith("not valid JSON: ")


def test_a_missing_or_unknown_type_names_type_and_lists_the_accepted_ones() -> None:
    missing = refusal(line({"command_id": "c9", "account_id": "main"}))
    assert missing.command_id == "c9"
    assert missing.errors == [{"field": "type", "error": "missing; accepted: " + ", ".join(intake.ACCEPTED_TYPES)}]
    assert "place_order.v1" in missing.errors[0]["error"] and "disarm.v1" in missing.errors[0]["error"]
    for kind in ["fly_to_moon.v1" * 10_000, 5, None, ["halt.v1"]]:
        unknown = refusal(line({**halt("x"), "type": kind}))
        assert unknown.errors == [{"field": "type", "error": "unknown command type; accepted: " + ", ".join(intake.ACCEPTED_TYPES)}]


def test_a_huge_command_id_or_field_name_is_echoed_as_a_bounded_prefix() -> None:
    command_id = "é" * 500_000  # 1,000,000 bytes
    error = refusal(line({**halt("x"), "command_id": command_id}))
    assert error.command_id == "é" * 128 + "…(1000000 bytes)"
    assert error.errors[0]["field"] == "halt.v1.command_id" and "é" not in error.errors[0]["error"]
    name = "k" * 100_000
    extra = refusal(line({**halt("x"), name: 1}))
    assert extra.errors[0]["field"] == "halt.v1." + "k" * 64 + "…(100000 bytes)"
    assert len(json.dumps(extra.errors)) < 1000


def test_an_error_never_repeats_the_value_and_at_most_twenty_are_listed() -> None:
    secret = "Z" * 5000
    error = refusal(line(halt(secret)))
    assert error.errors == [{"field": "halt.v1.reason", "error": "String should have at most 1000 characters"}]
    many = refusal(line(snapshot(open_order_ids=["bad id"] * 100)))
    assert len(many.errors) == 21 and many.errors[-1] == {"field": "(line)", "error": "and 80 more errors"}


def test_a_policy_document_goes_through_the_same_line_bounds() -> None:
    document = line(DEFAULT_POLICY)
    assert isinstance(intake.parse_new_policy(document), PolicyDocument)
    with pytest.raises(intake.WireInputError, match=r"limits.max_open_orders: numbers are integers"):
        intake.parse_new_policy(line(policy("limits.max_open_orders", 2**64)))
    with pytest.raises(intake.WireInputError, match=r"\(document\): a policy is a JSON object; got an array"):
        intake.parse_new_policy(b"[]")
    with pytest.raises(intake.WireInputError, match=r"^description: no control characters"):
        intake.parse_new_policy(line(policy("description", "\x00")))


def test_models_constructed_in_code_apply_the_bounds_too() -> None:
    from schemas.commands import Halt

    with pytest.raises(ValidationError, match="no control characters"):
        Halt(command_id="h", account_id="main", ts_ns=T0, actor="op", reason="a\x00")
