"""Feeding commands to the bus from files and from the CLI's own actions."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from commands.envelope import account_stream
from commands.handlers import Bus, Outcome
from commands.translate import InvalidCommand
from schemas import commands as wire
from schemas.policy import PolicyDocument

DEFAULT_POLICY_PATH = Path(__file__).parent / "policies" / "default.json"
INIT_ACTOR = "titan-init"


class InvalidLine:
    """A line that was not a valid command: reported, never recorded."""

    def __init__(self, line: int, command_id: str | None, errors: list[dict[str, Any]]) -> None:
        self.line = line
        self.command_id = command_id
        self.errors = errors

    def to_json(self) -> dict[str, Any]:
        """The `titan submit` output line."""
        return {
            "line": self.line,
            "command_id": self.command_id,
            "outcome": "invalid",
            "reason": None,
            "errors": self.errors,
            "events": [],
            "position": None,
        }


def default_policy() -> PolicyDocument:
    """The policy shipped with titan."""
    return PolicyDocument.model_validate_json(DEFAULT_POLICY_PATH.read_bytes())


def ensure_initialized(bus: Bus, account_id: str) -> Outcome | None:
    """Activate the default policy for an account that has no records yet (at time 0)."""
    if bus.ctx.ledger.read_stream(account_stream(account_id)):
        return None
    command = wire.ActivatePolicy(
        command_id=f"init.{account_id}",
        account_id=account_id,
        ts_ns=0,
        actor=INIT_ACTOR,
        policy=default_policy(),
    )
    return bus.handle(command)


def activate_policy(bus: Bus, account_id: str, document: PolicyDocument, actor: str) -> Outcome:
    """Activate a policy now: the CLI stamps the time of receipt, like the API."""
    ts_ns = time.time_ns()
    command = wire.ActivatePolicy(
        command_id=f"activate.{account_id}.{ts_ns}",
        account_id=account_id,
        ts_ns=ts_ns,
        actor=actor,
        policy=document,
    )
    return bus.handle(command)


def _command_id_of(raw: bytes) -> str | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    command_id = value.get("command_id") if isinstance(value, dict) else None
    return command_id if isinstance(command_id, str) else None


def _errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"field": ".".join(str(p) for p in error["loc"]) or "(line)", "error": error["msg"]}
        for error in exc.errors(include_url=False)
    ]


def submit_lines(bus: Bus, lines: Iterable[bytes]) -> Iterator[Outcome | InvalidLine]:
    """Validate and decide each JSON line in order; invalid lines are reported and skipped."""
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            command = wire.COMMANDS.validate_json(raw)
        except ValidationError as exc:
            yield InvalidLine(number, _command_id_of(raw), _errors(exc))
            continue
        try:
            yield bus.handle(command)
        except InvalidCommand as exc:
            yield InvalidLine(number, command.command_id, [{"field": exc.field, "error": str(exc)}])


OPERATOR_ACTIONS = ("halt", "flatten", "resume", "arm", "disarm")


def operator_action(bus: Bus, account_id: str, action: str, actor: str, reason: str) -> Outcome:
    """An operator's halt, flatten, resume, arm or disarm, stamped with the time of receipt.

    Flatten carries the account's active policy hash: the operator acts under the policy in force.
    """
    ts_ns = time.time_ns()
    common: dict[str, Any] = {
        "command_id": f"{action}.{account_id}.{ts_ns}",
        "account_id": account_id,
        "ts_ns": ts_ns,
        "actor": actor,
        "reason": reason,
    }
    command: wire.AnyCommand
    if action == "halt":
        command = wire.Halt(**common)
    elif action == "flatten":
        command = wire.Flatten(**common, policy_hash=bus.state(account_id).policy_hash)
    elif action == "resume":
        command = wire.Resume(**common)
    elif action == "arm":
        command = wire.Arm(**common)
    elif action == "disarm":
        command = wire.Disarm(**common)
    else:
        raise ValueError(f"unknown operator action {action!r}; accepted: {', '.join(OPERATOR_ACTIONS)}")
    return bus.handle(command)
