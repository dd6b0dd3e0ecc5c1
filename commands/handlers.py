"""Deciding a command and recording it: the execution aggregate's one handler, and the bus."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from schemas import commands as wire

from .accounts import AccountCache
from .envelope import (
    COMMAND_RECORDED,
    account_stream,
    command_record_data,
    command_stream,
    envelope,
    event_id,
)
from .ports import Ledger, LedgerError, NewRecord, Record, VersionConflict
from .translate import to_core

MAX_ATTEMPTS = 5


class Outcome:
    """What happened to one command (SPEC §8 `titan submit` line)."""

    __slots__ = ("command_id", "events", "outcome", "position", "reason")

    def __init__(
        self, command_id: str, outcome: str, reason: str | None, events: list[dict[str, str]], position: int
    ) -> None:
        self.command_id = command_id
        self.outcome = outcome
        self.reason = reason
        self.events = events
        self.position = position

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form."""
        return {
            "command_id": self.command_id,
            "outcome": self.outcome,
            "reason": self.reason,
            "events": self.events,
            "position": self.position,
        }


class Context:
    """What a handler needs: the ledger, the core and the account cache (bound in bootstrap)."""

    def __init__(self, ledger: Ledger, core: Any) -> None:
        self.ledger = ledger
        self.core = core
        self.accounts = AccountCache(core, ledger)


class Decision:
    """One command decided against a state: the records to append and the state after them."""

    __slots__ = ("events", "outcome", "reason", "records", "state")

    def __init__(self, records: list[NewRecord], state: Any, outcome: str, reason: str, events: int) -> None:
        self.records = records
        self.state = state
        self.outcome = outcome
        self.reason = reason
        self.events = events


def decide_records(command: wire.AnyCommand, state: Any, version: int, core: Any) -> Decision:
    """Decide a command against an account state at a stream version, and build its records:
    the events (envelopes without hashes) followed by the command record. Pure: the live handler,
    the group-commit writer and `titan replay verify` all build records through this one function.
    """
    stream_id = account_stream(command.account_id)
    record_stream = command_stream(command.command_id)
    events = core.decider.decide(to_core(command, core), state)
    reason = core.decider.refusal_reason(events)
    records: list[NewRecord] = []
    new_state = state
    for index, event in enumerate(events):
        type_name = event.type_name()
        records.append(
            NewRecord(
                stream_id,
                version + index + 1,
                type_name,
                envelope(
                    command,
                    stream_id=stream_id,
                    version=version + index + 1,
                    type_name=type_name,
                    ts_ns=event.ts_ns,
                    event_id=event_id(command.command_id, index),
                    causation_id=command.command_id,
                    policy_hash=state.policy_hash,
                    data=event.to_data(),
                ),
            )
        )
        new_state = core.decider.evolve(new_state, event)
    ids = [r.envelope["event_id"] for r in records]
    types = [r.type for r in records]
    outcome = "rejected" if reason else "accepted"
    records.append(
        NewRecord(
            record_stream,
            1,
            COMMAND_RECORDED,
            envelope(
                command,
                stream_id=record_stream,
                version=1,
                type_name=COMMAND_RECORDED,
                ts_ns=command.ts_ns,
                event_id=f"{command.command_id}.cmd",
                causation_id=command.causation_id,
                policy_hash=state.policy_hash,
                data=command_record_data(command, outcome, reason, ids, types),
            ),
        )
    )
    return Decision(records, new_state, outcome, reason, len(events))


def handle_account_command(command: wire.AnyCommand, ctx: Context) -> Outcome:
    """Decide a command against its account and append its events and command record atomically.

    A command id already recorded returns the original outcome and appends nothing.
    """
    record_stream = command_stream(command.command_id)
    for _attempt in range(MAX_ATTEMPTS):
        previous = ctx.ledger.read_stream(record_stream)
        if previous:
            return duplicate_outcome(previous[0])
        state, version = ctx.accounts.current(command.account_id, account_stream(command.account_id))
        decision = decide_records(command, state, version, ctx.core)
        try:
            sealed = ctx.ledger.append(decision.records)
        except VersionConflict:
            continue  # another writer got there first: catch up and decide again
        ctx.accounts.store(command.account_id, decision.state, version + decision.events)
        refs = [{"type": r.type, "event_id": r.envelope["event_id"]} for r in sealed[:-1]]
        return Outcome(command.command_id, decision.outcome, decision.reason or None, refs, sealed[-1].position)
    raise LedgerError(
        f"command {command.command_id} was not recorded: {account_stream(command.account_id)} changed "
        f"under this writer {MAX_ATTEMPTS} times in a row (another writer without the account's lease?)"
    )


def duplicate_outcome(record: Record) -> Outcome:
    """The original outcome of a command already recorded."""
    data = record.envelope["data"]
    refs = [{"type": t, "event_id": i} for i, t in zip(data["event_ids"], data["event_types"], strict=True)]
    return Outcome(record.envelope["command_id"], "duplicate", data["reason"], refs, record.position)


Handler = Callable[[wire.AnyCommand, Context], Outcome]

HANDLERS: dict[type[wire.CommandBase], Handler] = {model: handle_account_command for model in wire.COMMAND_MODELS}
"""Every command type and its handler; all decide on the execution aggregate of their account."""


class Bus:
    """Hands each command to its handler. Entry points (CLI, API, NATS intake) only call this."""

    def __init__(self, ctx: Context, handlers: dict[type[wire.CommandBase], Handler]) -> None:
        self.ctx = ctx
        self._handlers = handlers

    def handle(self, command: wire.AnyCommand) -> Outcome:
        """Decide and record one command."""
        return self._handlers[type(command)](command, self.ctx)

    def state(self, account_id: str) -> Any:
        """The account's current state (caught up with the ledger)."""
        state, _ = self.ctx.accounts.current(account_id, account_stream(account_id))
        return state
