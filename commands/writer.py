"""Group commit: one writer task per account decides its commands in order and appends each batch
of them in one transaction (SPEC §2, issue 4).

A writer holds its account stream's lease (at most one writer per account), keeps the account's
state in memory, and loops: take every command queued (up to `max_batch`), decide each through
`decide_records()` against the state left by the one before, append all their records in one
transaction, and only then answer the callers. Batches grow with the load: one command when it is
quiet, up to the cap when callers queue up while a commit is in flight.

Duplicates are answered with the original outcome and append nothing: command ids already in the
ledger (the append finds them under its lock; the batch is then decided again without them) and
repeats within a batch. When an append fails (a lost connection,
a lost lease), every caller of that batch gets the error, never a success (its outcome is unknown
when the connection dropped during commit: resubmitting the same command id is always safe), and
the writer takes its lease again and reloads the account from the ledger before going on.

With a snapshot store (`snapshots`), a writer starts from the newest trusted snapshot of its
account and reads only the records after it, and takes a snapshot every `snapshot_every` account
events, after answering the batch that crossed the mark, and when it stops (commands/snapshots.py).
A snapshot is a cache: taking one is never an error for a caller (failures are logged and
counted), and one that fails the trust rule is skipped, reported, and never used. What it
captures (the committed state, version, head and `set_by`) is taken when the batch is answered;
the encoding waits for the loop to run once, so the answered callers resume before it, and then
runs on the loop (a batch queued meanwhile waits for it: tens of ms for a multi-MB state);
hashing and storing run in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Final, NamedTuple

from opentelemetry import trace
from opentelemetry.trace import StatusCode

from schemas import commands as wire
from schemas.canonical import document_hash

from . import tracing
from .accounts import fold
from .envelope import account_stream, command_stream
from .handlers import Decision, Outcome, decide_records, duplicate_outcome
from .lease import LeaseRefused, LeaseStore, StreamLease
from .ports import LedgerError, NewRecord, Record, VersionConflict
from .snapshots import (
    DEFAULT_SNAPSHOT_EVERY,
    DEFAULT_SNAPSHOT_KEEP,
    AccountStart,
    SetBy,
    SnapshotInfo,
    Snapshots,
    SnapshotSkip,
    make_snapshot,
    note_context,
)

DEFAULT_MAX_BATCH: Final = 500
MAX_CONFLICTS: Final = 5
DEFAULT_RECONNECT_TIMEOUT_S: Final = 30.0
POLICY_ACTIVATED: Final = "policy.activated.v1"

log = logging.getLogger("titan.writer")


class WriterUnavailable(LedgerError):
    """The writer cannot take commands now: stopped, lease lost, or the ledger unreachable."""


class PolicyIntegrityError(LedgerError):
    """The ledger's active policy hash does not verify: the writer refuses to decide on it."""


def default_holder(account_id: str) -> str:
    """How a writer names itself to a second writer it refuses."""
    return f"titan-writer {account_id} {socket.gethostname()}:{os.getpid()}"


def verify_active_policy(
    account_id: str, records: Sequence[Record], active_hash: str, expected_hash: str | None = None
) -> None:
    """Check that the account's active policy hash is the hash of the policy document recorded
    when it was activated (and, if given, the hash the operator expects); raise
    PolicyIntegrityError naming the record."""
    activation: Record | None = None
    for record in records:
        if record.type == POLICY_ACTIVATED:
            activation = record
    if activation is None:
        if active_hash:
            raise PolicyIntegrityError(
                f"account {account_id!r} has active policy {active_hash} but no {POLICY_ACTIVATED} record"
            )
    else:
        data = activation.envelope["data"]
        recomputed = document_hash(data.get("policy"))
        if data.get("policy_hash") != recomputed:
            raise PolicyIntegrityError(
                f"account {account_id!r}: the policy activated at position {activation.position} "
                f"records hash {data.get('policy_hash')} but its document hashes to {recomputed}"
            )
        if active_hash != recomputed:
            raise PolicyIntegrityError(
                f"account {account_id!r}: the state's active policy hash {active_hash or 'none'} is "
                f"not the one activated at position {activation.position} ({recomputed})"
            )
    if expected_hash is not None and active_hash != expected_hash:
        raise PolicyIntegrityError(
            f"account {account_id!r}: the ledger's active policy is {active_hash or 'none'}, "
            f"this writer was started for policy {expected_hash}"
        )


class _Pending:
    __slots__ = ("command", "context", "future")

    def __init__(self, command: wire.AnyCommand, future: asyncio.Future[Outcome]) -> None:
        self.command = command
        self.future = future
        # The caller's trace context (the intake's span, an API request's): the writer's spans
        # for this command are its children.
        self.context = tracing.current_context()


class _Plan:
    """A batch decided against the writer's state: its records and what to answer each caller."""

    __slots__ = ("entries", "records", "state", "version")

    def __init__(self, state: Any, version: int) -> None:
        self.records: list[NewRecord] = []
        # Per caller: ("new", first record index, Decision) | ("known", Record)
        # | ("repeat", index of the first caller in the batch) | ("error", exception)
        self.entries: list[tuple[str, Any, Any]] = []
        self.state = state
        self.version = version


class _Capture(NamedTuple):
    """What a snapshot is of: the committed state, its stream version, the (position, chain
    hash) of the record at that version, and the `set_by` references as of it."""

    state: Any
    version: int
    head: tuple[int, str]
    set_by: SetBy


_STOP: Final = object()


class AccountWriter:
    """The single writer of one account: a queue, a task, a lease and the account's state."""

    def __init__(
        self,
        account_id: str,
        store: LeaseStore,
        core: Any,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        holder: str | None = None,
        expected_policy_hash: str | None = None,
        reconnect_timeout_s: float = DEFAULT_RECONNECT_TIMEOUT_S,
        on_commit: Callable[[int, float], None] | None = None,
        snapshots: Snapshots | None = None,
        snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
        snapshot_keep: int = DEFAULT_SNAPSHOT_KEEP,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        if snapshot_every < 0:
            raise ValueError(f"snapshot_every must be 0 (no snapshots) or more, not {snapshot_every}")
        if snapshot_keep < 0:
            raise ValueError(f"snapshot_keep must be 0 (keep all) or more, not {snapshot_keep}")
        self.account_id = account_id
        self.stream_id = account_stream(account_id)
        self.max_batch = max_batch
        self.holder = holder or default_holder(account_id)
        self.expected_policy_hash = expected_policy_hash
        self.reconnect_timeout_s = reconnect_timeout_s
        self.batch_sizes: Counter[int] = Counter()
        """How many batches of each size were committed (for tests and `titan bench`)."""
        self.on_commit = on_commit
        """Called after each committed batch with (commands in it, seconds the append took)."""
        self._store = store
        self._core = core
        self._queue: asyncio.Queue[_Pending | object] = asyncio.Queue()
        self._lease: StreamLease | None = None
        self._state: Any = None
        self._version = 0
        self._task: asyncio.Task[None] | None = None
        self._failure: LedgerError | None = None
        self._stopping = False
        self.snapshots = snapshots
        """Where the writer starts from and takes its snapshots (None: the fold from zero, none taken)."""
        self.snapshot_every = snapshot_every
        self.snapshot_keep = snapshot_keep
        self.snapshots_written = 0
        """Snapshots this writer stored."""
        self.snapshot_failures = 0
        """Snapshots this writer could not take or store (logged; never an error for a caller)."""
        self.snapshot_skips: list[SnapshotSkip] = []
        """Snapshots the trust rule refused when this writer loaded its account (logged too)."""
        self.started_from: SnapshotInfo | None = None
        """The snapshot the last load started from (None: the fold from zero)."""
        self._set_by: SetBy = {}
        self._head: tuple[int, str] = (0, "")
        self._snapshot_version = 0
        self._snapshot_task: asyncio.Task[None] | None = None

    @property
    def state(self) -> Any:
        """The account's state after the last committed batch."""
        return self._state

    @property
    def version(self) -> int:
        """The account stream's version after the last committed batch."""
        return self._version

    @property
    def running(self) -> bool:
        """Whether the writer's loop is alive (started and not ended)."""
        return self._task is not None and not self._task.done()

    @property
    def failed(self) -> LedgerError | None:
        """Why the writer stopped taking commands, if it did."""
        return self._failure

    async def start(self) -> None:
        """Take the lease (LeaseRefused if another writer has it), load the account from the
        ledger, verify its active policy hash, then start taking commands."""
        if self._task is not None:
            raise RuntimeError(f"the writer of {self.account_id!r} is already started")
        await self._take_lease_and_load()
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"titan-writer-{self.account_id}"
        )

    async def submit(self, command: wire.AnyCommand) -> Outcome:
        """Decide and record a command; return once its records are durable."""
        return await self.enqueue(command)

    def enqueue(self, command: wire.AnyCommand) -> asyncio.Future[Outcome]:
        """Queue a command now (commands are decided in the order they are queued) and return the
        future of its outcome, set once its records are durable (or with the error)."""
        if command.account_id != self.account_id:
            raise ValueError(
                f"command {command.command_id!r} is for account {command.account_id!r}; "
                f"this is the writer of {self.account_id!r}"
            )
        self._check_open()
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(command, future))
        return future

    async def stop(self) -> None:
        """Commit what is queued, take a last snapshot, stop, and give the lease up."""
        if not self._stopping:
            self._stopping = True
            self._queue.put_nowait(_STOP)
        if self._task is not None:
            await asyncio.shield(self._task)
        await self._last_snapshot()
        await self._release_lease()

    # The loop ----------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while True:
                item = await self._queue.get()
                if item is _STOP:
                    return
                batch = [item]
                stop_after = False
                while len(batch) < self.max_batch:
                    try:
                        item = self._queue.get_nowait()
                    except asyncio.QueueEmpty:
                        break
                    if item is _STOP:
                        stop_after = True
                        break
                    batch.append(item)
                pending = [p for p in batch if isinstance(p, _Pending)]
                try:
                    await self._commit(pending)
                except BaseException as error:
                    # Cancelled mid-batch (the loop is shutting down), or a failure recovery could
                    # not handle: nobody is left waiting for an answer that will never come, and
                    # the bus starts a new writer for the next command.
                    if self._failure is None and not isinstance(error, asyncio.CancelledError):
                        self._failure = LedgerError(f"the writer of {self.account_id!r} failed: {error}")
                    self._fail_batch(pending, None, self._stopped())
                    raise
                if stop_after or self._failure is not None:
                    return
        finally:
            self._fail_queued(self._failure or self._stopped())

    def _stopped(self) -> WriterUnavailable:
        return WriterUnavailable(
            f"the writer of {self.account_id!r} stopped before deciding this command; "
            "resubmit it (its command id makes a repeat harmless)"
        )

    async def _commit(self, batch: list[_Pending]) -> None:
        lease = self._lease
        assert lease is not None
        plan: _Plan | None = None
        # Command ids already in the ledger: the append itself finds them (a command stream's
        # version 1 exists, checked under the table lock), so the common batch, all new, costs no
        # extra query; on such a conflict, read them and decide the batch again without them.
        known: dict[str, Record] = {}
        traced = tracing.enabled()
        try:
            for _attempt in range(MAX_CONFLICTS):
                # When traced: the wall-clock time before each command's decision and after the
                # last one, for the spans (never read by a decision).
                marks: list[int] | None = [] if traced else None
                plan = self._plan(batch, known, marks)
                started = time.perf_counter()
                append_start_ns = time.time_ns() if traced else 0
                try:
                    sealed = await lease.append(plan.records) if plan.records else []
                except VersionConflict as conflict:
                    if conflict.stream_id == self.stream_id:
                        # The account was written outside this writer: catch up.
                        await self._catch_up()
                    else:
                        streams = [command_stream(p.command.command_id) for p in batch]
                        known = await lease.first_records(streams)
                    continue
                self._state, self._version = plan.state, plan.version
                self._moved(sealed)
                self.batch_sizes[len(batch)] += 1
                if self.on_commit is not None:
                    self.on_commit(len(batch), time.perf_counter() - started)
                if marks is not None:
                    # After the commit: a failure here must not turn committed commands into errors.
                    with contextlib.suppress(Exception):
                        _trace_batch(batch, plan, sealed, marks, append_start_ns, time.time_ns())
                self._answer(batch, plan, sealed)
                self._snapshot_if_due()
                return
            raise WriterUnavailable(
                f"the writer of {self.account_id!r} met {MAX_CONFLICTS} version conflicts in a row"
            )
        except Exception as error:  # noqa: BLE001 - whatever went wrong, no caller may hang
            failure = (
                error
                if isinstance(error, LedgerError)
                else LedgerError(f"the writer of {self.account_id!r} failed: {error}")
            )
            self._fail_batch(batch, plan, failure)
            # What was queued behind the failed batch is failed too (its callers retry), so that
            # nothing is decided ahead of a command that will come again.
            self._fail_queued(failure)
            # The batch may or may not have committed: take the lease again and reload the
            # account from the ledger, as a new leader would.
            await self._recover()

    def _plan(self, batch: list[_Pending], known: dict[str, Record], marks: list[int] | None = None) -> _Plan:
        plan = _Plan(self._state, self._version)
        first_in_batch: dict[str, int] = {}
        for index, pending in enumerate(batch):
            if marks is not None:
                marks.append(time.time_ns())
            command = pending.command
            command_id = command.command_id
            recorded = known.get(command_stream(command_id))
            if recorded is not None:
                plan.entries.append(("known", recorded, None))
                continue
            if command_id in first_in_batch:
                plan.entries.append(("repeat", first_in_batch[command_id], None))
                continue
            try:
                decision = decide_records(command, plan.state, plan.version, self._core)
            except Exception as error:  # noqa: BLE001 - an invalid command: its caller alone gets it
                plan.entries.append(("error", error, None))
                continue
            first_in_batch[command_id] = index
            plan.entries.append(("new", len(plan.records), decision))
            plan.records.extend(decision.records)
            plan.state = decision.state
            plan.version += decision.events
        if marks is not None:
            marks.append(time.time_ns())
        return plan

    def _answer(self, batch: list[_Pending], plan: _Plan, sealed: list[Record]) -> None:
        outcomes: list[Outcome | None] = []
        for pending, (kind, value, decision) in zip(batch, plan.entries, strict=True):
            outcome: Outcome | None = None
            if kind == "new":
                outcome = _new_outcome(pending.command, value, decision, sealed)
            elif kind == "known":
                outcome = duplicate_outcome(value)
            elif kind == "repeat":
                first = outcomes[value]
                assert first is not None
                outcome = Outcome(first.command_id, "duplicate", first.reason, first.events, first.position)
            outcomes.append(outcome)
            if pending.future.done():
                continue  # the caller gave up waiting; the command is recorded all the same
            if outcome is None:
                pending.future.set_exception(value)
            else:
                pending.future.set_result(outcome)

    def _fail_batch(self, batch: list[_Pending], plan: _Plan | None, error: LedgerError) -> None:
        entries = plan.entries if plan is not None and len(plan.entries) == len(batch) else None
        for index, pending in enumerate(batch):
            if pending.future.done():
                continue
            if entries is not None and entries[index][0] == "error":
                pending.future.set_exception(entries[index][1])
            else:
                pending.future.set_exception(error)

    def _fail_queued(self, error: LedgerError) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            if isinstance(item, _Pending) and not item.future.done():
                item.future.set_exception(error)

    # Lease and state -----------------------------------------------------------------------

    async def _take_lease_and_load(self) -> None:
        lease = await self._store.acquire_lease(self.stream_id, self.holder)
        try:
            start = await self._start()
            records = await lease.read_stream(self.stream_id, after_version=start.version)
            state = fold(self._core, start.state, records)
            # The policy's activation: in the records read, else the one the snapshot names (the
            # trust rule checked that it is this stream's record and activated the state's policy).
            checked = records if start.policy_record is None else [start.policy_record, *records]
            verify_active_policy(
                self.account_id, checked, state.policy_hash or "", self.expected_policy_hash
            )
        except BaseException:
            await lease.release()
            raise
        self._lease = lease
        self._state = state
        self._version = records[-1].version if records else start.version
        self.started_from = start.snapshot
        self._snapshot_version = start.version
        if self.snapshots is not None:
            self._set_by = dict(start.set_by)
            self._head = (start.position, start.chain_hash)
            self._moved(records)

    async def _start(self) -> AccountStart:
        """The newest trusted snapshot of the account (checked in a worker thread: it reads the
        ledger and the store), else the initial state."""
        if self.snapshots is None:
            return AccountStart(self._core.decider.initial_state(self.account_id))
        start = await asyncio.to_thread(self.snapshots.start, self._core, self.account_id)
        self.snapshot_skips.extend(start.skipped)
        return start

    async def _catch_up(self) -> None:
        assert self._lease is not None
        newer = await self._lease.read_stream(self.stream_id, after_version=self._version)
        if newer:
            self._state = fold(self._core, self._state, newer)
            self._version = newer[-1].version
            self._moved(newer)

    # Snapshots -----------------------------------------------------------------------------

    def _moved(self, records: Sequence[Record]) -> None:
        """Follow the account's records just folded or committed: the context references and the
        last record (what a snapshot names), when snapshots are taken."""
        if self.snapshots is None:
            return
        own = [record for record in records if record.stream_id == self.stream_id]
        if own:
            note_context(self._set_by, own)
            self._head = (own[-1].position, str(own[-1].envelope.get("hash")))

    def _snapshot_if_due(self) -> None:
        """After a committed batch has been answered: start a snapshot when `snapshot_every`
        events passed since the last one (one at a time; never an error for anyone). What it is of
        is captured now; the encoding runs once the answered callers have resumed."""
        if (
            self.snapshots is None
            or self.snapshot_every == 0
            or self._version - self._snapshot_version < self.snapshot_every
            or (self._snapshot_task is not None and not self._snapshot_task.done())
        ):
            return
        self._snapshot_task = asyncio.get_running_loop().create_task(
            self._take_snapshot(self._snapshot_capture(), after_answers=True),
            name=f"titan-snapshot-{self.account_id}",
        )

    async def _last_snapshot(self) -> None:
        """At stop: wait for the snapshot in flight, then take one of what came after it."""
        task, self._snapshot_task = self._snapshot_task, None
        if task is not None:
            await task
        if self.snapshots is not None and self.snapshot_every and self._version > self._snapshot_version:
            await self._take_snapshot(self._snapshot_capture(), after_answers=False)

    def _snapshot_capture(self) -> _Capture:
        """What a snapshot is of, as committed now (the core's states are immutable values)."""
        set_by = {kind: dict(ref) for kind, ref in self._set_by.items()}
        return _Capture(self._state, self._version, self._head, set_by)

    async def _take_snapshot(self, capture: _Capture, *, after_answers: bool) -> None:
        if after_answers:
            # The batch's futures are set: let their callers (and what they do next) run before
            # the encoding holds the loop.
            await asyncio.sleep(0)
        work = self._snapshot_work(capture)
        if work is not None:
            await self._store_snapshot(work)

    def _snapshot_work(self, capture: _Capture) -> Callable[[], bool] | None:
        """Encode a captured state on the writer's loop (the compiled codec would hold the
        interpreter lock in a thread anyway) and return the rest (canonical JSON, hash, store,
        prune) for a worker thread; None if it failed."""
        snapshots = self.snapshots
        assert snapshots is not None
        try:
            module = self._core.snapshot
            data = module.state_to_snapshot(capture.state)
            core_format = module.SNAPSHOT_FORMAT
        except Exception as error:  # noqa: BLE001 - a snapshot is a cache: never an error for a caller
            self._snapshot_failed(error)
            return None
        version, (position, chain_hash), set_by = capture.version, capture.head, capture.set_by
        self._snapshot_version = version  # the next one after another snapshot_every events
        keep = self.snapshot_keep

        def store() -> bool:
            snapshot = make_snapshot(
                core_format, data, stream_id=self.stream_id, version=version, position=position,
                chain_hash=chain_hash, set_by=set_by, created_ns=time.time_ns(),
            )
            written = snapshots.store.save(snapshot)
            if keep:
                # This writer holds the lease at `version` or beyond: a row above it is junk.
                snapshots.store.prune(self.stream_id, keep, version)
            return written

        return store

    async def _store_snapshot(self, work: Callable[[], bool]) -> None:
        try:
            written = await asyncio.to_thread(work)
        except Exception as error:  # noqa: BLE001 - logged and counted, never raised
            self._snapshot_failed(error)
        else:
            self.snapshots_written += written  # False: that version had one already

    def _snapshot_failed(self, error: Exception) -> None:
        self.snapshot_failures += 1
        log.warning(
            "the writer of %r could not take a snapshot at version %s: %s: %s",
            self.account_id, self._version, type(error).__name__, error,
        )

    async def _recover(self) -> None:
        await self._release_lease()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.reconnect_timeout_s
        delay = 0.05
        while True:
            try:
                await self._take_lease_and_load()
                return
            except PolicyIntegrityError as error:
                self._failure = error
                return
            except LeaseRefused as error:
                if self.holder[:63] not in error.holder:
                    self._failure = error  # another writer leads now
                    return
                # Still held by our own lost session, until the server notices it is gone.
                if loop.time() + delay > deadline:
                    self._failure = error
                    return
            except LedgerError as error:
                if loop.time() + delay > deadline:
                    self._failure = WriterUnavailable(
                        f"the writer of {self.account_id!r} could not take its lease again within "
                        f"{self.reconnect_timeout_s:g} s: {error}"
                    )
                    return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _release_lease(self) -> None:
        lease, self._lease = self._lease, None
        if lease is not None:
            try:
                await lease.release()
            except LedgerError:
                pass  # a lost connection has released it already

    def _check_open(self) -> None:
        if self._failure is not None:
            raise WriterUnavailable(f"the writer of {self.account_id!r} stopped: {self._failure}")
        if self._task is None or self._stopping or self._task.done():
            raise WriterUnavailable(f"the writer of {self.account_id!r} is not running")


def _new_outcome(command: wire.AnyCommand, start: int, decision: Decision, sealed: list[Record]) -> Outcome:
    records = sealed[start : start + len(decision.records)]
    refs = [{"type": r.type, "event_id": r.envelope["event_id"]} for r in records[:-1]]
    return Outcome(command.command_id, decision.outcome, decision.reason or None, refs, records[-1].position)


def _trace_batch(
    batch: list[_Pending], plan: _Plan, sealed: list[Record], marks: list[int], append_start_ns: int, append_end_ns: int
) -> None:
    """The spans of a committed batch: per command `titan.decide` (child of the caller's context)
    and, for a command that appended records, `titan.append` (child of its decide span) over the
    batch's one append; then the registry learns the append span, for the relay and the gateway."""
    tracer = tracing.tracer()
    for index, (pending, (kind, value, decision)) in enumerate(zip(batch, plan.entries, strict=True)):
        command = pending.command
        attributes = tracing.command_attributes(command)
        decide = tracer.start_span(
            "titan.decide", context=pending.context, attributes=attributes, start_time=marks[index]
        )
        if kind == "new":
            decide.set_attribute(tracing.OUTCOME, decision.outcome)
            if decision.reason:
                decide.set_attribute(tracing.REASON, decision.reason)
        elif kind == "error":
            decide.record_exception(value)
            decide.set_status(StatusCode.ERROR, type(value).__name__)
        else:
            decide.set_attribute(tracing.OUTCOME, "duplicate")
        decide.end(end_time=marks[index + 1])
        if kind != "new":
            continue
        records = sealed[value : value + len(decision.records)]
        append = tracer.start_span(
            "titan.append",
            context=trace.set_span_in_context(decide, pending.context),
            attributes={
                **attributes,
                tracing.POSITION: records[-1].position,
                "titan.records": len(records),
                "titan.batch_commands": len(batch),
            },
            start_time=append_start_ns,
        )
        append.end(end_time=append_end_ns)
        tracing.remember(command.command_id, append.get_span_context())


class GroupCommitBus:
    """Routes each command to its account's writer, starting a writer on the account's first
    command (and a new one after a writer failed)."""

    def __init__(self, store: LeaseStore, core: Any, **writer_options: Any) -> None:
        self._store = store
        self._core = core
        self._options = writer_options
        self._writers: dict[str, AccountWriter] = {}
        self._starting: dict[str, asyncio.Future[AccountWriter]] = {}
        self._stopping = False

    async def handle(self, command: wire.AnyCommand) -> Outcome:
        """Decide and record one command through its account's writer."""
        writer = await self.writer(command.account_id)
        return await writer.submit(command)

    async def writer(self, account_id: str) -> AccountWriter:
        """The running writer of an account (started if needed; LeaseRefused if taken;
        WriterUnavailable once the bus is stopping)."""
        if self._stopping:
            raise WriterUnavailable(f"the writers are stopping: {account_id!r} takes no more commands here")
        writer = self._writers.get(account_id)
        if writer is not None and writer.failed is None and writer.running:
            return writer
        starting = self._starting.get(account_id)
        if starting is not None:
            return await asyncio.shield(starting)
        future: asyncio.Future[AccountWriter] = asyncio.get_running_loop().create_future()
        self._starting[account_id] = future
        try:
            if writer is not None:
                await writer.stop()
            writer = AccountWriter(account_id, self._store, self._core, **self._options)
            await writer.start()
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: only waiters that exist re-raise it
            raise
        finally:
            del self._starting[account_id]
        if self._stopping:  # the bus stopped while this writer started: it must not keep the lease
            await writer.stop()
            error = WriterUnavailable(f"the writers are stopping: {account_id!r} takes no more commands here")
            future.set_exception(error)
            future.exception()
            raise error
        self._writers[account_id] = writer
        future.set_result(writer)
        return writer

    def state_of(self, account_id: str) -> Any:
        """The committed state of an account whose writer runs, else None."""
        writer = self._writers.get(account_id)
        return writer.state if writer is not None and writer.failed is None else None

    @property
    def writers(self) -> dict[str, AccountWriter]:
        """The running writers, by account."""
        return dict(self._writers)

    def has_writer(self, account_id: str) -> bool:
        """Whether this bus has a writer for the account (running or failed)."""
        return account_id in self._writers

    @property
    def writer_count(self) -> int:
        """How many accounts this bus has writers for."""
        return len(self._writers)

    async def stop(self) -> None:
        """Stop every writer (each commits what it has queued first), and any still starting."""
        self._stopping = True
        starting = list(self._starting.values())
        if starting:
            await asyncio.gather(*(asyncio.shield(future) for future in starting), return_exceptions=True)
        writers, self._writers = list(self._writers.values()), {}
        for writer in writers:
            await writer.stop()
