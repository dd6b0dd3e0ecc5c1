"""Ledger envelopes (SPEC §2) for decided events and for the command record."""

from __future__ import annotations

from typing import Any

from schemas import commands as wire

COMMAND_RECORDED = "command.recorded.v1"
ACCOUNT_PREFIX = "account-"


def account_stream(account_id: str) -> str:
    """The aggregate's stream id."""
    return f"{ACCOUNT_PREFIX}{account_id}"


def command_stream(command_id: str) -> str:
    """The command record's stream id (version 1 only: the key refuses a second record)."""
    return f"command-{command_id}"


def event_id(command_id: str, index: int) -> str:
    """Event ids derive from the command id, so a re-decision reproduces them."""
    return f"{command_id}.{index}"


def _risk_origin(command: wire.AnyCommand) -> tuple[str | None, int | None]:
    if isinstance(command, wire.RiskCommandBase):
        return command.intent_id, command.phase_id
    return None, None


def envelope(
    command: wire.AnyCommand,
    *,
    stream_id: str,
    version: int,
    type_name: str,
    ts_ns: int,
    event_id: str,
    causation_id: str | None,
    policy_hash: str,
    data: dict[str, Any],
) -> dict[str, Any]:
    """The envelope of one record, without prev_hash and hash (the ledger seals those)."""
    intent_id, phase_id = _risk_origin(command)
    return {
        "event_id": event_id,
        "stream_id": stream_id,
        "version": version,
        "type": type_name,
        "ts_ns": ts_ns,
        "command_id": command.command_id,
        "correlation_id": command.correlation_id,
        "causation_id": causation_id,
        "intent_id": intent_id,
        "phase_id": phase_id,
        "actor": command.actor,
        "policy_hash": policy_hash or None,
        "data": data,
    }


def command_record_data(
    command: wire.AnyCommand, outcome: str, reason: str, event_ids: list[str], event_types: list[str]
) -> dict[str, Any]:
    """The command record: the command as received, its outcome and the events it produced."""
    return {
        "command": command.model_dump(mode="json"),
        "outcome": outcome,
        "reason": reason or None,
        "event_ids": event_ids,
        "event_types": event_types,
    }
