"""`read_matching` pages through a 100k-record embedded ledger: every matching record once, in
order, and no call looks at more than `scan_limit` records."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from adapters.sqlite.ledger import SQLiteLedger
from commands.ports import DEFAULT_SCAN_LIMIT, NewRecord, RecordFilter

pytestmark = pytest.mark.integration

RECORDS = 100_000
BATCH = 5_000
ACCOUNTS = 50
RARE_TYPE = "risk.halted.v1"  # every 100th record: 1%
BASE_TS_NS = 1_700_000_000_000_000_000


def envelope(stream_id: str, version: int, type: str, n: int) -> dict[str, Any]:
    return {
        "event_id": f"{stream_id}:{version}",
        "stream_id": stream_id,
        "version": version,
        "type": type,
        "ts_ns": BASE_TS_NS + n,
        "command_id": f"cmd-{n}",
        "correlation_id": "corr-1",
        "causation_id": f"cmd-{n}",
        "intent_id": None,
        "phase_id": 2,
        "actor": "operator:ada",
        "policy_hash": "ab" * 32,
        "data": {"qty": "0.5", "px": "64123.10", "n": n},
    }


def type_of(n: int) -> str:
    return RARE_TYPE if n % 100 == 0 else "order.accepted.v1"


@pytest.fixture(scope="module")
def big_ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SQLiteLedger]:
    """Record n (from 1) is at position n, in stream account-(n % ACCOUNTS)."""
    path = tmp_path_factory.mktemp("paging") / "ledger.db"
    ledger = SQLiteLedger(str(path))
    versions = [0] * ACCOUNTS
    for start in range(1, RECORDS + 1, BATCH):
        batch = []
        for n in range(start, start + BATCH):
            account = n % ACCOUNTS
            versions[account] += 1
            stream = f"account-{account}"
            batch.append(
                NewRecord(
                    stream,
                    versions[account],
                    type_of(n),
                    envelope(stream, versions[account], type_of(n), n),
                )
            )
        ledger.append(batch)
    assert ledger.head()[0] == ledger.head()[2] == RECORDS  # positions 1..RECORDS, no gaps
    try:
        yield ledger
    finally:
        ledger.close()


def page_through(
    ledger: SQLiteLedger, where: RecordFilter, *, limit: int, scan_limit: int
) -> tuple[list[int], int]:
    """Every matching position, page by page from 0 to the head; and how many calls it took."""
    head = ledger.head()[0]
    positions: list[int] = []
    after = 0
    calls = 0
    while after < head:
        records, reached = ledger.read_matching(after, limit, where, scan_limit=scan_limit)
        calls += 1
        page = [r.position for r in records]
        # Positions are contiguous here, so `reached - after` is how many records the call examined.
        assert after < reached <= after + scan_limit
        assert all(after < p <= reached for p in page)
        assert len(page) <= limit
        if len(page) == limit:
            assert page[-1] == reached
        elif reached < head:
            assert reached == after + scan_limit  # a short page means the scan bound, or the head
        assert all(where.matches(r) for r in records)
        positions += page
        after = reached
    assert ledger.read_matching(after, limit, where, scan_limit=scan_limit) == ([], after)
    return positions, calls


def test_paging_without_a_filter_visits_every_record_once_in_order(
    big_ledger: SQLiteLedger,
) -> None:
    positions, calls = page_through(
        big_ledger, RecordFilter(), limit=1000, scan_limit=DEFAULT_SCAN_LIMIT
    )
    assert positions == list(range(1, RECORDS + 1))
    assert calls == RECORDS // 1000


@pytest.mark.parametrize("scan_limit", [DEFAULT_SCAN_LIMIT, 3_000])
def test_paging_a_rare_type_visits_every_match_once_within_the_scan_bound(
    big_ledger: SQLiteLedger, scan_limit: int
) -> None:
    positions, calls = page_through(
        big_ledger, RecordFilter(types=(RARE_TYPE,)), limit=1000, scan_limit=scan_limit
    )
    assert positions == list(range(100, RECORDS + 1, 100))
    assert calls == -(-RECORDS // scan_limit)  # the 1000 matches never fill a page first


def test_paging_one_command_id_finds_its_one_record(big_ledger: SQLiteLedger) -> None:
    positions, calls = page_through(
        big_ledger, RecordFilter(command_id="cmd-77777"), limit=1000, scan_limit=DEFAULT_SCAN_LIMIT
    )
    assert positions == [77_777]
    assert calls == 2
