"""`titan dlq list|show|replay|purge` against a real nats-server of this module's own, through a
typer app built from `infra.cli.dlq.register` (docs/dlq.md)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from nats.js import JetStreamContext
from typer.testing import CliRunner

from adapters.nats import dlq, signing, streams, subjects
from infra.cli import dlq as dlq_cli
from schemas.dlq import DlqEntry
from tests.nats_own_server import delete_every_stream, on_server, own_nats_server
from tests.services import NatsServer

pytestmark = [pytest.mark.integration]

SUBJECT = "titan.cmd.main.halt.v1"
PAYLOAD = b'{"type":"halt.v1","command_id":"h1","account_id":"main","ts_ns":1,"actor":"op","reason":"x\\u001b[31m"}'


@pytest.fixture(scope="module")
def server() -> Iterator[NatsServer]:
    with own_nats_server() as started:
        yield started


@pytest.fixture
def app(server: NatsServer, monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.setenv("TITAN_NATS_URL", server.url)
    monkeypatch.delenv("TITAN_INTAKE_KEYS", raising=False)

    async def fresh(js: JetStreamContext) -> None:
        await delete_every_stream(js)
        await streams.apply(js)

    on_server(server.url, fresh)
    built = typer.Typer()
    dlq_cli.register(built, {})
    return built


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, signing.Keys]:
    generated = signing.generate_keys()
    path = tmp_path / "keys"
    path.write_text(signing.keys_text(generated), encoding="utf-8")
    path.chmod(0o600)
    return path, generated


def titan(app: typer.Typer, *args: str) -> Any:
    return CliRunner().invoke(app, ["dlq", *args])


def put_entry(server: NatsServer, headers: dict[str, str] | None = None, payload: bytes = PAYLOAD, seq: int = 1) -> DlqEntry:
    entry = dlq.entry_for(SUBJECT, headers or {}, payload, seq, "BAD_SIGNATURE", "the signature does not match", 1, 10**18, 10**18 + 1)

    async def work(js: JetStreamContext) -> None:
        await dlq.publish_entry(js, entry)

    on_server(server.url, work)
    return entry


def command_messages(server: NatsServer) -> list[Any]:
    async def work(js: JetStreamContext) -> list[Any]:
        info = await js.stream_info(subjects.CMD_STREAM)
        return [await js.get_msg(subjects.CMD_STREAM, seq) for seq in range(info.state.first_seq, info.state.last_seq + 1)] if info.state.messages else []

    return on_server(server.url, work)


def test_list_and_show_print_entries_safely(app: typer.Typer, server: NatsServer) -> None:
    entry = put_entry(server, {"Titan-Issuer": "console"})
    listed = titan(app, "list")
    assert listed.exit_code == 0, listed.output
    assert entry.entry_id in listed.output and "BAD_SIGNATURE" in listed.output and "h1" in listed.output
    as_json = json.loads(titan(app, "list", "--json", "--reason", "BAD_SIGNATURE").stdout)
    assert [e["entry_id"] for e in as_json] == [entry.entry_id]
    assert json.loads(titan(app, "list", "--json", "--reason", "MAX_DELIVER").stdout) == []
    shown = titan(app, "show", entry.entry_id)
    assert shown.exit_code == 0, shown.output
    assert "\x1b" not in shown.output and "\\u001b[31m" in shown.output  # the payload's escape stays text
    assert json.loads(titan(app, "show", entry.entry_id, "--json").stdout)["payload"] == PAYLOAD.decode()
    unknown = titan(app, "show", "cmd-9-0000000000000000")
    assert unknown.exit_code == 2 and "cmd-9-0000000000000000" in unknown.output
    assert titan(app, "list", "--limit", "0").exit_code == 2


def test_replay_republishes_the_original_and_never_launders_a_forgery(
    app: typer.Typer, server: NatsServer, keys: tuple[Path, signing.Keys]
) -> None:
    path, loaded = keys
    old = 1_000_000_000
    genuine = signing.sign(loaded["console"], "console", SUBJECT, PAYLOAD, old)  # expired, but genuine
    forged = {**genuine, signing.SIGNATURE: "v1=" + "0" * 64}
    first = put_entry(server, {**genuine, "Nats-Msg-Id": "orig"}, seq=1)
    second = put_entry(server, forged, seq=2)
    unsigned = put_entry(server, {}, seq=3)
    replayed = titan(app, "replay", first.entry_id, second.entry_id, unsigned.entry_id, "--keys", str(path), "--json")
    assert replayed.exit_code == 0, replayed.output
    report = json.loads(replayed.stdout)
    assert [r["resigned_as"] for r in report] == ["console", None, None]
    messages = command_messages(server)
    assert [m.data for m in messages] == [PAYLOAD] * 3
    resigned, kept, bare = (m.headers or {} for m in messages)
    assert int(resigned[signing.ISSUED_TS]) > old
    signing.verify(loaded, SUBJECT, PAYLOAD, resigned, time.time_ns(), 60 * 10**9)  # fresh and valid
    assert kept[signing.SIGNATURE] == forged[signing.SIGNATURE]
    assert kept[signing.ISSUED_TS] == str(old)
    assert [h[subjects.REPLAY_OF] for h in (resigned, kept, bare)] == [first.entry_id, second.entry_id, unsigned.entry_id]
    assert resigned[subjects.MSG_ID] != "orig" and len({h[subjects.MSG_ID] for h in (resigned, kept, bare)}) == 3
    assert titan(app, "replay", "cmd-9-0000000000000000").exit_code == 2


def test_purge_refuses_without_keys_or_for_an_unknown_entry(
    app: typer.Typer, server: NatsServer, keys: tuple[Path, signing.Keys]
) -> None:
    entry = put_entry(server)
    no_keys = titan(app, "purge", entry.entry_id, "--reason", "r")
    assert no_keys.exit_code == 2 and "--keys" in no_keys.output
    unknown = titan(app, "purge", "cmd-9-0000000000000000", "--reason", "r", "--keys", str(keys[0]))
    assert unknown.exit_code == 2 and "cmd-9-0000000000000000" in unknown.output
    bad = titan(app, "purge", entry.entry_id, entry.entry_id, "--reason", "", "--keys", str(keys[0]))
    assert bad.exit_code == 2
