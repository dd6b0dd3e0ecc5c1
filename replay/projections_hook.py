"""The hook between replay and the read side: rebuild every projection, compare digests, export.

`titan replay verify` ends by rebuilding every projection from position 0 and comparing each
rebuilt read model's digest with the live one (SPEC §5, §6); `titan ledger export` writes each
read model to Parquet. Replay does not know where read models live (that is the composition
root's business, `infra.read_models.READ_SIDE`): the caller hands it a `ReadSide`. Without one,
verify reports `{"ok": None, "available": False, ...}` and export writes the ledger's own tables
only; both say so. A rebuild that raises is a failed check (`ok: False`, the gate exits 1).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from commands.ports import Ledger

NOT_AVAILABLE = "no read side was given: projection digests were not compared"


class ReadSide(Protocol):
    """The read models beside a ledger, as replay and export use them."""

    def verify_digests(self, ledger: Ledger) -> dict[str, Any]:
        """Rebuild every projection and compare digests: `{"ok", "models", "message"}`."""
        ...

    def export_rows(self, ledger: Ledger) -> dict[str, list[dict[str, Any]]]:
        """Every read model's rows at the ledger's head, by model name (plain JSON values)."""
        ...


def check_projections(ledger: Ledger, read_side: ReadSide | None) -> dict[str, Any]:
    """Rebuild every projection and compare digests, when a read side is given."""
    if read_side is None:
        return {"ok": None, "available": False, "message": NOT_AVAILABLE}
    try:
        result: dict[str, Any] = dict(read_side.verify_digests(ledger))
    except Exception as error:  # noqa: BLE001 - a rebuild that cannot run is a failed check
        return {
            "ok": False,
            "available": True,
            "message": f"rebuilding the projections failed: {type(error).__name__}: {error}",
        }
    result.setdefault("available", True)
    return result


def read_models(ledger: Ledger, read_side: ReadSide | None) -> tuple[dict[str, Iterable[dict[str, Any]]], str | None]:
    """Every read model's rows for export, or ({}, why not)."""
    if read_side is None:
        return {}, "no read side was given: no read models exported"
    models: dict[str, Iterable[dict[str, Any]]] = dict(read_side.export_rows(ledger))
    return models, None
