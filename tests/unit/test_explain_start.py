"""`titan explain` from a start point (replay/explain.py): the same trace, byte for byte, as from
the account's first record, for every order and command of a short demo session, whichever start
before the decision is given; a start at or past the decision is not used. And the console's
snapshots (infra/console.py): kept every N versions, thinned evenly when full, the one before a
decision handed to explain, the trace unchanged."""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Iterator
from typing import Any, cast

import orjson
import pytest

from commands.envelope import account_stream
from commands.ports import Ledger
from infra import console
from infra.bootstrap import bootstrap, open_ledger
from infra.demo import ACCOUNT
from infra.demo import run as run_demo
from infra.settings import Settings
from replay.explain import StartPoint, advance, explain, find_subject, initial_point

MEMORY = "sqlite:///:memory:"


@pytest.fixture(scope="module")
def demo() -> Iterator[tuple[Ledger, Any, list[str]]]:
    ledger = open_ledger(MEMORY)
    bus = bootstrap(Settings(ledger_url=MEMORY), ledger=ledger)
    run_demo(bus, seed=7, orders=60, ledger_url=MEMORY, progress=False)
    idents = []
    for record in ledger.iter_all(0):
        if record.stream_id.startswith("command-"):
            command = record.envelope["data"]["command"]
            idents.append(("ord-" if command["type"] == "place_order.v1" else "") + command["command_id"])
    yield ledger, bus.ctx.core, idents
    ledger.close()


def trace_bytes(ledger: Ledger, core: Any, ident: str, start: StartPoint | None = None) -> bytes:
    return orjson.dumps(explain(ledger, core, ident, start=start), option=orjson.OPT_SORT_KEYS)


def points_every(ledger: Ledger, core: Any, every: int) -> list[StartPoint]:
    records = ledger.read_stream(account_stream(ACCOUNT))
    point, points = initial_point(core, ACCOUNT), []
    for begin in range(0, len(records), every):
        point = advance(core, point, records[begin : begin + every])
        points.append(point)
    return points


def test_every_trace_is_the_same_from_any_start_before_the_decision(demo: tuple[Ledger, Any, list[str]]) -> None:
    ledger, core, idents = demo
    points = points_every(ledger, core, 7)
    positions = [point.position for point in points]
    assert len(idents) > 100
    for ident in idents:
        expected = trace_bytes(ledger, core, ident)
        decided_at = orjson.loads(expected)["decision"]["position"]
        before = bisect.bisect_left(positions, decided_at)
        # The nearest start, one further back, and two past the decision (not used).
        for index in {before - 1, before - 4, before, len(points) - 1}:
            if 0 <= index < len(points):
                assert trace_bytes(ledger, core, ident, points[index]) == expected, (ident, points[index].version)


def test_a_start_folded_through_the_decisions_own_event_is_not_used(demo: tuple[Ledger, Any, list[str]]) -> None:
    ledger, core, idents = demo
    records = ledger.read_stream(account_stream(ACCOUNT))
    for ident in idents[::10]:
        expected = trace_bytes(ledger, core, ident)
        events = orjson.loads(expected)["decision"]["events"]
        if not events:
            continue
        through = [record for record in records if record.position <= events[0]["position"]]
        start = advance(core, initial_point(core, ACCOUNT), through)
        assert trace_bytes(ledger, core, ident, start) == expected, ident


def test_a_start_point_carries_the_events_that_set_the_context(demo: tuple[Ledger, Any, list[str]]) -> None:
    ledger, core, idents = demo
    start = points_every(ledger, core, 50)[-2]
    trace = explain(ledger, core, idents[-1], start=start)
    activation = next(ref for ref in trace["context"]["set_by"] if ref["type"] == "policy.activated.v1")
    assert activation["position"] < start.position  # recorded long before the start, still listed
    assert dict(start.set_by["policy.activated.v1"]) == activation
    assert trace == explain(ledger, core, idents[-1])


def test_the_console_explains_from_its_snapshots_and_thins_them_evenly(
    demo: tuple[Ledger, Any, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger, core, idents = demo
    monkeypatch.setattr(console, "SNAPSHOT_EVERY", 5)
    monkeypatch.setattr(console, "MAX_SNAPSHOTS", 8)
    data = console.LedgerConsoleData(ledger, cast(Any, None), core)

    async def traces() -> list[bytes]:
        return [orjson.dumps(await data.explain(ident), option=orjson.OPT_SORT_KEYS) for ident in idents[::3]]

    got = asyncio.run(traces())
    assert got == [trace_bytes(ledger, core, ident) for ident in idents[::3]]
    account = data._accounts[ACCOUNT]
    versions = [snapshot.version for snapshot in account.snapshots]
    assert account.version == len(ledger.read_stream(account_stream(ACCOUNT)))
    assert account.every > 5 and 0 < len(versions) < 8  # thinned at least once, never more than the bound
    assert versions == [account.every * (k + 1) for k in range(len(versions))]  # evenly spaced from the start
    assert account.start_before(account.snapshots[2].position) is account.snapshots[1]
    assert account.start_before(account.snapshots[0].position) is None
    # The snapshot the console picks lies before the decision's first event (never replayed twice).
    for ident in idents:
        start = account.start_before(find_subject(ledger, ident).first_event_position)
        events = explain(ledger, core, ident)["decision"]["events"]
        if start is not None and events:
            assert start.position < min(event["position"] for event in events)
