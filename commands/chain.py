"""Sealing a record into the ledger's hash chain (SPEC §2): the rule the ledger adapters apply
inside their append transaction. `replay.chain` verifies with the same rule.
"""

from __future__ import annotations

from typing import Any, Final

from schemas.canonical import record_hash

from .ports import LedgerError

CHAIN_FIELDS: Final = ("prev_hash", "hash")


class CorruptRecord(LedgerError):
    """A stored record's state cannot be read as an envelope (not JSON, or not a JSON object).

    Readers raise it for the record at `position` only after returning every record before it,
    so that verification can name it as the first bad position.
    """

    def __init__(self, position: int, stream_id: str, version: int, reason: str) -> None:
        super().__init__(
            f"ledger record at position {position} ({stream_id!r} version {version}) "
            f"is unreadable: {reason}; run `titan ledger verify`"
        )
        self.position = position
        self.stream_id = stream_id
        self.version = version
        self.reason = reason


def seal(envelope: dict[str, Any], prev_hash: str) -> dict[str, Any]:
    """Return a copy of an unsealed envelope chained onto `prev_hash`, with its own `hash`."""
    for field in CHAIN_FIELDS:
        if field in envelope:
            raise ValueError(
                f"envelope {envelope.get('event_id')!r} already carries {field!r}; "
                "the ledger seals records itself, pass envelopes without prev_hash and hash"
            )
    sealed = dict(envelope)
    sealed["prev_hash"] = prev_hash
    sealed["hash"] = record_hash(sealed)
    return sealed


