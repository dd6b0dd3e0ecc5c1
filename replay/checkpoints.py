"""Signed checkpoints: an anchor of the ledger's head kept outside the database (docs/ledger.md).

A checkpoint says "the ledger whose first record has hash I held, at position P, the record
with hash H and N records up to it", signed with an Ed25519 key the database never holds. Here
are the payload, signing, reading one line of a log, checking a whole log against a ledger, and
deciding the next checkpoint only after the chain from the previous one has been checked. Pure:
the log and the keys are read and written by adapters/checkpoint_file.py, wired in infra/.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from commands.chain import CorruptRecord
from commands.ports import Ledger, LedgerError, Record
from schemas.canonical import canonical_bytes, record_hash

from .chain import verify_ledger

CHECKPOINT_FORMAT: Final = "titan-checkpoint/1"
PAYLOAD_FIELDS: Final = ("format", "ledger_id", "position", "hash", "record_count", "written_ns")
LINE_FIELDS: Final = ("key_id", "payload", "signature")

# Stable codes of `Finding.code` (`titan ledger verify --checkpoints --json` prints them).
BAD_LINE: Final = "BAD_LINE"
BAD_SIGNATURE: Final = "BAD_SIGNATURE"
OTHER_LEDGER: Final = "OTHER_LEDGER"
TRUNCATED: Final = "TRUNCATED"
MISSING: Final = "MISSING"
FORGED: Final = "FORGED"
COUNT_MISMATCH: Final = "COUNT_MISMATCH"
ANCHOR_BEHIND: Final = "ANCHOR_BEHIND"
UNREADABLE: Final = "UNREADABLE"


class CheckpointRefused(LedgerError):
    """No checkpoint was signed: the ledger does not extend the last one, or it cannot be read.

    `check_failed` is true when the ledger failed a check (exit 1), false for bad input (exit 2).
    """

    def __init__(self, message: str, *, check_failed: bool) -> None:
        super().__init__(message)
        self.check_failed = check_failed


class BadLine(ValueError):
    """One line of a checkpoint log that does not parse or whose signature does not verify."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One signed statement about the ledger's head."""

    ledger_id: str
    """The hash of the ledger's first record: which ledger this is about."""
    position: int
    hash: str
    record_count: int
    """How many records the ledger holds up to and including `position`."""
    written_ns: int
    """When the checkpoint was written, UTC nanoseconds (the signer's clock)."""

    def payload(self) -> dict[str, Any]:
        """The signed document."""
        return {
            "format": CHECKPOINT_FORMAT,
            "ledger_id": self.ledger_id,
            "position": self.position,
            "hash": self.hash,
            "record_count": self.record_count,
            "written_ns": self.written_ns,
        }


def key_id(key: Ed25519PublicKey) -> str:
    """A short name of a public key: the first 16 hex characters of SHA-256 of its raw bytes."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign(checkpoint: Checkpoint, key: Ed25519PrivateKey) -> bytes:
    """The log line of a checkpoint (canonical JSON, no newline): payload, key id, signature."""
    payload = checkpoint.payload()
    signature = key.sign(canonical_bytes(payload))
    line = {"key_id": key_id(key.public_key()), "payload": payload, "signature": signature.hex()}
    return canonical_bytes(line)


def parse_line(raw: bytes, key: Ed25519PublicKey) -> Checkpoint:
    """Read one log line and verify its signature over the canonical payload; raise BadLine."""
    try:
        line = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise BadLine(BAD_LINE, f"not JSON ({error})") from error
    if not isinstance(line, dict) or sorted(line) != sorted(LINE_FIELDS):
        raise BadLine(BAD_LINE, f"not a checkpoint: expected an object with {list(LINE_FIELDS)}")
    payload, signature = line["payload"], line["signature"]
    if not isinstance(payload, dict) or sorted(payload) != sorted(PAYLOAD_FIELDS):
        raise BadLine(BAD_LINE, f"not a checkpoint: its payload must have {list(PAYLOAD_FIELDS)}")
    if payload["format"] != CHECKPOINT_FORMAT:
        raise BadLine(
            BAD_LINE,
            f"checkpoint format {payload['format']!r}; this titan reads {CHECKPOINT_FORMAT!r}",
        )
    try:
        key.verify(bytes.fromhex(signature), canonical_bytes(payload))
    except (InvalidSignature, ValueError, TypeError) as error:
        signer = line["key_id"]
        hint = (
            ""
            if signer == key_id(key)
            else f" (signed by key {signer}, verified with key {key_id(key)})"
        )
        raise BadLine(BAD_SIGNATURE, f"bad signature{hint}") from error
    checkpoint = Checkpoint(
        ledger_id=payload["ledger_id"],
        position=payload["position"],
        hash=payload["hash"],
        record_count=payload["record_count"],
        written_ns=payload["written_ns"],
    )
    for name in ("position", "record_count", "written_ns"):
        value = getattr(checkpoint, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise BadLine(BAD_LINE, f"{name} must be a non-negative integer, not {value!r}")
    if not isinstance(checkpoint.hash, str) or not isinstance(checkpoint.ledger_id, str):
        raise BadLine(BAD_LINE, "hash and ledger_id must be strings")
    return checkpoint


def line_message(number: int, error: BadLine) -> str:
    """How a bad line is named: `bad signature on line N`, `bad line N: …`."""
    if error.code == BAD_SIGNATURE:
        return f"{error} on line {number}"
    return f"bad line {number}: {error}"


# --- verifying a log against a ledger ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing the checkpoints prove is wrong with the ledger (or with the log)."""

    code: str
    message: str
    line: int | None = None
    position: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return the finding as a JSON-ready dict."""
        return {
            "code": self.code,
            "message": self.message,
            "line": self.line,
            "position": self.position,
        }


@dataclass(slots=True)
class CheckpointReport:
    """The outcome of checking a checkpoint log against a ledger."""

    lines: int = 0
    checkpoints: int = 0
    ledger_end: int = 0
    """The position of the ledger's last record (0 when it holds none)."""
    anchor: tuple[int, str, int] = (0, "", 0)
    last: Checkpoint | None = None
    """The checkpoint at the highest position."""
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every line verified and the ledger agrees with every checkpoint."""
        return not self.findings

    def as_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-ready dict."""
        last = self.last
        return {
            "ok": self.ok,
            "lines": self.lines,
            "checkpoints_checked": self.checkpoints,
            "ledger_end": self.ledger_end,
            "anchor": {
                "position": self.anchor[0],
                "hash": self.anchor[1],
                "record_count": self.anchor[2],
            },
            "last_checkpoint": None if last is None else last.payload(),
            "findings": [finding.as_dict() for finding in self.findings],
        }


def verify_checkpoints(
    lines: Iterable[bytes], ledger: Ledger, key: Ed25519PublicKey
) -> CheckpointReport:
    """Check every line's signature, then the ledger against every checkpoint, in one pass.

    For each checkpoint the record at its position must exist, have its hash, and be the
    ledger's `record_count`-th record; the ledger (and its anchor) must not end before the last
    checkpoint; every checkpoint must be about this ledger (its first record's hash).
    """
    report = CheckpointReport()
    signed: list[tuple[int, Checkpoint]] = []
    for number, raw in enumerate(lines, start=1):
        report.lines = number
        if not raw.strip():
            report.findings.append(Finding(BAD_LINE, f"bad line {number}: empty", line=number))
            continue
        try:
            signed.append((number, parse_line(raw, key)))
        except BadLine as error:
            report.findings.append(Finding(error.code, line_message(number, error), line=number))
    report.checkpoints = len(signed)
    report.anchor = ledger.head()
    pending = sorted(signed, key=lambda item: (item[1].position, item[0]))
    if pending:
        report.last = pending[-1][1]
    _walk(ledger, pending, report)
    return report


def _walk(ledger: Ledger, pending: list[tuple[int, Checkpoint]], report: CheckpointReport) -> None:
    """Stream the ledger once, meeting the checkpoints in position order."""
    count = 0
    ledger_id: str | None = None
    index = 0
    last_position = 0
    try:
        for record in ledger.iter_all(0):
            count += 1
            if ledger_id is None:
                ledger_id = record.envelope.get("hash")
                pending = _same_ledger(pending, str(ledger_id), report)
            while index < len(pending) and pending[index][1].position < record.position:
                _missing(pending[index], last_position, record.position, report)
                index += 1
            while index < len(pending) and pending[index][1].position == record.position:
                _compare(pending[index], record, count, report)
                index += 1
            last_position = record.position
    except LedgerError as error:
        report.findings.append(
            Finding(
                UNREADABLE,
                f"unreadable: the ledger cannot be read after position {last_position}: {error}",
            )
        )
        return
    report.ledger_end = last_position
    beyond = pending[index:]
    if beyond:
        line, furthest = beyond[-1]
        more = f"; {len(beyond)} checkpoints lie beyond its end" if len(beyond) > 1 else ""
        report.findings.append(
            Finding(
                TRUNCATED,
                f"truncated: checkpoint at position {furthest.position} (hash {furthest.hash}) "
                f"but the ledger ends at {last_position}{more}",
                line=line,
                position=furthest.position,
            )
        )
    last = report.last
    if last is not None and report.anchor[0] < last.position and not beyond:
        report.findings.append(
            Finding(
                ANCHOR_BEHIND,
                f"anchor behind: the ledger's anchor says position {report.anchor[0]}, before the "
                f"checkpoint at position {last.position} (hash {last.hash})",
                position=last.position,
            )
        )


def _same_ledger(
    pending: list[tuple[int, Checkpoint]], ledger_id: str, report: CheckpointReport
) -> list[tuple[int, Checkpoint]]:
    """Keep the checkpoints about this ledger; name the others."""
    kept = []
    for line, checkpoint in pending:
        if checkpoint.ledger_id == ledger_id:
            kept.append((line, checkpoint))
            continue
        report.findings.append(
            Finding(
                OTHER_LEDGER,
                f"another ledger: line {line} was signed for the ledger whose first record has "
                f"hash {checkpoint.ledger_id}; this ledger's first record has hash {ledger_id} "
                "(a different ledger, or its first record was replaced)",
                line=line,
                position=checkpoint.position,
            )
        )
    report.last = kept[-1][1] if kept else None
    return kept


def _missing(
    item: tuple[int, Checkpoint], before: int, after: int, report: CheckpointReport
) -> None:
    line, checkpoint = item
    report.findings.append(
        Finding(
            MISSING,
            f"missing: checkpoint at position {checkpoint.position} (hash {checkpoint.hash}) but "
            f"the ledger has no record there (it goes from position {before} to {after})",
            line=line,
            position=checkpoint.position,
        )
    )


def _compare(
    item: tuple[int, Checkpoint], record: Record, count: int, report: CheckpointReport
) -> None:
    line, checkpoint = item
    found = record.envelope.get("hash")
    if found != checkpoint.hash:
        report.findings.append(
            Finding(
                FORGED,
                f"forged: position {record.position} has hash {found}, the checkpoint signed "
                f"{checkpoint.hash}",
                line=line,
                position=record.position,
            )
        )
    elif count != checkpoint.record_count:
        report.findings.append(
            Finding(
                COUNT_MISMATCH,
                f"count: position {record.position} is the ledger's record number {count}, the "
                f"checkpoint signed {checkpoint.record_count} records up to it",
                line=line,
                position=record.position,
            )
        )


# --- the next checkpoint ----------------------------------------------------------------------


def next_checkpoint(ledger: Ledger, last: Checkpoint | None, written_ns: int) -> Checkpoint:
    """The checkpoint of the ledger's current head, signed only if the ledger extends `last`.

    Without a previous checkpoint the whole chain is verified first; after one, the record it
    signed must still be there and every record from it to the anchored head must chain onto
    it. Raises CheckpointRefused naming what does not hold.
    """
    anchor = ledger.head()
    if anchor[2] == 0:
        raise CheckpointRefused(
            "the ledger holds no records yet: nothing to checkpoint", check_failed=False
        )
    first = ledger.read_all(0, 1)
    if not first:
        raise CheckpointRefused(
            f"the ledger's anchor says {anchor[2]} records at position {anchor[0]} but it holds "
            "none; run `titan ledger verify`",
            check_failed=True,
        )
    ledger_id = str(first[0].envelope.get("hash"))
    if last is None:
        report = verify_ledger(ledger)
        if not report.ok:
            raise CheckpointRefused(
                f"the ledger fails verification at position {report.position} ({report.code}: "
                f"{report.message}); not signing it: run `titan ledger verify`",
                check_failed=True,
            )
        return Checkpoint(
            ledger_id, report.head_position, report.head_hash, report.records_checked, written_ns
        )
    if last.ledger_id != ledger_id:
        raise CheckpointRefused(
            f"the checkpoint log is about another ledger (first record {last.ledger_id}; this "
            f"one's is {ledger_id}): name this ledger's log with TITAN_CHECKPOINT_FILE",
            check_failed=True,
        )
    try:
        position, head_hash, count = _extend(ledger, last, anchor)
    except CorruptRecord as error:
        raise CheckpointRefused(f"{error}; not signing it", check_failed=True) from error
    return Checkpoint(ledger_id, position, head_hash, count, written_ns)


def _extend(ledger: Ledger, last: Checkpoint, anchor: tuple[int, str, int]) -> tuple[int, str, int]:
    """Check the chain from the last checkpoint to the anchor; return the new head."""
    if anchor[0] < last.position:
        raise CheckpointRefused(
            f"truncated: checkpoint at position {last.position} (hash {last.hash}) but the ledger "
            f"ends at {anchor[0]}",
            check_failed=True,
        )
    found = ledger.read_all(last.position - 1, 1)
    if not found or found[0].position != last.position:
        raise CheckpointRefused(
            f"missing: checkpoint at position {last.position} (hash {last.hash}) but the ledger "
            "has no record there",
            check_failed=True,
        )
    if found[0].envelope.get("hash") != last.hash:
        raise CheckpointRefused(
            f"forged: position {last.position} has hash {found[0].envelope.get('hash')}, the "
            f"checkpoint signed {last.hash}",
            check_failed=True,
        )
    position, head_hash, count = last.position, last.hash, last.record_count
    for record in ledger.iter_all(last.position):
        if record.position > anchor[0]:
            break
        envelope = record.envelope
        if envelope.get("prev_hash") != head_hash or record_hash(envelope) != envelope.get("hash"):
            raise CheckpointRefused(
                f"the chain breaks at position {record.position} after the checkpoint at "
                f"position {last.position}; not signing it: run `titan ledger verify`",
                check_failed=True,
            )
        position, head_hash, count = record.position, str(envelope["hash"]), count + 1
    if (position, head_hash, count) != anchor:
        raise CheckpointRefused(
            f"the ledger's anchor (position {anchor[0]}, {anchor[2]} records) does not match its "
            f"records (position {position}, {count} records); run `titan ledger verify`",
            check_failed=True,
        )
    return position, head_hash, count
