"""Writer leases for a sync `Ledger` (the embedded SQLite ledger), so the group-commit writer
works on it too.

Each lease runs the ledger's calls on its own worker thread (SQLite work stays off the event
loop). Leases are exclusive within the process, and, when a lock file is given, across processes:
an `flock` on `<lock_path>.lease-<key>`, released by the kernel when its holder dies.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from commands.lease import LeaseLost, LeaseRefused
from commands.ports import Ledger, LedgerError, NewRecord, Record

T = TypeVar("T")

# Leases held in this process: ledger -> {stream id: holder}.
_held: weakref.WeakKeyDictionary[Ledger, dict[str, str]] = weakref.WeakKeyDictionary()


def _lease_file_key(stream_id: str) -> str:
    return hashlib.sha256(stream_id.encode("utf-8")).hexdigest()[:16]


class LocalLease:
    """A held lease on one stream of a sync ledger."""

    def __init__(self, store: LocalLeaseStore, stream_id: str, holder: str, lock_fd: int | None) -> None:
        self._store = store
        self.stream_id = stream_id
        self._holder = holder
        self._lock_fd = lock_fd
        self._released = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"titan-lease-{stream_id}")

    @property
    def holder(self) -> str:
        """Who holds the lease."""
        return self._holder

    async def append(self, records: Sequence[NewRecord]) -> list[Record]:
        """Append records atomically under the lease; raise LeaseLost if it is gone."""
        return await self._call(lambda: self._store.ledger.append(records))

    async def read_stream(self, stream_id: str, after_version: int = 0) -> list[Record]:
        """Return one stream's records in version order."""
        return await self._call(lambda: self._store.ledger.read_stream(stream_id, after_version))

    async def first_records(self, stream_ids: Sequence[str]) -> dict[str, Record]:
        """Return the version-1 record of each of these streams that exists."""

        def read() -> dict[str, Record]:
            found: dict[str, Record] = {}
            for stream_id in stream_ids:
                records = self._store.ledger.read_stream(stream_id)
                if records:
                    found[stream_id] = records[0]
            return found

        return await self._call(read)

    async def release(self) -> None:
        """Give the lease up (idempotent)."""
        if self._released:
            return
        self._released = True
        self._store._forget(self.stream_id)
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor drops the flock
        self._executor.shutdown(wait=False)

    async def _call(self, work: Callable[[], T]) -> T:
        if self._released:
            raise LeaseLost(self.stream_id, "it was released")
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)


class LocalLeaseStore:
    """Grants writer leases on a sync ledger (in this process; across processes with a lock file)."""

    def __init__(self, ledger: Ledger, lock_path: str | None = None) -> None:
        self.ledger = ledger
        self.lock_path = lock_path

    async def acquire_lease(self, stream_id: str, holder: str) -> LocalLease:
        """Take the stream's lease for `holder`; raise LeaseRefused when another writer has it."""
        held = _held.setdefault(self.ledger, {})
        if stream_id in held:
            raise LeaseRefused(stream_id, held[stream_id])
        lock_fd = self._lock_file(stream_id, holder) if self.lock_path else None
        held[stream_id] = holder
        return LocalLease(self, stream_id, holder, lock_fd)

    def _forget(self, stream_id: str) -> None:
        _held.get(self.ledger, {}).pop(stream_id, None)

    def _lock_file(self, stream_id: str, holder: str) -> int:
        path = f"{self.lock_path}.lease-{_lease_file_key(stream_id)}"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as error:
            raise LedgerError(f"cannot open the lease file {path}: {error.strerror}") from error
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise LeaseRefused(stream_id, other) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder.encode("utf-8"), 0)
        return fd
