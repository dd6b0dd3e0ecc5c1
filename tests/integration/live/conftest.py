"""One NATS server, one PostgreSQL database, one key file and one running `titan serve` per test
module: tests use accounts of their own, so they do not see each other's commands."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from adapters.nats.signing import Keys
from tests.integration.jetstream.relay_support import OwnNats
from tests.services import PostgresServer, fresh_database

from .live_support import RUNNING, RUNNING_PAPER, ServeProcess, apply_streams, run, write_keys


@pytest.fixture(autouse=True)
def no_serve_left_behind() -> Iterator[None]:
    """A failing test must not leave a `titan serve` running (kill -9 what is left)."""
    before, before_paper = len(RUNNING), len(RUNNING_PAPER)
    yield
    for process in RUNNING[before:]:
        if process.process is not None and process.process.poll() is None and process not in _MODULE_SERVES:
            process.kill9()
    for engine in RUNNING_PAPER[before_paper:]:
        engine.kill9()


_MODULE_SERVES: list[ServeProcess] = []


@dataclass
class Live:
    nats_url: str
    ledger_url: str
    keys_path: Path
    keys: Keys
    directory: Path
    nats: OwnNats

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "TITAN_LEDGER_URL": self.ledger_url,
            "TITAN_NATS_URL": self.nats_url,
            "TITAN_INTAKE_KEYS": str(self.keys_path),
            **extra,
        }


@contextlib.contextmanager
def new_live(pg_server: PostgresServer, directory: Path, prefix: str) -> Iterator[Live]:
    """A nats-server of the test's own with titan's streams, a key file and a fresh database on
    `pg_server`; the server is stopped and the database dropped afterwards."""
    own = OwnNats()
    own.start()
    try:
        run(apply_streams(own.url))
        keys_path, keys = write_keys(directory)
        with fresh_database(pg_server, prefix) as ledger_url:
            yield Live(own.url, ledger_url, keys_path, keys, directory, own)
    finally:
        own.close()


@pytest.fixture(scope="module")
def live(pg_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with new_live(pg_server, tmp_path_factory.mktemp("live"), "titan_live") as world:
        yield world


@pytest.fixture(scope="module")
def serve(live: Live) -> Iterator[ServeProcess]:
    process = ServeProcess(live.directory, live.env(TITAN_INTAKE_WINDOW_S="3"), args=("--account", "alpha")).start()
    _MODULE_SERVES.append(process)
    try:
        process.wait_ready()
        yield process
    finally:
        process.close()
