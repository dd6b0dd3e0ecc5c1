"""`titan keys generate|check`: the intake's per-issuer HMAC keys (docs/signing.md).

Exit codes: 0 ok; 2 bad input (an unknown issuer, an existing file without --force, a key file
that cannot be read or parsed: one line naming `file:line`). Keys are never printed.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Annotated

import typer

from adapters.nats.signing import ISSUERS, KeyFileError, generate_keys, keys_text, load_keys
from adapters.private_files import FILE_MODE, make_private_directory
from infra.cli.common import EXIT_BAD_INPUT, EXIT_OK, fail, out

keys_app = typer.Typer(
    help="The intake's signing keys: one HMAC key per issuer, in a 0600 file.", no_args_is_help=True
)


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    """Add the keys commands."""
    app.add_typer(keys_app, name="keys")
    groups["keys"] = keys_app


@keys_app.command("generate")
def keys_generate(
    out_path: Annotated[Path, typer.Option("--out", help="The key file to write (created mode 0600).")],
    issuers: Annotated[
        list[str] | None,
        typer.Option("--issuer", help=f"An issuer to make a key for; repeat for several (default: all of {', '.join(ISSUERS)})."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing file (atomically; its old keys stop verifying).")
    ] = False,
) -> None:
    """Write a new random 32-byte key per issuer to a new 0600 file; print the path and the issuers, never the keys."""
    chosen = tuple(dict.fromkeys(issuers)) if issuers else ISSUERS
    unknown = [issuer for issuer in chosen if issuer not in ISSUERS]
    if unknown:
        fail(f"unknown issuer {unknown[0]!r}: give --issuer one of {', '.join(ISSUERS)}", EXIT_BAD_INPUT)
    keys = generate_keys(chosen)
    try:
        _write(out_path, keys_text(keys).encode("utf-8"), replace=force)
    except FileExistsError:
        fail(
            f"{out_path} already exists; pass --force to replace it (issuers signing with its keys "
            "would then be refused until they get the new ones)",
            EXIT_BAD_INPUT,
        )
    except OSError as error:
        fail(f"cannot write {out_path}: {error.strerror or error}", EXIT_BAD_INPUT)
    out.print(f"wrote {len(keys)} keys to {out_path} (mode 0600): {', '.join(keys)}")
    raise typer.Exit(EXIT_OK)


@keys_app.command("check")
def keys_check(file: Annotated[Path, typer.Argument(help="The key file to check.", show_default=False)]) -> None:
    """Parse a key file and print its issuers, never its keys; a bad file exits 2 naming file:line."""
    try:
        keys = load_keys(file)
    except KeyFileError as error:
        fail(str(error), EXIT_BAD_INPUT)
    missing = [issuer for issuer in ISSUERS if issuer not in keys]
    line = f"{file}: {len(keys)} keys: {', '.join(keys)}"
    if missing:
        line += f" (no key, so refused: {', '.join(missing)})"
    out.print(line)
    raise typer.Exit(EXIT_OK)


def _write(path: Path, content: bytes, *, replace: bool) -> None:
    """Write a new 0600 file; with `replace`, swap it in for any existing one atomically (a
    reader sees the old file or the new, whole), else raise FileExistsError."""
    make_private_directory(path.parent)
    if replace:
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        _write_new(temporary, content)
        try:
            os.replace(temporary, path)
        except OSError:
            temporary.unlink(missing_ok=True)
            raise
    else:
        _write_new(path, content)
    _fsync_directory(path.parent)  # the new name survives a power loss too


def _write_new(path: Path, content: bytes) -> None:
    descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE)
    try:
        os.fchmod(descriptor, FILE_MODE)  # exactly 0600 whatever the umask
        view = memoryview(content)
        while view:
            view = view[os.write(descriptor, view) :]
        os.fsync(descriptor)
    except OSError:
        os.close(descriptor)
        path.unlink(missing_ok=True)
        raise
    os.close(descriptor)


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
