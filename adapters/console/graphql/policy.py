"""The risk policy: the active document and its hash, and every activation before it."""

from __future__ import annotations

from typing import Any

import strawberry
from strawberry.types import Info

from ..auth import READ
from .context import allowed, known_account, services
from .scalars import JSON, BigInt


@strawberry.type(description="One activation of a policy, as recorded.")
class PolicyActivation:
    position: BigInt
    ts_ns: BigInt
    actor: str | None
    policy_id: str | None
    policy_hash: str
    reason: str | None
    document: JSON

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> PolicyActivation:
        document = item.get("policy") or {}
        return cls(
            position=item["position"],
            ts_ns=item["ts_ns"],
            actor=item.get("actor"),
            policy_id=document.get("policy_id") if isinstance(document, dict) else None,
            policy_hash=item["policy_hash"],
            reason=item.get("reason"),
            document=JSON(document),
        )


@strawberry.type(description="The policy in force and its history.")
class Policy:
    account_id: str
    active_hash: str | None
    active: PolicyActivation | None
    history: list[PolicyActivation] = strawberry.field(description="Every activation, newest first.")


@strawberry.type
class PolicyQuery:
    @strawberry.field(description="The active risk policy (document and hash) and its history.")
    async def policy(self, info: Info[Any, Any], account: str | None = None) -> Policy:
        allowed(info, READ, "policy")
        account_id = await known_account(info, account)
        data = services(info).data
        view = await data.state(account_id)
        history = [PolicyActivation.from_json(item) for item in await data.policies(account_id)]
        active_hash = view.get("policy_hash")
        active = next((item for item in reversed(history) if item.policy_hash == active_hash), None)
        return Policy(account_id=account_id, active_hash=active_hash, active=active, history=list(reversed(history)))
