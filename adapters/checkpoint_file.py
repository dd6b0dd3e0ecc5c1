"""The checkpoint log and its keys on disk: an append-only JSON-lines file, Ed25519 key files.

Files are created readable by their owner only (0600, directories 0700). Appends go through an
exclusive `flock` on the log, are written with O_APPEND and fsynced before they return; a new
log's directory is fsynced too, so an acknowledged checkpoint survives power loss. See
docs/ledger.md ("Checkpoints").
"""

from __future__ import annotations

import fcntl
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Final

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

_HEX_KEY: Final = re.compile(r"[0-9a-fA-F]{64}")
_TAIL_BLOCK: Final = 4096


from .private_files import FILE_MODE, make_private_directory


class CheckpointFileError(Exception):
    """A key or checkpoint log cannot be created, read or used; the message says which and why."""




def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _describe(error: OSError) -> str:
    return error.strerror or str(error)


# --- keys ---------------------------------------------------------------------------------------


def public_key_hex(key: Ed25519PublicKey) -> str:
    """The raw 32-byte public key as 64 hex characters (how titan prints and accepts it)."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def write_new_key(path: Path) -> Ed25519PublicKey:
    """Generate an Ed25519 key, write it to a new file (PKCS#8 PEM, 0600); return its public key.

    An existing file is never overwritten: its checkpoints would no longer verify.
    """
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        make_private_directory(path.parent)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError as error:
        raise CheckpointFileError(
            f"checkpoint key {str(path)!r} already exists; it is never overwritten "
            "(its checkpoints would stop verifying): choose another --out"
        ) from error
    except OSError as error:
        raise CheckpointFileError(
            f"cannot create checkpoint key {str(path)!r}: {_describe(error)}"
        ) from error
    try:
        os.write(descriptor, pem)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    _fsync_directory(path.parent)
    return key.public_key()


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read an Ed25519 private key file; refuse one that others may read."""
    try:
        mode = path.stat().st_mode
        raw = path.read_bytes()
    except FileNotFoundError as error:
        raise CheckpointFileError(
            f"no checkpoint key at {str(path)!r}: create one with `titan ledger keygen` "
            "or set TITAN_CHECKPOINT_KEY"
        ) from error
    except OSError as error:
        raise CheckpointFileError(
            f"cannot read checkpoint key {str(path)!r}: {_describe(error)}"
        ) from error
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CheckpointFileError(
            f"checkpoint key {str(path)!r} is readable by others (mode {stat.S_IMODE(mode):04o}); "
            f"it must be readable by its owner only: chmod 600 {path}"
        )
    try:
        key = serialization.load_pem_private_key(raw, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        raise CheckpointFileError(
            f"{str(path)!r} is not an unencrypted PEM private key ({error}); "
            "expected a file written by `titan ledger keygen`"
        ) from error
    if not isinstance(key, Ed25519PrivateKey):
        raise CheckpointFileError(
            f"{str(path)!r} holds a {type(key).__name__}; checkpoints are signed with Ed25519"
        )
    return key


def load_public_key(value: str) -> Ed25519PublicKey:
    """An Ed25519 public key from 64 hex characters, or from a file holding them or a PEM key."""
    text = value.strip()
    if _HEX_KEY.fullmatch(text):
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(text))
    path = Path(text)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise CheckpointFileError(
            f"public key {value!r} is neither 64 hex characters nor a readable file "
            f"({_describe(error)})"
        ) from error
    content = raw.strip()
    if _HEX_KEY.fullmatch(content.decode("ascii", "replace")):
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(content.decode()))
    try:
        key = serialization.load_pem_public_key(content)
    except (ValueError, UnsupportedAlgorithm) as error:
        raise CheckpointFileError(
            f"{str(path)!r} holds no public key ({error}); expected 64 hex characters "
            "(as `titan ledger keygen` prints) or a PEM public key"
        ) from error
    if not isinstance(key, Ed25519PublicKey):
        raise CheckpointFileError(
            f"{str(path)!r} holds a {type(key).__name__}; checkpoints are verified with Ed25519"
        )
    return key


# --- the log ------------------------------------------------------------------------------------


class CheckpointLog:
    """An open checkpoint log, held under an exclusive lock: read its last line, append one."""

    def __init__(self, path: Path, descriptor: int) -> None:
        self.path = path
        self._descriptor = descriptor

    def last_line(self) -> bytes | None:
        """Return the last non-empty line (without its newline), or None for an empty log."""
        size = os.fstat(self._descriptor).st_size
        tail = b""
        end = size
        while end > 0:
            start = max(0, end - _TAIL_BLOCK)
            tail = os.pread(self._descriptor, end - start, start) + tail
            end = start
            stripped = tail.rstrip(b"\n")
            cut = stripped.rfind(b"\n")
            if cut >= 0:
                return stripped[cut + 1 :]
        stripped = tail.rstrip(b"\n")
        return stripped or None

    def append(self, line: bytes) -> None:
        """Append one line and fsync it."""
        if b"\n" in line:
            raise ValueError("a checkpoint line must not contain a newline")
        data = line + b"\n"
        written = 0
        while written < len(data):
            written += os.write(self._descriptor, data[written:])
        os.fsync(self._descriptor)


@contextmanager
def open_log(path: Path) -> Iterator[CheckpointLog]:
    """Open (or create, 0600) a checkpoint log for appending, under an exclusive lock."""
    created = not path.exists()
    try:
        make_private_directory(path.parent)
        descriptor = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, FILE_MODE)
    except OSError as error:
        raise CheckpointFileError(
            f"cannot open checkpoint log {str(path)!r} for appending: {_describe(error)}"
        ) from error
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        if created:
            _fsync_directory(path.parent)
        yield CheckpointLog(path, descriptor)
    finally:
        os.close(descriptor)


def read_lines(path: Path) -> Iterator[bytes]:
    """Every line of a checkpoint log, without its newline (empty ones too: numbers match the file).

    The file is opened at once (a missing one raises here); lines are read as they are consumed.
    """
    try:
        handle = path.open("rb")
    except FileNotFoundError as error:
        raise CheckpointFileError(
            f"no checkpoint log at {str(path)!r}: write one with `titan ledger checkpoint` "
            "or name it: --checkpoints FILE (or TITAN_CHECKPOINT_FILE)"
        ) from error
    except OSError as error:
        raise CheckpointFileError(
            f"cannot read checkpoint log {str(path)!r}: {_describe(error)}"
        ) from error
    return _lines_of(handle)


def _lines_of(handle: BinaryIO) -> Iterator[bytes]:
    with handle:
        for line in handle:
            yield line.rstrip(b"\n")
