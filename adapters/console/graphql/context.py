"""What every resolver gets: the ports, the token book, and who is asking (checked per field, and
again for every message of a subscription, so a revoked token stops receiving)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from strawberry.types import Info

from ..auth import Principal, TokenBook, require
from ..ports import ConsoleCommands, ConsoleData, ConsoleError


@dataclass(frozen=True)
class Services:
    """The console's dependencies, bound once by the composition root."""

    data: ConsoleData
    commands: ConsoleCommands
    tokens: TokenBook
    default_account: str


def services(info: Info[Any, Any]) -> Services:
    found: Services = info.context["services"]
    return found


def _token(info: Info[Any, Any]) -> str | None:
    params = info.context.get("connection_params")
    if isinstance(params, dict):  # a WebSocket: browsers cannot set headers, so connection_init carries it
        value = params.get("authorization") or params.get("Authorization") or params.get("token")
        return value if isinstance(value, str) else None
    request = info.context.get("request")
    headers = getattr(request, "headers", None)
    return headers.get("authorization") if headers is not None else None


def principal(info: Info[Any, Any]) -> Principal:
    """Who is asking (ConsoleError UNAUTHENTICATED when the token is missing, unknown or revoked)."""
    return services(info).tokens.authenticate(_token(info))


def allowed(info: Info[Any, Any], permission: str, what: str) -> Principal:
    """Who is asking, if they hold the permission (else ConsoleError FORBIDDEN)."""
    found = principal(info)
    require(found, permission, what)
    return found


def account_of(info: Info[Any, Any], account: str | None) -> str:
    """The account asked about, or the console's default."""
    if account is None:
        return services(info).default_account
    if not account or len(account) > 128:
        raise ConsoleError("INVALID_ARGUMENT", "account: give an account id of 1 to 128 characters", 400)
    return account


async def known_account(info: Info[Any, Any], account: str | None) -> str:
    """The account asked about, if the ledger holds it (ConsoleError NOT_FOUND otherwise: a typo
    must never be halted, nor grow the console's cache)."""
    account_id = account_of(info, account)
    known = await services(info).data.accounts()
    if account_id not in known:
        shown = ", ".join(known[:10]) or "none yet"
        raise ConsoleError("NOT_FOUND", f"no account {account_id!r} in this ledger (accounts: {shown})", 404)
    return account_id
