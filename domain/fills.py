"""Every venue fill id an account has counted, so that none is ever counted twice (SPEC §2).

A fill id is unique per venue, whichever order it names. The memory grows with every fill, so it
is not copied on each one: the states of one lineage share an append-only log, and each state sees
the entries written before it (`count`). A state that is extended while it is not the newest (a
decision re-made from an older state: what-if, a retried append) gets a copy of its own view first,
so no state ever sees a fill counted after it. Lookups only test membership: no decision depends
on the order of the entries. Extending is atomic (a lock), so a what-if branch taken in another
thread from the writer's state cannot race the writer; a branch costs a copy of the log up to it.
"""

from __future__ import annotations

import threading
from typing import Final


class FillLog:
    """The shared, append-only log: `venue:fill_id` -> (sequence, order id)."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[int, str]] = {}
        self.size: int = 0
        self.lock: Final = threading.Lock()


class Fills:
    """The fill ids one state has counted: the first `count` entries of a shared log."""

    def __init__(self, log: FillLog, count: int) -> None:
        self.log: Final = log
        self.count: Final = count

    def counted_on(self, venue: str, fill_id: str) -> str:
        """The order the venue's fill id was counted on, or "" if it never was."""
        entry = self.log.entries.get(fill_key(venue, fill_id))
        if entry is None or entry[0] >= self.count:
            return ""
        return entry[1]

    def with_fill(self, venue: str, fill_id: str, order_id: str) -> Fills:
        """These fills and one more (the first order a fill id was counted on is kept)."""
        if self.counted_on(venue, fill_id) != "":
            return self
        lock = self.log.lock
        lock.acquire()  # acquire/release: cheaper than `with` in compiled code
        try:
            log = self.log if self.log.size == self.count else _view_of(self.log, self.count)
            log.entries[fill_key(venue, fill_id)] = (log.size, order_id)
            log.size += 1
            return Fills(log, log.size)
        finally:
            lock.release()


def fill_key(venue: str, fill_id: str) -> str:
    """The memory's key of a venue's fill id."""
    return venue + "\x00" + fill_id


def _view_of(log: FillLog, count: int) -> FillLog:
    fresh = FillLog()
    for key, entry in log.entries.items():
        if entry[0] < count:
            fresh.entries[key] = entry
    fresh.size = count
    return fresh


def no_fills() -> Fills:
    """An account that has counted no fill."""
    return Fills(FillLog(), 0)
