"""`titan keys generate|check` as an operator drives them, through typer's CliRunner on an app
built from `infra.cli.keys.register` (the real CLI wires it the same way)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from adapters.nats.signing import ISSUERS, generate_keys, keys_text, load_keys
from infra.cli import keys as keys_cli

pytestmark = pytest.mark.e2e

EXIT_BAD_INPUT = 2


@pytest.fixture
def titan_keys() -> typer.Typer:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

    @app.callback()
    def root() -> None:
        """titan (the keys group only)."""

    groups: dict[str, typer.Typer] = {}
    keys_cli.register(app, groups)
    assert set(groups) == {"keys"}
    return app


def run(app: typer.Typer, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "300"})
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.stdout, result.stderr


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def key_hexes(path: Path) -> list[str]:
    return [key.hex() for key in load_keys(path).values()]


def test_generate_writes_a_0600_file_that_check_reads(titan_keys: typer.Typer, tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "intake.keys"
    code, stdout, _ = run(titan_keys, "keys", "generate", "--out", str(path))
    assert code == 0
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert str(path) in stdout and all(issuer in stdout for issuer in ISSUERS)
    assert list(load_keys(path)) == list(ISSUERS)
    for key_hex in key_hexes(path):
        assert key_hex not in stdout and key_hex[:16] not in stdout

    code, stdout, _ = run(titan_keys, "keys", "check", str(path))
    assert code == 0
    assert stdout.strip() == f"{path}: 7 keys: {', '.join(ISSUERS)}"
    for key_hex in key_hexes(path):
        assert key_hex not in stdout


def test_generate_for_some_issuers(titan_keys: typer.Typer, tmp_path: Path) -> None:
    path = tmp_path / "execution.keys"
    code, stdout, _ = run(titan_keys, "keys", "generate", "--out", str(path), "--issuer", "execution", "--issuer", "phase2", "--issuer", "execution")
    assert code == 0, stdout
    assert list(load_keys(path)) == ["phase2", "execution"]
    code, stdout, _ = run(titan_keys, "keys", "check", str(path))
    assert code == 0
    assert "2 keys: phase2, execution" in stdout
    assert "no key, so refused: phase1, phase3, powerlaw, quant, console" in stdout


def test_generate_refuses_an_unknown_issuer(titan_keys: typer.Typer, tmp_path: Path) -> None:
    path = tmp_path / "k"
    code, _, stderr = run(titan_keys, "keys", "generate", "--out", str(path), "--issuer", "mallory")
    assert code == EXIT_BAD_INPUT
    assert "mallory" in stderr and ", ".join(ISSUERS) in stderr
    assert not path.exists()


def test_generate_refuses_an_existing_file_without_force(titan_keys: typer.Typer, tmp_path: Path) -> None:
    path = tmp_path / "intake.keys"
    assert run(titan_keys, "keys", "generate", "--out", str(path))[0] == 0
    before = path.read_bytes()
    code, _, stderr = run(titan_keys, "keys", "generate", "--out", str(path))
    assert code == EXIT_BAD_INPUT
    assert "already exists" in stderr and "--force" in stderr
    assert path.read_bytes() == before


def test_force_replaces_the_file_atomically_and_keeps_0600(titan_keys: typer.Typer, tmp_path: Path) -> None:
    path = tmp_path / "intake.keys"
    assert run(titan_keys, "keys", "generate", "--out", str(path))[0] == 0
    old = key_hexes(path)
    inode = path.stat().st_ino
    code, stdout, _ = run(titan_keys, "keys", "generate", "--out", str(path), "--force", "--issuer", "console")
    assert code == 0, stdout
    assert mode(path) == 0o600
    assert path.stat().st_ino != inode  # a new file renamed over the old, never rewritten in place
    assert list(load_keys(path)) == ["console"]
    assert key_hexes(path)[0] not in old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["intake.keys"]  # no temporary left behind


def test_force_replaces_a_file_others_could_read_with_a_private_one(titan_keys: typer.Typer, tmp_path: Path) -> None:
    path = tmp_path / "intake.keys"
    path.write_text("old\n")
    os.chmod(path, 0o644)
    assert run(titan_keys, "keys", "generate", "--out", str(path), "--force")[0] == 0
    assert mode(path) == 0o600
    assert list(load_keys(path)) == list(ISSUERS)


def test_generate_ignores_the_umask(titan_keys: typer.Typer, tmp_path: Path) -> None:
    path = tmp_path / "intake.keys"
    previous = os.umask(0o277)
    try:
        assert run(titan_keys, "keys", "generate", "--out", str(path))[0] == 0
    finally:
        os.umask(previous)
    assert mode(path) == 0o600


def test_generate_into_a_directory_is_bad_input(titan_keys: typer.Typer, tmp_path: Path) -> None:
    code, _, stderr = run(titan_keys, "keys", "generate", "--out", str(tmp_path), "--force")
    assert code == EXIT_BAD_INPUT
    assert "cannot write" in stderr
    assert list(tmp_path.iterdir()) == []


def write(path: Path, text: str | bytes, file_mode: int = 0o600) -> Path:
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    os.chmod(path, file_mode)
    return path


GOOD = "ab" * 32


@pytest.mark.parametrize(
    ("content", "where", "says"),
    [
        (f"# keys\nphase1 {GOOD}\nmallory {GOOD}\n", ":3: ", "unknown issuer 'mallory'"),
        (f"phase1 {'ab' * 16}\n", ":1: ", "at least 32"),
        (f"phase1 {GOOD}\nphase1 {GOOD}\n", ":2: ", "listed again"),
        (f"phase1 {GOOD} x\n", ":1: ", "3 fields"),
        (f"phase1 {'xy' * 32}\n", ":1: ", "not hex"),
        (b"phase1 \xff\n", ":1: ", "not UTF-8"),
        ("\n# nothing\n", ": ", "no keys"),
    ],
)
def test_check_names_the_file_and_line_of_a_bad_file(titan_keys: typer.Typer, tmp_path: Path, content: str | bytes, where: str, says: str) -> None:
    path = write(tmp_path / "intake.keys", content)
    code, stdout, stderr = run(titan_keys, "keys", "check", str(path))
    assert code == EXIT_BAD_INPUT
    assert stdout == ""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"error: {path}{where}"), lines[0]
    assert says in lines[0]
    assert GOOD not in stderr and "ab" * 16 not in stderr


def test_check_refuses_a_file_others_may_read(titan_keys: typer.Typer, tmp_path: Path) -> None:
    path = write(tmp_path / "intake.keys", keys_text(generate_keys()), 0o640)
    code, _, stderr = run(titan_keys, "keys", "check", str(path))
    assert code == EXIT_BAD_INPUT
    assert f"chmod 600 {path}" in stderr and "0640" in stderr


def test_check_a_missing_file(titan_keys: typer.Typer, tmp_path: Path) -> None:
    code, _, stderr = run(titan_keys, "keys", "check", str(tmp_path / "absent"))
    assert code == EXIT_BAD_INPUT
    assert "no such key file" in stderr and "titan keys generate" in stderr
