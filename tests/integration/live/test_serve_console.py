"""The console inside `titan serve` (PostgreSQL, NATS): its GraphQL reads the live ledger, an
operator's halt goes through the serve's own writer with the token's subject as actor, the DLQ is
listed and purged through it, and a standby's console refuses to act."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from adapters.console.auth import new_token, token_line
from adapters.postgres.ledger import PostgresLedger
from commands.envelope import command_stream
from tests.e2e.conftest import Titan

from .conftest import _MODULE_SERVES, Live
from .live_support import ServeProcess, place_order

pytestmark = pytest.mark.integration

ACCOUNT = "consolelive"


@pytest.fixture(scope="module")
def tokens(live: Live) -> dict[str, str]:
    made = {"operator": new_token(), "viewer": new_token()}
    lines = [token_line("op:erin", ["operator"], made["operator"]), token_line("watcher", ["viewer"], made["viewer"])]
    (live.directory / "console-tokens").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return made


@pytest.fixture(scope="module")
def leader(live: Live, tokens: dict[str, str]) -> Iterator[ServeProcess]:
    env = live.env(TITAN_CONSOLE_TOKENS=str(live.directory / "console-tokens"))
    process = ServeProcess(live.directory, env, name="serve-console", args=("--account", ACCOUNT)).start()
    _MODULE_SERVES.append(process)
    try:
        process.wait_ready()
        yield process
    finally:
        process.terminate()


def gql(serve: ServeProcess, token: str, query: str, variables: dict[str, Any] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{serve.port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def eventually(check: Any, timeout_s: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def test_a_halt_from_the_console_is_decided_by_the_serve_with_the_token_subject(live: Live, leader: ServeProcess, tokens: dict[str, str]) -> None:
    status, body = gql(leader, tokens["viewer"], "query($a: String) { breaker(account: $a) { state mode } policy(account: $a) { activeHash } }", {"a": ACCOUNT})
    assert status == 200, body
    assert body["data"]["breaker"]["state"] == "NORMAL" and body["data"]["policy"]["activeHash"]

    status, body = gql(leader, tokens["viewer"], 'mutation($a: String) { halt(account: $a, reason: "no") { outcome } }', {"a": ACCOUNT})
    assert status == 403 and body["errors"][0]["extensions"]["code"] == "FORBIDDEN"

    status, body = gql(
        leader, tokens["operator"], 'mutation($a: String) { halt(account: $a, reason: "venue outage drill") { outcome commandId position } }', {"a": ACCOUNT}
    )
    assert status == 200, body
    halted = body["data"]["halt"]
    assert halted["outcome"] == "accepted"
    ledger = PostgresLedger(live.ledger_url)
    try:
        [record] = ledger.read_stream(command_stream(halted["commandId"]))
        command = record.envelope["data"]["command"]
        assert command["actor"] == "op:erin" and command["reason"] == "venue outage drill"
    finally:
        ledger.close()
    shown = eventually(lambda: gql(leader, tokens["viewer"], "query($a: String) { breaker(account: $a) { state actor reason } }", {"a": ACCOUNT})[1]["data"]["breaker"]["actor"] == "op:erin")
    assert shown, "the serve's projector shows the halt in the breaker view"
    status, body = gql(leader, tokens["viewer"], "query($a: String) { breaker(account: $a) { state } }", {"a": ACCOUNT})
    assert body["data"]["breaker"]["state"] == "HALTED"


def test_the_dlq_is_listed_and_purged_through_the_console(live: Live, leader: ServeProcess, tokens: dict[str, str]) -> None:
    titan = Titan(live.directory)
    forged = json.dumps(place_order(ACCOUNT, 7, actor="intruder"))
    refused = titan("send", "--keys", str(live.keys_path), "--issuer", "phase1", stdin=forged, env=live.env())
    assert refused.returncode == 2, refused.stdout + refused.stderr
    command_id = json.loads(refused.stdout.splitlines()[0])["command_id"]

    def listed() -> list[dict[str, Any]]:
        _, body = gql(leader, tokens["viewer"], "{ dlq { entryId commandId reason status } }")
        return [e for e in body["data"]["dlq"] if e["commandId"] == command_id]

    entries = eventually(listed)
    assert [e["reason"] for e in entries] == ["OUT_OF_ROLE"] and entries[0]["status"] == "open"
    entry_id = entries[0]["entryId"]
    status, body = gql(
        leader, tokens["operator"], 'mutation($e: [String!]!, $a: String) { dlqPurge(entryIds: $e, account: $a, reason: "forged by a test") { outcome { outcome commandId } removed } }',
        {"e": [entry_id], "a": ACCOUNT},
    )
    assert status == 200, body
    purged = body["data"]["dlqPurge"]
    assert purged["outcome"]["outcome"] == "accepted" and purged["removed"] == {entry_id: 1}
    ledger = PostgresLedger(live.ledger_url)
    try:
        [record] = [r for r in ledger.read_stream(f"account-{ACCOUNT}") if r.type == "dlq.purged.v1"]
        assert record.envelope["data"]["actor"] == "op:erin" and record.envelope["data"]["entry_ids"] == [entry_id]
    finally:
        ledger.close()


def test_a_standby_console_reads_but_does_not_act(live: Live, leader: ServeProcess, tokens: dict[str, str]) -> None:
    env = live.env(TITAN_CONSOLE_TOKENS=str(live.directory / "console-tokens"))
    standby = ServeProcess(live.directory, env, name="serve-console-standby", args=("--account", ACCOUNT)).start()
    try:
        standby.wait_role("standby")
        status, body = gql(standby, tokens["viewer"], "query($a: String) { breaker(account: $a) { state } }", {"a": ACCOUNT})
        assert status == 200 and body["data"]["breaker"]["state"] == "HALTED"
        status, body = gql(standby, tokens["operator"], 'mutation($a: String) { resume(account: $a, reason: "from the standby") { outcome } }', {"a": ACCOUNT})
        assert status == 503 and body["errors"][0]["extensions"]["code"] == "NOT_LEADER"
    finally:
        standby.terminate()
