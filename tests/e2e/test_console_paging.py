"""`events` pages through a 100k-record ledger over GraphQL: every record once, in order, and a
rare filter in bounded pages."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from adapters.console.app import console_app
from adapters.console.auth import TokenBook, new_token, token_line
from adapters.console.probes import Readiness
from adapters.sqlite.ledger import SQLiteLedger
from infra.console import DlqActions, LocalCommands, open_console
from infra.core import load_core
from infra.settings import Settings
from tests.integration.test_ledger_paging import RARE_TYPE, RECORDS, big_ledger

pytestmark = pytest.mark.e2e
__all__ = ["big_ledger"]

QUERY = """query($after: String, $types: [String!]) { events(first: 1000, after: $after, types: $types) {
  edges { node { position } } pageInfo { hasNextPage endCursor } } }"""


@pytest.fixture(scope="module")
def client(big_ledger: SQLiteLedger, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, str]]:
    token = new_token()
    tokens = tmp_path_factory.mktemp("paging-tokens") / "tokens"
    tokens.write_text(token_line("auditor", ["auditor"], token) + "\n", encoding="utf-8")
    settings = Settings(ledger_url=f"sqlite:///{big_ledger.path}")
    opened = asyncio.run(
        open_console(settings, big_ledger, load_core("auto"), TokenBook(path=Path(tokens)), LocalCommands(settings, big_ledger, DlqActions(None, None)))
    )
    app = console_app(opened.services, lambda: Readiness("console", {}), CollectorRegistry())
    with TestClient(app) as test_client:
        yield test_client, token
    asyncio.run(opened.close())


def pages(client: TestClient, token: str, **variables: Any) -> tuple[list[int], int]:
    positions: list[int] = []
    after, calls = None, 0
    while True:
        response = client.post("/graphql", json={"query": QUERY, "variables": {**variables, "after": after}}, headers={"Authorization": f"Bearer {token}"})
        body = response.json()
        assert response.status_code == 200, body
        calls += 1
        page = body["data"]["events"]
        positions.extend(int(edge["node"]["position"]) for edge in page["edges"])
        if not page["pageInfo"]["hasNextPage"]:
            return positions, calls
        after = page["pageInfo"]["endCursor"]


def test_every_record_once_in_order(client: tuple[TestClient, str]) -> None:
    positions, calls = pages(*client)
    assert positions == list(range(1, RECORDS + 1))
    assert calls == RECORDS // 1000


def test_a_rare_type_in_bounded_pages(client: tuple[TestClient, str]) -> None:
    positions, calls = pages(*client, types=[RARE_TYPE])
    assert positions == list(range(100, RECORDS + 1, 100))
    assert calls <= RECORDS // 50_000 + 1, "each page looks at no more than 50,000 records"
