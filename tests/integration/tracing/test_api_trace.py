"""A console mutation is one trace: the GraphQL operation's span, then the writer's decide and
append spans for the command it recorded, with the titan.* attributes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from adapters.console.app import console_app
from adapters.console.auth import TokenBook, new_token, token_line
from adapters.console.probes import Readiness
from adapters.sqlite.ledger import SQLiteLedger
from commands.writer import GroupCommitBus
from infra.console import DlqActions, ServeCommands, open_console
from infra.core import load_core
from infra.settings import Settings
from infra.submit import default_policy, init_id
from infra.writers import lease_store
from schemas import commands as wire

from .tracing_support import install_provider, provider_restored

pytestmark = pytest.mark.integration


def test_a_console_halt_traces_through_decide_and_append(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    token = new_token()
    (tmp_path / "tokens").write_text(token_line("op:tess", ["operator"], token) + "\n", encoding="utf-8")
    ledger = SQLiteLedger(str(tmp_path / "ledger.db"))
    core = load_core("auto")
    settings = Settings(ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}")
    bus = GroupCommitBus(lease_store(ledger), core)
    opened = asyncio.run(open_console(settings, ledger, core, TokenBook(path=tmp_path / "tokens"), ServeCommands(lambda: bus, DlqActions(None, None))))
    app = console_app(opened.services, lambda: Readiness("leader", {}), CollectorRegistry())
    with provider_restored():
        install_provider(provider)
        with TestClient(app) as client:
            assert client.portal is not None
            initial = wire.ActivatePolicy(command_id=init_id("traced"), account_id="traced", ts_ns=0, actor="titan-init", policy=default_policy())
            client.portal.call(bus.handle, initial)
            response = client.post(
                "/graphql",
                json={"query": 'mutation { halt(account: "traced", reason: "trace it") { outcome commandId } }'},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert response.status_code == 200, response.text
            command_id = response.json()["data"]["halt"]["commandId"]
            assert client.portal is not None
            client.portal.call(bus.stop)
    asyncio.run(opened.close())
    ledger.close()
    spans = exporter.get_finished_spans()
    by_name = {span.name: span for span in spans}
    assert {"titan.decide", "titan.append"} <= set(by_name), sorted(by_name)
    operation = [s for s in spans if s.name.startswith(("GraphQL", "mutation"))]
    assert operation, sorted(by_name)
    trace_id = operation[0].context.trace_id
    for name in ("titan.decide", "titan.append"):
        span = by_name[name]
        assert span.context.trace_id == trace_id, f"{name} is not in the mutation's trace"
        attributes = dict(span.attributes or {})
        assert attributes["titan.command_id"] == command_id
        assert attributes["titan.account_id"] == "traced"
