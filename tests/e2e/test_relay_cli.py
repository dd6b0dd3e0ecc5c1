"""`titan relay run|status|verify` as an operator drives them: real processes, a nats-server of the
test's own (stopped and started again mid-stream), real SQLite files and real PostgreSQL.

The crash test (issue 10): kill -9 the relay at random moments, 20 times, while it mirrors a ledger
that is still being written; restart NATS once mid-stream; once, wait longer than the duplicate
window (2 s here) before restarting the relay; then `titan relay verify` proves every record is on
the stream exactly once, in position order, with the same hashes. Budget: 50,000 records on SQLite
(~60 s here), 5,000 on PostgreSQL (~30 s): the same rule, a CI-sized ledger.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.jetstream.relay_support import (
    DUPLICATE_WINDOW_S,
    OwnNats,
    apply_streams,
    run,
    start_writer,
    write,
)

from .conftest import ROOT, Titan, titan_command

pytestmark = pytest.mark.e2e

EXIT_CHECK_FAILED = 1
EXIT_UNREACHABLE = 3
EXIT_BUSY = 4


@pytest.fixture
def own_nats() -> Iterator[OwnNats]:
    server = OwnNats()
    server.start()
    run(apply_streams(server.url))
    try:
        yield server
    finally:
        server.close()


def relay_env(nats_url: str) -> dict[str, str]:
    return {"TITAN_NATS_URL": nats_url, "TITAN_NATS_DUPLICATE_WINDOW_S": str(DUPLICATE_WINDOW_S)}


def start_relay(tmp_path: Path, ledger_url: str, nats_url: str, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TITAN_") or k == "TITAN_CORE"}
    env.update(PYTHONPATH=str(ROOT), COLUMNS="200", **relay_env(nats_url))
    return subprocess.Popen(
        [*titan_command(), "relay", "run", "--ledger", ledger_url, *args],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


def verify(titan: Titan, ledger_url: str, nats_url: str) -> tuple[int, dict[str, object]]:
    result = titan("relay", "verify", "--json", "--ledger", ledger_url, env=relay_env(nats_url))
    return result.returncode, json.loads(result.stdout)


def crash_and_verify(titan: Titan, tmp_path: Path, ledger_url: str, server: OwnNats, commands: int) -> None:
    records = 2 * commands
    writer = start_writer(ledger_url, "crash", commands, max(commands // 25, 100), 0.4)
    rng = random.Random(10)
    try:
        for cycle in range(20):
            relay = start_relay(tmp_path, ledger_url, server.url)
            time.sleep(rng.uniform(0.8, 2.5))
            if cycle == 8:  # NATS goes away under a running relay, and comes back
                server.stop()
                time.sleep(1.0)
                server.start()
                time.sleep(rng.uniform(0.5, 1.5))
            relay.send_signal(signal.SIGKILL)
            _, stderr = relay.communicate(timeout=30)
            assert relay.returncode == -signal.SIGKILL, stderr  # it was running (not refused, not stopped)
            assert "Traceback" not in stderr, stderr
            if cycle == 14:  # outlast the duplicate window before the next relay starts
                time.sleep(DUPLICATE_WINDOW_S + 1.5)
        stdout, stderr = writer.communicate(timeout=300)
        assert writer.returncode == 0 and "DONE" in stdout, stderr
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    killed = titan.json("relay", "status", "--json", "--ledger", ledger_url, env=relay_env(server.url))
    assert killed["stream_last_seq"] >= records // 10, killed  # the killed relays did mirror
    final = titan("relay", "run", "--once", "--ledger", ledger_url, env=relay_env(server.url))
    assert final.returncode == 0, final.stderr
    code, report = verify(titan, ledger_url, server.url)
    assert code == 0, report
    assert report["ok"] is True
    assert report["stream_messages"] == report["ledger_records"] == records
    assert report["stream_last_seq"] == records  # no sequence was spent on a duplicate
    assert report["unmirrored"] == 0


def test_kill_9_twenty_times_on_sqlite_50000_records(titan: Titan, tmp_path: Path, own_nats: OwnNats) -> None:
    crash_and_verify(titan, tmp_path, f"sqlite:///{tmp_path / 'ledger.db'}", own_nats, 25_000)


def test_kill_9_twenty_times_on_postgres_5000_records(titan: Titan, tmp_path: Path, own_nats: OwnNats, pg_url: str) -> None:
    crash_and_verify(titan, tmp_path, pg_url, own_nats, 2_500)


def test_a_second_relay_is_refused_and_writes_nothing(titan: Titan, tmp_path: Path, own_nats: OwnNats) -> None:
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    write(ledger_url, "a", 200)
    first = start_relay(tmp_path, ledger_url, own_nats.url)
    try:
        deadline = time.monotonic() + 30
        while True:  # the first relay mirrors the ledger and keeps following it
            status = titan("relay", "status", "--json", "--ledger", ledger_url, env=relay_env(own_nats.url))
            assert status.returncode == 0, status.stderr
            if json.loads(status.stdout)["lag_records"] == 0:
                break
            assert time.monotonic() < deadline, status.stdout
            time.sleep(0.2)
        before = json.loads(status.stdout)
        second = titan("relay", "run", "--once", "--ledger", ledger_url, env=relay_env(own_nats.url))
        assert second.returncode == EXIT_BUSY, second.stderr
        assert f"pid {first.pid}" in second.stderr and "wrote nothing" in second.stderr
        assert "Traceback" not in second.stderr
        after = titan.json("relay", "status", "--json", "--ledger", ledger_url, env=relay_env(own_nats.url))
        assert after["stream_last_seq"] == before["stream_last_seq"] == 400
    finally:
        first.send_signal(signal.SIGTERM)
        stdout, stderr = first.communicate(timeout=30)
    assert first.returncode == 0, stderr
    assert "mirrored up to position 400" in stdout


def test_a_broken_chain_stops_the_relay_before_the_bad_record(titan: Titan, tmp_path: Path, own_nats: OwnNats) -> None:
    import sqlite3

    ledger_file = tmp_path / "ledger.db"
    ledger_url = f"sqlite:///{ledger_file}"
    write(ledger_url, "b", 50)
    with sqlite3.connect(ledger_file) as db:  # tamper with position 31 behind titan's back
        (state,) = db.execute("SELECT state FROM stored_events WHERE rowid = 31").fetchone()
        db.execute("UPDATE stored_events SET state = ? WHERE rowid = 31", (bytes(state).replace(b'"paper-venue"', b'"forger"'),))
    result = titan("relay", "run", "--once", "--ledger", ledger_url, env=relay_env(own_nats.url))
    assert result.returncode == EXIT_CHECK_FAILED, result.stderr
    assert "position 31" in result.stderr and "titan ledger verify" in result.stderr
    assert "Traceback" not in result.stderr
    status = titan.json("relay", "status", "--json", "--ledger", ledger_url, env=relay_env(own_nats.url))
    assert status["mirrored_position"] == 30 and status["stream_last_seq"] == 30


def test_nats_unreachable_at_start_is_exit_3_with_the_url(titan: Titan, tmp_path: Path) -> None:
    from tests.services import free_port

    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    write(ledger_url, "c", 5)
    url = f"nats://127.0.0.1:{free_port()}"
    for command in (("relay", "run", "--once"), ("relay", "status"), ("relay", "verify")):
        result = titan(*command, "--ledger", ledger_url, env={"TITAN_NATS_URL": url, "TITAN_NATS_CONNECT_TIMEOUT_S": "1"})
        assert result.returncode == EXIT_UNREACHABLE, (command, result.stderr)
        assert url in result.stderr and "Traceback" not in result.stderr


def test_a_ledger_shorter_than_its_mirror_is_named(titan: Titan, tmp_path: Path, own_nats: OwnNats) -> None:
    import shutil

    ledger_file = tmp_path / "ledger.db"
    ledger_url = f"sqlite:///{ledger_file}"
    write(ledger_url, "d", 40)
    shutil.copy(ledger_file, tmp_path / "old.db")  # the ledger as it was at position 80
    write(ledger_url, "e", 20)
    assert titan("relay", "run", "--once", "--ledger", ledger_url, env=relay_env(own_nats.url)).returncode == 0
    old_url = f"sqlite:///{tmp_path / 'old.db'}"
    code, report = verify(titan, old_url, own_nats.url)
    assert code == EXIT_CHECK_FAILED
    assert report["code"] == "LEDGER_TRUNCATED" and report["position"] == 81
    text = titan("relay", "verify", "--ledger", old_url, env=relay_env(own_nats.url))
    assert "shorter than its mirror" in text.stderr
    refused = titan("relay", "run", "--once", "--ledger", old_url, env=relay_env(own_nats.url))
    assert refused.returncode == EXIT_CHECK_FAILED and "shorter than its mirror" in refused.stderr
    # the truncated ledger passes its own chain check; the mirror is the anchor that catches it
    assert titan("ledger", "verify", "--ledger", old_url).returncode == 0
    caught = titan("ledger", "verify", "--mirror", "--ledger", old_url, "--json", env=relay_env(own_nats.url))
    assert caught.returncode == EXIT_CHECK_FAILED, caught.stderr
    document = json.loads(caught.stdout)
    assert document["chain_ok"] is True and document["mirror"]["code"] == "LEDGER_TRUNCATED"
    intact = titan("ledger", "verify", "--mirror", "--ledger", ledger_url, env=relay_env(own_nats.url))
    assert intact.returncode == 0 and "mirror ok" in intact.stdout
