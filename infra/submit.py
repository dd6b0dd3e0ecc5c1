"""Feeding commands to the bus from files and from the CLI's own actions."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from commands.envelope import account_stream
from commands.handlers import Bus, Outcome
from commands.translate import InvalidCommand
from schemas import commands as wire
from schemas.intake import WireInputError, echo, load_json, parse_new_command
from schemas.policy import PolicyDocument

DEFAULT_POLICY_PATH = Path(__file__).parent / "policies" / "default.json"
INIT_ACTOR = "titan-init"
ACCOUNT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
"""What schemas.base.Identifier accepts: an account id a lease may be taken for."""


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
    ts_ns = stamp_now(bus, account_id)
    command = wire.ActivatePolicy(
        command_id=f"activate.{account_id}.{ts_ns}",
        account_id=account_id,
        ts_ns=ts_ns,
        actor=actor,
        policy=document,
    )
    return bus.handle(command)


def submit_lines(bus: Bus, lines: Iterable[bytes], *, latest_ts_ns: int | None = None) -> Iterator[Outcome | InvalidLine]:
    """Validate and decide each JSON line in order; invalid lines are reported and skipped.

    A line is read by `schemas.intake.parse_new_command`: whatever it holds (too long, too deep,
    numbers beyond 64 bits, not UTF-8, not an object, a value outside its bound), it is an
    invalid line naming the field and the bound, and the next line is still decided."""
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            command = parse_new_command(raw)
        except WireInputError as exc:
            yield InvalidLine(number, exc.command_id, list(exc.errors))
            continue
        if latest_ts_ns is not None and command.ts_ns > latest_ts_ns:
            yield InvalidLine(number, command.command_id, [future_stamp_error(command.ts_ns, latest_ts_ns)])
            continue
        try:
            yield bus.handle(command)
        except InvalidCommand as exc:
            yield InvalidLine(number, command.command_id, [{"field": exc.field, "error": echo(str(exc), 300)}])


OPERATOR_ACTIONS = ("halt", "flatten", "resume", "arm", "disarm")


def operator_action(bus: Bus, account_id: str, action: str, actor: str, reason: str) -> Outcome:
    """An operator's halt, flatten, resume, arm or disarm, stamped with the time of receipt.

    Flatten carries the account's active policy hash: the operator acts under the policy in force.
    """
    ts_ns = stamp_now(bus, account_id)
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


MAX_ACCOUNTS_PER_SUBMIT = 32
"""A file may name at most this many accounts: the writer holds one lease (on PostgreSQL one
connection) per account for the whole run."""


def accounts_named(lines: Iterable[bytes], default_account: str) -> list[str]:
    """The accounts a file of commands writes to (the default one first), in order of appearance:
    the writer takes each one's lease before deciding anything. Lines that are not JSON objects
    with a text `account_id` name none (they will be reported invalid, and write nothing)."""
    accounts = {default_account: None}
    for raw in lines:
        account_id = _account_of(raw)
        if account_id is not None:
            accounts[account_id] = None
    return list(accounts)


def _account_of(raw: bytes) -> str | None:
    if raw.find(b'"account_id"') < 0:
        return None
    try:
        value = load_json(raw)
    except WireInputError:
        return None
    account_id = value.get("account_id") if isinstance(value, dict) else None
    if not isinstance(account_id, str) or ACCOUNT_ID.fullmatch(account_id) is None:
        return None
    return account_id


def stamp_now(bus: Bus, account_id: str) -> int:
    """The time of receipt for an action the CLI itself issues: now, and never earlier than the
    account's last decided command (SPEC §2: operator actions always take effect)."""
    last_ts_ns: int = bus.state(account_id).last_ts_ns
    return max(time.time_ns(), last_ts_ns + 1)


def future_stamp_error(ts_ns: int, latest_ts_ns: int) -> dict[str, Any]:
    """Why a command stamped after the latest acceptable time of receipt is invalid."""
    return {
        "field": "ts_ns",
        "error": f"{ts_ns} is in the future: a command is stamped when it is received, and this one is "
        f"stamped {(ts_ns - latest_ts_ns) // 1_000_000_000} s past the latest accepted time "
        f"({latest_ts_ns}, this machine's clock plus TITAN_MAX_FUTURE_SKEW_S)",
    }
