"""`titan submit` and `titan policy hash|activate` against every kind of bad input: each bad line is an
`invalid` line naming the field and the bound, the good lines around it are decided exactly as they
are without it, nothing of the bad ones is recorded, and no traceback ever reaches the user."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .conftest import Titan
from .test_cli import T0, default_hash, place, snapshot

MIB = 1 << 20
NUMBER_BOUND = "numbers are integers within -2^63 .. 2^63-1 (decimals are written as strings)"


def encode(item: Any) -> bytes:
    return item if isinstance(item, bytes) else json.dumps(item, ensure_ascii=False).encode()


def write(path: Path, items: list[Any]) -> Path:
    path.write_bytes(b"".join(encode(item) + b"\n" for item in items))
    return path


def operator(kind: str, command_id: str, ts_ns: int, reason: str) -> dict[str, Any]:
    return {"type": kind, "command_id": command_id, "account_id": "main", "ts_ns": ts_ns, "actor": "ops", "reason": reason}


def good_lines(digest: str) -> list[Any]:
    return [
        snapshot(),
        place("g1", digest),
        place("g2", digest, ts_ns=T0 + 1, price="65000.05"),  # rejected PRICE_OFF_TICK
        {"type": "record_order_ack.v1", "command_id": "g3", "account_id": "main", "ts_ns": T0 + 2, "actor": "paper",
         "order_id": "ord-g1", "venue_order_id": "V1"},
        operator("halt.v1", "g4", T0 + 3, "end of the test"),
    ]


def bad_lines(digest: str, policy: dict[str, Any]) -> list[tuple[Any, str, str]]:
    """(line, the field its first error names, words of that error)."""
    halt = operator("halt.v1", "b-halt", T0 + 10, "x")
    fill = {"type": "record_fill.v1", "command_id": "b-fill", "account_id": "main", "ts_ns": T0 + 10, "actor": "paper",
            "order_id": "ord-g1", "fill_id": "F1", "quantity": "0.010", "price": "65000.0", "fee": "100000000000"}
    huge_policy = json.loads(json.dumps(policy))
    huge_policy["limits"]["max_open_orders"] = 2**64
    nested_policy = {**policy, "description": "x", "extra": json.loads("[" * 70 + "]" * 70)}
    return [
        (encode(halt)[:-1] + b', "pad": "' + b"x" * MIB + b'"}', "(line)", "at most 1048576 bytes (1 MiB)"),
        (b'{"type": "halt.v1", "reason": "\xff\xfe"}', "(line)", "not valid UTF-8"),
        (b"[1, 2, 3]", "(line)", "a command is a JSON object; got an array"),
        ({"command_id": "m" * 1_000_000, "account_id": "main"}, "type", "missing; accepted: place_order.v1, cancel_order.v1"),
        ({**halt, "type": "fly_to_moon.v1" * 1000}, "type", "unknown command type; accepted: place_order.v1"),
        ({**halt, "extra": json.loads("[" * 65 + "]" * 65)}, "extra.0.0.0", "nested deeper than 64 levels"),
        (b'{"type": "halt.v1", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "(line)", "nested deeper than 64 levels"),
        (encode({**snapshot("b-latency"), "latency_ms": 0}).replace(b'"latency_ms": 0', b'"latency_ms": 18446744073709551616'),
         "latency_ms", NUMBER_BOUND),
        (encode({**halt, "ts_ns": 0}).replace(b'"ts_ns": 0', b'"ts_ns": -9223372036854775809'), "ts_ns", NUMBER_BOUND),
        (encode({"type": "record_tail_risk.v1", "command_id": "b-tail", "account_id": "main", "ts_ns": T0 + 10, "actor": "brain",
                 "symbol": "BTCUSDT", "tail_exponent": "2.5", "sample_size": 0, "method": "hill"}).replace(
            b'"sample_size": 0', b'"sample_size": ' + b"9" * 5000), "sample_size", NUMBER_BOUND),
        (place("b-qty", digest, ts_ns=T0 + 10, quantity="1" * 1000), "place_order.v1.quantity", "at most 10 digits before the point (got 1000)"),
        (place("b-frac", digest, ts_ns=T0 + 10, quantity="0." + "0" * 997 + "1"), "place_order.v1.quantity",
         "at most 18 digits after the point (got 998)"),
        (place("b-notional", digest, ts_ns=T0 + 10, quantity="1000000", price="65000.0", reference_price="65000.0"),
         "place_order.v1", "quantity × price must be below 10^10"),
        (fill, "record_fill.v1.fee", "at most 10 digits before the point (got 12)"),
        (operator("halt.v1", "b-nul", T0 + 10, "stop\u0000now"), "halt.v1.reason", "found U+0000 at character 4"),
        (operator("resume.v1", "b-tab", T0 + 10, "go\ton"), "resume.v1.reason", "found U+0009 at character 2"),
        ({"type": "activate_policy.v1", "command_id": "b-policy", "account_id": "main", "ts_ns": T0 + 10, "actor": "ops",
          "policy": huge_policy}, "policy.limits.max_open_orders", NUMBER_BOUND),
        ({"type": "activate_policy.v1", "command_id": "b-nested", "account_id": "main", "ts_ns": T0 + 10, "actor": "ops",
          "policy": nested_policy}, "policy.extra.0.0", "nested deeper than 64 levels"),
    ]


def records(titan: Titan) -> int:
    report = titan.json("ledger", "verify", "--json")
    return int(report["records_checked"])


def decided(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines()]


def test_submit_reports_every_bad_line_and_decides_the_rest_exactly_as_without_them(tmp_path: Path) -> None:
    digest = default_hash(Titan(tmp_path))
    policy = json.loads((Path(__file__).resolve().parents[2] / "infra" / "policies" / "default.json").read_text())
    good = good_lines(digest)
    bad = bad_lines(digest, policy)
    alone_dir, mixed_dir = tmp_path / "alone", tmp_path / "mixed"
    alone_dir.mkdir()
    mixed_dir.mkdir()
    alone, mixed = Titan(alone_dir), Titan(mixed_dir)

    baseline = alone("submit", str(write(alone_dir / "good.jsonl", good)))
    assert baseline.returncode == 0, baseline.stderr
    # the good lines, with every bad line after the first good one (and one bad line after the last)
    items = [good[0], *[line for line, _, _ in bad[:-1]], *good[1:], bad[-1][0]]
    result = mixed("submit", str(write(mixed_dir / "mixed.jsonl", items)))

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stderr == ""
    assert len(result.stdout) < 40_000, "the output repeats the input"
    out = decided(result.stdout)
    invalid = [o for o in out if o["outcome"] == "invalid"]
    assert [o["line"] for o in invalid] == [*range(2, 2 + len(bad) - 1), len(items)]
    for report, (_, field, words) in zip(invalid, bad, strict=True):
        assert report["errors"], report
        first = report["errors"][0]
        assert first["field"].startswith(field) and words in first["error"], (field, words, report)
        assert report["events"] == [] and report["position"] is None
    # the good lines are decided as they are without the bad ones (outcomes, reasons, events, positions)
    assert [o for o in out if o["outcome"] != "invalid"] == decided(baseline.stdout)
    assert [o["reason"] for o in decided(baseline.stdout)] == [None, None, "PRICE_OFF_TICK", None, None]
    # nothing of the bad lines was recorded
    assert records(mixed) == records(alone)
    # a megabyte command id comes back as a bounded prefix
    missing_type = invalid[3]
    assert missing_type["command_id"] == "m" * 128 + "…(1000000 bytes)"
    assert invalid[0]["command_id"] is None  # the over-long line is not parsed at all
    assert {o["command_id"] for o in invalid[7:]} >= {"b-latency", "b-halt", "b-tail", "b-qty", "b-fill", "b-nul", "b-tab", "b-policy"}


def bad_policies(policy: dict[str, Any]) -> dict[str, tuple[bytes, str]]:
    def changed(path: list[str], value: Any) -> bytes:
        document = json.loads(json.dumps(policy))
        target = document
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value
        return json.dumps(document).encode()

    text = json.dumps(policy).encode()
    return {
        "int 2^64": (changed(["limits", "max_open_orders"], 2**64), "limits.max_open_orders: " + NUMBER_BOUND),
        "int 5000 digits": (changed(["truth", "latency_limit_ms"], 0).replace(b'"latency_limit_ms": 0', b'"latency_limit_ms": ' + b"9" * 5000),
                            "truth.latency_limit_ms: " + NUMBER_BOUND),
        "deep 100": (text[:-1] + b', "x": ' + b"[" * 100 + b"]" * 100 + b"}", "x.0.0"),
        "deep 100000": (text[:-1] + b', "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "(document): nested deeper than 64 levels"),
        "NUL": (changed(["description"], "a\u0000b"), "description: no control characters (U+0000-U+001F, U+007F-U+009F); found U+0000"),
        "decimal": (changed(["limits", "max_order_notional"], "1" * 5000), "limits.max_order_notional: at most 10 digits before the point (got 5000)"),
        "not UTF-8": (b"\xff" + text, "(document): not valid UTF-8 (byte 0)"),
        "array": (b"[]", "(document): a policy is a JSON object; got an array"),
        "over 1 MiB": (text[:-1] + b', "pad": "' + b"x" * MIB + b'"}', "(document): at most 1048576 bytes (1 MiB)"),
        "markup": (changed(["[/]"], 1), "[/]: Extra inputs are not permitted"),
    }


@pytest.mark.parametrize("action", ["hash", "activate"])
def test_policy_hash_and_activate_refuse_every_bad_policy_in_one_line(titan: Titan, tmp_path: Path, action: str) -> None:
    policy = json.loads((Path(__file__).resolve().parents[2] / "infra" / "policies" / "default.json").read_text())
    assert titan("init").returncode == 0
    before = records(titan)
    for name, (content, words) in bad_policies(policy).items():
        path = tmp_path / f"{name}.json"
        path.write_bytes(content)
        result = titan("policy", action, str(path))
        assert result.returncode == 2, (name, result.stderr[-2000:])
        assert "Traceback" not in result.stderr, name
        assert result.stdout == "", name
        assert len(result.stderr.strip().splitlines()) == 1, (name, result.stderr[-2000:])
        assert words in result.stderr and len(result.stderr) < 2000, (name, result.stderr[:2000])
    assert records(titan) == before
