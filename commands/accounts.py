"""Account state from the ledger: fold the account stream through the core's evolve."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .ports import Ledger, Record


def fold(core: Any, state: Any, records: Iterable[Record]) -> Any:
    """Apply recorded events to a state, in stream order; returns the new state."""
    decode = core.events.decode_event
    evolve = core.decider.evolve
    for record in records:
        envelope = record.envelope
        state = evolve(state, decode(record.type, envelope["ts_ns"], envelope["data"], state))
    return state


class AccountCache:
    """The latest known state and stream version of each account this process has decided for.

    Before each decision the cache catches up on records other writers appended, so a cached
    state is never used stale; a version conflict on append triggers exactly that catch-up.
    """

    def __init__(self, core: Any, ledger: Ledger) -> None:
        self._core = core
        self._ledger = ledger
        self._entries: dict[str, tuple[Any, int]] = {}

    def current(self, account_id: str, stream_id: str) -> tuple[Any, int]:
        """The account's state and the stream version it reflects, caught up with the ledger."""
        state, version = self._entries.get(account_id) or (self._core.decider.initial_state(account_id), 0)
        newer = self._ledger.read_stream(stream_id, after_version=version)
        if newer:
            state = fold(self._core, state, newer)
            version = newer[-1].version
            self._entries[account_id] = (state, version)
        return state, version

    def store(self, account_id: str, state: Any, version: int) -> None:
        """Remember the state after a successful append."""
        self._entries[account_id] = (state, version)
