"""Field-level differences between a recorded document and a replayed one (JSON values).

Leaves compare by type and value, so `1` and `true`, or `"1"` and `1`, are different (they
serialize differently and would change the hash). Paths read like `data.checks[3].value`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

CHANGED: Final = "changed"
MISSING: Final = "missing"  # in the ledger, not replayed
EXTRA: Final = "extra"  # replayed, not in the ledger


@dataclass(frozen=True, slots=True)
class FieldDiff:
    """One differing field: where, what the ledger holds, what the replay produced."""

    path: str
    recorded: Any
    replayed: Any
    change: str = CHANGED

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"path": self.path, "change": self.change, "recorded": self.recorded, "replayed": self.replayed}


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _same_leaf(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def diff_values(recorded: Any, replayed: Any, path: str = "", limit: int = 500) -> list[FieldDiff]:
    """Every differing leaf of two JSON values, in key order (at most `limit`)."""
    found: list[FieldDiff] = []
    _diff(recorded, replayed, path, found, limit)
    return found


def _diff(recorded: Any, replayed: Any, path: str, found: list[FieldDiff], limit: int) -> None:
    if len(found) >= limit:
        return
    if isinstance(recorded, dict) and isinstance(replayed, dict):
        for key in sorted(set(recorded) | set(replayed)):
            where = _join(path, str(key))
            if key not in replayed:
                found.append(FieldDiff(where, recorded[key], None, MISSING))
            elif key not in recorded:
                found.append(FieldDiff(where, None, replayed[key], EXTRA))
            else:
                _diff(recorded[key], replayed[key], where, found, limit)
            if len(found) >= limit:
                return
        return
    if isinstance(recorded, list) and isinstance(replayed, list):
        for index in range(max(len(recorded), len(replayed))):
            where = f"{path}[{index}]"
            if index >= len(replayed):
                found.append(FieldDiff(where, recorded[index], None, MISSING))
            elif index >= len(recorded):
                found.append(FieldDiff(where, None, replayed[index], EXTRA))
            else:
                _diff(recorded[index], replayed[index], where, found, limit)
            if len(found) >= limit:
                return
        return
    if not _same_leaf(recorded, replayed):
        found.append(FieldDiff(path or "(value)", recorded, replayed))
