"""Account state from the ledger: fold the account stream through the core's evolve."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .ports import Ledger, LedgerError, Record

if TYPE_CHECKING:
    from .snapshots import Snapshots


def fold(core: Any, state: Any, records: Iterable[Record]) -> Any:
    """Apply recorded events to a state, in stream order; returns the new state."""
    decode = core.events.decode_event
    evolve = core.decider.evolve
    for record in records:
        envelope = record.envelope
        try:
            event = decode(record.type, envelope["ts_ns"], envelope["data"], state)
        except Exception as error:
            raise UnreadableRecord(record, error) from error
        state = evolve(state, event)
    return state


class UnreadableRecord(LedgerError):
    """A recorded event the core cannot read back (the record was altered, or is not titan's)."""

    def __init__(self, record: Record, error: Exception) -> None:
        super().__init__(
            f"ledger record at position {record.position} ({record.stream_id!r} version {record.version}, "
            f"type {record.type!r}) cannot be read as that event ({type(error).__name__}: {str(error)[:200]}); "
            "run `titan ledger verify`"
        )
        self.position = record.position


class AccountCache:
    """The latest known state and stream version of each account this process has decided for.

    Before each decision the cache catches up on records other writers appended, so a cached
    state is never used stale; a version conflict on append triggers exactly that catch-up.
    Given the ledger's snapshots, an account met for the first time starts from its newest
    trusted snapshot instead of its first record.
    """

    def __init__(self, core: Any, ledger: Ledger, snapshots: Snapshots | None = None) -> None:
        self._core = core
        self._ledger = ledger
        self._snapshots = snapshots
        self._entries: dict[str, tuple[Any, int]] = {}

    def current(self, account_id: str, stream_id: str) -> tuple[Any, int]:
        """The account's state and the stream version it reflects, caught up with the ledger."""
        state, version = self._entries.get(account_id) or self._first(account_id)
        newer = self._ledger.read_stream(stream_id, after_version=version)
        if newer:
            state = fold(self._core, state, newer)
            version = newer[-1].version
            self._entries[account_id] = (state, version)
        return state, version

    def _first(self, account_id: str) -> tuple[Any, int]:
        if self._snapshots is None:
            return self._core.decider.initial_state(account_id), 0
        start = self._snapshots.start(self._core, account_id)
        return start.state, start.version

    def store(self, account_id: str, state: Any, version: int) -> None:
        """Remember the state after a successful append."""
        self._entries[account_id] = (state, version)
