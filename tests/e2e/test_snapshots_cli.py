"""Snapshots as a user meets them: `titan state`, `titan replay --until` and `titan explain` print
the same with the ledger's snapshots as without them; `titan replay verify` proves them, and names
(exit 1) a snapshot it cannot prove; a spoiled snapshot is skipped with a warning, never used."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import orjson
import pytest

from infra.golden import GOLDEN_DIR, load_manifest
from schemas.canonical import canonical_bytes, sha256_hex

from .conftest import Titan

pytestmark = pytest.mark.e2e

NAME = "writer-snapshots-seed7-orders120"
ENTRY = load_manifest()["ledgers"][NAME]


def ledgers(tmp_path: Path) -> tuple[str, str]:
    """The golden ledger written with snapshots, and a copy of it without them."""
    with_, without = tmp_path / "with.db", tmp_path / "without.db"
    shutil.copyfile(GOLDEN_DIR / ENTRY["file"], with_)
    shutil.copyfile(GOLDEN_DIR / ENTRY["file"], without)
    with sqlite3.connect(without) as db:
        db.execute("DROP TABLE titan_snapshots")
    return f"sqlite:///{with_}", f"sqlite:///{without}"


def an_order(url: str) -> str:
    """An order accepted late in the session (its trace starts from a snapshot)."""
    with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
        (state,) = db.execute(
            "SELECT state FROM stored_events WHERE topic = 'order.accepted.v1' ORDER BY rowid DESC LIMIT 1 OFFSET 3"
        ).fetchone()
    return str(orjson.loads(state)["data"]["order_id"])


def test_readers_print_the_same_with_and_without_snapshots(titan: Titan, tmp_path: Path) -> None:
    with_, without = ledgers(tmp_path)
    ident = an_order(without)
    for args in (
        ("state", "--json"),
        ("state",),
        ("replay", "--json"),
        ("replay", "--until", str(ENTRY["head_position"] - 37), "--json"),
        ("replay", "--until", "2026-01-01T00:00:30Z", "--json"),
        ("explain", ident, "--json"),
        ("explain", ident),
    ):
        seeded, plain = titan(*args, "--ledger", with_), titan(*args, "--ledger", without)
        assert seeded.returncode == plain.returncode == 0, (args, seeded.stderr, plain.stderr)
        assert seeded.stdout == plain.stdout, args
        assert "not used" not in seeded.stderr


def test_replay_verify_proves_the_snapshots_and_names_one_it_cannot(titan: Titan, tmp_path: Path) -> None:
    with_, _ = ledgers(tmp_path)
    report = titan.json("replay", "verify", "--ledger", with_, "--json")
    assert report["ok"] is True
    assert report["snapshots"]["proved"] == report["snapshots"]["stored"] == ENTRY["snapshots"]
    text = titan("replay", "verify", "--ledger", with_)
    assert text.returncode == 0 and f"snapshots: ok, {ENTRY['snapshots']} of {ENTRY['snapshots']} proved" in text.stdout
    # A forger's row: the state of an earlier snapshot, with its SHA-256, under the last one.
    path = Path(with_.removeprefix("sqlite:///"))
    with sqlite3.connect(path) as db:
        (early,) = db.execute("SELECT state FROM titan_snapshots ORDER BY version LIMIT 1").fetchone()
        (last,) = db.execute("SELECT max(version) FROM titan_snapshots").fetchone()
        db.execute(
            "UPDATE titan_snapshots SET state = ?, state_sha256 = ? WHERE version = ?", (early, sha256_hex(early), last)
        )
    failed = titan("replay", "verify", "--ledger", with_, "--json")
    assert failed.returncode == 1, failed.stderr
    found = orjson.loads(failed.stdout)
    assert found["ok"] is False and found["divergence"] is None
    assert [(f["kind"], f["version"]) for f in found["snapshots"]["findings"]] == [("SNAPSHOT_DIFFERS", last)]
    text = titan("replay", "verify", "--ledger", with_)
    assert text.returncode == 1
    assert "1 of" in text.stderr and "SNAPSHOT_DIFFERS" in text.stderr and f"at version {last}" in text.stderr


def test_a_spoiled_snapshot_is_skipped_with_a_warning_and_the_answer_is_unchanged(titan: Titan, tmp_path: Path) -> None:
    with_, without = ledgers(tmp_path)
    path = Path(with_.removeprefix("sqlite:///"))
    with sqlite3.connect(path) as db:
        (last,) = db.execute("SELECT max(version) FROM titan_snapshots").fetchone()
        db.execute("UPDATE titan_snapshots SET chain_hash = ? WHERE version = ?", ("0" * 64, last))
    seeded, plain = titan("state", "--json", "--ledger", with_), titan("state", "--json", "--ledger", without)
    assert seeded.returncode == 0 and seeded.stdout == plain.stdout
    assert f"snapshot of account-main at version {last} not used (CHAIN_HASH)" in seeded.stderr
    assert titan("replay", "verify", "--ledger", with_).returncode == 1


def forge_every_snapshot(path: Path) -> list[tuple[int, int]]:
    """What someone with INSERT and DELETE on the table can do: every stored state replaced by one
    holding no position, with a fresh SHA-256 and the honest references (the trust rule passes)."""
    forged = []
    with sqlite3.connect(path) as db:
        for version, position, state in db.execute("SELECT version, position, state FROM titan_snapshots").fetchall():
            data = orjson.loads(state)
            data["positions"] = []
            planted = canonical_bytes(data)
            db.execute(
                "UPDATE titan_snapshots SET state = ?, state_sha256 = ? WHERE version = ?", (planted, sha256_hex(planted), version)
            )
            forged.append((version, position))
    return sorted(forged)


def test_no_snapshots_gives_the_folds_answer_on_a_planted_snapshot_and_a_note_says_when_one_was_used(
    titan: Titan, tmp_path: Path
) -> None:
    with_, without = ledgers(tmp_path)
    ident = an_order(without)
    forged = forge_every_snapshot(Path(with_.removeprefix("sqlite:///")))
    newest_version, newest_position = forged[-1]
    for args in (
        ("state", "--json"),
        ("state",),
        ("replay", "--json"),
        ("replay", "--until", str(ENTRY["head_position"] - 37), "--json"),
        ("replay", "--until", "2026-01-01T00:00:30Z", "--json"),
        ("explain", ident, "--json"),
        ("explain", ident),
    ):
        plain = titan(*args, "--ledger", without)
        folded = titan(*args, "--no-snapshots", "--ledger", with_)
        seeded = titan(*args, "--ledger", with_)
        assert plain.returncode == folded.returncode == seeded.returncode == 0, (args, folded.stderr, seeded.stderr)
        assert folded.stdout == plain.stdout, args  # the fold from zero, whatever the table holds
        assert "snapshot" not in folded.stderr and "snapshot" not in plain.stderr, args
        assert seeded.stdout != plain.stdout, args  # the planted state is what a reader shows …
        notes = [line for line in seeded.stderr.splitlines() if "stored snapshot" in line]
        assert len(notes) == 1, (args, seeded.stderr)  # … and it says so, on stderr, in one line
        assert "account-main" in notes[0] and "not proved by this read" in notes[0], notes
        assert "`titan replay verify` proves snapshots against the fold" in notes[0]
        version, position = next((v, p) for v, p in forged if f"at version {v} (position {p})" in notes[0])
        if args[0] == "state" or args == ("replay", "--json"):
            assert (version, position) == (newest_version, newest_position)
    assert titan("replay", "verify", "--ledger", with_).returncode == 1  # the gate is the evidence
