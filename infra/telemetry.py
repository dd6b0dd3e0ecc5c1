"""Where titan's trace spans go (docs/tracing.md): nowhere by default, or to an OTLP collector.

Without a configured exporter no SDK tracer provider is installed: the OpenTelemetry API stays a
no-op and titan's code builds no span at all (commands/tracing.py `enabled`).
"""

from __future__ import annotations

from collections.abc import Callable

from opentelemetry import trace

from .settings import Settings


def configure_tracing(settings: Settings) -> Callable[[], None] | None:
    """Install the tracer provider `settings.otel_exporter` asks for and return what flushes and
    stops it at exit; None when tracing is off ("none")."""
    if settings.otel_exporter != "otlp":
        return None
    # Imported only when configured: an untraced titan never loads the SDK.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: settings.otel_service_name}))
    # Batched, off the event loop: an unreachable collector costs dropped spans, never latency.
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otel_endpoint)))
    trace.set_tracer_provider(provider)
    return provider.shutdown
