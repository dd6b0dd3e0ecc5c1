"""Shared by the tests of `titan serve`: a nats-server of the test's own with titan's streams, a key
file, signed commands, and `titan serve` as a real child process (killed -9 when a test says so)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nats
import orjson

from adapters.nats import streams, subjects
from adapters.nats.signing import Keys, generate_keys, keys_text
from infra.settings import Settings
from infra.submit import default_policy
from schemas.policy import policy_hash
from tests.e2e.conftest import ROOT, titan_command
from tests.services import free_port

POLICY_HASH = policy_hash(default_policy())


def write_keys(directory: Path) -> tuple[Path, Keys]:
    """A fresh key file (mode 0600) for every issuer."""
    keys = generate_keys()
    path = directory / "intake.keys"
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(keys_text(keys))
    return path, keys


async def apply_streams(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        await streams.apply(nc.jetstream(), spec=streams.declared(Settings(nats_url=nats_url)))
    finally:
        await nc.close()


def place_order(account: str, n: int, *, phase: int = 1, prefix: str = "o", actor: str | None = None) -> dict[str, Any]:
    """A small limit order from a phase (no ts_ns: the intake stamps it)."""
    cid = f"{account}-{prefix}{n:06d}"
    price = f"{65000 + n % 7}.0"
    return {
        "type": "place_order.v1",
        "command_id": cid,
        "account_id": account,
        "actor": actor or f"phase{phase}-test",
        "policy_hash": POLICY_HASH,
        "phase_id": phase,
        "intent_id": cid,
        "client_order_id": cid,
        "venue": "paper",
        "symbol": "BTCUSDT",
        "side": "BUY" if n % 2 else "SELL",
        "quantity": "0.010",
        "price": price,
        "reference_price": price,
    }


def encode(command: Mapping[str, Any]) -> bytes:
    return orjson.dumps(command)


def subject_for(command: Mapping[str, Any]) -> str:
    return subjects.command_subject(str(command["account_id"]), str(command["type"]))


RUNNING: list[ServeProcess] = []
"""Every serve a test started: the live tests' fixture kills what is left when a test ends."""


class ServeProcess:
    """`titan serve` in a child process; its stderr goes to a log file in the test's directory."""

    def __init__(self, directory: Path, env: Mapping[str, str], *, name: str = "serve", args: tuple[str, ...] = ()) -> None:
        self.directory = directory
        self.port = free_port()
        self.log_path = directory / f"{name}.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TITAN_") or k == "TITAN_CORE"}
        self.env.update({"PYTHONPATH": str(ROOT), "TITAN_SERVE_PORT": str(self.port), **env})
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServeProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [*titan_command(), "serve", *self.args], cwd=self.directory, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        RUNNING.append(self)
        return self

    def readiness(self) -> tuple[int, dict[str, Any]] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ready", timeout=2) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())
        except (OSError, ValueError):
            return None

    def wait_ready(self, timeout_s: float = 60.0) -> float:
        """Seconds until /ready said 200."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"titan serve exited {self.process.returncode}:\n{self.log()}")
            state = self.readiness()
            if state is not None and state[0] == 200:
                return time.monotonic() - started
            time.sleep(0.05)
        raise AssertionError(f"titan serve not ready in {timeout_s} s: {self.readiness()}\n{self.log()}")

    def wait_role(self, role: str, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = self.readiness()
            if state is not None and state[1].get("role") == role:
                return
            time.sleep(0.05)
        raise AssertionError(f"titan serve never became {role}: {self.readiness()}\n{self.log()}")

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as answer:
            return str(answer.read().decode())

    def kill9(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def terminate(self, timeout_s: float = 60.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout_s)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def close(self) -> None:
        self.kill9()


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


class PaperProcess:
    """`titan paper run` in a child process (the paper execution engine on NATS)."""

    def __init__(self, directory: Path, env: Mapping[str, str], args: tuple[str, ...], *, name: str = "paper") -> None:
        self.child = ServeProcess(directory, env, name=name, args=args)
        self.log_path = self.child.log_path

    def start(self) -> PaperProcess:
        with self.log_path.open("ab") as log:
            self.child.process = subprocess.Popen(
                [*titan_command(), "paper", "run", *self.child.args],
                cwd=self.child.directory, env=self.child.env, stdout=log, stderr=subprocess.STDOUT,
            )
        RUNNING_PAPER.append(self)
        return self

    def kill9(self) -> None:
        self.child.kill9()

    def terminate(self, timeout_s: float = 60.0) -> int:
        return self.child.terminate(timeout_s)

    def log(self) -> str:
        return self.child.log()


RUNNING_PAPER: list[PaperProcess] = []
