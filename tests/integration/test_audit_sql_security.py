"""`titan audit sql` is read-only and stays inside the export (issue 9 §4): real DuckDB, real
SQLite ledger files, real PostgreSQL; every escape an attacker tried is refused and writes nothing."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest

from commands.ports import Ledger
from infra.bootstrap import bootstrap, open_ledger
from infra.demo import run as run_demo
from infra.golden import GOLDEN_DIR, load_manifest
from infra.read_models import READ_SIDE
from infra.settings import Settings
from replay.audit import (
    AuditInputError,
    export_tables,
    known_tables,
    query_export,
    query_live,
    query_sqlite_ledger,
    read_only_url,
    single_select,
)
from replay.export import export_ledger

pytestmark = pytest.mark.integration

GOLDEN = "demo-seed2026-orders25"
ENTRY = load_manifest()["ledgers"][GOLDEN]


def _fingerprint(path: Path) -> tuple[str, int]:
    data = path.read_bytes()
    return hashlib.sha256(data).hexdigest(), len(data)


def _open_copy(copy: Path) -> Ledger:
    return open_ledger("sqlite:///" + str(copy), create=False)


@pytest.fixture(scope="module")
def ledger_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of a golden ledger (a real titan SQLite file), in WAL mode as titan leaves it."""
    target: Path = tmp_path_factory.mktemp("ledger") / ENTRY["file"]
    shutil.copyfile(GOLDEN_DIR / ENTRY["file"], target)
    return target


@pytest.fixture(scope="module")
def export_dir(ledger_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    ledger = _open_copy(ledger_file)
    try:
        out = tmp_path_factory.mktemp("export") / "export"
        export_ledger(ledger, out, titan_version="test", read_side=READ_SIDE)
    finally:
        ledger.close()
    return out


@pytest.fixture
def crafted(export_dir: Path, tmp_path: Path) -> Iterator[Path]:
    """A private copy of the export whose manifest a test may rewrite."""
    copy = tmp_path / "crafted"
    shutil.copytree(export_dir, copy)
    yield copy


def _rewrite_manifest(export: Path, files: dict[str, Any]) -> None:
    manifest = orjson.loads((export / "manifest.json").read_bytes())
    manifest["files"] = files
    (export / "manifest.json").write_bytes(orjson.dumps(manifest))


# --- one read-only SELECT per call -------------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT count(*) FROM records",
        "WITH c AS (SELECT * FROM commands) SELECT count(*) FROM c",
        "  select count(*) from records ; ",
        "SELECT count(*) FROM records -- a trailing comment",
    ],
)
def test_one_select_or_with_select_is_accepted(export_dir: Path, sql: str) -> None:
    result = query_export(sql, export_dir)
    assert len(result.rows) == 1 and result.rows[0][0] > 0


@pytest.mark.parametrize(
    ("sql", "named"),
    [
        ("COPY records TO '/tmp/titan-audit-escape.csv'", "COPY"),
        ("ATTACH '/tmp/titan-audit-escape.db' AS x", "ATTACH"),
        ("DETACH memory", "DETACH"),
        ("INSTALL sqlite", "INSTALL"),
        ("LOAD sqlite", "LOAD"),
        ("SET enable_external_access = true", "SET"),
        ("RESET lock_configuration", "RESET"),
        ("PRAGMA enable_external_access", "PRAGMA"),
        ("CREATE TABLE t AS SELECT 1", "CREATE"),
        ("CREATE SECRET s (TYPE s3)", "CREATE"),
        ("INSERT INTO records SELECT * FROM records", "INSERT"),
        ("EXPORT DATABASE '/tmp/titan-audit-escape'", "EXPORT"),
        ("CALL pragma_version()", "CALL"),
        ("CHECKPOINT", "CHECKPOINT"),
        ("USE memory", "USE"),
        ("EXPLAIN ANALYZE SELECT 1", "EXPLAIN"),
        ("SELECT 1; COPY records TO '/tmp/titan-audit-escape.csv'", "2 statements (SELECT, COPY)"),
        ("SELECT 1; SELECT 2", "2 statements (SELECT, SELECT)"),
    ],
)
def test_anything_but_one_select_is_refused_before_it_runs(export_dir: Path, sql: str, named: str) -> None:
    with pytest.raises(AuditInputError) as refused:
        query_export(sql, export_dir)
    message = str(refused.value)
    assert message.startswith("refused: ") and named in message
    assert "exactly one read-only SELECT (or WITH … SELECT)" in message
    assert "\n" not in message
    assert not Path("/tmp/titan-audit-escape.csv").exists() and not Path("/tmp/titan-audit-escape.db").exists()


def test_an_empty_or_unparsable_query_is_bad_input() -> None:
    with pytest.raises(AuditInputError, match="the query is empty"):
        single_select("  -- nothing\n")
    with pytest.raises(AuditInputError, match=r"^the query failed: Parser Error: syntax error") as error:
        single_select("SELEC 1")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_text('/etc/passwd')",
        "SELECT * FROM read_blob('/etc/passwd')",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_json('/etc/passwd')",
        "SELECT * FROM glob('/etc/*')",
        "SELECT * FROM read_parquet('OUTSIDE')",
        "SELECT * FROM read_parquet('https://example.com/x.parquet')",
        "SELECT count(*) FROM records WHERE EXISTS (SELECT * FROM read_text('/etc/hostname'))",
        "WITH x AS (SELECT content FROM read_text('/etc/passwd')) SELECT * FROM x",
    ],
)
def test_a_select_cannot_read_any_file_but_the_exports(export_dir: Path, tmp_path: Path, sql: str) -> None:
    outside = tmp_path / "outside.parquet"
    pq.write_table(pa.table({"secret": ["s3cr3t"]}), outside)
    with pytest.raises(AuditInputError, match="^refused: the query reaches outside the export's tables") as refused:
        query_export(sql.replace("OUTSIDE", str(outside)), export_dir)
    assert "s3cr3t" not in str(refused.value) and "root:" not in str(refused.value)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM query('COPY records TO ''/tmp/titan-audit-escape.csv''')",
        "SELECT * FROM query('SET enable_external_access = true')",
        "SELECT * FROM '/etc/passwd'",
        "SELECT * FROM sqlite_scan('/tmp/titan-audit-escape.db', 'stored_events')",
    ],
)
def test_statements_smuggled_into_a_select_are_refused(export_dir: Path, sql: str) -> None:
    with pytest.raises(AuditInputError):
        query_export(sql, export_dir)
    assert not Path("/tmp/titan-audit-escape.csv").exists() and not Path("/tmp/titan-audit-escape.db").exists()


def test_the_connection_is_locked_down_before_the_query_runs(export_dir: Path) -> None:
    result = query_export(
        "SELECT current_setting('enable_external_access'), current_setting('lock_configuration'), "
        "current_setting('autoinstall_known_extensions'), current_setting('autoload_known_extensions'), "
        "current_setting('allow_community_extensions'), current_setting('allowed_directories'), "
        "current_setting('allowed_paths')",
        export_dir,
    )
    (row,) = result.rows
    assert row[:5] == [False, True, False, False, False]
    # readable besides the views' files: only DuckDB's private spill directory (removed afterwards)
    (spill,) = row[5]
    assert Path(spill).name.startswith("titan-audit-spill-") and not Path(spill).exists()
    assert sorted(row[6]) == sorted(str(p) for p in export_tables(export_dir).values())


# --- the export's manifest ---------------------------------------------------------------------


def test_the_known_tables_are_the_ledgers_and_the_declared_read_models() -> None:
    known = known_tables()
    assert {"records", "commands", "rm_orders", "rm_positions"} <= known
    assert all(name in ("records", "commands") or name.startswith("rm_") for name in known)


def test_a_view_name_that_injects_sql_is_refused_naming_the_entry(crafted: Path, tmp_path: Path) -> None:
    written = tmp_path / "pwned.csv"
    name = f"records\" AS SELECT 1; COPY (SELECT 1) TO '{written}'; CREATE VIEW \"x"
    _rewrite_manifest(crafted, {name: {"file": "records.parquet"}, "commands": {"file": "commands.parquet"}})
    with pytest.raises(AuditInputError, match="is not a table of a titan export") as refused:
        query_export("SELECT count(*) FROM commands", crafted)
    assert 'records" AS SELECT 1' in str(refused.value)
    assert "accepted: commands" in str(refused.value)
    assert not written.exists()


@pytest.mark.parametrize("file", ["../outside.parquet", "sub/../../outside.parquet", "ABSOLUTE"])
def test_a_manifest_path_outside_the_export_is_refused(crafted: Path, tmp_path: Path, file: str) -> None:
    outside = tmp_path / "outside.parquet"
    pq.write_table(pa.table({"secret": ["s3cr3t"]}), outside)
    file = str(outside) if file == "ABSOLUTE" else file
    _rewrite_manifest(crafted, {"records": {"file": file}})
    with pytest.raises(AuditInputError, match=r"manifest.json entry 'records': file .* is not a plain relative path"):
        query_export("SELECT * FROM records", crafted)


def test_a_manifest_file_that_is_a_symlink_out_of_the_export_is_refused(crafted: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.parquet"
    pq.write_table(pa.table({"secret": ["s3cr3t"]}), outside)
    (crafted / "records.parquet").unlink()
    os.symlink(outside, crafted / "records.parquet")
    with pytest.raises(AuditInputError, match=r"entry 'records': file 'records.parquet' resolves outside the export") as refused:
        query_export("SELECT * FROM records", crafted)
    assert "through a symlink" in str(refused.value)
    # a symlinked directory is followed the same way
    (crafted / "records.parquet").unlink()
    os.symlink(tmp_path, crafted / "sub")
    _rewrite_manifest(crafted, {"records": {"file": "sub/outside.parquet"}})
    with pytest.raises(AuditInputError, match="resolves outside the export"):
        query_export("SELECT * FROM records", crafted)


def test_a_symlink_that_stays_inside_the_export_is_followed(crafted: Path) -> None:
    (crafted / "again.parquet").symlink_to(crafted / "records.parquet")
    _rewrite_manifest(crafted, {"records": {"file": "again.parquet"}})
    assert query_export("SELECT count(*) FROM records", crafted).rows == [[ENTRY["records"]]]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"records": {}}, "entry 'records' has no file name"),
        ({"records": {"file": "missing.parquet"}}, "entry 'records': file 'missing.parquet' cannot be read"),
        ({"records": {"file": "."}}, "entry 'records': file '.' is not a regular file"),
        ("not an object", 'manifest.json has no "files" object'),
    ],
)
def test_a_malformed_manifest_entry_is_refused(crafted: Path, files: Any, message: str) -> None:
    _rewrite_manifest(crafted, files)
    with pytest.raises(AuditInputError, match=message):
        export_tables(crafted)


def test_a_manifest_that_is_not_json_is_refused(crafted: Path) -> None:
    (crafted / "manifest.json").write_text("{not json")
    with pytest.raises(AuditInputError, match="manifest.json cannot be read as JSON"):
        query_export("SELECT 1", crafted)


# --- the live ledger ---------------------------------------------------------------------------


def test_a_live_query_leaves_the_sqlite_ledger_byte_for_byte_unchanged(ledger_file: Path) -> None:
    before = _fingerprint(ledger_file)
    tables = _sqlite_tables(ledger_file)
    result = query_sqlite_ledger(
        "SELECT (SELECT count(*) FROM records), (SELECT hash FROM records ORDER BY position DESC LIMIT 1), "
        "(SELECT count(*) FROM rm_orders)",
        ledger_file,
        open_copy=_open_copy,
        titan_version="test",
        read_side=READ_SIDE,
    )
    assert result.rows[0][:2] == [ENTRY["records"], ENTRY["head_hash"]]
    assert result.rows[0][2] > 0  # read models were built, in the private snapshot
    assert _fingerprint(ledger_file) == before
    assert _sqlite_tables(ledger_file) == tables


def _sqlite_tables(path: Path) -> list[str]:
    connection = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        return sorted(row[0] for row in connection.execute("SELECT name FROM sqlite_master"))
    finally:
        connection.close()


@pytest.mark.parametrize(
    "sql",
    [
        "COPY (SELECT 'overwritten') TO 'LEDGER' (FORMAT csv)",
        "COPY records TO 'LEDGER' (FORMAT parquet)",
        "SELECT * FROM query('COPY records TO ''LEDGER''')",
        "ATTACH 'LEDGER' AS live",
        "SELECT count(*) FROM records; COPY records TO 'LEDGER'",
    ],
)
def test_copy_to_over_the_live_ledger_cannot_overwrite_it(ledger_file: Path, sql: str) -> None:
    before = _fingerprint(ledger_file)
    with pytest.raises(AuditInputError):
        query_sqlite_ledger(sql.replace("LEDGER", str(ledger_file)), ledger_file, open_copy=_open_copy, titan_version="test")
    assert _fingerprint(ledger_file) == before


def test_a_missing_or_empty_ledger_file_is_not_a_ledger_and_stays_as_it_was(tmp_path: Path) -> None:
    with pytest.raises(AuditInputError, match="no ledger at"):
        query_sqlite_ledger("SELECT 1", tmp_path / "none.db", open_copy=_open_copy, titan_version="test")
    assert not (tmp_path / "none.db").exists()
    empty = tmp_path / "empty.db"
    empty.touch()
    with pytest.raises(AuditInputError, match="an empty or missing file is not a ledger"):
        query_sqlite_ledger("SELECT 1", empty, open_copy=_open_copy, titan_version="test")
    assert empty.stat().st_size == 0


def test_a_refused_query_is_refused_before_the_ledger_is_read(tmp_path: Path) -> None:
    # no ledger at all: the refusal names the statement, not the missing file
    with pytest.raises(AuditInputError, match="refused: COPY is not a SELECT"):
        query_sqlite_ledger("COPY records TO 'x'", tmp_path / "none.db", open_copy=_open_copy, titan_version="test")


def test_read_only_url_forces_read_only_sessions() -> None:
    assert read_only_url("postgresql://u@h:5432/db") == "postgresql://u@h:5432/db?default_transaction_read_only=on"
    assert (
        read_only_url("postgresql://u@h/db?default_transaction_read_only=off&sslmode=disable")
        == "postgresql://u@h/db?sslmode=disable&default_transaction_read_only=on"
    )


def test_a_live_query_on_postgresql_runs_on_read_only_sessions(pg_url: str) -> None:
    ledger = open_ledger(pg_url)
    try:
        bus = bootstrap(Settings(ledger_url=pg_url, core="interpreted"), ledger=ledger)
        run_demo(bus, seed=3, orders=8, ledger_url=pg_url, progress=False)
        head = ledger.head()
    finally:
        ledger.close()
    tables_before = asyncio.run(_pg_tables(pg_url))
    store = open_ledger(read_only_url(pg_url), create=False)
    try:
        result = query_live(
            "SELECT count(*), max(position) FROM records", store, titan_version="test"
        )
    finally:
        store.close()
    assert result.rows == [[head[2], head[0]]]
    assert any("read models are not queried over a live PostgreSQL ledger" in note for note in result.notes)
    assert asyncio.run(_pg_tables(pg_url)) == tables_before  # no read-model or staging table was made
    with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
        asyncio.run(_pg_write(read_only_url(pg_url)))


async def _pg_tables(url: str) -> list[str]:
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch("SELECT schemaname || '.' || tablename AS t FROM pg_tables ORDER BY 1")
        return [str(row["t"]) for row in rows]
    finally:
        await connection.close()


async def _pg_write(url: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("CREATE TABLE audit_escape (a int)")
    finally:
        await connection.close()


def test_a_file_that_is_not_a_titan_ledger_is_refused_naming_it(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    connection = sqlite3.connect(other)
    connection.execute("CREATE TABLE t (a)")
    connection.commit()
    connection.close()
    before = _fingerprint(other)
    with pytest.raises(AuditInputError, match=f"^{other} is .*not a titan ledger"):
        query_sqlite_ledger("SELECT 1", other, open_copy=_open_copy, titan_version="test")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all\n" * 100)
    with pytest.raises(AuditInputError, match="cannot read ledger .*junk.db.*: file is not a database"):
        query_sqlite_ledger("SELECT 1", junk, open_copy=_open_copy, titan_version="test")
    assert _fingerprint(other) == before
