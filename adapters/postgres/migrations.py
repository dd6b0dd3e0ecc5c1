"""Versioned, idempotent schema migrations of a PostgreSQL ledger database (`titan db upgrade`).

Every `NNNN_name.sql` file under adapters/postgres/sql/migrations/ is one migration, applied in the
order of its number, each in its own transaction together with its row in
`titan_schema_migrations` (version, name, SHA-256 of the file, when). Applied files are never
edited: a file whose checksum no longer matches its row stops the upgrade. Migrations only add
(tables, views, triggers, read models): the ledger's records are never rewritten. 0001–0099 belong
to the ledger, 0100 and up to the read side; the runner applies whatever files it finds, in order.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final, TypeVar

import asyncpg

from adapters.postgres.ledger import connect, is_unreachable
from adapters.redact import redact
from commands.ports import LedgerError, LedgerUnreachable

T = TypeVar("T")

MIGRATIONS_DIR: Final = Path(__file__).parent / "sql" / "migrations"
MIGRATION_FILE: Final = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
MIGRATION_LOCK: Final = (0x7469746D, 0)  # "titm": one upgrade at a time per database

_CREATE_HISTORY: Final = """
CREATE TABLE public.titan_schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""
_PROBE: Final = """
SELECT to_regclass('public.titan_schema_migrations') IS NOT NULL AS has_history,
       ARRAY(SELECT c.relname::text FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
             ORDER BY c.relname) AS tables
"""


class MigrationError(LedgerError):
    """The migrations cannot be applied as they are (a changed, misnamed or failing file)."""


@dataclass(frozen=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    path: Path
    sql: str
    checksum: str

    @property
    def filename(self) -> str:
        """The file's name, e.g. 0001_ledger.sql."""
        return self.path.name


@dataclass(frozen=True)
class Applied:
    """A migration recorded in the database."""

    version: int
    name: str
    checksum: str
    applied_at: datetime


@dataclass(frozen=True)
class SchemaStatus:
    """Where a database stands against the migration files."""

    url: str
    applied: list[Applied]
    pending: list[Migration]
    changed: list[tuple[Applied, Migration]] = field(default_factory=list)
    unknown: list[Applied] = field(default_factory=list)

    @property
    def up_to_date(self) -> bool:
        """No migration pending, none changed since it was applied."""
        return not self.pending and not self.changed

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (`titan db status --json`)."""
        return {
            "ledger": self.url,
            "up_to_date": self.up_to_date,
            "applied": [
                {
                    "version": a.version,
                    "name": a.name,
                    "checksum": a.checksum,
                    "applied_at": a.applied_at.isoformat(),
                }
                for a in self.applied
            ],
            "pending": [{"version": m.version, "name": m.name} for m in self.pending],
            "changed": [
                {"version": a.version, "name": a.name, "applied": a.checksum, "file": m.checksum}
                for a, m in self.changed
            ],
            "unknown": [{"version": a.version, "name": a.name} for a in self.unknown],
        }


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migration files of a directory, in version order; raise MigrationError on a bad name."""
    migrations: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = MIGRATION_FILE.match(path.name)
        if match is None:
            raise MigrationError(
                f"migration file {path.name!r} is not named NNNN_name.sql "
                "(four digits, an underscore, lowercase letters, digits and underscores)"
            )
        version = int(match.group(1))
        if version in migrations:
            raise MigrationError(
                f"migrations {migrations[version].filename!r} and {path.name!r} share version {version}"
            )
        raw = path.read_bytes()
        migrations[version] = Migration(
            version, match.group(2), path, raw.decode("utf-8"), hashlib.sha256(raw).hexdigest()
        )
    return [migrations[version] for version in sorted(migrations)]


def status(url: str, directory: Path = MIGRATIONS_DIR) -> SchemaStatus:
    """Compare a database with the migration files, changing nothing."""
    return _run(status_async(url, directory))


def upgrade(url: str, directory: Path = MIGRATIONS_DIR) -> tuple[list[Migration], SchemaStatus]:
    """Apply every pending migration in order; return those applied and the status after."""
    return _run(upgrade_async(url, directory))


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even under a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="titan-db") as pool:
        return pool.submit(asyncio.run, coro).result()


async def status_async(url: str, directory: Path = MIGRATIONS_DIR) -> SchemaStatus:
    """Compare a database with the migration files, changing nothing."""
    migrations = discover(directory)
    connection = await connect(url, application_name="titan-db-status")
    try:
        return await _status(connection, url, migrations)
    except LedgerError:
        raise
    except Exception as error:
        raise _error(url, "read the schema of", error, connection) from error
    finally:
        await _close(connection)


async def upgrade_async(
    url: str, directory: Path = MIGRATIONS_DIR
) -> tuple[list[Migration], SchemaStatus]:
    """Apply every pending migration in order; return those applied and the status after.

    Concurrent upgrades of one database take turns on an advisory lock; a database that is
    already up to date is only read (a role without DDL rights can run this).
    """
    migrations = discover(directory)
    connection = await connect(url, application_name="titan-db-upgrade")
    applied: list[Migration] = []
    try:
        await connection.execute("SELECT pg_advisory_lock($1::int, $2::int)", *MIGRATION_LOCK)
        before = await _status(connection, url, migrations)
        _refuse_changed(before)
        need_history = not await connection.fetchval(
            "SELECT to_regclass('public.titan_schema_migrations') IS NOT NULL"
        )
        for migration in before.pending:
            try:
                async with connection.transaction():
                    if need_history:  # with the first migration: all of it, or nothing
                        await connection.execute(_CREATE_HISTORY)
                    await connection.execute(migration.sql)
                    await connection.execute(
                        "INSERT INTO public.titan_schema_migrations (version, name, checksum) "
                        "VALUES ($1, $2, $3)",
                        migration.version,
                        migration.name,
                        migration.checksum,
                    )
            except asyncpg.PostgresError as error:
                if is_unreachable(error, connection):
                    raise
                raise MigrationError(
                    f"migration {migration.filename} failed on {redact(url)} and was rolled back: "
                    f"{type(error).__name__}: {error}"
                ) from error
            applied.append(migration)
            need_history = False
        after = await _status(connection, url, migrations)
        return applied, after
    except LedgerError:
        raise
    except Exception as error:
        raise _error(url, "upgrade", error, connection) from error
    finally:
        await _close(connection)


async def _status(
    connection: asyncpg.Connection[asyncpg.Record], url: str, migrations: list[Migration]
) -> SchemaStatus:
    probe = await connection.fetchrow(_PROBE)
    assert probe is not None  # a SELECT without FROM returns one row
    if not probe["has_history"]:
        tables = list(probe["tables"])
        if tables:
            raise LedgerError(
                f"{redact(url)} is a PostgreSQL database but not a titan ledger: it has tables "
                f"{tables} and no titan_schema_migrations; point --ledger at an empty database "
                "or at a titan ledger"
            )
        return SchemaStatus(redact(url), [], list(migrations))
    rows = await connection.fetch(
        "SELECT version, name, checksum, applied_at FROM public.titan_schema_migrations ORDER BY version"
    )
    applied = [Applied(row[0], row[1], row[2], row[3]) for row in rows]
    by_version = {m.version: m for m in migrations}
    done = {a.version for a in applied}
    changed = [
        (a, by_version[a.version])
        for a in applied
        if a.version in by_version and by_version[a.version].checksum != a.checksum
    ]
    unknown = [a for a in applied if a.version not in by_version]
    pending = [m for m in migrations if m.version not in done]
    return SchemaStatus(redact(url), applied, pending, changed, unknown)


def _refuse_changed(current: SchemaStatus) -> None:
    if current.changed:
        applied, migration = current.changed[0]
        raise MigrationError(
            f"migration {migration.filename} was changed after it was applied on "
            f"{applied.applied_at.isoformat(timespec='seconds')} (applied sha256 {applied.checksum}, "
            f"file sha256 {migration.checksum}); applied migrations are never edited: restore the "
            "file and add a new migration"
        )


def _error(
    url: str, doing: str, error: BaseException, connection: asyncpg.Connection
) -> LedgerError:
    if is_unreachable(error, connection):
        return LedgerUnreachable(
            f"cannot {doing} {redact(url)}: the PostgreSQL server is unreachable ({type(error).__name__}: {error})"
        )
    return LedgerError(f"cannot {doing} {redact(url)}: {type(error).__name__}: {error}")


async def _close(connection: asyncpg.Connection[asyncpg.Record]) -> None:
    try:
        await asyncio.wait_for(connection.close(), timeout=5)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
        connection.terminate()
