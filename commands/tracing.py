"""OpenTelemetry spans of the command path (docs/tracing.md), through the OpenTelemetry API only.

No SDK is installed unless `titan serve` is configured to export (infra/telemetry.py): the API is
then a no-op, and every caller checks `enabled()` first so that an untraced titan builds no span,
no attribute and no header. Nothing here may influence a decision or a recorded byte.

The writer remembers, per command, the span its records were appended under; the relay and the
gateway, in the same process, parent their publish spans on it. That registry is in memory and
bounded: after a restart (or for a command decided by another process) a publish starts a new trace.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanContext

from schemas import commands as wire

TRACER_NAME: Final = "titan"
REMEMBERED_COMMANDS: Final = 100_000
"""Commands whose append span the registry keeps for the relay and the gateway (least recently
used first out): far more than the relay lags behind the writer in a healthy serve."""

COMMAND_ID: Final = "titan.command_id"
INTENT_ID: Final = "titan.intent_id"
PHASE_ID: Final = "titan.phase_id"
ACCOUNT_ID: Final = "titan.account_id"
OUTCOME: Final = "titan.outcome"
REASON: Final = "titan.reason"
POSITION: Final = "titan.position"

Attributes = dict[str, str | int]

_NO_SDK: Final = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
"""The API's own providers: what `get_tracer_provider` returns while no SDK provider is set."""
_tracer: list[tuple[trace.TracerProvider, trace.Tracer]] = []
_recent: OrderedDict[str, SpanContext] = OrderedDict()


def enabled() -> bool:
    """Whether an SDK tracer provider is installed (otherwise spans would go nowhere). About a
    microsecond: callers ask once per batch, not per record."""
    return not isinstance(trace.get_tracer_provider(), _NO_SDK)


def tracer() -> trace.Tracer:
    """titan's tracer from the provider installed now (fetched again when the provider changes,
    so a provider installed after import, as tests do, is the one used)."""
    provider = trace.get_tracer_provider()
    if _tracer and _tracer[0][0] is provider:
        return _tracer[0][1]
    fresh = trace.get_tracer(TRACER_NAME, tracer_provider=provider)
    _tracer[:] = [(provider, fresh)]
    return fresh


def current_context() -> Context:
    """The caller's trace context, captured when a command is queued to its writer."""
    return otel_context.get_current()


def attributes_of(command_id: Any, account_id: Any, intent_id: Any = None, phase_id: Any = None) -> Attributes:
    """The titan.* attributes of a command's fields; what is absent, empty or mistyped is left out
    (a phase is 1, 2 or 3: 0 and None mean none)."""
    attributes: Attributes = {}
    if isinstance(command_id, str) and command_id:
        attributes[COMMAND_ID] = command_id
    if isinstance(account_id, str) and account_id:
        attributes[ACCOUNT_ID] = account_id
    if isinstance(intent_id, str) and intent_id:
        attributes[INTENT_ID] = intent_id
    if isinstance(phase_id, int) and not isinstance(phase_id, bool) and phase_id:
        attributes[PHASE_ID] = phase_id
    return attributes


def command_attributes(command: wire.AnyCommand) -> Attributes:
    """The titan.* attributes of a wire command (intent and phase only on commands carrying them)."""
    return attributes_of(
        command.command_id, command.account_id, getattr(command, "intent_id", None), getattr(command, "phase_id", None)
    )


def fields_attributes(fields: Mapping[str, Any]) -> Attributes:
    """The titan.* attributes of a command's JSON object, read as is (not validated)."""
    return attributes_of(
        fields.get("command_id"), fields.get("account_id"), fields.get("intent_id"), fields.get("phase_id")
    )


def remember(command_id: str, span_context: SpanContext) -> None:
    """Note the span a command's records were appended under, for the spans that publish them."""
    if not span_context.is_valid:
        return
    _recent[command_id] = span_context
    _recent.move_to_end(command_id)
    while len(_recent) > REMEMBERED_COMMANDS:
        _recent.popitem(last=False)


def context_of(command_id: str) -> Context | None:
    """A context whose parent is the command's append span, when this process remembers it."""
    span_context = _recent.get(command_id)
    if span_context is None:
        return None
    _recent.move_to_end(command_id)
    return trace.set_span_in_context(trace.NonRecordingSpan(span_context), Context())
