"""The group-commit writer against an in-memory ledger and a lease store that fails on demand."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from adapters.sqlite.lease import LocalLeaseStore
from adapters.sqlite.ledger import SQLiteLedger
from commands.handlers import Outcome
from commands.lease import LeaseRefused, StreamLease
from commands.ports import LedgerError, NewRecord, Record
from commands.writer import (
    AccountWriter,
    PolicyIntegrityError,
    WriterUnavailable,
    verify_active_policy,
)
from infra.core import Core, load_core
from schemas.canonical import document_hash
from tests.integration.writer_support import activation, decision, orders, sequential_decisions


@pytest.fixture(scope="module")
def core() -> Core:
    return load_core("interpreted")


@pytest.fixture
def ledger() -> Iterator[SQLiteLedger]:
    ledger = SQLiteLedger(":memory:")
    yield ledger
    ledger.close()


class Flaky:
    """A lease store over a real one: appends fail while `failing` > 0; acquisitions can be
    refused or fail."""

    def __init__(self, inner: LocalLeaseStore) -> None:
        self.inner = inner
        self.failing = 0
        self.refuse_as: str | None = None
        self.unreachable = 0
        self.acquired = 0

    async def acquire_lease(self, stream_id: str, holder: str) -> StreamLease:
        if self.refuse_as is not None:
            raise LeaseRefused(stream_id, self.refuse_as)
        if self.unreachable:
            self.unreachable -= 1
            raise LedgerError("server unreachable (injected)")
        self.acquired += 1
        return _FlakyLease(await self.inner.acquire_lease(stream_id, holder), self)


class _FlakyLease:
    def __init__(self, inner: StreamLease, store: Flaky) -> None:
        self.inner = inner
        self.store = store

    @property
    def holder(self) -> str:
        return self.inner.holder

    async def append(self, records: Sequence[NewRecord]) -> list[Record]:
        if self.store.failing:
            self.store.failing -= 1
            raise LedgerError("connection lost (injected)")
        return await self.inner.append(records)

    async def read_stream(self, stream_id: str, after_version: int = 0) -> list[Record]:
        return await self.inner.read_stream(stream_id, after_version)

    async def first_records(self, stream_ids: Sequence[str]) -> dict[str, Record]:
        return await self.inner.first_records(stream_ids)

    async def release(self) -> None:
        await self.inner.release()


def test_a_failed_append_fails_its_batch_only_and_the_writer_reloads(ledger: SQLiteLedger, core: Core) -> None:
    store = Flaky(LocalLeaseStore(ledger))
    batch, after = orders("acct", 5), orders("acct", 5, 5)

    async def scenario() -> tuple[list[Any], list[Any]]:
        writer = AccountWriter("acct", store, core)
        await writer.start()
        await writer.submit(activation("acct"))
        store.failing = 1
        failed = await asyncio.gather(*(writer.submit(c) for c in batch), return_exceptions=True)
        fine = await asyncio.gather(*(writer.submit(c) for c in after), return_exceptions=True)
        await writer.stop()
        return failed, fine

    failed, fine = asyncio.run(scenario())
    assert all(isinstance(r, LedgerError) and "injected" in str(r) for r in failed)
    assert all(isinstance(r, Outcome) for r in fine), fine
    assert store.acquired == 2  # the lease was taken again after the failure
    recorded = {r.envelope["command_id"] for r in ledger.read_all(0, 1000)}
    assert not recorded & {c.command_id for c in batch}
    # The reloaded writer decides the next batch as if the failed one had never been sent,
    # and each answer is the command record at the position it names.
    assert [decision(r) for r in fine] == sequential_decisions(core, [activation("acct"), *after])[1:]
    records = {r.position: r for r in ledger.read_all(0, 1000)}
    for outcome in fine:
        record = records[outcome.position]
        assert (record.type, record.envelope["command_id"]) == ("command.recorded.v1", outcome.command_id)
        assert (record.envelope["data"]["outcome"], record.envelope["data"]["reason"]) == (outcome.outcome, outcome.reason)
        assert record.envelope["data"]["event_ids"] == [e["event_id"] for e in outcome.events]


def test_a_writer_that_cannot_get_its_lease_back_stops_and_says_why(ledger: SQLiteLedger, core: Core) -> None:
    store = Flaky(LocalLeaseStore(ledger))

    async def scenario() -> None:
        writer = AccountWriter("acct", store, core, reconnect_timeout_s=0.3)
        await writer.start()
        await writer.submit(activation("acct"))
        store.failing = 1
        store.unreachable = 1000
        with pytest.raises(LedgerError, match="injected"):
            await writer.submit(orders("acct", 1)[0])
        for _ in range(100):
            if writer.failed is not None:
                break
            await asyncio.sleep(0.02)
        assert isinstance(writer.failed, WriterUnavailable)
        with pytest.raises(WriterUnavailable, match="could not take its lease again within 0.3 s"):
            await writer.submit(orders("acct", 1, 1)[0])
        await writer.stop()

    asyncio.run(scenario())


def test_a_writer_whose_account_has_a_new_leader_stops_at_once(ledger: SQLiteLedger, core: Core) -> None:
    store = Flaky(LocalLeaseStore(ledger))

    async def scenario() -> None:
        writer = AccountWriter("acct", store, core, reconnect_timeout_s=30)
        await writer.start()
        store.failing = 1
        store.refuse_as = "titan-writer acct elsewhere:99"
        with pytest.raises(LedgerError):
            await writer.submit(activation("acct"))
        for _ in range(100):
            if writer.failed is not None:
                break
            await asyncio.sleep(0.02)
        assert isinstance(writer.failed, LeaseRefused)
        with pytest.raises(WriterUnavailable, match="elsewhere:99"):
            await writer.submit(activation("acct"))
        await writer.stop()

    asyncio.run(scenario())


def test_stop_commits_what_is_queued_then_refuses(ledger: SQLiteLedger, core: Core) -> None:
    async def scenario() -> list[Outcome]:
        writer = AccountWriter("acct", LocalLeaseStore(ledger), core, max_batch=3)
        await writer.start()
        submitted = [asyncio.ensure_future(writer.submit(c)) for c in [activation("acct"), *orders("acct", 7)]]
        await asyncio.sleep(0)  # let them queue
        await writer.stop()
        with pytest.raises(WriterUnavailable, match="not running"):
            await writer.submit(orders("acct", 1, 7)[0])
        return list(await asyncio.gather(*submitted))

    outcomes = asyncio.run(scenario())
    assert len(outcomes) == 8
    assert len([r for r in ledger.read_all(0, 1000) if r.type == "command.recorded.v1"]) == 8


def test_an_embedded_ledger_has_one_writer_per_account_too(ledger: SQLiteLedger, core: Core) -> None:
    async def scenario() -> None:
        first = AccountWriter("acct", LocalLeaseStore(ledger), core, holder="first")
        await first.start()
        with pytest.raises(LeaseRefused, match="first"):
            await AccountWriter("acct", LocalLeaseStore(ledger), core).start()
        await first.stop()
        again = AccountWriter("acct", LocalLeaseStore(ledger), core)
        await again.start()
        await again.stop()

    asyncio.run(scenario())


def test_max_batch_must_be_positive(ledger: SQLiteLedger, core: Core) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        AccountWriter("acct", LocalLeaseStore(ledger), core, max_batch=0)


# verify_active_policy: the new leader's check, as a pure function.


def activated(document: dict[str, Any], recorded_hash: str, position: int = 7) -> Record:
    envelope = {"data": {"policy": document, "policy_hash": recorded_hash}}
    return Record(position, "account-acct", 1, "policy.activated.v1", envelope, b"")


def test_no_policy_yet_is_fine_unless_one_is_expected() -> None:
    verify_active_policy("acct", [], "")
    with pytest.raises(PolicyIntegrityError, match="active policy is none, this writer was started for policy abc"):
        verify_active_policy("acct", [], "", "abc")


def test_the_active_policy_is_the_hash_of_its_recorded_document() -> None:
    document = {"policy_id": "p", "limits": {"max_open_orders": 20}}
    digest = document_hash(document)
    verify_active_policy("acct", [activated(document, digest)], digest, digest)
    forged = {"policy_id": "p", "limits": {"max_open_orders": 920}}
    with pytest.raises(PolicyIntegrityError, match="activated at position 7 records hash .* its document hashes to"):
        verify_active_policy("acct", [activated(forged, digest)], digest)
    with pytest.raises(PolicyIntegrityError, match="state's active policy hash other is not the one activated"):
        verify_active_policy("acct", [activated(document, digest)], "other")
    with pytest.raises(PolicyIntegrityError, match="has active policy x but no policy.activated.v1 record"):
        verify_active_policy("acct", [], "x")
