"""The test services themselves: a fresh database per test, and the throwaway fallbacks work."""

from __future__ import annotations

import asyncio

import nats
import psycopg
import pytest

from tests.services import (
    free_port,
    nats_answers,
    pg_answers,
    postgres_bindir,
    start_nats,
    start_postgres,
)

pytestmark = pytest.mark.integration


def test_each_test_gets_a_fresh_empty_database(pg_url: str) -> None:
    with psycopg.connect(pg_url) as connection:
        tables = connection.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
    assert tables == (0,)


def test_nats_url_serves_jetstream(nats_url: str) -> None:
    async def account() -> object:
        client = await nats.connect(nats_url)
        try:
            return await client.jetstream().account_info()
        finally:
            await client.close()

    assert asyncio.run(account()) is not None


@pytest.mark.skipif(postgres_bindir() is None, reason="no PostgreSQL server binaries here")
def test_with_nothing_listening_a_throwaway_cluster_starts_and_goes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TITAN_TEST_PG_URL", f"postgresql://postgres@127.0.0.1:{free_port()}/test")
    monkeypatch.setattr("tests.services.docker_answers", lambda: False)
    server = start_postgres()
    try:
        assert server.origin.startswith("throwaway cluster")
        url = server.create_database()
        assert pg_answers(url)
        server.drop_database(url)
    finally:
        server.stop()
    assert not pg_answers(server.admin_url, 1)


def test_with_nothing_listening_a_throwaway_nats_starts_and_goes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TITAN_TEST_NATS_URL", f"nats://127.0.0.1:{free_port()}")
    server = start_nats()
    try:
        assert server.origin.startswith("throwaway nats-server")
        assert nats_answers(server.url)
    finally:
        server.stop()
    assert not nats_answers(server.url, 0.5)
