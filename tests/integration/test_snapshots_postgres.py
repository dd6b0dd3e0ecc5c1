"""Snapshots in a PostgreSQL ledger's database (real server): the store's contract, a database
migrated before 0004, the writer starting from a snapshot (and skipping a spoiled row), and a
writer killed with SIGKILL mid-run and started again: nothing acknowledged is lost, nothing is
doubled, and every snapshot it wrote is proved by `titan replay verify`."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from adapters.postgres.ledger import PostgresLedger
from adapters.postgres.migrations import MIGRATIONS_DIR, upgrade
from adapters.postgres.snapshots import PostgresSnapshotStore
from commands.envelope import COMMAND_RECORDED, account_stream
from commands.snapshots import CHAIN_HASH, Snapshots, SnapshotStore, SnapshotStoreError
from commands.writer import AccountWriter
from infra.core import Core, load_core, load_cores
from replay.chain import verify_ledger
from replay.verify import verify_replay
from tests.integration.writer_support import activation, decision, orders
from tests.snapshot_support import folded, snapshot_bytes
from tests.unit.test_snapshot_store import SnapshotStoreContract, snap

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


class TestPostgresStore(SnapshotStoreContract):
    @pytest.fixture
    def store(self, pg_url: str) -> Iterator[SnapshotStore]:
        upgrade(pg_url)
        store = PostgresSnapshotStore(pg_url)
        yield store
        store.close()


def test_a_database_migrated_before_0004_has_no_snapshots_and_says_how_to_get_them(pg_url: str, tmp_path: Path) -> None:
    older = tmp_path / "migrations"
    older.mkdir()
    for path in MIGRATIONS_DIR.glob("*.sql"):
        if int(path.name[:4]) < 4 or 10 <= int(path.name[:4]) < 100:
            shutil.copyfile(path, older / path.name)
    upgrade(pg_url, older)
    store = PostgresSnapshotStore(pg_url)
    try:
        assert store.nearest("account-a") is None and store.listing() == [] and store.count() == 0
        with pytest.raises(SnapshotStoreError, match="titan db upgrade"):
            store.save(snap("account-a", 1, 1))
        upgrade(pg_url)  # 0004 now: the same store saves
        assert store.save(snap("account-a", 1, 1)) is True
    finally:
        store.close()


def test_the_table_and_the_writer_roles_grants(pg_url: str) -> None:
    upgrade(pg_url)
    with psycopg.connect(pg_url) as db:
        columns = {row[0] for row in db.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'titan_snapshots'"
        )}  # fmt: skip
        assert columns == {
            "stream_id", "version", "position", "chain_hash", "core_format", "state", "state_sha256",
            "set_by", "created_ns",
        }  # fmt: skip
        writer = db.execute("SELECT 1 FROM pg_roles WHERE rolname = 'titan_writer'").fetchone()
        if writer is not None:  # granted by 0004 when the role existed before it ran
            grants = {row[0] for row in db.execute(
                "SELECT privilege_type FROM information_schema.role_table_grants "
                "WHERE table_name = 'titan_snapshots' AND grantee = 'titan_writer'"
            )}  # fmt: skip
            assert grants == {"SELECT", "INSERT", "DELETE"}


@pytest.fixture(scope="module")
def core() -> Core:
    return load_core()


def run(url: str, core: Core, commands: list[Any], every: int = 10) -> tuple[AccountWriter, list[Any]]:
    async def go() -> tuple[AccountWriter, list[Any]]:
        ledger = await PostgresLedger.connect(url)
        snapshots = Snapshots(PostgresSnapshotStore(url), ledger)
        try:
            writer = AccountWriter("acct", ledger, core, snapshots=snapshots, snapshot_every=every)
            await writer.start()
            answers = [decision(await writer.submit(command)) for command in commands]
            await writer.stop()
            return writer, answers
        finally:
            await asyncio.to_thread(snapshots.close)
            await ledger.close_async()

    return asyncio.run(go())


def test_a_writer_on_postgresql_starts_from_its_snapshot_and_skips_a_spoiled_one(pg_url: str, core: Core) -> None:
    upgrade(pg_url)
    writer_one, _ = run(pg_url, core, [activation("acct"), *orders("acct", 35)])
    again, _ = run(pg_url, core, [])
    assert again.started_from is not None and again.started_from.version == writer_one.version
    ledger = PostgresLedger(pg_url)
    try:
        assert snapshot_bytes(core, again.state) == snapshot_bytes(core, folded(core, ledger, "acct"))
        with psycopg.connect(pg_url) as db:
            versions = [row[0] for row in db.execute("SELECT version FROM titan_snapshots ORDER BY version")]
            db.execute("UPDATE titan_snapshots SET chain_hash = %s WHERE version = %s", ("0" * 64, versions[-1]))
        spoiled, answers = run(pg_url, core, orders("acct", 5, 35))
        assert [(s.version, s.code) for s in spoiled.snapshot_skips] == [(versions[-1], CHAIN_HASH)]
        assert spoiled.started_from is not None and spoiled.started_from.version == versions[-2]
        assert snapshot_bytes(core, spoiled.state) == snapshot_bytes(core, folded(core, ledger, "acct"))
        assert all(a[1] in ("accepted", "rejected") for a in answers)
    finally:
        ledger.close()


COUNT = 600


def child(url: str) -> subprocess.Popen[str]:
    env = os.environ | {"PYTHONPATH": str(ROOT), "TITAN_CORE": "interpreted"}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.snapshot_writer_child", url, "acct", str(COUNT), "25", "40"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def acks(lines: list[str]) -> dict[str, tuple[str, int]]:
    found: dict[str, tuple[str, int]] = {}
    for line in lines:
        if line.startswith("ACK "):
            _, command_id, outcome, position = line.split()
            found[command_id] = (outcome, int(position))
    return found


def test_a_writer_killed_mid_run_restarts_from_a_snapshot_losing_and_doubling_nothing(pg_url: str) -> None:
    upgrade(pg_url)
    first = child(pg_url)
    assert first.stdout is not None
    lines: list[str] = []
    for line in first.stdout:
        lines.append(line)
        if sum(1 for seen in lines if seen.startswith("ACK ")) >= 300:
            first.send_signal(signal.SIGKILL)  # mid-run: batches queued, one in flight, snapshots taken
            break
    first.wait(timeout=60)
    assert first.returncode == -signal.SIGKILL
    acknowledged = acks(lines)
    store = PostgresSnapshotStore(pg_url)
    try:
        before = store.listing()
        assert before, "the first writer took no snapshot before it was killed"

        second = child(pg_url)
        out, err = second.communicate(timeout=300)
        assert second.returncode == 0, err
        started = next(line for line in out.splitlines() if line.startswith("STARTED"))
        assert int(started.split()[1]) == before[-1].version  # from the newest snapshot the first left
        answers = acks(out.splitlines())
        flow = [activation("acct"), *orders("acct", COUNT)]
        assert set(answers) == {c.command_id for c in flow}

        ledger = PostgresLedger(pg_url)
        try:
            records = list(ledger.iter_all())
            command_records = {r.envelope["command_id"]: r for r in records if r.type == COMMAND_RECORDED}
            for command_id, (outcome, position) in acknowledged.items():
                record = command_records[command_id]
                assert (record.envelope["data"]["outcome"], record.position) == (outcome, position)
                assert answers[command_id] == ("duplicate", position)
            counts = Counter(r.envelope["command_id"] for r in records if r.type == COMMAND_RECORDED)
            assert set(counts.values()) == {1} and set(counts) == {c.command_id for c in flow}
            versions = [r.version for r in records if r.stream_id == account_stream("acct")]
            assert versions == list(range(1, len(versions) + 1))
            assert verify_ledger(ledger).ok
            report = verify_replay(ledger, load_cores("both"), snapshots=store)
            assert report.ok, report.summary()
            assert report.snapshots is not None and report.snapshots.proved == store.count() > len(before)
        finally:
            ledger.close()
    finally:
        store.close()


def _as_role(url: str, role: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{role}@{parts.netloc.rsplit('@', 1)[-1]}"))


def test_the_documented_set_up_lets_the_writer_role_take_and_verify_snapshots(pg_url: str, pg_server: Any) -> None:
    """`titan db upgrade` first (0004 runs before the writer role exists), then roles.sql, as
    docs/postgres.md says: the writer role stores, prunes and reads snapshots, and `titan replay
    verify` as that role proves them (found by review: roles.sql granted nothing on the table)."""
    import uuid

    from psycopg import sql

    upgrade(pg_url)
    writer_role = f"titan_writer_sn{uuid.uuid4().hex[:8]}"
    auditor_role = f"titan_auditor_sn{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute(sql.SQL("SET titan.writer_role = {}").format(sql.Literal(writer_role)))
        db.execute(sql.SQL("SET titan.auditor_role = {}").format(sql.Literal(auditor_role)))
        db.execute((ROOT / "adapters" / "postgres" / "sql" / "roles.sql").read_bytes())
    writer_url = _as_role(pg_url, writer_role)
    core = load_core()
    try:

        async def go() -> AccountWriter:
            ledger = await PostgresLedger.connect(writer_url)
            snapshots = Snapshots(PostgresSnapshotStore(writer_url), ledger)
            try:
                writer = AccountWriter("acct", ledger, core, snapshots=snapshots, snapshot_every=5, snapshot_keep=2)
                await writer.start()
                for command in [activation("acct"), *orders("acct", 12)]:
                    await writer.submit(command)
                await writer.stop()
                return writer
            finally:
                await asyncio.to_thread(snapshots.close)
                await ledger.close_async()

        writer = asyncio.run(go())
        assert writer.snapshots_written > 0 and writer.snapshot_failures == 0
        ledger = PostgresLedger(writer_url)
        store = PostgresSnapshotStore(writer_url)
        try:
            report = verify_replay(ledger, load_cores("compiled"), snapshots=store, second_process=False)
        finally:
            store.close()
            ledger.close()
        assert report.ok, report.summary()
        assert report.snapshots is not None
        assert report.snapshots.as_dict()["proved"] == 2
    finally:
        with psycopg.connect(pg_server.admin_url, autocommit=True) as db:
            for role in (writer_role, auditor_role):
                db.execute(sql.SQL("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = {}").format(sql.Literal(role)))
        with psycopg.connect(pg_url, autocommit=True) as db:
            for role in (writer_role, auditor_role):
                db.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        with psycopg.connect(pg_server.admin_url, autocommit=True) as db:
            for role in (writer_role, auditor_role):
                db.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
