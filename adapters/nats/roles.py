"""Issuer roles: which commands each signer may send (docs/signing.md, "Roles").

A signature proves who sent a command; a role says whether that signer may send it at all. Each
kind of fact has one writer: only execution records what a venue did (acks, rejects, fills,
cancels, truth snapshots), only powerlaw records tail risk, only the console halts, arms or
activates a policy, and a phase places and cancels its own orders. So a leaked phase key can place
orders for that phase within the risk limits, but can never record a fill, move the regime or
disarm the account. The ledger's `actor` names the signer (below), so an audit reads who did what
without trusting the payload's word for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

from .signing import ISSUERS, OUT_OF_ROLE, Refused

_PHASE_COMMANDS: Final = frozenset({"place_order.v1", "cancel_order.v1"})

ROLE_COMMANDS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "phase1": _PHASE_COMMANDS,
        "phase2": _PHASE_COMMANDS,
        "phase3": _PHASE_COMMANDS,
        "execution": frozenset(
            {
                "record_order_ack.v1",
                "record_venue_reject.v1",
                "record_fill.v1",
                "record_cancelled.v1",
                "record_truth_snapshot.v1",
            }
        ),
        "powerlaw": frozenset({"record_tail_risk.v1", "set_regime.v1"}),
        "quant": frozenset({"set_regime.v1"}),
        "console": frozenset(
            {
                "halt.v1",
                "flatten.v1",
                "resume.v1",
                "arm.v1",
                "disarm.v1",
                "activate_policy.v1",
                "cancel_order.v1",
                "purge_dlq.v1",
            }
        ),
    }
)
"""Issuer -> the command types (`place_order.v1`) it may send; every issuer has an entry."""

PHASE_ISSUERS: Mapping[str, int] = MappingProxyType({"phase1": 1, "phase2": 2, "phase3": 3})
"""A phase issuer and the only `phase_id` its orders may carry."""

OPERATOR: Final = "console"
"""The one issuer whose `actor` is free: it names the operator at the console, not a service."""

ACTOR_SEPARATORS: Final = "-:./@"
"""What may follow the issuer's name in an actor: `phase1-scavenger`, `execution:paper`."""

def check_role(issuer: str, command_type: str, payload: Mapping[str, Any]) -> None:
    """Raise Refused(OUT_OF_ROLE) unless `issuer` may send this command: its type is in the
    issuer's role, a phase places orders for its own phase only, and (but for the console) the
    command's `actor` is the issuer or starts with it and a separator."""
    allowed = ROLE_COMMANDS.get(issuer)
    if allowed is None:
        raise Refused(OUT_OF_ROLE, f"issuer {issuer[:64]!r} has no role; issuers are {', '.join(ISSUERS)}")
    if command_type not in allowed:
        raise Refused(
            OUT_OF_ROLE,
            f"{issuer} may not send {command_type[:64]!r}; it may send {', '.join(sorted(allowed))}",
        )
    phase = PHASE_ISSUERS.get(issuer)
    if phase is not None and command_type == "place_order.v1":
        phase_id = payload.get("phase_id")
        # JSON's `true` decodes to a bool, which Python counts as 1: not a phase id.
        if isinstance(phase_id, bool) or phase_id != phase:
            raise Refused(
                OUT_OF_ROLE,
                f"{issuer} places orders for phase {phase} only; this one has phase_id {_shown(phase_id)}",
            )
    if issuer == OPERATOR:
        return
    actor = payload.get("actor")
    if not isinstance(actor, str) or not _names(actor, issuer):
        raise Refused(
            OUT_OF_ROLE,
            f"the actor of a command signed by {issuer} is {issuer} or starts with {issuer} and one of "
            f"{' '.join(ACTOR_SEPARATORS)} (e.g. {issuer}-worker); this one is {_shown(actor)}",
        )


def _names(actor: str, issuer: str) -> bool:
    """Whether the actor is the issuer itself or one of its parts (`phase1` but not `phase10`)."""
    if actor == issuer:
        return True
    return actor.startswith(issuer) and len(actor) > len(issuer) and actor[len(issuer)] in ACTOR_SEPARATORS


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 64 else text[:64] + "…"
