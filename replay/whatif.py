"""`titan replay what-if --policy FILE`: the recorded commands decided again under another policy.

Nothing is written. The recorded commands are streamed in position order and, per account:

- before `--from` the account's state is the recorded one (its events folded, as recorded);
- at its first command at or after `--from`, the what-if policy replaces the active one: it is
  activated on the what-if state by the core itself (an `ActivatePolicy` decided like any other,
  so a policy that would change the scale of an instrument the account holds is refused with
  `POLICY_SCALE_CHANGE`, exactly as it would be live);
- every later command is decided by the core against the what-if state, through `decide_records`.

Policy hashes. A risk command (`PlaceOrder`, `Flatten`) carries the hash of the policy its issuer
built it under. A command that carried the hash active at that moment in the ledger is treated
as carrying the what-if policy's hash — the issuer was following the active policy, whichever it
was — so the comparison shows risk differences, not a wall of `POLICY_HASH_MISMATCH`. A command
that carried any other hash (already a mismatch in the ledger) keeps it.

Recorded `ActivatePolicy` commands after the what-if policy took over are not applied (the what-if
policy stays in force for the whole window); they are listed as superseded. An account with no
policy yet at `--from` gets the what-if document instead of its first recorded activation.

A command's outcome changes when accepted/rejected or the reason code differs. For each change
the report names the checks whose verdict differs (name, value, limit, before and after). A change
to an order's placement usually changes its venue reports too (a fill for an order that would not
exist is `UNKNOWN_ORDER`): those are flagged `consequence_of` the placement.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from commands.accounts import fold
from commands.envelope import COMMAND_RECORDED
from commands.handlers import decide_records
from commands.ports import Ledger, Record
from commands.translate import InvalidCommand
from schemas import commands as wire
from schemas.policy import PolicyDocument, policy_hash

from .points import POSITION, Point
from .state_at import ReplayInputError
from .verify import ACCOUNT_PREFIX, COMMAND_PREFIX

WHAT_IF_ACTOR = "titan-what-if"


def _checks(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    for data in records:
        checks = data.get("checks")
        if isinstance(checks, list):
            return {str(c.get("check")): c for c in checks if isinstance(c, dict)}
    return {}


def _fails(check: dict[str, Any] | None) -> bool:
    return check is not None and check.get("verdict") == "fail"


def check_changes(was: list[dict[str, Any]], would: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The checks that fail in one decision and not in the other (a check absent from a decision
    did not fail in it)."""
    before, after = _checks(was), _checks(would)
    changes = []
    for name in list(before) + [n for n in after if n not in before]:
        b, a = before.get(name), after.get(name)
        if _fails(b) == _fails(a):
            continue  # a check that only appears, or passes both ways, did not change the outcome
        changes.append(
            {
                "check": name,
                "was": None if b is None else {k: b.get(k) for k in ("value", "limit", "verdict")},
                "would_be": None if a is None else {k: a.get(k) for k in ("value", "limit", "verdict")},
            }
        )
    return changes


def _detail(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    for data in records:
        detail = data.get("detail")
        if isinstance(detail, dict):
            return detail
    return None


def _order_id(command: wire.AnyCommand) -> str | None:
    if isinstance(command, wire.PlaceOrder):
        return "ord-" + command.command_id
    return getattr(command, "order_id", None)


@dataclass
class _Account:
    state: Any
    version: int
    recorded_hash: str = ""
    switched: bool = False


@dataclass
class WhatIfReport:
    """Every command whose outcome would change, and totals."""

    policy_id: str
    policy_hash: str
    start: Point | None
    until: Point | None
    considered: int = 0
    changes: list[dict[str, Any]] = field(default_factory=list)
    superseded: list[dict[str, Any]] = field(default_factory=list)
    activations: list[dict[str, Any]] = field(default_factory=list)
    transitions: Counter[str] = field(default_factory=Counter)
    would_be_reasons: Counter[str] = field(default_factory=Counter)
    consequential: int = 0

    def totals(self) -> dict[str, Any]:
        """Counts of the report."""
        return {
            "commands_considered": self.considered,
            "outcomes_changed": len(self.changes),
            "direct": len(self.changes) - self.consequential,
            "consequential": self.consequential,
            "by_transition": dict(sorted(self.transitions.items())),
            "would_be_reasons": dict(sorted(self.would_be_reasons.items())),
            "superseded_policy_activations": len(self.superseded),
        }

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""

        def point(p: Point | None) -> dict[str, Any] | None:
            return None if p is None else {"kind": p.kind, "value": p.value, "text": p.text}

        return {
            "policy_id": self.policy_id,
            "policy_hash": self.policy_hash,
            "from": point(self.start),
            "until": point(self.until),
            "totals": self.totals(),
            "what_if_activations": self.activations,
            "changes": self.changes,
            "superseded_policy_activations": self.superseded,
        }


def _in_window(point: Point | None, position: int, ts_ns: int, *, start: bool) -> bool:
    if point is None:
        return True
    value = position if point.kind == POSITION else ts_ns
    return value >= point.value if start else value <= point.value


class WhatIf:
    """One streaming pass (see the module docstring)."""

    def __init__(
        self, ledger: Ledger, core: Any, policy: PolicyDocument, start: Point | None, until: Point | None
    ) -> None:
        self.ledger = ledger
        self.core = core
        self.policy = policy
        self.hash = policy_hash(policy)
        self.start = start
        self.until = until
        self.accounts: dict[str, _Account] = {}
        self.pending: dict[str, Record] = {}
        self.changed_orders: dict[str, str] = {}
        self.report = WhatIfReport(str(policy.policy_id), self.hash, start, until)

    def run(self, progress: Callable[[int], None] | None = None) -> WhatIfReport:
        head = self.ledger.head()[0]
        if self.until is not None and self.until.kind == POSITION and self.until.value > head:
            raise ReplayInputError(f"--until position {self.until.value} is beyond the ledger's head (position {head})")
        if self.start is not None and self.start.kind == POSITION and self.start.value > head:
            raise ReplayInputError(f"--from position {self.start.value} is beyond the ledger's head (position {head})")
        for read, record in enumerate(self.ledger.iter_all(0, 2000), start=1):
            if record.position > head:
                break
            if self.until is not None and self.until.kind == POSITION and record.position > self.until.value:
                break
            if progress is not None and read % 2000 == 0:
                progress(read)
            if record.stream_id.startswith(ACCOUNT_PREFIX):
                self.pending[str(record.envelope.get("event_id"))] = record
            elif record.type == COMMAND_RECORDED and record.stream_id.startswith(COMMAND_PREFIX):
                self._command(record)
        return self.report

    def _account(self, account_id: str) -> _Account:
        account = self.accounts.get(account_id)
        if account is None:
            account = self.accounts[account_id] = _Account(self.core.decider.initial_state(account_id), 0)
        return account

    def _command(self, record: Record) -> None:
        data = record.envelope.get("data") or {}
        events = [self.pending.pop(event_id) for event_id in data.get("event_ids") or [] if event_id in self.pending]
        try:
            command = wire.parse_recorded_command(data.get("command"))
        except ValidationError as error:
            raise ReplayInputError(
                f"recorded command {record.envelope.get('command_id')} at position {record.position} does not "
                f"validate any more ({error.error_count()} errors): run `titan replay verify`"
            ) from error
        account = self._account(command.account_id)
        ts_ns = int(record.envelope.get("ts_ns", 0))
        within = _in_window(self.start, record.position, ts_ns, start=True) and _in_window(
            self.until, record.position, ts_ns, start=False
        )
        if not within:
            if not account.switched:
                # Not yet in the window: the account is as recorded.
                account.state = fold(self.core, account.state, events)
                account.version += len(events)
            self._track_recorded_hash(account, events)
            return
        self.report.considered += 1
        if not account.switched and account.state.policy is not None:
            self._switch(account, command, record)
        if isinstance(command, wire.ActivatePolicy):
            self._track_recorded_hash(account, events)
            if account.switched:
                self.report.superseded.append(
                    {
                        "command_id": command.command_id,
                        "position": record.position,
                        "actor": command.actor,
                        "policy_id": command.policy.policy_id,
                        "policy_hash": policy_hash(command.policy),
                        "recorded_outcome": data.get("outcome"),
                    }
                )
                return
            command = command.model_copy(update={"policy": self.policy})
            account.switched = True
        elif isinstance(command, wire.RiskCommandBase) and command.policy_hash == account.recorded_hash:
            command = command.model_copy(update={"policy_hash": self.hash})
        self._track_recorded_hash(account, events)
        self._decide(account, command, record, events)

    def _track_recorded_hash(self, account: _Account, events: list[Record]) -> None:
        for event in events:
            if event.type == "policy.activated.v1":
                account.recorded_hash = str(event.envelope["data"].get("policy_hash"))

    def _switch(self, account: _Account, command: wire.AnyCommand, record: Record) -> None:
        state = account.state
        activation = wire.ActivatePolicy(
            command_id=f"what-if.{command.account_id}",
            account_id=command.account_id,
            ts_ns=max(int(state.last_ts_ns), 0),
            actor=WHAT_IF_ACTOR,
            policy=self.policy,
        )
        decision = decide_records(activation, state, account.version, self.core)
        entry = {
            "account_id": command.account_id,
            "before_position": record.position,
            "outcome": decision.outcome,
            "reason": decision.reason or None,
            "replaced_policy_hash": state.policy_hash or None,
        }
        self.report.activations.append(entry)
        if decision.reason and decision.reason != "POLICY_ALREADY_ACTIVE":
            detail = _detail([r.envelope["data"] for r in decision.records[:-1]])
            raise ReplayInputError(
                f"the what-if policy cannot replace the active one on account {command.account_id!r} before "
                f"position {record.position}: {decision.reason} {detail or ''}".rstrip()
            )
        account.state = decision.state
        account.version += decision.events
        account.switched = True

    def _decide(self, account: _Account, command: wire.AnyCommand, record: Record, events: list[Record]) -> None:
        data = record.envelope.get("data") or {}
        try:
            decision = decide_records(command, account.state, account.version, self.core)
        except InvalidCommand as error:
            raise ReplayInputError(f"recorded command {command.command_id} cannot be decided: {error}") from error
        account.state = decision.state
        account.version += decision.events
        was_outcome, was_reason = data.get("outcome"), data.get("reason")
        would_reason = decision.reason or None
        if (was_outcome, was_reason) == (decision.outcome, would_reason):
            return
        was_data = [e.envelope.get("data") or {} for e in events]
        would_data = [r.envelope["data"] for r in decision.records[:-1]]
        order_id = _order_id(command)
        consequence_of = None
        if isinstance(command, wire.PlaceOrder):
            self.changed_orders[order_id or ""] = command.command_id
        elif order_id is not None and order_id in self.changed_orders:
            consequence_of = self.changed_orders[order_id]
            self.report.consequential += 1
        transition = f"{was_outcome}→{decision.outcome}"
        if was_outcome == decision.outcome:
            transition += " (reason changed)"
        self.report.transitions[transition] += 1
        if would_reason:
            self.report.would_be_reasons[would_reason] += 1
        self.report.changes.append(
            {
                "command_id": command.command_id,
                "type": command.type,
                "account_id": command.account_id,
                "position": record.position,
                "ts_ns": command.ts_ns,
                "actor": command.actor,
                "order_id": order_id,
                "was": {"outcome": was_outcome, "reason": was_reason},
                "would_be": {"outcome": decision.outcome, "reason": would_reason},
                "checks": check_changes(was_data, would_data),
                "was_detail": _detail(was_data),
                "would_be_detail": _detail(would_data),
                "consequence_of": consequence_of,
            }
        )


def what_if(
    ledger: Ledger,
    core: Any,
    policy: PolicyDocument,
    start: Point | None = None,
    until: Point | None = None,
    *,
    progress: Callable[[int], None] | None = None,
) -> WhatIfReport:
    """Re-decide the recorded commands under `policy` from `start` on; write nothing."""
    if start is not None and until is not None and start.kind == until.kind and start.value > until.value:
        raise ReplayInputError(f"--from {start.describe()} is after --until {until.describe()}")
    try:
        core.policy.policy_from_document(policy.model_dump(mode="json"))
    except core.policy.PolicyError as error:
        raise ReplayInputError(f"the what-if policy is not usable by the core: {error}") from error
    return WhatIf(ledger, core, policy, start, until).run(progress)
