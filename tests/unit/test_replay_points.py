"""Reading --until/--from points, and field-level diffs of recorded vs replayed records."""

from __future__ import annotations

import pytest

from replay.diff import EXTRA, MISSING, diff_values
from replay.points import POSITION, TIMESTAMP, BadPoint, format_ns, parse_point

T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("42", POSITION, 42),
        ("pos:42", POSITION, 42),
        (str(T0), TIMESTAMP, T0),
        ("ns:5", TIMESTAMP, 5),
        ("2026-01-01T00:00:00Z", TIMESTAMP, T0),
        ("2026-01-01", TIMESTAMP, T0),
        ("2026-01-01T00:00", TIMESTAMP, T0),
        ("2026-01-01T01:00:00+01:00", TIMESTAMP, T0),
        ("2026-01-01T00:00:00.000000001Z", TIMESTAMP, T0 + 1),
        ("2026-01-01T00:00:05.25", TIMESTAMP, T0 + 5_250_000_000),
        ("1969-12-31T23:59:59Z", TIMESTAMP, -1_000_000_000),
    ],
)
def test_points_read_positions_and_times_exactly(text: str, kind: str, value: int) -> None:
    point = parse_point(text)
    assert (point.kind, point.value) == (kind, value)


@pytest.mark.parametrize("text", ["yesterday", "0", "-3", "pos:x", "2026-13-01", "2026-01-01T25:00:00Z"])
def test_points_refuse_what_they_cannot_read(text: str) -> None:
    with pytest.raises(BadPoint):
        parse_point(text)


def test_times_format_back_to_iso() -> None:
    assert format_ns(T0) == "2026-01-01T00:00:00Z"
    assert format_ns(T0 + 5_250_000_000) == "2026-01-01T00:00:05.25Z"
    assert parse_point(format_ns(T0 + 123)).value == T0 + 123


def test_diffs_name_every_differing_leaf_by_path() -> None:
    recorded = {"type": "order.accepted.v1", "data": {"checks": [{"v": "1"}, {"v": "2"}], "q": "1"}, "x": 1}
    replayed = {"type": "order.rejected.v1", "data": {"checks": [{"v": "1"}, {"v": "3"}, {"v": "4"}]}, "x": True}
    diffs = {d.path: d for d in diff_values(recorded, replayed)}
    assert set(diffs) == {"type", "data.checks[1].v", "data.checks[2]", "data.q", "x"}
    assert diffs["data.checks[2]"].change == EXTRA
    assert diffs["data.q"].change == MISSING
    assert (diffs["x"].recorded, diffs["x"].replayed) == (1, True)  # 1 and true hash differently
    assert diff_values(recorded, recorded) == []
