"""The one canonical JSON encoding of titan (SPEC §2), used for hashing and storage.

UTF-8, keys sorted, no insignificant whitespace. Decimals travel as strings; binary floats are
never part of a canonical document.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

GENESIS_HASH = "0" * 64


def canonical_bytes(document: Any) -> bytes:
    """Encode a JSON-ready document (dict, list, str, int, bool, None) canonically."""
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)


def parse(raw: bytes | str) -> Any:
    """Decode JSON bytes into plain Python values."""
    return orjson.loads(raw)


def sha256_hex(raw: bytes) -> str:
    """Hex SHA-256 of raw bytes."""
    return hashlib.sha256(raw).hexdigest()


def document_hash(document: Any) -> str:
    """Hex SHA-256 of a document's canonical JSON (the policy hash, for one)."""
    return sha256_hex(canonical_bytes(document))


def record_hash(envelope: dict[str, Any]) -> str:
    """Hash of one ledger record: its canonical envelope, `prev_hash` included, `hash` excluded."""
    body = {key: value for key, value in envelope.items() if key != "hash"}
    return document_hash(body)
