"""The hook between replay and the read side: rebuild every projection, compare digests, export.

`titan replay verify` ends by rebuilding every projection from position 0 and comparing each
rebuilt read model's digest with the live one (SPEC §5, §6); `titan ledger export` writes each
read model to Parquet. Both go through the two functions below, which look for this API on the
`projections` package (provided by the read side; absent here means "not built yet"):

    projections.verify_digests(ledger) -> dict
        {"ok": bool, "models": {name: {"live": digest, "rebuilt": digest}}, "message": str}
    projections.export_rows(ledger) -> dict[str, Iterable[dict]]
        each read model's rows (plain JSON values), by model name

When the package does not expose them, verify reports `{"ok": None, "available": False, ...}`
and export writes records and commands only; both say so in their output and manifest. A
rebuild that raises is a failed check (`ok: False`, the gate exits 1 naming the error).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from commands.ports import Ledger

NOT_AVAILABLE = (
    "the projections package does not expose verify_digests(ledger) yet: projection digests were "
    "not compared (see replay/projections_hook.py)"
)


def _projections_module() -> Any:
    try:
        import projections
    except ImportError:
        return None
    return projections


def check_projections(ledger: Ledger) -> dict[str, Any]:
    """Rebuild every projection and compare digests, when the read side provides it."""
    module = _projections_module()
    verify = getattr(module, "verify_digests", None) if module is not None else None
    if verify is None:
        return {"ok": None, "available": False, "message": NOT_AVAILABLE}
    try:
        result: dict[str, Any] = dict(verify(ledger))
    except Exception as error:  # noqa: BLE001 - a rebuild that cannot run is a failed check
        return {
            "ok": False,
            "available": True,
            "message": f"rebuilding the projections failed: {type(error).__name__}: {error}",
        }
    result.setdefault("available", True)
    return result


def read_models(ledger: Ledger) -> tuple[dict[str, Iterable[dict[str, Any]]], str | None]:
    """Every read model's rows for export, or ({}, why not)."""
    module = _projections_module()
    export = getattr(module, "export_rows", None) if module is not None else None
    if export is None:
        return {}, (
            "the projections package does not expose export_rows(ledger) yet: no read models "
            "exported (see replay/projections_hook.py)"
        )
    models: dict[str, Iterable[dict[str, Any]]] = dict(export(ledger))
    return models, None
