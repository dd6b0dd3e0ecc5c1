"""Fixtures for the read side against real stores: demo ledgers, and read-model stores in the
embedded SQLite file and in PostgreSQL (a fresh database per test: `pg_url`, tests/conftest.py).

- `demo_ledger_file`: a copy, for this test, of a seeded demo ledger (built once per session).
- `store_kind` / `open_store`: every test that takes `open_store` runs once per store.
- `migrated_pg_url`: a fresh database with every migration applied (`titan db upgrade`).
"""

from __future__ import annotations

import shutil
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from adapters.postgres.migrations import upgrade_async
from adapters.sqlite.ledger import SQLiteLedger
from infra.read_models import open_store as open_read_models
from projections.store import ReadModelStore
from tests.projections_support import interpreted_bus, run, run_demo

DEMO_ORDERS = 120

OpenStore = Callable[[], Awaitable[ReadModelStore]]


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("demo") / "ledger.db"
    ledger = SQLiteLedger(str(path))
    try:
        run_demo(interpreted_bus(ledger), DEMO_ORDERS)
    finally:
        ledger.close()  # checkpoints the WAL into the file
    return path


@pytest.fixture
def demo_ledger_file(demo_template: Path, tmp_path: Path) -> Path:
    path = tmp_path / "ledger.db"
    shutil.copyfile(demo_template, path)
    return path


@pytest.fixture
def demo_ledger(demo_ledger_file: Path) -> Iterator[SQLiteLedger]:
    ledger = SQLiteLedger(str(demo_ledger_file))
    yield ledger
    ledger.close()


@pytest.fixture
def migrated_pg_url(pg_url: str) -> str:
    """A fresh database with every migration applied (`titan db upgrade`)."""
    run(upgrade_async(pg_url))
    return pg_url


@pytest.fixture(params=["sqlite", "postgres"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_url(store_kind: str, request: pytest.FixtureRequest, demo_ledger_file: Path) -> str:
    """Where the read models go: the demo ledger's own file, or a migrated PostgreSQL database."""
    if store_kind == "sqlite":
        return "sqlite:///" + str(demo_ledger_file)
    return str(request.getfixturevalue("migrated_pg_url"))


@pytest.fixture
def open_store(store_url: str) -> OpenStore:
    """Open a store on the test's read models (call it inside the test's event loop; close it)."""

    async def opener() -> ReadModelStore:
        return await open_read_models(store_url)

    return opener
