"""Snapshots made the honest way (the fold of a stream, every N versions) and tampered ones, for
the snapshot tests of every tier."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from commands.accounts import fold
from commands.envelope import account_stream
from commands.ports import Ledger
from commands.snapshots import SetBy, Snapshot, SnapshotStore, make_snapshot, note_context
from schemas.canonical import canonical_bytes, sha256_hex


def snapshot_bytes(core: Any, state: Any) -> bytes:
    """A state as the snapshot codec writes it (what equal states share)."""
    return canonical_bytes(core.snapshot.state_to_snapshot(state))


def folded(core: Any, ledger: Ledger, account_id: str, upto_version: int | None = None) -> Any:
    """The account's state folded from zero (through a version, or the whole stream)."""
    records = ledger.read_stream(account_stream(account_id))
    if upto_version is not None:
        records = [record for record in records if record.version <= upto_version]
    return fold(core, core.decider.initial_state(account_id), records)


def honest_snapshots(core: Any, ledger: Ledger, account_id: str, every: int) -> list[Snapshot]:
    """A snapshot of the account at every `every`-th version of its stream, from the fold."""
    state, set_by = core.decider.initial_state(account_id), SetBy()
    made: list[Snapshot] = []
    for record in ledger.read_stream(account_stream(account_id)):
        state = fold(core, state, [record])
        note_context(set_by, [record])
        if record.version % every == 0:
            made.append(snapshot_of(core, state, record, set_by))
    return made


def snapshot_of(core: Any, state: Any, record: Any, set_by: SetBy) -> Snapshot:
    """A snapshot of a state as of a ledger record of its stream."""
    return make_snapshot(
        core.snapshot.SNAPSHOT_FORMAT,
        core.snapshot.state_to_snapshot(state),
        stream_id=record.stream_id,
        version=record.version,
        position=record.position,
        chain_hash=record.envelope["hash"],
        set_by=set_by,
        created_ns=time.time_ns(),
    )


def save_all(store: SnapshotStore, snapshots: list[Snapshot]) -> None:
    for snapshot in snapshots:
        assert store.save(snapshot)


def with_state(snapshot: Snapshot, state: bytes) -> Snapshot:
    """The snapshot holding other state bytes, with their SHA-256 (a forger's copy)."""
    return dataclasses.replace(snapshot, state=state, state_sha256=sha256_hex(state))
