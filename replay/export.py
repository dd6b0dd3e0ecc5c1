"""`titan ledger export --out DIR`: the ledger as Parquet files for auditors, with a manifest.

- `records.parquet`: one row per ledger record, every envelope field a column (`data` as
  canonical JSON text), plus `ts`: the time as a UTC timestamp without zone, to the
  microsecond, for SQL on dates (so a day is a UTC day whatever the reader's time zone);
  `ts_ns` stays exact.
- `commands.parquet`: one row per command record: the command as received (JSON text), its type,
  account, actor, origin, the policy hash it carried and the one in force, outcome, reason and
  the events it produced.
- `rm_<model>.parquet`: one file per read model the projections package exposes (see
  replay/projections_hook.py), named as its table in the read-model store.
- `manifest.json`: row counts and SHA-256 of every file, the ledger head (position, hash, record
  count) the export stops at, the schema versions, titan's version, and how values that no
  Parquet type holds exactly are written (`encodings`, per file and column).

Every value is exported exactly, whatever an earlier titan version let into the ledger: JSON
(`data`, `command`) is the record's canonical JSON text, so a 1,000-digit quantity or a U+0000
(as the escape `\u0000`) is there as recorded; read-model decimals are exact decimal text and
`big_integer` columns (money totals, which may pass 64 bits) are decimal digits. An integer
envelope field outside 64 bits (no titan version writes one) is null in its column and kept,
as digits, in the manifest's `out_of_range` list.

The hash chain is verified while exporting; a ledger whose chain is broken is not exported (exit
1, see `titan ledger verify`). Files are written into a scratch directory beside DIR and moved
into place at the end, so DIR never holds half an export. DIR may be a symbolic link: the export
goes into the directory it names. Writing streams in batches: memory stays flat as the ledger
grows. A read model that cannot be read is left out with a note saying why; the ledger's own
tables are always exported.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from commands.chain import CorruptRecord
from commands.envelope import COMMAND_RECORDED
from commands.ports import Ledger, Record
from projections.values import int_text, json_text

from .projections_hook import ReadSide
from .projections_hook import read_models as read_model_rows
from .verify import COMMAND_PREFIX, FlatChainVerifier

EXPORT_FORMAT: Final = "titan-export/1"
READ_MODEL_PREFIX: Final = "rm_"
BATCH_ROWS: Final = 20_000
COMPRESSION: Final = "zstd"

_TS: Final = pa.timestamp("us")
"""`ts`: the record's time as a plain UTC timestamp (microseconds) for SQL on dates; `ts_ns` is exact."""

RECORDS_SCHEMA: Final = pa.schema(
    [
        ("position", pa.int64()),
        ("stream_id", pa.string()),
        ("version", pa.int64()),
        ("type", pa.string()),
        ("event_id", pa.string()),
        ("ts_ns", pa.int64()),
        ("ts", _TS),
        ("command_id", pa.string()),
        ("correlation_id", pa.string()),
        ("causation_id", pa.string()),
        ("intent_id", pa.string()),
        ("phase_id", pa.int64()),
        ("actor", pa.string()),
        ("policy_hash", pa.string()),
        ("data", pa.string()),
        ("prev_hash", pa.string()),
        ("hash", pa.string()),
    ]
)

COMMANDS_SCHEMA: Final = pa.schema(
    [
        ("position", pa.int64()),
        ("command_id", pa.string()),
        ("command_type", pa.string()),
        ("account_id", pa.string()),
        ("ts_ns", pa.int64()),
        ("ts", _TS),
        ("issued_ts_ns", pa.int64()),
        ("actor", pa.string()),
        ("correlation_id", pa.string()),
        ("causation_id", pa.string()),
        ("intent_id", pa.string()),
        ("phase_id", pa.int64()),
        ("carried_policy_hash", pa.string()),
        ("active_policy_hash", pa.string()),
        ("outcome", pa.string()),
        ("reason", pa.string()),
        ("event_ids", pa.list_(pa.string())),
        ("event_types", pa.list_(pa.string())),
        ("command", pa.string()),
        ("hash", pa.string()),
    ]
)


class ExportError(ValueError):
    """The export cannot be written where it was asked (exit 2)."""


JSON_TEXT: Final = "canonical JSON text, exactly as recorded (decimals as strings of any length, U+0000 as \\u0000)"
DECIMAL_TEXT: Final = "exact decimal as text, plain notation, any number of digits"
INTEGER_TEXT: Final = "exact integer as decimal digits, any size (may pass 64 bits: CAST to HUGEINT or DECIMAL)"
READ_MODEL_TEXT: Final = "text; U+0000 in the ledger's record is U+FFFD here (records.data keeps the original)"

RECORDS_ENCODINGS: Final = {"data": JSON_TEXT}
COMMANDS_ENCODINGS: Final = {"command": JSON_TEXT}
_MODEL_ENCODINGS: Final = {"decimal": DECIMAL_TEXT, "big_integer": INTEGER_TEXT, "json": "canonical JSON text", "text": READ_MODEL_TEXT}


class ChainBroken(RuntimeError):
    """The ledger's hash chain does not verify: nothing was exported (exit 1)."""

    def __init__(self, report: Any) -> None:
        super().__init__(
            f"the ledger's hash chain is broken at position {report.position} ({report.code}: "
            f"{report.message}); nothing was exported: run `titan ledger verify`"
        )
        self.report = report


@dataclass
class ExportResult:
    """What was written."""

    out: Path
    manifest: dict[str, Any]
    rows: int = 0
    elapsed_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.elapsed_s if self.elapsed_s > 0 else 0.0


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as raw:
        for block in iter(lambda: raw.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def target_of(out: Path) -> Path:
    """Where an export to `out` is written: the directory a symbolic link names, else `out`
    itself (absolute); raise ExportError for a link loop."""
    try:
        return out.resolve() if out.is_symlink() else out.absolute()
    except (OSError, RuntimeError) as error:  # RuntimeError: a symlink loop (Python 3.11)
        raise ExportError(f"--out {str(out)!r} is a symbolic link that cannot be followed ({error})") from None


def check_out_dir(out: Path) -> None:
    """DIR must not exist, or be an empty directory (a symbolic link to one is followed); raise
    ExportError otherwise."""
    target = target_of(out)
    try:
        if target.exists():
            if not target.is_dir():
                raise ExportError(f"--out {str(out)!r} exists and is not a directory")
            if any(target.iterdir()):
                raise ExportError(
                    f"--out {str(out)!r} exists and is not empty: choose a new directory (an export "
                    "never overwrites or mixes with another)"
                )
        elif target.parent.exists() and not target.parent.is_dir():
            raise ExportError(f"--out {str(out)!r}: {str(target.parent)!r} is not a directory")
    except OSError as error:
        raise ExportError(f"--out {str(out)!r} cannot be used: {error.strerror or error}") from None


_INT64: Final = (-(2**63), 2**63 - 1)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and _INT64[0] <= value <= _INT64[1]:
        return value
    return None


def _micros(ts_ns: Any) -> int | None:
    value = _int(ts_ns)
    return None if value is None else value // 1000


def _json(value: Any) -> str:
    return json_text(value)


def out_of_range(record: Record) -> list[dict[str, Any]]:
    """The integer envelope fields of a record that no int64 column holds, as exact digits."""
    found = []
    command = (record.envelope.get("data") or {}).get("command") if record.type == COMMAND_RECORDED else None
    fields = [("records", name, record.envelope.get(name)) for name in ("ts_ns", "phase_id")]
    if isinstance(command, dict):
        fields.append(("commands", "issued_ts_ns", command.get("issued_ts_ns")))
    for file, name, value in fields:
        if isinstance(value, int) and not isinstance(value, bool) and _int(value) is None:
            found.append({"file": file, "position": record.position, "column": name, "value": int_text(value)})
    return found


def record_values(record: Record) -> tuple[Any, ...]:
    """One row of records.parquet, its values in RECORDS_SCHEMA's order."""
    e = record.envelope
    get = e.get
    ts_ns = _int(get("ts_ns"))
    return (
        record.position,
        record.stream_id,
        record.version,
        record.type,
        _text(get("event_id")),
        ts_ns,
        None if ts_ns is None else ts_ns // 1000,
        _text(get("command_id")),
        _text(get("correlation_id")),
        _text(get("causation_id")),
        _text(get("intent_id")),
        _int(get("phase_id")),
        _text(get("actor")),
        _text(get("policy_hash")),
        _json(get("data")),
        _text(get("prev_hash")),
        _text(get("hash")),
    )


def record_row(record: Record) -> dict[str, Any]:
    """One row of records.parquet."""
    return dict(zip(RECORDS_SCHEMA.names, record_values(record), strict=True))


def command_values(record: Record) -> tuple[Any, ...]:
    """One row of commands.parquet, its values in COMMANDS_SCHEMA's order."""
    e = record.envelope
    data = e.get("data") or {}
    command = data.get("command") or {}
    ts_ns = _int(e.get("ts_ns"))
    return (
        record.position,
        _text(e.get("command_id")),
        _text(command.get("type")),
        _text(command.get("account_id")),
        ts_ns,
        None if ts_ns is None else ts_ns // 1000,
        _int(command.get("issued_ts_ns")),
        _text(e.get("actor")),
        _text(e.get("correlation_id")),
        _text(command.get("causation_id")),
        _text(e.get("intent_id")),
        _int(e.get("phase_id")),
        _text(command.get("policy_hash")),
        _text(e.get("policy_hash")),
        _text(data.get("outcome")),
        _text(data.get("reason")),
        [str(i) for i in data.get("event_ids") or []],
        [str(t) for t in data.get("event_types") or []],
        _json(command),
        _text(e.get("hash")),
    )


def command_row(record: Record) -> dict[str, Any]:
    """One row of commands.parquet."""
    return dict(zip(COMMANDS_SCHEMA.names, command_values(record), strict=True))


def _fits(value: Any) -> bool:
    """Whether `out_of_range` would pass over this envelope value (not an integer beyond int64)."""
    return value.__class__ is not int or _INT64[0] <= value <= _INT64[1]


class _Sink:
    """A Parquet file written batch by batch: rows kept as tuples, turned into columns (one
    transposition) and Arrow arrays at each flush (cheaper than rows of dicts)."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self.schema = schema
        self.names = [f.name for f in schema]
        self.rows = 0
        self._pending: list[tuple[Any, ...]] = []
        self._writer = pq.ParquetWriter(path, schema, compression=COMPRESSION)

    def add(self, row: dict[str, Any]) -> None:
        self.add_values(tuple(row[name] for name in self.names))

    def add_values(self, values: tuple[Any, ...]) -> None:
        """Add one row, its values in the schema's order."""
        self._pending.append(values)
        if len(self._pending) >= BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            columns = zip(*self._pending, strict=True)
            arrays = [pa.array(column, type=field.type) for column, field in zip(columns, self.schema, strict=True)]
            self._writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema))
            self.rows += len(self._pending)
            self._pending = []

    def close(self) -> None:
        self.flush()
        self._writer.close()


def _schema_doc(schema: pa.Schema) -> dict[str, str]:
    return {f.name: str(f.type) for f in schema}


_ARROW_TYPES: Final = {
    "text": pa.string(),
    "integer": pa.int64(),
    "big_integer": pa.string(),
    "boolean": pa.bool_(),
    "decimal": pa.string(),
    "json": pa.string(),
}
"""Read-model column types as Parquet columns: decimals stay exact decimal strings, integers of
any size are decimal digits, JSON values are canonical JSON text (query them with DuckDB's `->>`)."""


def _declared_table(name: str) -> Any:
    try:
        from projections import registry
    except ImportError:
        return None
    for projection in getattr(registry, "PROJECTIONS", ()):
        for table in getattr(projection, "tables", ()):
            if str(table.name).removeprefix("rm_") == name:
                return table
    return None


def declared_schema(name: str) -> pa.Schema | None:
    """The Parquet schema of a read model from its declared table, when the read side declares it."""
    table = _declared_table(name)
    if table is None:
        return None
    return pa.schema([(c.name, _ARROW_TYPES.get(c.type, pa.string())) for c in table.columns])


def declared_encodings(name: str) -> dict[str, str]:
    """How a read model's columns that no Parquet type holds exactly are written, by column."""
    table = _declared_table(name)
    if table is None:
        return {}
    return {c.name: _MODEL_ENCODINGS[c.type] for c in table.columns if c.type in _MODEL_ENCODINGS}


def _as_text(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json_text(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return int_text(value)
    return str(value)


def _coerce(row: dict[str, Any], schema: pa.Schema) -> dict[str, Any]:
    coerced: dict[str, Any] = {}
    for column in schema:
        value = row.get(column.name)
        if value is not None and pa.types.is_string(column.type) and not isinstance(value, str):
            value = _as_text(value)
        elif isinstance(value, int) and pa.types.is_int64(column.type) and _int(value) is None:
            raise ValueError(f"column {column.name}: {int_text(value)[:40]}… does not fit int64")
        coerced[column.name] = value
    return coerced


def _write_model(path: Path, name: str, rows: Iterable[dict[str, Any]]) -> tuple[int, pa.Schema]:
    """Write one read model, typed by its declared table (else inferred from its rows)."""
    schema = declared_schema(name)
    writer: pq.ParquetWriter | None = None
    count = 0
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        nonlocal writer, schema, batch, count
        if not batch:
            return
        if schema is not None:
            table = pa.Table.from_pylist([_coerce(row, schema) for row in batch], schema=schema)
        else:
            table = pa.Table.from_pylist(batch)
            schema = table.schema
        if writer is None:
            writer = pq.ParquetWriter(path, schema, compression=COMPRESSION)
        writer.write_table(table)
        count += len(batch)
        batch = []

    for row in rows:
        batch.append(row)
        if len(batch) >= BATCH_ROWS:
            flush()
    flush()
    if writer is not None:
        writer.close()
        assert schema is not None
        return count, schema
    # No rows and no declared columns: one null column, so that SQL engines can still read it.
    schema = schema if schema is not None and len(schema) else pa.schema([("no_rows", pa.null())])
    pq.write_table(schema.empty_table(), path, compression=COMPRESSION)
    return 0, schema


def _scratch_beside(target: Path, shown: Path) -> Path:
    """A new scratch directory beside the export's target (creating the parent if needed)."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    except OSError as error:
        raise ExportError(f"--out {str(shown)!r}: cannot write beside {str(target.parent)!r} ({error.strerror or error})") from None


def _export_models(
    ledger: Ledger, read_side: ReadSide, scratch: Path, files: dict[str, dict[str, Any]], notes: list[str]
) -> None:
    """Write every read model into the scratch directory; a read model that cannot be read or
    written is left out, with a note saying why (the ledger's own tables never depend on it)."""
    try:
        models, why_not = read_model_rows(ledger, read_side)
    except Exception as error:  # noqa: BLE001 - the records are exported whatever the read side does
        notes.append(f"read models not exported: {type(error).__name__}: {error}")
        return
    if why_not:
        notes.append(why_not)
    for model, rows in sorted(models.items()):
        # Read models keep their store's `rm_` prefix: apart from the ledger's own tables
        # (the read side has a `commands` model too), and named as in the read-model store.
        name = READ_MODEL_PREFIX + model.removeprefix(READ_MODEL_PREFIX)
        path = scratch / f"{name}.parquet"
        try:
            count, schema = _write_model(path, model, rows)
        except (ValueError, TypeError, pa.ArrowException) as error:
            path.unlink(missing_ok=True)
            notes.append(f"read model {name} not exported: {type(error).__name__}: {error}")
            continue
        files[name] = {"rows": count, "schema": _schema_doc(schema), "read_model": True}
        encodings = declared_encodings(model)
        if encodings:
            files[name]["encodings"] = encodings


def export_ledger(
    ledger: Ledger,
    out: Path,
    *,
    titan_version: str,
    progress: Callable[[int], None] | None = None,
    ledger_format: str | None = None,
    read_side: ReadSide | None = None,
) -> ExportResult:
    """Export a ledger to Parquet in `out` (which must not exist or be empty; a symbolic link to
    such a directory is followed), with each read model of `read_side` beside the ledger's own
    tables (none without one: the benchmark measures the ledger's tables alone)."""
    check_out_dir(out)
    target = target_of(out)
    began = time.perf_counter()
    anchor = ledger.head()
    scratch = _scratch_beside(target, out)
    try:
        records = _Sink(scratch / "records.parquet", RECORDS_SCHEMA)
        commands = _Sink(scratch / "commands.parquet", COMMANDS_SCHEMA)
        verifier = FlatChainVerifier(anchor)
        types: dict[str, int] = {}
        overflow: list[dict[str, Any]] = []
        try:
            for record in ledger.iter_all(0, 5000):
                if record.position > anchor[0]:
                    break  # appended after the export began: the export is of the anchored head
                if not verifier.check(record):
                    break
                records.add_values(record_values(record))
                types[record.type] = types.get(record.type, 0) + 1
                if record.type == COMMAND_RECORDED:
                    if record.stream_id.startswith(COMMAND_PREFIX):
                        commands.add_values(command_values(record))
                    overflow.extend(out_of_range(record))
                elif not (_fits(record.envelope.get("ts_ns")) and _fits(record.envelope.get("phase_id"))):
                    overflow.extend(out_of_range(record))
                if progress is not None and verifier.records_checked % 5000 == 0:
                    progress(verifier.records_checked)
        except CorruptRecord as error:
            verifier.unreadable(error)
        records.close()
        commands.close()
        chain = verifier.finish()
        if not chain.ok:
            raise ChainBroken(chain)
        files: dict[str, dict[str, Any]] = {
            "records": {"rows": records.rows, "schema": _schema_doc(RECORDS_SCHEMA), "encodings": dict(RECORDS_ENCODINGS)},
            "commands": {"rows": commands.rows, "schema": _schema_doc(COMMANDS_SCHEMA), "encodings": dict(COMMANDS_ENCODINGS)},
        }
        notes: list[str] = []
        if read_side is not None:
            _export_models(ledger, read_side, scratch, files, notes)
        else:
            notes.append("read models left out on request")
        if overflow:
            notes.append(f"{len(overflow)} integer field(s) outside 64 bits are null in their column; exact digits in out_of_range")
        for name, entry in files.items():
            path = scratch / f"{name}.parquet"
            entry["file"] = path.name
            entry["bytes"] = path.stat().st_size
            entry["sha256"] = file_sha256(path)
        manifest: dict[str, Any] = {
            "format": EXPORT_FORMAT,
            "titan_version": titan_version,
            "ledger_head": {"position": anchor[0], "hash": anchor[1], "record_count": anchor[2]},
            "chain_verified": True,
            "schema_versions": {
                "ledger_format": ledger_format,
                "envelope": "envelope.v1",
                "export": EXPORT_FORMAT,
                "record_types": dict(sorted(types.items())),
            },
            "compression": COMPRESSION,
            "files": files,
            "read_models": sorted(n for n, e in files.items() if e.get("read_model")),
            "encodings": {
                "json": JSON_TEXT,
                "decimal": DECIMAL_TEXT,
                "big_integer": INTEGER_TEXT,
                "read_model_text": READ_MODEL_TEXT,
            },
            "out_of_range": overflow,
            "notes": notes,
        }
        (scratch / "manifest.json").write_bytes(_manifest_bytes(manifest))
        if target.exists():
            target.rmdir()  # empty (checked above)
        os.replace(scratch, target)
    except OSError as error:
        shutil.rmtree(scratch, ignore_errors=True)
        raise ExportError(f"--out {str(out)!r}: the export could not be written ({error.strerror or error})") from None
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    elapsed = time.perf_counter() - began
    return ExportResult(out, manifest, records.rows + commands.rows, elapsed, notes)


def _manifest_bytes(manifest: dict[str, Any]) -> bytes:
    import orjson

    return orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def verify_export(out: Path) -> list[str]:
    """Check an export's files against its manifest; return the problems (none when intact)."""
    import orjson

    manifest = orjson.loads((out / "manifest.json").read_bytes())
    problems = []
    for name, entry in manifest["files"].items():
        path = out / entry["file"]
        if not path.exists():
            problems.append(f"{name}: {entry['file']} is missing")
            continue
        if file_sha256(path) != entry["sha256"]:
            problems.append(f"{name}: SHA-256 of {entry['file']} differs from the manifest")
        rows = pq.ParquetFile(path).metadata.num_rows
        if rows != entry["rows"]:
            problems.append(f"{name}: {rows} rows, the manifest says {entry['rows']}")
    return problems
