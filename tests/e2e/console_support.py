"""A console over a real demo ledger, driven over HTTP and WebSocket in-process (Starlette's
TestClient runs the real ASGI app; the ledger and read models are real SQLite files)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from adapters.console.app import console_app
from adapters.console.auth import ROLES, TokenBook, new_token, token_line
from adapters.console.probes import Check, Readiness
from adapters.sqlite.ledger import SQLiteLedger
from infra.console import DlqActions, LocalCommands, OpenConsole, open_console
from infra.core import load_core
from infra.settings import Settings
from projections import registry
from projections.runner import Runner

from .conftest import ROOT, titan_command


@dataclass
class ConsoleWorld:
    client: TestClient
    ledger: SQLiteLedger
    path: Path
    tokens: dict[str, str]
    token_file: Path
    order_to_explain: str
    opened: OpenConsole

    def gql(self, query: str, variables: dict[str, Any] | None = None, *, role: str | None = "operator", token: str | None = None) -> Any:
        headers = {}
        chosen = token if token is not None else (self.tokens[role] if role is not None else None)
        if chosen is not None:
            headers["Authorization"] = f"Bearer {chosen}"
        return self.client.post("/graphql", json={"query": query, "variables": variables or {}}, headers=headers)

    def data(self, query: str, variables: dict[str, Any] | None = None, *, role: str = "operator") -> Any:
        response = self.gql(query, variables, role=role)
        body = response.json()
        assert response.status_code == 200 and "errors" not in body, body
        return body["data"]

    def catch_up(self) -> None:
        asyncio.run(Runner(self.ledger, self.opened.store, registry.select()).catch_up())


def make_demo(directory: Path) -> tuple[Path, dict[str, Any]]:
    path = directory / "demo.db"
    result = subprocess.run(
        [*titan_command(), "demo", "--ledger", f"sqlite:///{path}", "--json"],
        capture_output=True, text=True, cwd=directory, timeout=300, check=False, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    return path, json.loads(result.stdout)


@contextmanager
def console_world(directory: Path) -> Iterator[ConsoleWorld]:
    path, summary = make_demo(directory)
    tokens = {role: new_token() for role in ROLES}
    tokens["revocable"] = new_token()
    token_file = directory / "tokens"
    lines = [token_line(f"{role}-user", [role], token) for role, token in tokens.items() if role in ROLES]
    lines.append(token_line("temp-user", ["operator", "auditor"], tokens["revocable"]))
    token_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    settings = Settings(ledger_url=f"sqlite:///{path}")
    ledger = SQLiteLedger(str(path))
    book = TokenBook(path=token_file)
    opened = asyncio.run(open_console(settings, ledger, load_core("auto"), book, LocalCommands(settings, ledger, DlqActions(None, None))))
    registry_ = CollectorRegistry()
    app = console_app(opened.services, lambda: Readiness("console", {"ledger": Check(True, "test")}), registry_)
    client = TestClient(app)
    client.__enter__()  # one event loop for the whole world, as a server has
    world = ConsoleWorld(client, ledger, path, tokens, token_file, summary["order_to_explain"], opened)
    world.catch_up()
    try:
        yield world
    finally:
        client.__exit__(None, None, None)
        asyncio.run(opened.close())
        ledger.close()
