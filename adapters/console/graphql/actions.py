"""Operator and risk actions: halt, flatten, resume, arm, disarm, activatePolicy, dlqReplay,
dlqPurge. Each needs a reason, is checked against the caller's roles, and goes through the same
bus as every other command, stamped on receipt, with the token's subject as the actor; it returns
the recorded outcome. Nothing is recorded for a refused call."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable
from typing import Annotated, Any, Final

import orjson
import strawberry
from pydantic import ValidationError
from strawberry.types import Info

from schemas import commands as wire
from schemas.intake import WireInputError, parse_new_policy
from schemas.intake import errors_of as validation_errors

from ..auth import DLQ, OPERATE, POLICY
from ..ports import ConsoleError, Stamp
from .context import allowed, known_account, services
from .scalars import JSON, BigInt

MAX_POLICY_BYTES: Final = 1_000_000
MAX_ENTRIES: Final = 100

COMMAND_ID: Any = strawberry.argument(
    description="Your own id for this action (letters, digits and . _ : @ -, at most 120): sending it again "
    "is answered with the original outcome (`duplicate`) instead of acting twice. Default: a fresh id."
)


@strawberry.type
class EventRef:
    type: str
    event_id: str


@strawberry.type(description="What was decided and recorded for the action.")
class ActionOutcome:
    command_id: str
    outcome: str = strawberry.field(description="accepted, rejected or duplicate.")
    reason: str | None = strawberry.field(description="The reason code when rejected.")
    events: list[EventRef]
    position: BigInt | None

    @classmethod
    def from_json(cls, outcome: dict[str, Any]) -> ActionOutcome:
        return cls(
            command_id=outcome["command_id"],
            outcome=outcome["outcome"],
            reason=outcome.get("reason"),
            events=[EventRef(type=e["type"], event_id=e["event_id"]) for e in outcome.get("events") or []],
            position=outcome.get("position"),
        )


@strawberry.type(description="A dead letter published again on its original subject.")
class DlqReplayed:
    entry_id: str
    subject: str
    seq: BigInt
    resigned_as: str | None


@strawberry.type(description="A purge: the recorded purge_dlq.v1, then what was removed from TITAN_DLQ.")
class DlqPurged:
    outcome: ActionOutcome
    removed: JSON = strawberry.field(description="entry id -> messages removed from TITAN_DLQ.")


def action_id(action: str, account_id: str) -> str:
    """A console action's command id: unique per call, naming the account by a short digest."""
    digest = hashlib.sha256(account_id.encode("utf-8")).hexdigest()[:12]
    return f"console.{action}.{time.time_ns()}.{uuid.uuid4().hex[:8]}.{digest}"


def reason_of(reason: str) -> str:
    text = reason.strip()
    if not text:
        raise ConsoleError("REASON_REQUIRED", "reason: say why (1 to 1000 characters); it is recorded with your name", 400)
    if len(text) > 1000:
        raise ConsoleError("INVALID_ARGUMENT", "reason: at most 1000 characters", 400)
    return text


def _build(make: Callable[[], wire.AnyCommand]) -> wire.AnyCommand:
    try:
        return make()
    except ValidationError as exc:
        errors = "; ".join(f"{e['field']}: {e['error']}" for e in validation_errors(exc, "(command)"))
        raise ConsoleError("INVALID_ARGUMENT", errors, 400) from None


async def _operator(
    info: Info[Any, Any], action: str, kind: type[Any], account: str | None, reason: str, command_id: str | None
) -> ActionOutcome:
    who = allowed(info, OPERATE, action)
    account_id = await known_account(info, account)
    why = reason_of(reason)

    def make(stamp: Stamp) -> wire.AnyCommand:
        fields: dict[str, Any] = {
            "command_id": command_id or action_id(action, account_id),
            "account_id": account_id,
            "ts_ns": stamp.ts_ns,
            "actor": who.subject,
            "reason": why,
        }
        if kind is wire.Flatten:
            fields["policy_hash"] = stamp.policy_hash
        return _build(lambda: kind(**fields))

    return ActionOutcome.from_json(await services(info).commands.submit(account_id, make))


@strawberry.type
class ActionsMutation:
    @strawberry.mutation(description="Halt the account: no new risk until resumed (operator).")
    async def halt(
        self, info: Info[Any, Any], reason: str, account: str | None = None, command_id: Annotated[str | None, COMMAND_ID] = None
    ) -> ActionOutcome:
        return await _operator(info, "halt", wire.Halt, account, reason, command_id)

    @strawberry.mutation(description="Close every position at market (operator).")
    async def flatten(
        self, info: Info[Any, Any], reason: str, account: str | None = None, command_id: Annotated[str | None, COMMAND_ID] = None
    ) -> ActionOutcome:
        return await _operator(info, "flatten", wire.Flatten, account, reason, command_id)

    @strawberry.mutation(description="Leave HALTED (operator).")
    async def resume(
        self, info: Info[Any, Any], reason: str, account: str | None = None, command_id: Annotated[str | None, COMMAND_ID] = None
    ) -> ActionOutcome:
        return await _operator(info, "resume", wire.Resume, account, reason, command_id)

    @strawberry.mutation(description="Arm the account for live orders (operator).")
    async def arm(
        self, info: Info[Any, Any], reason: str, account: str | None = None, command_id: Annotated[str | None, COMMAND_ID] = None
    ) -> ActionOutcome:
        return await _operator(info, "arm", wire.Arm, account, reason, command_id)

    @strawberry.mutation(description="Disarm the account (operator).")
    async def disarm(
        self, info: Info[Any, Any], reason: str, account: str | None = None, command_id: Annotated[str | None, COMMAND_ID] = None
    ) -> ActionOutcome:
        return await _operator(info, "disarm", wire.Disarm, account, reason, command_id)

    @strawberry.mutation(description="Activate a risk policy document (risk).")
    async def activate_policy(
        self, info: Info[Any, Any], policy: JSON, reason: str, account: str | None = None, command_id: Annotated[str | None, COMMAND_ID] = None
    ) -> ActionOutcome:
        who = allowed(info, POLICY, "activatePolicy")
        account_id = await known_account(info, account)
        why = reason_of(reason)
        try:
            raw = orjson.dumps(policy)
        except (orjson.JSONEncodeError, RecursionError, TypeError) as error:
            raise ConsoleError("POLICY_INVALID", f"policy: not a JSON document titan can read ({error})", 400) from None
        if len(raw) > MAX_POLICY_BYTES:
            raise ConsoleError("POLICY_INVALID", f"policy: at most {MAX_POLICY_BYTES} bytes of JSON", 400)
        try:
            document = parse_new_policy(raw)
        except WireInputError as exc:
            raise ConsoleError("POLICY_INVALID", f"policy: not a valid titan policy: {exc}", 400) from None

        def make(stamp: Stamp) -> wire.AnyCommand:
            return _build(
                lambda: wire.ActivatePolicy(
                    command_id=command_id or action_id("activate", account_id),
                    account_id=account_id,
                    ts_ns=stamp.ts_ns,
                    actor=who.subject,
                    policy=document,
                )
            )

        commands = services(info).commands
        outcome = ActionOutcome.from_json(await commands.submit(account_id, make))
        # activate_policy.v1 has no reason field: the reason is kept in the console's log.
        commands.audit(f"{who.subject} activatePolicy {outcome.command_id} on {account_id} ({outcome.outcome}): {why!r}")
        return outcome

    @strawberry.mutation(description="Publish dead letters again on their original subjects, through intake (operator).")
    async def dlq_replay(self, info: Info[Any, Any], entry_ids: list[str], reason: str) -> list[DlqReplayed]:
        who = allowed(info, DLQ, "dlqReplay")
        why = reason_of(reason)
        wanted = _entry_ids(entry_ids)
        published = await services(info).commands.dlq_replay(wanted, who.subject, why)
        return [
            DlqReplayed(entry_id=p["entry_id"], subject=p["subject"], seq=p["seq"], resigned_as=p.get("resigned_as")) for p in published
        ]

    @strawberry.mutation(description="Record a purge of dead letters in the ledger, then remove them (operator).")
    async def dlq_purge(self, info: Info[Any, Any], entry_ids: list[str], reason: str, account: str | None = None) -> DlqPurged:
        who = allowed(info, DLQ, "dlqPurge")
        account_id = await known_account(info, account)
        why = reason_of(reason)
        wanted = _entry_ids(entry_ids)
        result = await services(info).commands.dlq_purge(account_id, wanted, who.subject, why)
        return DlqPurged(outcome=ActionOutcome.from_json(result["outcome"]), removed=JSON(result.get("removed") or {}))


def _entry_ids(entry_ids: list[str]) -> list[str]:
    wanted = list(dict.fromkeys(entry_ids))
    if not wanted or len(wanted) > MAX_ENTRIES or any(not e or len(e) > 128 for e in wanted):
        raise ConsoleError("INVALID_ARGUMENT", f"entryIds: give 1 to {MAX_ENTRIES} entry ids (titan.dlq.v1 entry_id)", 400)
    return wanted
