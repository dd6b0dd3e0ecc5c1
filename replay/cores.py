"""The execution cores a replay runs, as slots: each loaded, or the reason it could not be.
`infra.core.load_cores` fills them (the compiled core when it is available, and the interpreted one)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal


class CoreUnavailable(Exception):
    """No execution core could be loaded for a replay."""

CoreChoice = Literal["both", "compiled", "interpreted"]
CORE_CHOICES: Final = ("both", "compiled", "interpreted")


@dataclass(frozen=True)
class CoreSlot:
    """One core a replay asked for: loaded, or the reason it could not be."""

    kind: str
    core: Any | None
    unavailable: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"kind": self.kind, "available": self.core is not None, "reason": self.unavailable}


def first_available(slots: list[CoreSlot]) -> Any:
    """The first loaded core of a list (the interpreted one is always loadable)."""
    for slot in slots:
        if slot.core is not None:
            return slot.core
    raise CoreUnavailable("no execution core could be loaded")
