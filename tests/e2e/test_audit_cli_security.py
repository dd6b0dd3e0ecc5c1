"""`titan audit sql` and `titan explain` as a user (or an attacker) drives them: real processes,
real files, stdout a pipe (issue 9 §4, and §6 "text output is cut at 80 columns when piped")."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import orjson
import pytest

from infra.golden import GOLDEN_DIR, load_manifest

from .conftest import ROOT, Titan, titan_command

pytestmark = pytest.mark.e2e

GOLDEN = "demo-seed2026-orders25"
ENTRY = load_manifest()["ledgers"][GOLDEN]


def piped(cwd: Path, *args: str, columns: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `titan …` with stdout and stderr pipes and no COLUMNS (unless given): as `| cat` does."""
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS" and (not k.startswith("TITAN_") or k == "TITAN_CORE")}
    env["PYTHONPATH"] = str(ROOT)
    if columns is not None:
        env["COLUMNS"] = columns
    return subprocess.run(
        [*titan_command(), *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300, check=False
    )


def _fingerprint(path: Path) -> tuple[str, int]:
    data = path.read_bytes()
    return hashlib.sha256(data).hexdigest(), len(data)


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    target = tmp_path / "ledger.db"
    shutil.copyfile(GOLDEN_DIR / ENTRY["file"], target)
    return target


def _url(path: Path) -> str:
    return "sqlite:///" + str(path)


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# --- piped output is complete ------------------------------------------------------------------


@pytest.mark.parametrize("columns", [None, "80", "40"])
def test_piped_audit_sql_prints_every_hash_whole(ledger: Path, tmp_path: Path, columns: str | None) -> None:
    sql = "SELECT position, stream_id, type, actor, prev_hash, hash FROM records ORDER BY position DESC LIMIT 5"
    answer = json.loads(piped(tmp_path, "audit", "sql", sql, "--ledger", _url(ledger), "--json").stdout)
    hashes = [h for row in answer["rows"] for h in (row["prev_hash"], row["hash"])]
    assert ENTRY["head_hash"] in hashes and all(len(h) == 64 for h in hashes)
    result = piped(tmp_path, "audit", "sql", sql, "--ledger", _url(ledger), columns=columns)
    assert result.returncode == 0, result.stderr
    for h in hashes:
        assert h in result.stdout
    for row in answer["rows"]:
        assert row["stream_id"] in result.stdout and row["type"] in result.stdout
    assert "…" not in result.stdout
    assert result.stdout.strip().endswith("5 row(s)")


def test_piped_explain_prints_hashes_and_check_names_whole(ledger: Path, tmp_path: Path) -> None:
    url = _url(ledger)
    found = json.loads(
        piped(
            tmp_path, "audit", "sql",
            "SELECT data->>'$.order_id' AS order_id FROM records WHERE type = 'order.filled.v1' ORDER BY position LIMIT 1",
            "--ledger", url, "--json",
        ).stdout
    )
    order_id = found["rows"][0]["order_id"]
    trace = json.loads(piped(tmp_path, "explain", order_id, "--ledger", url, "--json").stdout)
    checks = trace["decision"]["checks"]
    assert len(checks) >= 10
    result = piped(tmp_path, "explain", order_id, "--ledger", url)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert len(trace["policy"]["active_hash"]) == 64 and trace["policy"]["active_hash"] in text
    for check in checks:
        assert f" {check['check']} " in text
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) > 80  # laid out wider than a terminal would be


# --- refused queries ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "named"),
    [
        ("COPY (SELECT 'x') TO 'LEDGER' (FORMAT csv)", "refused: COPY is not a SELECT"),
        ("ATTACH 'LEDGER' AS live", "refused: ATTACH is not a SELECT"),
        ("INSTALL httpfs", "refused: INSTALL is not a SELECT"),
        ("LOAD httpfs", "refused: LOAD is not a SELECT"),
        ("SET enable_external_access = true", "refused: SET is not a SELECT"),
        ("SELECT 1; COPY records TO 'LEDGER'", "refused: 2 statements (SELECT, COPY)"),
        ("SELECT * FROM read_text('/etc/passwd')", "refused: the query reaches outside the export's tables"),
        ("SELECT * FROM read_csv('LEDGER')", "refused: the query reaches outside the export's tables"),
        ("SELECT * FROM query('COPY records TO ''LEDGER''')", "the query failed: Parser Error: Expected a single SELECT"),
    ],
)
def test_a_refused_query_exits_2_in_one_line_and_the_live_ledger_is_untouched(
    ledger: Path, tmp_path: Path, sql: str, named: str
) -> None:
    before = _fingerprint(ledger)
    result = piped(tmp_path, "audit", "sql", sql.replace("LEDGER", str(ledger)), "--ledger", _url(ledger))
    line = _one_line_error(result)
    assert named in line, line
    assert _fingerprint(ledger) == before
    assert result.stdout == ""


def test_a_live_query_leaves_the_ledger_file_unchanged_and_sees_the_read_models(ledger: Path, tmp_path: Path) -> None:
    before = _fingerprint(ledger)
    answer = json.loads(
        piped(
            tmp_path, "audit", "sql",
            "SELECT (SELECT count(*) FROM records) AS records, (SELECT count(*) FROM rm_orders) AS orders",
            "--ledger", _url(ledger), "--json",
        ).stdout
    )
    assert answer["rows"][0]["records"] == ENTRY["records"] and answer["rows"][0]["orders"] > 0
    assert _fingerprint(ledger) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ledger.name and not p.name.startswith(ledger.name + "-")) == []


def test_a_missing_or_empty_ledger_is_refused_and_not_created(tmp_path: Path) -> None:
    line = _one_line_error(piped(tmp_path, "audit", "sql", "SELECT 1", "--ledger", _url(tmp_path / "none.db")))
    assert "no ledger at" in line and not (tmp_path / "none.db").exists()
    (tmp_path / "empty.db").touch()
    line = _one_line_error(piped(tmp_path, "audit", "sql", "SELECT 1", "--ledger", _url(tmp_path / "empty.db")))
    assert "not a ledger" in line and (tmp_path / "empty.db").stat().st_size == 0


# --- crafted exports ---------------------------------------------------------------------------


@pytest.fixture
def export(ledger: Path, tmp_path: Path) -> Path:
    result = Titan(tmp_path)("ledger", "export", "--out", "export", "--ledger", _url(ledger), "--json")
    assert result.returncode == 0, result.stderr
    return tmp_path / "export"


def _set_files(export: Path, files: dict[str, object]) -> None:
    manifest = orjson.loads((export / "manifest.json").read_bytes())
    manifest["files"] = files
    (export / "manifest.json").write_bytes(orjson.dumps(manifest))


def test_a_manifest_whose_view_name_injects_sql_is_refused(export: Path, tmp_path: Path) -> None:
    written = tmp_path / "pwned.csv"
    name = f"records\" AS SELECT 1; COPY (SELECT 1) TO '{written}'; --"
    _set_files(export, {name: {"file": "records.parquet"}})
    line = _one_line_error(piped(tmp_path, "audit", "sql", "SELECT 1", "--export", str(export)))
    assert "manifest.json entry" in line and "is not a table of a titan export" in line and "COPY (SELECT 1)" in line
    assert not written.exists()


def test_a_manifest_path_outside_the_export_is_refused(export: Path, tmp_path: Path, ledger: Path) -> None:
    _set_files(export, {"records": {"file": "../ledger.db"}})
    line = _one_line_error(piped(tmp_path, "audit", "sql", "SELECT count(*) FROM records", "--export", str(export)))
    assert "entry 'records': file '../ledger.db' is not a plain relative path" in line
    _set_files(export, {"records": {"file": str(ledger)}})
    line = _one_line_error(piped(tmp_path, "audit", "sql", "SELECT count(*) FROM records", "--export", str(export)))
    assert "is not a plain relative path" in line


def test_a_manifest_file_symlinked_out_of_the_export_is_refused(export: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.parquet"
    shutil.copyfile(export / "commands.parquet", secret)
    (export / "records.parquet").unlink()
    (export / "records.parquet").symlink_to(secret)
    line = _one_line_error(piped(tmp_path, "audit", "sql", "SELECT count(*) FROM records", "--export", str(export)))
    assert "entry 'records': file 'records.parquet' resolves outside the export" in line


def test_an_intact_export_still_answers(export: Path, tmp_path: Path) -> None:
    result = piped(tmp_path, "audit", "sql", "SELECT hash FROM records ORDER BY position DESC LIMIT 1", "--export", str(export))
    assert result.returncode == 0, result.stderr
    assert ENTRY["head_hash"] in result.stdout


# --- PostgreSQL --------------------------------------------------------------------------------


def test_a_live_query_on_postgresql_reads_and_says_read_models_are_not_queried(pg_url: str, tmp_path: Path) -> None:
    demo = Titan(tmp_path).json("demo", "--seed", "5", "--orders", "10", "--ledger", pg_url, "--json")
    answer = json.loads(piped(tmp_path, "audit", "sql", "SELECT count(*) AS n FROM records", "--ledger", pg_url, "--json").stdout)
    assert answer["rows"] == [{"n": demo["records"]}]
    assert any("not queried over a live PostgreSQL ledger" in note for note in answer["notes"])
    text = piped(tmp_path, "audit", "sql", "SELECT max(hash) AS h FROM records", "--ledger", pg_url)
    assert text.returncode == 0 and "note:" in text.stderr
    missing = piped(tmp_path, "audit", "sql", "SELECT count(*) FROM rm_orders", "--ledger", pg_url)
    assert "rm_orders" in _one_line_error(missing)
