"""Python's garbage collector in titan's long-running processes (FIELD-NOTES: it took 27–39% of
group-commit time when left at its defaults).

Everything loaded at start-up (the core, pydantic's models, the libraries) lives as long as the
process: `gc.freeze()` moves it out of the collector's sight, and a higher first-generation
threshold stops a collection every 700 allocations of the hot path's short-lived objects (they are
freed by reference counting; cycles are rare and still collected, just less often).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

SERVICE_THRESHOLDS: Final = (50_000, 20, 100)


def tune_for_service() -> None:
    """Freeze what start-up allocated and raise the thresholds (call once, after start-up)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*SERVICE_THRESHOLDS)


BATCH_THRESHOLDS: Final = SERVICE_THRESHOLDS
"""The same for one long pass over the ledger (replay verify, ledger verify, export): each record's
objects die young, freed by reference counting; collections every 700 allocations only walk them."""


@contextmanager
def tuned_for_pass() -> Iterator[None]:
    """For a long pass over the ledger: freeze what is loaded, raise the thresholds, and put the
    collector back as it was afterwards (measured: replay verify spent ~10% of its time in the
    collector, export ~25%; see docs/performance.md, "Read side")."""
    before = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*BATCH_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
