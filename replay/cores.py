"""Which execution cores a replay runs: the compiled one when it is available, and the interpreted one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

from infra.core import CoreUnavailableError, load_core

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


def load_cores(choice: CoreChoice = "both") -> list[CoreSlot]:
    """The cores for a replay. "both" tolerates a missing compiled core (the slot says why);
    asking for "compiled" alone raises CoreUnavailableError when it cannot be loaded."""
    if choice not in CORE_CHOICES:
        raise ValueError(f"unknown core choice {choice!r}: use one of {', '.join(CORE_CHOICES)}")
    slots: list[CoreSlot] = []
    if choice in ("both", "compiled"):
        try:
            slots.append(CoreSlot("compiled", load_core("compiled")))
        except ImportError as error:  # not built, TITAN_CORE=interpreted, or a stale build
            if choice == "compiled":
                raise CoreUnavailableError(str(error)) from error
            slots.append(CoreSlot("compiled", None, str(error)))
    if choice in ("both", "interpreted"):
        slots.append(CoreSlot("interpreted", load_core("interpreted")))
    return slots


def first_available(slots: list[CoreSlot]) -> Any:
    """The first loaded core of a list (the interpreted one is always loadable)."""
    for slot in slots:
        if slot.core is not None:
            return slot.core
    raise CoreUnavailableError("no execution core could be loaded")
