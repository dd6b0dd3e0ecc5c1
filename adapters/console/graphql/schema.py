"""The console's schema: the areas' query, mutation and subscription types merged into one.
Its SDL is committed (schemas/console.graphql) and a test fails on drift."""

from __future__ import annotations

from typing import Any

import strawberry
from strawberry.extensions import MaxTokensLimiter, QueryDepthLimiter
from strawberry.extensions.tracing import OpenTelemetryExtension
from strawberry.schema.config import StrawberryConfig
from strawberry.tools import merge_types
from strawberry.types import Info

from .actions import ActionsMutation
from .context import principal
from .dlq import DlqQuery
from .errors import CodedErrors
from .events import EventsQuery
from .explain import ExplainQuery
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


def build_schema() -> strawberry.Schema:
    """The schema, with limits on query depth and size (a hostile query costs little)."""
    return strawberry.Schema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=[
            lambda: QueryDepthLimiter(max_depth=MAX_DEPTH),
            lambda: MaxTokensLimiter(max_token_count=MAX_TOKENS),
            OpenTelemetryExtension,
            CodedErrors,
        ],
        config=StrawberryConfig(scalar_map=SCALARS),
    )


def sdl() -> str:
    """The schema in SDL, as committed."""
    return build_schema().as_str() + "\n"
