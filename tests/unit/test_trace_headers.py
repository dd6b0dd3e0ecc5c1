"""W3C trace context in NATS headers (adapters/nats/trace_headers.py): titan's own copy wins over a
`traceparent` a server rewrote, a bad header means no parent, never an exception. API only: no
SDK is needed to carry a context."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from adapters.nats import subjects
from adapters.nats.trace_headers import extract, inject

TRACE_A = "0af7651916cd43dd8448eb211c80319c"
TRACE_B = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "b7ad6b7169203331"


def parent(headers: dict[str, str] | None) -> SpanContext:
    return trace.get_current_span(extract(headers)).get_span_context()


def value(trace_id: str, span_id: str = SPAN) -> str:
    return f"00-{trace_id}-{span_id}-01"


def test_titan_traceparent_wins_over_a_rewritten_traceparent() -> None:
    # What some nats-server versions with message tracing store: `traceparent` renamed.
    rewritten = {"Xraceparent": value(TRACE_B), subjects.TITAN_TRACEPARENT: value(TRACE_A)}
    found = parent(rewritten)
    assert found.is_valid and found.is_remote
    assert (found.trace_id, found.span_id) == (int(TRACE_A, 16), int(SPAN, 16))


def test_titan_traceparent_wins_over_a_different_traceparent() -> None:
    both = {subjects.TRACEPARENT: value(TRACE_B), subjects.TITAN_TRACEPARENT: value(TRACE_A)}
    assert parent(both).trace_id == int(TRACE_A, 16)


def test_traceparent_alone_is_read() -> None:
    found = parent({subjects.TRACEPARENT: value(TRACE_B), subjects.TRACESTATE: "vendor=x"})
    assert found.trace_id == int(TRACE_B, 16)
    assert found.trace_state.get("vendor") == "x"


def test_a_bad_titan_traceparent_falls_back_to_traceparent() -> None:
    headers = {subjects.TITAN_TRACEPARENT: "not a trace context", subjects.TRACEPARENT: value(TRACE_B)}
    assert parent(headers).trace_id == int(TRACE_B, 16)


@pytest.mark.parametrize(
    "headers",
    [
        None,
        {},
        {subjects.TITAN_TRACEPARENT: "garbage"},
        {subjects.TRACEPARENT: "00-zz-yy-01", subjects.TITAN_TRACEPARENT: "\x00\xff" * 300},
        {subjects.TITAN_TRACEPARENT: value("0" * 32)},  # an all-zero trace id is invalid
        {subjects.TITAN_TRACEPARENT: value(TRACE_A, "0" * 16)},  # so is an all-zero span id
        {subjects.TITAN_TRACEPARENT: value(TRACE_A) + "-extra"},  # version 00 has four fields
        {subjects.TITAN_TRACEPARENT: "00-" + "a" * 600},
        {"Xraceparent": value(TRACE_A)},  # only the rewritten header: nothing to read
    ],
)
def test_a_garbage_header_gives_an_empty_context(headers: dict[str, str] | None) -> None:
    context = extract(headers)
    assert context == Context()
    assert not trace.get_current_span(context).get_span_context().is_valid


def test_inject_writes_both_headers_with_the_same_value() -> None:
    span = NonRecordingSpan(SpanContext(int(TRACE_A, 16), int(SPAN, 16), is_remote=False, trace_flags=TraceFlags(1)))
    headers = {subjects.MSG_ID: "x"}
    inject(headers, span)
    assert headers[subjects.TRACEPARENT] == headers[subjects.TITAN_TRACEPARENT] == value(TRACE_A)
    assert headers[subjects.MSG_ID] == "x"
    assert parent(headers).trace_id == int(TRACE_A, 16)  # round trip


def test_inject_without_a_span_writes_nothing() -> None:
    headers = {subjects.MSG_ID: "x"}
    inject(headers)  # no current span
    inject(headers, trace.INVALID_SPAN)
    assert headers == {subjects.MSG_ID: "x"}
