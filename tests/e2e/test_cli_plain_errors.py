"""Smaller defects of the hardening issue (§6): secrets never printed, one-line errors instead of
tracebacks, and `replay verify` saying what it compared."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from adapters.redact import redact

from .conftest import Titan

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:s3cret@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u@h/db?password=s3cret&sslmode=require", "postgresql://u@h/db?password=***&sslmode=require"),
        ("postgresql://u:a@h/db?sslpassword=s3cret", "postgresql://u:***@h/db?sslpassword=***"),
        ("sqlite:///.titan/ledger.db", "sqlite:///.titan/ledger.db"),
        ("sqlite:////abs/ledger.db", "sqlite:////abs/ledger.db"),
    ],
)
def test_a_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert redact(url) == shown


def with_password(url: str, password: str, *, in_query: bool) -> str:
    parts = urlsplit(url)
    if in_query:
        return urlunsplit(parts._replace(query=f"password={password}"))
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user.split(':')[0]}:{password}@{host}"))


@pytest.mark.parametrize("in_query", [False, True])
def test_init_and_verify_never_print_the_password(titan: Titan, pg_url: str, in_query: bool) -> None:
    url = with_password(pg_url, "s3cret-pw", in_query=in_query)  # trust auth: any password is accepted
    for args in (("init", "--ledger", url), ("init", "--ledger", url, "--json"), ("ledger", "verify", "--ledger", url),
                 ("db", "status", "--ledger", url), ("replay", "verify", "--ledger", url)):
        result = titan(*args)
        assert "s3cret-pw" not in result.stdout + result.stderr, args


def test_an_unknown_role_is_bad_configuration_not_an_unreachable_server(titan: Titan, pg_url: str) -> None:
    parts = urlsplit(pg_url)
    url = urlunsplit(parts._replace(netloc=f"no_such_role_x@{parts.hostname}:{parts.port}"))
    result = titan("state", "--ledger", url)
    assert result.returncode == 2, result.stderr
    assert "no_such_role_x" in result.stderr and "unreachable" not in result.stderr
    assert "Traceback" not in result.stderr


def test_an_altered_record_is_a_one_line_error_for_state_and_submit(titan: Titan, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    assert titan("init", "--ledger", url).returncode == 0
    with sqlite3.connect(tmp_path / "ledger.db") as db:  # an attacker's edit: valid JSON, wrong shape
        db.execute("UPDATE stored_events SET state = CAST('{\"x\": 1}' AS BLOB) WHERE originator_id = 'account-main'")
    for args in (("state", "--ledger", url), ("halt", "--reason", "r", "--ledger", url)):
        result = titan(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert "Traceback" not in result.stderr
        assert "cannot be read" in result.stderr and "titan ledger verify" in result.stderr
    (tmp_path / "c.jsonl").write_text(json.dumps({"type": "halt.v1", "command_id": "h1", "account_id": "main",
                                                 "ts_ns": 1, "actor": "op", "reason": "r"}) + "\n")
    result = titan("submit", "c.jsonl", "--ledger", url)
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_replay_verify_says_when_no_read_model_was_compared(titan: Titan, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    titan.json("demo", "--ledger", url, "--orders", "20", "--json")
    result = titan("replay", "verify", "--ledger", url)
    assert result.returncode == 0, result.stderr
    assert "digests equal (at position 0)" not in result.stdout
    assert "never run" in result.stdout


def test_text_output_never_sends_a_recorded_control_character_to_the_terminal(titan: Titan, tmp_path: Path) -> None:
    """The poisoned golden ledger (written by an earlier titan) holds a halt reason with NUL, BEL and
    an ESC colour sequence: text output shows them as escapes, JSON output keeps them as recorded."""
    import shutil

    from infra.golden import GOLDEN_DIR

    copy = tmp_path / "poisoned.db"
    shutil.copyfile(GOLDEN_DIR / "poisoned-inputs-v0.db", copy)
    url = f"sqlite:///{copy}"
    for args in (("state", "--ledger", url), ("explain", "poison-16", "--ledger", url), ("replay", "--ledger", url)):
        result = titan(*args)
        assert result.returncode == 0, (args, result.stderr)
        assert not any(ord(c) < 32 and c not in "\n" or 0x7F <= ord(c) <= 0x9F for c in result.stdout), args
    shown = titan("explain", "poison-16", "--ledger", url).stdout
    assert "\\x1b" in shown and "\\x00" in shown
    as_json = titan("explain", "poison-16", "--ledger", url, "--json").stdout
    assert "\\u001b[31m red" in as_json  # the recorded reason, exactly, in JSON's own escape


def test_read_only_commands_leave_an_embedded_ledger_file_unchanged(titan: Titan, tmp_path: Path) -> None:
    """`replay verify` (which rebuilds every read model to compare digests), `projections status`
    and `ledger export` work on a snapshot: the ledger file's bytes never change."""
    import hashlib

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    titan.json("demo", "--ledger", url, "--orders", "20", "--json")
    assert titan("projections", "run", "--ledger", url).returncode == 0
    before = hashlib.sha256((tmp_path / "ledger.db").read_bytes()).hexdigest()
    for args in (("replay", "verify", "--ledger", url), ("projections", "status", "--ledger", url),
                 ("ledger", "export", "--out", str(tmp_path / "export"), "--ledger", url)):
        result = titan(*args)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
    assert "digests equal" in titan("replay", "verify", "--ledger", url).stdout
    assert hashlib.sha256((tmp_path / "ledger.db").read_bytes()).hexdigest() == before


def test_a_lone_surrogate_or_an_unusable_path_is_a_one_line_error(titan: Titan, tmp_path: Path) -> None:
    lines = ['{"ts_ns":1e400,"command_id":"\\ud800"}',
             json.dumps({"type": "halt.v1", "command_id": "after", "account_id": "main", "ts_ns": 1, "actor": "x", "reason": "r"})]
    (tmp_path / "c.jsonl").write_text("\n".join(lines) + "\n")
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    result = titan("submit", "c.jsonl", "--ledger", url)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert json.loads(result.stdout.splitlines()[1])["outcome"] == "accepted"
    for name in ("a" * 5000, "b" * 251):
        made = titan("init", "--ledger", f"sqlite:///{tmp_path / name}")
        assert made.returncode == 2 and "Traceback" not in made.stderr
        assert not list(tmp_path.glob(name[:200] + "*"))  # no empty file left that is not a ledger


def test_audit_sql_prints_recorded_markup_and_control_characters_harmlessly(titan: Titan, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    assert titan("init", "--ledger", url).returncode == 0
    assert titan("halt", "--reason", "[/oops] [bold]x", "--ledger", url).returncode == 0
    result = titan("audit", "sql", "SELECT json_extract_string(command, '$.reason') AS r FROM commands", "--ledger", url)
    assert result.returncode == 0, result.stderr
    assert "[/oops] [bold]x" in result.stdout


def test_projections_status_names_a_missing_store(titan: Titan, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    assert titan("init", "--ledger", url).returncode == 0
    result = titan("projections", "status", "--ledger", url, "--store", f"sqlite:///{tmp_path / 'none.db'}")
    assert result.returncode == 2 and "no read models" in result.stderr


def test_a_password_quoted_inside_an_error_message_is_masked() -> None:
    from adapters.redact import redact_text

    message = "cannot open ledger postgresql://u:s3cret@h:5432/db?sslpassword=k3y&sslmode=require: denied"
    shown = redact_text(message)
    assert "s3cret" not in shown and "k3y" not in shown
    assert shown == "cannot open ledger postgresql://u:***@h:5432/db?sslpassword=***&sslmode=require: denied"
