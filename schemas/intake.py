"""New input from the outside: bounded JSON first, then a command or a policy with every bound on.

Every entry point that takes commands or policies from the outside (`titan submit`, `titan policy
hash|activate`, later the NATS intake and the API) reads them here, so that no input, however
large, deep or malformed, gets further than a `WireInputError` naming the field and the bound.
Error texts never repeat more than a short prefix of what was received.
"""

from __future__ import annotations

import json
from typing import Any, Final

import orjson
from pydantic import ValidationError

from .base import INT64_MAX, INT64_MIN
from .commands import COMMAND_MODELS, COMMANDS, AnyCommand, command_type
from .policy import PolicyDocument

MAX_LINE_BYTES: Final = 1 << 20
"""A command line (or a policy file) is at most 1 MiB: the largest valid command (a truth snapshot
listing 5000 open orders and 1000 positions) is about 850 KB."""
MAX_DEPTH: Final = 64
"""Arrays and objects nest at most 64 deep (a valid command nests 6 deep)."""
MAX_ECHO_CHARS: Final = 128
"""At most this many characters of a received text are repeated in an error."""
MAX_ERRORS: Final = 20
"""At most this many errors are listed for one input."""

ACCEPTED_TYPES: Final = tuple(command_type(model) for model in COMMAND_MODELS)
_NUMBER_BOUND: Final = "numbers are integers within -2^63 .. 2^63-1 (decimals are written as strings)"


class WireInputError(ValueError):
    """Input refused before it was decided: `errors` lists {field, error}; `command_id` is a bounded
    echo of the input's command id when it had one."""

    def __init__(self, errors: list[dict[str, str]], command_id: str | None = None) -> None:
        super().__init__("; ".join(f"{e['field']}: {e['error']}" for e in errors))
        self.errors = errors
        self.command_id = command_id


def echo(text: str, limit: int = MAX_ECHO_CHARS) -> str:
    """At most `limit` characters of a received text, followed by its size when it was longer; a
    lone surrogate (which JSON can spell but UTF-8 cannot hold) is shown as its escape."""
    shown = text if len(text) <= limit else text[:limit] + f"…({len(text.encode('utf-8', 'surrogatepass'))} bytes)"
    return shown.encode("utf-8", "backslashreplace").decode("utf-8")


def _error(field: str, error: str) -> dict[str, str]:
    return {"field": field, "error": error}


def load_json(raw: bytes, root: str = "(line)") -> Any:
    """Decode one JSON document of at most 1 MiB of UTF-8, nested at most 64 deep, whose numbers
    are all 64-bit integers; raise WireInputError (field `root`) naming the bound otherwise."""
    if len(raw) > MAX_LINE_BYTES:
        raise WireInputError([_error(root, f"at most {MAX_LINE_BYTES} bytes (1 MiB) accepted; got {len(raw)}")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WireInputError([_error(root, f"not valid UTF-8 (byte {exc.start})")]) from None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        message = str(exc)
        if message.startswith("number is infinity"):
            marked = _with_numbers_marked(text)  # read again, to name the field that holds the number
            problems = json_bound_problems(marked, root) or [_error(root, _NUMBER_BOUND)]
            raise WireInputError(problems, _command_id_of(marked)) from None
        if message.startswith("depth limit exceeded"):
            message = f"nested deeper than {MAX_DEPTH} levels"
        else:
            message = "not valid JSON: " + echo(message, 200)
        raise WireInputError([_error(root, message)]) from None
    problems = json_bound_problems(value, root)
    if problems:
        raise WireInputError(problems, _command_id_of(value))
    return value


class _HugeNumber:
    """Stands in for a number too large to read (orjson refuses it; int() stops at 4300 digits)."""


def _huge_int(digits: str) -> int | _HugeNumber:
    return _HugeNumber() if len(digits) > 20 else int(digits)


def _marker(_: str) -> _HugeNumber:
    return _HugeNumber()


def _with_numbers_marked(text: str) -> Any:
    """The document read again with huge numbers replaced by markers, or None when it cannot be."""
    try:
        return json.loads(text, parse_int=_huge_int, parse_float=_marker, parse_constant=_marker)
    except (ValueError, RecursionError):  # not JSON after all, or nested beyond Python's stack
        return None


def json_bound_problems(value: Any, root: str = "(line)") -> list[dict[str, str]]:
    """The places where decoded JSON nests deeper than 64 or holds a number that is not a 64-bit
    integer (orjson reads a larger integer as a float; the wire has no floats)."""
    problems: list[dict[str, str]] = []
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack and len(problems) < MAX_ERRORS:
        item, path, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                problems.append(_error(echo(path, 200) or root, f"nested deeper than {MAX_DEPTH} levels"))
                continue
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            children = [(child, f"{path}.{echo(str(key), 64)}" if path else echo(str(key), 64), depth + 1) for key, child in pairs]
            stack.extend(reversed(children))
        elif isinstance(item, float | _HugeNumber) or (
            isinstance(item, int) and not isinstance(item, bool) and not INT64_MIN <= item <= INT64_MAX
        ):
            problems.append(_error(echo(path, 200) or root, _NUMBER_BOUND))
    return problems


def _command_id_of(value: Any) -> str | None:
    command_id = value.get("command_id") if isinstance(value, dict) else None
    return echo(command_id) if isinstance(command_id, str) else None


def errors_of(exc: ValidationError, root: str = "(line)") -> list[dict[str, str]]:
    """pydantic's errors as {field, error}, bounded: never the input, at most 20 of them."""
    accepted = ", ".join(ACCEPTED_TYPES)
    errors: list[dict[str, str]] = []
    for error in exc.errors(include_url=False, include_input=False):
        field = ".".join(echo(str(part), 64) for part in error["loc"]) or root
        if error["type"] == "union_tag_not_found":
            errors.append(_error("type", f"missing; accepted: {accepted}"))
        elif error["type"] == "union_tag_invalid":
            errors.append(_error("type", f"unknown command type; accepted: {accepted}"))
        else:
            errors.append(_error(field, echo(error["msg"], 300)))
    if len(errors) > MAX_ERRORS:
        errors = [*errors[:MAX_ERRORS], _error(root, f"and {len(errors) - MAX_ERRORS} more errors")]
    return errors


def _kind(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", int: "a number", type(None): "null"}.get(
        type(value), "not an object"
    )


def parse_new_command(raw: bytes, *, stamp: int | None = None, issued_ts_ns: int | None = None) -> AnyCommand:
    """A new command from one JSON line, every bound applied; raise WireInputError.

    With `stamp` (the NATS intake), `ts_ns` is the time of receipt whatever the payload says, and
    `issued_ts_ns`, when the payload has none, is the issuer's signed time."""
    value = load_json(raw)
    if not isinstance(value, dict):
        raise WireInputError([_error("(line)", f"a command is a JSON object; got {_kind(value)}")])
    if stamp is not None:
        value["ts_ns"] = stamp
        if issued_ts_ns is not None and value.get("issued_ts_ns") is None:
            value["issued_ts_ns"] = issued_ts_ns
    command_id = _command_id_of(value)
    kind = value.get("type")
    if kind not in ACCEPTED_TYPES:
        problem = "missing" if "type" not in value else "unknown command type"
        raise WireInputError([_error("type", f"{problem}; accepted: {', '.join(ACCEPTED_TYPES)}")], command_id)
    try:
        return COMMANDS.validate_python(value)
    except ValidationError as exc:
        raise WireInputError(errors_of(exc), command_id) from None


def parse_new_policy(raw: bytes) -> PolicyDocument:
    """A new policy document from JSON, every bound applied; raise WireInputError."""
    value = load_json(raw, "(document)")
    if not isinstance(value, dict):
        raise WireInputError([_error("(document)", f"a policy is a JSON object; got {_kind(value)}")])
    try:
        return PolicyDocument.model_validate(value)
    except ValidationError as exc:
        raise WireInputError(errors_of(exc, "(document)")) from None
