"""Row changes, their coalescing, command units, canonical values and digests."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commands.ports import Record
from projections import registry
from projections.model import (
    Column,
    Delete,
    Digest,
    Patch,
    Put,
    Table,
    decimal_text,
    digest_of,
    net_changes,
    split_units,
)
from tests.projections_support import apply_sequentially

T = Table(
    "rm_t",
    (
        Column("k", "text"),
        Column("n", "integer", default=0),
        Column("d", "decimal", nullable=True),
        Column("j", "json", default=[]),
        Column("b", "boolean", default=False),
    ),
    key=("k",),
)
TABLES = {T.name: T}


def as_rows(net: dict[str, Any]) -> dict[tuple[Any, ...], tuple[str, dict[str, Any], dict[str, int]]]:
    return {key: (row.kind, row.row, row.add) for key, row in net.get("rm_t", {}).items()}


def test_a_put_takes_defaults_and_a_later_patch_merges_into_it():
    net = net_changes(TABLES, [Put("rm_t", {"k": "a", "d": "1.5"}), Patch("rm_t", ("a",), set={"b": True}, add={"n": 2})])
    assert as_rows(net) == {("a",): ("put", {"k": "a", "n": 2, "d": "1.5", "j": [], "b": True}, {})}


def test_patches_accumulate_and_a_delete_wins():
    net = net_changes(
        TABLES,
        [Patch("rm_t", ("a",), add={"n": 1}), Patch("rm_t", ("a",), set={"d": "2"}, add={"n": 3}), Delete("rm_t", ("b",)), Patch("rm_t", ("b",), set={"d": "9"})],
    )
    assert as_rows(net) == {("a",): ("patch", {"d": "2"}, {"n": 4}), ("b",): ("delete", {}, {})}


def test_an_add_after_a_set_adds_to_the_set_value():
    net = net_changes(TABLES, [Patch("rm_t", ("a",), set={"n": 5}), Patch("rm_t", ("a",), add={"n": 2})])
    assert as_rows(net) == {("a",): ("patch", {"n": 7}, {})}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (Put("rm_nope", {"k": "a"}), "unknown table"),
        (Put("rm_t", {"k": "a", "zz": 1}), "no column 'zz'"),
        (Put("rm_t", {"k": None}), "key column 'k' is null"),
        (Patch("rm_t", ("a",), add={"d": 1}), "needs an integer column"),
        (Patch("rm_t", ("a",), set={"k": "b"}), "cannot change the key"),
        (Patch("rm_t", ("a", "b"), set={"n": 1}), "does not match"),
    ],
)
def test_bad_changes_are_refused_with_what_is_wrong(change, message):
    with pytest.raises(ValueError, match=message):
        net_changes(TABLES, [change])


def test_a_put_without_a_required_column_names_it():
    table = Table("rm_x", (Column("k", "text"), Column("v", "text")), key=("k",))
    with pytest.raises(ValueError, match="lacks column 'v'"):
        net_changes({"rm_x": table}, [Put("rm_x", {"k": "a"})])


changes = st.lists(
    st.one_of(
        st.builds(lambda k, n, d: Put("rm_t", {"k": k, "n": n, "d": d}), st.sampled_from("abc"), st.integers(-5, 5), st.sampled_from([None, "1.0", "2"])),
        st.builds(lambda k, n, d: Patch("rm_t", (k,), set={"d": d}, add={"n": n}), st.sampled_from("abc"), st.integers(-5, 5), st.sampled_from(["3", "4.50"])),
        st.builds(lambda k, n: Patch("rm_t", (k,), set={"n": n}), st.sampled_from("abc"), st.integers(-5, 5)),
        st.builds(lambda k: Patch("rm_t", (k,), add={"n": 1}), st.sampled_from("abc")),
        st.builds(lambda k: Delete("rm_t", (k,)), st.sampled_from("abc")),
    ),
    max_size=12,
)


def apply_net(before: dict[tuple[Any, ...], dict[str, Any]], net: dict[str, Any]) -> dict[tuple[Any, ...], dict[str, Any]]:
    after = {key: dict(row) for key, row in before.items()}
    for key, change in net.get("rm_t", {}).items():
        if change.kind == "delete":
            after.pop(key, None)
        elif change.kind == "put":
            after[key] = dict(change.row)
        elif key in after:
            after[key].update(change.row)
            for name, delta in change.add.items():
                after[key][name] = (after[key][name] or 0) + delta
    return after


@settings(max_examples=300, deadline=None)
@given(first=changes, second=changes)
def test_coalesced_changes_have_the_effect_of_the_changes_one_by_one(first, second):
    reference: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {}
    apply_sequentially([T], first, reference)
    before = reference.get("rm_t", {})
    expected: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {"rm_t": {k: dict(v) for k, v in before.items()}}
    apply_sequentially([T], second, expected)
    assert apply_net(before, net_changes(TABLES, second)) == expected["rm_t"]


def record(position: int, command_id: str, type_: str = "order.accepted.v1") -> Record:
    stream = f"command-{command_id}" if type_ == "command.recorded.v1" else "account-main"
    return Record(position, stream, 1, type_, {"command_id": command_id, "type": type_}, b"")


def test_units_end_at_command_records_and_an_incomplete_tail_is_left_out():
    records = [
        record(1, "a"),
        record(2, "a"),
        record(3, "a", "command.recorded.v1"),
        record(4, "b", "command.recorded.v1"),
        record(5, "c"),
    ]
    units, covered = split_units(records)
    assert [[r.position for r in unit] for unit in units] == [[1, 2, 3], [4]]
    assert covered == 4


def test_a_record_of_another_command_also_ends_a_unit():
    units, covered = split_units([record(1, "orphan"), record(2, "b"), record(3, "b", "command.recorded.v1")])
    assert [[r.position for r in unit] for unit in units] == [[1], [2, 3]]
    assert covered == 3


def test_decimals_are_canonical_whatever_the_store_returns():
    from decimal import Decimal

    assert decimal_text("007.50") == "7.50"
    assert decimal_text(Decimal("0E-8")) == "0.00000000"
    assert decimal_text("-0.0") == "0.0"
    assert decimal_text("-12.340") == "-12.340"
    with pytest.raises(ValueError):
        decimal_text("1e999999999999")
    with pytest.raises(ValueError):
        decimal_text("abc")


def test_a_digest_is_sha256_of_the_models_canonical_json():
    model: dict[str, list[dict[str, Any]]] = {
        "rm_b": [{"z": 1, "a": "é"}],
        "rm_a": [],
        "rm_c": [{"x": [1, {"b": None, "a": True}]}, {"x": []}],
    }
    reference = json.dumps(model, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert digest_of(model) == hashlib.sha256(reference).hexdigest()
    streamed = Digest()
    for name in sorted(model):
        streamed.table(name)
        for row in model[name]:
            streamed.row(row)
    assert streamed.hexdigest() == digest_of(model)
    assert streamed.row_count == 3


def test_projections_are_selected_by_name_and_an_unknown_name_lists_the_accepted():
    assert [p.name for p in registry.select(["orders", "positions"])] == ["orders", "positions"]
    assert registry.names() == (
        "positions", "orders", "decisions", "commands", "dlq", "truth", "breaker", "budget", "venue_quality",
    )
    accepted = "accepted: positions, orders, decisions, commands, dlq, truth, breaker, budget, venue_quality"
    with pytest.raises(registry.UnknownProjection, match=accepted):
        registry.select(["nope"])


def test_tables_must_be_prefixed_and_keys_must_be_columns():
    with pytest.raises(ValueError, match="prefixed rm_"):
        Table("orders", (Column("k", "text"),), key=("k",))
    with pytest.raises(ValueError, match="unknown column"):
        Table("rm_x", (Column("k", "text"),), key=("id",))
