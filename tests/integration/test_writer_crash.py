"""Killing the writer mid-run (SIGKILL) and starting it again loses no acknowledged command and
appends no duplicate."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from adapters.postgres.ledger import PostgresLedger
from adapters.postgres.migrations import upgrade
from commands.envelope import COMMAND_RECORDED, account_stream
from replay.chain import verify_ledger
from tests.integration.writer_support import activation, orders

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
COUNT = 1000


def writer(url: str, max_batch: int) -> subprocess.Popen[str]:
    env = os.environ | {"PYTHONPATH": str(ROOT), "TITAN_CORE": "interpreted"}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.writer_child", url, "acct", str(COUNT), str(max_batch)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def acks(lines: list[str]) -> dict[str, tuple[str, int]]:
    found: dict[str, tuple[str, int]] = {}
    for line in lines:
        if line.startswith("ACK "):
            _, command_id, outcome, position = line.split()
            found[command_id] = (outcome, int(position))
    return found


def test_a_killed_writer_loses_no_acknowledged_command_and_duplicates_none(pg_url: str) -> None:
    upgrade(pg_url)
    first = writer(pg_url, max_batch=25)
    assert first.stdout is not None
    lines: list[str] = []
    for line in first.stdout:
        lines.append(line)
        if sum(1 for seen in lines if seen.startswith("ACK ")) >= 150:
            first.send_signal(signal.SIGKILL)  # mid-run: batches queued, one in flight
            break
    first.wait(timeout=60)
    assert first.returncode == -signal.SIGKILL, (first.returncode, first.stderr.read() if first.stderr else "")
    acknowledged = acks(lines)
    assert len(acknowledged) >= 150

    second = writer(pg_url, max_batch=25)
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    assert out.rstrip().endswith("DONE")
    answers = acks(out.splitlines())
    flow = [activation("acct"), *orders("acct", COUNT)]
    assert set(answers) == {c.command_id for c in flow}

    ledger = PostgresLedger(pg_url)
    try:
        records = list(ledger.iter_all())
        command_records = {r.envelope["command_id"]: r for r in records if r.type == COMMAND_RECORDED}
        # Nothing acknowledged was lost: it is recorded, at the position and with the outcome told.
        for command_id, (outcome, position) in acknowledged.items():
            record = command_records[command_id]
            assert (record.envelope["data"]["outcome"], record.position) == (outcome, position)
            # ...and the restarted writer answers it as a duplicate of exactly that.
            assert answers[command_id] == ("duplicate", position)
        # Nothing was appended twice: one command record per command, its events once each.
        counts = Counter(r.envelope["command_id"] for r in records if r.type == COMMAND_RECORDED)
        assert set(counts.values()) == {1}
        assert set(counts) == {c.command_id for c in flow}
        events = Counter(r.envelope["command_id"] for r in records if r.stream_id == account_stream("acct"))
        for command_id, record in command_records.items():
            assert events[command_id] == len(record.envelope["data"]["event_ids"]), command_id
        versions = [r.version for r in records if r.stream_id == account_stream("acct")]
        assert versions == list(range(1, len(versions) + 1))
        report = verify_ledger(ledger)
        assert report.ok, report
    finally:
        ledger.close()
