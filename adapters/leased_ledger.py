"""A sync `Ledger` for a writer that holds its accounts' leases: reads as usual, appends only
through a held lease (SPEC §2: one writer per account, whatever the entry point).

`titan submit`, the operator actions, `titan policy activate`, `titan init` and the demo write
through this; the group-commit writer holds its leases itself. A second writer for an account is
refused when it asks for the lease, before it decides anything, so it writes nothing.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Sequence

from commands.envelope import ACCOUNT_PREFIX
from commands.lease import LeaseLost, LeaseStore, StreamLease
from commands.ports import DEFAULT_SCAN_LIMIT, Ledger, NewRecord, Record, RecordFilter

from .loop_thread import LoopThread


def holder_name(purpose: str) -> str:
    """Who a CLI writer is, as a second writer is told: `titan submit (pid 123 on host)`."""
    return f"titan {purpose} (pid {os.getpid()} on {socket.gethostname()})"


def _account_of_command_record(record: NewRecord) -> str:
    command = record.envelope.get("data", {}).get("command", {})
    return f"{ACCOUNT_PREFIX}{command.get('account_id', '')}"


class LeasedLedger(Ledger):
    """The ledger as seen by the holder of some accounts' writer leases."""

    def __init__(self, ledger: Ledger, store: LeaseStore, holder: str) -> None:
        self._ledger = ledger
        self._store = store
        self._holder = holder
        self._loop = LoopThread("titan-leased-writer")
        self._leases: dict[str, StreamLease] = {}

    @property
    def inner(self) -> Ledger:
        """The ledger underneath."""
        return self._ledger

    def acquire(self, stream_ids: Iterable[str]) -> None:
        """Take the writer lease of each stream not yet held; raise LeaseRefused (holding none of
        the new ones) when another writer has one."""
        taken: list[StreamLease] = []
        try:
            for stream_id in dict.fromkeys(stream_ids):
                if stream_id not in self._leases:
                    lease = self._loop.run(self._store.acquire_lease(stream_id, self._holder))
                    taken.append(lease)
                    self._leases[stream_id] = lease
        except BaseException:
            for lease in taken:
                self._leases = {k: v for k, v in self._leases.items() if v is not lease}
                self._loop.run(lease.release())
            raise

    def append(self, records: Sequence[NewRecord]) -> list[Record]:
        """Append records atomically under the lease of their account stream."""
        streams = {r.stream_id for r in records if r.stream_id.startswith(ACCOUNT_PREFIX)}
        if not streams and records:  # a decision with no event: only its command record
            streams = {_account_of_command_record(records[-1])}
        if len(streams) != 1:
            raise ValueError(f"an append must hold one account stream's records, got {sorted(streams)}")
        (stream_id,) = streams
        lease = self._leases.get(stream_id)
        if lease is None:
            raise LeaseLost(stream_id, "this writer never took its lease")
        return self._loop.run(lease.append(records))

    def read_stream(self, stream_id: str, after_version: int = 0) -> list[Record]:
        """Return one stream's records in version order."""
        return self._ledger.read_stream(stream_id, after_version)

    def read_all(self, after_position: int = 0, limit: int = 1000) -> list[Record]:
        """Return up to `limit` records after a position, in position order."""
        return self._ledger.read_all(after_position, limit)

    def read_matching(
        self, after_position: int, limit: int, where: RecordFilter, *, scan_limit: int = DEFAULT_SCAN_LIMIT
    ) -> tuple[list[Record], int]:
        """Return up to `limit` matching records after a position, and the position the scan reached."""
        return self._ledger.read_matching(after_position, limit, where, scan_limit=scan_limit)

    def head(self) -> tuple[int, str, int]:
        """Return the anchored head: last position, its chain hash and the record count."""
        return self._ledger.head()

    def release(self) -> None:
        """Give every lease up (idempotent); the ledger underneath stays open."""
        leases, self._leases = list(self._leases.values()), {}
        try:
            for lease in leases:
                self._loop.run(lease.release())
        finally:
            self._loop.close()

    def close(self) -> None:
        """Release the leases, then the ledger underneath."""
        self.release()
        self._ledger.close()
