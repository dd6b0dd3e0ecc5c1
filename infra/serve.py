"""`titan serve`: the live Brain (SPEC §4, §8; docs/operations.md): intake, the group-commit
writer, the relay, the execution gateway, the projector and the DLQ router and view in one
process, with probes.

Leadership. One serve leads a ledger's intake at a time: it holds the serve lease (a writer lease
on the stream `serve-TITAN_CMD`, the same mechanism as an account's: a PostgreSQL session advisory
lock, or a lock file beside an embedded ledger; released by the database or the kernel when the
process dies). A second serve is a hot standby: it connects, verifies the stream spec, reports
itself alive and not ready, and asks for the lease every `STANDBY_POLL_S`. When it gets it, it
loads each account from the ledger (not from the dead leader's memory) and starts the intake;
commands the dead leader had fetched and not acked come back when their ack wait (10 s) expires
and are decided once (command ids).

Drain (SIGTERM, SIGINT): stop fetching, let the batch in hand commit, ack and answer, commit what
the writers have queued, let the relay mirror up to the head (bounded), then release the leases
and exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from nats.aio.client import Client
from prometheus_client import CollectorRegistry, Gauge

from adapters.console.probes import Check, Readiness
from adapters.leased_ledger import holder_name
from adapters.nats import dlq, streams, subjects
from adapters.nats.gateway import Gateway
from adapters.nats.gateway_metrics import GatewayMetrics
from adapters.nats.intake import Intake
from adapters.nats.intake_metrics import IntakeMetrics
from adapters.nats.ledger_follow import wakeups_for
from adapters.nats.relay import Relay
from adapters.nats.relay_metrics import RelayMetrics
from adapters.nats.signing import Keys
from commands.envelope import account_stream
from commands.lease import LeaseRefused, LeaseStore, StreamLease
from commands.ports import Ledger, LedgerError
from commands.writer import GroupCommitBus
from projections import registry
from projections.runner import Runner
from schemas import commands as wire

from .read_models import open_store, store_url_for
from .settings import Settings
from .submit import INIT_ACTOR, default_policy, init_id
from .writers import lease_store, snapshot_options

SERVE_LEASE: Final = f"serve-{subjects.CMD_STREAM}"
"""The lease that makes one serve the intake's leader for a ledger."""
RELAY_LEASE: Final = f"relay-{subjects.EVT_STREAM}"
"""The relay's lease (shared with `titan relay run`: only one mirrors a ledger)."""
GATEWAY_LEASE: Final = f"gateway-{subjects.EXEC_STREAM}"
"""The execution gateway's lease: one sends a ledger's orders to execution."""
STANDBY_POLL_S: Final = 0.25
"""How often a standby asks for the serve lease: the part of a takeover titan controls."""
DRAIN_RELAY_S: Final = 5.0
CONSUMER_POLL_S: Final = 2.0


Log = Callable[[str], None]


@dataclass
class ServiceState:
    """What /ready reports, updated as the service moves through its life."""

    role: str = "starting"
    checks: dict[str, Check] = field(default_factory=dict)
    took_over_at: float | None = None

    def readiness(self) -> Readiness:
        return Readiness(self.role, dict(self.checks))

    def set(self, name: str, ok: bool, detail: str) -> None:
        self.checks[name] = Check(ok, detail)


class Service:
    """One `titan serve` process's work, given its connections (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        nc: Client,
        core: Any,
        *,
        accounts: Sequence[str],
        keys: Keys | None,
        registry_: CollectorRegistry | None = None,
        log: Log | None = None,
        projector: bool = True,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.nc = nc
        self.js = nc.jetstream()
        self.core = core
        self.accounts = list(accounts)
        self.keys = keys
        self.registry = registry_ or CollectorRegistry()
        self.log = log or (lambda _line: None)
        self.projector = projector
        self.state = ServiceState()
        self.intake_metrics = IntakeMetrics(self.registry)
        self.relay_metrics = RelayMetrics(self.registry)
        self.gateway_metrics = GatewayMetrics(self.registry)
        self._leader = Gauge("titan_serve_leader", "1 while this serve leads the intake (0: standby)", registry=self.registry)
        self._store: LeaseStore = lease_store(ledger)
        self._snapshot_options = snapshot_options(ledger, settings)
        self._leases: list[StreamLease] = []
        self.bus: GroupCommitBus | None = None

    def leading_bus(self) -> GroupCommitBus | None:
        """The bus while this serve leads (the console acts through it), else None."""
        return self.bus if self.state.role == "leader" else None

    # Life ----------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Verify the spec, wait to lead, serve until `stop`, then drain. A leader that loses the
        serve lease (its database session ended) drains and becomes a standby again."""
        await streams.require_spec(self.js, streams.declared(self.settings))
        self.state.set("stream_spec", True, "TITAN_* streams and consumers match the declared spec")
        health = self._task(self._health(stop), "health")
        try:
            while not stop.is_set():
                leader = await self._wait_for(SERVE_LEASE, stop, standby=True)
                if leader is None:
                    break
                self._leases.append(leader)
                self.state.took_over_at = time.monotonic()
                lost = asyncio.Event()
                watch = self._task(self._watch_lease(leader, lost, stop), "lease-watch")
                try:
                    await self._lead(stop, lost)
                except LedgerError as error:
                    # The ledger went away while taking over or leading: give the leadership back
                    # (a standby, or this serve again, takes it when the ledger answers).
                    self.log(f"serve: leading stopped ({error}); standing by")
                    self.state.set("lease", False, f"gave {SERVE_LEASE} back: {error}")
                finally:
                    watch.cancel()
                    await asyncio.gather(watch, return_exceptions=True)
                    await self._release()
                if lost.is_set():
                    self.log("serve: lost the serve lease; drained, standing by")
        finally:
            health.cancel()
            await asyncio.gather(health, return_exceptions=True)
            await self._release()
            if "snapshots" in self._snapshot_options:
                await asyncio.to_thread(self._snapshot_options["snapshots"].close)

    async def _watch_lease(self, lease: StreamLease, lost: asyncio.Event, stop: asyncio.Event) -> None:
        """Ask the lease's own session, every poll, whether it is still there."""
        while not stop.is_set():
            try:
                await lease.read_stream(SERVE_LEASE)
            except LedgerError as error:
                self.state.set("lease", False, f"lost {SERVE_LEASE}: {error}")
                lost.set()
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), CONSUMER_POLL_S)

    async def _health(self, stop: asyncio.Event) -> None:
        """Keep the `nats` and `ledger` checks current, and the consumer's gauges."""
        while not stop.is_set():
            connected = self.nc.is_connected
            self.state.set("nats", connected, "connected" if connected else "connection lost; reconnecting")
            try:
                head = (await asyncio.to_thread(self.ledger.head))[0]
                self.state.set("ledger", True, f"reachable, head at position {head}")
            except Exception as error:  # noqa: BLE001 - reported, the writers retry on their own
                self.state.set("ledger", False, f"unreachable: {error}")
            bus = self.bus
            if bus is not None:
                failed = {account: w.failed for account, w in bus.writers.items() if w.failed is not None}
                if failed:
                    self.state.set("writers", False, "; ".join(f"{a}: {e}" for a, e in failed.items()))
                elif self.state.role == "leader":
                    self.state.set("writers", True, f"{len(bus.writers)} account writer(s) hold their leases")
            if connected:
                with contextlib.suppress(Exception):
                    info = await self.js.consumer_info(subjects.CMD_STREAM, subjects.INTAKE_CONSUMER)
                    self.intake_metrics.num_pending.set(info.num_pending or 0)
                    self.intake_metrics.num_ack_pending.set(info.num_ack_pending or 0)
                    self.intake_metrics.num_redelivered.set(info.num_redelivered or 0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), CONSUMER_POLL_S)

    async def _lead(self, stop: asyncio.Event, lost: asyncio.Event) -> None:
        self.state.role = "starting"
        self.state.set("lease", True, f"holds {SERVE_LEASE}")
        bus = GroupCommitBus(
            self._store,
            self.core,
            holder=f"{holder_name('serve')}",
            on_commit=self.intake_metrics.committed,
            **self._snapshot_options,
        )
        self.bus = bus
        try:
            for account_id in self.accounts:
                await self._start_account(bus, account_id, stop)
                if stop.is_set():
                    await bus.stop()
                    return
        except BaseException:
            await bus.stop()  # the writers started so far give their leases back
            self.bus = None
            raise
        self.state.set("writers", True, f"writers of {', '.join(self.accounts)} hold their leases")
        intake_stop, others_stop = asyncio.Event(), asyncio.Event()
        intake = Intake(
            self.nc,
            bus,
            keys=self.keys,
            window_s=self.settings.intake_window_s,
            metrics=self.intake_metrics,
            log=self.log,
        )
        tasks = [
            self._supervised("intake", lambda: intake.run(intake_stop), intake_stop),
            self._supervised("relay", lambda: self._relay(others_stop), others_stop),
            self._supervised("gateway", lambda: self._gateway(others_stop), others_stop),
            self._supervised("dlq_router", lambda: dlq.DlqRouter(self.js).run(others_stop), others_stop),
        ]
        if self.projector:
            tasks.append(self._supervised("projector", lambda: self._projections(others_stop), others_stop))
        self.state.role = "leader"
        self._leader.set(1)
        self.log(f"serve: leading the intake for {', '.join(self.accounts)}")
        stopper = asyncio.ensure_future(stop.wait())
        loser = asyncio.ensure_future(lost.wait())
        await asyncio.wait([stopper, loser, *tasks], return_when=asyncio.FIRST_COMPLETED)
        failed = [task for task in tasks if task.done() and not task.cancelled() and task.exception()]
        self.state.role = "draining"
        self._leader.set(0)
        intake_stop.set()
        await asyncio.gather(tasks[0], return_exceptions=True)
        await bus.stop()
        others_stop.set()
        await asyncio.wait(tasks[1:], timeout=DRAIN_RELAY_S + 5)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        stopper.cancel()
        loser.cancel()
        self.bus = None
        if failed:
            raise failed[0].exception() or RuntimeError("a serve task failed")

    def _supervised(self, name: str, make: Callable[[], Awaitable[None]], stop: asyncio.Event) -> asyncio.Task[None]:
        """Run a part of the service until `stop`, starting it again after a failure (backing off
        from 0.5 s to 5 s): a lost database or NATS makes a part not ready, never ends serve."""

        async def supervise() -> None:
            pause = 0.5
            while not stop.is_set():
                self.state.checks.pop(name, None)  # running again; a failure says so below
                try:
                    await make()
                except asyncio.CancelledError:
                    raise
                except Exception as error:  # noqa: BLE001 - reported on /ready and in the log
                    self.log(f"serve: {name} failed ({type(error).__name__}: {error}); starting it again in {pause:.1f} s")
                    self.state.set(name, False, f"failed: {type(error).__name__}: {error}; restarting")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)
                pause = min(pause * 2, 5.0)

        return asyncio.get_running_loop().create_task(supervise(), name=f"titan-serve-{name}")

    def _task(self, work: Awaitable[None], name: str) -> asyncio.Task[None]:
        async def run() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self.log(f"serve: {name} stopped: {error}")
                self.state.set(name, False, f"stopped: {error}")
                raise

        return asyncio.get_running_loop().create_task(run(), name=f"titan-serve-{name}")

    async def _wait_for(self, stream_id: str, stop: asyncio.Event, *, standby: bool = False) -> StreamLease | None:
        """Take a lease, asking again until it is granted or `stop` is set."""
        said = False
        while not stop.is_set():
            try:
                return await self._store.acquire_lease(stream_id, holder_name("serve"))
            except LeaseRefused as refused:
                if standby:
                    self.state.role = "standby"
                    self.state.set("lease", False, f"standby: {stream_id} is held by {refused.holder}")
                if not said:
                    self.log(f"serve: waiting for {stream_id}, held by {refused.holder}")
                    said = True
            except LedgerError as error:
                self.state.set("ledger", False, str(error))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), STANDBY_POLL_S)
        return None

    async def _start_account(self, bus: GroupCommitBus, account_id: str, stop: asyncio.Event) -> None:
        """Start an account's writer (waiting while another writer holds it) and activate the
        default policy on an account that has no records yet, as `titan submit` does."""
        said = False
        while not stop.is_set():
            try:
                writer = await bus.writer(account_id)
                break
            except LeaseRefused as refused:
                self.state.set("writers", False, f"waiting for the writer lease of {account_id!r}: {refused.holder}")
                if not said:
                    self.log(f"serve: waiting for {account_stream(account_id)}, held by {refused.holder}")
                    said = True
            except LedgerError as error:  # the ledger away while taking over: ask again
                self.state.set("writers", False, f"cannot start the writer of {account_id!r}: {error}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), STANDBY_POLL_S)
        else:
            return
        if writer.version == 0:
            await writer.submit(  # a failure here ends this leadership; serve stands by again
                wire.ActivatePolicy(
                    command_id=init_id(account_id),
                    account_id=account_id,
                    ts_ns=0,
                    actor=INIT_ACTOR,
                    policy=default_policy(),
                )
            )

    async def _relay(self, stop: asyncio.Event) -> None:
        lease = await self._wait_for(RELAY_LEASE, stop)
        if lease is None:
            return
        try:
            await self._mirror(stop)
        finally:
            with contextlib.suppress(LedgerError):
                await lease.release()

    async def _mirror(self, stop: asyncio.Event) -> None:
        from adapters.postgres.ledger import NOTIFY_CHANNEL

        relay = Relay(
            self.ledger,
            self.nc,
            wakeups=wakeups_for(self.settings.ledger_url, NOTIFY_CHANNEL),
            metrics=self.relay_metrics,
            log=self.log,
        )
        relay_stop = asyncio.Event()
        task = asyncio.ensure_future(relay.run(stop=relay_stop))
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if task.done():
            await task  # the relay stopped by itself: raise why (supervised: it starts again)
            return
        # Draining: mirror up to the head the writers left, for a bounded time.
        head = (await asyncio.to_thread(self.ledger.head))[0]
        deadline = time.monotonic() + DRAIN_RELAY_S
        while relay.mirrored_position < head and time.monotonic() < deadline and not task.done():
            await asyncio.sleep(0.05)
        relay_stop.set()
        await task

    async def _gateway(self, stop: asyncio.Event) -> None:
        """Every accepted order and cancel request, once, to `titan.exec.<venue>.place|cancel`,
        driven by ledger position (adapters/nats/gateway.py); after the drain it sends up to the
        head the writers left, like the relay."""
        from adapters.postgres.ledger import NOTIFY_CHANNEL

        lease = await self._wait_for(GATEWAY_LEASE, stop)
        if lease is None:
            return
        try:
            gateway = Gateway(
                self.ledger,
                self.nc,
                wakeups=wakeups_for(self.settings.ledger_url, NOTIFY_CHANNEL),
                metrics=self.gateway_metrics,
                log=self.log,
            )
            gateway_stop = asyncio.Event()
            task = asyncio.ensure_future(gateway.run(gateway_stop))
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if not task.done():
                head = (await asyncio.to_thread(self.ledger.head))[0]
                deadline = time.monotonic() + DRAIN_RELAY_S
                while gateway.scanned_position < head and time.monotonic() < deadline and not task.done():
                    await asyncio.sleep(0.05)
                gateway_stop.set()
            await task
        finally:
            with contextlib.suppress(LedgerError):
                await lease.release()

    async def _projections(self, stop: asyncio.Event) -> None:
        store = await open_store(store_url_for(self.ledger))
        feed = dlq.DlqFeed(self.js, store)
        runner = Runner(self.ledger, store, registry.select())
        try:
            follow = asyncio.ensure_future(runner.follow())
            feeding = asyncio.ensure_future(feed.run(stop))
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait([follow, feeding, stopping], return_when=asyncio.FIRST_COMPLETED)
            runner.stop()
            stopping.cancel()
            if not stop.is_set():
                # One of them ended by itself (a lost read-model database): raise why, so the
                # supervisor starts the projector again.
                feeding.cancel()
                follow.cancel()
            for task in (follow, feeding):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if not stop.is_set():
                raise LedgerError("the projector stopped by itself")
        finally:
            await store.close()

    async def _release(self) -> None:
        self._leader.set(0)
        leases, self._leases = self._leases, []
        for lease in reversed(leases):
            with contextlib.suppress(LedgerError):
                await lease.release()
