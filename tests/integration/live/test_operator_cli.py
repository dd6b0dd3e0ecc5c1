"""The operator's way in to a running `titan serve`, as a user drives it: `titan send` (signed
JSON lines, one outcome each) and `titan dlq list|show|replay|purge` against the real intake,
DLQ router and ledger (issue 11, §2 and §5)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from adapters.postgres.ledger import PostgresLedger
from tests.e2e.conftest import Titan

from .conftest import Live
from .live_support import ServeProcess, place_order

pytestmark = pytest.mark.integration


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def records_of_type(ledger_url: str, type_name: str) -> list[Any]:
    ledger = PostgresLedger(ledger_url)
    try:
        return [r for r in ledger.read_all(0, 1_000_000) if r.type == type_name]
    finally:
        ledger.close()


def test_send_prints_one_outcome_per_line_and_exits_by_the_worst(live: Live, serve: ServeProcess) -> None:
    titan = Titan(live.directory)
    env = live.env()
    good = [json.dumps(place_order("sendcli", n)) for n in range(3)]
    sent = titan("send", "--keys", str(live.keys_path), "--issuer", "phase1", stdin="\n".join(good) + "\n", env=env)
    assert sent.returncode == 0, sent.stderr
    answers = lines(sent.stdout)
    assert [a["line"] for a in answers] == [1, 2, 3]
    assert {a["outcome"] for a in answers} <= {"accepted", "rejected"}

    out_of_role = titan("send", "--keys", str(live.keys_path), "--issuer", "execution", stdin=good[0] + "\nnot json\n", env=env)
    assert out_of_role.returncode == 2, out_of_role.stderr
    first, second = lines(out_of_role.stdout)
    assert first["outcome"] == "invalid" and first["reason"] == "OUT_OF_ROLE"
    assert second["outcome"] == "invalid" and second["line"] == 2

    again = titan("send", "--keys", str(live.keys_path), "--issuer", "phase1", stdin=good[0], env=env)
    assert lines(again.stdout)[0]["outcome"] == "duplicate"


def test_dlq_list_show_replay_and_a_recorded_purge(live: Live, serve: ServeProcess) -> None:
    titan = Titan(live.directory)
    env = live.env()
    forged = json.dumps(place_order("dlqcli", 1, actor="intruder"))
    refused = titan("send", "--keys", str(live.keys_path), "--issuer", "phase1", stdin=forged, env=env)
    assert refused.returncode == 2 and lines(refused.stdout)[0]["reason"] == "OUT_OF_ROLE"

    listed = titan("dlq", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    mine = [e for e in json.loads(listed.stdout) if e.get("command_id") == "dlqcli-o000001"]
    assert [e["reason"] for e in mine] == ["OUT_OF_ROLE"]
    entry_id = mine[0]["entry_id"]
    shown = titan("dlq", "show", entry_id, env=env)
    assert shown.returncode == 0 and "OUT_OF_ROLE" in shown.stdout

    # A replay re-signs a message whose signature was good: it is decided again, and refused again
    # for its role (the actor still does not name the issuer): a new entry, nothing recorded.
    replayed = titan("dlq", "replay", entry_id, "--keys", str(live.keys_path), env=env)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        entries = json.loads(titan("dlq", "list", "--json", env=env).stdout)
        again = [e for e in entries if e.get("command_id") == "dlqcli-o000001"]
        if len(again) == 2:
            break
        time.sleep(0.2)
    assert len(again) == 2 and again[1]["headers"].get("Titan-Replay-Of") == entry_id

    purge = titan(
        "dlq", "purge", *(e["entry_id"] for e in again), "--reason", "a misconfigured phase", "--actor", "operator:bob",
        "--account", "dlqcli", "--keys", str(live.keys_path), env=env,
    )
    assert purge.returncode == 0, purge.stdout + purge.stderr
    left = [e for e in json.loads(titan("dlq", "list", "--json", env=env).stdout) if e.get("command_id") == "dlqcli-o000001"]
    assert left == []
    [purged] = records_of_type(live.ledger_url, "dlq.purged.v1")
    data = purged.envelope["data"]
    assert data["entry_ids"] == [e["entry_id"] for e in again]
    assert data["actor"] == "operator:bob" and data["reason"] == "a misconfigured phase"
    assert not [r for r in records_of_type(live.ledger_url, "command.recorded.v1") if r.envelope["command_id"] == "dlqcli-o000001"]
