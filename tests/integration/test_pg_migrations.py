"""`titan db upgrade`: versioned, idempotent, recorded migrations that never rewrite the ledger."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import psycopg
import pytest

from adapters.postgres.ledger import PostgresLedger
from adapters.postgres.migrations import MIGRATIONS_DIR, MigrationError, discover, status, upgrade
from commands.ports import NewRecord
from replay.chain import verify_ledger

pytestmark = pytest.mark.integration


def rows(url: str, statement: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as connection:
        return connection.execute(statement).fetchall()


@pytest.fixture
def migrations(tmp_path: Path) -> Path:
    """A copy of the project's migrations that a test may add to."""
    directory = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, directory)
    return directory


def test_the_project_ships_numbered_migrations_starting_with_the_ledger() -> None:
    found = discover()
    assert [m.filename for m in found[:3]] == ["0001_ledger.sql", "0002_append_only.sql", "0003_auditor_view.sql"]
    assert [m.version for m in found] == sorted(m.version for m in found)


def test_upgrade_applies_everything_once_and_records_it(pg_url: str) -> None:
    before = status(pg_url)
    assert before.applied == [] and len(before.pending) == len(discover())
    applied, after = upgrade(pg_url)
    assert [m.version for m in applied] == [m.version for m in discover()]
    assert after.up_to_date
    again, still = upgrade(pg_url)
    assert again == []
    assert still.applied == after.applied
    recorded = rows(pg_url, "SELECT version, name, checksum FROM titan_schema_migrations ORDER BY version")
    assert recorded == [(m.version, m.name, m.checksum) for m in discover()]


def test_a_new_migration_is_applied_without_touching_the_ledger(pg_url: str, migrations: Path) -> None:
    upgrade(pg_url, migrations)
    ledger = PostgresLedger(pg_url)
    try:
        ledger.append([NewRecord("account-a", 1, "t.v1", {"stream_id": "account-a", "version": 1, "type": "t.v1", "data": {}})])
        head = ledger.head()
        (migrations / "0150_read_model.sql").write_text(
            "CREATE TABLE read_model_example (account_id text PRIMARY KEY, position bigint NOT NULL);\n"
        )
        applied, after = upgrade(pg_url, migrations)
        assert [m.filename for m in applied] == ["0150_read_model.sql"]
        assert after.up_to_date
        assert ledger.head() == head
        assert verify_ledger(ledger).ok
    finally:
        ledger.close()


def test_a_failing_migration_is_rolled_back_and_not_recorded(pg_url: str, migrations: Path) -> None:
    upgrade(pg_url, migrations)
    (migrations / "0200_broken.sql").write_text(
        "CREATE TABLE half_done (id integer);\nSELECT * FROM no_such_table;\n"
    )
    with pytest.raises(MigrationError, match="0200_broken.sql failed.*rolled back.*no_such_table"):
        upgrade(pg_url, migrations)
    assert rows(pg_url, "SELECT to_regclass('public.half_done')") == [(None,)]
    assert [m.version for m in status(pg_url, migrations).pending] == [200]


def test_a_migration_changed_after_it_was_applied_stops_the_upgrade(pg_url: str, migrations: Path) -> None:
    upgrade(pg_url, migrations)
    view = migrations / "0003_auditor_view.sql"
    view.write_text(view.read_text() + "\n-- edited afterwards\n")
    current = status(pg_url, migrations)
    assert not current.up_to_date
    assert [a.version for a, _ in current.changed] == [3]
    with pytest.raises(MigrationError, match="0003_auditor_view.sql was changed after it was applied"):
        upgrade(pg_url, migrations)


def test_misnamed_or_duplicate_migration_files_are_refused(migrations: Path) -> None:
    (migrations / "4_oops.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="'4_oops.sql' is not named NNNN_name.sql"):
        discover(migrations)
    (migrations / "4_oops.sql").unlink()
    (migrations / "0001_again.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="share version 1"):
        discover(migrations)


def test_concurrent_upgrades_take_turns(pg_url: str) -> None:
    results: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            applied, _ = upgrade(pg_url)
            results.append(len(applied))
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(results) == [0, 0, 0, len(discover())]
    assert status(pg_url).up_to_date
