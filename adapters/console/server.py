"""Running an ASGI app inside a titan service's own event loop (uvicorn), without uvicorn taking
over the process's signals: the service drains on SIGTERM itself."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Generator
from typing import Any

import uvicorn


class _Embedded(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the service owns SIGTERM and SIGINT


class EmbeddedServer:
    """An HTTP server task: `start()` returns once it listens (OSError if it cannot), `stop()`
    closes it."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        self.address = f"{host}:{port}"
        self._server = _Embedded(
            uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off")
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                try:
                    self._task.result()
                except SystemExit:  # uvicorn exits when it cannot bind
                    pass
                raise OSError(f"cannot listen on {self.address} (in use, or not an address of this machine)")
            await asyncio.sleep(0.02)

    @property
    def port(self) -> int:
        """The port it listens on (useful with port 0)."""
        for server in self._server.servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        raise RuntimeError("not listening")

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 5)
