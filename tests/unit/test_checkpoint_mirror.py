"""The checkpoint file against its JetStream mirror (replay/checkpoint_mirror.py): which mirrored
lines the file lacks or holds differently; lines that do not verify are left to the ledger check."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from replay.checkpoint_mirror import FILE_DIFFERS, FILE_LACKS, compare_file_with_mirror
from replay.checkpoints import Checkpoint, sign

KEY = Ed25519PrivateKey.generate()
LEDGER = "a" * 64


def line(position: int, written_ns: int = 1, key: Ed25519PrivateKey = KEY) -> bytes:
    return sign(Checkpoint(LEDGER, position, f"{position:064x}", position, written_ns), key)


def test_a_file_holding_every_mirrored_line_and_more_is_no_finding() -> None:
    mirror = [line(2), line(5)]
    assert compare_file_with_mirror([line(1), line(2), line(3), line(5)], mirror, KEY.public_key()) == []


def test_a_lost_line_is_lacking_and_a_replaced_one_differs() -> None:
    file = [line(2), line(5, written_ns=2)]  # position 5 signed again later; position 9 gone
    findings = compare_file_with_mirror(file, [line(2), line(5), line(9)], KEY.public_key())
    assert [(f.code, f.position, f.line) for f in findings] == [(FILE_DIFFERS, 5, 2), (FILE_LACKS, 9, 3)]
    assert findings[0].message.startswith("the file's checkpoint at position 5 differs from the mirror's")
    assert findings[1].message.startswith("the file lacks the mirror's checkpoint at position 9")


def test_a_mirrored_line_that_does_not_verify_is_not_blamed_on_the_file() -> None:
    forged = line(9, key=Ed25519PrivateKey.generate())
    assert compare_file_with_mirror([line(2)], [line(2), forged, b"not json"], KEY.public_key()) == []
