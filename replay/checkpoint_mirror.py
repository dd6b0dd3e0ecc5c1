"""The checkpoint file against its mirror on JetStream (docs/ledger.md, "The checkpoint mirror").

The mirror's lines are checked against the ledger by `replay.checkpoints.verify_checkpoints`, the
same check as the file's. This adds what only having both shows: a line the mirror holds that the
file lacks, or holds differently, means the file was rolled back or rewritten. A file line the
mirror lacks is no finding: not every checkpoint is mirrored. Pure: the lines are read elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .checkpoints import BadLine, Finding, parse_line

# Stable codes of `Finding.code`, beside those of replay/checkpoints.py.
FILE_DIFFERS: Final = "FILE_DIFFERS"
FILE_LACKS: Final = "FILE_LACKS"


def compare_file_with_mirror(
    file_lines: Iterable[bytes], mirror_lines: Sequence[bytes], key: Ed25519PublicKey
) -> list[Finding]:
    """Every verified mirror line that the file does not hold byte for byte, as a finding about
    the file: FILE_DIFFERS when the file has another line about the same ledger and position,
    FILE_LACKS when it has none. Mirror lines that do not verify are left to verify_checkpoints."""
    held = set(file_lines)
    absent = [(number, raw) for number, raw in enumerate(mirror_lines, start=1) if raw not in held]
    if not absent:
        return []
    positions = _positions(held)
    findings: list[Finding] = []
    for number, raw in absent:
        try:
            checkpoint = parse_line(raw, key)
        except BadLine:
            continue
        where = f"position {checkpoint.position}"
        if (checkpoint.ledger_id, checkpoint.position) in positions:
            findings.append(
                Finding(
                    FILE_DIFFERS,
                    f"the file's checkpoint at {where} differs from the mirror's (the mirror's "
                    f"signs hash {checkpoint.hash}, {checkpoint.record_count} records): the file was "
                    "rolled back or rewritten",
                    line=number,
                    position=checkpoint.position,
                )
            )
        else:
            findings.append(
                Finding(
                    FILE_LACKS,
                    f"the file lacks the mirror's checkpoint at {where} (hash {checkpoint.hash}): "
                    "the file was rolled back",
                    line=number,
                    position=checkpoint.position,
                )
            )
    return findings


def _positions(lines: Iterable[bytes]) -> set[tuple[str, int]]:
    """The (ledger id, position) each file line claims (signatures are the file check's business)."""
    found: set[tuple[str, int]] = set()
    for raw in lines:
        try:
            payload = orjson.loads(raw).get("payload")
        except (orjson.JSONDecodeError, AttributeError):
            continue
        if isinstance(payload, dict):
            ledger_id, position = payload.get("ledger_id"), payload.get("position")
            if isinstance(ledger_id, str) and isinstance(position, int):
                found.add((ledger_id, position))
    return found
