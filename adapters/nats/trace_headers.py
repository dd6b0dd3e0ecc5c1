"""W3C trace context in the headers of titan's NATS messages, and the producer span of a published
ledger record (docs/tracing.md).

Some nats-server versions with message tracing on rewrite `traceparent` to `Xraceparent` in the
messages they store, so titan writes the same value under a header of its own,
`Titan-Traceparent`, and reads that one first. The HMAC signature of a command does not cover these
headers (adapters/nats/signing.py signs issuer, time, subject and payload): a trace header is a
hint for observability, never an input to a decision.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from commands import tracing
from commands.ports import Record

from . import subjects
from .mirror_message import UnmirrorableRecord, account_of

_PROPAGATOR: Final = TraceContextTextMapPropagator()


def inject(headers: dict[str, str], span: Span | None = None) -> None:
    """Write the trace context of `span` (default: the current span) as `traceparent` (and
    `tracestate` when it has one) and as `Titan-Traceparent`; nothing when there is none."""
    context = None if span is None else trace.set_span_in_context(span, Context())
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context)
    value = carrier.get(subjects.TRACEPARENT)
    if value is None:
        return
    headers.update(carrier)
    headers[subjects.TITAN_TRACEPARENT] = value


def extract(headers: Mapping[str, str] | None) -> Context:
    """The trace context a message carries: from `Titan-Traceparent` when it is valid, else from
    `traceparent`; an empty context when neither is (a bad header is ignored, never raised)."""
    if not headers:
        return Context()
    tracestate = headers.get(subjects.TRACESTATE)
    for name in (subjects.TITAN_TRACEPARENT, subjects.TRACEPARENT):
        value = headers.get(name)
        if not isinstance(value, str):
            continue
        carrier = {subjects.TRACEPARENT: value}
        if isinstance(tracestate, str):
            carrier[subjects.TRACESTATE] = tracestate
        context = _parsed(carrier)
        if context is not None:
            return context
    return Context()


def _parsed(carrier: dict[str, str]) -> Context | None:
    try:
        context = _PROPAGATOR.extract(carrier)
    except Exception:  # noqa: BLE001 - a header from anyone: at worst, no parent
        return None
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def record_attributes(record: Record) -> tracing.Attributes:
    """The titan.* attributes of a ledger record: its command, its account (the stream
    `account-<id>`, or a command record's command), intent and phase when it has them (from the
    envelope, else its data), and its position."""
    envelope = record.envelope
    data = envelope.get("data")
    fields = data if isinstance(data, dict) else {}
    try:
        account_id: str | None = account_of(record)
    except UnmirrorableRecord:
        account_id = None
    intent_id = envelope.get("intent_id") or fields.get("intent_id")
    phase_id = envelope.get("phase_id") or fields.get("phase_id")
    attributes = tracing.attributes_of(envelope.get("command_id"), account_id, intent_id, phase_id)
    attributes[tracing.POSITION] = record.position
    return attributes


def start_publish_span(name: str, record: Record, subject: str) -> Span:
    """A PRODUCER span for publishing one record: a child of its command's append span when this
    process decided the command (commands/tracing.py), else the root of a new trace."""
    command_id = record.envelope.get("command_id")
    parent = tracing.context_of(command_id) if isinstance(command_id, str) else None
    attributes = record_attributes(record)
    attributes["messaging.system"] = "nats"
    attributes["messaging.destination.name"] = subject
    return tracing.tracer().start_span(
        name, context=parent if parent is not None else Context(), kind=SpanKind.PRODUCER, attributes=attributes
    )


def inject_recording(headers: dict[str, str], span: Span) -> None:
    """Put a recording span's context in a record's headers in place of the record's own
    deterministic trace context (adapters/nats/mirror_message.py), which stays otherwise."""
    if span.is_recording():
        inject(headers, span)
