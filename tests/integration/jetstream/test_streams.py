"""titan's streams as code against a real nats-server of this module's own (never the machine's):
apply, verify, drift behind titan's back, refusals, connection settings and failures."""

from __future__ import annotations

import datetime
import ipaddress
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import ReplayPolicy, RetentionPolicy, StorageType

from adapters.nats import streams, subjects
from adapters.nats.connection import NatsSettingsError, NatsUnreachable, close, connect
from commands.ports import LedgerUnreachable
from infra.settings import Settings
from tests.nats_own_server import own_nats_server
from tests.services import NatsServer, free_port

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

ALL_STREAMS = (
    subjects.CMD_STREAM,
    subjects.EVT_STREAM,
    subjects.DLQ_STREAM,
    subjects.ADVISORY_STREAM,
    subjects.CHECKPOINT_STREAM,
    subjects.EXEC_STREAM,
)


@pytest.fixture(scope="module")
def server() -> Iterator[NatsServer]:
    with own_nats_server() as started:
        yield started


@pytest_asyncio.fixture
async def js(server: NatsServer) -> AsyncIterator[JetStreamContext]:
    """A JetStream context on an empty server (every stream of an earlier test deleted)."""
    client = await nats.connect(server.url)
    context = client.jetstream()
    for info in await context.streams_info():
        await context.delete_stream(info.config.name or "")
    try:
        yield context
    finally:
        await client.close()


async def message_count(js: JetStreamContext, stream: str) -> int:
    return (await js.stream_info(stream)).state.messages


async def test_apply_on_an_empty_server_creates_everything_and_verify_is_then_clean(js: JetStreamContext) -> None:
    before = await streams.verify(js)
    assert [str(d) for d in before] == [
        *(f"{name}: missing (the stream is declared but not on the server)" for name in ALL_STREAMS),
        "TITAN_CMD/titan-intake: missing (the consumer is declared but not on the server)",
        "TITAN_ADVISORY/titan-dlq-router: missing (the consumer is declared but not on the server)",
        "TITAN_EXEC/titan-paper: missing (the consumer is declared but not on the server)",
    ]
    done = await streams.apply(js)
    assert done == [
        *(f"created stream {name}" for name in ALL_STREAMS),
        "created consumer TITAN_CMD/titan-intake",
        "created consumer TITAN_ADVISORY/titan-dlq-router",
        "created consumer TITAN_EXEC/titan-paper",
    ]
    assert await streams.verify(js) == []
    await streams.require_spec(js)  # returns: nothing differs
    cmd = (await js.stream_info(subjects.CMD_STREAM)).config
    assert (cmd.retention, cmd.storage, cmd.duplicate_window) == ("workqueue", "file", 120.0)
    evt = (await js.stream_info(subjects.EVT_STREAM)).config
    assert (evt.retention, evt.storage, evt.max_age, evt.subjects) == ("limits", "file", 0.0, ["titan.evt.>"])
    intake = (await js.consumer_info(subjects.CMD_STREAM, subjects.INTAKE_CONSUMER)).config
    assert (intake.ack_policy, intake.max_deliver, intake.ack_wait, intake.backoff) == (
        "explicit", 5, 10.0, [10.0, 30.0, 60.0, 120.0]
    )


async def test_the_advisory_stream_captures_max_deliveries_of_the_intake(
    js: JetStreamContext, server: NatsServer
) -> None:
    await streams.apply(js)
    advisory = f"{subjects.MAX_DELIVERIES_ADVISORY_PREFIX}.{subjects.CMD_STREAM}.{subjects.INTAKE_CONSUMER}"
    publisher = await nats.connect(server.url)
    await publisher.publish(advisory, b'{"stream_seq": 7, "deliveries": 5}')  # as the server would
    await publisher.flush()
    await publisher.close()
    stored = await js.get_last_msg(subjects.ADVISORY_STREAM, advisory)
    assert stored.data == b'{"stream_seq": 7, "deliveries": 5}'


async def test_apply_twice_is_a_no_op(js: JetStreamContext) -> None:
    await streams.apply(js)
    await js.publish("titan.evt.main.order.accepted.v1", b"kept")
    created = (await js.stream_info(subjects.EVT_STREAM)).created
    assert await streams.apply(js) == []
    info = await js.stream_info(subjects.EVT_STREAM)
    assert (info.created, info.state.messages) == (created, 1)


async def drift_behind_titans_back(js: JetStreamContext) -> None:
    """Change TITAN_EVT's max_age and the intake's max_deliver with nats-py directly."""
    evt = (await js.stream_info(subjects.EVT_STREAM)).config
    await js.update_stream(evt.evolve(max_age=3600))
    intake = (await js.consumer_info(subjects.CMD_STREAM, subjects.INTAKE_CONSUMER)).config
    await js.add_consumer(subjects.CMD_STREAM, intake.evolve(max_deliver=9))


async def test_verify_names_each_drifted_field_with_its_declared_and_live_value(js: JetStreamContext) -> None:
    await streams.apply(js)
    await drift_behind_titans_back(js)
    drifts = await streams.verify(js)
    assert [str(d) for d in drifts] == [
        "TITAN_EVT.max_age: declared 0s, live 3600s",
        "TITAN_CMD/titan-intake.max_deliver: declared 5, live 9",
    ]
    assert drifts[0].to_json()["declared"] == 0 and drifts[0].to_json()["live"] == 3600


async def test_require_spec_refuses_with_every_difference(js: JetStreamContext) -> None:
    await streams.apply(js)
    await drift_behind_titans_back(js)
    with pytest.raises(streams.SpecDrift) as refused:
        await streams.require_spec(js)
    assert len(refused.value.drifts) == 2
    assert "TITAN_EVT.max_age: declared 0s, live 3600s" in str(refused.value)
    assert "TITAN_CMD/titan-intake.max_deliver: declared 5, live 9" in str(refused.value)


async def test_apply_updates_in_place_what_may_be_updated_and_keeps_the_messages(js: JetStreamContext) -> None:
    await streams.apply(js)
    for n in range(3):
        await js.publish(f"titan.evt.main.t{n}", b"x")
    await drift_behind_titans_back(js)
    done = await streams.apply(js)
    assert done == [
        "updated stream TITAN_EVT: TITAN_EVT.max_age: declared 0s, live 3600s",
        "updated consumer TITAN_CMD/titan-intake: TITAN_CMD/titan-intake.max_deliver: declared 5, live 9",
    ]
    assert await streams.verify(js) == []
    assert await message_count(js, subjects.EVT_STREAM) == 3


async def test_a_storage_change_is_refused_without_recreate_and_done_with_it(js: JetStreamContext) -> None:
    spec = streams.declared()
    evt = next(s for s in spec.streams if s.name == subjects.EVT_STREAM)
    await js.add_stream(evt.config().evolve(storage=StorageType.MEMORY))
    for n in range(4):
        await js.publish(f"titan.evt.main.t{n}", b"x")
    with pytest.raises(streams.ApplyRefused) as refused:
        await streams.apply(js)
    assert refused.value.done == []
    (reason,) = refused.value.reasons
    assert "TITAN_EVT: JetStream cannot change storage in place" in reason
    assert "TITAN_EVT.storage: declared file, live memory" in reason
    assert "4 message(s)" in reason and "--recreate" in reason
    # Nothing was created or deleted: the refusal came before any change.
    assert [i.config.name for i in await js.streams_info()] == [subjects.EVT_STREAM]
    assert await message_count(js, subjects.EVT_STREAM) == 4

    done = await streams.apply(js, recreate=True)
    assert "recreated stream TITAN_EVT, deleting its 4 message(s): TITAN_EVT.storage: declared file, live memory" in done
    assert (await js.stream_info(subjects.EVT_STREAM)).config.storage == "file"
    assert await streams.verify(js) == []


async def test_a_stream_with_messages_is_never_deleted_without_recreate(js: JetStreamContext) -> None:
    spec = streams.declared()
    cmd = next(s for s in spec.streams if s.name == subjects.CMD_STREAM)
    await js.add_stream(cmd.config().evolve(retention=RetentionPolicy.LIMITS))  # should be a work queue
    await js.publish("titan.cmd.main.place_order.v1", b"an unprocessed command")
    for _ in range(2):  # asking again changes nothing either
        with pytest.raises(streams.ApplyRefused) as refused:
            await streams.apply(js)
        assert "TITAN_CMD.retention: declared workqueue, live limits" in str(refused.value)
        assert "1 message(s)" in str(refused.value)
        assert await message_count(js, subjects.CMD_STREAM) == 1
    await streams.apply(js, recreate=True)
    info = await js.stream_info(subjects.CMD_STREAM)
    assert (info.config.retention, info.state.messages) == ("workqueue", 0)


async def test_a_consumer_field_fixed_at_creation_is_refused_then_recreated(js: JetStreamContext) -> None:
    await streams.apply(js)
    router = (await js.consumer_info(subjects.ADVISORY_STREAM, subjects.DLQ_ROUTER_CONSUMER)).config
    await js.delete_consumer(subjects.ADVISORY_STREAM, subjects.DLQ_ROUTER_CONSUMER)
    await js.add_consumer(subjects.ADVISORY_STREAM, router.evolve(replay_policy=ReplayPolicy.ORIGINAL))
    with pytest.raises(streams.ApplyRefused) as refused:
        await streams.apply(js)
    assert "TITAN_ADVISORY/titan-dlq-router: JetStream cannot change replay_policy" in str(refused.value)
    done = await streams.apply(js, recreate=True)
    assert done == [
        (
            "recreated consumer TITAN_ADVISORY/titan-dlq-router: "
            "TITAN_ADVISORY/titan-dlq-router.replay_policy: declared instant, live original"
        )
    ]
    assert await streams.verify(js) == []


async def test_a_refusal_the_server_gives_is_reported_with_its_reason(js: JetStreamContext) -> None:
    await js.add_stream(name="SOMEONE_ELSE", subjects=["titan.evt.foreign.>"])
    with pytest.raises(streams.ApplyRefused) as refused:
        await streams.apply(js)
    assert "creating stream TITAN_EVT: the server refused: subjects overlap with an existing stream" in str(refused.value)
    assert refused.value.done == ["created stream TITAN_CMD"]  # what was done before is said too
    assert "SOMEONE_ELSE" in [i.config.name for i in await js.streams_info()]


async def test_the_duplicate_window_comes_from_the_settings(js: JetStreamContext) -> None:
    short = streams.declared(Settings(nats_duplicate_window_s=1.5))
    await streams.apply(js, spec=short)
    assert (await js.stream_info(subjects.EVT_STREAM)).config.duplicate_window == 1.5
    assert await streams.verify(js, short) == []
    default_drifts = [str(d) for d in await streams.verify(js, streams.declared(Settings()))]
    assert "TITAN_EVT.duplicate_window: declared 120s, live 1.5s" in default_drifts
    assert len(default_drifts) == len(ALL_STREAMS)  # one per stream, nothing else


# Connecting ------------------------------------------------------------------------------------


async def test_an_unreachable_server_is_named_with_its_password_masked_at_once() -> None:
    url = f"nats://titan:s3cret-pw@127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(NatsUnreachable) as unreachable:
        await connect(Settings(nats_url=url, nats_connect_timeout_s=2))
    assert time.monotonic() - started < 5
    assert isinstance(unreachable.value, LedgerUnreachable)  # the CLI's exit-3 path
    message = str(unreachable.value)
    assert "nats://titan:***@127.0.0.1:" in message and "s3cret-pw" not in message


async def test_user_and_password_from_the_settings() -> None:
    with own_nats_server(["--user", "titan", "--pass", "good-pw"]) as server:
        client = await connect(Settings(nats_url=server.url, nats_user="titan", nats_password="good-pw"))
        assert client.is_connected
        await close(client)
        with pytest.raises(NatsUnreachable) as refused:
            await connect(Settings(nats_url=server.url, nats_user="titan", nats_password="bad-pw"))
        assert "refused the login" in str(refused.value) and "bad-pw" not in str(refused.value)


async def test_a_token_from_the_settings() -> None:
    with own_nats_server(["--auth", "tok-123"]) as server:
        client = await connect(Settings(nats_url=server.url, nats_token="tok-123"))
        assert client.is_connected
        await close(client)
        with pytest.raises(NatsUnreachable):
            await connect(Settings(nats_url=server.url))


async def test_two_kinds_of_credentials_or_a_missing_file_are_bad_settings(tmp_path: Path) -> None:
    cases = [
        Settings(nats_user="a", nats_password="b", nats_token="c"),
        Settings(nats_user="a"),
        Settings(nats_creds_file=str(tmp_path / "absent.creds")),
        Settings(nats_tls_ca=str(tmp_path / "absent-ca.pem")),
        Settings(nats_tls_cert=str(tmp_path / "cert.pem")),
    ]
    for settings in cases:
        with pytest.raises(NatsSettingsError):
            await connect(settings)


def write_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate for 127.0.0.1 signed by it."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "titan test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(1).not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
        .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "server.pem", directory / "server-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


async def test_tls_with_the_ca_from_the_settings(tmp_path: Path) -> None:
    ca, cert, key = write_tls_files(tmp_path)
    with own_nats_server(["--tls", "--tlscert", str(cert), "--tlskey", str(key)], scheme="tls") as server:
        client: Client = await connect(Settings(nats_url=server.url, nats_tls_ca=str(ca)))
        try:
            await streams.apply(client.jetstream())  # JetStream answers over TLS
        finally:
            await close(client)
        with pytest.raises(NatsUnreachable):  # the system's CAs do not know this server
            await connect(Settings(nats_url=server.url))
