"""Shared by the tracing tests. OpenTelemetry lets a process install its tracer provider once;
these tests install their own and put the process back as they found it (no provider, as titan
runs by default), so the rest of the session runs untraced."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from opentelemetry import trace
from opentelemetry.util._once import Once


def install_provider(provider: trace.TracerProvider | None) -> None:
    """Make `provider` the global one (None: none), past OpenTelemetry's set-once guard."""
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = provider


@contextlib.contextmanager
def provider_restored() -> Iterator[None]:
    """Whatever the block installs is removed afterwards."""
    previous = trace._TRACER_PROVIDER
    try:
        yield
    finally:
        install_provider(previous)
