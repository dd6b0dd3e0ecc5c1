"""The DLQ without a server: `titan.dlq.v1` entries, `purge_dlq.v1` through the bus (both cores),
the purge read model, and advisories (docs/dlq.md)."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
from pydantic import ValidationError

from adapters.nats import dlq
from adapters.sqlite.ledger import SQLiteLedger
from commands.views import state_view
from infra.bootstrap import bootstrap
from infra.settings import Settings
from infra.submit import ensure_initialized
from projections import dlq as dlq_view
from projections import registry
from projections.model import Patch, Put
from schemas import commands as wire
from schemas.dlq import DlqEntry, parse_entry
from schemas.events import EVENT_DATA_MODELS
from schemas.intake import WireInputError, parse_new_command
from schemas.jsonschema import JSON_DIRECTORY, generate, render
from tests.projections_support import fold_rows

ACCOUNT = "main"
T0 = 1_767_225_600_000_000_000
SUBJECT = "titan.cmd.main.place_order.v1"


def an_entry(**overrides: Any) -> DlqEntry:
    fields: dict[str, Any] = {
        "subject": SUBJECT,
        "headers": {"Nats-Msg-Id": "m1"},
        "data": b'{"type":"place_order.v1","command_id":"c1"}',
        "stream_seq": 7,
        "reason": "SCHEMA_INVALID",
        "error": "quantity: missing",
        "delivery_count": 1,
        "first_seen_ns": T0,
        "last_seen_ns": T0 + 5,
    }
    fields.update(overrides)
    return dlq.entry_for(**fields)


# Entries ---------------------------------------------------------------------------------------


def test_an_entry_keeps_the_message_and_reads_its_account_and_command_id() -> None:
    entry = an_entry()
    digest = hashlib.sha256(SUBJECT.encode() + b"\n" + b'{"type":"place_order.v1","command_id":"c1"}').hexdigest()
    assert entry.entry_id == f"cmd-7-{digest[:16]}"
    assert (entry.account_id, entry.command_id, entry.payload_encoding) == ("main", "c1", "utf-8")
    assert entry.headers == {"Nats-Msg-Id": "m1"}
    assert dlq.dlq_subject(entry) == "titan.dlq.main.SCHEMA_INVALID"
    wire_form = json.loads(entry.to_json_bytes())
    assert wire_form["schema"] == "titan.dlq.v1"
    assert parse_entry(entry.to_json_bytes()) == entry


def test_the_entry_id_is_the_same_whoever_computes_it_and_differs_by_sequence() -> None:
    assert an_entry().entry_id == an_entry(reason="MAX_DELIVER", delivery_count=5).entry_id
    assert an_entry().entry_id != an_entry(stream_seq=8).entry_id


def test_binary_payloads_are_base64_and_unknown_accounts_go_under_underscore() -> None:
    entry = an_entry(subject="titan.cmd", data=b"\xff\x00binary")
    assert entry.payload_encoding == "base64"
    assert base64.b64decode(entry.payload) == b"\xff\x00binary"
    assert entry.payload_bytes() == b"\xff\x00binary"
    assert (entry.account_id, entry.command_id) == (None, None)
    assert dlq.dlq_subject(entry) == "titan.dlq._.SCHEMA_INVALID"


def test_an_account_with_a_dot_is_a_token_in_the_dlq_subject() -> None:
    entry = an_entry(subject="titan.cmd.a%2Eb.halt.v1")
    assert entry.account_id == "a.b"
    assert dlq.dlq_subject(entry) == "titan.dlq.a%2Eb.SCHEMA_INVALID"


def test_control_characters_in_the_error_are_escaped_and_the_error_is_bounded() -> None:
    entry = an_entry(error="bad\nline\x1b[31m" + "x" * 2000)
    assert entry.error is not None
    assert entry.error.startswith("bad\\nline\\x1b[31m")
    assert len(entry.error) == 1000


def test_a_payload_too_large_for_the_dlq_is_kept_cut_and_cannot_be_replayed() -> None:
    entry = an_entry(data=b'"' * 1_000_000)
    assert entry.payload_truncated
    assert len(entry.to_json_bytes()) <= dlq.MAX_ENTRY_BYTES
    assert entry.error is not None and "cut to its first" in entry.error
    with pytest.raises(ValueError, match="cannot be replayed"):
        dlq.replay_payload(entry)
    assert dlq.replay_payload(an_entry()) == b'{"type":"place_order.v1","command_id":"c1"}'


@pytest.mark.parametrize(
    "field, value",
    [("reason", "lower"), ("reason", "A" * 65), ("entry_id", "cmd-1-XYZ"), ("payload_encoding", "latin-1"), ("schema", "titan.dlq.v2")],
)
def test_entries_outside_the_schema_are_refused(field: str, value: str) -> None:
    raw = json.loads(an_entry().to_json_bytes())
    raw[field] = value
    with pytest.raises(ValidationError):
        parse_entry(json.dumps(raw).encode())


def test_the_dlq_schema_is_committed() -> None:
    assert (JSON_DIRECTORY / "dlq.v1.json").read_text(encoding="utf-8") == render(generate()["dlq.v1.json"])


# Advisories ------------------------------------------------------------------------------------


def test_advisories_are_told_apart_by_subject() -> None:
    body = json.dumps({"stream": "TITAN_CMD", "consumer": "titan-intake", "stream_seq": 12, "deliveries": 5}).encode()
    max_deliver = dlq.read_advisory("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.TITAN_CMD.titan-intake", body)
    terminated = dlq.read_advisory("$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.TITAN_CMD.titan-intake", body)
    assert (max_deliver.reason, max_deliver.stream_seq, max_deliver.deliveries) == ("MAX_DELIVER", 12, 5)
    assert "5 deliveries" in max_deliver.error
    assert terminated.reason == "TERMINATED"
    for subject, data in [("$JS.EVENT.ADVISORY.STREAM.CREATED.X", body), (
        "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.TITAN_CMD.c", b"{}"
    ), ("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.TITAN_CMD.c", b"not json")]:
        with pytest.raises(ValueError):
            dlq.read_advisory(subject, data)


# purge_dlq.v1 ----------------------------------------------------------------------------------


def purge(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "type": "purge_dlq.v1",
        "command_id": "p1",
        "account_id": ACCOUNT,
        "ts_ns": T0,
        "actor": "operator:bob",
        "entry_ids": ["cmd-7-0123456789abcdef", "cmd-8-0123456789abcdef"],
        "reason": "triaged: a test message",
    }
    fields.update(overrides)
    return fields


@pytest.mark.parametrize(
    "entry_ids, problem",
    [
        ([], "at least 1 item"),
        ([f"cmd-{n}-0123456789abcdef" for n in range(101)], "at most 100 items"),
        (["cmd-7-0123456789abcdef", "cmd-7-0123456789abcdef"], "each entry id at most once"),
        (["no spaces allowed"], "pattern"),
    ],
)
def test_a_purge_names_1_to_100_distinct_entry_ids(entry_ids: list[str], problem: str) -> None:
    with pytest.raises(WireInputError) as refused:
        parse_new_command(json.dumps(purge(entry_ids=entry_ids)).encode())
    assert problem in str(refused.value)


def test_a_purge_needs_a_reason() -> None:
    with pytest.raises(WireInputError, match="reason"):
        parse_new_command(json.dumps({k: v for k, v in purge().items() if k != "reason"}).encode())


@pytest.fixture(params=["compiled", "interpreted"])
def bus(request: pytest.FixtureRequest) -> Any:
    core = request.param
    if core == "compiled":
        from infra.core import compiled_core_active

        if not compiled_core_active():
            pytest.skip("the compiled core is not built")
    made = bootstrap(Settings(core=core), ledger=SQLiteLedger(":memory:"))
    ensure_initialized(made, ACCOUNT)
    return made


def test_a_purge_is_always_accepted_and_changes_nothing_but_the_accounts_time(bus: Any) -> None:
    first = bus.handle(parse_new_command(json.dumps(purge(command_id="p0")).encode()))
    # Like every command, the day's first one rolls the budget day (the Brain's, not the purge's).
    assert [e["type"] for e in first.events] == ["budget.day_rolled.v1", "dlq.purged.v1"]
    before = state_view(bus.ctx.core, bus.state(ACCOUNT))
    outcome = bus.handle(parse_new_command(json.dumps(purge(ts_ns=T0 + 1)).encode()))
    assert (outcome.outcome, outcome.reason) == ("accepted", None)
    assert [e["type"] for e in outcome.events] == ["dlq.purged.v1"]
    after = state_view(bus.ctx.core, bus.state(ACCOUNT))
    assert {k: v for k, v in after.items() if k != "last_ts_ns"} == {k: v for k, v in before.items() if k != "last_ts_ns"}
    records = bus.ctx.ledger.read_all(0)
    event = [r for r in records if r.type == "dlq.purged.v1"][-1]
    assert event.envelope["data"] == {
        "entry_ids": ["cmd-7-0123456789abcdef", "cmd-8-0123456789abcdef"],
        "reason": "triaged: a test message",
        "actor": "operator:bob",
    }
    EVENT_DATA_MODELS["dlq.purged.v1"].model_validate(event.envelope["data"], strict=True)
    assert event.envelope["actor"] == "operator:bob"
    again = bus.handle(parse_new_command(json.dumps(purge(ts_ns=T0 + 2)).encode()))
    assert again.outcome == "duplicate"


def test_a_late_purge_is_decided_at_the_accounts_time(bus: Any) -> None:
    bus.handle(wire.Halt(command_id="h1", account_id=ACCOUNT, ts_ns=T0 + 10, actor="operator:bob", reason="test"))
    outcome = bus.handle(parse_new_command(json.dumps(purge(ts_ns=T0)).encode()))
    assert outcome.outcome == "accepted"
    event = next(r for r in bus.ctx.ledger.read_all(0) if r.type == "dlq.purged.v1")
    assert event.envelope["ts_ns"] == T0 + 10


def test_both_cores_record_a_purge_byte_for_byte() -> None:
    from infra.core import compiled_core_active

    if not compiled_core_active():
        pytest.skip("the compiled core is not built")
    states = []
    for core in ("compiled", "interpreted"):
        made = bootstrap(Settings(core=core), ledger=SQLiteLedger(":memory:"))
        ensure_initialized(made, ACCOUNT)
        made.handle(parse_new_command(json.dumps(purge()).encode()))
        states.append([r.envelope for r in made.ctx.ledger.read_all(0)])
    assert states[0] == states[1]


# The read models -------------------------------------------------------------------------------


def test_a_recorded_purge_folds_into_one_purge_row_per_entry(bus: Any) -> None:
    bus.handle(parse_new_command(json.dumps(purge()).encode()))
    records = bus.ctx.ledger.read_all(0)
    position = next(r.position for r in records if r.type == "dlq.purged.v1")
    rows = fold_rows(dlq_view.PROJECTION, records)
    assert rows == {
        "rm_dlq_purges": [
            {
                "entry_id": entry_id, "account_id": ACCOUNT, "actor": "operator:bob",
                "reason": "triaged: a test message", "position": position, "ts_ns": T0, "command_id": "p1",
            }
            for entry_id in ("cmd-7-0123456789abcdef", "cmd-8-0123456789abcdef")
        ]
    }


def test_the_entries_view_is_fed_from_the_stream_not_the_ledger() -> None:
    assert dlq_view.PROJECTION in registry.PROJECTIONS
    assert dlq_view.DLQ_ENTRIES not in registry.PROJECTIONS
    assert dlq_view.DLQ_ENTRIES.fold([]) == []
    entry = an_entry()
    row = dlq_view.entry_row(entry.to_json())
    assert dlq_view.entry_put(row) == Put("rm_dlq", row)
    assert row["stream_seq"] == 7 and "status" not in row
    assert dlq_view.status_patch(entry.entry_id, "purged") == Patch("rm_dlq", (entry.entry_id,), set={"status": "purged"})
    with pytest.raises(ValueError, match="colour"):
        dlq_view.entry_put({**row, "colour": "red"})
