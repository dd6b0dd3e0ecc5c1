"""The snapshot store's port (its contract, proven for the embedded ledger here and for PostgreSQL
in tests/integration/test_snapshots_postgres.py), the SQLite adapter's place in the ledger file,
and the trust rule: a snapshot is used only when it passes every check, never blindly; one that
fails is skipped (the next older one, else the fold from zero) and reported."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from adapters.sqlite.ledger import SQLiteLedger
from adapters.sqlite.snapshots import SQLiteSnapshotStore
from commands.envelope import account_stream
from commands.ports import Ledger
from commands.snapshots import (
    CHAIN_HASH,
    FORMAT,
    MAX_UNTRUSTED,
    NO_RECORD,
    SET_BY,
    STATE_HASH,
    STORE_UNAVAILABLE,
    TOO_MANY_UNTRUSTED,
    UNDECODABLE,
    Snapshot,
    SnapshotInfo,
    Snapshots,
    SnapshotStore,
    SnapshotStoreError,
    UntrustedSnapshot,
    trusted,
)
from infra.bootstrap import bootstrap, open_ledger
from infra.core import Core, load_core
from infra.demo import ACCOUNT
from infra.demo import run as run_demo
from infra.settings import Settings
from replay.chain import verify_ledger
from replay.explain import advance, initial_point
from schemas.canonical import canonical_bytes, sha256_hex
from tests.snapshot_support import folded, honest_snapshots, save_all, snapshot_bytes, with_state


def snap(stream_id: str, version: int, position: int, state: bytes = b'{"s":1}') -> Snapshot:
    return Snapshot(
        stream_id, version, position, "ab" * 32, "titan.state.v1", state, sha256_hex(state), b"{}", 2**63 - 1
    )


class SnapshotStoreContract:
    """What every snapshot store does; a subclass gives `store`, empty."""

    @pytest.fixture
    def store(self) -> Iterator[SnapshotStore]:
        raise NotImplementedError

    def test_an_empty_store_has_no_snapshot(self, store: SnapshotStore) -> None:
        assert store.nearest("account-a") is None
        assert store.get("account-a", 1) is None
        assert store.listing() == []
        assert store.count() == 0

    def test_save_is_idempotent_on_stream_and_version_and_never_replaces(self, store: SnapshotStore) -> None:
        first = snap("account-a", 10, 100)
        assert store.save(first) is True
        assert store.save(first) is False
        assert store.save(snap("account-a", 10, 100, b'{"other":2}')) is False
        assert store.get("account-a", 10) == first
        assert store.count() == 1

    def test_bytes_and_integers_come_back_exactly(self, store: SnapshotStore) -> None:
        odd = Snapshot(
            "account-ü", 2**62, 2**63 - 1, "f" * 64, "titan.state.v1", bytes(range(256)), "0" * 64,
            b'{"x":"\xe2\x98\x83"}', 0,
        )  # fmt: skip
        assert store.save(odd)
        assert store.get("account-ü", 2**62) == odd
        assert store.nearest("account-ü") == odd

    def test_nearest_is_the_newest_at_or_before_a_version_and_a_position(self, store: SnapshotStore) -> None:
        for version, position in ((10, 100), (20, 250), (30, 400)):
            store.save(snap("account-a", version, position))
        store.save(snap("account-b", 25, 300))
        versions = {
            (None, None): 30,
            (29, None): 20,
            (20, None): 20,
            (9, None): None,
            (None, 399): 20,
            (None, 400): 30,
            (None, 99): None,
            (25, 1000): 20,
            (30, 260): 20,
        }
        for (max_version, max_position), expected in versions.items():
            found = store.nearest("account-a", max_version=max_version, max_position=max_position)
            assert (found.version if found else None) == expected, (max_version, max_position)
        assert store.nearest("account-c") is None

    def test_listing_is_by_stream_and_version_without_the_bytes(self, store: SnapshotStore) -> None:
        for stream_id, version in (("account-b", 5), ("account-a", 20), ("account-a", 10)):
            store.save(snap(stream_id, version, version * 10))
        listed = store.listing()
        assert [(i.stream_id, i.version) for i in listed] == [("account-a", 10), ("account-a", 20), ("account-b", 5)]
        assert all(isinstance(info, SnapshotInfo) for info in listed)
        assert listed[0] == snap("account-a", 10, 100).info
        assert [i.version for i in store.listing("account-a")] == [10, 20]
        assert store.count() == 3

    def test_prune_keeps_the_newest_of_one_stream(self, store: SnapshotStore) -> None:
        assert store.prune("account-a", 2, 100) == 0  # nothing there (not even a table) is no error
        for version in (10, 20, 30, 40):
            store.save(snap("account-a", version, version * 10))
        store.save(snap("account-b", 5, 50))
        assert store.prune("account-a", 5, 40) == 0
        assert store.prune("account-a", 2, 40) == 2
        assert [(i.stream_id, i.version) for i in store.listing()] == [("account-a", 30), ("account-a", 40), ("account-b", 5)]
        assert store.prune("account-a", 1, 40) == 1 and store.nearest("account-a") == snap("account-a", 40, 400)
        with pytest.raises(ValueError, match="at least 1"):
            store.prune("account-a", 0, 40)

    def test_prune_deletes_what_lies_above_the_writers_version_and_keeps_the_newest_below(self, store: SnapshotStore) -> None:
        # Rows with versions beyond the stream's head (junk anyone with INSERT can add) must not
        # count among the newest kept: they would evict every honest snapshot.
        for version in (10, 20, 30, 40):
            store.save(snap("account-a", version, version * 10))
        for k in range(8):
            store.save(snap("account-a", 10**12 + k, 50))
        store.save(snap("account-b", 10**12, 50))
        assert store.prune("account-a", 2, 40) == 8 + 2
        assert [(i.stream_id, i.version) for i in store.listing()] == [
            ("account-a", 30), ("account-a", 40), ("account-b", 10**12),
        ]  # fmt: skip
        store.save(snap("account-a", 50, 500))
        assert store.prune("account-a", 8, 35) == 2  # above 35: 40 and 50, however few there are
        assert [i.version for i in store.listing("account-a")] == [30]

    def test_a_closed_store_says_so(self, store: SnapshotStore) -> None:
        store.close()
        with pytest.raises(SnapshotStoreError, match="closed"):
            store.nearest("account-a")
        store.close()  # idempotent


class TestSQLiteFileStore(SnapshotStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[SnapshotStore]:
        ledger = SQLiteLedger(str(tmp_path / "ledger.db"))
        store = SQLiteSnapshotStore.for_ledger(ledger)
        yield store
        store.close()
        ledger.close()


class TestSQLiteMemoryStore(SnapshotStoreContract):
    @pytest.fixture
    def store(self) -> Iterator[SnapshotStore]:
        store = SQLiteSnapshotStore(":memory:")
        yield store
        store.close()


# The embedded adapter: in the ledger's file, outside its chain ------------------------------------


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_the_table_is_made_by_the_first_save_and_the_ledger_is_still_a_ledger(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = SQLiteLedger(str(path))
    bus = bootstrap(Settings(ledger_url=f"sqlite:///{path}"), ledger=ledger)
    run_demo(bus, seed=3, orders=8, ledger_url=f"sqlite:///{path}", progress=False)
    store = SQLiteSnapshotStore.for_ledger(ledger)
    assert store.count() == 0 and "titan_snapshots" not in tables(path)  # reading makes nothing
    core = bus.ctx.core
    save_all(store, honest_snapshots(core, ledger, ACCOUNT, 5))
    assert "titan_snapshots" in tables(path)
    head = ledger.head()
    store.close()
    ledger.close()
    reopened = SQLiteLedger(str(path), read_only=True)
    try:
        assert reopened.head() == head
        assert verify_ledger(reopened).ok  # outside the chain: the ledger verifies as before
        read_only = SQLiteSnapshotStore.for_ledger(reopened)
        assert read_only.read_only and read_only.count() > 0
        with pytest.raises(SnapshotStoreError, match="read-only"):
            read_only.save(snap(account_stream(ACCOUNT), 10**6, 10**6))
        read_only.close()
    finally:
        reopened.close()


def test_a_store_goes_on_after_its_table_was_dropped(tmp_path: Path) -> None:
    # Deleting every snapshot loses nothing (docs/ledger.md), dropping the table included: a store
    # that had seen the table must neither fail every later save nor every read.
    path = tmp_path / "ledger.db"
    SQLiteLedger(str(path)).close()
    store = SQLiteSnapshotStore(str(path))
    try:
        assert store.save(snap("account-a", 1, 1))
        with sqlite3.connect(path) as db:
            db.execute("DROP TABLE titan_snapshots")
        assert store.nearest("account-a") is None and store.listing() == []
        assert store.save(snap("account-a", 2, 2))
        with sqlite3.connect(path) as db:
            db.execute("DROP TABLE titan_snapshots")
        assert store.save(snap("account-a", 3, 3))  # straight to a save, too
        assert [i.version for i in store.listing()] == [3]
    finally:
        store.close()


def test_a_read_only_ledger_without_snapshots_is_left_exactly_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = SQLiteLedger(str(path))
    ledger.close()
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    read_only = SQLiteLedger(str(path), read_only=True)
    store = SQLiteSnapshotStore.for_ledger(read_only)
    assert store.nearest("account-main") is None and store.listing() == []
    store.close()
    read_only.close()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert "titan_snapshots" not in tables(path)


def test_the_table_refuses_a_value_of_another_type(tmp_path: Path) -> None:
    store = SQLiteSnapshotStore(str(tmp_path / "ledger.db"))
    store.save(snap("account-a", 1, 1))
    store.close()
    with sqlite3.connect(tmp_path / "ledger.db") as db, pytest.raises(sqlite3.Error):
        db.execute(
            "INSERT INTO titan_snapshots VALUES ('account-a', 'two', 2, 'h', 'f', x'00', 's', x'00', 0)"
        )


# The trust rule -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def core() -> Core:
    return load_core()


@pytest.fixture(scope="module")
def demo(core: Core) -> Iterator[Ledger]:
    """A demo session in memory: every context-setting event type the Brain records."""
    ledger = open_ledger("sqlite:///:memory:")
    run_demo(bootstrap(Settings(ledger_url="sqlite:///:memory:"), ledger=ledger, core=core), seed=7, orders=60, ledger_url="m", progress=False)
    yield ledger
    ledger.close()


@pytest.fixture(scope="module")
def honest(core: Core, demo: Ledger) -> list[Snapshot]:
    return honest_snapshots(core, demo, ACCOUNT, 20)


@pytest.fixture
def snapshots(demo: Ledger) -> Iterator[Snapshots]:
    found = Snapshots(SQLiteSnapshotStore(":memory:"), demo)
    yield found
    found.close()


def test_an_honest_snapshot_is_trusted_and_holds_the_fold(core: Core, demo: Ledger, honest: list[Snapshot]) -> None:
    assert len(honest) >= 5
    records = demo.read_stream(account_stream(ACCOUNT))
    for snapshot in honest:
        found = trusted(core, snapshot, demo)
        assert snapshot_bytes(core, found.state) == snapshot_bytes(core, folded(core, demo, ACCOUNT, snapshot.version))
        # The references are explain's (without the time it derives), and name the policy.
        point = advance(core, initial_point(core, ACCOUNT), records[: snapshot.version])
        assert {k: {f: v for f, v in ref.items() if f != "time"} for k, ref in point.set_by.items()} == found.set_by
        assert found.policy_record is not None and found.policy_record.type == "policy.activated.v1"


def tampered(core: Core, honest: Snapshot, demo: Ledger) -> dict[str, tuple[str, Snapshot]]:
    """One snapshot per way of spoiling an honest one, with the check that must catch it."""
    data = orjson.loads(honest.state)
    other = demo.read_stream(account_stream(ACCOUNT))[honest.version - 2]  # the record before it
    set_by = orjson.loads(honest.set_by)
    wrong_ref = dict(set_by["policy.activated.v1"], actor="someone else")
    no_policy = {k: v for k, v in set_by.items() if k != "policy.activated.v1"}
    return {
        "format": (FORMAT, dataclasses.replace(honest, core_format="titan.state.v0")),
        "bytes": (STATE_HASH, dataclasses.replace(honest, state=honest.state.replace(b'"mode":"', b'"mode": "'))),
        "hash": (STATE_HASH, dataclasses.replace(honest, state_sha256="0" * 64)),
        "chain_hash": (CHAIN_HASH, dataclasses.replace(honest, chain_hash="0" * 64)),
        "position": (NO_RECORD, dataclasses.replace(honest, position=other.position)),
        "beyond": (NO_RECORD, dataclasses.replace(honest, position=10**9)),
        "not_a_state": (UNDECODABLE, with_state(honest, b'{"format":"titan.state.v1"}')),
        "not_json": (UNDECODABLE, with_state(honest, b"\xff")),
        "other_account": (UNDECODABLE, with_state(honest, canonical_bytes({**data, "account_id": "mallory"}))),
        "policy_hash": (UNDECODABLE, with_state(honest, canonical_bytes({**data, "policy_hash": "ab" * 32}))),
        "set_by_ref": (SET_BY, dataclasses.replace(honest, set_by=canonical_bytes({**set_by, "policy.activated.v1": wrong_ref}))),
        "set_by_policy": (SET_BY, dataclasses.replace(honest, set_by=canonical_bytes(no_policy))),
        "set_by_junk": (SET_BY, dataclasses.replace(honest, set_by=b"[1]")),
    }


def test_every_spoiled_snapshot_fails_its_check(core: Core, demo: Ledger, honest: list[Snapshot]) -> None:
    for name, (code, snapshot) in tampered(core, honest[-1], demo).items():
        with pytest.raises(UntrustedSnapshot) as refused:
            trusted(core, snapshot, demo)
        assert refused.value.code == code, (name, refused.value.message)


def test_a_reader_skips_a_spoiled_snapshot_for_the_next_older_and_says_so(
    core: Core, demo: Ledger, honest: list[Snapshot], snapshots: Snapshots, caplog: pytest.LogCaptureFixture
) -> None:
    older, newest = honest[-2], honest[-1]
    snapshots.store.save(older)
    for name, (code, spoiled) in tampered(core, newest, demo).items():
        store = SQLiteSnapshotStore(":memory:")
        reader = Snapshots(store, demo)
        store.save(older)
        store.save(dataclasses.replace(spoiled, version=newest.version))
        with caplog.at_level(logging.WARNING, logger="titan.snapshots"):
            start = reader.start(core, ACCOUNT)
        assert start.snapshot == older.info, name
        assert [skip.code for skip in start.skipped] == [code] == [skip.code for skip in reader.skipped], name
        assert f"at version {newest.version} not used ({code})" in caplog.text
        assert snapshot_bytes(core, start.state) == snapshot_bytes(core, folded(core, demo, ACCOUNT, older.version))
        caplog.clear()
        reader.close()


def test_bounds_of_a_start_are_kept(core: Core, demo: Ledger, honest: list[Snapshot], snapshots: Snapshots) -> None:
    save_all(snapshots.store, honest)
    assert snapshots.start(core, ACCOUNT).version == honest[-1].version
    assert snapshots.start(core, ACCOUNT, max_version=honest[2].version - 1).version == honest[1].version
    assert snapshots.start(core, ACCOUNT, max_position=honest[3].position - 1).version == honest[2].version
    none = snapshots.start(core, ACCOUNT, max_position=honest[0].position - 1)
    assert (none.snapshot, none.version, none.position) == (None, 0, 0)
    assert snapshot_bytes(core, none.state) == snapshot_bytes(core, core.decider.initial_state(ACCOUNT))
    assert snapshots.start(core, "nobody").snapshot is None


def test_a_table_of_junk_costs_a_bounded_number_of_looks_then_the_fold_from_zero(
    core: Core, demo: Ledger, honest: list[Snapshot], snapshots: Snapshots
) -> None:
    spoiled = dataclasses.replace(honest[0], chain_hash="0" * 64)
    for version in range(1, honest[-1].version + 1):
        snapshots.store.save(dataclasses.replace(spoiled, version=version))
    start = snapshots.start(core, ACCOUNT)
    assert start.snapshot is None and start.version == 0
    assert len(start.skipped) == MAX_UNTRUSTED + 1
    assert start.skipped[-1].code == TOO_MANY_UNTRUSTED


class Broken(SQLiteSnapshotStore):
    def nearest(self, stream_id: str, **bounds: Any) -> Snapshot | None:
        raise SnapshotStoreError("the store's database is gone (injected)")


def test_an_unreadable_store_means_the_fold_from_zero(core: Core, demo: Ledger) -> None:
    reader = Snapshots(Broken(":memory:"), demo)
    start = reader.start(core, ACCOUNT)
    assert start.snapshot is None and [s.code for s in start.skipped] == [STORE_UNAVAILABLE]
    reader.close()
