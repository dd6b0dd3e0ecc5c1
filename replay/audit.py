"""`titan audit sql "SELECT …"`: DuckDB over a Parquet export, or over the live ledger.

Over an export (`--export DIR`), every `<name>.parquet` of the export is a view named `<name>`
(`records`, `commands`, and each read model). Over the live ledger, titan first exports it to a
scratch directory (the same files, the same names) and runs the query there: DuckDB's `sqlite`
extension is not bundled with DuckDB and would have to be downloaded, which titan never does
(the query would otherwise depend on the network). Extension auto-install is switched off.

The connection is in memory; the export's files are only read.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import orjson


class AuditInputError(ValueError):
    """A query or an export directory that cannot be used (exit 2)."""


@dataclass
class QueryResult:
    """Columns and rows of one query."""

    columns: list[str]
    rows: list[list[Any]]
    tables: list[str]

    def as_dict(self) -> dict[str, Any]:
        """JSON form: rows as objects."""
        return {
            "columns": self.columns,
            "rows": [dict(zip(self.columns, row, strict=True)) for row in self.rows],
            "row_count": len(self.rows),
            "tables": self.tables,
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


def export_tables(export_dir: Path) -> dict[str, Path]:
    """The Parquet files of an export, by table name; raise AuditInputError if it is not one."""
    if not export_dir.is_dir():
        raise AuditInputError(f"--export {str(export_dir)!r} is not a directory (make one with `titan ledger export`)")
    manifest = export_dir / "manifest.json"
    if not manifest.exists():
        raise AuditInputError(f"--export {str(export_dir)!r} has no manifest.json: it is not a titan export")
    files = orjson.loads(manifest.read_bytes()).get("files", {})
    return {name: export_dir / entry["file"] for name, entry in sorted(files.items())}


def connect(tables: dict[str, Path]) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with one view per Parquet file, never reaching the network."""
    connection = duckdb.connect(":memory:")
    connection.execute("SET autoinstall_known_extensions = false")
    connection.execute("SET autoload_known_extensions = false")
    for name, path in tables.items():
        quoted = str(path).replace("'", "''")
        connection.execute(f'CREATE VIEW "{name}" AS SELECT * FROM read_parquet(\'{quoted}\')')
    return connection


def run_query(sql: str, tables: dict[str, Path]) -> QueryResult:
    """Run one query over the tables; raise AuditInputError with DuckDB's message on a bad query."""
    connection = connect(tables)
    try:
        cursor = connection.execute(sql)
        if cursor.description is None:
            return QueryResult([], [], sorted(tables))
        columns = [str(d[0]) for d in cursor.description]
        rows = [[plain(v) for v in row] for row in cursor.fetchall()]
    except duckdb.Error as error:
        raise AuditInputError(f"the query failed: {error}") from error
    finally:
        connection.close()
    return QueryResult(columns, rows, sorted(tables))


def query_export(sql: str, export_dir: Path) -> QueryResult:
    """Run a query over an existing export."""
    return run_query(sql, export_tables(export_dir))


def query_live(sql: str, ledger: Any, *, titan_version: str) -> QueryResult:
    """Run a query over the live ledger: export it to a scratch directory, then query that."""
    from .export import export_ledger

    with tempfile.TemporaryDirectory(prefix="titan-audit-") as scratch:
        out = Path(scratch) / "export"
        export_ledger(ledger, out, titan_version=titan_version)
        return query_export(sql, out)
