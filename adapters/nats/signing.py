"""Signed intake: per-issuer HMAC keys, the signature on a command, and its verification
(docs/signing.md).

When keys are configured, every command on `titan.cmd.<account>.<command type>` carries three
headers: who signed it (`Titan-Issuer`), when by the issuer's clock (`Titan-Issued-Ts-Ns`) and
`Titan-Signature: v1=<hex HMAC-SHA256>` over a version-tagged message that binds all three to the
subject and the exact payload bytes. A command that fails is refused with a stable reason code; the
intake sends it to the DLQ with that reason. This module is pure apart from `load_keys`: time comes
in as `now_ns`, and nothing here prints or returns key material.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import stat
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

# Headers (the lead may move them to subjects.py).
ISSUER: Final = "Titan-Issuer"
ISSUED_TS: Final = "Titan-Issued-Ts-Ns"
"""Decimal integer nanoseconds since the epoch, by the issuer's clock."""
SIGNATURE: Final = "Titan-Signature"
"""`v1=` and the lowercase hex HMAC-SHA256 of `signed_bytes`."""

ISSUERS: tuple[str, ...] = ("phase1", "phase2", "phase3", "execution", "powerlaw", "quant", "console")
"""Everyone who may sign a command; each has its own key and its own role (adapters/nats/roles.py)."""

SIGNED_PREFIX: Final = b"titan-intake-v1\n"
SIGNATURE_PREFIX: Final = "v1="
MIN_KEY_BYTES: Final = 32
"""HMAC-SHA256's own output size: a shorter key is weaker than the hash it keys."""
MAX_TS_NS: Final = 2**63 - 1
"""The largest timestamp accepted (a signed 64-bit integer, as `ts_*` fields are stored)."""

# Reason codes of a refused command (stable strings: the DLQ and dashboards key on them).
UNSIGNED: Final = "UNSIGNED"
UNKNOWN_ISSUER: Final = "UNKNOWN_ISSUER"
BAD_SIGNATURE: Final = "BAD_SIGNATURE"
SIGNATURE_EXPIRED: Final = "SIGNATURE_EXPIRED"
OUT_OF_ROLE: Final = "OUT_OF_ROLE"

_TS: Final = re.compile(r"0|[1-9][0-9]{0,18}")
_SIGNATURE_VALUE: Final = re.compile(r"v1=[0-9a-f]{64}")
_HEX: Final = re.compile(r"[0-9a-fA-F]+")
_SHOWN_CHARS: Final = 64
_KEY_FILE_FORMAT: Final = "`<issuer> <key hex>` per line"


class KeyFileError(ValueError):
    """A key file that cannot be used; the message names `source:line` (or the file) and what
    is accepted, never a key."""


class Refused(Exception):
    """A command the intake must not handle: `reason` is a code above, `error` says why in words
    (no key material, at most a short excerpt of any input)."""

    def __init__(self, reason: str, error: str) -> None:
        super().__init__(f"{reason}: {error}")
        self.reason = reason
        self.error = error


@dataclass(frozen=True, slots=True)
class Signed:
    """Who signed a verified command, and when by their clock."""

    issuer: str
    issued_ts_ns: int


class Keys(Mapping[str, bytes]):
    """The issuers' keys, issuer -> key bytes; immutable, and its repr names issuers only."""

    __slots__ = ("_keys",)

    def __init__(self, keys: Mapping[str, bytes]) -> None:
        checked: dict[str, bytes] = {}
        for issuer in ISSUERS:  # ISSUERS' order, so that iterating (and keys_text) is stable
            if issuer in keys:
                checked[issuer] = bytes(keys[issuer])
        unknown = sorted(set(keys) - set(checked))
        if unknown:
            raise ValueError(f"unknown issuers {', '.join(unknown)}: accepted are {', '.join(ISSUERS)}")
        if not checked:
            raise ValueError("no keys: give at least one issuer's key")
        short = [issuer for issuer, key in checked.items() if len(key) < MIN_KEY_BYTES]
        if short:
            raise ValueError(f"keys shorter than {MIN_KEY_BYTES} bytes for {', '.join(short)}")
        self._keys = checked

    @classmethod
    def parse(cls, text: str, source: str) -> Keys:
        """Read a key file's text: one `<issuer> <key hex>` per line, blank lines and `#` comments
        ignored; raise KeyFileError naming `source:line`."""
        keys: dict[str, bytes] = {}
        first_line: dict[str, int] = {}
        for number, raw_line in enumerate(text.removeprefix("\ufeff").split("\n"), start=1):
            line = raw_line.strip()
            if not line or line.startswith("#"):
                continue
            where = f"{source}:{number}"
            fields = line.split()
            if len(fields) != 2:
                raise KeyFileError(
                    f"{where}: {len(fields)} fields, expected 2: {_KEY_FILE_FORMAT} (whitespace separated)"
                )
            issuer, key_hex = fields
            if issuer not in ISSUERS:
                shown = "a key" if _looks_like_key(issuer) else _shown(issuer)
                raise KeyFileError(
                    f"{where}: unknown issuer {shown}; the first field is one of {', '.join(ISSUERS)}"
                )
            if issuer in first_line:
                raise KeyFileError(
                    f"{where}: issuer {issuer} is listed again (first on line {first_line[issuer]}); "
                    "give each issuer one key"
                )
            if not _HEX.fullmatch(key_hex):
                raise KeyFileError(
                    f"{where}: the key of {issuer} is not hex: give at least {2 * MIN_KEY_BYTES} "
                    "hex digits (0-9, a-f)"
                )
            if len(key_hex) % 2:
                raise KeyFileError(
                    f"{where}: the key of {issuer} has an odd number of hex digits ({len(key_hex)}); "
                    "give whole bytes, two digits each"
                )
            if len(key_hex) < 2 * MIN_KEY_BYTES:
                raise KeyFileError(
                    f"{where}: the key of {issuer} is {len(key_hex) // 2} bytes; give at least "
                    f"{MIN_KEY_BYTES} ({2 * MIN_KEY_BYTES} hex digits)"
                )
            keys[issuer] = bytes.fromhex(key_hex)
            first_line[issuer] = number
        if not keys:
            raise KeyFileError(
                f"{source}: no keys: expected {_KEY_FILE_FORMAT} (create a file with `titan keys generate`)"
            )
        return cls(keys)

    def __getitem__(self, issuer: str) -> bytes:
        return self._keys[issuer]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"Keys(issuers={tuple(self._keys)!r})"


def load_keys(path: str | os.PathLike[str]) -> Keys:
    """Read a key file; refuse a missing one, one that group or others may read (like ssh), one
    that is not UTF-8, and every error `Keys.parse` names."""
    file = Path(path)
    source = str(file)
    try:
        descriptor = os.open(file, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the start
    except FileNotFoundError as error:
        raise KeyFileError(f"{source}: no such key file (create one with `titan keys generate --out {source}`)") from error
    except OSError as error:
        raise KeyFileError(f"{source}: cannot open the key file: {error.strerror or error}") from error
    try:
        mode = os.fstat(descriptor).st_mode  # the file opened, not whatever the path names later
        if not stat.S_ISREG(mode):
            raise KeyFileError(f"{source}: not a regular file; a key file is {_KEY_FILE_FORMAT}")
        if mode & 0o077:
            raise KeyFileError(
                f"{source}: readable by group or others (mode {stat.S_IMODE(mode):04o}); a key file "
                f"must be its owner's only: chmod 600 {source}"
            )
        with os.fdopen(descriptor, "rb", closefd=False) as handle:
            raw = handle.read()
    except OSError as error:
        raise KeyFileError(f"{source}: cannot read the key file: {error.strerror or error}") from error
    finally:
        os.close(descriptor)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise KeyFileError(f"{source}:{line}: not UTF-8; a key file is plain text, {_KEY_FILE_FORMAT}") from None
    return Keys.parse(text, source)


def keys_text(keys: Keys) -> str:
    """A key file holding these keys, which `Keys.parse` reads back."""
    lines = [
        "# titan intake keys (docs/signing.md): one `<issuer> <key hex>` per line.",
        "# Secret: keep this file mode 0600; give each issuer only its own line.",
    ]
    lines.extend(f"{issuer} {key.hex()}" for issuer, key in keys.items())
    return "\n".join(lines) + "\n"


def generate_keys(issuers: Iterable[str] = ISSUERS) -> Keys:
    """New random 32-byte keys for these issuers (all of them by default)."""
    return Keys({issuer: secrets.token_bytes(MIN_KEY_BYTES) for issuer in issuers})


def signed_bytes(issuer: str, subject: str, payload: bytes, issued_ts_ns: int) -> bytes:
    """What the HMAC covers: a version tag, then issuer, timestamp, subject and payload, each but
    the last ended by a newline (none of the first three may hold one), so no two commands share it."""
    return b"".join(
        (
            SIGNED_PREFIX,
            issuer.encode("utf-8"),
            b"\n",
            str(issued_ts_ns).encode("ascii"),
            b"\n",
            subject.encode("utf-8"),
            b"\n",
            payload,
        )
    )


def sign(key: bytes, issuer: str, subject: str, payload: bytes, issued_ts_ns: int) -> dict[str, str]:
    """The three headers that sign `payload` on `subject` as `issuer` at `issued_ts_ns`."""
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"a signing key has at least {MIN_KEY_BYTES} bytes")
    if not issuer or len(issuer) > _SHOWN_CHARS or any(char.isspace() or not char.isprintable() for char in issuer):
        raise ValueError(f"an issuer is 1 to {_SHOWN_CHARS} printable characters without whitespace")
    if "\n" in subject:
        raise ValueError("a subject holds no line break")
    if isinstance(issued_ts_ns, bool) or not 0 <= issued_ts_ns <= MAX_TS_NS:
        raise ValueError(f"issued_ts_ns is an integer from 0 to {MAX_TS_NS}")
    return {
        ISSUER: issuer,
        ISSUED_TS: str(issued_ts_ns),
        SIGNATURE: SIGNATURE_PREFIX + _mac(key, issuer, subject, payload, issued_ts_ns),
    }


def verify(
    keys: Keys,
    subject: str,
    payload: bytes,
    headers: Mapping[str, str] | None,
    now_ns: int,
    window_ns: int,
) -> Signed:
    """Who signed this command, or Refused: unsigned, unknown issuer, malformed timestamp,
    signature mismatch, then the window (checked last, so that a sender without a key learns
    nothing about titan's clock). The window is inclusive: issued exactly `window_ns` before or
    after `now_ns` passes."""
    if window_ns < 0:
        raise ValueError("window_ns is not negative")
    headers = headers or {}
    signature = headers.get(SIGNATURE)
    if signature is None:
        raise Refused(UNSIGNED, f"no {SIGNATURE} header; this intake accepts signed commands only")
    issuer = headers.get(ISSUER)
    if issuer is None:
        raise Refused(UNKNOWN_ISSUER, f"no {ISSUER} header; the signer is one of {', '.join(ISSUERS)}")
    key = keys.get(issuer)
    if key is None:
        raise Refused(UNKNOWN_ISSUER, f"issuer {_shown(issuer)} has no key here")
    issued_text = headers.get(ISSUED_TS)
    if issued_text is None:
        raise Refused(BAD_SIGNATURE, f"no {ISSUED_TS} header (decimal nanoseconds since the epoch)")
    if not _TS.fullmatch(issued_text) or int(issued_text) > MAX_TS_NS:
        raise Refused(
            BAD_SIGNATURE,
            f"{ISSUED_TS} {_shown(issued_text)} is not decimal nanoseconds since the epoch "
            f"(digits only, no leading zeros, at most {MAX_TS_NS})",
        )
    issued_ts_ns = int(issued_text)
    if not _SIGNATURE_VALUE.fullmatch(signature):
        raise Refused(BAD_SIGNATURE, f"{SIGNATURE} is not `v1=` and 64 lowercase hex digits")
    if "\n" in subject or not _encodes(subject):  # NATS allows neither; the signed bytes stay unambiguous
        raise Refused(BAD_SIGNATURE, "the subject holds a line break or is not valid UTF-8")
    expected = _mac(key, issuer, subject, payload, issued_ts_ns)
    if not hmac.compare_digest(signature[len(SIGNATURE_PREFIX) :], expected):
        raise Refused(
            BAD_SIGNATURE, f"the signature does not match (issuer, timestamp, subject and payload as received, key of {issuer})"
        )
    age_ns = now_ns - issued_ts_ns
    if age_ns > window_ns:
        raise Refused(
            SIGNATURE_EXPIRED, f"issued {age_ns} ns ago, more than the window of {window_ns} ns"
        )
    if -age_ns > window_ns:
        raise Refused(
            SIGNATURE_EXPIRED, f"issued {-age_ns} ns in the future, more than the window of {window_ns} ns"
        )
    return Signed(issuer=issuer, issued_ts_ns=issued_ts_ns)


def _mac(key: bytes, issuer: str, subject: str, payload: bytes, issued_ts_ns: int) -> str:
    return hmac.new(key, signed_bytes(issuer, subject, payload, issued_ts_ns), hashlib.sha256).hexdigest()


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


def _looks_like_key(field: str) -> bool:
    """A long hex field where an issuer belongs: the columns were swapped; never echo it."""
    return len(field) >= 16 and _HEX.fullmatch(field) is not None


def _shown(text: str) -> str:
    """An excerpt of input fit for an error: at most 64 characters, quoted, control characters escaped."""
    excerpt = text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "…"
    return repr(excerpt)
