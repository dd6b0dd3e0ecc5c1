"""`titan nats verify|apply` as a user runs them, against a nats-server of this module's own."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from nats.js import JetStreamContext
from nats.js.api import StorageType

from adapters.nats import streams, subjects
from tests.e2e.conftest import Titan
from tests.nats_own_server import delete_every_stream, on_server, own_nats_server
from tests.services import NatsServer, free_port

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server() -> Iterator[NatsServer]:
    with own_nats_server() as started:
        yield started




@pytest.fixture
def url(server: NatsServer) -> str:
    """The server's URL, with every stream of an earlier test deleted."""

    on_server(server.url, delete_every_stream)
    return server.url


def nats_env(url: str) -> dict[str, str]:
    return {"TITAN_NATS_URL": url}


def test_apply_creates_everything_then_verify_agrees_and_apply_again_does_nothing(titan: Titan, url: str) -> None:
    missing = titan("nats", "verify", env=nats_env(url))
    assert missing.returncode == 1, missing.stderr
    assert "TITAN_EVT: missing" in missing.stdout and "TITAN_CMD/titan-intake: missing" in missing.stdout
    created = titan("nats", "apply", env=nats_env(url))
    assert created.returncode == 0, created.stderr
    assert created.stdout.splitlines() == [
        "created stream TITAN_CMD",
        "created stream TITAN_EVT",
        "created stream TITAN_DLQ",
        "created stream TITAN_ADVISORY",
        "created stream TITAN_CHECKPOINTS",
        "created stream TITAN_EXEC",
        "created consumer TITAN_CMD/titan-intake",
        "created consumer TITAN_ADVISORY/titan-dlq-router",
        "created consumer TITAN_EXEC/titan-paper",
    ]
    agrees = titan("nats", "verify", "--nats", url)
    assert agrees.returncode == 0, agrees.stdout + agrees.stderr
    assert "matches titan's spec" in agrees.stdout
    again = titan("nats", "apply", "--json", env=nats_env(url))
    assert again.returncode == 0
    assert json.loads(again.stdout) == {"nats_url": url, "ok": True, "done": [], "refused": []}


def test_drift_behind_titans_back_is_listed_field_by_field_and_apply_fixes_it(titan: Titan, url: str) -> None:
    assert titan("nats", "apply", env=nats_env(url)).returncode == 0

    async def drift(js: JetStreamContext) -> None:
        evt = (await js.stream_info(subjects.EVT_STREAM)).config
        await js.update_stream(evt.evolve(max_age=3600))
        intake = (await js.consumer_info(subjects.CMD_STREAM, subjects.INTAKE_CONSUMER)).config
        await js.add_consumer(subjects.CMD_STREAM, intake.evolve(max_deliver=9))

    on_server(url, drift)
    found = titan("nats", "verify", env=nats_env(url))
    assert found.returncode == 1
    assert found.stdout.splitlines() == [
        "TITAN_EVT.max_age: declared 0s, live 3600s",
        "TITAN_CMD/titan-intake.max_deliver: declared 5, live 9",
    ]
    as_json = titan("nats", "verify", "--json", env=nats_env(url))
    assert as_json.returncode == 1
    document = json.loads(as_json.stdout)
    assert document["ok"] is False
    assert [(d["stream"], d["consumer"], d["field"], d["declared"], d["live"]) for d in document["drifts"]] == [
        ("TITAN_EVT", None, "max_age", 0, 3600),
        ("TITAN_CMD", "titan-intake", "max_deliver", 5, 9),
    ]
    fixed = titan("nats", "apply", env=nats_env(url))
    assert fixed.returncode == 0, fixed.stderr
    assert "updated stream TITAN_EVT" in fixed.stdout and "updated consumer TITAN_CMD/titan-intake" in fixed.stdout
    assert titan("nats", "verify", env=nats_env(url)).returncode == 0


def test_a_storage_change_is_refused_saying_why_and_done_with_recreate(titan: Titan, url: str) -> None:
    dlq = next(s for s in streams.declared().streams if s.name == subjects.DLQ_STREAM)

    async def memory_dlq_with_a_message(js: JetStreamContext) -> None:
        await js.add_stream(dlq.config().evolve(storage=StorageType.MEMORY))
        await js.publish("titan.dlq.main.place_order.v1", b"a dead letter")

    on_server(url, memory_dlq_with_a_message)
    refused = titan("nats", "apply", env=nats_env(url))
    assert refused.returncode == 1
    assert "TITAN_DLQ: JetStream cannot change storage in place" in refused.stderr
    assert "1 message(s)" in refused.stderr and "--recreate" in refused.stderr
    refused_json = titan("nats", "apply", "--json", env=nats_env(url))
    assert refused_json.returncode == 1
    assert json.loads(refused_json.stdout)["ok"] is False

    async def messages(js: JetStreamContext) -> int:
        return (await js.stream_info(subjects.DLQ_STREAM)).state.messages

    assert on_server(url, messages) == 1  # never deleted without --recreate
    assert titan("nats", "verify", env=nats_env(url)).returncode == 1
    recreated = titan("nats", "apply", "--recreate", env=nats_env(url))
    assert recreated.returncode == 0, recreated.stderr
    assert "recreated stream TITAN_DLQ, deleting its 1 message(s)" in recreated.stdout
    assert titan("nats", "verify", env=nats_env(url)).returncode == 0


@pytest.mark.parametrize("command", [("verify",), ("apply",), ("apply", "--json")])
def test_unreachable_nats_exits_3_naming_the_url_with_its_password_masked(titan: Titan, command: tuple[str, ...]) -> None:
    url = f"nats://titan:hunter2-secret@127.0.0.1:{free_port()}"
    result = titan("nats", *command, env=nats_env(url))
    assert result.returncode == 3, result.stdout + result.stderr
    assert "nats://titan:***@127.0.0.1:" in result.stderr
    assert "hunter2-secret" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_bad_nats_settings_exit_2(titan: Titan) -> None:
    result = titan("nats", "verify", env={"TITAN_NATS_TLS_CA": "/nonexistent/ca.pem"})
    assert result.returncode == 2
    assert "TITAN_NATS_TLS_CA=/nonexistent/ca.pem: no such file" in result.stderr
