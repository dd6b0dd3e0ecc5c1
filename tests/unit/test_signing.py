"""Signed intake (adapters/nats/signing.py, roles.py): signatures, refusals, key files, roles."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.nats import signing
from adapters.nats.roles import ROLE_COMMANDS, check_role
from adapters.nats.signing import (
    BAD_SIGNATURE,
    ISSUED_TS,
    ISSUER,
    ISSUERS,
    OUT_OF_ROLE,
    SIGNATURE,
    SIGNATURE_EXPIRED,
    UNKNOWN_ISSUER,
    UNSIGNED,
    KeyFileError,
    Keys,
    Refused,
    Signed,
    generate_keys,
    keys_text,
    load_keys,
    sign,
    verify,
)
from schemas.commands import COMMAND_MODELS, command_type

SUBJECT = "titan.cmd.main.place_order.v1"
PAYLOAD = b'{"type":"place_order.v1","actor":"phase1-scavenger","phase_id":1}'
NOW_NS = 1_700_000_000_000_000_000
WINDOW_NS = 30_000_000_000
KEYS = Keys({"phase1": bytes(range(32)), "execution": b"\x07" * 40, "console": b"\xff" * 32})


def signed_headers(issuer: str = "phase1", *, subject: str = SUBJECT, payload: bytes = PAYLOAD, ts: int = NOW_NS) -> dict[str, str]:
    return sign(KEYS[issuer], issuer, subject, payload, ts)


def refusal(headers: dict[str, str] | None, *, subject: str = SUBJECT, payload: bytes = PAYLOAD, now_ns: int = NOW_NS) -> Refused:
    with pytest.raises(Refused) as caught:
        verify(KEYS, subject, payload, headers, now_ns, WINDOW_NS)
    return caught.value


def assert_no_key_material(text: str, keys: Keys = KEYS) -> None:
    for key in keys.values():
        assert key.hex() not in text.lower()
        assert key.hex()[:16] not in text.lower()


# --- signing and verifying -------------------------------------------------------------------


def test_round_trip() -> None:
    headers = signed_headers()
    assert set(headers) == {ISSUER, ISSUED_TS, SIGNATURE}
    assert headers[ISSUER] == "phase1"
    assert headers[ISSUED_TS] == str(NOW_NS)
    assert headers[SIGNATURE].startswith("v1=") and len(headers[SIGNATURE]) == 3 + 64
    assert verify(KEYS, SUBJECT, PAYLOAD, headers, NOW_NS, WINDOW_NS) == Signed("phase1", NOW_NS)


def test_the_signature_is_hmac_sha256_over_the_documented_bytes() -> None:
    import hashlib
    import hmac

    message = b"titan-intake-v1\nphase1\n" + str(NOW_NS).encode() + b"\n" + SUBJECT.encode() + b"\n" + PAYLOAD
    assert signing.signed_bytes("phase1", SUBJECT, PAYLOAD, NOW_NS) == message
    expected = hmac.new(KEYS["phase1"], message, hashlib.sha256).hexdigest()
    assert signed_headers()[SIGNATURE] == "v1=" + expected


@settings(max_examples=60, deadline=None)
@given(
    issuer=st.sampled_from(sorted(KEYS)),
    account=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=20),
    payload=st.binary(max_size=300),
    ts=st.integers(min_value=0, max_value=signing.MAX_TS_NS),
    flip=st.integers(min_value=0),
)
def test_any_signed_command_verifies_and_one_flipped_bit_of_its_payload_does_not(
    issuer: str, account: str, payload: bytes, ts: int, flip: int
) -> None:
    subject = f"titan.cmd.{account}.record_fill.v1"
    headers = sign(KEYS[issuer], issuer, subject, payload, ts)
    assert verify(KEYS, subject, payload, headers, ts, 0) == Signed(issuer, ts)
    if payload:
        index, bit = divmod(flip % (len(payload) * 8), 8)
        altered = bytearray(payload)
        altered[index] ^= 1 << bit
        with pytest.raises(Refused) as caught:
            verify(KEYS, subject, bytes(altered), headers, ts, 0)
        assert caught.value.reason == BAD_SIGNATURE


def test_payload_altered_by_one_byte() -> None:
    headers = signed_headers()
    altered = PAYLOAD.replace(b'"phase_id":1', b'"phase_id":2')
    assert len(altered) == len(PAYLOAD) and altered != PAYLOAD
    assert refusal(headers, payload=altered).reason == BAD_SIGNATURE
    assert refusal(headers, payload=PAYLOAD + b" ").reason == BAD_SIGNATURE
    assert refusal(headers, payload=PAYLOAD[:-1]).reason == BAD_SIGNATURE


def test_subject_altered() -> None:
    headers = signed_headers()
    assert refusal(headers, subject="titan.cmd.other.place_order.v1").reason == BAD_SIGNATURE
    assert refusal(headers, subject="titan.cmd.main.record_fill.v1").reason == BAD_SIGNATURE


def test_timestamp_altered() -> None:
    headers = signed_headers()
    for ts in (NOW_NS + 1, NOW_NS - 1):
        assert refusal({**headers, ISSUED_TS: str(ts)}).reason == BAD_SIGNATURE


def test_issuer_altered_to_another_with_a_key() -> None:
    headers = signed_headers()
    assert refusal({**headers, ISSUER: "console"}).reason == BAD_SIGNATURE


def test_signed_with_another_issuers_key() -> None:
    headers = sign(KEYS["execution"], "phase1", SUBJECT, PAYLOAD, NOW_NS)
    assert refusal(headers).reason == BAD_SIGNATURE


def test_unsigned() -> None:
    assert refusal(None).reason == UNSIGNED
    assert refusal({}).reason == UNSIGNED
    headers = signed_headers()
    del headers[SIGNATURE]
    assert refusal(headers).reason == UNSIGNED


def test_unknown_issuer() -> None:
    key = b"\x01" * 32
    error = refusal(sign(key, "phase2", SUBJECT, PAYLOAD, NOW_NS))  # a real issuer without a key here
    assert error.reason == UNKNOWN_ISSUER and "phase2" in error.error
    assert refusal(sign(key, "mallory", SUBJECT, PAYLOAD, NOW_NS)).reason == UNKNOWN_ISSUER
    headers = signed_headers()
    del headers[ISSUER]
    assert refusal(headers).reason == UNKNOWN_ISSUER


@pytest.mark.parametrize(
    "value", ["", "abc", "-1", "+5", "1.5", "1e9", " 1", "01", "١٢٣", "9" * 19, "1" * 20, "9" * 400]
)
def test_a_malformed_or_oversized_timestamp_is_a_bad_signature(value: str) -> None:
    error = refusal({**signed_headers(), ISSUED_TS: value})
    assert error.reason == BAD_SIGNATURE
    assert len(error.error) < 300


def test_a_missing_timestamp_is_a_bad_signature() -> None:
    headers = signed_headers()
    del headers[ISSUED_TS]
    assert refusal(headers).reason == BAD_SIGNATURE


@pytest.mark.parametrize(
    "value",
    ["", "v1=", "v2=" + "0" * 64, "v1=" + "0" * 63, "v1=" + "A" * 64, "v1=" + "0" * 65, "0" * 64, "v1=" + "g" * 64],
)
def test_a_malformed_signature_header_is_a_bad_signature(value: str) -> None:
    assert refusal({**signed_headers(), SIGNATURE: value}).reason == BAD_SIGNATURE


def test_the_uppercase_form_of_a_good_signature_is_refused() -> None:
    headers = signed_headers()
    assert refusal({**headers, SIGNATURE: "v1=" + headers[SIGNATURE][3:].upper()}).reason == BAD_SIGNATURE


def test_replay_outside_the_window_past_and_future() -> None:
    past = signed_headers(ts=NOW_NS - WINDOW_NS - 1)
    future = signed_headers(ts=NOW_NS + WINDOW_NS + 1)
    assert refusal(past).reason == SIGNATURE_EXPIRED
    assert "ago" in refusal(past).error
    assert refusal(future).reason == SIGNATURE_EXPIRED
    assert "future" in refusal(future).error


def test_the_window_is_inclusive() -> None:
    for ts in (NOW_NS - WINDOW_NS, NOW_NS + WINDOW_NS):
        assert verify(KEYS, SUBJECT, PAYLOAD, signed_headers(ts=ts), NOW_NS, WINDOW_NS).issued_ts_ns == ts


def test_the_window_is_checked_after_the_signature() -> None:
    """A forger learns nothing about the clock: an old forged command is a bad signature."""
    old = signed_headers(ts=NOW_NS - 10 * WINDOW_NS)
    forged = {**old, SIGNATURE: "v1=" + "0" * 64}
    assert refusal(forged).reason == BAD_SIGNATURE
    assert refusal({**old, ISSUED_TS: "x"}).reason == BAD_SIGNATURE
    assert refusal({**forged, ISSUER: "nobody"}).reason == UNKNOWN_ISSUER
    del forged[SIGNATURE]
    assert refusal(forged).reason == UNSIGNED


def test_refusals_hold_no_key_material_and_short_excerpts() -> None:
    long = "x" * 10_000
    cases = [
        None,
        {**signed_headers(), ISSUER: long},
        {**signed_headers(), ISSUED_TS: long},
        {**signed_headers(), SIGNATURE: long},
        {**signed_headers(), SIGNATURE: "v1=" + "0" * 64},
        signed_headers(ts=0),
    ]
    for headers in cases:
        error = refusal(headers)
        assert len(error.error) <= 250, error.error
        assert str(error).startswith(error.reason + ": ")
        assert_no_key_material(error.error)


def test_sign_refuses_what_it_cannot_sign_unambiguously() -> None:
    key = KEYS["phase1"]
    with pytest.raises(ValueError):
        sign(b"short", "phase1", SUBJECT, PAYLOAD, NOW_NS)
    for issuer in ("", "phase 1", "phase1\n", "x" * 65):
        with pytest.raises(ValueError):
            sign(key, issuer, SUBJECT, PAYLOAD, NOW_NS)
    with pytest.raises(ValueError):
        sign(key, "phase1", "titan.cmd\nmain", PAYLOAD, NOW_NS)
    for ts in (-1, 2**63, True):
        with pytest.raises(ValueError):
            sign(key, "phase1", SUBJECT, PAYLOAD, ts)


def test_a_subject_with_a_line_break_is_refused() -> None:
    assert refusal(signed_headers(), subject="titan.cmd\nmain").reason == BAD_SIGNATURE


# --- keys --------------------------------------------------------------------------------------


def test_keys_are_an_immutable_mapping_whose_repr_names_issuers_only() -> None:
    assert list(KEYS) == ["phase1", "execution", "console"]  # ISSUERS' order
    assert KEYS["execution"] == b"\x07" * 40 and len(KEYS) == 3 and "phase2" not in KEYS
    with pytest.raises(TypeError):
        KEYS["phase2"] = b"\x00" * 32  # type: ignore[index]
    assert repr(KEYS) == "Keys(issuers=('phase1', 'execution', 'console'))"
    assert_no_key_material(repr(KEYS) + str(KEYS))


def test_keys_refuse_unknown_issuers_short_keys_and_no_keys() -> None:
    with pytest.raises(ValueError, match="mallory"):
        Keys({"mallory": b"\x00" * 32})
    with pytest.raises(ValueError, match="32 bytes"):
        Keys({"phase1": b"\x00" * 31})
    with pytest.raises(ValueError, match="no keys"):
        Keys({})


def test_generated_keys_render_to_a_file_that_parses_back() -> None:
    keys = generate_keys()
    assert list(keys) == list(ISSUERS)
    assert all(len(key) == 32 for key in keys.values())
    assert len(set(keys.values())) == len(ISSUERS)
    text = keys_text(keys)
    assert text.startswith("#")
    assert Keys.parse(text, "keys.txt") == keys
    assert Keys.parse(keys_text(KEYS), "k") == KEYS
    some = generate_keys(["quant", "phase3"])
    assert list(some) == ["phase3", "quant"]


def test_parse_skips_blank_lines_and_comments_and_takes_any_whitespace() -> None:
    key_hex = "ab" * 32
    text = f"\n# intake keys\n   \n  # indented comment\nphase1\t{key_hex}\n  console   {key_hex.upper()}  \r\n"
    keys = Keys.parse(text, "k")
    assert dict(keys) == {"phase1": bytes.fromhex(key_hex), "console": bytes.fromhex(key_hex)}


GOOD = "cd" * 32


@pytest.mark.parametrize(
    ("text", "line", "says"),
    [
        (f"# keys\nphase1 {GOOD}\nmallory {GOOD}\n", 3, "phase1, phase2, phase3, execution, powerlaw, quant, console"),
        (f"{GOOD} phase1\n", 1, "unknown issuer a key"),
        (f"phase1 {GOOD}\n\nphase1 {'ef' * 32}\n", 3, "first on line 1"),
        (f"phase1 {'zz' * 32}\n", 1, "not hex"),
        (f"phase1 {'ab' * 31}\n", 1, "at least 32"),
        (f"phase1 {'a' * 65}\n", 1, "odd number"),
        (f"phase1 {GOOD} extra\n", 1, "3 fields, expected 2"),
        ("phase1\n", 1, "1 fields, expected 2"),
        (f"phase1 {GOOD}\nphase2 {GOOD} # trailing comment\n", 2, "fields, expected 2"),
    ],
)
def test_parse_errors_name_the_line_and_what_is_accepted(text: str, line: int, says: str) -> None:
    with pytest.raises(KeyFileError) as caught:
        Keys.parse(text, "/etc/titan/keys")
    message = str(caught.value)
    assert message.startswith(f"/etc/titan/keys:{line}: "), message
    assert says in message
    assert GOOD not in message and "ef" * 32 not in message and "ab" * 31 not in message


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n  \n"])
def test_a_file_without_keys_is_refused(text: str) -> None:
    with pytest.raises(KeyFileError, match=r"^k: no keys"):
        Keys.parse(text, "k")


def test_a_key_file_error_is_a_value_error() -> None:
    assert issubclass(KeyFileError, ValueError)


def write_key_file(path: Path, content: bytes | str, mode: int = 0o600) -> Path:
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    os.chmod(path, mode)
    return path


def test_load_keys_reads_a_private_file(tmp_path: Path) -> None:
    keys = generate_keys(["execution"])
    path = write_key_file(tmp_path / "keys", keys_text(keys))
    assert load_keys(path) == keys
    assert load_keys(str(path)) == keys


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o601, 0o610])
def test_load_keys_refuses_a_file_group_or_others_may_use(tmp_path: Path, mode: int) -> None:
    path = write_key_file(tmp_path / "keys", keys_text(KEYS), mode)
    with pytest.raises(KeyFileError) as caught:
        load_keys(path)
    assert f"chmod 600 {path}" in str(caught.value)
    assert f"{mode:04o}" in str(caught.value)
    assert_no_key_material(str(caught.value))


def test_load_keys_accepts_owner_only_modes(tmp_path: Path) -> None:
    path = write_key_file(tmp_path / "keys", keys_text(KEYS), 0o400)
    assert load_keys(path) == KEYS


def test_load_keys_refuses_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="no such key file.*titan keys generate"):
        load_keys(tmp_path / "absent")


def test_load_keys_refuses_a_directory(tmp_path: Path) -> None:
    directory = tmp_path / "keys.d"
    directory.mkdir(mode=0o700)
    with pytest.raises(KeyFileError, match="not a regular file"):
        load_keys(directory)


def test_load_keys_refuses_a_file_that_is_not_utf8_naming_the_line(tmp_path: Path) -> None:
    path = write_key_file(tmp_path / "keys", f"# keys\nphase1 {GOOD}\n".encode() + b"console \xff\xfe\n")
    with pytest.raises(KeyFileError, match=rf"^{path}:3: not UTF-8"):
        load_keys(path)


def test_load_keys_refuses_an_empty_file(tmp_path: Path) -> None:
    path = write_key_file(tmp_path / "keys", "")
    with pytest.raises(KeyFileError, match=rf"^{path}: no keys"):
        load_keys(path)


def test_load_keys_names_the_line_of_a_parse_error(tmp_path: Path) -> None:
    path = write_key_file(tmp_path / "keys", f"phase1 {GOOD}\nphase1 {GOOD}\n")
    with pytest.raises(KeyFileError, match=rf"^{path}:2: issuer phase1 is listed again"):
        load_keys(path)


# --- roles -------------------------------------------------------------------------------------


def command(command_type: str, actor: str, **fields: Any) -> dict[str, Any]:
    return {"type": command_type, "actor": actor, **fields}


def out_of_role(issuer: str, command_type: str, payload: dict[str, Any]) -> Refused:
    with pytest.raises(Refused) as caught:
        check_role(issuer, command_type, payload)
    assert caught.value.reason == OUT_OF_ROLE
    return caught.value


def test_every_issuer_has_a_role() -> None:
    assert set(ROLE_COMMANDS) == set(ISSUERS)


def test_every_command_type_is_allowed_to_some_issuer() -> None:
    types = {command_type(model) for model in COMMAND_MODELS} - {"purge_dlq.v1"}
    allowed = set().union(*ROLE_COMMANDS.values())
    assert types - allowed == set()
    # and no role names a command that does not exist (purge_dlq.v1 may not exist yet)
    assert allowed - types - {"purge_dlq.v1"} == set()


ALL_TYPES = sorted({command_type(model) for model in COMMAND_MODELS} | {"purge_dlq.v1"})


@pytest.mark.parametrize("issuer", ISSUERS)
@pytest.mark.parametrize("kind", ALL_TYPES)
def test_roles_matrix(issuer: str, kind: str) -> None:
    payload = command(kind, f"{issuer}-worker" if issuer != "console" else "alice")
    if issuer.startswith("phase") and kind == "place_order.v1":
        payload["phase_id"] = int(issuer[-1])
    if kind in ROLE_COMMANDS[issuer]:
        check_role(issuer, kind, payload)
    else:
        error = out_of_role(issuer, kind, payload)
        assert issuer in error.error and kind in error.error


def test_a_phase_can_never_record_a_fill() -> None:
    for phase in ("phase1", "phase2", "phase3"):
        error = out_of_role(phase, "record_fill.v1", command("record_fill.v1", phase))
        assert "may send cancel_order.v1, place_order.v1" in error.error


def test_a_phase_places_orders_for_its_own_phase_only() -> None:
    check_role("phase2", "place_order.v1", command("place_order.v1", "phase2", phase_id=2))
    error = out_of_role("phase2", "place_order.v1", command("place_order.v1", "phase2", phase_id=1))
    assert "phase 2 only" in error.error and "phase_id 1" in error.error
    for phase_id in (None, "2", 2.5, True):
        out_of_role("phase1", "place_order.v1", command("place_order.v1", "phase1", phase_id=phase_id))
    out_of_role("phase3", "place_order.v1", command("place_order.v1", "phase3"))  # no phase_id at all


def test_a_phase_cancels_without_a_phase_id() -> None:
    check_role("phase3", "cancel_order.v1", command("cancel_order.v1", "phase3:sentinel"))


@pytest.mark.parametrize("actor", ["phase1", "phase1-scavenger", "phase1:a", "phase1.b", "phase1/c", "phase1@host"])
def test_an_actor_that_names_the_issuer(actor: str) -> None:
    check_role("phase1", "place_order.v1", command("place_order.v1", actor, phase_id=1))


@pytest.mark.parametrize("actor", ["phase2", "phase10", "phase1_x", "xphase1", "console", "", "PHASE1", "phase"])
def test_an_actor_that_does_not_name_the_issuer(actor: str) -> None:
    error = out_of_role("phase1", "place_order.v1", command("place_order.v1", actor, phase_id=1))
    assert "actor" in error.error


def test_a_missing_or_non_text_actor_is_out_of_role() -> None:
    out_of_role("execution", "record_fill.v1", {"type": "record_fill.v1"})
    out_of_role("execution", "record_fill.v1", {"type": "record_fill.v1", "actor": ["execution"]})
    error = out_of_role("quant", "set_regime.v1", command("set_regime.v1", "q" * 10_000))
    assert len(error.error) < 300


def test_execution_and_powerlaw_name_themselves() -> None:
    check_role("execution", "record_fill.v1", command("record_fill.v1", "execution:paper"))
    check_role("powerlaw", "record_tail_risk.v1", command("record_tail_risk.v1", "powerlaw"))
    out_of_role("execution", "record_fill.v1", command("record_fill.v1", "operator"))


def test_the_console_actor_is_the_operator() -> None:
    for actor in ("alice", "ops@desk", "console"):
        check_role("console", "halt.v1", command("halt.v1", actor))
    check_role("console", "purge_dlq.v1", command("purge_dlq.v1", "bob"))


def test_an_unknown_issuer_has_no_role() -> None:
    out_of_role("mallory", "halt.v1", command("halt.v1", "mallory"))
