"""`titan send FILE|-`: sign and publish JSON-lines commands to a running `titan serve`, printing
each outcome as it comes back (docs/operations.md, "Sending commands").

The lines are the same commands as `titan submit` takes (`ts_ns` may be left out: the intake
stamps the time of receipt). Each is published on `titan.cmd.<account>.<type>` in file order, signed
as `--issuer` with its key from the key file; one JSON line is printed per command, in file order:
the intake's answer (`accepted`, `rejected`, `duplicate`, or `invalid` with the reason the intake
refused it), or, for a line that is not a JSON object with an `account_id` and a `type`, `invalid`
without sending it.

Exit codes: 0 every command decided; 2 a line invalid (here or at the intake), bad options or a key
file that does not parse; 3 NATS unreachable, or no answer in time (is `titan serve` running?).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer

from adapters.nats import connection, subjects
from adapters.nats.sender import NoReply, NotStored, Sender
from adapters.nats.signing import ISSUERS, Keys
from infra.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    EXIT_UNREACHABLE,
    err,
    fail,
    print_json_line,
    read_commands_input,
    settings_for,
)
from schemas.intake import WireInputError, echo, load_json

MAX_IN_FLIGHT = 1000
"""Commands published and not yet answered (the intake consumer's max ack pending)."""


def send_cmd(
    file: Annotated[str, typer.Argument(help="JSON lines of commands, or - for standard input.")] = "-",
    keys: Annotated[Path | None, typer.Option("--keys", help="Key file to sign with (default TITAN_INTAKE_KEYS); none: unsigned.")] = None,
    issuer: Annotated[str, typer.Option("--issuer", help=f"Who signs: {', '.join(ISSUERS)}.")] = "console",
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for each answer.")] = 10.0,
) -> None:
    """Sign and publish commands to `titan serve` through NATS; print each outcome."""
    from infra.cli.serve import keys_or_fail

    settings = settings_for()
    if not 0 < timeout <= 3600:
        fail(f"--timeout {timeout:g} is out of range: give more than 0 and at most 3600 seconds", EXIT_BAD_INPUT)
    key_path = keys or (Path(settings.intake_keys) if settings.intake_keys else None)
    loaded = keys_or_fail(key_path)
    if loaded is not None and issuer not in loaded:
        fail(f"the key file has no key for issuer {issuer!r}; it has: {', '.join(loaded)}", EXIT_BAD_INPUT)
    raw = read_commands_input(file)
    lines = [line for line in raw.splitlines() if line.strip()]
    code = asyncio.run(_send(settings, lines, loaded, issuer, timeout))
    raise typer.Exit(code)


def subject_of(line: bytes) -> str:
    """Where a command line goes: `titan.cmd.<account>.<type>`; raise WireInputError."""
    value = load_json(line)
    if not isinstance(value, dict):
        raise WireInputError([{"field": "(line)", "error": "a command is a JSON object"}])
    account_id, kind = value.get("account_id"), value.get("type")
    missing = [name for name, got in (("account_id", account_id), ("type", kind)) if not isinstance(got, str) or not got]
    if missing:
        raise WireInputError([{"field": name, "error": "missing: the subject is built from it"} for name in missing])
    assert isinstance(account_id, str) and isinstance(kind, str)
    if not kind.replace("_", "").replace(".", "").isalnum():
        raise WireInputError([{"field": "type", "error": f"not a command type: {echo(kind, 64)!r}"}])
    return subjects.command_subject(account_id, kind)


async def _send(settings: Any, lines: list[bytes], keys: Keys | None, issuer: str, timeout_s: float) -> int:
    try:
        nc = await connection.connect(settings, name="titan send", reconnect=False)
    except connection.NatsSettingsError as error:
        fail(str(error), EXIT_BAD_INPUT)
    except connection.NatsUnreachable as error:
        fail(str(error), EXIT_UNREACHABLE)
    invalid = unanswered = False
    try:
        async with Sender(nc, keys=keys, issuer=issuer if keys is not None else None) as sender:
            slots = asyncio.Semaphore(MAX_IN_FLIGHT)
            pending: list[Any] = []
            for number, line in enumerate(lines, start=1):
                try:
                    subject = subject_of(line)
                except WireInputError as error:
                    pending.append({"line": number, "command_id": error.command_id, "outcome": "invalid", "reason": "SCHEMA_INVALID", "errors": error.errors, "events": [], "position": None})
                    continue
                try:
                    await asyncio.wait_for(slots.acquire(), timeout_s)
                except TimeoutError:
                    pending.append({"line": number, "outcome": "unanswered", "error": "not sent: earlier commands got no answer"})
                    continue
                stored, outcome = await sender.publish(subject, line)
                outcome.add_done_callback(lambda _f: slots.release())
                pending.append((number, stored, outcome))
            for item in pending:
                if isinstance(item, dict):
                    if item["outcome"] == "unanswered":
                        unanswered = True
                    else:
                        invalid = True
                    print_json_line(item)
                    continue
                number, stored, outcome = item
                try:
                    answer = await sender.wait(stored, outcome, timeout_s)
                except (NoReply, NotStored) as error:
                    unanswered = True
                    print_json_line({"line": number, "outcome": "unanswered", "error": str(error)})
                    continue
                if answer.get("outcome") == "invalid":
                    invalid = True
                print_json_line({"line": number, **answer})
    finally:
        await connection.close(nc)
    if unanswered:
        err.print("[bold red]error:[/] some commands got no answer (is `titan serve` running?); resending them is safe")
        return EXIT_UNREACHABLE
    return EXIT_BAD_INPUT if invalid else EXIT_OK
