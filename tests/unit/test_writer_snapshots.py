"""The group-commit writer with snapshots, on an embedded ledger file: it snapshots every N events
and when it stops, a new writer starts from the newest trusted snapshot and decides exactly what
the fold from zero decides (the ledger is byte for byte the one written without snapshots), a
spoiled snapshot row is skipped and reported, and a snapshot that cannot be stored never fails a
caller."""

from __future__ import annotations

import asyncio
import itertools
import logging
import sqlite3
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.sqlite.ledger import SQLiteLedger
from commands.envelope import account_stream
from commands.snapshots import CHAIN_HASH, FORMAT, NO_RECORD, STATE_HASH, Snapshot, Snapshots
from commands.writer import AccountWriter, PolicyIntegrityError
from infra.core import Core, load_core
from infra.submit import default_policy
from infra.writers import lease_store, ledger_snapshots
from replay.cores import CoreSlot
from replay.verify import verify_replay
from schemas import commands as wire
from schemas.policy import policy_hash
from tests.integration.writer_support import T0, activation, decision, orders
from tests.snapshot_support import folded, snapshot_bytes

ACCOUNT = "acct"
EVERY = 10


@pytest.fixture(scope="module")
def core() -> Core:
    return load_core()


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[SQLiteLedger]:
    ledger = SQLiteLedger(str(tmp_path / "ledger.db"))
    yield ledger
    ledger.close()


def flow(count: int, start: int = 0) -> list[wire.AnyCommand]:
    return ([activation(ACCOUNT)] if start == 0 else []) + orders(ACCOUNT, count, start)


def run(
    ledger: SQLiteLedger, core: Core, commands: list[wire.AnyCommand], *, every: int = EVERY, **options: Any
) -> tuple[AccountWriter, list[Any]]:
    """Start a writer (with the ledger's snapshots unless told otherwise), submit each command in
    turn (one per batch), stop it; return it and its answers."""
    snapshots = options.pop("snapshots", ledger_snapshots(ledger))

    async def go() -> tuple[AccountWriter, list[Any]]:
        writer = AccountWriter(
            ACCOUNT, lease_store(ledger), core, snapshots=snapshots, snapshot_every=every, **options
        )
        await writer.start()
        answers = [decision(await writer.submit(command)) for command in commands]
        await writer.stop()
        return writer, answers

    try:
        return asyncio.run(go())
    finally:
        if snapshots is not None:
            snapshots.close()


def rows(ledger: SQLiteLedger) -> list[tuple[str, int, str, bytes]]:
    return [(r.stream_id, r.version, r.type, r.state) for r in ledger.iter_all()]


def stored(ledger: SQLiteLedger) -> list[Snapshot]:
    snapshots = ledger_snapshots(ledger)
    assert snapshots is not None
    try:
        return [s for info in snapshots.store.listing() if (s := snapshots.store.get(info.stream_id, info.version))]
    finally:
        snapshots.close()


def test_a_writer_snapshots_every_n_events_and_when_it_stops(ledger: SQLiteLedger, core: Core) -> None:
    writer, _ = run(ledger, core, flow(34))
    versions = [s.version for s in stored(ledger)]
    last = len(ledger.read_stream(account_stream(ACCOUNT)))
    assert versions[-1] == last == writer.version  # the one taken at stop
    # The first when the mark is crossed; later ones at least EVERY apart (one at a time: a mark
    # crossed while the last is still being stored waits for the next commit).
    assert versions[0] == EVERY
    assert all(b - a >= EVERY for a, b in itertools.pairwise(versions[:-1]))
    assert writer.snapshots_written == len(versions) and writer.snapshot_failures == 0
    for snapshot in stored(ledger):  # each is the fold at its version, where the ledger says
        assert snapshot.state == snapshot_bytes(core, folded(core, ledger, ACCOUNT, snapshot.version))
        record = ledger.read_stream(account_stream(ACCOUNT))[snapshot.version - 1]
        assert (snapshot.position, snapshot.chain_hash) == (record.position, record.envelope["hash"])
    store = ledger_snapshots(ledger)
    assert store is not None
    report = verify_replay(ledger, [CoreSlot(core.kind, core)], snapshots=store.store)
    store.close()
    assert report.ok and report.snapshots is not None
    assert report.snapshots.proved == len(versions), report.snapshots.as_dict()


def test_a_restarted_writer_starts_from_its_snapshot_and_writes_the_same_ledger(
    ledger: SQLiteLedger, core: Core, tmp_path: Path
) -> None:
    first, tail = flow(40), flow(30, 40)
    before, _ = run(ledger, core, first)
    writer, answers = run(ledger, core, tail)
    assert writer.started_from is not None and writer.started_from.version == before.version
    reference = SQLiteLedger(str(tmp_path / "reference.db"))
    try:
        _, expected = run(reference, core, first + tail, snapshots=None)
        assert answers == expected[len(first) :]  # the same decisions as the fold from zero
        assert rows(ledger) == rows(reference)  # byte for byte
    finally:
        reference.close()


def test_the_restart_reads_only_the_records_after_the_snapshot(ledger: SQLiteLedger, core: Core) -> None:
    run(ledger, core, flow(25))
    versions = [s.version for s in stored(ledger)]
    writer, _ = run(ledger, core, [])
    assert writer.started_from is not None and writer.started_from.version == versions[-1]
    assert snapshot_bytes(core, writer.state) == snapshot_bytes(core, folded(core, ledger, ACCOUNT))


SPOILERS = {
    "state": ("UPDATE titan_snapshots SET state = CAST(replace(CAST(state AS TEXT), 'acct', 'acc0') AS BLOB)", STATE_HASH),
    "state_sha256": ("UPDATE titan_snapshots SET state_sha256 = '" + "0" * 64 + "'", STATE_HASH),
    "chain_hash": ("UPDATE titan_snapshots SET chain_hash = '" + "1" * 64 + "'", CHAIN_HASH),
    "core_format": ("UPDATE titan_snapshots SET core_format = 'titan.state.v0'", FORMAT),
    "position": ("UPDATE titan_snapshots SET position = position - 1", NO_RECORD),
}


@pytest.mark.parametrize("column", sorted(SPOILERS))
def test_a_spoiled_snapshot_row_is_skipped_and_reported_and_the_state_is_right(
    ledger: SQLiteLedger, core: Core, tmp_path: Path, column: str, caplog: pytest.LogCaptureFixture
) -> None:
    first, tail = flow(40), flow(12, 40)
    run(ledger, core, first)
    versions = [s.version for s in stored(ledger)]
    update, code = SPOILERS[column]
    with sqlite3.connect(ledger.path) as db:
        db.execute(update + " WHERE version = ?", (versions[-1],))
    with caplog.at_level(logging.WARNING, logger="titan.snapshots"):
        writer, answers = run(ledger, core, tail)
    assert [(s.version, s.code) for s in writer.snapshot_skips] == [(versions[-1], code)]
    assert f"version {versions[-1]} not used ({code})" in caplog.text
    assert writer.started_from is not None and writer.started_from.version == versions[-2]
    assert snapshot_bytes(core, writer.state) == snapshot_bytes(core, folded(core, ledger, ACCOUNT))
    reference = SQLiteLedger(str(tmp_path / "reference.db"))
    try:
        _, expected = run(reference, core, first + tail, snapshots=None)
        assert answers == expected[len(first) :]
    finally:
        reference.close()


class Unwritable(Snapshots):
    def __init__(self, inner: Snapshots) -> None:
        super().__init__(inner.store, inner.ledger)
        self.store.save = self._refuse  # type: ignore[method-assign]

    def _refuse(self, snapshot: Snapshot) -> bool:
        raise OSError("disk full (injected)")


def test_a_snapshot_that_cannot_be_stored_never_fails_a_caller(
    ledger: SQLiteLedger, core: Core, caplog: pytest.LogCaptureFixture
) -> None:
    snapshots = ledger_snapshots(ledger)
    assert snapshots is not None
    with caplog.at_level(logging.WARNING, logger="titan.writer"):
        writer, answers = run(ledger, core, flow(25), snapshots=Unwritable(snapshots))
    assert len(answers) == 26 and all(a[1] in ("accepted", "rejected") for a in answers)
    assert writer.snapshot_failures >= 2 and writer.snapshots_written == 0
    assert "could not take a snapshot" in caplog.text and "disk full" in caplog.text
    assert stored(ledger) == []


def test_snapshot_every_zero_takes_none_and_still_starts_from_one(ledger: SQLiteLedger, core: Core) -> None:
    run(ledger, core, flow(12))
    before = stored(ledger)
    writer, _ = run(ledger, core, orders(ACCOUNT, 15, 12), every=0)
    assert stored(ledger) == before and writer.snapshots_written == 0
    assert writer.started_from is not None and writer.started_from.version == before[-1].version


def test_the_policy_is_checked_from_the_snapshot_and_from_a_later_activation(ledger: SQLiteLedger, core: Core) -> None:
    run(ledger, core, flow(12))
    active = policy_hash(default_policy())
    with pytest.raises(PolicyIntegrityError, match="started for policy feed"):
        run(ledger, core, [], expected_policy_hash="feed")
    writer, _ = run(ledger, core, [], expected_policy_hash=active)
    assert writer.started_from is not None
    other = default_policy().model_copy(update={"policy_id": "tighter"})
    again = wire.ActivatePolicy(command_id="acct-policy-2", account_id=ACCOUNT, ts_ns=T0 + 10**12, actor="test", policy=other)
    run(ledger, core, [again], every=0)  # no snapshot of it: the next start reads it after one
    writer, _ = run(ledger, core, [], expected_policy_hash=policy_hash(other))
    assert writer.started_from is not None and writer.started_from.version < writer.version
    run(ledger, core, [])  # a snapshot at stop, naming the new activation in its set_by
    writer, _ = run(ledger, core, [], expected_policy_hash=policy_hash(other))
    assert writer.started_from is not None and writer.started_from.version == writer.version
    assert writer.state.policy_hash == policy_hash(other)


def test_a_writer_keeps_its_newest_snapshots_only(ledger: SQLiteLedger, core: Core) -> None:
    # A snapshot due while the last one is still being stored is skipped (one at a time), so how
    # many are written depends on the threads' timing; the first due one and the one at stop
    # always are, so keeping 1 is always a prune.
    writer, _ = run(ledger, core, flow(60), every=5, snapshot_keep=1)
    versions = [s.version for s in stored(ledger)]
    assert writer.snapshots_written >= 2
    assert versions == [writer.version]
    again, _ = run(ledger, core, orders(ACCOUNT, 30, 60), every=5, snapshot_keep=0)  # 0: keeps them all
    assert again.snapshots_written >= 2
    assert len(stored(ledger)) == 1 + again.snapshots_written


def test_rows_above_the_writers_version_never_evict_its_snapshots(ledger: SQLiteLedger, core: Core) -> None:
    # Junk with versions beyond the stream's head (anyone who can INSERT) used to count among the
    # newest kept, so each honest snapshot was deleted right after it was saved.
    run(ledger, core, flow(30), snapshot_keep=8)
    honest = stored(ledger)
    with sqlite3.connect(ledger.path) as db:
        for k in range(8):
            db.execute(
                "INSERT INTO titan_snapshots SELECT stream_id, ?, position, chain_hash, core_format, state, "
                "state_sha256, set_by, created_ns FROM titan_snapshots WHERE version = ?",
                (10**12 + k, honest[-1].version),
            )
    writer, _ = run(ledger, core, orders(ACCOUNT, 30, 30), snapshot_keep=8)
    assert writer.snapshots_written > 0
    versions = [s.version for s in stored(ledger)]
    assert versions[-1] == writer.version and all(v <= writer.version for v in versions)
    assert len(versions) == min(8, len(honest) + writer.snapshots_written)
    again, _ = run(ledger, core, [])
    assert again.started_from is not None and again.started_from.version == writer.version
    assert again.snapshot_skips == []


def recording_core(core: Core, events: list[str]) -> Core:
    """The core with its snapshot codec wrapped: each encoding is noted in `events`."""
    codec = core.module("snapshot")
    wrapped = types.ModuleType(codec.__name__)
    wrapped.SNAPSHOT_FORMAT = codec.SNAPSHOT_FORMAT  # type: ignore[attr-defined]
    wrapped.state_from_snapshot = codec.state_from_snapshot  # type: ignore[attr-defined]

    def state_to_snapshot(state: Any) -> Any:
        events.append("encode")
        return codec.state_to_snapshot(state)

    wrapped.state_to_snapshot = state_to_snapshot  # type: ignore[attr-defined]
    modules = {name: core.module(name) for name in core.module_names}
    return Core(core.kind, core.package, core.directory, {**modules, "snapshot": wrapped})


def test_the_answered_callers_resume_before_the_snapshot_is_encoded(ledger: SQLiteLedger, core: Core) -> None:
    events: list[str] = []
    recording = recording_core(core, events)
    snapshots = ledger_snapshots(ledger)
    assert snapshots is not None

    async def go() -> AccountWriter:
        writer = AccountWriter(ACCOUNT, lease_store(ledger), recording, snapshots=snapshots, snapshot_every=EVERY)
        await writer.start()
        for command in flow(30):
            await writer.submit(command)
            events.append(f"answered {writer.version}")
        await writer.stop()
        events.append("stopped")
        return writer

    try:
        writer = asyncio.run(go())
    finally:
        snapshots.close()
    encodes = [index for index, event in enumerate(events) if event == "encode"]
    versions = [snapshot.version for snapshot in stored(ledger)]  # all kept: one per encoding
    assert len(encodes) == len(versions) == writer.snapshots_written >= 2  # the first due one, the one at stop
    assert versions[-1] == writer.version and events[encodes[-1] + 1 :] == ["stopped"]  # the one at stop
    for index, version in zip(encodes[:-1], versions[:-1], strict=True):
        answered = [int(event.split()[1]) for event in events[:index] if event.startswith("answered")]
        # The caller whose batch reached that version had resumed before it was encoded.
        assert answered and answered[-1] >= version, (version, events[: index + 1])
