"""One writer per account, whatever the entry point (SPEC §2): `titan submit`, the operator
actions and `titan policy activate` take the account's writer lease before deciding anything, and
a second writer is refused at once (exit 4, naming the holder) having written nothing. On both
ledgers, against a real second process and against a lease held by the group-commit writer's own
lease store."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from adapters.sqlite.ledger import SQLiteLedger
from commands.lease import StreamLease
from infra.bootstrap import bootstrap, open_ledger
from infra.settings import Settings
from infra.writers import lease_store
from schemas import commands as wire

from .conftest import ROOT, Titan, titan_command

pytestmark = pytest.mark.e2e

T0 = 1_767_225_600_000_000_000
EXIT_BUSY = 4


def snapshots(prefix: str, count: int, *, start_ns: int = T0) -> str:
    """`count` truth snapshots of the paper venue, one per millisecond (each one is decided)."""
    lines = [
        json.dumps({
            "type": "record_truth_snapshot.v1", "command_id": f"{prefix}-{i}", "account_id": "main",
            "ts_ns": start_ns + i * 1_000_000, "actor": "paper-venue", "venue": "paper", "positions": [],
            "open_order_ids": [], "equity": "100000", "venue_ts_ns": start_ns + i * 1_000_000, "latency_ms": 5,
        })
        for i in range(count)
    ]
    return "\n".join(lines) + "\n"


def record_count(url: str) -> int:
    ledger = open_ledger(url, create=False)
    try:
        return ledger.head()[2]
    finally:
        ledger.close()


@contextmanager
def held_lease(url: str, holder: str) -> Iterator[StreamLease]:
    """The account's lease held by this test process, as a group-commit writer would hold it."""
    ledger = open_ledger(url)
    loop = asyncio.new_event_loop()
    lease = loop.run_until_complete(lease_store(ledger).acquire_lease("account-main", holder))
    try:
        yield lease
    finally:
        loop.run_until_complete(lease.release())
        loop.close()
        ledger.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


def test_a_submit_is_refused_while_a_writer_holds_the_account(titan: Titan, tmp_path: Path, ledger_url: str) -> None:
    assert titan("init", "--ledger", ledger_url).returncode == 0
    before = record_count(ledger_url)
    (tmp_path / "cmds.jsonl").write_text(snapshots("s", 5))
    with held_lease(ledger_url, "group-commit writer on test-host pid 4242"):
        result = titan("submit", "cmds.jsonl", "--ledger", ledger_url)
        assert result.returncode == EXIT_BUSY, result.stderr
        assert "group-commit writer on test-host pid 4242" in result.stderr
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) <= 2
        assert result.stdout == ""
        for action in ("halt", "resume"):
            refused = titan(action, "--reason", "busy test", "--ledger", ledger_url)
            assert refused.returncode == EXIT_BUSY and "pid 4242" in refused.stderr
        refused = titan("policy", "activate", str(ROOT / "infra/policies/default.json"), "--ledger", ledger_url)
        assert refused.returncode == EXIT_BUSY
    assert record_count(ledger_url) == before  # nothing was written by any refused writer
    # once the writer is gone, the same file goes through
    result = titan("submit", "cmds.jsonl", "--ledger", ledger_url)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["outcome"] for line in result.stdout.splitlines()] == ["accepted"] * 5


def test_two_concurrent_submits_never_interleave(titan: Titan, tmp_path: Path, ledger_url: str) -> None:
    """The issue's run: two files of 3,000 commands to the same account at once. One holds the
    lease; the other is refused (or, if it starts after the first finished, runs after it); no
    traceback, and no file is half-decided."""
    assert titan("init", "--ledger", ledger_url).returncode == 0
    (tmp_path / "a.jsonl").write_text(snapshots("a", 3000))
    (tmp_path / "b.jsonl").write_text(snapshots("b", 3000, start_ns=T0 + 500_000))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TITAN_") or k == "TITAN_CORE"}
    env["PYTHONPATH"] = str(ROOT)
    runs = [
        subprocess.Popen(
            [*titan_command(), "submit", name, "--ledger", ledger_url],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        for name in ("a.jsonl", "b.jsonl")
    ]
    outputs = [run.communicate(timeout=300) for run in runs]
    results = [(run.returncode, stdout, stderr) for run, (stdout, stderr) in zip(runs, outputs, strict=True)]
    codes = sorted(code for code, _, _ in results)
    assert codes in ([0, 0], [0, EXIT_BUSY]), results
    for code, stdout, stderr in results:
        assert "Traceback" not in stderr
        if code == EXIT_BUSY:
            assert stdout == "" and "already has a writer" in stderr
        else:
            assert len(stdout.splitlines()) == 3000
    winners = [stdout for code, stdout, _ in results if code == 0]
    if len(winners) == 1:  # they overlapped: the winner decided all of its file, the loser nothing
        outcomes = [json.loads(line)["outcome"] for line in winners[0].splitlines()]
        assert outcomes == ["accepted"] * 3000
        loser = "b" if results[0][0] == 0 else "a"
        ledger = open_ledger(ledger_url, create=False)
        try:
            assert ledger.read_stream(f"command-{loser}-0") == []
            assert ledger.read_stream(f"command-{loser}-2999") == []
        finally:
            ledger.close()


def test_the_lease_file_of_an_embedded_ledger_is_private(titan: Titan, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    assert titan("init", "--ledger", url).returncode == 0
    lock_files = sorted(tmp_path.glob("ledger.db.lease-*"))
    assert lock_files, list(tmp_path.iterdir())
    for path in lock_files:
        assert path.stat().st_mode & 0o077 == 0, oct(path.stat().st_mode)


def test_a_late_fill_whose_first_append_was_lost_is_still_counted(titan: Titan, tmp_path: Path) -> None:
    """§3 of the hardening issue: a fill whose append ended "outcome unknown", resubmitted after
    later commands were decided, is a venue fact: it is recorded (rules 2, the default policy)."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    assert titan("init", "--ledger", url).returncode == 0
    policy_hash = titan("policy", "hash", str(ROOT / "infra/policies/default.json")).stdout.strip()
    order = {
        "type": "place_order.v1", "command_id": "c1", "account_id": "main", "ts_ns": T0 + 1, "actor": "phase1",
        "policy_hash": policy_hash, "phase_id": 1, "intent_id": "i1", "client_order_id": "a1", "venue": "paper",
        "symbol": "BTCUSDT", "side": "BUY", "quantity": "0.010", "price": "65000.0", "reference_price": "65000.0",
    }
    fill = {
        "type": "record_fill.v1", "command_id": "f1", "account_id": "main", "ts_ns": T0 + 2, "actor": "paper",
        "order_id": "ord-c1", "fill_id": "F1", "quantity": "0.010", "price": "65000.0", "fee": "0.13",
    }
    first = snapshots("s", 1) + json.dumps(order) + "\n" + snapshots("later", 3, start_ns=T0 + 10**9)
    (tmp_path / "first.jsonl").write_text(first)
    assert titan("submit", "first.jsonl", "--ledger", url).returncode == 0
    (tmp_path / "fill.jsonl").write_text(json.dumps(fill) + "\n")
    result = titan("submit", "fill.jsonl", "--ledger", url)
    assert result.returncode == 0, result.stderr
    line = json.loads(result.stdout)
    assert (line["outcome"], line["reason"]) == ("accepted", None)
    state = titan.json("state", "--ledger", url, "--json")
    assert state["positions"][0]["quantity"] == "0.010"
    ledger = SQLiteLedger(str(tmp_path / "ledger.db"))
    try:
        (recorded,) = ledger.read_stream("command-f1")
        assert recorded.envelope["data"]["command"]["ts_ns"] == T0 + 2  # the venue's time is kept
        filled = [r for r in ledger.read_stream("account-main") if r.envelope["command_id"] == "f1"]
        assert filled[-1].envelope["ts_ns"] == T0 + 10**9 + 2 * 1_000_000  # decided at the account's time
    finally:
        ledger.close()


def test_halt_works_after_a_command_stamped_in_the_future(titan: Titan, tmp_path: Path) -> None:
    """A ledger that holds a command stamped 2100-01-01 (a wrong clock, or an earlier titan that
    took it): the operator can still halt, and flatten."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    assert titan("init", "--ledger", url).returncode == 0
    future = 4_102_444_800 * 10**9
    bus = bootstrap(Settings(ledger_url=url), ledger=open_ledger(url))
    try:
        (line,) = snapshots("f", 1, start_ns=future).splitlines()
        assert bus.handle(wire.COMMANDS.validate_json(line)).outcome == "accepted"
    finally:
        bus.ctx.ledger.close()
    for action in ("halt", "flatten"):
        done = titan(action, "--reason", "kill switch", "--ledger", url, "--json")
        assert done.returncode in (0, 1), done.stderr
        outcome = json.loads(done.stdout)
        assert outcome["reason"] != "STALE_COMMAND", outcome
    assert titan.json("state", "--ledger", url, "--json")["breaker"]["state"] == "HALTED"
    events = titan.json("replay", "verify", "--ledger", url, "--json")
    assert events["ok"] is True


def test_submit_refuses_a_command_stamped_in_the_future(titan: Titan, tmp_path: Path) -> None:
    """A receipt cannot lie in the future: such a line is invalid, named, never recorded, and the
    next line is still decided."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    assert titan("init", "--ledger", url).returncode == 0
    future = 4_102_444_800 * 10**9
    (tmp_path / "c.jsonl").write_text(snapshots("f", 1, start_ns=future) + snapshots("ok", 1))
    result = titan("submit", "c.jsonl", "--ledger", url)
    assert result.returncode == 2, result.stderr
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert first["outcome"] == "invalid" and first["errors"][0]["field"] == "ts_ns"
    assert "future" in first["errors"][0]["error"]
    assert second["outcome"] == "accepted"
    assert titan.json("state", "--ledger", url, "--json")["last_ts_ns"] < future


def test_every_writing_command_signs_its_head_once_a_key_exists(titan: Titan, tmp_path: Path) -> None:
    """With a checkpoint key beside the ledger, submit and the operator actions append a signed
    checkpoint of the head they leave; `ledger verify --checkpoints` then holds the ledger to it."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    assert titan("init", "--ledger", url).returncode == 0
    assert titan("ledger", "keygen", "--ledger", url).returncode == 0
    (tmp_path / "c.jsonl").write_text(snapshots("s", 3))
    assert titan("submit", "c.jsonl", "--ledger", url).returncode == 0
    assert titan("halt", "--reason", "end of test", "--ledger", url).returncode == 0
    logs = list(tmp_path.glob("*.checkpoints.jsonl"))
    assert len(logs) == 1 and len(logs[0].read_text().splitlines()) == 2
    head = titan.json("ledger", "verify", "--ledger", url, "--json")["head_position"]
    assert json.loads(logs[0].read_text().splitlines()[-1])["payload"]["position"] == head
    verified = titan("ledger", "verify", "--checkpoints", "--ledger", url)
    assert verified.returncode == 0, verified.stderr


def test_a_symlink_to_the_ledger_meets_the_same_lease(titan: Titan, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    assert titan("init", "--ledger", url).returncode == 0
    (tmp_path / "alias.db").symlink_to(tmp_path / "ledger.db")
    (tmp_path / "cmds.jsonl").write_text(snapshots("s", 2))
    with held_lease(url, "a writer through the real path"):
        refused = titan("submit", "cmds.jsonl", "--ledger", f"sqlite:///{tmp_path / 'alias.db'}")
        assert refused.returncode == EXIT_BUSY and "a writer through the real path" in refused.stderr


def test_halt_waits_for_the_lease_when_asked(titan: Titan, tmp_path: Path) -> None:
    """--wait keeps asking while another writer finishes; without it the refusal is immediate."""
    import threading

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    assert titan("init", "--ledger", url).returncode == 0
    with held_lease(url, "a short writer") as _:
        assert titan("halt", "--reason", "now", "--ledger", url).returncode == EXIT_BUSY
        released = threading.Event()
        results: list[int] = []

        def halt() -> None:
            results.append(titan("halt", "--reason", "soon", "--wait", "30", "--ledger", url).returncode)
            released.set()

        thread = threading.Thread(target=halt)
        thread.start()
        assert not released.wait(2.0)  # still waiting while the lease is held
    thread.join(60)
    assert results == [0]
    assert titan.json("state", "--ledger", url, "--json")["breaker"]["state"] == "HALTED"


def test_the_accounts_a_file_writes_are_read_from_its_valid_commands(titan: Titan, tmp_path: Path) -> None:
    """An escaped key still names its account (and gets its lease); junk lines name none, so they
    neither count against the 32-account limit nor take leases."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    escaped = '{"type":"halt.v1","command_id":"e1","account\\u005fid":"other","ts_ns":1,"actor":"x","reason":"r"}'
    junk = [json.dumps({"account_id": f"junk{i}"}) for i in range(40)]
    plain = json.dumps({"type": "halt.v1", "command_id": "e2", "account_id": "main", "ts_ns": 1, "actor": "x", "reason": "r"})
    (tmp_path / "mixed.jsonl").write_text("\n".join([escaped, *junk, plain]) + "\n")
    result = titan("submit", "mixed.jsonl", "--ledger", url)
    assert result.returncode == 2, result.stderr  # the junk lines are invalid; the two halts decided
    outcomes = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["outcome"] for o in outcomes if o["outcome"] != "invalid"] == ["accepted", "accepted"]
    assert not list(tmp_path.glob("*.lease-*")) or all("junk" not in p.read_text() for p in tmp_path.glob("*.lease-*"))


def test_operator_actions_work_for_the_longest_account_id_and_the_last_nanosecond(titan: Titan, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    longest = "a" * 128
    assert titan("init", "--ledger", url, "--account", longest).returncode == 0
    assert titan("halt", "--reason", "long id", "--ledger", url, "--account", longest).returncode == 0
    # a ledger an earlier titan let reach the last representable nanosecond can still be flattened
    assert titan("init", "--ledger", url).returncode == 0
    bus = bootstrap(Settings(ledger_url=url), ledger=open_ledger(url))
    try:
        (line,) = snapshots("max", 1, start_ns=2**63 - 1).splitlines()
        assert bus.handle(wire.COMMANDS.validate_json(line)).outcome == "accepted"
    finally:
        bus.ctx.ledger.close()
    for action in ("halt", "flatten"):
        done = titan(action, "--reason", "at the end of time", "--ledger", url, "--json")
        assert done.returncode in (0, 1), done.stderr
        assert json.loads(done.stdout)["reason"] != "STALE_COMMAND"


def test_a_bad_account_or_setting_is_named_with_exit_2(titan: Titan, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    bad = titan("halt", "--reason", "x", "--account", "bad account", "--ledger", url)
    assert bad.returncode == 2 and "--account" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "ledger.db").exists()
    env = titan("state", "--ledger", url, env={"TITAN_MAX_FUTURE_SKEW_S": "abc"})
    assert env.returncode == 2 and "TITAN_MAX_FUTURE_SKEW_S" in env.stderr
