"""The console's wiring (docs/console.md): its read port over a ledger and its read models, and
its command port over a bus — a writer of its own when it runs alone (`titan console`), the
serve's group-commit bus when it runs inside `titan serve`.

Current state (breaker, truth, budget, venues, policy) comes from each account folded from the
ledger, kept in memory and moved forward by the records recorded since the last question, so a
question costs the new records, not the whole stream. History comes from the read models.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from adapters.console.ports import (
    CommandMaker,
    ConsoleCommands,
    ConsoleData,
    ConsoleError,
    EventPage,
    Stamp,
)
from commands.envelope import account_stream
from commands.lease import LeaseRefused
from commands.ports import Ledger, LedgerError, Record, RecordFilter
from commands.views import state_view
from projections import registry
from projections.dlq import DLQ_ENTRIES
from projections.model import Table
from projections.store import ReadModelStore
from replay.explain import StartPoint, advance, explain, find_subject, stream_pages
from replay.state_at import ReplayInputError

from .settings import Settings

if TYPE_CHECKING:
    from nats.aio.client import Client

    from adapters.nats.signing import Keys
    from commands.writer import GroupCommitBus

POLICY_ACTIVATED: Final = "policy.activated.v1"
ACCOUNT_PREFIX: Final = "account-"
MAX_TS_NS: Final = 2**63 - 1
SNAPSHOT_EVERY: Final = 200
"""Stream versions between an account's kept snapshots, at first: explain replays at most this many
records before a decision. A snapshot of the demo's account holds about 15 KiB of its own (the
state shares the rest with the next one), so 512 of them cost under 10 MiB per account."""
MAX_SNAPSHOTS: Final = 512
"""Snapshots kept per account: when full, every second one goes and the spacing doubles (evenly
spaced over the whole stream, never more than this many)."""

TABLES: Final[Mapping[str, Table]] = {
    table.name: table for projection in (*registry.PROJECTIONS, DLQ_ENTRIES) for table in projection.tables
}


class _Account:
    """One account folded to a version, its policy activations, and snapshots of it on the way
    (every `every` versions, at most MAX_SNAPSHOTS, evenly spaced over the stream) for explain
    to start from."""

    def __init__(self, state: Any) -> None:
        self.state = state
        self.version = 0
        self.position = 0
        self.scanned = 0  # the ledger position its stream has been read to (other streams' records passed over)
        self.set_by: Mapping[str, Mapping[str, Any]] = {}
        self.policies: list[dict[str, Any]] = []
        self.snapshots: list[StartPoint] = []
        self.every = SNAPSHOT_EVERY
        self.lock = asyncio.Lock()

    def point(self) -> StartPoint:
        """Where the account is folded to."""
        return StartPoint(self.state, self.version, self.position, self.set_by)

    def moved(self, point: StartPoint, snapshots: Sequence[StartPoint]) -> None:
        """Take a fold's result and keep its snapshots (those still on the spacing)."""
        self.state, self.version, self.position, self.set_by = point.state, point.version, point.position, point.set_by
        for snapshot in snapshots:
            if snapshot.version % self.every:
                continue  # taken at the old spacing, before a thinning doubled it
            self.snapshots.append(snapshot)
            if len(self.snapshots) >= MAX_SNAPSHOTS:
                self.every *= 2
                self.snapshots = [kept for kept in self.snapshots if kept.version % self.every == 0]

    def start_before(self, position: int) -> StartPoint | None:
        """The latest snapshot folded through a record before this ledger position, if any."""
        index = bisect.bisect_left([snapshot.position for snapshot in self.snapshots], position)
        return self.snapshots[index - 1] if index else None


def _fold_with_snapshots(core: Any, point: StartPoint, records: Sequence[Record], every: int) -> tuple[StartPoint, list[StartPoint]]:
    """The account's next records folded onto a point, and the point at each version on the spacing."""
    snapshots: list[StartPoint] = []
    begin = 0
    for index, record in enumerate(records):
        if record.version % every == 0:
            point = advance(core, point, records[begin : index + 1])
            snapshots.append(point)
            begin = index + 1
    return advance(core, point, records[begin:]), snapshots


class LedgerConsoleData(ConsoleData):
    """The console's reads over a ledger, its read models and an execution core."""

    def __init__(self, ledger: Ledger, store: ReadModelStore, core: Any) -> None:
        self.ledger = ledger
        self.store = store
        self.core = core
        self._accounts: dict[str, _Account] = {}
        self._known: set[str] = set()
        self._scanned = 0
        self._scan_lock = asyncio.Lock()

    async def accounts(self) -> list[str]:
        async with self._scan_lock:
            where = RecordFilter(types=(POLICY_ACTIVATED,))
            while True:
                records, reached = await _thread(self.ledger.read_matching, self._scanned, 1000, where, scan_limit=100_000)
                self._known.update(r.stream_id.removeprefix(ACCOUNT_PREFIX) for r in records if r.stream_id.startswith(ACCOUNT_PREFIX))
                if reached <= self._scanned:
                    break
                self._scanned = reached
        return sorted(self._known)

    async def rows(self, table: str, where: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        found = TABLES.get(table)
        if found is None:
            raise ConsoleError("INTERNAL", f"no read-model table {table!r}", 500)
        try:
            return await self.store.rows(found, where)
        except Exception as error:  # noqa: BLE001 - a lost read-model database is a 503, not a crash
            raise ConsoleError("LEDGER_UNAVAILABLE", f"the read models cannot be read: {error}", 503) from None

    async def latest(self, table: str, order_by: str, limit: int, where: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        found = TABLES.get(table)
        if found is None:
            raise ConsoleError("INTERNAL", f"no read-model table {table!r}", 500)
        try:
            return await self.store.latest(found, order_by, limit, where)
        except ValueError:
            raise
        except Exception as error:  # noqa: BLE001 - a lost read-model database is a 503, not a crash
            raise ConsoleError("LEDGER_UNAVAILABLE", f"the read models cannot be read: {error}", 503) from None

    async def _folded(self, account_id: str) -> _Account:
        account = self._accounts.get(account_id)
        if account is None:
            account = self._accounts[account_id] = _Account(self.core.decider.initial_state(account_id))
        async with account.lock:
            # A page at a time (a long stream is never all in memory), each read and folded in a thread.
            pages = stream_pages(self.ledger, account_stream(account_id), account.scanned)

            def step() -> tuple[list[Record], int, StartPoint, list[StartPoint]] | None:
                page = next(pages, None)
                if page is None:
                    return None
                records, reached = page
                return records, reached, *_fold_with_snapshots(self.core, account.point(), records, account.every)

            while (moved := await _thread(step)) is not None:
                records, account.scanned, point, snapshots = moved
                for record in records:
                    if record.type == POLICY_ACTIVATED:
                        envelope = record.envelope
                        account.policies.append(
                            {
                                "position": record.position,
                                "ts_ns": envelope["ts_ns"],
                                "actor": envelope.get("actor"),
                                "policy_hash": envelope["data"]["policy_hash"],
                                "policy": envelope["data"].get("policy"),
                            }
                        )
                account.moved(point, snapshots)
        return account

    async def state(self, account_id: str) -> dict[str, Any]:
        account = await self._folded(account_id)
        view = state_view(self.core, account.state)
        view["as_of_position"] = account.position
        return view

    async def policies(self, account_id: str) -> list[dict[str, Any]]:
        return list((await self._folded(account_id)).policies)

    async def events(self, after: int, first: int, where: RecordFilter) -> EventPage:
        def read() -> EventPage:
            records, reached = self.ledger.read_matching(after, first, where)
            return EventPage(records, reached, self.ledger.head()[0])

        page: EventPage = await _thread(read)
        return page

    async def explain(self, ident: str) -> dict[str, Any]:
        # The trace replays the account from the snapshot nearest before the decision: the first
        # explain on an account folds it (once), the next ones replay at most `every` versions.
        try:
            subject = await _thread(find_subject, self.ledger, ident)
            account = await self._folded(subject.account_id)
            start = account.start_before(subject.first_event_position)
            trace: dict[str, Any] = await _thread(explain, self.ledger, self.core, ident, start=start)
            return trace
        except ReplayInputError as error:
            raise ConsoleError("NOT_FOUND", str(error), 404) from None

    async def head(self) -> int:
        head: tuple[int, str, int] = await _thread(self.ledger.head)
        return head[0]

    async def close(self) -> None:
        await self.store.close()


async def _thread(function: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return await asyncio.to_thread(function, *args, **kwargs)
    except ConsoleError:
        raise
    except LedgerError as error:
        raise ConsoleError("LEDGER_UNAVAILABLE", f"the ledger cannot be read: {error}", 503) from None


def stamp_for(state: Any) -> Stamp:
    """Now, never behind the account's last decided command (operator actions always take effect)."""
    last: int = int(state.last_ts_ns) if state is not None else 0
    return Stamp(min(max(time.time_ns(), last + 1), MAX_TS_NS), (state.policy_hash or "") if state is not None else "")


class DlqActions:
    """Replay and purge over TITAN_DLQ, for either command port."""

    def __init__(self, nc: Client | None, keys: Keys | None) -> None:
        self.nc = nc
        self.keys = keys

    def _js(self) -> Any:
        if self.nc is None or not self.nc.is_connected:
            raise ConsoleError("NATS_UNAVAILABLE", "NATS is not connected: the DLQ lives in TITAN_DLQ (set TITAN_NATS_URL)", 503)
        return self.nc.jetstream()

    async def found(self, entry_ids: Sequence[str]) -> dict[str, list[tuple[int, Any]]]:
        from adapters.nats import dlq

        found = await dlq.find_entries(self._js(), entry_ids)
        missing = [entry_id for entry_id in entry_ids if not found.get(entry_id)]
        if missing:
            raise ConsoleError("NOT_FOUND", f"no dead letter {', '.join(missing[:5])} in TITAN_DLQ (see the dlq query)", 404)
        return found

    async def replay(self, entry_ids: Sequence[str], log: Any) -> list[dict[str, Any]]:
        from adapters.nats import dlq, subjects
        from infra.cli.dlq import replay_headers

        js = self._js()
        found = await self.found(entry_ids)
        planned = []
        for entry_id in entry_ids:
            entry = found[entry_id][-1][1]
            if not entry.subject.startswith(subjects.CMD_PREFIX + "."):
                raise ConsoleError("INVALID_ARGUMENT", f"entry {entry_id} has no original subject: it cannot be replayed", 400)
            try:
                planned.append((entry, dlq.replay_payload(entry)))
            except ValueError as error:
                raise ConsoleError("INVALID_ARGUMENT", str(error), 400) from None
        published = []
        for entry, payload in planned:
            headers, resigned = replay_headers(entry, payload, self.keys, time.time_ns())
            ack = await js.publish(entry.subject, payload, timeout=5.0, stream=subjects.CMD_STREAM, headers=headers)
            published.append({"entry_id": entry.entry_id, "subject": entry.subject, "seq": ack.seq, "resigned_as": resigned})
            log(entry.entry_id)
        return published

    async def remove(self, found: dict[str, list[tuple[int, Any]]]) -> dict[str, int]:
        from adapters.nats import dlq

        js = self._js()
        return {entry_id: await dlq.delete_entry(js, entry_id, seqs=[seq for seq, _ in copies]) for entry_id, copies in found.items()}


def _purge(account_id: str, entry_ids: Sequence[str], actor: str, reason: str) -> CommandMaker:
    from adapters.console.graphql.actions import action_id
    from schemas import commands as wire

    def make(stamp: Stamp) -> Any:
        return wire.PurgeDlq(
            command_id=action_id("purge-dlq", account_id),
            account_id=account_id,
            ts_ns=stamp.ts_ns,
            actor=actor,
            entry_ids=list(entry_ids),
            reason=reason,
        )

    return make


class _Commands(ConsoleCommands):
    def __init__(self, dlq: DlqActions) -> None:
        self.dlq = dlq

    def audit(self, line: str) -> None:
        import sys

        print(f"console: {line}", file=sys.stderr, flush=True)

    async def dlq_replay(self, entry_ids: Sequence[str], actor: str, reason: str) -> list[dict[str, Any]]:
        return await self.dlq.replay(entry_ids, lambda entry_id: self.audit(f"{actor} replayed {entry_id}: {reason!r}"))

    async def dlq_purge(self, account_id: str, entry_ids: Sequence[str], actor: str, reason: str) -> dict[str, Any]:
        found = await self.dlq.found(entry_ids)
        outcome = await self.submit(account_id, _purge(account_id, entry_ids, actor, reason))
        removed = await self.dlq.remove(found) if outcome["outcome"] in ("accepted", "duplicate") else {}
        return {"outcome": outcome, "removed": removed}


class LocalCommands(_Commands):
    """`titan console` alone: each action takes the account's writer lease, decides, records and
    lets the lease go (a running serve holds it: then the action is refused, WRITER_BUSY)."""

    def __init__(self, settings: Settings, ledger: Ledger, dlq: DlqActions) -> None:
        super().__init__(dlq)
        self.settings = settings
        self.ledger = ledger

    async def submit(self, account_id: str, make: CommandMaker) -> dict[str, Any]:
        from .bootstrap import account_writer

        def work() -> dict[str, Any]:
            with account_writer(self.settings, self.ledger, "console", [account_id]) as bus:
                command = make(stamp_for(bus.state(account_id)))
                return bus.handle(command).to_json()

        try:
            return await asyncio.to_thread(work)
        except LeaseRefused as refused:
            raise ConsoleError(
                "WRITER_BUSY", f"account {account_id!r} is written by {refused.holder}: act through the console of that titan serve", 409
            ) from None
        except LedgerError as error:
            raise ConsoleError("LEDGER_UNAVAILABLE", f"the ledger cannot be written: {error}", 503) from None


class ServeCommands(_Commands):
    """Inside `titan serve`: the serve's own group-commit bus, the one writer of each account."""

    def __init__(self, bus_of: Any, dlq: DlqActions) -> None:
        super().__init__(dlq)
        self._bus_of = bus_of

    async def submit(self, account_id: str, make: CommandMaker) -> dict[str, Any]:
        bus: GroupCommitBus | None = self._bus_of()
        if bus is None:
            raise ConsoleError("NOT_LEADER", "this serve is a standby (or starting): act on the leader's console", 503)
        try:
            writer = await bus.writer(account_id)
        except LeaseRefused as refused:
            raise ConsoleError("WRITER_BUSY", f"account {account_id!r} is written by {refused.holder}", 409) from None
        except LedgerError as error:
            raise ConsoleError("LEDGER_UNAVAILABLE", f"the ledger cannot be written: {error}", 503) from None
        command = make(stamp_for(writer.state))
        try:
            outcome = await writer.submit(command)
        except LedgerError as error:
            raise ConsoleError("LEDGER_UNAVAILABLE", f"the command was not recorded: {error}", 503) from None
        return outcome.to_json()


async def follow_projections(ledger: Ledger, store: ReadModelStore, stop: asyncio.Event) -> None:
    """Keep the read models current (as serve's projector does) until `stop`."""
    from projections.runner import Runner

    runner = Runner(ledger, store, registry.select())
    task = asyncio.ensure_future(runner.follow())
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
    runner.stop()
    stopper.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class OpenConsole:
    """A console's services over an open ledger and its read-model store."""

    def __init__(self, ledger: Ledger, store: ReadModelStore, data: LedgerConsoleData, services: Any, registry: Any) -> None:
        self.ledger = ledger
        self.store = store
        self.data = data
        self.services = services
        self.registry = registry

    async def follow(self, stop: asyncio.Event) -> None:
        """Keep the read models current until `stop` (a lost database: try again, backing off)."""
        pause = 0.5
        while not stop.is_set():
            try:
                await follow_projections(self.ledger, self.store, stop)
            except Exception as error:  # noqa: BLE001 - reported on /ready; the page shows stale history meanwhile
                print(f"console: projector stopped ({error}); again in {pause:.1f} s", flush=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)
            pause = min(pause * 2, 5.0)

    async def close(self) -> None:
        await self.data.close()


async def open_console(settings: Settings, ledger: Ledger, core: Any, tokens: Any, commands: ConsoleCommands) -> OpenConsole:
    """The console's services: reads over the ledger and the read models beside it."""
    from prometheus_client import CollectorRegistry

    from adapters.console.graphql.context import Services

    from .read_models import open_store, store_url_for

    store = await open_store(store_url_for(ledger), listen=False)
    try:
        await store.prepare([*registry.select(), DLQ_ENTRIES])
    except Exception:
        await store.close()
        raise
    data = LedgerConsoleData(ledger, store, core)
    services = Services(data=data, commands=commands, tokens=tokens, default_account=settings.account_id)
    return OpenConsole(ledger, store, data, services, CollectorRegistry())


def console_readiness(opened: OpenConsole, nc: Client | None) -> Any:
    """/ready of a console alone: the ledger answers (NATS is optional: only the DLQ needs it)."""
    from adapters.console.probes import Check, Readiness

    def readiness() -> Readiness:
        checks: dict[str, Check] = {}
        try:
            head = opened.ledger.head()[0]
            checks["ledger"] = Check(True, f"reachable, head at position {head}")
        except LedgerError as error:
            checks["ledger"] = Check(False, f"unreachable: {error}")
        connected = nc is not None and nc.is_connected
        checks["nats"] = Check(True, "connected" if connected else "not connected (the DLQ actions need it)")
        return Readiness("console", checks)

    return readiness


async def optional_nats(settings: Settings) -> Client | None:
    """A NATS connection when one answers quickly (the DLQ lives there), else None."""
    from adapters.nats import connection

    try:
        return await asyncio.wait_for(connection.connect(settings, name="titan console", reconnect=True), 3.0)
    except Exception:  # noqa: BLE001 - the console works without NATS; the DLQ actions say so
        return None
