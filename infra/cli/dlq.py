"""`titan dlq list|show|replay|purge`: triage TITAN_DLQ's dead letters (docs/dlq.md).

- `list`: one line per entry (id, last seen, reason, subject, command id, deliveries), newest last;
- `show ENTRY_ID`: the whole entry, its payload printed safely (control characters escaped);
- `replay ENTRY_ID...`: re-publish each original payload on its original subject, through intake
  (re-signed with a fresh timestamp only when the original signature verifies for its issuer);
- `purge ENTRY_ID... --reason --keys`: a signed `purge_dlq.v1` through intake; only after it is
  accepted are the entries removed from TITAN_DLQ.

Exit codes: 0 ok; 1 the purge was not accepted (nothing removed); 2 bad input (an unknown entry
id, a bad option, a key file that does not parse, an entry that cannot be replayed); 3 NATS
unreachable, or no answer from `titan serve` in time.
"""

from __future__ import annotations

import asyncio
import datetime
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import nats.errors
import nats.js.errors
import orjson
import typer
from nats.aio.client import Client
from nats.js.client import JetStreamContext
from pydantic import ValidationError
from rich.markup import escape

from adapters.nats import connection, subjects
from adapters.nats import dlq as dead_letters
from adapters.nats.signing import (
    MAX_TS_NS,
    SIGNATURE,
    Keys,
    Refused,
    sign,
    verify,
)
from infra.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_CHECK_FAILED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    AccountOpt,
    JsonOpt,
    err,
    fail,
    out,
    print_json,
    settings_for,
)
from infra.settings import Settings
from schemas import commands as wire
from schemas.dlq import DlqEntry
from schemas.intake import errors_of

T = TypeVar("T")

PURGE_ISSUER = "console"
DEFAULT_LIMIT = 100
MAX_LIMIT = 100_000
MAX_ENTRIES_PER_PURGE = wire.MAX_PURGE_ENTRIES

dlq_app = typer.Typer(help="Dead letters on TITAN_DLQ: list, show, replay through intake, purge (recorded).", no_args_is_help=True)

EntryIdsArg = Annotated[list[str], typer.Argument(help="Entry ids (cmd-<seq>-<hash>), as `titan dlq list` shows them.")]
KeysOpt = Annotated[Path | None, typer.Option("--keys", help="The intake's key file (default TITAN_INTAKE_KEYS).")]


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    """Add the `dlq` command group."""
    app.add_typer(dlq_app, name="dlq")
    groups["dlq"] = dlq_app


def _on_nats(settings: Settings, work: Callable[[Client], Awaitable[T]]) -> T:
    """Connect, run the work, close; unreachable exits 3, bad settings 2."""

    async def session() -> T:
        async with connection.connected(settings, name="titan dlq") as client:
            return await work(client)

    try:
        return asyncio.run(session())
    except connection.NatsUnreachable as exc:
        fail(str(exc), EXIT_UNREACHABLE)
    except connection.NatsSettingsError as exc:
        fail(str(exc), EXIT_BAD_INPUT)
    except nats.js.errors.NotFoundError:
        fail(f"NATS at {connection.display_url(settings.nats_url)} has no stream {subjects.DLQ_STREAM}: run `titan nats apply`", EXIT_UNREACHABLE)
    except nats.errors.Error as exc:
        fail(f"NATS at {connection.display_url(settings.nats_url)} answered: {exc or type(exc).__name__}", EXIT_UNREACHABLE)


def _unreadable(seq: int, problem: str) -> None:
    err.print(escape(f"warning: TITAN_DLQ sequence {seq} is not a titan.dlq.v1 entry ({problem}); left out"))


def _when(ts_ns: int) -> str:
    moment = datetime.datetime.fromtimestamp(ts_ns // 1_000_000_000, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _safe(text: str | None, limit: int = 200) -> str:
    """Text from a message, safe on a terminal: control characters escaped, rich markup escaped."""
    return escape(dead_letters.plain_text(text or "", limit))


def _line(seq: int, entry: DlqEntry) -> str:
    return "  ".join(
        (
            entry.entry_id,
            _when(entry.last_seen_ns),
            entry.reason,
            _safe(entry.subject) or "-",
            _safe(entry.command_id) or "-",
            f"deliveries={entry.delivery_count}",
        )
    )


@dlq_app.command("list")
def list_cmd(
    reason: Annotated[str | None, typer.Option("--reason", help="Only entries with this reason code.")] = None,
    as_json: JsonOpt = False,
    limit: Annotated[int, typer.Option("--limit", help=f"At most this many entries, the newest (1 to {MAX_LIMIT}).")] = DEFAULT_LIMIT,
) -> None:
    """List the dead letters, oldest first (the newest --limit of them)."""
    if not 1 <= limit <= MAX_LIMIT:
        fail(f"--limit {limit} is out of range: give 1 to {MAX_LIMIT}", EXIT_BAD_INPUT)
    settings = settings_for()

    async def work(nc: Client) -> list[tuple[int, DlqEntry]]:
        found = await dead_letters.read_entries(nc.jetstream(), limit=MAX_LIMIT if reason else limit, unreadable=_unreadable)
        if reason:
            found = [(seq, entry) for seq, entry in found if entry.reason == reason][-limit:]
        return found

    entries = _on_nats(settings, work)
    if as_json:
        print_json([{"seq": seq, **entry.to_json()} for seq, entry in entries])
        raise typer.Exit(EXIT_OK)
    for seq, entry in entries:
        out.print(_line(seq, entry))
    err.print(escape(f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'} in {subjects.DLQ_STREAM}"))


def _find_or_fail(js: JetStreamContext, entry_ids: list[str]) -> Awaitable[dict[str, list[tuple[int, DlqEntry]]]]:
    return dead_letters.find_entries(js, entry_ids, unreadable=_unreadable)


def _unknown(found: dict[str, list[tuple[int, DlqEntry]]]) -> None:
    missing = [entry_id for entry_id, copies in found.items() if not copies]
    if missing:
        fail(f"no entry {', '.join(repr(m) for m in missing)} in {subjects.DLQ_STREAM} (see `titan dlq list`)", EXIT_BAD_INPUT)


@dlq_app.command("show")
def show_cmd(entry_id: Annotated[str, typer.Argument(help="The entry id.")], as_json: JsonOpt = False) -> None:
    """Show a whole entry: the original subject, headers and payload, the reason and the error."""
    settings = settings_for()
    found = _on_nats(settings, lambda nc: _find_or_fail(nc.jetstream(), [entry_id]))
    _unknown(found)
    seq, entry = found[entry_id][-1]
    if as_json:
        print_json({"seq": seq, **entry.to_json()})
        raise typer.Exit(EXIT_OK)
    rows = [
        ("entry", entry.entry_id),
        ("dlq sequence", str(seq)),
        ("reason", entry.reason),
        ("error", _safe(entry.error, 1000) or "-"),
        ("subject", _safe(entry.subject, 4096) or "-"),
        ("account", _safe(entry.account_id) or "-"),
        ("command id", _safe(entry.command_id) or "-"),
        ("deliveries", str(entry.delivery_count)),
        ("first seen", f"{_when(entry.first_seen_ns)} ({entry.first_seen_ns})"),
        ("last seen", f"{_when(entry.last_seen_ns)} ({entry.last_seen_ns})"),
        ("cmd sequence", str(entry.stream_seq)),
    ]
    for name, value in rows:
        out.print(f"{name:<13} {value}")
    out.print("headers")
    for name, value in entry.headers.items():
        shown = "(hidden)" if name == SIGNATURE else _safe(value, 4096)
        out.print(f"  {_safe(name)}: {shown}")
    cut = " (only its start: the payload was too large to keep whole)" if entry.payload_truncated else ""
    out.print(f"payload ({entry.payload_encoding}){cut}")
    out.print(_safe(entry.payload, 2_000_000))


def replay_headers(entry: DlqEntry, payload: bytes, keys: Keys | None, now_ns: int) -> tuple[dict[str, str], str | None]:
    """The headers a replay publishes, and the issuer it was re-signed as (None: the original
    headers unchanged). Re-signed only when the original signature verifies for its issuer,
    whatever its age: a forgery is never laundered by a replay."""
    headers = {
        name: value
        for name, value in entry.headers.items()
        if name not in (subjects.MSG_ID, subjects.REPLY_TO, subjects.REPLAY_OF) and not name.startswith("Nats-")
    }
    resigned: str | None = None
    if keys is not None:
        try:
            signed = verify(keys, entry.subject, payload, entry.headers, now_ns, MAX_TS_NS)
        except Refused:
            signed = None
        if signed is not None:
            headers.update(sign(keys[signed.issuer], signed.issuer, entry.subject, payload, now_ns))
            resigned = signed.issuer
    headers[subjects.REPLAY_OF] = entry.entry_id
    headers[subjects.MSG_ID] = f"replay-{entry.entry_id}-{uuid.uuid4().hex}"
    return headers, resigned


@dlq_app.command("replay")
def replay_cmd(entry_ids: EntryIdsArg, keys: KeysOpt = None, as_json: JsonOpt = False) -> None:
    """Re-publish each entry's original payload on its original subject, through intake: it is
    decided (a command already recorded gets its original outcome) or refused into a new entry."""
    from infra.cli.serve import keys_or_fail

    settings = settings_for()
    key_path = keys or (Path(settings.intake_keys) if settings.intake_keys else None)
    loaded = keys_or_fail(key_path)
    wanted = list(dict.fromkeys(entry_ids))

    async def work(nc: Client) -> list[dict[str, Any]]:
        js = nc.jetstream()
        found = await _find_or_fail(js, wanted)
        _unknown(found)
        planned: list[tuple[DlqEntry, bytes]] = []
        for entry_id in wanted:
            entry = found[entry_id][-1][1]
            if not entry.subject.startswith(subjects.CMD_PREFIX + "."):
                fail(f"entry {entry_id} has no original subject (the message was gone): it cannot be replayed", EXIT_BAD_INPUT)
            try:
                planned.append((entry, dead_letters.replay_payload(entry)))
            except ValueError as exc:
                fail(str(exc), EXIT_BAD_INPUT)
        published: list[dict[str, Any]] = []
        for entry, payload in planned:
            headers, resigned = replay_headers(entry, payload, loaded, time.time_ns())
            ack = await js.publish(entry.subject, payload, timeout=5.0, stream=subjects.CMD_STREAM, headers=headers)
            published.append(
                {"entry_id": entry.entry_id, "subject": entry.subject, "stream": ack.stream, "seq": ack.seq, "resigned_as": resigned}
            )
        return published

    published = _on_nats(settings, work)
    if as_json:
        print_json(published)
        raise typer.Exit(EXIT_OK)
    for item in published:
        how = f"re-signed as {item['resigned_as']}" if item["resigned_as"] else "original headers"
        out.print(escape(f"{item['entry_id']}: published to {item['subject']} ({item['stream']} seq {item['seq']}, {how})"))


@dlq_app.command("purge")
def purge_cmd(
    entry_ids: EntryIdsArg,
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded in the ledger with the actor).")],
    account: AccountOpt = None,
    actor: Annotated[str, typer.Option("--actor", help="Who purges (recorded).")] = "operator",
    keys: KeysOpt = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for the intake's answer.")] = 10.0,
    as_json: JsonOpt = False,
) -> None:
    """Record a purge of the entries in the ledger (a signed purge_dlq.v1 through intake), then,
    once it is accepted, remove them from TITAN_DLQ."""
    from adapters.nats.sender import NoReply, NotStored, send_command
    from infra.cli.serve import keys_or_fail

    settings = settings_for(account=account)
    if not 0 < timeout <= 3600:
        fail(f"--timeout {timeout:g} is out of range: give more than 0 and at most 3600 seconds", EXIT_BAD_INPUT)
    key_path = keys or (Path(settings.intake_keys) if settings.intake_keys else None)
    if key_path is None:
        fail("a purge is signed: give --keys FILE (or TITAN_INTAKE_KEYS)", EXIT_BAD_INPUT)
    loaded = keys_or_fail(key_path)
    if loaded is None or PURGE_ISSUER not in loaded:
        fail(f"the key file has no key for issuer {PURGE_ISSUER!r}", EXIT_BAD_INPUT)
    wanted = list(dict.fromkeys(entry_ids))
    now_ns = time.time_ns()
    try:
        command = wire.PurgeDlq(
            command_id=f"purge-dlq.{now_ns}.{uuid.uuid4().hex[:8]}",
            account_id=settings.account_id,
            ts_ns=now_ns,
            issued_ts_ns=now_ns,
            actor=actor,
            entry_ids=wanted,
            reason=reason,
        )
    except ValidationError as exc:
        fail("; ".join(f"{e['field']}: {e['error']}" for e in errors_of(exc)), EXIT_BAD_INPUT)
    payload = orjson.dumps(command.model_dump(mode="json"))
    subject = subjects.command_subject(command.account_id, command.type)

    async def work(nc: Client) -> tuple[dict[str, Any] | None, dict[str, int], str]:
        js = nc.jetstream()
        found = await _find_or_fail(js, wanted)
        _unknown(found)
        try:
            reply = await send_command(nc, keys=loaded, issuer=PURGE_ISSUER, subject=subject, payload=payload, timeout_s=timeout)
        except (NoReply, NotStored) as exc:
            return None, {}, str(exc)
        if reply.get("outcome") != "accepted":
            return reply, {}, ""
        removed = {
            entry_id: await dead_letters.delete_entry(js, entry_id, seqs=[seq for seq, _ in found[entry_id]])
            for entry_id in wanted
        }
        return reply, removed, ""

    reply, removed, problem = _on_nats(settings, work)
    if reply is None:
        fail(f"purge {command.command_id}: {problem}", EXIT_UNREACHABLE)
    if as_json:
        print_json({"command_id": command.command_id, "reply": reply, "removed": removed})
    else:
        out.print(escape(orjson.dumps(reply).decode()))
        for entry_id, count in removed.items():
            out.print(escape(f"{entry_id}: removed from {subjects.DLQ_STREAM} ({count} message(s))"))
    if reply.get("outcome") != "accepted":
        err.print(escape(f"purge {command.command_id} was not accepted ({reply.get('outcome')}): nothing removed"))
        raise typer.Exit(EXIT_CHECK_FAILED)
    raise typer.Exit(EXIT_OK)
