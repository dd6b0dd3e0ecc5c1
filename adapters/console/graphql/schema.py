"""The console's schema: the areas' query, mutation and subscription types merged into one.
Its SDL is committed (schemas/console.graphql) and a test fails on drift."""

from __future__ import annotations

from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import (
    AddValidationRules,
    DisableIntrospection,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
)
from strawberry.extensions.tracing import OpenTelemetryExtension
from strawberry.schema.config import StrawberryConfig
from strawberry.tools import merge_types
from strawberry.types import ExecutionContext, Info

from ..ports import ConsoleError
from .actions import ActionsMutation
from .context import principal
from .dlq import DlqQuery
from .errors import CodedErrors
from .events import EventsQuery
from .explain import ExplainQuery
from .limits import OneActionPerMutation, RowBudget
from .live import LiveSubscription
from .orders import OrdersQuery
from .policy import PolicyQuery
from .positions import PositionsQuery
from .risk import RiskQuery
from .scalars import SCALARS


@strawberry.type(description="Who the token belongs to.")
class Viewer:
    subject: str
    roles: list[str]


@strawberry.type
class AccountsQuery:
    @strawberry.field(description="Who you are, by your token.")
    def me(self, info: Info[Any, Any]) -> Viewer:
        found = principal(info)
        return Viewer(subject=found.subject, roles=sorted(found.roles))

    @strawberry.field(description="The accounts this ledger holds, and the console's default.")
    async def accounts(self, info: Info[Any, Any]) -> list[str]:
        from ..auth import READ
        from .context import allowed, services

        allowed(info, READ, "accounts")
        return await services(info).data.accounts()


Query: Any = merge_types(
    "Query", (AccountsQuery, PositionsQuery, OrdersQuery, RiskQuery, PolicyQuery, DlqQuery, EventsQuery, ExplainQuery)
)
Mutation: Any = merge_types("Mutation", (ActionsMutation,))
Subscription: Any = merge_types("Subscription", (LiveSubscription,))

MAX_DEPTH = 8
MAX_TOKENS = 4000


MAX_ALIASES = 30


class ConsoleSchema(strawberry.Schema):
    """The schema, logging only errors titan did not raise on purpose (a refused token or role is
    an answer, not an incident: logging each would let anyone flood the log)."""

    def process_errors(self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None) -> None:
        for error in errors:
            if not isinstance(error.original_error, ConsoleError) and error.original_error is not None:
                super().process_errors([error], execution_context)


def build_schema(*, production: bool = True) -> strawberry.Schema:
    """The schema, with limits on depth, size, aliases, rows and actions per document (a hostile
    query costs little); in production without introspection."""
    extensions: list[Any] = [
        lambda: QueryDepthLimiter(max_depth=MAX_DEPTH),
        lambda: MaxTokensLimiter(max_token_count=MAX_TOKENS),
        lambda: MaxAliasesLimiter(max_alias_count=MAX_ALIASES),
        lambda: AddValidationRules([OneActionPerMutation, RowBudget]),
        OpenTelemetryExtension,
        CodedErrors,
    ]
    if production:
        extensions.insert(0, DisableIntrospection)
    return ConsoleSchema(query=Query, mutation=Mutation, subscription=Subscription, extensions=extensions, config=StrawberryConfig(scalar_map=SCALARS))


def sdl() -> str:
    """The schema in SDL, as committed."""
    return build_schema(production=False).as_str() + "\n"
