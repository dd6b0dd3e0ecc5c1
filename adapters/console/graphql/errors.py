"""Every GraphQL error with a machine-readable code: `extensions: {code, status}` (HTTP and
WebSocket alike). Errors titan did not raise on purpose are masked (`INTERNAL`) so a stack
detail never reaches a client; the console logs them."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from graphql.error import GraphQLError
from strawberry.extensions.base_extension import SchemaExtension

from ..ports import ConsoleError

LOG = logging.getLogger("titan.console")


def error_code(error: GraphQLError) -> tuple[str, str, int]:
    """An error's code, the message to show, and its HTTP status."""
    if error.extensions and "code" in error.extensions:  # already coded
        return str(error.extensions["code"]), error.message, int(error.extensions.get("status", 400))
    original = error.original_error
    if isinstance(original, ConsoleError):
        return original.code, original.message, original.status
    if original is None:  # the document did not parse or validate (unknown field, bad argument)
        code = "GRAPHQL_PARSE_FAILED" if error.message.startswith("Syntax Error") else "GRAPHQL_VALIDATION_FAILED"
        return code, error.message, 400
    if isinstance(original, RecursionError):
        return "INVALID_ARGUMENT", "an argument is nested too deeply to read", 400
    if isinstance(original, (ValueError, TypeError)) and "BigInt" in str(original):
        return "INVALID_ARGUMENT", str(original), 400
    LOG.error("console: unexpected error in %s", error.path, exc_info=original)
    return "INTERNAL", "internal error (logged by the console)", 500


def coded(error: GraphQLError) -> GraphQLError:
    code, message, status = error_code(error)
    return GraphQLError(
        message=message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        original_error=None,
        extensions={"code": code, "status": status},
    )


class CodedErrors(SchemaExtension):
    """Give every error of a result (or of each subscription message) its code."""

    def _process(self, result: Any) -> None:
        errors = getattr(result, "errors", None)
        if errors:
            result.errors = [coded(error) for error in errors]

    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        self._process(result)
        initial = getattr(result, "initial_result", None)
        if initial is not None:
            self._process(initial)

    def on_stream_result(self, result: Any) -> Iterator[None]:
        self._process(result)
        yield None
