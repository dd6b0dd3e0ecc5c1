"""`titan ledger keygen|checkpoint` and `titan ledger verify --checkpoints`, as an operator uses
them, on the embedded ledger and on PostgreSQL; and read-only commands that never make a ledger."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.checkpoint_support import Tamperer, tamper_line

from .conftest import ROOT, Titan, titan_command

pytestmark = pytest.mark.e2e

SQLITE_URL = "sqlite:///.titan/ledger.db"


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest) -> str:
    return SQLITE_URL if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))


def checkpointed(titan: Titan, url: str) -> tuple[str, dict[str, Any]]:
    """A demo ledger, a key at its default place and one checkpoint of its head; the public key."""
    titan.json("demo", "--ledger", url, "--orders", "20", "--json")
    key = titan.json("ledger", "keygen", "--ledger", url, "--json")
    written = titan.json("ledger", "checkpoint", "--ledger", url, "--json")
    return str(key["public_key"]), written["checkpoint"]


def absolute(titan: Titan, url: str) -> str:
    return f"sqlite:///{titan.cwd / '.titan' / 'ledger.db'}" if url == SQLITE_URL else url


def test_a_deleted_last_command_passes_verify_but_not_verify_checkpoints(titan: Titan, url: str) -> None:
    public_key, signed = checkpointed(titan, url)
    deleted, head = Tamperer(absolute(titan, url)).truncate_last_command()
    assert deleted and head.position < signed["position"]

    plain = titan("ledger", "verify", "--ledger", url)
    assert plain.returncode == 0, plain.stderr  # the moved anchor fools the database's own check
    assert plain.stdout.startswith(f"ok: {signed['record_count'] - len(deleted)} records")

    anchored = titan("ledger", "verify", "--ledger", url, "--checkpoints")
    assert anchored.returncode == 1
    assert (
        f"truncated: checkpoint at position {signed['position']} (hash {signed['hash']}) "
        f"but the ledger ends at {head.position}"
    ) in anchored.stderr

    # An auditor holds only the public key and a copy of the log.
    log = next(titan.cwd.glob(".titan/*.checkpoints.jsonl"))
    copy = titan.cwd / "audit" / "log.jsonl"
    copy.parent.mkdir()
    shutil.copyfile(log, copy)
    (titan.cwd / ".titan" / "checkpoint.key").unlink()
    audited = titan(
        "ledger", "verify", "--ledger", url, "--checkpoints", str(copy), "--json",
        env={"TITAN_CHECKPOINT_PUBLIC_KEY": public_key},
    )
    assert audited.returncode == 1
    report = json.loads(audited.stdout)
    assert (report["ok"], report["chain_ok"]) == (False, True)
    assert [f["code"] for f in report["checkpoints"]["findings"]] == ["TRUNCATED"]


def test_a_rewritten_last_command_is_named_forged_and_no_checkpoint_signs_over_it(titan: Titan, url: str) -> None:
    _, signed = checkpointed(titan, url)
    tamperer = Tamperer(absolute(titan, url))
    deleted, head = tamperer.truncate_last_command()
    forged = tamperer.append_sealed(deleted, head)

    plain = titan("ledger", "verify", "--ledger", url)
    assert plain.returncode == 0, plain.stderr
    assert f"head {signed['position']} {forged[-1].envelope['hash']}" in plain.stdout

    anchored = titan("ledger", "verify", "--ledger", url, "--checkpoints")
    assert anchored.returncode == 1
    assert (
        f"forged: position {signed['position']} has hash {forged[-1].envelope['hash']}, "
        f"the checkpoint signed {signed['hash']}"
    ) in anchored.stderr
    refused = titan("ledger", "checkpoint", "--ledger", url)
    assert refused.returncode == 1
    assert f"forged: position {signed['position']}" in refused.stderr


def test_a_changed_checkpoint_line_is_a_bad_signature(titan: Titan) -> None:
    checkpointed(titan, SQLITE_URL)
    assert titan("ledger", "verify", "--checkpoints").returncode == 0
    log = titan.cwd / ".titan" / "ledger.checkpoints.jsonl"
    log.write_bytes(tamper_line(log.read_bytes().rstrip(b"\n")) + b"\n")
    result = titan("ledger", "verify", "--checkpoints")
    assert result.returncode == 1
    assert "bad signature on line 1" in result.stderr
    assert result.stdout.startswith("ok: ")  # the chain itself is intact
    refused = titan("ledger", "checkpoint")
    assert refused.returncode == 1 and "does not verify (bad signature)" in refused.stderr


def test_keys_and_logs_are_private_and_bad_input_exits_2(titan: Titan) -> None:
    no_key = titan("ledger", "checkpoint")
    assert no_key.returncode == 2 and "no ledger at" in no_key.stderr
    titan.json("init", "--json")
    missing = titan("ledger", "checkpoint")
    assert missing.returncode == 2 and "no checkpoint key at '.titan/checkpoint.key'" in missing.stderr
    no_public_key = titan("ledger", "verify", "--checkpoints")
    assert no_public_key.returncode == 2 and "no public key to verify checkpoints with" in no_public_key.stderr

    key = titan.json("ledger", "keygen", "--json")
    assert len(key["public_key"]) == 64
    no_log = titan("ledger", "verify", "--checkpoints")
    assert no_log.returncode == 2 and "no checkpoint log at '.titan/ledger.checkpoints.jsonl'" in no_log.stderr
    again = titan("ledger", "keygen")
    assert again.returncode == 2 and "already exists; it is never overwritten" in again.stderr
    assert titan("ledger", "checkpoint").returncode == 0
    for name in ("checkpoint.key", "ledger.checkpoints.jsonl", "ledger.db"):
        assert oct((titan.cwd / ".titan" / name).stat().st_mode & 0o777) == "0o600", name
    assert oct((titan.cwd / ".titan").stat().st_mode & 0o777) == "0o700"

    (titan.cwd / ".titan" / "checkpoint.key").chmod(0o644)
    loose = titan("ledger", "checkpoint")
    assert loose.returncode == 2 and "readable by others (mode 0644)" in loose.stderr
    stray = titan("ledger", "verify", "log.jsonl")
    assert stray.returncode == 2 and "--checkpoints log.jsonl" in stray.stderr


# Read-only commands: they never create or change a ledger.

READ_ONLY = (
    ("state",),
    ("ledger", "verify"),
    ("policy", "show"),
    ("replay",),
    ("replay", "verify"),
    ("explain", "ord-x"),
    ("ledger", "export", "--out", "export"),
    ("projections", "status"),
    ("ledger", "checkpoint"),
)


def test_read_only_commands_on_a_missing_ledger_create_nothing(titan: Titan) -> None:
    for command in READ_ONLY:
        result = titan(*command)
        assert result.returncode == 2, (command, result.stderr)
        assert "no ledger at '.titan/ledger.db'" in result.stderr, command
    assert list(titan.cwd.iterdir()) == []


def test_an_empty_file_is_refused_by_every_command(titan: Titan) -> None:
    (titan.cwd / ".titan").mkdir()
    empty = titan.cwd / ".titan" / "ledger.db"
    empty.touch()
    for command in (*READ_ONLY, ("init",), ("halt", "--reason", "drill"), ("submit", "-")):
        result = titan(*command, stdin="")
        assert result.returncode == 2, (command, result.stderr)
        assert "is not a titan ledger (empty file)" in result.stderr, command
    assert empty.read_bytes() == b""
    assert sorted(p.name for p in empty.parent.iterdir()) == ["ledger.db"]


def read_only_mount(directory: Path, commands: list[list[str]]) -> list[subprocess.CompletedProcess[str]]:
    """Run titan commands with `directory` bind-mounted read-only (a private mount namespace)."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"no private mount namespace here: {probe.stderr.decode().strip()}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TITAN_") or k == "TITAN_CORE"}
    env.update(PYTHONPATH=str(ROOT), COLUMNS="200")
    results = []
    for command in commands:
        script = (
            f'mount --bind "{directory}" "{directory}" && mount -o remount,bind,ro "{directory}" && '
            + " ".join(f"'{part}'" for part in [*titan_command(), *command])
        )
        results.append(
            subprocess.run(
                ["unshare", "-m", "sh", "-c", script], cwd=directory.parent, capture_output=True, text=True,
                env=env, timeout=300, check=False,
            )
        )
    return results


def test_read_only_commands_work_in_a_read_only_directory(titan: Titan) -> None:
    titan.json("init", "--json")
    titan.json("ledger", "keygen", "--json")
    titan.json("ledger", "checkpoint", "--json")
    directory = titan.cwd / ".titan"
    before = {p.name: p.read_bytes() for p in directory.iterdir()}
    commands = [["state"], ["ledger", "verify", "--checkpoints"], ["policy", "show", "--json"], ["replay", "--json"]]
    for command, result in zip(commands, read_only_mount(directory, commands), strict=True):
        assert result.returncode == 0, (command, result.stderr)
    written = read_only_mount(directory, [["ledger", "checkpoint"]])[0]
    assert written.returncode == 2 and "cannot open checkpoint log" in written.stderr
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before
