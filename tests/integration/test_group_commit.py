"""Group commit: one writer per account, batches in one transaction, answers only once durable."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from adapters.loop_thread import run_on
from adapters.postgres.ledger import PostgresLease, PostgresLedger
from adapters.postgres.migrations import upgrade
from adapters.sqlite.ledger import SQLiteLedger
from commands.envelope import account_stream
from commands.handlers import HANDLERS, Bus, Context, Outcome
from commands.lease import LeaseLost, LeaseRefused, StreamLease
from commands.ports import Ledger, LedgerError, LedgerUnreachable, NewRecord
from commands.writer import AccountWriter, GroupCommitBus, PolicyIntegrityError, WriterUnavailable
from infra.core import Core, load_core
from infra.writers import lease_store
from replay.chain import verify_ledger
from tests.integration.writer_support import (
    FaultyStore,
    activation,
    command_ids,
    decision,
    orders,
    sequential_decisions,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def core() -> Core:
    return load_core("interpreted")


@pytest.fixture(params=["postgres", "sqlite"])
def open_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Ledger]]:
    """Opens (another handle on) one ledger: a fresh PostgreSQL database or SQLite file."""
    opened: list[Ledger] = []
    if request.param == "postgres":
        url = request.getfixturevalue("pg_url")
        upgrade(url)

        def make() -> Ledger:
            opened.append(PostgresLedger(url))
            return opened[-1]

    else:
        path = str(tmp_path / "ledger.db")

        def make() -> Ledger:
            opened.append(SQLiteLedger(path))
            return opened[-1]

    yield make
    for ledger in opened:
        ledger.close()


@pytest.fixture
def pg_ledger(pg_url: str) -> Iterator[PostgresLedger]:
    upgrade(pg_url)
    ledger = PostgresLedger(pg_url)
    yield ledger
    ledger.close()


def sequential_head(core: Core, commands: list[Any]) -> tuple[str, int]:
    """The head hash and record count the one-at-a-time handler produces for these commands."""
    ledger = SQLiteLedger(":memory:")
    try:
        bus = Bus(Context(ledger, core), HANDLERS)
        for command in commands:
            bus.handle(command)
        _, head_hash, count = ledger.head()
        return head_hash, count
    finally:
        ledger.close()


def assert_answers_are_recorded(ledger: Ledger, outcomes: list[Any]) -> None:
    """Each answer names the position of its own command record, and says what it records."""
    records = {record.position: record for record in ledger.iter_all()}
    for outcome in outcomes:
        record = records[outcome.position]
        assert (record.type, record.envelope["command_id"]) == ("command.recorded.v1", outcome.command_id)
        data = record.envelope["data"]
        assert (data["outcome"], data["reason"]) == (outcome.outcome, outcome.reason)
        assert data["event_ids"] == [e["event_id"] for e in outcome.events]
        assert data["event_types"] == [e["type"] for e in outcome.events]


def backend_pid(lease: StreamLease) -> int:
    inner = getattr(lease, "inner", lease)
    assert isinstance(inner, PostgresLease)
    return int(inner._connection.get_server_pid())


def terminate(url: str, pid: int) -> None:
    with psycopg.connect(url, autocommit=True) as connection:
        # Waits (up to 10 s) until the backend has exited and its advisory locks are gone.
        connection.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,))


def test_concurrent_callers_are_answered_after_their_batch_is_durable(
    open_ledger: Callable[[], Ledger], core: Core
) -> None:
    commands = [activation("acct"), *orders("acct", 300)]
    ledger = open_ledger()
    observer = open_ledger()  # another connection: sees only what is committed
    store = FaultyStore(lease_store(ledger))

    async def scenario() -> list[Outcome]:
        writer = AccountWriter("acct", store, core, max_batch=64)
        await writer.start()

        async def submit(command: Any) -> Outcome:
            outcome = await writer.submit(command)
            assert command.command_id in store.durable  # its append had returned
            assert await asyncio.to_thread(observer.read_stream, f"command-{command.command_id}")
            return outcome

        first = await submit(commands[0])
        rest = await asyncio.gather(*(submit(c) for c in commands[1:]))
        sizes = dict(writer.batch_sizes)
        await writer.stop()
        assert max(sizes) > 1, sizes  # callers queued up behind a commit were batched
        assert max(sizes) <= 64
        assert sum(size * n for size, n in sizes.items()) == len(commands)
        return [first, *rest]

    outcomes = asyncio.run(scenario())
    assert [o.command_id for o in outcomes] == [c.command_id for c in commands]
    assert {o.outcome for o in outcomes} <= {"accepted", "rejected"}
    report = verify_ledger(observer)
    assert report.ok, report
    # Batching changes nothing recorded: the ledger is byte for byte the one-at-a-time ledger.
    assert (report.head_hash, report.records_checked) == sequential_head(core, commands)


def test_duplicates_are_answered_with_the_original_outcome_and_append_nothing(
    open_ledger: Callable[[], Ledger], core: Core
) -> None:
    ledger = open_ledger()
    first, second, third = orders("acct", 3)

    async def scenario() -> tuple[list[Outcome], list[Outcome]]:
        writer = AccountWriter("acct", lease_store(ledger), core)
        await writer.start()
        await writer.submit(activation("acct"))
        original = await writer.submit(first)
        # In one batch: a command recorded before, a new one twice, and a third.
        again = await asyncio.gather(writer.submit(first), writer.submit(second), writer.submit(second), writer.submit(third))
        await writer.stop()
        # A new writer (a restart) answers from the ledger too.
        restarted = AccountWriter("acct", lease_store(ledger), core)
        await restarted.start()
        later = [await restarted.submit(first), await restarted.submit(second)]
        await restarted.stop()
        return [original, *again], later

    (original, dup_first, new_second, dup_second, new_third), later = asyncio.run(scenario())
    assert dup_first.outcome == "duplicate"
    assert (dup_first.reason, dup_first.events, dup_first.position) == (original.reason, original.events, original.position)
    assert new_second.outcome in ("accepted", "rejected")
    assert dup_second.outcome == "duplicate"
    assert (dup_second.events, dup_second.position) == (new_second.events, new_second.position)
    assert new_third.outcome in ("accepted", "rejected")
    assert [o.outcome for o in later] == ["duplicate", "duplicate"]
    assert later[1].position == new_second.position
    recorded = command_ids(ledger.read_all(0, 10_000))
    assert sorted(recorded) == sorted({activation("acct").command_id, first.command_id, second.command_id, third.command_id})
    assert verify_ledger(ledger).ok


def test_an_invalid_command_fails_alone(open_ledger: Callable[[], Ledger], core: Core) -> None:
    ledger = open_ledger()
    good = orders("acct", 2)

    async def scenario() -> list[Any]:
        writer = AccountWriter("acct", lease_store(ledger), core)
        await writer.start()
        await writer.submit(activation("acct"))
        wrong_account = orders("other", 1)[0]
        with pytest.raises(ValueError, match="this is the writer of 'acct'"):
            await writer.submit(wrong_account)
        results = await asyncio.gather(*(writer.submit(c) for c in good), return_exceptions=True)
        await writer.stop()
        return results

    results = asyncio.run(scenario())
    # The good commands are decided exactly as if the invalid one had never been sent.
    assert all(isinstance(r, Outcome) for r in results), results
    assert [decision(r) for r in results] == sequential_decisions(core, [activation("acct"), *good])[1:]
    assert_answers_are_recorded(ledger, results)
    assert command_ids(ledger.read_all(0, 10_000)) == [activation("acct").command_id, *(c.command_id for c in good)]


def test_a_second_writer_for_an_account_is_refused(open_ledger: Callable[[], Ledger], core: Core) -> None:
    one, two = open_ledger(), open_ledger()

    async def scenario() -> None:
        first = AccountWriter("acct", lease_store(one), core, holder="writer-one")
        await first.start()
        second = AccountWriter("acct", lease_store(two), core, holder="writer-two")
        with pytest.raises(LeaseRefused, match="account-acct already has a writer .*writer-one.*second writer for it is refused"):
            await second.start()
        other_account = AccountWriter("other", lease_store(two), core)
        await other_account.start()  # another account is another lease
        await other_account.stop()
        await first.submit(activation("acct"))
        await first.stop()
        await second.start()  # the lease is free again
        await second.submit(orders("acct", 1)[0])
        await second.stop()

    asyncio.run(scenario())
    assert verify_ledger(one).ok


def test_appends_outside_the_writer_are_refused_while_it_holds_the_account(
    pg_ledger: PostgresLedger, core: Core
) -> None:
    async def scenario() -> None:
        writer = AccountWriter("acct", pg_ledger, core, holder="the-writer")
        await writer.start()
        record = NewRecord("account-acct", 1, "t.v1", {"stream_id": "account-acct", "version": 1, "type": "t.v1"})
        with pytest.raises(LeaseRefused, match="account-acct already has a writer .*the-writer"):
            await pg_ledger.append_async([record])
        other = NewRecord("account-else", 1, "t.v1", {"stream_id": "account-else", "version": 1, "type": "t.v1"})
        await pg_ledger.append_async([other])
        await writer.submit(activation("acct"))
        await writer.stop()
        bus = Bus(Context(pg_ledger, core), HANDLERS)
        await asyncio.to_thread(bus.handle, orders("acct", 1)[0])  # free again once stopped

    asyncio.run(scenario())
    assert verify_ledger(pg_ledger).ok


def test_a_lease_whose_session_is_gone_cannot_append(pg_ledger: PostgresLedger, pg_url: str) -> None:
    record = NewRecord("account-acct", 1, "t.v1", {"stream_id": "account-acct", "version": 1, "type": "t.v1"})

    async def scenario() -> None:
        lease = await pg_ledger.acquire_lease("account-acct", "doomed")
        terminate(pg_url, backend_pid(lease))
        with pytest.raises(LedgerUnreachable):
            await lease.append([record])
        await lease.release()
        # A session that still exists but gave its lock up (a bug, say) is refused in the
        # append transaction itself.
        lease = await pg_ledger.acquire_lease("account-acct", "forgetful")
        assert isinstance(lease, PostgresLease)
        await run_on(pg_ledger._loop, lease._connection.execute("SELECT pg_advisory_unlock_all()"))
        with pytest.raises(LeaseLost, match="no longer holds the advisory lock"):
            await lease.append([record])
        await lease.release()

    asyncio.run(scenario())
    assert pg_ledger.head()[2] == 0


def test_a_lost_connection_mid_batch_fails_that_batch_and_the_writer_reloads(
    pg_ledger: PostgresLedger, pg_url: str, core: Core
) -> None:
    store = FaultyStore(pg_ledger)

    async def kill(lease: StreamLease) -> None:
        await asyncio.to_thread(terminate, pg_url, backend_pid(lease))

    async def lose_the_answer(lease: StreamLease) -> None:
        # The batch committed, then the connection dropped before the answer came back.
        await kill(lease)
        raise LedgerUnreachable("connection lost after COMMIT was sent (injected)")

    first, second, third = orders("acct", 30), orders("acct", 30, 30), orders("acct", 30, 60)

    async def scenario() -> tuple[list[Any], list[Any], list[Any], list[Outcome]]:
        writer = AccountWriter("acct", store, core, max_batch=100, reconnect_timeout_s=10)
        await writer.start()
        await writer.submit(activation("acct"))
        store.faults[store.appends + 1] = ("before", kill)
        lost = await asyncio.gather(*(writer.submit(c) for c in first), return_exceptions=True)
        store.faults[store.appends + 1] = ("after", lose_the_answer)
        unknown = await asyncio.gather(*(writer.submit(c) for c in second), return_exceptions=True)
        fine = await asyncio.gather(*(writer.submit(c) for c in third), return_exceptions=True)
        assert writer.version == len(await pg_ledger.read_stream_async("account-acct"))
        # Clients resubmit whatever failed: the command ids make that safe.
        retried = [await writer.submit(c) for c in first + second]
        await writer.stop()
        return lost, unknown, fine, retried

    lost, unknown, fine, retried = asyncio.run(scenario())
    assert all(isinstance(r, LedgerError) for r in lost), lost  # never a false success
    assert all(isinstance(r, LedgerError) for r in unknown), unknown
    # The batch after the reload is decided on what was durable (the second batch, not the first).
    assert all(isinstance(r, Outcome) for r in fine), fine
    assert [decision(r) for r in fine] == sequential_decisions(core, [activation("acct"), *second, *third])[-30:]
    assert_answers_are_recorded(pg_ledger, fine)
    assert {o.outcome for o in retried[:30]} <= {"accepted", "rejected"}  # had not committed
    assert {o.outcome for o in retried[30:]} == {"duplicate"}  # had committed: not again
    assert len(store.leases) == 3  # took its lease again after each failure
    report = verify_ledger(pg_ledger)
    assert report.ok, report
    recorded = command_ids(list(pg_ledger.iter_all()))
    assert len(recorded) == len(set(recorded)) == 91


def test_a_writer_that_lost_its_lease_to_a_new_leader_stops(
    pg_ledger: PostgresLedger, pg_url: str, core: Core
) -> None:
    async def scenario() -> None:
        old = AccountWriter("acct", pg_ledger, core, holder="old-leader", reconnect_timeout_s=5)
        await old.start()
        await old.submit(activation("acct"))
        await old.submit(orders("acct", 1)[0])
        assert old._lease is not None
        terminate(pg_url, backend_pid(old._lease))  # its session is gone, and its lock with it
        other = PostgresLedger(pg_url)
        try:
            new = AccountWriter("acct", other, core, holder="new-leader")
            await new.start()  # reloads the account from the ledger
            assert new.version == old.version
            with pytest.raises(LedgerError):
                await old.submit(orders("acct", 1, 1)[0])
            for _ in range(100):  # the old writer tries to take its lease again, and is refused
                if old.failed is not None:
                    break
                await asyncio.sleep(0.05)
            assert isinstance(old.failed, LeaseRefused)
            with pytest.raises(WriterUnavailable, match="new-leader"):
                await old.submit(orders("acct", 1, 2)[0])
            outcome = await new.submit(orders("acct", 1, 1)[0])
            assert outcome.outcome in ("accepted", "rejected")
            await new.stop()
            await old.stop()
        finally:
            await other.close_async()

    asyncio.run(scenario())
    assert verify_ledger(pg_ledger).ok


def test_a_new_leader_verifies_the_active_policy_hash(pg_ledger: PostgresLedger, pg_url: str, core: Core) -> None:
    async def scenario() -> None:
        writer = AccountWriter("acct", pg_ledger, core)
        await writer.start()
        await writer.submit(activation("acct"))
        active = writer.state.policy_hash
        await writer.stop()
        with pytest.raises(PolicyIntegrityError, match="ledger's active policy is .*started for policy feed"):
            await AccountWriter("acct", pg_ledger, core, expected_policy_hash="feed").start()
        ok = AccountWriter("acct", pg_ledger, core, expected_policy_hash=active)
        await ok.start()
        await ok.stop()
        # Behind titan's back, the recorded document is altered: its hash no longer verifies.
        with psycopg.connect(pg_url, autocommit=True) as connection:
            connection.execute("SET session_replication_role = replica")
            connection.execute(
                "UPDATE stored_events SET state = convert_to(replace(convert_from(state, 'UTF8'), "
                "'\"max_open_orders\":', '\"max_open_orders\":9'), 'UTF8') "
                "WHERE originator_id = 'account-acct' AND topic = 'policy.activated.v1'"
            )
        with pytest.raises(PolicyIntegrityError, match="its document hashes to"):
            await AccountWriter("acct", pg_ledger, core).start()

    asyncio.run(scenario())


def test_two_unleased_writers_never_interleave_an_accounts_records(pg_url: str, core: Core) -> None:
    """Without the writer, two handlers on one account still append whole commands, in turn."""
    upgrade(pg_url)
    ledgers = [PostgresLedger(pg_url) for _ in range(2)]
    setup = Bus(Context(ledgers[0], core), HANDLERS)
    setup.handle(activation("acct"))
    errors: list[BaseException] = []

    def run(ledger: Ledger, prefix: str) -> None:
        bus = Bus(Context(ledger, core), HANDLERS)
        try:
            for command in orders("acct", 40, prefix=prefix):
                for _attempt in range(50):  # the handler gives up after a few conflicts: retry
                    try:
                        bus.handle(command)
                        break
                    except LedgerError as error:
                        if "times in a row" not in str(error):
                            raise
        except BaseException as error:  # noqa: BLE001 - asserted below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(ledger, p)) for ledger, p in zip(ledgers, "xy", strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        records = list(ledgers[0].iter_all())
        by_command: dict[str, list[int]] = {}
        for index, record in enumerate(records):
            by_command.setdefault(record.envelope["command_id"], []).append(index)
        for command_id, indexes in by_command.items():
            assert indexes == list(range(indexes[0], indexes[-1] + 1)), command_id  # contiguous
        versions = [r.version for r in records if r.stream_id == account_stream("acct")]
        assert versions == list(range(1, len(versions) + 1))
        assert len(by_command) == 81
        assert verify_ledger(ledgers[0]).ok
    finally:
        for ledger in ledgers:
            ledger.close()


def test_the_bus_runs_one_writer_per_account(open_ledger: Callable[[], Ledger], core: Core) -> None:
    ledger = open_ledger()
    accounts = ("a1", "a2", "a3")

    async def scenario() -> dict[str, int]:
        bus = GroupCommitBus(lease_store(ledger), core, max_batch=32)
        await asyncio.gather(*(bus.handle(activation(a)) for a in accounts))
        flows = [orders(a, 60) for a in accounts]
        mixed = [c for trio in zip(*flows, strict=True) for c in trio]
        outcomes = await asyncio.gather(*(bus.handle(c) for c in mixed))
        assert [o.command_id for o in outcomes] == [c.command_id for c in mixed]
        versions = {a: (await bus.writer(a)).version for a in accounts}
        await bus.stop()
        return versions

    versions = asyncio.run(scenario())
    for account in accounts:
        assert versions[account] == len(ledger.read_stream(account_stream(account)))
    assert verify_ledger(ledger).ok
