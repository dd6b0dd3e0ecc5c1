"""`titan audit sql "SELECT …"`: one read-only query (DuckDB) over a Parquet export or the live ledger.

The rules (docs/audit.md, "What a query may do"):

- The query is parsed by DuckDB's own parser first: exactly one statement, and a SELECT (WITH …
  SELECT, VALUES, DESCRIBE, SHOW and SUMMARIZE are SELECTs to DuckDB). Anything else (COPY,
  ATTACH, INSTALL/LOAD, SET/PRAGMA, CREATE, INSERT, two statements …) is refused unrun.
- Over an export (`--export DIR`), each `manifest.json` entry becomes a view only if its name is
  one of the export's tables (`records`, `commands`, `rm_<read model>`), and only if its file
  resolves inside DIR (no absolute path, no `..`, no symlink out). Identifiers and paths are quoted.
- The views are built, then the connection is locked down before the user's query runs: external
  access off (only the export's own files stay readable), extension auto-install and auto-load
  off, configuration locked, spills to a private scratch directory.
- Over the live ledger nothing is written to it. A SQLite ledger is read through a read-only
  connection (`mode=ro`) into a private snapshot (SQLite's backup API: one consistent read), which
  is exported to Parquet and queried; DuckDB's `sqlite` extension would have to be downloaded,
  which titan never does. A PostgreSQL ledger is read on read-only sessions
  (`default_transaction_read_only=on`); its read models are not built (that would write).
"""

from __future__ import annotations

import re
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import duckdb
import orjson

from commands.ports import Ledger, LedgerError

from .projections_hook import ReadSide

ACCEPTED: Final = "titan audit sql runs exactly one read-only SELECT (or WITH … SELECT) statement"
LEDGER_TABLES: Final = ("records", "commands")
READ_MODEL_PREFIX: Final = "rm_"
READ_ONLY_SETTING: Final = "default_transaction_read_only"

LOCKDOWN: Final = (
    "SET enable_external_access = false",
    "SET autoinstall_known_extensions = false",
    "SET autoload_known_extensions = false",
    "SET allow_community_extensions = false",
    "SET lock_configuration = true",
)
"""Run after the views are built and before the user's query (names as in DuckDB 1.1 to 2.0)."""

PG_LIVE_NOTE: Final = (
    "read models are not queried over a live PostgreSQL ledger (building them would write to the "
    "database): query `titan ledger export --out DIR` with --export DIR for the rm_ tables"
)


class AuditInputError(ValueError):
    """A query, an export directory or a ledger that cannot be used (exit 2)."""


@dataclass
class QueryResult:
    """Columns and rows of one query."""

    columns: list[str]
    rows: list[list[Any]]
    tables: list[str]
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON form: rows as objects."""
        return {
            "columns": self.columns,
            "rows": [dict(zip(self.columns, row, strict=True)) for row in self.rows],
            "row_count": len(self.rows),
            "tables": self.tables,
            "notes": self.notes,
        }


def plain(value: Any) -> Any:
    """A DuckDB value as a JSON-ready value (times as ISO-8601, decimals as strings)."""
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return value


def _short(text: str, limit: int = 120) -> str:
    """A value from a file, quoted and cut so that an error never echoes a megabyte."""
    return repr(text if len(text) <= limit else text[:limit] + "…")


def _first_line(error: BaseException) -> str:
    """DuckDB's message without its caret diagram: one line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


# --- the query ---------------------------------------------------------------------------------


def _statement_kind(statement: Any) -> str:
    """What a refused statement is, as its user wrote it (INSTALL is a LOAD to DuckDB)."""
    word = re.match(r"\s*([A-Za-z]+)", str(statement.query))
    return word.group(1).upper() if word else str(statement.type.name)


def single_select(sql: str) -> Any:
    """The one SELECT statement of `sql` (a duckdb.Statement); raise AuditInputError otherwise."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as error:
        raise AuditInputError(f"the query failed: {_first_line(error)}") from error
    if not statements:
        raise AuditInputError(f"refused: the query is empty; {ACCEPTED}")
    if len(statements) > 1:
        kinds = ", ".join(_statement_kind(s) for s in statements)
        raise AuditInputError(f"refused: {len(statements)} statements ({kinds}); {ACCEPTED}")
    statement = statements[0]
    if statement.type != duckdb.StatementType.SELECT:
        raise AuditInputError(f"refused: {_statement_kind(statement)} is not a SELECT; {ACCEPTED}")
    return statement


# --- the export's tables -----------------------------------------------------------------------


def known_tables() -> frozenset[str]:
    """The names an export's tables can have: the ledger's two and one per declared read model."""
    names = set(LEDGER_TABLES)
    try:
        from projections import registry
    except ImportError:
        return frozenset(names)
    for projection in getattr(registry, "PROJECTIONS", ()):
        for table in getattr(projection, "tables", ()):
            names.add(READ_MODEL_PREFIX + str(table.name).removeprefix(READ_MODEL_PREFIX))
    return frozenset(names)


def _table_file(root: Path, name: str, entry: Any) -> Path:
    """The resolved file of one manifest entry, which must lie inside the export."""
    where = f"manifest.json entry {name!r}"
    file = entry.get("file") if isinstance(entry, dict) else None
    if not isinstance(file, str) or not file:
        raise AuditInputError(f"{where} has no file name; an entry names a file inside the export")
    relative = PurePosixPath(file)
    if relative.is_absolute() or ".." in relative.parts or "\\" in file or "\x00" in file:
        raise AuditInputError(
            f"{where}: file {_short(file)} is not a plain relative path; only files inside the export are read"
        )
    try:
        resolved = (root / relative).resolve(strict=True)
    except (OSError, RuntimeError) as error:
        raise AuditInputError(f"{where}: file {_short(file)} cannot be read ({error})") from error
    if not resolved.is_relative_to(root):
        raise AuditInputError(
            f"{where}: file {_short(file)} resolves outside the export (to {str(resolved)!r}, through a "
            "symlink); only files inside the export are read"
        )
    if not resolved.is_file():
        raise AuditInputError(f"{where}: file {_short(file)} is not a regular file")
    return resolved


def export_tables(export_dir: Path) -> dict[str, Path]:
    """The Parquet files of an export, by table name; raise AuditInputError if it is not one."""
    if not export_dir.is_dir():
        raise AuditInputError(f"--export {str(export_dir)!r} is not a directory (make one with `titan ledger export`)")
    manifest = export_dir / "manifest.json"
    if not manifest.is_file():
        raise AuditInputError(f"--export {str(export_dir)!r} has no manifest.json: it is not a titan export")
    try:
        document = orjson.loads(manifest.read_bytes())
    except (OSError, orjson.JSONDecodeError) as error:
        raise AuditInputError(f"--export {str(export_dir)!r}: manifest.json cannot be read as JSON ({error})") from error
    files = document.get("files") if isinstance(document, dict) else None
    if not isinstance(files, dict):
        raise AuditInputError(f"--export {str(export_dir)!r}: manifest.json has no \"files\" object")
    root = export_dir.resolve()
    known = known_tables()
    tables: dict[str, Path] = {}
    for name, entry in sorted(files.items()):
        if name not in known:
            raise AuditInputError(
                f"manifest.json entry {_short(name)} is not a table of a titan export (accepted: "
                f"{', '.join(sorted(known))}); the export is refused"
            )
        tables[name] = _table_file(root, name, entry)
    return tables


# --- the connection ----------------------------------------------------------------------------


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def connect(tables: dict[str, Path], spill: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with one view per Parquet file, then locked: no file, network,
    extension or setting the query could reach besides those views."""
    connection = duckdb.connect(":memory:")
    try:
        for name, path in tables.items():
            connection.execute(f"CREATE VIEW {_identifier(name)} AS SELECT * FROM read_parquet({_literal(str(path))})")
        allowed = ", ".join(_literal(str(path)) for path in tables.values())
        connection.execute(f"SET allowed_paths = [{allowed}]")
        connection.execute(f"SET temp_directory = {_literal(str(spill))}")
        for setting in LOCKDOWN:
            connection.execute(setting)
    except BaseException:
        connection.close()
        raise
    return connection


def run_query(sql: str, tables: dict[str, Path]) -> QueryResult:
    """Run one SELECT over the tables; raise AuditInputError naming what was refused or failed."""
    statement = single_select(sql)
    with tempfile.TemporaryDirectory(prefix="titan-audit-spill-") as spill:
        connection = connect(tables, Path(spill))
        try:
            cursor = connection.execute(statement)
            columns = [str(d[0]) for d in cursor.description or ()]
            rows = [[plain(v) for v in row] for row in cursor.fetchall()]
        except duckdb.PermissionException as error:
            raise AuditInputError(
                f"refused: the query reaches outside the export's tables ({_first_line(error)}); {ACCEPTED} "
                "over the export's tables only"
            ) from error
        except duckdb.Error as error:
            raise AuditInputError(f"the query failed: {_first_line(error)}") from error
        finally:
            connection.close()
    return QueryResult(columns, rows, sorted(tables))


def query_export(sql: str, export_dir: Path) -> QueryResult:
    """Run a query over an existing export."""
    single_select(sql)  # refuse before reading anything
    return run_query(sql, export_tables(export_dir))


# --- the live ledger ---------------------------------------------------------------------------


def query_live(sql: str, ledger: Ledger, *, titan_version: str, read_side: ReadSide | None = None) -> QueryResult:
    """Run a query over a ledger opened read-only: export it to a private scratch directory, then
    query that (the query is checked first: a refused one costs no export)."""
    from .export import export_ledger

    single_select(sql)
    with tempfile.TemporaryDirectory(prefix="titan-audit-") as scratch:
        out = Path(scratch) / "export"
        exported = export_ledger(ledger, out, titan_version=titan_version, read_side=read_side)
        answer = query_export(sql, out)
    answer.notes.extend(exported.notes if read_side is not None else [PG_LIVE_NOTE])
    return answer


def snapshot_sqlite(path: Path, copy: Path) -> None:
    """Copy a SQLite ledger through a read-only connection (one consistent read; the file is
    never opened for writing); raise AuditInputError when it cannot be read."""
    if not path.is_file() or path.stat().st_size == 0:
        raise AuditInputError(f"no ledger at {str(path)!r} (an empty or missing file is not a ledger; pass --ledger)")
    try:
        source = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as error:
        raise AuditInputError(f"cannot read ledger {str(path)!r}: {error}") from error
    try:
        target = sqlite3.connect(copy)
        try:
            source.backup(target)
        finally:
            target.close()
    except sqlite3.Error as error:
        raise AuditInputError(f"cannot read ledger {str(path)!r}: {error}") from error
    finally:
        source.close()


def query_sqlite_ledger(
    sql: str, path: Path, *, open_copy: Callable[[Path], Ledger], titan_version: str, read_side: ReadSide | None = None
) -> QueryResult:
    """Run a query over a SQLite ledger file: snapshot it read-only into a private directory,
    open the snapshot with `open_copy`, export it (read models included) and query the export."""
    single_select(sql)
    with tempfile.TemporaryDirectory(prefix="titan-audit-") as scratch:
        copy = Path(scratch) / "ledger.db"
        snapshot_sqlite(path, copy)
        try:
            ledger = open_copy(copy)
        except LedgerError as error:  # name the user's file, not the private snapshot
            raise AuditInputError(str(error).replace(str(copy), str(path))) from error
        try:
            return query_live(sql, ledger, titan_version=titan_version, read_side=read_side)
        finally:
            ledger.close()


def read_only_url(url: str) -> str:
    """A PostgreSQL URL whose sessions are read-only (every transaction, whatever the URL said)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != READ_ONLY_SETTING]
    query.append((READ_ONLY_SETTING, "on"))
    return urlunsplit(parts._replace(query=urlencode(query)))
