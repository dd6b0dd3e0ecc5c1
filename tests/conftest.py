"""Fixtures every tier may use: real PostgreSQL and NATS JetStream (machinery in tests/services.py).

- `pg_server`: the session's PostgreSQL server (reached, or started and stopped by the session).
- `pg_url`: a fresh, empty database on it for one test, dropped afterwards.
- `nats_url`: the session's NATS server with JetStream (reached, or started).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.services import NatsServer, PostgresServer, fresh_database, start_nats, start_postgres

_USED: dict[str, str] = {}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say which PostgreSQL and NATS the session used (reached, or started for it)."""
    for name, origin in sorted(_USED.items()):
        terminalreporter.write_line(f"test services: {name}: {origin}")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    server = start_postgres()
    _USED["postgresql"] = server.origin
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> Iterator[str]:
    with fresh_database(pg_server) as url:
        yield url


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    server = start_nats()
    _USED["nats"] = server.origin
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def nats_url(nats_server: NatsServer) -> str:
    return nats_server.url
