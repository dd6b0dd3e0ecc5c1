"""`configure_tracing` (infra/telemetry.py): nothing installed by default; with `otlp`, titan's spans
reach an OTLP/HTTP endpoint (a real HTTP server standing in for the collector) as protobuf, with
the configured service name, and the shutdown it returns flushes them."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from commands import tracing
from infra.settings import Settings
from infra.telemetry import configure_tracing

from .tracing_support import provider_restored

pytestmark = pytest.mark.integration


class Collector(ThreadingHTTPServer):
    """Keeps the path, content type and body of every POST."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.posts: list[tuple[str, str, bytes]] = []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1/traces"


class _Handler(BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.posts.append((self.path, self.headers.get("Content-Type", ""), body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_tracing_is_off_by_default() -> None:
    with provider_restored():
        assert Settings().otel_exporter == "none"
        assert configure_tracing(Settings()) is None
        assert not tracing.enabled()


def test_otlp_sends_spans_to_the_endpoint(collector: Collector) -> None:
    settings = Settings(otel_exporter="otlp", otel_endpoint=collector.endpoint, otel_service_name="titan-test")
    with provider_restored():
        shutdown = configure_tracing(settings)
        assert shutdown is not None and tracing.enabled()
        span = tracing.tracer().start_span("titan.decide", attributes={tracing.COMMAND_ID: "c-1"})
        span.end()
        shutdown()  # flushes the batch
    assert not tracing.enabled()
    assert collector.posts, "no export reached the endpoint"
    path, content_type, body = collector.posts[0]
    assert path == "/v1/traces" and content_type == "application/x-protobuf"
    request = ExportTraceServiceRequest.FromString(body)
    resource = request.resource_spans[0]
    service = {a.key: a.value.string_value for a in resource.resource.attributes}["service.name"]
    exported = resource.scope_spans[0]
    assert service == "titan-test" and exported.scope.name == tracing.TRACER_NAME
    assert [s.name for s in exported.spans] == ["titan.decide"]
    assert {a.key: a.value.string_value for a in exported.spans[0].attributes} == {tracing.COMMAND_ID: "c-1"}
