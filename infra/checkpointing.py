"""Wiring of signed checkpoints: where the key and the log live, writing one, checking a log.

The paths come from the settings (TITAN_CHECKPOINT_KEY, TITAN_CHECKPOINT_FILE,
TITAN_CHECKPOINT_PUBLIC_KEY), with defaults beside the ledger; see docs/ledger.md.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from adapters.checkpoint_file import (
    CheckpointFileError,
    load_private_key,
    load_public_key,
    open_log,
    read_lines,
)
from commands.ports import Ledger, LedgerError
from replay.checkpoints import (
    BadLine,
    Checkpoint,
    CheckpointRefused,
    CheckpointReport,
    next_checkpoint,
    parse_line,
    sign,
    verify_checkpoints,
)

from .bootstrap import POSTGRES_SCHEMES, sqlite_path
from .settings import Settings

KEY_FILE_NAME: Final = "checkpoint.key"
LOG_SUFFIX: Final = ".checkpoints.jsonl"
PG_DIRECTORY: Final = ".titan"


class CheckpointError(LedgerError):
    """A checkpoint could not be written or checked; `exit_code` is 1 (a check failed) or 2."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True, slots=True)
class CheckpointPaths:
    """Where one ledger's checkpoint key and log live (None: an in-memory ledger has none)."""

    key: Path | None
    log: Path | None


def default_paths(ledger_url: str) -> CheckpointPaths:
    """The documented defaults: beside an embedded ledger; under .titan/ for a PostgreSQL one."""
    if ledger_url.startswith(POSTGRES_SCHEMES):
        database = urlsplit(ledger_url).path.strip("/") or "postgres"
        directory = Path(PG_DIRECTORY)
        return CheckpointPaths(directory / KEY_FILE_NAME, directory / f"{database}{LOG_SUFFIX}")
    path = sqlite_path(ledger_url)
    if path == ":memory:":
        return CheckpointPaths(None, None)
    ledger = Path(path)
    return CheckpointPaths(
        ledger.parent / KEY_FILE_NAME, ledger.parent / f"{ledger.stem}{LOG_SUFFIX}"
    )


def checkpoint_paths(settings: Settings) -> CheckpointPaths:
    """The key and log the settings name, each defaulting beside the ledger."""
    defaults = default_paths(settings.ledger_url)
    key = Path(settings.checkpoint_key) if settings.checkpoint_key else defaults.key
    log = Path(settings.checkpoint_file) if settings.checkpoint_file else defaults.log
    return CheckpointPaths(key, log)


def _required(path: Path | None, what: str, variable: str) -> Path:
    if path is None:
        raise CheckpointError(
            f"an in-memory ledger has no default checkpoint {what}: set {variable}", 2
        )
    return path


def write_checkpoint(
    ledger: Ledger,
    settings: Settings,
    *,
    key: Path | None = None,
    log: Path | None = None,
    only_if_moved: bool = False,
) -> Checkpoint | None:
    """Sign the ledger's head and append it to the log, after checking it extends the last one.

    With `only_if_moved`, nothing is written when the head is the last checkpoint's. Returns the
    checkpoint written (or None); raises CheckpointError.
    """
    paths = checkpoint_paths(settings)
    key_path = key or _required(paths.key, "key", "TITAN_CHECKPOINT_KEY")
    log_path = log or _required(paths.log, "file", "TITAN_CHECKPOINT_FILE")
    try:
        private = load_private_key(key_path)
        with open_log(log_path) as opened:
            last = _last_checkpoint(opened.last_line(), private.public_key(), log_path)
            checkpoint = next_checkpoint(ledger, last, time.time_ns())
            if only_if_moved and last is not None and last.position == checkpoint.position:
                return None
            opened.append(sign(checkpoint, private))
    except CheckpointFileError as error:
        raise CheckpointError(str(error), 2) from error
    except CheckpointRefused as error:
        raise CheckpointError(str(error), 1 if error.check_failed else 2) from error
    return checkpoint


def _last_checkpoint(raw: bytes | None, key: Ed25519PublicKey, log: Path) -> Checkpoint | None:
    """The log's last checkpoint, which the next one must extend; a bad last line stops here."""
    if raw is None:
        return None
    try:
        return parse_line(raw, key)
    except BadLine as error:
        raise CheckpointError(
            f"the last line of checkpoint log {str(log)!r} does not verify ({error}); "
            f"not appending to it: run `titan ledger verify --checkpoints {log}`",
            1,
        ) from error


def is_configured(settings: Settings) -> bool:
    """Whether checkpoints are on: a key is named (TITAN_CHECKPOINT_KEY) or exists by default."""
    if settings.checkpoint_key:
        return True
    key = default_paths(settings.ledger_url).key
    return key is not None and key.is_file()


def checkpoint_if_configured(ledger: Ledger, settings: Settings) -> None:
    """After an append: sign the new head when checkpoints are on (and the head moved).

    Does nothing when no key is configured or the ledger is in memory or still empty; raises
    CheckpointError (a LedgerError) when the head cannot be signed, e.g. after a truncation.
    """
    if not is_configured(settings):
        return
    if checkpoint_paths(settings).log is None:
        return
    if ledger.head()[2] == 0:
        return
    write_checkpoint(ledger, settings, only_if_moved=True)


def verifying_key(settings: Settings) -> Ed25519PublicKey:
    """The public key that verifies checkpoints: TITAN_CHECKPOINT_PUBLIC_KEY, else the private
    key file's."""
    try:
        if settings.checkpoint_public_key:
            return load_public_key(settings.checkpoint_public_key)
        key = checkpoint_paths(settings).key
        if key is None or not key.exists():
            where = "" if key is None else f" (no private key at {str(key)!r} to derive it from)"
            raise CheckpointError(
                f"no public key to verify checkpoints with{where}: set TITAN_CHECKPOINT_PUBLIC_KEY "
                "to the key `titan ledger keygen` printed",
                2,
            )
        return load_private_key(key).public_key()
    except CheckpointFileError as error:
        raise CheckpointError(str(error), 2) from error


def verify_log(ledger: Ledger, log: Path, key: Ed25519PublicKey) -> CheckpointReport:
    """Check a checkpoint log against the ledger; raise CheckpointError if it cannot be read or
    holds no line at all."""
    try:
        report = verify_checkpoints(read_lines(log), ledger, key)
    except CheckpointFileError as error:
        raise CheckpointError(str(error), 2) from error
    if report.lines == 0:
        raise CheckpointError(
            f"checkpoint log {str(log)!r} holds no checkpoints: nothing to check the ledger "
            "against (write one with `titan ledger checkpoint`)",
            2,
        )
    return report


def log_for(settings: Settings, given: str | None) -> Path:
    """The checkpoint log to verify: the one given, else the configured or default one."""
    if given:
        return Path(os.path.expanduser(given))
    return _required(checkpoint_paths(settings).log, "file", "TITAN_CHECKPOINT_FILE")
