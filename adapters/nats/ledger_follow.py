"""How the relay learns that the ledger moved: PostgreSQL's LISTEN/NOTIFY (every append sends
`NOTIFY titan_ledger, '<head position>'` in its transaction), or polling an embedded ledger.

A notification only wakes the relay early; the relay polls anyway (`poll_interval_s`), so a
notification connection that was lost, or a notification that was missed, delays a record by at
most one poll and never loses it.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final, Protocol

import asyncpg

POSTGRES_SCHEMES: Final = ("postgresql://", "postgres://")
POSTGRES_POLL_S: Final = 1.0
EMBEDDED_POLL_S: Final = 0.05


class LedgerWakeups(Protocol):
    """Waits until the ledger may have moved."""

    async def start(self) -> None:
        """Begin listening (a no-op for polling)."""
        ...

    async def wait(self) -> None:
        """Return when the ledger may hold new records (a notification, or a poll interval)."""
        ...

    async def close(self) -> None:
        """Stop listening."""
        ...


class Polling:
    """Polls: waits one interval."""

    def __init__(self, interval_s: float = EMBEDDED_POLL_S) -> None:
        self.interval_s = interval_s

    async def start(self) -> None:
        """Nothing to start."""

    async def wait(self) -> None:
        """Sleep one interval."""
        await asyncio.sleep(self.interval_s)

    async def close(self) -> None:
        """Nothing to stop."""


class PostgresNotifications:
    """LISTEN on the ledger's channel; falls back to polling while the listener is down."""

    def __init__(self, url: str, channel: str, poll_interval_s: float = POSTGRES_POLL_S) -> None:
        self.url = url
        self.channel = channel
        self.poll_interval_s = poll_interval_s
        self._event = asyncio.Event()
        self._connection: asyncpg.Connection[Any] | None = None

    async def start(self) -> None:
        """Open the listening connection (a failure leaves polling in charge)."""
        await self._listen()

    async def wait(self) -> None:
        """Return on a notification, or after one poll interval."""
        if self._connection is None or self._connection.is_closed():
            await self._listen()
        try:
            await asyncio.wait_for(self._event.wait(), self.poll_interval_s)
        except TimeoutError:
            pass
        self._event.clear()

    async def close(self) -> None:
        """Close the listening connection."""
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            try:
                await asyncio.wait_for(connection.close(), 2)
            except Exception:  # noqa: BLE001 - closing a lost connection; drop it
                connection.terminate()

    async def _listen(self) -> None:
        try:
            connection: asyncpg.Connection[Any] = await asyncpg.connect(
                self.url, timeout=5, server_settings={"application_name": "titan relay listener"}
            )
            await connection.add_listener(self.channel, self._notified)
        except Exception:  # noqa: BLE001 - unreachable for now: the poll interval still applies
            self._connection = None
            return
        self._connection = connection

    def _notified(self, *_args: object) -> None:
        self._event.set()


def wakeups_for(url: str, channel: str) -> LedgerWakeups:
    """LISTEN/NOTIFY for a PostgreSQL ledger URL, polling otherwise."""
    if url.startswith(POSTGRES_SCHEMES):
        return PostgresNotifications(url, channel)
    return Polling()
