"""Defence in depth (issue 9 §1): every reader handles every record an earlier titan wrote,
poisoned ones included — export, projections run and rebuild, explain, state, replay, the
PostgreSQL auditor view — on SQLite and on PostgreSQL, and on the golden poisoned ledger that
bdfcdfd wrote. Also: `ledger export --out` through a symbolic link (issue 9 §6)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest

from adapters.postgres.migrations import upgrade
from commands.ports import Ledger
from infra.bootstrap import open_ledger
from infra.golden import GOLDEN_DIR, load_manifest
from infra.read_models import READ_SIDE, open_store, store_url_for
from projections import registry
from projections.audit import compare_digests
from projections.budget import money_units
from projections.model import Digest
from projections.runner import Runner, rebuild_many
from projections.values import decimal_text, int_text, json_loads, json_text, parse_int
from replay.chain import verify_ledger
from replay.export import ExportError, export_ledger, verify_export
from tests.poisoned_support import (
    FEES_MONEY,
    HUGE_FEE,
    HUGE_LATENCY,
    LITERAL_ESCAPE,
    LONG_FEE,
    LONG_QUANTITY,
    NUL_HALT,
    NUL_VENUE_REASON,
    Poisoned,
    build_poisoned,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = "poisoned-inputs-v0"


@pytest.fixture(params=["sqlite", "postgres"])
def poisoned(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Ledger, Poisoned]]:
    """A fresh ledger holding the poisoned session, on SQLite or on PostgreSQL."""
    if request.param == "sqlite":
        url = "sqlite:///" + str(tmp_path / "poisoned.db")
    else:
        url = request.getfixturevalue("pg_url")
        upgrade(url)
    ledger = open_ledger(url)
    try:
        yield url, ledger, build_poisoned(ledger)
    finally:
        ledger.close()


def titan(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the `titan` command as a user does (output piped)."""
    script = Path(sys.executable).parent / "titan"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "infra.cli"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TITAN_") or k == "TITAN_CORE"}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([*command, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300, check=False)


def parquet_rows(path: Path) -> list[dict[str, Any]]:
    return list(pq.read_table(path).to_pylist())


def records_of(export: Path, command_id: str) -> list[dict[str, Any]]:
    return [row for row in parquet_rows(export / "records.parquet") if row["command_id"] == command_id]


# --- the values themselves -------------------------------------------------------------------


def test_values_beyond_64_bits_and_4300_digits_stay_exact() -> None:
    huge = 10**5000 + 7
    assert parse_int(int_text(huge)) == huge
    assert parse_int("-" + "9" * 4400) == -(10**4400 - 1)
    assert json_loads(json_text({"n": 2**70, "m": [-(2**80)]})) == {"n": 2**70, "m": [-(2**80)]}
    assert json_loads('{"ts": "12345678901234567890", "x": 1.5}') == {"ts": "12345678901234567890", "x": 1.5}
    plain = "1" * 4000 + "." + "2" * 250
    assert decimal_text(plain) == plain
    assert decimal_text("-0.000") == "0.000"
    with pytest.raises(ValueError, match="sane size"):
        decimal_text("1e999999999")
    assert money_units(LONG_FEE) == int(LONG_FEE) * 10**8  # a 28-digit context would round it
    assert money_units("9" * 4290 + ".5") == int("9" * 4290 + "5") * 10**7


def test_a_digest_over_integers_beyond_64_bits_is_the_documented_json() -> None:
    row = {"a": 2**64 + 1, "b": "x", "c": -(10**30)}
    digest = Digest()
    digest.table("rm_t")
    digest.row(row)
    expected = json.dumps({"rm_t": [row]}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert digest.hexdigest() == hashlib.sha256(expected.encode()).hexdigest()


# --- a poisoned ledger, on both stores -------------------------------------------------------


def test_the_poisoned_session_records_what_bdfcdfd_recorded(poisoned: tuple[str, Ledger, Poisoned]) -> None:
    _, ledger, session = poisoned
    assert session.outcomes["big"]["reason"] == "QUANTITY_OFF_STEP"
    assert {cid: session.outcome(cid) for cid in ("f1", "f2", "h1", "r1", "h2", "vr", "s2")} == dict.fromkeys(
        ("f1", "f2", "h1", "r1", "h2", "vr", "s2"), "accepted"
    )
    assert verify_ledger(ledger).ok


def test_export_keeps_every_poisoned_value_exact(poisoned: tuple[str, Ledger, Poisoned], tmp_path: Path) -> None:
    _, ledger, _ = poisoned
    out = tmp_path / "export"
    manifest = export_ledger(ledger, out, titan_version="test", read_side=READ_SIDE).manifest
    assert verify_export(out) == []
    assert not [n for n in manifest["notes"] if "not exported" in n], manifest["notes"]
    assert {"rm_budget", "rm_orders", "rm_truth", "rm_breaker_transitions"} <= set(manifest["read_models"])
    assert manifest["out_of_range"] == []
    # The ledger's own tables: the command and the check keep the 1,000-digit quantity whole,
    # the halt reason its U+0000.
    [command] = [r for r in records_of(out, "big") if r["type"] == "command.recorded.v1"]
    assert orjson.loads(command["data"])["command"]["quantity"] == LONG_QUANTITY
    [rejected] = [r for r in records_of(out, "big") if r["type"] == "order.rejected.v1"]
    step = next(c for c in orjson.loads(rejected["data"])["checks"] if c["check"] == "quantity_step")
    assert step["value"] == LONG_QUANTITY and step["verdict"] == "fail"
    [halt] = [r for r in records_of(out, "h1") if r["type"] == "command.recorded.v1"]
    assert orjson.loads(halt["data"])["command"]["reason"] == NUL_HALT
    commands = {row["command_id"]: row for row in parquet_rows(out / "commands.parquet")}
    assert orjson.loads(commands["big"]["command"])["quantity"] == LONG_QUANTITY
    # Read models: money past 64 bits as exact digits, said so in the manifest.
    [day] = parquet_rows(out / "rm_budget.parquet")
    assert (day["fees_money"], day["pnl_money"], day["fills"]) == (str(FEES_MONEY), str(-FEES_MONEY), 2)
    budget = manifest["files"]["rm_budget"]
    assert budget["schema"]["fees_money"] == "string" and "any size" in budget["encodings"]["fees_money"]
    assert "any size" in manifest["encodings"]["big_integer"]
    orders = {row["order_id"]: row for row in parquet_rows(out / "rm_orders.parquet")}
    assert orders["ord-big"]["quantity"] == LONG_QUANTITY and orders["ord-big"]["status"] == "REJECTED"
    assert orders["ord-c2"]["venue_reason"] == NUL_VENUE_REASON.replace("\x00", "\ufffd")
    assert [row["latency_ms"] for row in parquet_rows(out / "rm_truth.parquet")] == [str(HUGE_LATENCY)]
    reasons = [row["reason"] for row in parquet_rows(out / "rm_breaker_transitions.parquet")]
    assert NUL_HALT.replace("\x00", "\ufffd") in reasons and LITERAL_ESCAPE in reasons


def test_projections_run_in_small_batches_and_rebuild_to_the_same_digests(poisoned: tuple[str, Ledger, Poisoned]) -> None:
    _, ledger, _ = poisoned

    async def main() -> tuple[dict[str, str], dict[str, str], dict[str, Any], list[dict[str, Any]]]:
        store = await open_store(store_url_for(ledger), listen=False)
        try:
            await store.prepare(registry.PROJECTIONS)
            await Runner(ledger, store, registry.PROJECTIONS, batch_size=2).catch_up()
            live = {p.name: (await store.snapshot(p)).digest for p in registry.PROJECTIONS}
            compared = await compare_digests(ledger, store)
            rebuilt = {r.projection: r.digest for r in await rebuild_many(ledger, store, registry.PROJECTIONS)}
            budget = await store.rows(registry.PROJECTIONS[[p.name for p in registry.PROJECTIONS].index("budget")].tables[0])
            return live, rebuilt, compared, budget
        finally:
            await store.close()

    live, rebuilt, compared, budget = asyncio.run(main())
    assert compared["ok"], compared["message"]
    assert rebuilt == live
    [day] = budget
    assert (day["fees_money"], day["realized_pnl_money"], day["pnl_money"]) == (FEES_MONEY, 0, -FEES_MONEY)


def test_sqlite_and_postgres_read_models_of_a_poisoned_ledger_agree(tmp_path: Path, pg_url: str) -> None:
    upgrade(pg_url)
    digests = []
    for url in ("sqlite:///" + str(tmp_path / "p.db"), pg_url):
        ledger = open_ledger(url)
        try:
            build_poisoned(ledger)
            result = asyncio.run(_verify(ledger))
        finally:
            ledger.close()
        assert result["ok"], result["message"]
        digests.append({name: model["live"] for name, model in result["models"].items()})
    assert digests[0] == digests[1]


async def _verify(ledger: Ledger) -> dict[str, Any]:
    store = await open_store(store_url_for(ledger), listen=False)
    try:
        await store.prepare(registry.PROJECTIONS)
        await Runner(ledger, store, registry.PROJECTIONS).catch_up()
        return await compare_digests(ledger, store)
    finally:
        await store.close()


def test_the_cli_reads_a_poisoned_ledger_without_a_traceback(poisoned: tuple[str, Ledger, Poisoned], tmp_path: Path) -> None:
    url, ledger, _ = poisoned
    ledger.close()
    for args in (("ledger", "export", "--out", str(tmp_path / "x")), ("projections", "run"), ("projections", "rebuild"), ("ledger", "verify")):
        result = titan(*args, "--ledger", url, cwd=tmp_path)
        assert result.returncode == 0 and "Traceback" not in result.stderr, (args, result.stderr[-2000:])
    trace = json.loads(titan("explain", "ord-big", "--json", "--ledger", url, cwd=tmp_path).stdout)
    assert trace["request"]["command"]["quantity"] == LONG_QUANTITY and trace["decision"]["reason"] == "QUANTITY_OFF_STEP"
    text = titan("explain", "ord-big", "--ledger", url, cwd=tmp_path)
    assert text.returncode == 0 and LONG_QUANTITY in text.stdout.replace("\n", "").replace(" ", "")
    fees = json.loads(titan("explain", "ord-c3", "--json", "--ledger", url, cwd=tmp_path).stdout)["lifecycle"]["fees"]
    assert fees == LONG_FEE  # summed exactly, not rounded to 28 digits
    state = json.loads(titan("state", "--json", "--ledger", url, cwd=tmp_path).stdout)
    [position] = state["positions"]
    assert position["fees"] == str(int(HUGE_FEE) + int(LONG_FEE))
    assert titan("state", "--ledger", url, cwd=tmp_path).returncode == 0
    at = json.loads(titan("replay", "--until", "30", "--json", "--ledger", url, cwd=tmp_path).stdout)
    assert at["accounts"][0]["state"]["account_id"] == "main"
    verify = titan("replay", "verify", "--ledger", url, cwd=tmp_path)
    assert verify.returncode == 0, verify.stdout[-2000:] + verify.stderr[-2000:]


def test_the_auditor_view_reads_records_holding_nul_and_leaves_them_as_recorded(pg_url: str) -> None:
    upgrade(pg_url)
    ledger = open_ledger(pg_url)
    try:
        build_poisoned(ledger)
        head = ledger.head()
        with psycopg.connect(pg_url, autocommit=True) as db:
            count, with_data = db.execute("SELECT count(*), count(data) FROM titan_records").fetchone() or (0, 0)
            halt = db.execute(
                "SELECT data->>'reason' FROM titan_records WHERE command_id = 'h1' AND type = 'breaker.transitioned.v1'"
            ).fetchone()
            literal = db.execute(
                "SELECT data->>'reason' FROM titan_records WHERE command_id = 'h2' AND type = 'breaker.transitioned.v1'"
            ).fetchone()
            stored = db.execute(
                "SELECT count(*) FROM stored_events WHERE strpos(convert_from(state, 'UTF8'), 'bad\\u0000halt') > 0"
            ).fetchone()
        assert count == with_data == head[2]
        assert halt == (NUL_HALT.replace("\x00", "\ufffd"),)
        assert literal == (LITERAL_ESCAPE,)  # the text "\u0000" after a backslash is not a NUL
        assert stored is not None and stored[0] >= 2  # the records keep the escape as written
        assert verify_ledger(ledger).ok and ledger.head() == head
    finally:
        ledger.close()


# --- export through a symbolic link (issue 9 §6) ----------------------------------------------


def test_export_follows_a_symbolic_link_and_refuses_a_bad_one_in_one_line(tmp_path: Path) -> None:
    ledger = open_ledger("sqlite:///" + str(tmp_path / "l.db"))
    try:
        build_poisoned(ledger)
        (tmp_path / "empty").mkdir()
        (tmp_path / "to-empty").symlink_to(tmp_path / "empty")
        export_ledger(ledger, tmp_path / "to-empty", titan_version="test", read_side=READ_SIDE)
        assert (tmp_path / "to-empty").is_symlink() and (tmp_path / "empty" / "manifest.json").is_file()
        (tmp_path / "dangling").symlink_to(tmp_path / "not-yet")
        export_ledger(ledger, tmp_path / "dangling", titan_version="test", read_side=READ_SIDE)
        assert verify_export(tmp_path / "not-yet") == []
        (tmp_path / "loop").symlink_to(tmp_path / "loop")
        with pytest.raises(ExportError, match="cannot be followed"):
            export_ledger(ledger, tmp_path / "loop", titan_version="test", read_side=READ_SIDE)
        (tmp_path / "file").write_text("x")
        (tmp_path / "to-file").symlink_to(tmp_path / "file")
        with pytest.raises(ExportError, match="not a directory"):
            export_ledger(ledger, tmp_path / "to-file", titan_version="test", read_side=READ_SIDE)
    finally:
        ledger.close()
    url = "sqlite:///" + str(tmp_path / "l.db")
    for out in ("loop", "to-file", "file/sub"):
        result = titan("ledger", "export", "--out", str(tmp_path / out), "--ledger", url, cwd=tmp_path)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert result.stderr.strip().startswith("error:") and len(result.stderr.strip().splitlines()) == 1
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


# --- the golden poisoned ledger bdfcdfd wrote ---------------------------------------------------


@pytest.fixture
def golden_poisoned(tmp_path: Path) -> Path:
    """A scratch copy of the golden poisoned ledger (the committed file is never opened in place)."""
    entry = load_manifest()["ledgers"][GOLDEN]
    copy = tmp_path / str(entry["file"])
    shutil.copyfile(GOLDEN_DIR / copy.name, copy)
    return copy


def test_the_golden_poisoned_ledger_exports_rebuilds_explains_and_verifies(golden_poisoned: Path, tmp_path: Path) -> None:
    url = "sqlite:///" + str(golden_poisoned)
    committed = hashlib.sha256((GOLDEN_DIR / golden_poisoned.name).read_bytes()).hexdigest()
    out = tmp_path / "export"
    for args in (("ledger", "verify"), ("ledger", "export", "--out", str(out)), ("projections", "rebuild"), ("projections", "run")):
        result = titan(*args, "--ledger", url, cwd=tmp_path)
        assert result.returncode == 0 and "Traceback" not in result.stderr, (args, result.stderr[-2000:])
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    assert verify_export(out) == [] and not [n for n in manifest["notes"] if "not exported" in n]
    sent = {c["command_id"]: c for c in map(json.loads, (GOLDEN_DIR / "poisoned-inputs.jsonl").read_text().splitlines())}
    long_fraction = sent["poison-09"]["quantity"]
    assert len(long_fraction) == 1000 and sent["poison-10"]["quantity"] == "9" * 1000
    quantities = {r["command_id"]: orjson.loads(r["command"])["quantity"] for r in parquet_rows(out / "commands.parquet") if r["command_type"] == "place_order.v1"}
    assert quantities["poison-09"] == long_fraction and quantities["poison-10"] == "9" * 1000
    orders = {r["order_id"]: r for r in parquet_rows(out / "rm_orders.parquet")}
    assert orders["ord-poison-09"]["quantity"] == long_fraction and orders["ord-poison-10"]["quantity"] == "9" * 1000
    assert orders["ord-poison-09"]["reason"] == "QUANTITY_OFF_STEP"
    [day] = parquet_rows(out / "rm_budget.parquet")
    assert money_units("1.3") + money_units("0.7") + money_units("1.05") + money_units(HUGE_FEE) == int(day["fees_money"])
    [halt] = [r for r in parquet_rows(out / "commands.parquet") if r["command_id"] == "poison-16"]
    assert "\x00" in orjson.loads(halt["command"])["reason"]  # the export keeps the record's text exactly
    trace = json.loads(titan("explain", "ord-poison-09", "--json", "--ledger", url, cwd=tmp_path).stdout)
    assert trace["request"]["command"]["quantity"] == long_fraction and trace["decision"]["outcome"] == "rejected"
    trace = json.loads(titan("explain", "ord-poison-10", "--json", "--ledger", url, cwd=tmp_path).stdout)
    assert trace["decision"]["reason"] == "MAX_LEVERAGE"
    state = json.loads(titan("state", "--json", "--ledger", url, cwd=tmp_path).stdout)
    assert state["breaker"]["state"] == "HALTED"
    assert titan("state", "--ledger", url, cwd=tmp_path).returncode == 0
    verify = titan("replay", "verify", "--ledger", url, cwd=tmp_path)
    assert verify.returncode == 0, verify.stdout[-2000:] + verify.stderr[-2000:]
    assert hashlib.sha256((GOLDEN_DIR / golden_poisoned.name).read_bytes()).hexdigest() == committed
