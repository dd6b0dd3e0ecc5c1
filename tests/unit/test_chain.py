"""The chain rule, pure: sealing, and verification over plain Record values."""

from __future__ import annotations

import tracemalloc
from collections.abc import Collection, Iterator, Sequence
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commands.chain import CorruptRecord, seal
from commands.ports import Ledger, NewRecord, Record
from replay.chain import (
    ANCHOR_MISMATCH,
    HASH_MISMATCH,
    NOT_CANONICAL,
    NOT_JSON,
    POSITION_ORDER,
    PREV_HASH_MISMATCH,
    ROW_ENVELOPE_MISMATCH,
    VERSION_GAP,
    verify_chain,
    verify_ledger,
)
from schemas.canonical import GENESIS_HASH, canonical_bytes, record_hash


def envelope(stream_id: str, version: int, n: int = 0) -> dict[str, Any]:
    return {
        "event_id": f"evt-{n}",
        "stream_id": stream_id,
        "version": version,
        "type": "fill.recorded.v1",
        "ts_ns": 1_700_000_000_000_000_000 + n,
        "command_id": f"cmd-{n}",
        "correlation_id": None,
        "causation_id": None,
        "intent_id": None,
        "phase_id": 3,
        "actor": "venue:bybit",
        "policy_hash": "ef" * 32,
        "data": {"fill_id": f"f-{n}", "qty": "0.010", "px": "3012.55"},
    }


def chain(
    streams: Sequence[str], start_hash: str = GENESIS_HASH, first_position: int = 1, step: int = 1
) -> list[Record]:
    """Seal records for the given stream ids, in order, as an adapter would."""
    versions: dict[str, int] = {}
    records = []
    prev = start_hash
    for n, stream_id in enumerate(streams):
        versions[stream_id] = versions.get(stream_id, 0) + 1
        sealed = seal(envelope(stream_id, versions[stream_id], n), prev)
        records.append(
            Record(
                first_position + n * step,
                stream_id,
                versions[stream_id],
                sealed["type"],
                sealed,
                canonical_bytes(sealed),
            )
        )
        prev = sealed["hash"]
    return records


def anchor_of(records: list[Record]) -> tuple[int, str, int]:
    return (
        (records[-1].position, records[-1].envelope["hash"], len(records))
        if records
        else (0, GENESIS_HASH, 0)
    )


def resealed(record: Record, **changes: Any) -> Record:
    """The record with envelope fields changed and the state re-encoded (hash left as it was)."""
    env = record.envelope | changes
    return Record(
        record.position, record.stream_id, record.version, record.type, env, canonical_bytes(env)
    )


STREAMS = [
    "account-a",
    "command-1",
    "account-b",
    "account-a",
    "command-2",
    "account-a",
    "account-b",
]


def test_seal_chains_a_copy_onto_the_previous_hash() -> None:
    original = envelope("account-a", 1)
    sealed = seal(original, "12" * 32)
    assert "prev_hash" not in original and "hash" not in original
    assert sealed["prev_hash"] == "12" * 32
    assert sealed["hash"] == record_hash(sealed)
    with pytest.raises(ValueError, match="prev_hash"):
        seal(sealed, GENESIS_HASH)


def test_an_empty_ledger_at_genesis_verifies() -> None:
    report = verify_chain([], (0, GENESIS_HASH, 0))
    assert report.ok
    assert (report.records_checked, report.head_position, report.head_hash) == (0, 0, GENESIS_HASH)


def test_a_clean_chain_verifies_and_reports_its_head() -> None:
    records = chain(STREAMS)
    report = verify_chain(records, anchor_of(records))
    assert report.ok, report
    assert report.code is None and report.position is None
    assert (report.records_checked, report.streams_checked) == (7, 4)
    assert (report.head_position, report.head_hash) == (7, records[-1].envelope["hash"])


def test_positions_may_have_gaps() -> None:
    records = chain(STREAMS, first_position=10, step=3)
    assert verify_chain(records, anchor_of(records)).ok


def test_a_state_that_is_not_canonical() -> None:
    records = chain(STREAMS)
    bad = records[3]
    records[3] = Record(
        bad.position,
        bad.stream_id,
        bad.version,
        bad.type,
        bad.envelope,
        orjson.dumps(bad.envelope, option=orjson.OPT_INDENT_2),
    )
    report = verify_chain(records, anchor_of(records))
    assert (report.ok, report.code, report.position, report.stream_id, report.version) == (
        False,
        NOT_CANONICAL,
        4,
        "account-a",
        2,
    )
    assert report.records_checked == 4
    assert report.head_position == 3


@pytest.mark.parametrize(
    ("column", "value"),
    [("stream_id", "account-z"), ("version", 9), ("type", "fill.recorded.v2")],
)
def test_a_row_that_disagrees_with_its_envelope(column: str, value: Any) -> None:
    records = chain(STREAMS)
    row = records[4]
    fields: dict[str, Any] = {
        "stream_id": row.stream_id,
        "version": row.version,
        "type": row.type,
    } | {column: value}
    records[4] = Record(
        row.position,
        fields["stream_id"],
        fields["version"],
        fields["type"],
        row.envelope,
        row.state,
    )
    report = verify_chain(records, anchor_of(records))
    assert (report.code, report.position) == (ROW_ENVELOPE_MISMATCH, 5)
    assert report.expected == str(value)
    assert column in (report.message or "")


def test_a_record_that_does_not_chain_onto_its_predecessor() -> None:
    records = chain(STREAMS)
    records[2] = resealed(records[2], prev_hash="00" * 31 + "01")
    report = verify_chain(records, anchor_of(records))
    assert (report.code, report.position) == (PREV_HASH_MISMATCH, 3)
    assert report.expected == records[1].envelope["hash"]


def test_a_record_whose_contents_changed() -> None:
    records = chain(STREAMS)
    records[5] = resealed(records[5], data={"fill_id": "f-5", "qty": "9.999", "px": "3012.55"})
    report = verify_chain(records, anchor_of(records))
    assert (report.code, report.position) == (HASH_MISMATCH, 6)
    assert report.expected == record_hash(records[5].envelope)
    assert report.found == records[5].envelope["hash"]


def test_positions_must_strictly_increase() -> None:
    records = chain(STREAMS)
    swapped = records[:2] + [records[3], records[2]] + records[4:]
    report = verify_chain(swapped, anchor_of(records))
    assert (report.code, report.position) == (PREV_HASH_MISMATCH, 4)
    same = chain(STREAMS)
    same[4] = Record(
        4, *(getattr(same[4], f) for f in ("stream_id", "version", "type", "envelope", "state"))
    )
    report = verify_chain(same, anchor_of(records))
    assert (report.code, report.position) == (POSITION_ORDER, 4)


def test_a_stream_must_count_1_2_3_without_gaps() -> None:
    records = chain(["account-a", "account-a", "account-a"])
    # A correctly chained ledger whose writer skipped version 2 of a stream.
    env = seal(envelope("account-a", 3, 1), records[0].envelope["hash"])
    gap = [records[0], Record(2, "account-a", 3, env["type"], env, canonical_bytes(env))]
    report = verify_chain(gap, anchor_of(gap))
    assert (report.code, report.position, report.expected, report.found) == (
        VERSION_GAP,
        2,
        "2",
        "3",
    )
    env = seal(envelope("account-b", 2, 0), GENESIS_HASH)
    late_start = [Record(1, "account-b", 2, env["type"], env, canonical_bytes(env))]
    assert verify_chain(late_start, anchor_of(late_start)).code == VERSION_GAP


def test_a_missing_tail_is_caught_by_the_anchor() -> None:
    records = chain(STREAMS)
    report = verify_chain(records[:-2], anchor_of(records))
    assert (report.code, report.position) == (ANCHOR_MISMATCH, 7)
    assert report.head_position == 5
    assert "missing" in (report.message or "")


def test_a_record_beyond_the_anchor_is_named() -> None:
    records = chain(STREAMS)
    report = verify_chain(records, anchor_of(records[:5]))
    assert (report.code, report.position) == (ANCHOR_MISMATCH, 6)


def test_an_anchor_with_another_hash_or_count_is_a_mismatch() -> None:
    records = chain(STREAMS)
    position, hash_, count = anchor_of(records)
    assert verify_chain(records, (position, "ab" * 32, count)).code == ANCHOR_MISMATCH
    report = verify_chain(records, (position, hash_, count + 1))
    assert (report.code, report.position) == (ANCHOR_MISMATCH, 7)
    empty = verify_chain([], (3, "ab" * 32, 3))
    assert (empty.code, empty.position) == (ANCHOR_MISMATCH, 3)


def test_verification_stops_at_the_first_bad_record() -> None:
    records = chain(STREAMS)
    records[1] = resealed(records[1], actor="mallory")
    records[4] = resealed(records[4], actor="mallory")
    report = verify_chain(iter(records), anchor_of(records))
    assert (report.code, report.position, report.records_checked) == (HASH_MISMATCH, 2, 2)


def test_the_report_is_json_ready() -> None:
    records = chain(STREAMS)
    records[1] = resealed(records[1], actor="mallory")
    document = orjson.loads(orjson.dumps(verify_chain(records, anchor_of(records)).as_dict()))
    assert document["code"] == HASH_MISMATCH
    assert document["position"] == 2
    assert document["anchor"]["record_count"] == 7


def test_memory_stays_flat_over_a_long_ledger() -> None:
    def records(count: int) -> Iterator[Record]:
        prev = GENESIS_HASH
        for n in range(count):
            sealed = seal(envelope("account-a", n + 1, n), prev)
            prev = sealed["hash"]
            yield Record(n + 1, "account-a", n + 1, sealed["type"], sealed, canonical_bytes(sealed))

    last = list(records(5_000))[-1]
    tracemalloc.start()
    report = verify_chain(records(5_000), (5_000, last.envelope["hash"], 5_000))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert report.ok
    assert peak < 1_000_000  # keeping 5,000 records of ~600 bytes would take more than 3 MB


class FakeLedger(Ledger):
    """A ledger in a list that maps a whole batch before returning it, so that a corrupt record
    hides the good records before it in the same batch."""

    def __init__(
        self, records: list[Record], corrupt: Collection[int] = (), grow: list[Record] | None = None
    ) -> None:
        self.records = records
        self.corrupt = corrupt
        self.grow = grow or []
        self.anchor = anchor_of(records)

    def append(self, records: Sequence[NewRecord]) -> list[Record]:
        raise NotImplementedError

    def read_stream(self, stream_id: str, after_version: int = 0) -> list[Record]:
        raise NotImplementedError

    def read_all(self, after_position: int = 0, limit: int = 1000) -> list[Record]:
        batch = [r for r in self.records if r.position > after_position][:limit]
        for record in batch:
            if record.position in self.corrupt:
                raise CorruptRecord(
                    record.position, record.stream_id, record.version, "unexpected character"
                )
        if not batch and self.grow:
            # A writer commits more records (and moves the anchor) while the verifier reads.
            self.records = self.records + self.grow
            self.anchor = anchor_of(self.records)
            self.grow = []
        return batch

    def head(self) -> tuple[int, str, int]:
        return self.anchor

    def close(self) -> None:
        pass


def test_verify_ledger_names_an_unreadable_record() -> None:
    records = chain(STREAMS * 3)
    report = verify_ledger(FakeLedger(records, corrupt={9}), batch=5)
    assert (report.code, report.position, report.records_checked) == (NOT_JSON, 9, 9)


def test_verify_ledger_reports_an_earlier_finding_in_the_same_batch_as_a_corrupt_record() -> None:
    records = chain(STREAMS * 3)
    records[6] = resealed(records[6], actor="mallory")
    report = verify_ledger(FakeLedger(records, corrupt={9}), batch=5)
    assert (report.code, report.position) == (HASH_MISMATCH, 7)


def test_verify_ledger_follows_records_appended_while_it_reads() -> None:
    everything = chain(STREAMS * 2)
    ledger = FakeLedger(everything[:5], grow=everything[5:])
    report = verify_ledger(ledger, batch=3)
    assert report.ok, report
    assert report.records_checked == len(everything)
    assert report.anchor == anchor_of(everything)


@settings(max_examples=200, deadline=None)
@given(
    streams=st.lists(
        st.sampled_from(["account-a", "account-b", "command-1", "command-2"]),
        min_size=1,
        max_size=30,
    ),
    data=st.data(),
)
def test_any_changed_envelope_field_is_caught_at_its_record(
    streams: list[str], data: st.DataObject
) -> None:
    records = chain(streams)
    assert verify_chain(records, anchor_of(records)).ok
    at = data.draw(st.integers(0, len(records) - 1), label="index")
    field = data.draw(st.sampled_from(sorted(records[at].envelope)), label="field")
    value = data.draw(
        st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=8)), label="value"
    )
    if records[at].envelope[field] == value:
        return
    records[at] = resealed(records[at], **{field: value})
    report = verify_chain(records, anchor_of(records))
    assert not report.ok
    assert report.position == records[at].position
