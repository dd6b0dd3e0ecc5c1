"""One committer per PostgreSQL ledger, one round trip per append (issue 14, migration 0005).

Every lease of a `PostgresLedger` appends through its committer: the appends queued while a call
is in flight go into one call of titan_append(), one transaction. These tests prove that the
accounts' batches share transactions (the rows' xmin says which), that the chain and the bytes are
those of the four-round-trip path, that a refusal fails only the append it concerns, that a stale
head is resealed, that a lost connection is 'outcome unknown' for every append in the call, that a
writer killed mid-run loses and doubles nothing, that a ledger without the function still appends,
and that the function runs only for roles granted it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from adapters.ledger_mapper import SealedRecord, TitanMapper
from adapters.loop_thread import run_on
from adapters.postgres.committer import _sealed_state, _unsealed_runs
from adapters.postgres.ledger import PostgresLease, PostgresLedger
from adapters.postgres.migrations import MIGRATIONS_DIR, upgrade
from adapters.sqlite.ledger import envelope_field_bytes
from commands.chain import seal
from commands.envelope import COMMAND_RECORDED, account_stream
from commands.handlers import Outcome
from commands.lease import LeaseLost, LeaseRefused
from commands.ports import LedgerUnreachable, Record, VersionConflict
from commands.writer import AccountWriter
from infra.core import Core, load_core
from replay.chain import verify_ledger
from schemas.canonical import GENESIS_HASH
from tests.e2e.conftest import titan_command
from tests.integration.accounts_writer_child import account_names
from tests.integration.test_ledger_contract import new
from tests.integration.writer_support import activation, orders
from tests.services import PostgresServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
APPEND_FUNCTION = (
    "public.titan_append(integer, bigint, text, text, integer, integer[], integer[], timestamptz[], "
    "integer[], integer[], text[], integer[], integer[], integer[], bigint[], text[], bytea[])"
)


@pytest.fixture(scope="module")
def core() -> Core:
    return load_core("interpreted")


@pytest.fixture
def ledger_url(pg_url: str) -> str:
    upgrade(pg_url)
    return pg_url


def psql(url: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as connection:
        cursor = connection.execute(statement, params or None)
        return cursor.fetchall() if cursor.description else []


def transactions_by_account(url: str) -> list[int]:
    """For each transaction that wrote records, how many account streams it wrote (by xmin)."""
    rows = psql(
        url,
        "SELECT count(DISTINCT originator_id) FROM stored_events WHERE originator_id LIKE 'account-%' "
        "GROUP BY xmin::text ORDER BY min(notification_id)",
    )
    return [int(row[0]) for row in rows]


def committer_pid(ledger: PostgresLedger) -> int:
    committer = ledger._committer
    assert committer is not None and committer._connection is not None
    return int(committer._connection.get_server_pid())


def lease_pid(lease: PostgresLease) -> int:
    return int(lease._connection.get_server_pid())


def terminate(url: str, pid: int) -> None:
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,))


def cli_verify(url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TITAN_")} | {
        "PYTHONPATH": str(ROOT)
    }
    return subprocess.run(
        [*titan_command(), "ledger", "verify", "--ledger", url, "--json"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip


# One encoding per record, the same bytes as seal() and the mapper ------------------------------

_keys = st.one_of(
    st.sampled_from(["actor", "data", "event_id", "h", "has", "hash0", "hasi", "intent_id", "prev",
                     "prev_hash0", "prev_hasi", "stream_id", "type", "version", "", "Z", "é", "\U0001f600"]),
    st.text(max_size=12),
).filter(lambda key: key not in ("hash", "prev_hash"))  # fmt: skip
_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.dictionaries(_keys, _values, max_size=10), min_size=1, max_size=4),
    st.text(max_size=70),
)
def test_one_encoding_with_the_hash_spliced_in_is_byte_for_byte_seal(
    envelopes: list[dict[str, Any]], anchor_hash: str
) -> None:
    """Whatever the fields and whatever the anchor holds: the same hashes and stored bytes."""
    mapper = TitanMapper()
    prev_hash, prev_member = anchor_hash, envelope_field_bytes("prev_hash", anchor_hash)
    for envelope in envelopes:
        expected = seal(envelope, prev_hash)
        stored = mapper.to_stored_event(SealedRecord("account-x", 1, "t.v1", expected)).state
        digest, state = _sealed_state(_unsealed_runs(envelope), prev_member)
        assert (digest, state) == (expected["hash"], stored)
        prev_hash, prev_member = digest, envelope_field_bytes("prev_hash", digest)


def test_the_benchmark_flows_records_seal_to_the_same_bytes(core: Core) -> None:
    """The real envelopes of the order flow, as the writer decides them."""
    from adapters.sqlite.ledger import SQLiteLedger
    from commands.handlers import HANDLERS, Bus, Context
    from infra.bench import order_flow

    reference = SQLiteLedger(":memory:")
    try:
        bus = Bus(Context(reference, core), HANDLERS)
        for command in order_flow(120):
            bus.handle(command)
        records = list(reference.iter_all())
    finally:
        reference.close()
    prev_member = envelope_field_bytes("prev_hash", GENESIS_HASH)
    for record in records:
        unsealed = {k: v for k, v in record.envelope.items() if k not in ("hash", "prev_hash")}
        digest, state = _sealed_state(_unsealed_runs(unsealed), prev_member)
        assert (digest, state) == (record.envelope["hash"], record.state)
        prev_member = envelope_field_bytes("prev_hash", digest)


# Many accounts, one transaction ----------------------------------------------------------------


def test_many_accounts_batches_share_transactions_and_the_chain_verifies(
    ledger_url: str, core: Core
) -> None:
    names = [f"acct{i}" for i in range(12)]

    async def scenario() -> tuple[list[Outcome], int, int]:
        ledger = await PostgresLedger.connect(ledger_url)
        try:
            assert ledger._committer is not None
            writers = {name: AccountWriter(name, ledger, core) for name in names}
            for writer in writers.values():
                await writer.start()
            await asyncio.gather(*(writers[name].submit(activation(name)) for name in names))
            calls_before = ledger._committer.calls
            flows = {name: orders(name, 40) for name in names}
            # Every account's callers queue at once, round after round: while one call is in
            # flight, each writer decides its next batch and queues it for the next call.
            outcomes = await asyncio.gather(
                *(
                    writers[name].submit(command)
                    for k in range(40)
                    for name in names
                    for command in [flows[name][k]]
                )
            )
            calls = ledger._committer.calls - calls_before
            batches = sum(sum(w.batch_sizes.values()) for w in writers.values()) - len(names)
            for writer in writers.values():
                await writer.stop()
            return list(outcomes), calls, batches
        finally:
            await ledger.close_async()

    outcomes, calls, batches = asyncio.run(scenario())
    assert {o.outcome for o in outcomes} <= {"accepted", "rejected"}
    assert calls < batches  # the writers' batches went into fewer calls...
    per_transaction = transactions_by_account(ledger_url)
    assert max(per_transaction) > 1  # ...and transactions held several accounts' records
    assert sum(1 for n in per_transaction if n > 1) >= len(per_transaction) // 4
    ledger = PostgresLedger(ledger_url)
    try:
        records = {record.position: record for record in ledger.iter_all()}
        for outcome in outcomes:  # each answer is its own command record, at the position it told
            record = records[outcome.position]
            assert (record.type, record.envelope["command_id"]) == (
                COMMAND_RECORDED,
                outcome.command_id,
            )
            assert record.envelope["data"]["outcome"] == outcome.outcome
        for name in names:
            versions = [r.version for r in records.values() if r.stream_id == account_stream(name)]
            assert versions == list(range(1, len(versions) + 1))
        assert verify_ledger(ledger).ok
    finally:
        ledger.close()
    verified = cli_verify(ledger_url)
    assert verified.returncode == 0, verified.stderr
    assert '"ok": true' in verified.stdout


def test_an_accounts_batch_decides_the_same_records_as_that_account_alone(
    ledger_url: str, core: Core, pg_server: PostgresServer
) -> None:
    """The stored bytes of an account do not depend on who shared its transactions."""

    async def run(url: str, names: list[str]) -> dict[str, list[bytes]]:
        ledger = await PostgresLedger.connect(url)
        try:
            writers = {name: AccountWriter(name, ledger, core) for name in names}
            for writer in writers.values():
                await writer.start()
            await asyncio.gather(*(writers[name].submit(activation(name)) for name in names))
            await asyncio.gather(
                *(writers[name].submit(c) for name in names for c in orders(name, 30))
            )
            for writer in writers.values():
                await writer.stop()
            return {
                name: [r.state for r in await ledger.read_stream_async(account_stream(name))]
                for name in names
            }
        finally:
            await ledger.close_async()

    shared = asyncio.run(run(ledger_url, ["a", "b", "c"]))
    alone_url = pg_server.create_database(f"titan_alone_{uuid.uuid4().hex[:8]}")
    try:
        upgrade(alone_url)
        alone = asyncio.run(run(alone_url, ["b"]))
    finally:
        pg_server.drop_database(alone_url)

    # Envelopes carry no chain-independent position, but prev_hash differs with the neighbours:
    # compare everything else.
    def unchained(states: list[bytes]) -> list[dict[str, Any]]:
        import orjson

        return [
            {k: v for k, v in orjson.loads(s).items() if k not in ("hash", "prev_hash")}
            for s in states
        ]

    assert unchained(shared["b"]) == unchained(alone["b"])


# Refusals fail only the append they concern -------------------------------------------------------


def test_a_stale_head_is_resealed_and_the_append_succeeds(ledger_url: str) -> None:
    script = textwrap.dedent(
        """
        import sys
        from adapters.postgres.ledger import PostgresLedger
        from tests.integration.test_ledger_contract import new
        ledger = PostgresLedger(sys.argv[1])
        ledger.append([new("account-other", 1), new("account-other", 2)])
        ledger.close()
        """
    )

    async def scenario() -> tuple[list[Record], int]:
        ledger = await PostgresLedger.connect(ledger_url)
        try:
            lease = await ledger.acquire_lease("account-mine", "me")
            await lease.append([new("account-mine", 1)])  # the committer now knows the head
            other = await asyncio.create_subprocess_exec(
                sys.executable, "-c", script, ledger_url, env=os.environ | {"PYTHONPATH": str(ROOT)}
            )
            assert await other.wait() == 0
            assert ledger._committer is not None
            calls = ledger._committer.calls
            written = await lease.append([new("account-mine", 2)])
            await lease.release()
            return written, ledger._committer.calls - calls
        finally:
            await ledger.close_async()

    written, calls = asyncio.run(scenario())
    assert calls == 2  # refused as stale, naming the head; sealed onto it and called again
    ledger = PostgresLedger(ledger_url)
    try:
        assert [r.stream_id for r in ledger.iter_all()] == [
            "account-mine",
            "account-other",
            "account-other",
            "account-mine",
        ]
        assert written[0].position == 4
        assert written[0].envelope["prev_hash"] == ledger.read_all(2, 1)[0].envelope["hash"]
        assert verify_ledger(ledger).ok
    finally:
        ledger.close()


def test_a_lost_lease_fails_only_that_accounts_append(ledger_url: str) -> None:
    async def scenario() -> tuple[list[Any], list[Any], int]:
        ledger = await PostgresLedger.connect(ledger_url)
        try:
            leases = [await ledger.acquire_lease(f"account-{name}", name) for name in "abcd"]
            # b's session is alive but gave its lock up; c's session is gone.
            await leases[1]._connection.execute("SELECT pg_advisory_unlock_all()")
            await asyncio.to_thread(terminate, ledger_url, lease_pid(leases[2]))
            assert ledger._committer is not None
            calls = ledger._committer.calls
            first = await asyncio.gather(
                *(
                    lease.append([new(lease.stream_id, 1), new(f"command-{lease.stream_id}", 1)])
                    for lease in leases
                ),
                return_exceptions=True,
            )
            calls = ledger._committer.calls - calls
            # The session of a reused pid has another start time: it does not pass either.
            d = leases[3]
            d.session = (d.session[0], d.session[1] - timedelta(microseconds=1))
            second = await asyncio.gather(
                d.append([new("account-d", 2)]),
                leases[0].append([new("account-a", 2)]),
                return_exceptions=True,
            )
            for lease in leases:
                await lease.release()
            return list(first), list(second), calls
        finally:
            await ledger.close_async()

    first, second, calls = asyncio.run(scenario())
    a, b, c, d = first
    assert isinstance(a, list) and isinstance(d, list)
    assert isinstance(b, LeaseLost) and "no longer holds" in str(b)
    # c's connection is closed (found before the call, or by the call: its session is gone).
    assert isinstance(c, LedgerUnreachable) and "nothing was appended" in str(c)
    assert calls == 2  # one call refused b, the next wrote a and d
    assert isinstance(second[0], LedgerUnreachable) and "is gone" in str(second[0])
    assert isinstance(second[1], list)
    assert transactions_by_account(ledger_url) == [2, 1]
    ledger = PostgresLedger(ledger_url)
    try:
        assert sorted({r.stream_id for r in ledger.iter_all()}) == [
            "account-a",
            "account-d",
            "command-account-a",
            "command-account-d",
        ]
        assert verify_ledger(ledger).ok
    finally:
        ledger.close()


def test_a_version_conflict_fails_only_that_append(ledger_url: str) -> None:
    async def scenario() -> list[Any]:
        ledger = await PostgresLedger.connect(ledger_url)
        try:
            leases = {
                name: await ledger.acquire_lease(f"account-{name}", name) for name in "abcdefg"
            }
            await leases["a"].append([new("account-a", 1)])
            appends = [
                leases["a"].append([new("account-a", 1), new("command-a1", 1)]),  # exists: conflict
                leases["b"].append([new("account-b", 1), new("command-shared", 1)]),
                leases["c"].append(
                    [new("account-c", 1), new("command-shared", 1)]
                ),  # b wrote it first
                leases["d"].append([new("account-d", 2)]),  # skips version 1
                leases["e"].append([new("account-e", 1), new("account-e", 1)]),  # repeats itself
                leases["f"].append([new("account-f", 1), new("command-f", 1)]),
                leases["g"].append([new("account-g", 2), new("account-g", 1)]),  # out of order
            ]
            results = await asyncio.gather(*appends, return_exceptions=True)
            for lease in leases.values():
                await lease.release()
            return list(results)
        finally:
            await ledger.close_async()

    a, b, c, d, e, f, g = asyncio.run(scenario())
    assert isinstance(a, VersionConflict) and (a.stream_id, a.version) == ("account-a", 1)
    assert isinstance(b, list) and isinstance(f, list)
    assert isinstance(c, VersionConflict) and (c.stream_id, c.version) == ("command-shared", 1)
    assert isinstance(d, ValueError) and "must be version 1, not 2" in str(d)
    assert isinstance(e, VersionConflict) and (e.stream_id, e.version) == ("account-e", 1)
    assert isinstance(g, ValueError) and "must be version 1, not 2" in str(g)
    ledger = PostgresLedger(ledger_url)
    try:
        assert Counter(r.stream_id for r in ledger.iter_all()) == Counter(
            {"account-a": 1, "account-b": 1, "command-shared": 1, "account-f": 1, "command-f": 1}
        )
        assert verify_ledger(ledger).ok
    finally:
        ledger.close()


def test_an_append_outside_a_writer_is_refused_alone_while_the_writer_appends(
    ledger_url: str,
) -> None:
    async def scenario() -> list[Any]:
        ledger = await PostgresLedger.connect(ledger_url)
        try:
            lease = await ledger.acquire_lease("account-held", "the-writer")
            results = await asyncio.gather(
                lease.append([new("account-held", 1)]),
                ledger.append_async([new("account-held", 1)]),
                ledger.append_async([new("account-free", 1)]),
                return_exceptions=True,
            )
            await lease.release()
            return list(results)
        finally:
            await ledger.close_async()

    held, outside, free = asyncio.run(scenario())
    assert isinstance(held, list) and isinstance(free, list)
    assert isinstance(outside, LeaseRefused) and "the-writer" in outside.holder


# Faults ------------------------------------------------------------------------------------------


def test_a_connection_lost_during_the_call_fails_every_append_in_it_and_the_committer_reconnects(
    ledger_url: str,
) -> None:
    async def scenario() -> tuple[list[Any], list[Record]]:
        ledger = await PostgresLedger.connect(ledger_url)
        blocker: psycopg.Connection[Any] = await asyncio.to_thread(
            lambda: psycopg.connect(ledger_url)
        )
        try:
            leases = [await ledger.acquire_lease(f"account-{name}", name) for name in "ab"]
            await leases[0].append([new("account-a", 1)])  # the committer is connected
            pid = committer_pid(ledger)
            await asyncio.to_thread(blocker.execute, "LOCK TABLE stored_events IN EXCLUSIVE MODE")
            pending = [
                asyncio.ensure_future(leases[0].append([new("account-a", 2)])),
                asyncio.ensure_future(leases[1].append([new("account-b", 1)])),
            ]
            await asyncio.sleep(0.3)  # the call waits for the table lock
            await asyncio.to_thread(terminate, ledger_url, pid)
            lost = await asyncio.gather(*pending, return_exceptions=True)
            await asyncio.to_thread(blocker.rollback)
            again = await leases[1].append([new("account-b", 1)])
            for lease in leases:
                await lease.release()
            return list(lost), again
        finally:
            blocker.close()
            await ledger.close_async()

    lost, again = asyncio.run(scenario())
    for error in lost:
        assert isinstance(error, LedgerUnreachable), error
        assert "outcome is unknown" in str(error)
    assert again[0].position == 2  # nothing of the lost call was written
    ledger = PostgresLedger(ledger_url)
    try:
        assert [r.stream_id for r in ledger.iter_all()] == ["account-a", "account-b"]
        assert verify_ledger(ledger).ok
    finally:
        ledger.close()


def accounts_writer(url: str, accounts: int, count: int) -> subprocess.Popen[str]:
    env = os.environ | {"PYTHONPATH": str(ROOT), "TITAN_CORE": "interpreted"}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.accounts_writer_child", url, str(accounts), str(count), "25"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def acks(lines: list[str]) -> dict[str, tuple[str, int]]:
    found: dict[str, tuple[str, int]] = {}
    for line in lines:
        if line.startswith("ACK "):
            _, command_id, outcome, position = line.split()
            found[command_id] = (outcome, int(position))
    return found


def test_killed_writers_of_many_accounts_lose_no_acknowledged_command_and_double_none(
    ledger_url: str,
) -> None:
    accounts, count = 4, 150
    first = accounts_writer(ledger_url, accounts, count)
    assert first.stdout is not None
    lines: list[str] = []
    for line in first.stdout:
        lines.append(line)
        if sum(1 for seen in lines if seen.startswith("ACK ")) >= 200:
            first.send_signal(signal.SIGKILL)  # mid-run: calls in flight, appends queued
            break
    first.wait(timeout=60)
    assert first.returncode == -signal.SIGKILL, (
        first.returncode,
        first.stderr.read() if first.stderr else "",
    )
    acknowledged = acks(lines)
    assert len(acknowledged) >= 200

    second = accounts_writer(ledger_url, accounts, count)
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    assert out.rstrip().endswith("DONE")
    answers = acks(out.splitlines())
    flow = [c for name in account_names(accounts) for c in [activation(name), *orders(name, count)]]
    assert set(answers) == {c.command_id for c in flow}

    ledger = PostgresLedger(ledger_url)
    try:
        records = list(ledger.iter_all())
        command_records = {
            r.envelope["command_id"]: r for r in records if r.type == COMMAND_RECORDED
        }
        for command_id, (outcome, position) in acknowledged.items():
            record = command_records[command_id]
            assert (record.envelope["data"]["outcome"], record.position) == (outcome, position)
            assert answers[command_id] == ("duplicate", position)
        counts = Counter(r.envelope["command_id"] for r in records if r.type == COMMAND_RECORDED)
        assert set(counts.values()) == {1}
        assert set(counts) == {c.command_id for c in flow}
        for name in account_names(accounts):
            stream = [r for r in records if r.stream_id == account_stream(name)]
            assert [r.version for r in stream] == list(range(1, len(stream) + 1))
            events = Counter(r.envelope["command_id"] for r in stream)
            for command_id, record in command_records.items():
                if command_id.startswith(f"{name}-"):
                    assert events[command_id] == len(record.envelope["data"]["event_ids"]), (
                        command_id
                    )
        assert max(transactions_by_account(ledger_url)) > 1  # the accounts did share transactions
        report = verify_ledger(ledger)
        assert report.ok, report
    finally:
        ledger.close()


# Ledgers from before 0005 -------------------------------------------------------------------------


def test_a_ledger_without_the_function_appends_in_four_round_trips_and_says_so_once(
    pg_url: str, tmp_path: Path, core: Core, caplog: pytest.LogCaptureFixture
) -> None:
    before_0005 = tmp_path / "migrations"
    before_0005.mkdir()
    for path in MIGRATIONS_DIR.glob("*.sql"):
        if not path.name.startswith("0005_"):
            shutil.copy(path, before_0005)
    upgrade(pg_url, before_0005)
    assert psql(pg_url, "SELECT to_regprocedure(%s) IS NULL", APPEND_FUNCTION) == [(True,)]

    async def write(names: list[str], start: int, loose_version: int) -> None:
        ledger = await PostgresLedger.connect(pg_url)
        try:
            writers = {name: AccountWriter(name, ledger, core) for name in names}
            for writer in writers.values():
                await writer.start()
            if start == 0:
                await asyncio.gather(*(writers[name].submit(activation(name)) for name in names))
            await asyncio.gather(
                *(writers[name].submit(c) for name in names for c in orders(name, 20, start))
            )
            for writer in writers.values():
                await writer.stop()
            await ledger.append_async([new("account-loose", loose_version)])
        finally:
            await ledger.close_async()

    with caplog.at_level(logging.WARNING, logger="titan.ledger"):
        asyncio.run(write(["x", "y"], 0, 1))
        again = PostgresLedger(pg_url)  # another ledger object: said once per process
        try:
            again.append([new("account-once", 1)])
        finally:
            again.close()
    said = [r.getMessage() for r in caplog.records if "titan_append" in r.getMessage()]
    assert len(said) == 1 and "run `titan db upgrade`" in said[0] and "four round trips" in said[0]
    assert max(transactions_by_account(pg_url)) == 1  # each writer committed alone

    applied, _ = upgrade(pg_url)
    assert [m.filename for m in applied] == ["0005_append.sql"]
    asyncio.run(write(["x", "y"], 20, 2))  # the same ledger, now one round trip
    assert max(transactions_by_account(pg_url)) > 1
    ledger = PostgresLedger(pg_url)
    try:
        assert ledger._committer is not None
        assert verify_ledger(ledger).ok
        records = list(ledger.iter_all())
        assert sum(1 for r in records if r.type == COMMAND_RECORDED) == 2 * (1 + 40)
        assert [r.version for r in records if r.stream_id == "account-loose"] == [1, 2]
    finally:
        ledger.close()


# Privileges -------------------------------------------------------------------------------------


def as_role(url: str, role: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{role}@{parts.netloc.rsplit('@', 1)[-1]}"))


def run_roles_script(url: str, writer: str, auditor: str) -> None:
    script = (ROOT / "adapters" / "postgres" / "sql" / "roles.sql").read_text()
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(sql.SQL("SET titan.writer_role = {}").format(sql.Literal(writer)))
        connection.execute(sql.SQL("SET titan.auditor_role = {}").format(sql.Literal(auditor)))
        connection.execute(script.encode())


@pytest.fixture
def role_names(pg_server: PostgresServer, pg_url: str) -> Iterator[dict[str, str]]:
    """Role names of this test, dropped after it with the databases they hold grants in."""
    suffix = uuid.uuid4().hex[:8]
    names = {kind: f"titan_{kind}_{suffix}" for kind in ("owner", "writer", "auditor", "stranger")}
    yield names
    pg_server.drop_database(pg_url)
    with psycopg.connect(pg_server.admin_url, autocommit=True) as connection:
        for database in connection.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (f"titan_owned_{suffix}%",)
        ).fetchall():
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(database[0])
                )
            )
        for role in names.values():
            connection.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def call_append(admin_url: str, url: str) -> None:
    """Call titan_append() directly with a well-formed one-record append, on `url`."""
    head = psql(admin_url, "SELECT position, hash FROM titan_chain_head")[0]
    state = b'{"stream_id":"account-s","type":"t.v1","version":1}'
    psql(
        url,
        "SELECT outcome FROM titan_append(5000, %s, %s, %s, 1, ARRAY[NULL]::int[], ARRAY[NULL]::int[], "
        "ARRAY[NULL]::timestamptz[], ARRAY[]::int[], ARRAY[]::int[], ARRAY['account-s'], ARRAY[0], "
        "ARRAY[1], ARRAY[1], ARRAY[1]::bigint[], ARRAY['t.v1'], ARRAY[%s]::bytea[])",
        head[0], head[1], "a" * 64, state,
    )  # fmt: skip


def test_the_function_refuses_inconsistent_arguments_and_writes_nothing(ledger_url: str) -> None:
    head = psql(ledger_url, "SELECT position, hash FROM titan_chain_head")[0]
    state = b'{"stream_id":"account-s","type":"t.v1","version":1}'
    call = (
        "SELECT outcome FROM titan_append(5000, %s, %s, %s, 1, ARRAY[NULL]::int[], ARRAY[NULL]::int[], "
        "ARRAY[NULL]::timestamptz[], ARRAY[]::int[], ARRAY[]::int[], ARRAY['account-s'], ARRAY[0], "
        "%s::int[], ARRAY[1], ARRAY[1]::bigint[], ARRAY['t.v1'], ARRAY[%s]::bytea[])"
    )
    for hash_, streams in (("a" * 64, [2]), ("a" * 64, [0]), ("not a hash", [1])):
        with pytest.raises(psycopg.errors.RaiseException, match="inconsistent arguments"):
            psql(ledger_url, call, head[0], head[1], hash_, streams, state)
    assert psql(ledger_url, "SELECT count(*) FROM stored_events") == [(0,)]
    assert psql(ledger_url, call, head[0], head[1], "a" * 64, [1], state) == [("appended",)]


def test_only_roles_granted_it_may_call_the_function(
    ledger_url: str, role_names: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    writer, auditor, stranger = role_names["writer"], role_names["auditor"], role_names["stranger"]
    run_roles_script(ledger_url, writer, auditor)
    # A role that may read and write the tables, but was never granted the function.
    psql(ledger_url, sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(stranger)).as_string())
    for statement in (
        "GRANT SELECT, INSERT ON stored_events TO {}",
        "GRANT USAGE ON SEQUENCE stored_events_notification_id_seq TO {}",
        "GRANT SELECT, UPDATE ON titan_chain_head TO {}",
        "GRANT SELECT ON titan_meta, titan_schema_migrations TO {}",
        "GRANT EXECUTE ON FUNCTION titan_lock_ledger() TO {}",
    ):
        psql(ledger_url, sql.SQL(statement).format(sql.Identifier(stranger)).as_string())
    for role in (auditor, stranger):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="titan_append"):
            call_append(ledger_url, as_role(ledger_url, role))
    # The stranger's ledger still appends, the four-round-trip way, and says why when it does.
    with caplog.at_level(logging.WARNING, logger="titan.ledger"):
        ledger = PostgresLedger(as_role(ledger_url, stranger))
        try:
            assert ledger._committer is None
            assert not any("titan_append" in r.getMessage() for r in caplog.records)
            ledger.append([new("account-stranger", 1)])
        finally:
            ledger.close()
    assert any("may not execute titan_append()" in r.getMessage() for r in caplog.records)
    # The writer role was granted it (by roles.sql), and appends through it under its lease.
    ledger = PostgresLedger(as_role(ledger_url, writer))
    try:
        assert ledger._committer is not None

        async def leased() -> list[Record]:
            lease = await ledger.acquire_lease("account-w", "w")
            try:
                return await lease.append([new("account-w", 1)])
            finally:
                await lease.release()

        asyncio.run(leased())
        assert verify_ledger(ledger).ok
    finally:
        ledger.close()


def test_an_owner_that_is_not_a_superuser_checks_the_writers_leases(
    pg_server: PostgresServer, role_names: dict[str, str]
) -> None:
    """roles.sql makes such an owner a member of the writer role, so that titan_append(), which
    runs with its rights, sees the start time of the writers' sessions."""
    owner, writer, auditor = role_names["owner"], role_names["writer"], role_names["auditor"]
    psql(
        pg_server.admin_url,
        sql.SQL("CREATE ROLE {} LOGIN CREATEROLE").format(sql.Identifier(owner)).as_string(),
    )
    url = pg_server.create_database(f"titan_owned_{owner.rsplit('_', 1)[-1]}")
    psql(url, sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
        sql.Identifier(urlsplit(url).path.lstrip("/")), sql.Identifier(owner)).as_string())  # fmt: skip
    owner_url = as_role(url, owner)
    upgrade(owner_url)
    run_roles_script(owner_url, writer, auditor)
    assert psql(url, "SELECT pg_has_role(%s, %s, 'USAGE')", owner, writer) == [(True,)]

    async def leased() -> list[Any]:
        ledger = await PostgresLedger.connect(as_role(url, writer))
        try:
            assert ledger._committer is not None
            lease = await ledger.acquire_lease("account-w", "w")
            written = await lease.append([new("account-w", 1)])
            await run_on(ledger._loop, lease._connection.execute("SELECT pg_advisory_unlock_all()"))
            lost = await asyncio.gather(lease.append([new("account-w", 2)]), return_exceptions=True)
            await lease.release()
            return [written, *lost]
        finally:
            await ledger.close_async()

    written, lost = asyncio.run(leased())
    assert written[0].position == 1
    assert isinstance(lost, LeaseLost)
