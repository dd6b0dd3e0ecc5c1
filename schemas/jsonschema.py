"""JSON Schema files generated from the wire models, committed under `schemas/json/`.

`python -m schemas.jsonschema` regenerates them; a unit test fails when the committed files drift
from the models.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Final

from .base import WireModel
from .commands import COMMAND_MODELS, command_type
from .dlq import DlqEntry
from .events import EVENT_DATA_MODELS, Envelope
from .execution import ExecCancel, ExecPlace
from .policy import PolicyDocument

JSON_DIRECTORY: Final = Path(__file__).resolve().parent / "json"
DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"


def _schema(model: type[WireModel]) -> dict[str, Any]:
    schema: dict[str, Any] = {"$schema": DIALECT}
    schema.update(model.model_json_schema())
    return schema


def generate() -> dict[str, dict[str, Any]]:
    """Return the JSON Schema of every wire model, keyed by its file name under schemas/json/."""
    schemas: dict[str, dict[str, Any]] = {
        "envelope.v1.json": _schema(Envelope),
        "policy.v1.json": _schema(PolicyDocument),
        "dlq.v1.json": _schema(DlqEntry),
        "execution/place.v1.json": _schema(ExecPlace),
        "execution/cancel.v1.json": _schema(ExecCancel),
    }
    for command in COMMAND_MODELS:
        schemas[f"commands/{command_type(command)}.json"] = _schema(command)
    for type_name, event in EVENT_DATA_MODELS.items():
        schemas[f"events/{type_name}.json"] = _schema(event)
    return dict(sorted(schemas.items()))


def render(schema: dict[str, Any]) -> str:
    """The committed text of a schema: sorted keys, 2-space indent, trailing newline."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write(directory: Path = JSON_DIRECTORY) -> list[Path]:
    """Write every schema under a directory, removing stale .json files; return paths written."""
    directory = Path(directory)
    schemas = generate()
    written: list[Path] = []
    for name, schema in schemas.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(schema), encoding="utf-8")
        written.append(path)
    for path in sorted(directory.rglob("*.json")):
        if path.relative_to(directory).as_posix() not in schemas:
            path.unlink()
    return written


def main(argv: list[str] | None = None) -> int:
    """Regenerate schemas/json/ (or the directory given as the one argument)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1:
        print("usage: python -m schemas.jsonschema [DIRECTORY]", file=sys.stderr)
        return 2
    directory = Path(args[0]) if args else JSON_DIRECTORY
    written = write(directory)
    print(f"wrote {len(written)} JSON Schema files to {directory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
