"""Tampering with a real ledger file behind titan's back is caught at the first bad position."""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.sqlite.ledger import SQLiteLedger
from commands.ports import LedgerError, NewRecord, Record
from replay.chain import (
    ANCHOR_MISMATCH,
    HASH_MISMATCH,
    NOT_JSON,
    PREV_HASH_MISMATCH,
    ROW_ENVELOPE_MISMATCH,
    ChainReport,
    verify_ledger,
)
from schemas.canonical import canonical_bytes, record_hash

pytestmark = pytest.mark.integration

STREAMS = ("account-alpha", "account-beta", "account-gamma", "account-delta")


def envelope(stream_id: str, version: int, n: int) -> dict[str, Any]:
    return {
        "event_id": f"evt-{n}",
        "stream_id": stream_id,
        "version": version,
        "type": "order.accepted.v1",
        "ts_ns": 1_700_000_000_000_000_000 + n,
        "command_id": f"cmd-{n}",
        "correlation_id": f"cmd-{n}",
        "causation_id": f"cmd-{n}",
        "intent_id": f"intent-{n}",
        "phase_id": 1 + n % 3,
        "actor": "phase:hunter",
        "policy_hash": "cd" * 32,
        "data": {"symbol": "BTCUSDT", "qty": f"0.{n:03d}", "px": "64000.5"},
    }


def fill(ledger: SQLiteLedger, batches: list[list[str]]) -> list[Record]:
    """Append batches (each a list of stream ids); every batch also writes a command record."""
    versions: dict[str, int] = {}
    written: list[Record] = []
    for n, streams in enumerate(batches):
        records: list[NewRecord] = []
        for stream_id in [*streams, f"command-{n}"]:
            versions[stream_id] = versions.get(stream_id, 0) + 1
            records.append(
                NewRecord(
                    stream_id,
                    versions[stream_id],
                    "order.accepted.v1",
                    envelope(stream_id, versions[stream_id], len(written) + len(records)),
                )
            )
        written += ledger.append(records)
    return written


@pytest.fixture
def ledger_file(tmp_path: Path) -> Iterator[tuple[Path, list[Record]]]:
    """A ledger file of 40 records over 4 account streams and 16 command streams."""
    path = tmp_path / "ledger.db"
    ledger = SQLiteLedger(str(path))
    batches = [
        [STREAMS[i % 4]] if i % 2 else [STREAMS[i % 4], STREAMS[(i + 1) % 4]] for i in range(16)
    ]
    records = fill(ledger, batches)
    assert len(records) == 40
    ledger.close()
    yield path, records


def verify_file(path: Path) -> ChainReport:
    ledger = SQLiteLedger(str(path))
    try:
        return verify_ledger(ledger, batch=7)
    finally:
        ledger.close()


def sql(path: Path, statement: str, *params: Any) -> None:
    raw = sqlite3.connect(path)
    raw.execute(statement, params)
    raw.commit()
    raw.close()


def state_at(path: Path, position: int) -> bytes:
    raw = sqlite3.connect(path)
    (state,) = raw.execute(
        "SELECT state FROM stored_events WHERE rowid = ?", (position,)
    ).fetchone()
    raw.close()
    return bytes(state)


def flip(state: bytes, index: int, mask: int = 0x01) -> bytes:
    return state[:index] + bytes([state[index] ^ mask]) + state[index + 1 :]


def test_a_clean_ledger_verifies(ledger_file: tuple[Path, list[Record]]) -> None:
    path, records = ledger_file
    report = verify_file(path)
    assert report.ok, report
    assert report.records_checked == 40
    assert report.head_hash == records[-1].envelope["hash"]


def test_one_changed_byte_in_a_value_is_a_hash_mismatch(
    ledger_file: tuple[Path, list[Record]],
) -> None:
    path, _ = ledger_file
    state = state_at(path, 17)
    index = state.index(b"64000.5") + 1  # "64000.5" -> "65000.5"
    sql(path, "UPDATE stored_events SET state = ? WHERE rowid = 17", flip(state, index))
    report = verify_file(path)
    assert (report.ok, report.code, report.position) == (False, HASH_MISMATCH, 17)
    assert report.records_checked == 17


def test_one_changed_byte_that_breaks_the_json_is_named(
    ledger_file: tuple[Path, list[Record]],
) -> None:
    path, _ = ledger_file
    state = state_at(path, 23)
    sql(path, "UPDATE stored_events SET state = ? WHERE rowid = 23", state[:-1] + b"]")
    report = verify_file(path)
    assert (report.code, report.position) == (NOT_JSON, 23)


def test_a_rewritten_prev_hash_is_named(ledger_file: tuple[Path, list[Record]]) -> None:
    path, _ = ledger_file
    state = state_at(path, 9)
    index = state.index(b'"prev_hash":"') + len(b'"prev_hash":"')
    sql(path, "UPDATE stored_events SET state = ? WHERE rowid = 9", flip(state, index))
    report = verify_file(path)
    assert (report.code, report.position) == (PREV_HASH_MISMATCH, 9)


def test_a_deleted_record_in_the_middle_is_named_by_its_successor(
    ledger_file: tuple[Path, list[Record]],
) -> None:
    path, records = ledger_file
    sql(path, "DELETE FROM stored_events WHERE rowid = 20")
    report = verify_file(path)
    assert (report.code, report.position) == (PREV_HASH_MISMATCH, 21)
    assert report.expected == records[20 - 1 - 1].envelope["hash"]
    assert report.found == records[20 - 1].envelope["hash"]


def test_a_deleted_last_record_is_caught_by_the_anchor(
    ledger_file: tuple[Path, list[Record]],
) -> None:
    path, _ = ledger_file
    sql(path, "DELETE FROM stored_events WHERE rowid = 40")
    report = verify_file(path)
    assert (report.code, report.position) == (ANCHOR_MISMATCH, 40)
    assert report.head_position == 39
    assert report.records_checked == 39


def test_swapped_states_are_named_at_the_first_of_the_two(
    ledger_file: tuple[Path, list[Record]],
) -> None:
    path, _ = ledger_file
    a, b = state_at(path, 12), state_at(path, 30)
    sql(path, "UPDATE stored_events SET state = ? WHERE rowid = 12", b)
    sql(path, "UPDATE stored_events SET state = ? WHERE rowid = 30", a)
    report = verify_file(path)
    assert (report.code, report.position) == (ROW_ENVELOPE_MISMATCH, 12)


def test_reordered_records_are_named_at_the_first_moved_position(
    ledger_file: tuple[Path, list[Record]],
) -> None:
    path, _ = ledger_file
    raw = sqlite3.connect(path)
    rows = {
        rowid: row
        for rowid, *row in raw.execute("SELECT rowid, * FROM stored_events WHERE rowid IN (12, 30)")
    }
    raw.execute("DELETE FROM stored_events WHERE rowid IN (12, 30)")
    raw.execute(
        "INSERT INTO stored_events (rowid, originator_id, originator_version, topic, state) VALUES (12, ?, ?, ?, ?)",
        rows[30],
    )
    raw.execute(
        "INSERT INTO stored_events (rowid, originator_id, originator_version, topic, state) VALUES (30, ?, ?, ?, ?)",
        rows[12],
    )
    raw.commit()
    raw.close()
    report = verify_file(path)
    assert (report.code, report.position) == (PREV_HASH_MISMATCH, 12)


def test_a_changed_row_column_is_named(ledger_file: tuple[Path, list[Record]]) -> None:
    path, _ = ledger_file
    sql(path, "UPDATE stored_events SET topic = 'order.rejected.v1' WHERE rowid = 5")
    report = verify_file(path)
    assert (report.code, report.position) == (ROW_ENVELOPE_MISMATCH, 5)
    assert (report.expected, report.found) == ("order.rejected.v1", "order.accepted.v1")


def test_a_forged_record_after_the_head_is_caught_by_the_anchor(
    ledger_file: tuple[Path, list[Record]],
) -> None:
    path, records = ledger_file
    forged = envelope("account-alpha", 100, 999) | {"prev_hash": records[-1].envelope["hash"]}
    forged["version"] = max(r.version for r in records if r.stream_id == "account-alpha") + 1
    forged["hash"] = record_hash(forged)
    sql(
        path,
        "INSERT INTO stored_events VALUES (?, ?, ?, ?)",
        "account-alpha",
        forged["version"],
        "order.accepted.v1",
        canonical_bytes(forged),
    )
    report = verify_file(path)
    assert (report.code, report.position) == (ANCHOR_MISMATCH, 41)
    assert report.records_checked == 41


def test_a_ledger_whose_anchor_disagrees_refuses_to_append(
    ledger_file: tuple[Path, list[Record]],
) -> None:
    path, _ = ledger_file
    sql(path, "DELETE FROM stored_events WHERE rowid = 40")
    ledger = SQLiteLedger(str(path))
    try:
        with pytest.raises(LedgerError, match="anchor says 40"):
            ledger.append(
                [NewRecord("account-zeta", 1, "order.accepted.v1", envelope("account-zeta", 1, 0))]
            )
        assert ledger.head()[0] == 40
    finally:
        ledger.close()


batches_strategy = st.lists(
    st.lists(st.sampled_from(STREAMS), min_size=0, max_size=3, unique=True),
    min_size=1,
    max_size=12,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=batches_strategy, data=st.data())
def test_any_single_byte_change_is_caught_at_its_record(
    batches: list[list[str]], data: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "ledger.db"
        ledger = SQLiteLedger(str(path))
        records = fill(ledger, batches)
        ledger.close()
        clean = verify_file(path)
        assert clean.ok, clean
        assert clean.records_checked == len(records)

        target = data.draw(st.sampled_from(records), label="record")
        index = data.draw(st.integers(0, len(target.state) - 1), label="byte")
        mask = data.draw(st.integers(1, 255), label="xor mask")
        sql(
            path,
            "UPDATE stored_events SET state = ? WHERE rowid = ?",
            flip(target.state, index, mask),
            target.position,
        )
        report = verify_file(path)
        assert not report.ok
        assert report.position == target.position, report
