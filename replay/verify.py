"""`titan replay verify`: the determinism gate (SPEC §2 Determinism, §6).

Every recorded command is decided again, in position order, from an empty state, by each core
(compiled and interpreted), through `commands.handlers.decide_records` — the very function the
live handler builds its records with. Each produced record is sealed onto the recorded chain
(`prev_hash` of the record it should equal) and compared with the ledger field by field: the
envelope, the data, and the hash. The first record that differs stops the gate, naming the
command, the event and the differing fields.

The ledger is streamed: memory holds one state per account and core, the events of the command
being checked, and the chain verifier's per-account-stream versions — never the records.
The hash chain is verified in the same pass; a broken chain makes the gate refuse (replaying a
ledger that may have been altered proves nothing): fix or investigate with `titan ledger verify`.

How records are matched to their command: a command record (`command.recorded.v1`) lists the
ids of the events it produced (`data.event_ids`); those events come before it in position order
(they are appended in the same transaction). Account-stream records are held until the command
record that names them arrives; any left over at the end were produced by no recorded command.

Given the ledger's snapshot store, the gate also proves every stored snapshot (`SnapshotProof`):
when the fold from zero reaches a snapshot's version, the snapshot must pass the trust rule and
hold exactly the bytes of the state there (and its `set_by` the references there); every one that
does not, and every one whose version the ledger never reaches, is a finding and fails the gate.
One listed when the gate began but gone when the fold reaches it (a live writer prunes its old
ones) is counted as removed, not a finding. The gate never starts from a snapshot.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, cast

import orjson
from pydantic import ValidationError

from commands.accounts import fold
from commands.chain import CorruptRecord, seal
from commands.envelope import COMMAND_RECORDED
from commands.handlers import decide_records
from commands.ports import Ledger, LedgerError, NewRecord, Record
from commands.snapshots import (
    SetBy,
    SnapshotInfo,
    SnapshotStore,
    UntrustedSnapshot,
    note_context,
    stored_int,
    trusted,
)
from commands.translate import InvalidCommand
from schemas import commands as wire
from schemas.canonical import canonical_bytes

from .chain import ChainReport, ChainVerifier, stored_body
from .cores import CoreSlot
from .diff import FieldDiff, diff_values
from .projections_hook import ReadSide, check_projections

# Divergence kinds (stable strings in `--json`).
RECORD_DIFFERS: Final = "RECORD_DIFFERS"
EVENT_NOT_REPRODUCED: Final = "EVENT_NOT_REPRODUCED"
EXTRA_EVENT: Final = "EXTRA_EVENT"
INVALID_COMMAND: Final = "INVALID_COMMAND"
UNDECIDABLE_COMMAND: Final = "UNDECIDABLE_COMMAND"
DECIDE_FAILED: Final = "DECIDE_FAILED"
MISSING_EVENT: Final = "MISSING_EVENT"
ORPHAN_EVENT: Final = "ORPHAN_EVENT"
UNEXPLAINED_RECORD: Final = "UNEXPLAINED_RECORD"
PROJECTION_DIGEST: Final = "PROJECTION_DIGEST"
# Snapshot findings (stable strings in `--json`).
SNAPSHOT_UNTRUSTED: Final = "SNAPSHOT_UNTRUSTED"
SNAPSHOT_DIFFERS: Final = "SNAPSHOT_DIFFERS"
SNAPSHOT_UNREACHED: Final = "SNAPSHOT_UNREACHED"
MAX_SNAPSHOT_FINDINGS: Final = 100
"""Findings listed one by one; the count covers them all."""

ACCOUNT_PREFIX: Final = "account-"
COMMAND_PREFIX: Final = "command-"

ProgressFn = Callable[[int], None]


@dataclass(frozen=True)
class Divergence:
    """The first place where the replay and the ledger disagree."""

    kind: str
    message: str
    core: str | None = None
    command_id: str | None = None
    command_type: str | None = None
    account_id: str | None = None
    command_position: int | None = None
    position: int | None = None
    event_id: str | None = None
    recorded_type: str | None = None
    replayed_type: str | None = None
    recorded_outcome: str | None = None
    replayed_outcome: str | None = None
    recorded_reason: str | None = None
    replayed_reason: str | None = None
    diffs: tuple[FieldDiff, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "kind": self.kind,
            "message": self.message,
            "core": self.core,
            "command_id": self.command_id,
            "command_type": self.command_type,
            "account_id": self.account_id,
            "command_position": self.command_position,
            "position": self.position,
            "event_id": self.event_id,
            "recorded_type": self.recorded_type,
            "replayed_type": self.replayed_type,
            "recorded_outcome": self.recorded_outcome,
            "replayed_outcome": self.replayed_outcome,
            "recorded_reason": self.recorded_reason,
            "replayed_reason": self.replayed_reason,
            "diffs": [d.as_dict() for d in self.diffs],
        }


@dataclass
class ReplayReport:
    """What `titan replay verify` found."""

    cores: list[CoreSlot]
    chain: ChainReport | None = None
    divergence: Divergence | None = None
    records: int = 0
    commands: int = 0
    events: int = 0
    accounts: int = 0
    elapsed_s: float = 0.0
    projections: dict[str, Any] | None = None
    chain_broken: bool = False
    snapshots: SnapshotReport | None = None

    @property
    def ok(self) -> bool:
        return (
            not self.chain_broken
            and self.divergence is None
            and (self.snapshots is None or self.snapshots.ok)
        )

    @property
    def cores_run(self) -> list[str]:
        return [slot.kind for slot in self.cores if slot.core is not None]

    @property
    def records_per_second(self) -> float:
        return self.records / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def summary(self) -> str:
        """One line."""
        if self.chain_broken and self.chain is not None:
            return (
                f"refused: the ledger's hash chain is broken at position {self.chain.position} "
                f"({self.chain.code}); run `titan ledger verify`"
            )
        cores = " and ".join(self.cores_run)
        if self.divergence is not None:
            return f"diverged ({self.divergence.kind}): {self.divergence.message}"
        proved = self.snapshots.summary() if self.snapshots is not None else ""
        return (
            f"{self.commands} commands, {self.records} records re-decided identically by the {cores} "
            f"core{'s' if len(self.cores_run) > 1 else ''}" + (f"; {proved}" if proved else "")
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON form (`titan replay verify --json`)."""
        return {
            "ok": self.ok,
            "summary": self.summary(),
            "chain_ok": not self.chain_broken,
            "chain": self.chain.as_dict() if self.chain is not None else None,
            "cores": [slot.as_dict() for slot in self.cores],
            "records": self.records,
            "commands": self.commands,
            "events": self.events,
            "accounts": self.accounts,
            "elapsed_s": round(self.elapsed_s, 3),
            "records_per_second": round(self.records_per_second, 1),
            "divergence": self.divergence.as_dict() if self.divergence is not None else None,
            "projections": self.projections,
            "snapshots": self.snapshots.as_dict() if self.snapshots is not None else None,
        }


@dataclass(frozen=True)
class SnapshotFinding:
    """A stored snapshot the gate could not prove: untrusted, different from the fold, or of a
    version the ledger never reaches."""

    kind: str
    stream_id: str
    version: int
    position: int
    message: str
    code: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "kind": self.kind,
            "code": self.code,
            "stream_id": self.stream_id,
            "version": self.version,
            "position": self.position,
            "message": self.message,
        }


@dataclass
class SnapshotReport:
    """What the gate found of the ledger's stored snapshots."""

    stored: int = 0
    proved: int = 0
    findings: list[SnapshotFinding] = field(default_factory=list)
    finding_count: int = 0
    unchecked: int = 0
    """Snapshots not reached because the gate stopped at a divergence (they prove nothing then)."""
    removed: int = 0
    """Snapshots listed when the gate began but gone from the store when the fold reached them (a
    live writer prunes its old ones): nothing left to prove, and nothing a reader could use."""
    unavailable: str | None = None
    """Why the store could not be read (the gate then proves none)."""

    @property
    def ok(self) -> bool:
        return self.finding_count == 0 and self.unavailable is None

    def summary(self) -> str:
        """A clause for the gate's summary line ("" when there is nothing to say)."""
        if self.unavailable is not None:
            return f"snapshots NOT CHECKED: {self.unavailable}"
        if self.finding_count:
            return f"{self.finding_count} of {self.stored} snapshots NOT proved"
        if not self.stored:
            return ""
        removed = f" ({self.removed} removed while the gate ran)" if self.removed else ""
        return f"{self.proved} snapshots proved{removed}"

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "ok": self.ok,
            "stored": self.stored,
            "proved": self.proved,
            "finding_count": self.finding_count,
            "unchecked": self.unchecked,
            "removed": self.removed,
            "unavailable": self.unavailable,
            "findings": [finding.as_dict() for finding in self.findings],
        }


class SnapshotProof:
    """Proves each stored snapshot against the state the gate's fold reaches at its version."""

    def __init__(self, store: SnapshotStore, ledger: Ledger, core: Any) -> None:
        self.store = store
        self.ledger = ledger
        self.core = core
        self.report = SnapshotReport()
        self.pending: dict[str, deque[SnapshotInfo]] = {}
        self.set_by: dict[str, SetBy] = {}
        try:
            listing = store.listing()
        except LedgerError as error:
            self.report.unavailable = str(error)[:300]
            return
        self.report.stored = len(listing)
        for info in listing:
            self.pending.setdefault(info.stream_id, deque()).append(info)
        for stream_id, infos in self.pending.items():
            self.pending[stream_id] = deque(sorted(infos, key=lambda info: stored_int(info.version)))
            self.set_by[stream_id] = {}

    def after_command(self, stream_id: str, before: tuple[Any, int], events: list[Record], after: Any) -> None:
        """A command re-decided identically: prove the snapshots of its account stream whose
        versions its events reach (the state after each event is the fold's there)."""
        infos = self.pending.get(stream_id)
        if infos is None:
            return
        state, version = before
        set_by = self.set_by[stream_id]
        done = 0  # how many of the command's events `state` and `set_by` have taken in
        while infos and stored_int(infos[0].version) <= version + len(events):
            info = infos.popleft()
            reached = stored_int(info.version) - version
            if reached <= done:  # a version the fold has passed (or none): nothing to prove it by
                self._unreached(info)
                continue
            taken = events[done:reached]
            note_context(set_by, taken)
            state = after if reached == len(events) else fold(self.core, state, taken)
            done = reached
            self._prove(info, state, set_by)
        note_context(set_by, events[done:])

    def finish(self, complete: bool) -> SnapshotReport:
        """The report; the snapshots never reached are findings when the whole ledger was folded."""
        for infos in self.pending.values():
            for info in infos:
                if complete:
                    self._unreached(info)
                else:
                    self.report.unchecked += 1
        self.pending = {}
        return self.report

    def _prove(self, info: SnapshotInfo, state: Any, set_by: SetBy) -> None:
        try:
            snapshot = self.store.get(info.stream_id, info.version)
            if snapshot is None:  # pruned since the listing: a healthy store does that, no finding
                self.report.removed += 1
                return
            found = trusted(self.core, snapshot, self.ledger)
        except UntrustedSnapshot as refused:
            self._find(SNAPSHOT_UNTRUSTED, info, f"fails the trust rule: {refused.message}", refused.code)
            return
        except LedgerError as error:
            self._find(SNAPSHOT_UNTRUSTED, info, f"cannot be read: {str(error)[:300]}", "STORE_UNAVAILABLE")
            return
        expected = canonical_bytes(self.core.snapshot.state_to_snapshot(state))
        if snapshot.state != expected:
            fields = _differing_fields(snapshot.state, expected)
            self._find(
                SNAPSHOT_DIFFERS,
                info,
                f"its state is not the fold's at version {info.version}: it differs in {', '.join(fields) or 'its bytes'}",
                "STATE",
            )
        elif found.set_by != set_by:
            kinds = sorted(set(found.set_by) ^ set(set_by) | {k for k in set_by if found.set_by.get(k) != set_by[k]})
            self._find(
                SNAPSHOT_DIFFERS,
                info,
                f"its set_by is not the fold's at version {info.version}: it differs in {', '.join(kinds)}",
                "SET_BY",
            )
        else:
            self.report.proved += 1

    def _unreached(self, info: SnapshotInfo) -> None:
        self._find(
            SNAPSHOT_UNREACHED,
            info,
            f"the ledger has no record of {str(info.stream_id)[:100]!r} at version {info.version} decided by a "
            "recorded command: nothing it could be proved against",
            None,
        )

    def _find(self, kind: str, info: SnapshotInfo, message: str, code: str | None) -> None:
        self.report.finding_count += 1
        if len(self.report.findings) < MAX_SNAPSHOT_FINDINGS:
            where = f"snapshot of {str(info.stream_id)[:100]!r} at version {info.version} (position {info.position})"
            self.report.findings.append(
                SnapshotFinding(kind, str(info.stream_id), stored_int(info.version), stored_int(info.position), f"{where} {message}", code)
            )


def _differing_fields(stored: bytes, expected: bytes) -> list[str]:
    """The top-level state fields in which two snapshots differ (for the finding's message)."""
    try:
        left, right = orjson.loads(stored), orjson.loads(expected)
    except orjson.JSONDecodeError:
        return []
    if not isinstance(left, dict) or not isinstance(right, dict):
        return []
    return sorted(key for key in set(left) | set(right) if left.get(key) != right.get(key))


class FlatChainVerifier(ChainVerifier):
    """The ledger's chain verifier, forgetting each command stream once checked.

    A command stream has exactly one record (version 1; the primary key refuses a second), so
    remembering its version would only make memory grow with the number of commands.
    """

    def __init__(self, anchor: tuple[int, str, int]) -> None:
        super().__init__(anchor)
        self.command_streams = 0

    def check(self, record: Record) -> bool:
        ok = super().check(record)
        if ok and record.stream_id.startswith(COMMAND_PREFIX):
            del self.last_versions[record.stream_id]
            self.command_streams += 1
        return ok

    def finish(self) -> ChainReport:
        report = super().finish()
        return replace(report, streams_checked=report.streams_checked + self.command_streams)


class _Replayer:
    """Per core: the state and stream version of each account, as re-decided so far."""

    def __init__(self, slot: CoreSlot) -> None:
        self.kind = slot.kind
        self.core: Any = slot.core
        self.accounts: dict[str, tuple[Any, int]] = {}

    def current(self, account_id: str) -> tuple[Any, int]:
        found = self.accounts.get(account_id)
        if found is None:
            return self.core.decider.initial_state(account_id), 0
        return found


def _recorded_outcome(command_record: Record) -> tuple[str | None, str | None]:
    data = command_record.envelope.get("data") or {}
    return data.get("outcome"), data.get("reason")


def _compare(produced: NewRecord, recorded: Record) -> list[FieldDiff]:
    """Compare a produced record, chained onto the recorded one's `prev_hash`, with the recorded
    record; diff them field by field only when they differ.

    The chain verifier has already checked that the recorded state is canonical and that the
    recorded hash is the hash of the state without its `hash` member: so the produced record is
    the recorded one exactly when its canonical encoding (with the recorded `prev_hash`) is those
    stored bytes, and no sealing is needed to tell. When the stored bytes cannot be cut that way,
    or on a difference, the produced record is sealed and compared as a whole, as before.
    """
    recorded_envelope = recorded.envelope
    envelope = produced.envelope
    body = stored_body(recorded.state, recorded_envelope.get("hash"))
    prev_hash = recorded_envelope.get("prev_hash", "")
    if body is not None and "prev_hash" not in envelope and "hash" not in envelope:
        chained = dict(envelope)
        chained["prev_hash"] = prev_hash
        if canonical_bytes(chained) == body:
            return []
    sealed = seal(envelope, prev_hash)
    if sealed["hash"] == recorded_envelope.get("hash"):
        return []
    return diff_values(recorded_envelope, sealed)


class GateRun:
    """One pass of the gate over a ledger (see the module docstring)."""

    def __init__(
        self,
        ledger: Ledger,
        slots: list[CoreSlot],
        progress: ProgressFn | None,
        snapshots: SnapshotStore | None = None,
    ) -> None:
        self.ledger = ledger
        self.slots = slots
        self.replayers = [_Replayer(slot) for slot in slots if slot.core is not None]
        # Snapshots are proved with the first core of this process (the compiled one when loaded).
        self.proof = (
            SnapshotProof(snapshots, ledger, self.replayers[0].core)
            if snapshots is not None and self.replayers
            else None
        )
        self.progress = progress
        self.report = ReplayReport(cores=slots)
        self.pending: dict[str, Record] = {}
        self.accounts: set[str] = set()
        self.remote: _RemoteCore | None = None
        self.dispatched = 0
        """Commands handed to the remote core so far (the index of the next one)."""
        self.divergence_key = 0
        """`dispatched` when this process found its divergence: a remote one before it wins."""
        self.restored: tuple[int, int, int] | None = None
        """The counts (commands, events, accounts) as they stood at a remote divergence."""

    def run(self, batch: int, *, second_process: bool = False) -> ReplayReport:
        began = time.perf_counter()
        if second_process and len(self.replayers) == 2:
            # The last core (the interpreted one) re-decides in a process of its own: `_RemoteCore`.
            self.remote = _RemoteCore.start(self.replayers.pop())
        try:
            self._run(batch)
        finally:
            if self.remote is not None:
                self._finish_remote()
        if self.proof is not None:
            complete = self.report.divergence is None and not self.report.chain_broken
            self.report.snapshots = self.proof.finish(complete)
        self.report.accounts = len(self.accounts) if self.restored is None else self.restored[2]
        self.report.elapsed_s = time.perf_counter() - began
        return self.report

    def _run(self, batch: int) -> None:
        verifier = FlatChainVerifier(self.ledger.head())
        after = 0
        while True:
            after = self._stream(verifier, after, batch)
            if verifier.finding is not None:
                break
            head = self.ledger.head()
            if head == verifier.anchor or head[0] <= after:
                verifier.anchor = head
                break
            verifier.anchor = head  # writers appended while we read: carry on to the new head
        chain = verifier.finish()
        self.report.chain = chain
        self.report.chain_broken = not chain.ok
        if self.remote is not None:
            self._finish_remote()
        if self.report.divergence is None and not self.report.chain_broken and self.pending:
            first = min(self.pending.values(), key=lambda r: r.position)
            self._diverge(
                ORPHAN_EVENT,
                f"{len(self.pending)} account record(s) were produced by no recorded command; the first "
                f"is {first.envelope.get('event_id')!r} ({first.type}) at position {first.position}",
                position=first.position,
                event_id=first.envelope.get("event_id"),
                recorded_type=first.type,
            )

    def _finish_remote(self) -> None:
        """Wait for the remote core; its divergence wins when it comes at an earlier command."""
        remote = self.remote
        assert remote is not None
        self.remote = None
        found = remote.finish()
        if found is None:
            return
        index, divergence, counts = found
        if self.report.divergence is not None and self.divergence_key <= index:
            return
        self._take_remote(divergence, counts)

    def _take_remote(self, divergence: Divergence, counts: tuple[int, int, int]) -> None:
        self.report.divergence = divergence
        self.restored = counts
        self.report.commands, self.report.events = counts[0], counts[1]

    def _stream(self, verifier: FlatChainVerifier, after: int, batch: int) -> int:
        try:
            for record in self.ledger.iter_all(after, batch):
                if record.position > verifier.anchor[0]:
                    verifier.anchor = self.ledger.head()
                if not verifier.check(record):
                    return after
                after = record.position
                self.report.records += 1
                if self.report.divergence is None:
                    self._take(record)
                if self.progress is not None and self.report.records % 1000 == 0:
                    self.progress(self.report.records)
        except CorruptRecord as error:
            verifier.unreadable(error)
        if self.progress is not None:
            self.progress(self.report.records)
        return after

    def _take(self, record: Record) -> None:
        stream_id = record.stream_id
        if record.type == COMMAND_RECORDED and stream_id.startswith(COMMAND_PREFIX):
            self._redecide(record)
        elif stream_id.startswith(ACCOUNT_PREFIX):
            self.pending[str(record.envelope.get("event_id"))] = record
        else:
            self._diverge(
                UNEXPLAINED_RECORD,
                f"record at position {record.position} (stream {stream_id!r}, type {record.type}) is "
                "neither an account event nor a command record: no recorded command explains it",
                position=record.position,
                recorded_type=record.type,
            )

    def _redecide(self, command_record: Record) -> None:
        envelope = command_record.envelope
        data = envelope.get("data") or {}
        command_id = str(envelope.get("command_id"))
        position = command_record.position
        outcome, reason = _recorded_outcome(command_record)
        context: dict[str, Any] = {
            "command_id": command_id,
            "command_position": position,
            "recorded_outcome": outcome,
            "recorded_reason": reason,
        }
        raw = data.get("command")
        context["command_type"] = raw.get("type") if isinstance(raw, dict) else None
        try:
            command = wire.parse_recorded_command(raw)
        except ValidationError as error:
            problems = tuple(
                FieldDiff("data.command." + ".".join(str(p) for p in e["loc"]), e.get("input"), e["msg"])
                for e in error.errors(include_url=False)
            )
            self._diverge(
                INVALID_COMMAND,
                f"command {command_id} (position {position}) no longer validates as a "
                f"{context['command_type']} command: {problems[0].path}: {problems[0].replayed}",
                diffs=problems,
                **context,
            )
            return
        account_id = command.account_id
        context["account_id"] = account_id
        self.accounts.add(account_id)
        recorded: list[Record] = []
        for event_id in data.get("event_ids") or []:
            event = self.pending.pop(event_id, None)
            if event is None:
                self._diverge(
                    MISSING_EVENT,
                    f"command {command_id} (position {position}) lists event {event_id!r}, which is not "
                    "in the ledger before it",
                    event_id=event_id,
                    **context,
                )
                return
            recorded.append(event)
        recorded.append(command_record)
        self.report.commands += 1
        self.report.events += len(recorded) - 1
        if self.remote is not None:
            found = self.remote.poll()  # only commands before this one were dispatched
            if found is not None:
                self._remote_diverged(*found)
                return
            counts = (self.report.commands, self.report.events, len(self.accounts))
            self.remote.send(self.dispatched, context, recorded, counts)
            self.dispatched += 1
        before = self.replayers[0].current(account_id) if self.proof is not None else None
        for replayer in self.replayers:
            if not self._check_core(replayer, command, recorded, context):
                return
        if self.proof is not None and before is not None:
            after = self.replayers[0].accounts[account_id][0]
            self.proof.after_command(ACCOUNT_PREFIX + account_id, before, recorded[:-1], after)

    def _remote_diverged(self, index: int, divergence: Divergence, counts: tuple[int, int, int]) -> None:
        """The remote core diverged at command `index`, before anything this process found (it
        stops dispatching at its own divergence): that is the gate's first divergence."""
        remote = self.remote
        assert remote is not None
        self.remote = None
        remote.finish()
        self._take_remote(divergence, counts)

    def _check_core(
        self, replayer: _Replayer, command: wire.AnyCommand, recorded: list[Record], context: dict[str, Any]
    ) -> bool:
        account_id = command.account_id
        state, version = replayer.current(account_id)
        command_id = context["command_id"]
        try:
            decision = decide_records(command, state, version, replayer.core)
        except InvalidCommand as error:
            self._diverge(
                UNDECIDABLE_COMMAND,
                f"the {replayer.kind} core cannot decide recorded command {command_id}: {error}",
                core=replayer.kind,
                **context,
            )
            return False
        except Exception as error:  # noqa: BLE001 - any crash while re-deciding is a divergence
            self._diverge(
                DECIDE_FAILED,
                f"the {replayer.kind} core failed on recorded command {command_id}: "
                f"{type(error).__name__}: {error}",
                core=replayer.kind,
                **context,
            )
            return False
        produced = decision.records
        context = {**context, "replayed_outcome": decision.outcome, "replayed_reason": decision.reason or None}
        produced_events, recorded_events = produced[:-1], recorded[:-1]
        for index in range(max(len(produced_events), len(recorded_events))):
            if index >= len(produced_events):
                missing = recorded_events[index]
                self._diverge(
                    EVENT_NOT_REPRODUCED,
                    f"command {command_id}: the {replayer.kind} core did not reproduce event "
                    f"{missing.envelope.get('event_id')} ({missing.type}, position {missing.position})",
                    core=replayer.kind,
                    position=missing.position,
                    event_id=missing.envelope.get("event_id"),
                    recorded_type=missing.type,
                    **context,
                )
                return False
            if index >= len(recorded_events):
                extra = produced_events[index]
                self._diverge(
                    EXTRA_EVENT,
                    f"command {command_id}: the {replayer.kind} core produced event "
                    f"{extra.envelope['event_id']} ({extra.type}), which the ledger does not have",
                    core=replayer.kind,
                    event_id=extra.envelope["event_id"],
                    replayed_type=extra.type,
                    diffs=tuple(diff_values({}, extra.envelope)),
                    **context,
                )
                return False
            if not self._same(replayer, produced_events[index], recorded_events[index], context):
                return False
        if not self._same(replayer, produced[-1], recorded[-1], context):
            return False
        replayer.accounts[account_id] = (decision.state, version + decision.events)
        return True

    def _same(self, replayer: _Replayer, produced: NewRecord, recorded: Record, context: dict[str, Any]) -> bool:
        diffs = _compare(produced, recorded)
        if not diffs:
            return True
        shown = ", ".join(d.path for d in diffs[:6]) + (" …" if len(diffs) > 6 else "")
        self._diverge(
            RECORD_DIFFERS,
            f"command {context['command_id']} ({context['command_type']}, account {context.get('account_id')}): "
            f"the {replayer.kind} core's {produced.type} differs from the recorded {recorded.type} at "
            f"position {recorded.position} in {shown}",
            core=replayer.kind,
            position=recorded.position,
            event_id=recorded.envelope.get("event_id"),
            recorded_type=recorded.type,
            replayed_type=produced.type,
            diffs=tuple(diffs),
            **context,
        )
        return False

    def _diverge(self, kind: str, message: str, **fields: Any) -> None:
        if self.report.divergence is None:
            self.report.divergence = Divergence(kind=kind, message=message, **fields)
            # A core of this process diverging at the command just dispatched comes first there
            # (the cores are checked in order); anything else comes after every dispatched one.
            core = fields.get("core")
            self.divergence_key = self.dispatched - 1 if core is not None and self.remote is not None else self.dispatched


REMOTE_CHUNK: Final = 256
"""Commands per message to the remote core."""
REMOTE_IN_FLIGHT: Final = 8
"""Chunks the remote core may lag behind before this process waits for it (bounds memory)."""

_Row = tuple[int, str, int, str, bytes]
_Chunk = list[tuple[int, dict[str, Any], list[_Row]]]
Found = tuple[int, Divergence, tuple[int, int, int]]


class RemoteCoreFailed(RuntimeError):
    """The process re-deciding with the second core stopped without an answer."""


class _RemoteCore:
    """The second core, re-deciding in a forked process of its own (docs/replay.md, "Memory and speed").

    This process sends it every command it re-decides, with the recorded records' stored bytes,
    in chunks, at most REMOTE_IN_FLIGHT of them ahead; it answers each chunk, or names the first
    command it diverges on (then ignores the rest). The counts as they stood when each command was
    sent are kept until its chunk is answered, to report the gate as if it had stopped there.
    """

    def __init__(self, process: Any, outbox: Any, conn: Any) -> None:
        self.process = process
        self.outbox = outbox
        """Chunks to the remote core, through a queue whose feeder thread writes the pipe: a
        chunk bigger than the pipe's buffer must not hold this process while the other works."""
        self.conn = conn
        self.chunk: _Chunk = []
        self.counts: deque[tuple[int, tuple[int, int, int]]] = deque()
        self.in_flight = 0
        self.found: Found | None = None
        self.finished = False

    @classmethod
    def start(cls, replayer: _Replayer) -> _RemoteCore:
        context = multiprocessing.get_context("fork")
        outbox = context.Queue()
        ours, theirs = context.Pipe(duplex=False)
        process = context.Process(target=_remote_main, args=(outbox, theirs, replayer), daemon=True, name="titan-replay-core")
        process.start()
        theirs.close()
        return cls(process, outbox, ours)

    def send(self, index: int, context: dict[str, Any], recorded: list[Record], counts: tuple[int, int, int]) -> None:
        rows = [(r.position, r.stream_id, r.version, r.type, r.state) for r in recorded]
        self.chunk.append((index, context, rows))
        self.counts.append((index, counts))
        if len(self.chunk) >= REMOTE_CHUNK:
            self._flush()

    def poll(self) -> Found | None:
        """The remote divergence, if it has reported one (without waiting)."""
        while self.found is None and self.in_flight and self.conn.poll():
            self._receive()
        return self.found

    def finish(self) -> Found | None:
        """Send what is left, wait for every answer and the end of the process."""
        if self.finished:
            return self.found
        self.finished = True
        try:
            if self.found is None:
                self._flush()
            self.outbox.put(None)
            while self._receive() != "done":
                pass
        finally:
            self.conn.close()
            self.outbox.close()
            self.process.join()
            self.outbox.join_thread()
        return self.found

    def _flush(self) -> None:
        if self.chunk:
            self.outbox.put(self.chunk)
            self.chunk = []
            self.in_flight += 1
        while self.found is None and self.in_flight > REMOTE_IN_FLIGHT:
            self._receive()

    def _receive(self) -> str:
        try:
            message = self.conn.recv()
        except EOFError:
            raise RemoteCoreFailed(
                f"the process re-deciding with the second core ended without an answer (exit code {self.process.exitcode})"
            ) from None
        kind = message[0]
        if kind == "ok":
            self.in_flight -= 1
            while self.counts and self.counts[0][0] <= message[1]:
                self.counts.popleft()
        elif kind == "diverged":
            index, divergence = message[1], message[2]
            while self.counts[0][0] < index:
                self.counts.popleft()
            if self.found is None:
                self.found = (index, divergence, self.counts[0][1])
        elif kind == "failed":
            raise RemoteCoreFailed(f"the process re-deciding with the second core failed: {message[1]}")
        return str(kind)


def _remote_main(inbox: Any, conn: Any, replayer: _Replayer) -> None:
    """The remote core's process: re-decide every command it is sent, as `GateRun._check_core`."""
    gate = GateRun(cast(Ledger, None), [], None)
    diverged = False
    try:
        while True:
            chunk: _Chunk | None = inbox.get()
            if chunk is None:
                break
            if diverged:
                continue
            for index, context, rows in chunk:
                recorded = [Record(p, stream_id, v, t, orjson.loads(state), state) for p, stream_id, v, t, state in rows]
                data = recorded[-1].envelope.get("data") or {}
                command = wire.parse_recorded_command(data.get("command"))
                if not gate._check_core(replayer, command, recorded, context):
                    conn.send(("diverged", index, gate.report.divergence))
                    diverged = True
                    break
            else:
                conn.send(("ok", chunk[-1][0]))
    except BaseException as error:  # noqa: BLE001 - reported to the gate, which raises it
        conn.send(("failed", f"{type(error).__name__}: {error}"))
        return
    conn.send(("done",))


def second_process_available() -> bool:
    """Whether the second core can re-decide in a process of its own: two CPUs, fork, and no
    other thread alive (a fork copies only this thread: a lock another thread held — a
    PostgreSQL ledger's loop thread, a logging handler — would stay locked in the child)."""
    return (
        (os.cpu_count() or 1) >= 2
        and "fork" in multiprocessing.get_all_start_methods()
        and threading.active_count() == 1
    )


def verify_replay(
    ledger: Ledger,
    cores: Sequence[CoreSlot],
    *,
    progress: ProgressFn | None = None,
    batch: int = 1000,
    read_side: ReadSide | None = None,
    second_process: bool | None = None,
    snapshots: SnapshotStore | None = None,
) -> ReplayReport:
    """Re-decide every recorded command with each core and compare with the ledger; then, given
    a read side, rebuild every projection and compare digests; given the ledger's snapshot store,
    prove every stored snapshot on the way. With two cores, the second runs in a process of its
    own when `second_process` (default: when `second_process_available()`); the report is the
    same either way."""
    if second_process is None:
        second_process = second_process_available()
    gate = GateRun(ledger, list(cores), progress, snapshots)
    report = gate.run(batch, second_process=second_process)
    if read_side is not None and report.ok:
        report.projections = check_projections(ledger, read_side)
        if report.projections.get("ok") is False:
            report.divergence = Divergence(
                kind=PROJECTION_DIGEST,
                message=str(report.projections.get("message") or "a rebuilt projection's digest differs"),
            )
    return report
