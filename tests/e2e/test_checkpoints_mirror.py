"""`titan ledger checkpoint --mirror` and `titan ledger verify --checkpoints-mirror`: the signed
checkpoints kept on JetStream (TITAN_CHECKPOINTS) as well as in the file, so that rolling back the
database and the checkpoint file together is still caught. A nats-server of this module's own; an
embedded ledger per test, made with `titan init` and `titan submit`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import nats
import nats.js.errors
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.js import JetStreamContext

from adapters.nats import streams, subjects
from adapters.nats.checkpoints import publish_checkpoint, read_checkpoints
from replay.checkpoints import Checkpoint, key_id, sign
from tests.checkpoint_support import Tamperer, tamper_line
from tests.e2e.conftest import Titan
from tests.nats_own_server import delete_every_stream, on_server, own_nats_server
from tests.services import NatsServer, free_port

pytestmark = pytest.mark.e2e

T = TypeVar("T")
T0 = 1_767_225_600_000_000_000
KEY = "keys/checkpoint.key"
"""Not the default place: no command signs on its own, only `titan ledger checkpoint --key`."""
LOG = ".titan/ledger.checkpoints.jsonl"


@pytest.fixture(scope="module")
def server() -> Iterator[NatsServer]:
    with own_nats_server() as started:
        yield started




@pytest.fixture
def url(server: NatsServer) -> str:
    """The server's URL with titan's streams freshly applied (every earlier stream deleted)."""

    async def fresh(js: JetStreamContext) -> None:
        await delete_every_stream(js)
        await streams.apply(js)

    on_server(server.url, fresh)
    return server.url


def snapshot(command_id: str, ts_ns: int) -> str:
    return json.dumps(
        {
            "type": "record_truth_snapshot.v1", "command_id": command_id, "account_id": "main", "ts_ns": ts_ns,
            "actor": "paper-venue", "venue": "paper", "positions": [], "open_order_ids": [], "equity": "100000",
            "venue_ts_ns": ts_ns, "latency_ms": 5,
        }
    ) + "\n"


def ledger_with_key(titan: Titan, nats_url: str) -> dict[str, str]:
    """A ledger with one command, a checkpoint key off its default place; the environment that
    verifies with the public key alone against this NATS."""
    titan.json("init", "--json")
    public_key = titan.json("ledger", "keygen", "--out", KEY, "--json")["public_key"]
    submitted = titan("submit", "-", stdin=snapshot("s0", T0))
    assert submitted.returncode == 0, submitted.stderr
    return {"TITAN_NATS_URL": nats_url, "TITAN_CHECKPOINT_PUBLIC_KEY": public_key, "TITAN_NATS_CONNECT_TIMEOUT_S": "2"}


def checkpoint_mirrored(titan: Titan, env: dict[str, str]) -> dict[str, Any]:
    written: dict[str, Any] = titan.json("ledger", "checkpoint", "--key", KEY, "--mirror", "--json", env=env)
    return written


def file_lines(titan: Titan) -> list[bytes]:
    return (titan.cwd / LOG).read_bytes().splitlines()


def test_mirrored_checkpoints_catch_a_ledger_and_its_file_rolled_back_together(titan: Titan, url: str) -> None:
    env = ledger_with_key(titan, url)
    first = checkpoint_mirrored(titan, env)
    assert titan("submit", "-", stdin=snapshot("s1", T0 + 1)).returncode == 0
    second = checkpoint_mirrored(titan, env)
    assert [(w["mirror"]["seq"], w["mirror"]["duplicate"]) for w in (first, second)] == [(1, False), (2, False)]
    ledger_id, p1, p2 = first["checkpoint"]["ledger_id"], first["checkpoint"]["position"], second["checkpoint"]
    assert second["mirror"]["subject"] == f"titan.checkpoint.{ledger_id}" and p2["position"] > p1

    # The stream holds the file's lines byte for byte, with the id and headers the spec names.
    async def stored(js: JetStreamContext) -> list[tuple[bytes, dict[str, str]]]:
        found = []
        for line in await read_checkpoints(js, ledger_id):
            message = await js.get_msg(subjects.CHECKPOINT_STREAM, line.seq)
            found.append((line.data, dict(message.headers or {})))
        return found

    mirrored = on_server(url, stored)
    assert [data for data, _ in mirrored] == file_lines(titan)
    headers = mirrored[1][1]
    assert headers[subjects.MSG_ID] == f"{ledger_id}:{p2['position']}"
    assert (headers[subjects.POSITION], headers[subjects.CHAIN_HASH]) == (str(p2["position"]), p2["hash"])

    ok = titan("ledger", "verify", "--checkpoints-mirror", env=env)
    assert ok.returncode == 0, ok.stderr
    assert "checkpoints mirror ok: 2 signed checkpoints on TITAN_CHECKPOINTS" in ok.stdout
    both = titan("ledger", "verify", "--checkpoints", "--checkpoints-mirror", env=env)
    assert both.returncode == 0, both.stderr
    assert f"{LOG} holds every one" in both.stdout

    # The attacker deletes the last command, moves the anchor back, and drops the file's last line.
    deleted, head = Tamperer(f"sqlite:///{titan.cwd / '.titan' / 'ledger.db'}").truncate_last_command()
    assert deleted and head.position == p1
    (titan.cwd / LOG).write_bytes(b"".join(line + b"\n" for line in file_lines(titan)[:-1]))

    fooled = titan("ledger", "verify", "--checkpoints", env=env)
    assert fooled.returncode == 0, fooled.stderr  # the file alone agrees with the rolled-back ledger
    assert "checkpoints ok: 1 signed checkpoint agrees" in fooled.stdout
    assert f"position {p2['position']}" not in fooled.stdout + fooled.stderr and p2["hash"] not in fooled.stdout

    caught = titan("ledger", "verify", "--checkpoints-mirror", env=env)
    assert caught.returncode == 1
    assert (
        f"truncated: checkpoint at position {p2['position']} (hash {p2['hash']}) but the ledger ends at {p1} "
        "(TITAN_CHECKPOINTS sequence 2)"
    ) in caught.stderr
    assert caught.stdout.startswith("ok: ")  # the chain itself verifies

    named = titan("ledger", "verify", "--checkpoints", "--checkpoints-mirror", "--json", env=env)
    assert named.returncode == 1
    report = json.loads(named.stdout)
    assert (report["ok"], report["chain_ok"], report["checkpoints"]["ok"]) == (False, True, True)
    findings = report["checkpoints_mirror"]["findings"]
    assert [(f["code"], f["position"], f["line"]) for f in findings] == [
        ("TRUNCATED", p2["position"], 2),
        ("FILE_LACKS", p2["position"], 2),
    ]
    assert f"the file lacks the mirror's checkpoint at position {p2['position']}" in findings[1]["message"]
    assert report["checkpoints_mirror"]["sequences"] == [1, 2]


def test_a_forged_or_altered_line_on_the_stream_is_a_bad_signature(titan: Titan, url: str) -> None:
    env = ledger_with_key(titan, url)
    signed = checkpoint_mirrored(titan, env)["checkpoint"]
    forger = Ed25519PrivateKey.generate()
    claim = Checkpoint(signed["ledger_id"], signed["position"] + 7, "f" * 64, signed["record_count"] + 7, T0)
    forged = sign(claim, forger)
    altered = tamper_line(file_lines(titan)[0])

    async def publish(js: JetStreamContext) -> None:
        for line, position in ((forged, claim.position), (altered, signed["position"] + 1)):
            await publish_checkpoint(js, line, ledger_id=claim.ledger_id, position=position, chain_hash=claim.hash)

    on_server(url, publish)
    result = titan("ledger", "verify", "--checkpoints", "--checkpoints-mirror", "--json", env=env)
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["checkpoints"]["ok"] is True  # the file is untouched
    findings = report["checkpoints_mirror"]["findings"]
    assert [(f["code"], f["line"]) for f in findings] == [("BAD_SIGNATURE", 2), ("BAD_SIGNATURE", 3)]
    genuine = orjson.loads(file_lines(titan)[0])["key_id"]
    assert findings[0]["message"] == (
        f"bad signature (signed by key {key_id(forger.public_key())}, verified with key {genuine}) on line 2"
    )
    assert findings[1]["message"] == "bad signature on line 3"  # the real key id, a changed payload
    text = titan("ledger", "verify", "--checkpoints-mirror", env=env)
    assert text.returncode == 1
    assert "bad signature on line 3 (TITAN_CHECKPOINTS sequence 3)" in text.stderr


def test_nats_unreachable_keeps_the_file_checkpoint_and_exits_3(titan: Titan, url: str, tmp_path: Path) -> None:
    env = ledger_with_key(titan, f"nats://127.0.0.1:{free_port()}")
    down = env["TITAN_NATS_URL"]
    lost = titan("ledger", "checkpoint", "--key", KEY, "--mirror", env=env)
    assert lost.returncode == 3, lost.stderr
    assert f"NATS at {down} is unreachable" in lost.stderr and f"the checkpoint stays in {LOG}" in lost.stderr
    assert "Traceback" not in lost.stderr
    assert lost.stdout.startswith("checkpoint: position ")
    assert len(file_lines(titan)) == 1
    assert titan("ledger", "verify", "--checkpoints", env=env).returncode == 0  # the file checkpoint holds

    unverifiable = titan("ledger", "verify", "--checkpoints-mirror", env=env)
    assert unverifiable.returncode == 3 and f"NATS at {down} is unreachable" in unverifiable.stderr

    # A server without TITAN_CHECKPOINTS: a check failure naming the fix; the file keeps the line.
    on_server(url, lambda js: js.delete_stream(subjects.CHECKPOINT_STREAM))
    missing = titan("ledger", "checkpoint", "--key", KEY, "--mirror", env={**env, "TITAN_NATS_URL": url})
    assert missing.returncode == 1
    assert "TITAN_CHECKPOINTS: missing" in missing.stderr and "titan nats apply" in missing.stderr
    assert len(file_lines(titan)) == 2


def test_the_checkpoint_stream_is_kept_whole_and_refuses_deletes_and_purges(url: str) -> None:
    async def probe(js: JetStreamContext) -> tuple[Any, list[str]]:
        config = (await js.stream_info(subjects.CHECKPOINT_STREAM)).config
        ack = await js.publish("titan.checkpoint.x", b"{}", stream=subjects.CHECKPOINT_STREAM)
        refusals = []
        for attempt in (js.delete_msg(subjects.CHECKPOINT_STREAM, ack.seq), js.purge_stream(subjects.CHECKPOINT_STREAM)):
            try:
                await attempt
            except nats.js.errors.APIError as error:
                refusals.append(str(error.description))
        return config, refusals

    config, refusals = on_server(url, probe)
    assert (config.subjects, config.retention, config.storage, config.max_age) == (
        ["titan.checkpoint.>"], "limits", "file", 0.0
    )
    assert (config.deny_delete, config.deny_purge, config.duplicate_window) == (True, True, 120.0)
    assert refusals == ["message delete not permitted", "stream purge not permitted"]
