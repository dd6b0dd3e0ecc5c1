"""Every read model titan builds. Adding one is one module and one line here
(docs/projections.md, "Adding a read model")."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from . import breaker, budget, commands, decisions, dlq, orders, positions, truth, venue_quality
from .model import Projection

PROJECTIONS: Final[tuple[Projection, ...]] = (
    positions.PROJECTION,
    orders.PROJECTION,
    decisions.PROJECTION,
    commands.PROJECTION,
    dlq.PROJECTION,
    truth.PROJECTION,
    breaker.PROJECTION,
    budget.PROJECTION,
    venue_quality.PROJECTION,
)


class UnknownProjection(LookupError):
    """A projection name that is not registered."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.accepted = names()
        super().__init__(f"no projection named {name!r}; accepted: {', '.join(self.accepted)}")


def names() -> tuple[str, ...]:
    """The registered projections' names, in registration order."""
    return tuple(projection.name for projection in PROJECTIONS)


def select(wanted: Iterable[str] | None = None) -> list[Projection]:
    """The named projections (all when `wanted` is None); raise UnknownProjection."""
    if wanted is None:
        return list(PROJECTIONS)
    known = {projection.name: projection for projection in PROJECTIONS}
    chosen: list[Projection] = []
    for name in wanted:
        if name not in known:
            raise UnknownProjection(name)
        if known[name] not in chosen:
            chosen.append(known[name])
    return chosen


def _check_unique() -> None:
    seen: set[str] = set()
    for projection in PROJECTIONS:
        for table in projection.tables:
            if table.name in seen or table.name == "rm_tracking":
                raise ValueError(f"table {table.name} is declared twice")
            seen.add(table.name)
    if len(set(names())) != len(PROJECTIONS):
        raise ValueError("two projections share a name")


_check_unique()
