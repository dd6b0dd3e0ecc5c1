"""Feeding commands to the bus from files and from the CLI's own actions."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from commands.envelope import account_stream
from commands.handlers import Bus, Outcome
from commands.translate import InvalidCommand
from schemas import commands as wire
from schemas.intake import WireInputError, echo, parse_new_command
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
        command_id=init_id(account_id),
        account_id=account_id,
        ts_ns=0,
        actor=INIT_ACTOR,
        policy=default_policy(),
    )
    return bus.handle(command)


def init_id(account_id: str) -> str:
    """`init.<account>` (every ledger so far), or `init.<digest>` for an account id too long for a
    command id (120 characters)."""
    plain = f"init.{account_id}"
    return plain if len(plain) <= 120 else "init." + hashlib.sha256(account_id.encode("utf-8")).hexdigest()


def activate_policy(bus: Bus, account_id: str, document: PolicyDocument, actor: str) -> Outcome:
    """Activate a policy now: the CLI stamps the time of receipt, like the API."""
    ts_ns = stamp_now(bus, account_id)
    command = wire.ActivatePolicy(
        command_id=action_id("activate", account_id),
        account_id=account_id,
        ts_ns=ts_ns,
        actor=actor,
        policy=document,
    )
    return bus.handle(command)


class ParsedLine:
    """One line of a commands file: its number, and the command it holds or why it is invalid."""

    __slots__ = ("command", "invalid", "number")

    def __init__(self, number: int, command: wire.AnyCommand | None, invalid: InvalidLine | None) -> None:
        self.number = number
        self.command = command
        self.invalid = invalid


def parse_lines(lines: Iterable[bytes], *, latest_ts_ns: int | None = None) -> list[ParsedLine]:
    """Read every line before anything is decided (so the writer knows which accounts' leases to
    take). A line is read by `schemas.intake.parse_new_command`: whatever it holds (too long, too
    deep, numbers beyond 64 bits, not UTF-8, not an object, a value outside its bound, a time of
    receipt after `latest_ts_ns`), it is an invalid line naming the field and the bound."""
    parsed: list[ParsedLine] = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            command = parse_new_command(raw)
        except WireInputError as exc:
            parsed.append(ParsedLine(number, None, InvalidLine(number, exc.command_id, list(exc.errors))))
            continue
        if latest_ts_ns is not None and command.ts_ns > latest_ts_ns:
            error = future_stamp_error(command.ts_ns, latest_ts_ns)
            parsed.append(ParsedLine(number, None, InvalidLine(number, command.command_id, [error])))
            continue
        parsed.append(ParsedLine(number, command, None))
    return parsed


def accounts_of(parsed: Iterable[ParsedLine], default_account: str) -> list[str]:
    """The accounts the valid lines write to (the default one first), in order of appearance."""
    accounts = {default_account: None}
    for line in parsed:
        if line.command is not None:
            accounts[line.command.account_id] = None
    return list(accounts)


def decide_lines(bus: Bus, parsed: Iterable[ParsedLine]) -> Iterator[Outcome | InvalidLine]:
    """Decide each valid line in order; an invalid one is reported and never recorded."""
    for line in parsed:
        if line.command is None:
            assert line.invalid is not None
            yield line.invalid
            continue
        try:
            yield bus.handle(line.command)
        except InvalidCommand as exc:
            yield InvalidLine(line.number, line.command.command_id, [{"field": exc.field, "error": echo(str(exc), 300)}])


def submit_lines(bus: Bus, lines: Iterable[bytes], *, latest_ts_ns: int | None = None) -> Iterator[Outcome | InvalidLine]:
    """Validate and decide each JSON line in order (for callers that hold every lease already)."""
    return decide_lines(bus, parse_lines(lines, latest_ts_ns=latest_ts_ns))


OPERATOR_ACTIONS = ("halt", "flatten", "resume", "arm", "disarm")


def operator_action(bus: Bus, account_id: str, action: str, actor: str, reason: str) -> Outcome:
    """An operator's halt, flatten, resume, arm or disarm, stamped with the time of receipt.

    Flatten carries the account's active policy hash: the operator acts under the policy in force.
    """
    ts_ns = stamp_now(bus, account_id)
    common: dict[str, Any] = {
        "command_id": action_id(action, account_id),
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


MAX_TS_NS = 2**63 - 1
MAX_SUBMIT_BYTES = 256 * 1024 * 1024
"""`titan submit` reads its whole input before deciding (to take every account's lease first)."""

MAX_ACCOUNTS_PER_SUBMIT = 32
"""A file may name at most this many accounts: the writer holds one lease (on PostgreSQL one
connection) per account for the whole run."""


def stamp_now(bus: Bus, account_id: str) -> int:
    """The time of receipt for an action the CLI itself issues: now, and never earlier than the
    account's last decided command (SPEC §2: operator actions always take effect), nor past the
    last representable nanosecond (a ledger an earlier titan let reach it can still be halted)."""
    last_ts_ns: int = bus.state(account_id).last_ts_ns
    return min(max(time.time_ns(), last_ts_ns + 1), MAX_TS_NS)


def action_id(action: str, account_id: str) -> str:
    """A CLI action's command id: unique per invocation (the wall clock, not the stamped time, which
    may be clamped), naming the account by a short digest so that any valid account id fits."""
    digest = hashlib.sha256(account_id.encode("utf-8")).hexdigest()[:16]
    return f"{action}.{time.time_ns()}.{digest}"


def future_stamp_error(ts_ns: int, latest_ts_ns: int) -> dict[str, Any]:
    """Why a command stamped after the latest acceptable time of receipt is invalid."""
    return {
        "field": "ts_ns",
        "error": f"{ts_ns} is in the future: a command is stamped when it is received, and this one is "
        f"stamped {(ts_ns - latest_ts_ns) // 1_000_000_000} s past the latest accepted time "
        f"({latest_ts_ns}, this machine's clock plus TITAN_MAX_FUTURE_SKEW_S)",
    }
