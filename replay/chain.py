"""Verifying the ledger's hash chain (SPEC §2, §6).

Sealing lives beside the ledger port (`commands.chain`), where the adapters use it inside their
append transaction; this module verifies: `verify_chain` walks any iterable of records in
position order, keeping only the previous hash and one integer per stream.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, Final

from commands.chain import CorruptRecord
from commands.ports import Ledger, Record
from schemas.canonical import GENESIS_HASH, canonical_bytes, record_hash, sha256_hex

# Stable codes of `ChainReport.code`; `titan ledger verify --json` prints them as they are.
NOT_JSON: Final = "NOT_JSON"
NOT_CANONICAL: Final = "NOT_CANONICAL"
ROW_ENVELOPE_MISMATCH: Final = "ROW_ENVELOPE_MISMATCH"
POSITION_ORDER: Final = "POSITION_ORDER"
PREV_HASH_MISMATCH: Final = "PREV_HASH_MISMATCH"
HASH_MISMATCH: Final = "HASH_MISMATCH"
VERSION_GAP: Final = "VERSION_GAP"
ANCHOR_MISMATCH: Final = "ANCHOR_MISMATCH"

@dataclass(frozen=True, slots=True)
class ChainReport:
    """The outcome of one verification: ok, or the first bad position and why."""

    ok: bool
    records_checked: int
    streams_checked: int
    head_position: int
    head_hash: str
    anchor: tuple[int, str, int]
    code: str | None = None
    position: int | None = None
    stream_id: str | None = None
    version: int | None = None
    expected: str | None = None
    found: str | None = None
    message: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-ready dict (the `--json` output)."""
        return {
            "ok": self.ok,
            "records_checked": self.records_checked,
            "streams_checked": self.streams_checked,
            "head_position": self.head_position,
            "head_hash": self.head_hash,
            "anchor": {
                "position": self.anchor[0],
                "hash": self.anchor[1],
                "record_count": self.anchor[2],
            },
            "code": self.code,
            "position": self.position,
            "stream_id": self.stream_id,
            "version": self.version,
            "expected": self.expected,
            "found": self.found,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class _Finding:
    code: str
    position: int
    stream_id: str | None
    version: int | None
    expected: str | None
    found: str | None
    message: str


class ChainVerifier:
    """Checks records one at a time in position order; stops at the first bad one.

    Memory stays flat in the number of records: the previous hash and position, and the last
    version of each stream.
    """

    def __init__(self, anchor: tuple[int, str, int]) -> None:
        self.anchor = anchor
        self.records_checked = 0
        self.last_position = 0
        self.last_hash = GENESIS_HASH
        self.last_versions: dict[str, int] = {}
        self.finding: _Finding | None = None

    def check(self, record: Record) -> bool:
        """Check the next record; return False (and keep the finding) if it is bad."""
        if self.finding is not None:
            return False
        self.records_checked += 1
        finding = self._check(record)
        if finding is not None:
            self.finding = finding
            return False
        self.last_position = record.position
        self.last_hash = record.envelope["hash"]
        self.last_versions[record.stream_id] = record.version
        return True

    def unreadable(self, error: CorruptRecord) -> None:
        """Record that the next record could not be read at all."""
        if self.finding is not None:
            return
        self.records_checked += 1
        self.finding = _Finding(
            NOT_JSON,
            error.position,
            error.stream_id,
            error.version,
            "a JSON object (the canonical envelope)",
            error.reason,
            f"state at position {error.position} is not a JSON object: {error.reason}",
        )

    def finish(self) -> ChainReport:
        """Compare the verified head with the anchor and return the report."""
        finding = self.finding if self.finding is not None else self._check_anchor()
        report = ChainReport(
            ok=finding is None,
            records_checked=self.records_checked,
            streams_checked=len(self.last_versions),
            head_position=self.last_position,
            head_hash=self.last_hash,
            anchor=self.anchor,
        )
        if finding is None:
            return report
        return replace(
            report,
            code=finding.code,
            position=finding.position,
            stream_id=finding.stream_id,
            version=finding.version,
            expected=finding.expected,
            found=finding.found,
            message=finding.message,
        )

    def _check(self, record: Record) -> _Finding | None:
        position = record.position
        stream_id = record.stream_id
        version = record.version
        envelope = record.envelope

        def finding(code: str, expected: object, found: object, message: str) -> _Finding:
            return _Finding(code, position, stream_id, version, str(expected), str(found), message)

        if position <= self.last_position:
            return finding(
                POSITION_ORDER,
                f"> {self.last_position}",
                position,
                f"position {position} does not follow position {self.last_position}",
            )
        canonical = canonical_bytes(envelope)
        if record.state != canonical:
            return finding(
                NOT_CANONICAL,
                canonical.decode("utf-8", "replace"),
                record.state.decode("utf-8", "replace"),
                f"state at position {position} is not the canonical JSON of its envelope",
            )
        for field, row_value in (
            ("stream_id", stream_id),
            ("version", version),
            ("type", record.type),
        ):
            if envelope.get(field) != row_value:
                return finding(
                    ROW_ENVELOPE_MISMATCH,
                    row_value,
                    envelope.get(field),
                    f"envelope {field} at position {position} differs from the row's "
                    f"{_ROW_COLUMN[field]}",
                )
        if envelope.get("prev_hash") != self.last_hash:
            return finding(
                PREV_HASH_MISMATCH,
                self.last_hash,
                envelope.get("prev_hash"),
                f"prev_hash at position {position} is not the hash of the record before it "
                f"(position {self.last_position})",
            )
        recomputed = stored_hash(record.state, envelope)
        if envelope.get("hash") != recomputed:
            return finding(
                HASH_MISMATCH,
                recomputed,
                envelope.get("hash"),
                f"hash at position {position} does not match its contents",
            )
        expected_version = self.last_versions.get(stream_id, 0) + 1
        if version != expected_version:
            return finding(
                VERSION_GAP,
                expected_version,
                version,
                f"stream {stream_id!r} jumps to version {version} at position {position}; "
                f"expected version {expected_version}",
            )
        anchor_position = self.anchor[0]
        if position > anchor_position:
            return finding(
                ANCHOR_MISMATCH,
                f"no record after position {anchor_position}",
                position,
                f"record at position {position} lies beyond the anchored head "
                f"(position {anchor_position})",
            )
        return None

    def _check_anchor(self) -> _Finding | None:
        anchor_position, anchor_hash, anchor_count = self.anchor
        found = (self.last_position, self.last_hash, self.records_checked)
        if found == (anchor_position, anchor_hash, anchor_count):
            return None
        if self.last_position < anchor_position:
            message = (
                f"the anchored head record at position {anchor_position} is missing; "
                f"the ledger ends at position {self.last_position}"
            )
        else:
            message = f"the verified head does not match the anchor at position {anchor_position}"
        return _Finding(
            ANCHOR_MISMATCH,
            anchor_position,
            None,
            None,
            f"position={anchor_position} hash={anchor_hash} count={anchor_count}",
            f"position={found[0]} hash={found[1]} count={found[2]}",
            message,
        )


def stored_body(state: bytes, claimed_hash: object) -> bytes | None:
    """What `record_hash` hashes, cut out of a canonical state's stored bytes: the state without
    its top-level `hash` member (and the comma beside it), or None when that member cannot be
    told apart here (then hash the decoded envelope instead).

    `state` must be the canonical JSON of an envelope whose `hash` is `claimed_hash`. In JSON a
    string never holds an unescaped quote, so each occurrence of the bytes `"hash":"<hash>"` is a
    `hash` member of some object with that very value; when there is exactly one, it is the
    top-level member, and the canonical encoding of the envelope without it is the bytes around it.
    """
    if not isinstance(claimed_hash, str):
        return None
    member = b'"hash":' + canonical_bytes(claimed_hash)
    at = state.find(member)
    if at <= 0 or state.rfind(member) != at:
        return None
    end = at + len(member)
    before = state[at - 1 : at]
    if before == b",":
        return state[: at - 1] + state[end:]
    if before == b"{":
        return state[:at] + state[end + 1 :] if state[end : end + 1] == b"," else state[:at] + state[end:]
    return None


def stored_hash(state: bytes, envelope: dict[str, Any]) -> str:
    """`record_hash(envelope)` for a state that is the canonical JSON of `envelope`, hashed over the
    stored bytes (no second encoding) whenever `stored_body` can cut the hash out of them."""
    body = stored_body(state, envelope.get("hash"))
    return record_hash(envelope) if body is None else sha256_hex(body)


_ROW_COLUMN: Final = {
    "stream_id": "originator_id",
    "version": "originator_version",
    "type": "topic",
}


def verify_chain(records: Iterable[Record], anchor: tuple[int, str, int]) -> ChainReport:
    """Verify records (in position order) against the anchored head; name the first bad one."""
    verifier = ChainVerifier(anchor)
    for record in records:
        if not verifier.check(record):
            break
    return verifier.finish()


def verify_ledger(ledger: Ledger, batch: int = 1000) -> ChainReport:
    """Verify a whole ledger, streaming it in batches, while writers may keep appending."""
    verifier = ChainVerifier(ledger.head())
    after = 0
    while verifier.finding is None:
        after = _verify_from(ledger, verifier, after, batch)
        if verifier.finding is not None:
            break
        # Records appended after the anchor was read but before the reading finished move the
        # anchor; re-read it and carry on until the head stands still. A record beyond an anchor
        # that does not move is a real finding (raised by `check`), not a race.
        head = ledger.head()
        if head == verifier.anchor or head[0] <= after:
            verifier.anchor = head
            break
        verifier.anchor = head
    return verifier.finish()


def _verify_from(ledger: Ledger, verifier: ChainVerifier, after: int, batch: int) -> int:
    """Feed every record after `after` to the verifier; return the last good position."""
    try:
        for record in ledger.iter_all(after, batch):
            if record.position > verifier.anchor[0]:
                verifier.anchor = ledger.head()
            if not verifier.check(record):
                return verifier.last_position
            after = record.position
    except CorruptRecord:
        # A reader that maps a whole batch before yielding it can stop before records that come
        # earlier than the corrupt one: read them one at a time to reach the first bad position.
        while verifier.finding is None:
            try:
                records = ledger.read_all(after, 1)
            except CorruptRecord as error:
                verifier.unreadable(error)
                break
            if not records:
                break
            record = records[0]
            if record.position > verifier.anchor[0]:
                verifier.anchor = ledger.head()
            if not verifier.check(record):
                break
            after = record.position
    return verifier.last_position
