"""Readers that start from stored snapshots give what the fold from zero gives, byte for byte: the
state (`titan state`), the replay to any point (`titan replay --until`, by position and by time)
and every decision trace (`titan explain`), on every golden ledger and a demo ledger, each given
honest snapshots every few versions. And `titan replay verify` proves each stored snapshot: a
forged one that passes the trust rule, an untrusted one and one the ledger never reaches are each
a finding that fails the gate."""

from __future__ import annotations

import dataclasses
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from adapters.sqlite.ledger import SQLiteLedger
from adapters.sqlite.snapshots import SQLiteSnapshotStore
from commands.accounts import AccountCache
from commands.envelope import ACCOUNT_PREFIX, COMMAND_RECORDED, account_stream
from commands.ports import NewRecord
from commands.snapshots import Snapshot, Snapshots, SnapshotStoreError
from commands.views import state_view
from infra.bootstrap import bootstrap
from infra.core import Core, load_core, load_cores
from infra.demo import run as run_demo
from infra.golden import GOLDEN_DIR, load_manifest
from infra.settings import Settings
from infra.writers import ledger_snapshots, snapshots_to_prove
from replay import state_at
from replay.explain import explain, snapshot_start
from replay.points import POSITION, TIMESTAMP, Point
from replay.state_at import replay_state
from replay.verify import SNAPSHOT_DIFFERS, SNAPSHOT_UNREACHED, SNAPSHOT_UNTRUSTED, verify_replay
from tests.snapshot_support import honest_snapshots, save_all, with_state

pytestmark = pytest.mark.integration

MANIFEST = load_manifest()
LEDGERS = sorted(name for name, entry in MANIFEST["ledgers"].items() if not entry.get("snapshots"))


@pytest.fixture(scope="module")
def core() -> Core:
    return load_core()


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def accounts_of(ledger: SQLiteLedger) -> list[str]:
    return sorted({r.stream_id[len(ACCOUNT_PREFIX) :] for r in ledger.iter_all() if r.stream_id.startswith(ACCOUNT_PREFIX)})


def with_snapshots(core: Core, ledger: SQLiteLedger) -> Snapshots:
    """The ledger's store, given honest snapshots of every account every few versions."""
    snapshots = ledger_snapshots(ledger)
    assert snapshots is not None
    for account_id in accounts_of(ledger):
        versions = len(ledger.read_stream(account_stream(account_id)))
        save_all(snapshots.store, honest_snapshots(core, ledger, account_id, max(2, versions // 6)))
    return snapshots


@pytest.fixture
def copy(tmp_path: Path) -> Iterator[Any]:
    opened: list[SQLiteLedger] = []

    def _copy(source: Path) -> SQLiteLedger:
        target = tmp_path / source.name
        shutil.copyfile(source, target)
        ledger = SQLiteLedger(str(target))
        opened.append(ledger)
        return ledger

    yield _copy
    for ledger in opened:
        ledger.close()


@pytest.fixture(scope="module")
def demo_file(tmp_path_factory: pytest.TempPathFactory, core: Core) -> Path:
    path = tmp_path_factory.mktemp("demo") / "demo.db"
    ledger = SQLiteLedger(str(path))
    run_demo(bootstrap(Settings(ledger_url=f"sqlite:///{path}"), ledger=ledger, core=core), seed=11, orders=80, ledger_url="d", progress=False)
    ledger.close()
    return path


def sources(demo_file: Path) -> dict[str, Path]:
    return {**{name: GOLDEN_DIR / MANIFEST["ledgers"][name]["file"] for name in LEDGERS}, "demo": demo_file}


def cuts(ledger: SQLiteLedger) -> list[Point | None]:
    records = list(ledger.iter_all())
    head = records[-1].position
    points: list[Point | None] = [None]
    for index in range(1, 8):
        record = records[index * (len(records) - 1) // 8]
        points.append(Point(POSITION, record.position, str(record.position)))
        ts_ns = int(record.envelope["ts_ns"])
        points += [Point(TIMESTAMP, ts_ns, str(ts_ns)), Point(TIMESTAMP, ts_ns + 1, str(ts_ns + 1))]
    points.append(Point(POSITION, head, str(head)))
    return points


def idents(ledger: SQLiteLedger, every: int) -> list[str]:
    found = []
    for record in ledger.iter_all():
        if record.type == COMMAND_RECORDED:
            command = record.envelope["data"]["command"]
            found.append(("ord-" if command["type"] == "place_order.v1" else "") + command["command_id"])
    return found[::every]


@pytest.mark.parametrize("name", [*LEDGERS, "demo"])
def test_readers_from_snapshots_say_what_the_fold_from_zero_says(name: str, copy: Any, core: Core, demo_file: Path) -> None:
    ledger = copy(sources(demo_file)[name])
    snapshots = with_snapshots(core, ledger)
    try:
        assert snapshots.store.count() > 0
        # titan state
        for account_id in accounts_of(ledger):
            stream_id = account_stream(account_id)
            plain, _ = AccountCache(core, ledger).current(account_id, stream_id)
            seeded, _ = AccountCache(core, ledger, snapshots).current(account_id, stream_id)
            assert dumps(state_view(core, seeded)) == dumps(state_view(core, plain)), account_id
        # titan replay --until
        used = 0
        for point in cuts(ledger):
            plain_at = replay_state(ledger, core, point)
            seeded_at = replay_state(ledger, core, point, snapshots=snapshots)
            assert dumps(seeded_at.as_dict(core)) == dumps(plain_at.as_dict(core)), point
            used += plain_at.records_folded - seeded_at.records_folded
        assert used > 0  # the snapshots were used, not passed over
        # titan explain
        started = 0
        for ident in idents(ledger, 7):
            start = snapshot_start(ledger, core, snapshots, ident)
            started += start is not None
            assert dumps(explain(ledger, core, ident, start=start)) == dumps(explain(ledger, core, ident)), ident
        assert started > 0
        assert snapshots.skipped == []
    finally:
        snapshots.close()


def test_a_time_cut_just_before_a_snapshot_starts_from_an_older_one(copy: Any, core: Core, demo_file: Path) -> None:
    ledger = copy(demo_file)
    snapshots = with_snapshots(core, ledger)
    try:
        older, info = snapshots.store.listing()[-2:]
        record = ledger.read_stream(info.stream_id)[info.version - 1]
        point = Point(TIMESTAMP, int(record.envelope["ts_ns"]) - 1, "just before")
        seeded = replay_state(ledger, core, point, snapshots=snapshots)
        assert dumps(seeded.as_dict(core)) == dumps(replay_state(ledger, core, point).as_dict(core))
        start = seeded.accounts["main"].start
        assert start is not None and start.version == older.version
    finally:
        snapshots.close()


def test_a_snapshot_covering_a_record_beyond_a_time_cut_makes_the_replay_start_again_without(
    copy: Any, core: Core, demo_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only a stream whose time runs backwards can do this (no titan writes one): pretend one.
    ledger = copy(demo_file)
    snapshots = with_snapshots(core, ledger)
    try:
        info = snapshots.store.listing()[-1]
        record = ledger.read_stream(info.stream_id)[info.version - 1]
        point = Point(TIMESTAMP, int(record.envelope["ts_ns"]) - 1, "just before")
        monkeypatch.setattr(state_at, "_last_version_by", lambda *args: info.version)
        seeded = replay_state(ledger, core, point, snapshots=snapshots)
        assert seeded.accounts["main"].start is None  # done again from zero
        assert dumps(seeded.as_dict(core)) == dumps(replay_state(ledger, core, point).as_dict(core))
    finally:
        snapshots.close()


# titan replay verify proves every snapshot ---------------------------------------------------------


def gate(ledger: SQLiteLedger, snapshots: Snapshots) -> Any:
    return verify_replay(ledger, load_cores("both"), snapshots=snapshots.store)


def test_the_gate_proves_every_honest_snapshot(copy: Any, core: Core, demo_file: Path) -> None:
    ledger = copy(demo_file)
    snapshots = with_snapshots(core, ledger)
    try:
        report = gate(ledger, snapshots)
        assert report.ok, report.summary()
        assert report.snapshots is not None and report.snapshots.proved == snapshots.store.count() > 5
        assert f"{report.snapshots.proved} snapshots proved" in report.summary()
        assert report.as_dict()["snapshots"]["findings"] == []
    finally:
        snapshots.close()


def test_the_gate_reports_each_snapshot_it_cannot_prove(copy: Any, core: Core, demo_file: Path) -> None:
    ledger = copy(demo_file)
    snapshots = ledger_snapshots(ledger)
    assert snapshots is not None
    try:
        honest = honest_snapshots(core, ledger, "main", 20)
        forged_at, untrusted_at, kept = honest[-1], honest[-2], honest[:-2]
        # A forger's snapshot: an older state under a later version, every check of the trust
        # rule satisfied (SHA-256, position, chain hash, set_by): only the fold can tell.
        forged = with_state(forged_at, kept[-1].state)
        forged = dataclasses.replace(forged, set_by=forged_at.set_by)
        assert snapshots.start(core, "main").snapshot is None  # empty so far
        for snapshot in [*kept, forged, dataclasses.replace(untrusted_at, chain_hash="0" * 64)]:
            snapshots.store.save(snapshot)
        beyond = dataclasses.replace(honest[0], version=10**6)
        snapshots.store.save(beyond)
        snapshots.store.save(dataclasses.replace(honest[0], stream_id="account-nobody"))
        report = gate(ledger, snapshots)
        assert not report.ok and report.divergence is None and not report.chain_broken
        found = report.snapshots
        assert found is not None and found.proved == len(kept)
        kinds = {(f.kind, f.stream_id, f.version, f.code) for f in found.findings}
        assert kinds == {
            (SNAPSHOT_DIFFERS, "account-main", forged_at.version, "STATE"),
            (SNAPSHOT_UNTRUSTED, "account-main", untrusted_at.version, "CHAIN_HASH"),
            (SNAPSHOT_UNREACHED, "account-main", 10**6, None),
            (SNAPSHOT_UNREACHED, "account-nobody", honest[0].version, None),
        }
        assert found.finding_count == 4 and "4 of" in report.summary()
        differs = next(f for f in found.findings if f.kind == SNAPSHOT_DIFFERS)
        assert "brain" in differs.message or "open_orders" in differs.message or "last_ts_ns" in differs.message
        # The forged one passes the trust rule: a reader would use it. That is why the gate runs.
        assert snapshots.start(core, "main").version == forged_at.version
    finally:
        snapshots.close()


def test_a_set_by_that_differs_from_the_fold_is_found(copy: Any, core: Core, demo_file: Path) -> None:
    ledger = copy(demo_file)
    snapshots = ledger_snapshots(ledger)
    assert snapshots is not None
    try:
        honest = honest_snapshots(core, ledger, "main", 25)
        last: Snapshot = honest[-1]
        refs = orjson.loads(last.set_by)
        older = orjson.loads(honest[0].set_by)
        kind = next(k for k in refs if k in older and refs[k] != older[k])
        spoiled = dataclasses.replace(last, set_by=orjson.dumps({**refs, kind: older[kind]}, option=orjson.OPT_SORT_KEYS))
        snapshots.store.save(spoiled)
        found = gate(ledger, snapshots).snapshots
        assert found is not None
        assert [(f.kind, f.code) for f in found.findings] == [(SNAPSHOT_DIFFERS, "SET_BY")]
        assert kind in found.findings[0].message
    finally:
        snapshots.close()


WRITTEN = sorted(name for name, entry in MANIFEST["ledgers"].items() if entry.get("snapshots"))


@pytest.mark.parametrize("name", WRITTEN)
def test_a_golden_ledger_written_with_snapshots_proves_them_and_readers_use_them(name: str, copy: Any, core: Core) -> None:
    entry = MANIFEST["ledgers"][name]
    ledger = copy(GOLDEN_DIR / entry["file"])
    snapshots = ledger_snapshots(ledger)
    assert snapshots is not None
    try:
        report = gate(ledger, snapshots)
        assert report.ok and report.snapshots is not None, report.summary()
        assert report.snapshots.stored == report.snapshots.proved == entry["snapshots"]
        used = 0
        for point in cuts(ledger):
            plain_at = replay_state(ledger, core, point)
            seeded_at = replay_state(ledger, core, point, snapshots=snapshots)
            assert dumps(seeded_at.as_dict(core)) == dumps(plain_at.as_dict(core)), point
            used += plain_at.records_folded - seeded_at.records_folded
        assert used > 0
        for ident in idents(ledger, 11):
            start = snapshot_start(ledger, core, snapshots, ident)
            assert dumps(explain(ledger, core, ident, start=start)) == dumps(explain(ledger, core, ident)), ident
        plain, _ = AccountCache(core, ledger).current("main", "account-main")
        seeded, _ = AccountCache(core, ledger, snapshots).current("main", "account-main")
        assert dumps(state_view(core, seeded)) == dumps(state_view(core, plain))
        assert snapshots.skipped == []
    finally:
        snapshots.close()


def test_a_snapshot_a_writer_prunes_while_the_gate_runs_is_counted_removed_not_a_finding(copy: Any) -> None:
    # A live writer keeps its newest few: one listed when the gate began may be gone when the fold
    # reaches it. The ledger is healthy; the gate must pass and say how many went.
    ledger = copy(GOLDEN_DIR / MANIFEST["ledgers"][WRITTEN[0]]["file"])
    snapshots = ledger_snapshots(ledger)
    assert snapshots is not None
    writer_side = SQLiteSnapshotStore(ledger.path)  # the writer's own connection to the file
    stored = snapshots.store.count()
    listed = snapshots.store.listing("account-main")
    pruned: list[int] = []
    real_iter = ledger.iter_all

    def iter_all(after: int = 0, batch: int = 1000) -> Iterator[Any]:
        for index, record in enumerate(real_iter(after, batch)):
            if index == 0:  # before the fold reaches any snapshot
                pruned.append(writer_side.prune("account-main", 8, listed[-1].version))
            yield record

    try:
        ledger.iter_all = iter_all
        report = verify_replay(ledger, load_cores("compiled"), snapshots=snapshots.store, second_process=False)
        found = report.snapshots
        assert found is not None and pruned == [stored - 8]
        assert report.ok, [f.message for f in found.findings]
        assert (found.stored, found.proved, found.removed, found.finding_count) == (stored, 8, stored - 8, 0)
        assert report.as_dict()["snapshots"]["removed"] == stored - 8
        assert f"{stored - 8} removed while the gate ran" in report.summary()
    finally:
        writer_side.close()
        snapshots.close()


def test_a_time_cut_leaving_out_a_record_before_the_streams_first_within_it_folds_from_zero(
    tmp_path: Path, copy: Any, core: Core
) -> None:
    # Time runs backwards after version 1 (no titan writes that; an imported ledger may): version 1
    # lies beyond the cut, versions 2 and 3 within it. An honest snapshot at version 2 has version 1
    # folded in, so it cannot start this replay, although version 2 is the first record met in it.
    source = copy(GOLDEN_DIR / MANIFEST["ledgers"]["brain-breaker-walk"]["file"])  # a copy: no -shm by the fixture
    records = [r for r in source.iter_all() if r.stream_id == "account-main"][:6]
    cut = int(records[1].envelope["ts_ns"])
    ledger = SQLiteLedger(str(tmp_path / "backwards.db"))
    snapshots = ledger_snapshots(ledger)
    assert snapshots is not None
    try:
        for index, record in enumerate(records):
            envelope = {k: v for k, v in record.envelope.items() if k not in ("hash", "prev_hash")}
            if index == 0:
                envelope["ts_ns"] = cut + 10**9
            ledger.append([NewRecord(record.stream_id, record.version, record.type, envelope)])
        save_all(snapshots.store, honest_snapshots(core, ledger, "main", 2))
        point = Point(TIMESTAMP, cut, str(cut))
        plain = replay_state(ledger, core, point, "main")
        seeded = replay_state(ledger, core, point, "main", snapshots=snapshots)
        assert plain.accounts["main"].version == 3 and plain.records_folded == 2  # versions 2 and 3
        assert seeded.accounts["main"].start is None  # done again from zero
        assert dumps(seeded.as_dict(core)) == dumps(plain.as_dict(core))
    finally:
        snapshots.close()
        ledger.close()


def test_a_store_that_cannot_be_opened_fails_the_gate_and_readers_fold_from_zero(
    copy: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = copy(GOLDEN_DIR / MANIFEST["ledgers"][WRITTEN[0]]["file"])

    def refuse(cls: Any, ledger: Any) -> Any:
        raise SnapshotStoreError(f"cannot open the snapshots of ledger {ledger.path}: unable to open database file")

    monkeypatch.setattr(SQLiteSnapshotStore, "for_ledger", classmethod(refuse))
    with caplog.at_level(logging.WARNING, logger="titan.snapshots"):
        assert ledger_snapshots(ledger) is None  # a reader: the fold from zero, logged
    assert "cannot be opened (folding from zero)" in caplog.text
    report = verify_replay(ledger, load_cores("compiled"), snapshots=snapshots_to_prove(ledger), second_process=False)
    assert report.divergence is None and not report.ok  # the gate proved nothing: it does not pass
    assert report.snapshots is not None and "unable to open database file" in (report.snapshots.unavailable or "")
    assert "snapshots NOT CHECKED" in report.summary()
