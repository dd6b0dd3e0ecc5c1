"""Account snapshots (domain/snapshot.py): an account's state as data and back, exactly.

On every golden ledger, for every account, at many points of its stream (every point of a short
stream, a stride of a long one), the state is written as canonical JSON, parsed and read back;
then (a) the restored state writes the same bytes, (b) folding the rest of the stream from it
ends in the same state as the straight fold, and (c) it re-decides every later recorded command
to the recorded bytes (through `decide_records`, as the live writer and `titan replay verify`
do). The compiled and the interpreted cores write the same bytes and read each other's.
Smaller scenarios pin what the ledgers may not reach (an instrument only an older policy had,
the closed-order memory's eviction, fill ids counted across orders, totals beyond 64 bits), and
malformed snapshots are refused with a message naming the field and what is accepted.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from commands.accounts import fold
from commands.chain import seal
from commands.envelope import COMMAND_RECORDED
from commands.handlers import decide_records
from commands.ports import Record
from infra.bootstrap import open_ledger
from infra.core import Core, CoreUnavailableError, load_core
from infra.golden import GOLDEN_DIR, load_manifest
from schemas import commands as wire
from schemas.canonical import canonical_bytes, parse
from tests.unit.conftest import ACCOUNT_ID, POLICY_HASH, CommandBuilder

GOLDEN = load_manifest()["ledgers"]

EVERY_POINT_UP_TO = 150
"""An account stream of at most this many commands is snapshotted after every one of them."""
POINTS_OF_A_LONG_STREAM = 40
"""A longer one at about this many points, evenly spaced (its first and last state included)."""


@dataclass(frozen=True)
class Step:
    """One recorded command of an account: the command as recorded, and the records it made
    (its events in stream order, then its command record)."""

    command: wire.AnyCommand
    records: list[Record]

    @property
    def events(self) -> list[Record]:
        return self.records[:-1]


def read_steps(path: Path) -> dict[str, list[Step]]:
    """Every account's recorded commands, in order, with the records each produced."""
    ledger = open_ledger("sqlite:///" + str(path), create=False)
    try:
        pending: dict[str, Record] = {}
        steps: dict[str, list[Step]] = {}
        for record in ledger.iter_all():
            if record.type != COMMAND_RECORDED:
                pending[record.envelope["event_id"]] = record
                continue
            data = record.envelope["data"]
            command = wire.parse_recorded_command(data["command"])
            events = [pending.pop(event_id) for event_id in data["event_ids"]]
            steps.setdefault(command.account_id, []).append(Step(command, [*events, record]))
        assert not pending, f"{path.name}: records no command produced: {sorted(pending)[:3]}"
        return steps
    finally:
        ledger.close()


@pytest.fixture(scope="module")
def golden_steps(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], dict[str, list[Step]]]:
    """golden_steps(name) -> the steps of a golden ledger, read once from a copy of it."""
    directory = tmp_path_factory.mktemp("golden")
    cache: dict[str, dict[str, list[Step]]] = {}

    def _steps(name: str) -> dict[str, list[Step]]:
        if name not in cache:
            copied = directory / GOLDEN[name]["file"]
            shutil.copyfile(GOLDEN_DIR / GOLDEN[name]["file"], copied)
            cache[name] = read_steps(copied)
        return cache[name]

    return _steps


@pytest.fixture(scope="module")
def compiled() -> Core:
    try:
        return load_core("compiled")
    except CoreUnavailableError as error:
        pytest.skip(f"compiled core not built in this environment: {error}")


def snapshot_bytes(core: Core, state: Any) -> bytes:
    """What a snapshot store keeps: the canonical JSON of the state's snapshot."""
    return canonical_bytes(core.snapshot.state_to_snapshot(state))


def restored(core: Core, written: bytes) -> Any:
    return core.snapshot.state_from_snapshot(parse(written))


def points(commands: int) -> list[int]:
    """After how many commands of a stream to snapshot it."""
    if commands <= EVERY_POINT_UP_TO:
        return list(range(commands + 1))
    stride = commands // POINTS_OF_A_LONG_STREAM
    return sorted({*range(0, commands + 1, stride), commands})


def folded_states(core: Core, account_id: str, steps: list[Step]) -> Iterator[tuple[Any, int]]:
    """The account's state and stream version before its first command and after each one."""
    state = core.decider.initial_state(account_id)
    version = 0
    yield state, version
    for step in steps:
        state = fold(core, state, step.events)
        version += len(step.events)
        yield state, version


def assert_redecides(core: Core, state: Any, version: int, steps: list[Step], where: str) -> Any:
    """Decide each recorded command from `state`; each must make the recorded bytes (events and
    command record, chained as recorded). Returns the state after the last."""
    for step in steps:
        decision = decide_records(step.command, state, version, core)
        produced = [canonical_bytes(seal(new.envelope, old.envelope["prev_hash"])) for new, old in zip(decision.records, step.records)]
        assert len(decision.records) == len(step.records) and produced == [old.state for old in step.records], (
            f"{where}: command {step.command.command_id} re-decided from the restored state differs from the ledger"
        )
        state, version = decision.state, version + decision.events
    return state


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_a_restored_state_writes_folds_and_decides_as_the_recorded_one(
    name: str, golden_steps: Callable[[str], dict[str, list[Step]]]
) -> None:
    core = load_core("auto")
    for account_id, steps in golden_steps(name).items():
        states = list(folded_states(core, account_id, steps))
        final = snapshot_bytes(core, states[-1][0])
        for point in points(len(steps)):
            where = f"{name}, account {account_id}, after {point} of {len(steps)} commands"
            state, version = states[point]
            written = snapshot_bytes(core, state)
            back = restored(core, written)
            assert snapshot_bytes(core, back) == written, f"{where}: the restored state writes other bytes"
            rest = [event for step in steps[point:] for event in step.events]
            assert snapshot_bytes(core, fold(core, back, rest)) == final, (
                f"{where}: folding the rest of the stream from the restored state ends elsewhere"
            )
            decided = assert_redecides(core, back, version, steps[point:], where)
            assert snapshot_bytes(core, decided) == final, f"{where}: re-deciding the rest ends elsewhere"


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_the_compiled_and_interpreted_cores_write_the_same_snapshot_and_read_each_others(
    name: str, golden_steps: Callable[[str], dict[str, list[Step]]], compiled: Core
) -> None:
    interpreted = load_core("interpreted")
    for account_id, steps in golden_steps(name).items():
        chosen = set(points(len(steps)))
        pairs = zip(folded_states(compiled, account_id, steps), folded_states(interpreted, account_id, steps))
        for point, ((ours, version), (theirs, _)) in enumerate(pairs):
            if point not in chosen:
                continue
            where = f"{name}, account {account_id}, after {point} of {len(steps)} commands"
            written = snapshot_bytes(compiled, ours)
            assert snapshot_bytes(interpreted, theirs) == written, f"{where}: the cores write different snapshots"
            for reader, writer in ((interpreted, compiled), (compiled, interpreted)):
                back = restored(reader, written)
                assert snapshot_bytes(reader, back) == written, f"{where}: {reader.kind} reads {writer.kind}'s snapshot differently"
                assert_redecides(reader, back, version, steps[point : point + 3], f"{where} ({reader.kind})")


# --- what the golden ledgers may not reach ------------------------------------------------------


def round_trip(core: Core, state: Any) -> Any:
    """The state written and read back, after checking that it writes the same bytes again."""
    written = snapshot_bytes(core, state)
    back = restored(core, written)
    assert snapshot_bytes(core, back) == written
    return back


def decided(core: Core, state: Any, command: Any) -> list[tuple[str, dict[str, Any]]]:
    return [(event.type_name(), event.to_data()) for event in core.decider.decide(command, state)]


def test_an_order_keeps_the_instrument_an_older_policy_gave_it(core: Core, cmd: CommandBuilder, given: Any) -> None:
    cmd.now_ns = 1_000_000_000
    first = given(cmd.activate(), cmd.place("sol", symbol="SOLUSDT", quantity="10", price="150.00"), cmd.place("btc"))
    cmd.now_ns = 2_000_000_000
    # the new policy drops SOLUSDT and halves BTCUSDT's order size: the open orders keep theirs
    tighter = {"paper:BTCUSDT": {"max_order_qty": "1", "max_position_notional": "1000"}}
    document = cmd.document(tighter)
    document["instruments"] = [item for item in document["instruments"] if item["symbol"] != "SOLUSDT"]
    policy = core.policy.policy_from_document(copy.deepcopy(document))
    state = given(core.commands.ActivatePolicy("cmd-b", cmd.now_ns, document, "policy-B", policy), state=first)
    assert "paper:SOLUSDT" not in state.policy.instruments
    back = round_trip(core, state)
    sol = back.open_orders["ord-sol"].instrument
    assert (sol.key, sol.tick_units, sol.step_units, sol.max_order_qty_units) == ("paper:SOLUSDT", 5, 5, 5000)
    assert back.open_orders["ord-btc"].instrument.max_order_qty_units == 2000
    assert back.policy.instruments["paper:BTCUSDT"].max_order_qty_units == 1000
    fill = cmd.fill("ord-sol", "f-1", quantity="4", price="150.00")
    assert decided(core, back, fill) == decided(core, state, fill)
    after, after_back = given(fill, state=state), given(fill, state=back)
    assert snapshot_bytes(core, after_back) == snapshot_bytes(core, after)
    assert after_back.positions["paper:SOLUSDT"].instrument.max_order_qty_units == 5000


def test_the_closed_order_memory_forgets_the_same_orders_after_a_restore(core: Core, cmd: CommandBuilder, given: Any) -> None:
    memory = core.model.CLOSED_ORDER_MEMORY
    state = given(cmd.activate())
    for i in range(memory + 10):
        cmd.now_ns = (i + 1) * 1_000_000_000
        state = given(cmd.place(f"o{i}"), cmd.cancelled(f"ord-o{i}"), state=state)
    back = round_trip(core, state)
    assert list(back.closed_order_ids) == list(state.closed_order_ids) == [f"ord-o{i}" for i in range(10, memory + 10)]
    for order_id in ("ord-o9", "ord-o10", f"ord-o{memory + 9}"):
        ack = cmd.ack(order_id)
        assert decided(core, back, ack) == decided(core, state, ack)
    cmd.now_ns += 1_000_000_000
    one_more = (cmd.place("last"), cmd.cancelled("ord-last"))
    state, back = given(*one_more, state=state), given(*one_more, state=back)
    assert snapshot_bytes(core, back) == snapshot_bytes(core, state)
    assert [decided(core, s, cmd.ack("ord-o10"))[0][1]["reason"] for s in (state, back)] == ["UNKNOWN_ORDER"] * 2
    assert [decided(core, s, cmd.ack("ord-o11"))[0][1]["reason"] for s in (state, back)] == ["ORDER_CLOSED"] * 2


def test_a_fill_id_counted_before_the_snapshot_is_not_counted_again_on_another_order(
    core: Core, cmd: CommandBuilder, given: Any
) -> None:
    document = cmd.document()
    document["rules_version"] = 2
    policy = core.policy.policy_from_document(copy.deepcopy(document))
    activate = core.commands.ActivatePolicy("cmd-v2", 0, document, POLICY_HASH, policy)
    state = given(activate, cmd.place("a"), cmd.place("b"), cmd.fill("ord-a", "f-1", quantity="0.040"))
    back = round_trip(core, state)
    again = cmd.fill("ord-b", "f-1", quantity="0.040")
    assert decided(core, back, again) == decided(core, state, again)
    assert decided(core, back, again)[0][1]["detail"]["counted_on"] == "ord-a"


def test_totals_beyond_64_bits_are_written_as_digits_and_read_back(core: Core, cmd: CommandBuilder, given: Any) -> None:
    # an absurd fee, as titan recorded before the input bounds (golden poisoned-inputs-v0)
    state = given(cmd.activate(), cmd.place("o1"), cmd.fill("ord-o1", "f-1", fee="100000000000"))
    data = core.snapshot.state_to_snapshot(state)
    assert data["positions"][0]["fees_money"] == str(10**19)
    assert data["brain"]["day_pnl_money"] == str(-(10**19))
    back = round_trip(core, state)
    assert back.positions["paper:BTCUSDT"].fees_money == 10**19
    assert back.brain.day_pnl_money == -(10**19)


# --- malformed snapshots ----------------------------------------------------------------------


@pytest.fixture
def rich(core: Core, cmd: CommandBuilder, given: Any) -> dict[str, Any]:
    """The snapshot of a state with something in every part: open orders, a position and marks,
    rate windows, closed orders, counted fills, truth, tail risk, a regime and venue windows."""
    cmd.now_ns = 1_000_000_000
    state = given(
        cmd.activate(brain=cmd.brain_sections()),
        cmd.snapshot(),
        cmd.place("o1"),
        cmd.place("o2", quantity="0.200"),
        cmd.place("o3", side="SELL", price="65100.0"),
        cmd.ack("ord-o1"),
        cmd.fill("ord-o1", "f-1", price="65000.0"),
        cmd.fill("ord-o2", "f-2", quantity="0.100"),
        cmd.cancel("ord-o3"),
        cmd.tail("BTCUSDT", "3.1"),
        cmd.regime("RISK_ON"),
    )
    data: dict[str, Any] = core.snapshot.state_to_snapshot(state)
    for part in ("open_orders", "positions", "marks", "closed_orders", "fills", "order_times_ns"):
        assert data[part], part
    for part in ("truth", "tail_exponents", "venues"):
        assert data["brain"][part], part
    assert data["brain"]["venues"][0]["ack_latency_ms"] and data["brain"]["venues"][0]["slippage_bps"]
    return data


DELETE = object()


def changed(data: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    """A deep copy of the snapshot with one field set (or deleted: DELETE)."""
    result = copy.deepcopy(data)
    target: Any = result
    for key in path[:-1]:
        target = target[key]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return result


MALFORMED: list[tuple[str, tuple[Any, ...], Any, str]] = [
    ("wrong format", ("format",), "titan.state.v0", "'format' must be 'titan.state.v1'"),
    ("no format", ("format",), DELETE, "'format' must be 'titan.state.v1'"),
    ("missing field", ("brain",), DELETE, "'brain' is missing"),
    ("missing nested field", ("open_orders", 0, "status"), DELETE, "'open_orders[0].status' is missing"),
    ("unknown field", ("brain", "mood"), "calm", "brain has an unknown field 'mood'"),
    ("wrong type", ("open_orders",), {}, "'open_orders' must be a list, got an object"),
    ("text for an integer", ("last_ts_ns",), "soon", "'last_ts_ns' must be an integer, got 'soon'"),
    ("digits of a small integer", ("last_ts_ns",), "12", "'last_ts_ns' must be a JSON integer (digits in a string only beyond 64 bits)"),
    ("binary float", ("brain", "day"), 1.5, "'brain.day' must be an integer, got a binary float"),
    ("bool for int", ("open_orders", 0, "qty_units"), True, "'open_orders[0].qty_units' must be an integer, got a boolean"),
    ("bool for int in a list", ("order_times_ns", 0), False, "'order_times_ns[0]' must be an integer, got a boolean"),
    ("int for bool", ("open_orders", 0, "reduce_only"), 0, "'open_orders[0].reduce_only' must be true or false, got an integer"),
    ("unknown status", ("open_orders", 0, "status"), "FILLED", "must be one of ACCEPTED, ACKNOWLEDGED, PARTIALLY_FILLED, got 'FILLED'"),
    ("unknown closed status", ("closed_orders", 0, "status"), "OPEN", "must be one of FILLED, CANCELLED, VENUE_REJECTED"),
    ("unknown side", ("open_orders", 0, "side"), "HOLD", "'open_orders[0].side' must be one of BUY, SELL, got 'HOLD'"),
    ("unknown mode", ("mode",), "armed", "'mode' must be one of DISARMED, ARMED"),
    ("unknown breaker", ("brain", "breaker"), "OPEN", "'brain.breaker' must be one of NORMAL, DEFENSIVE, HALTED"),
    ("unknown regime", ("brain", "regime"), "BULL", "'brain.regime' must be one of RISK_ON, NEUTRAL, RISK_OFF, CRASH"),
    ("unknown venue status", ("brain", "venues", 0, "status"), "SLOW", "must be one of OK, DEGRADED, HALTED"),
    ("negative time", ("last_ts_ns",), -1, "'last_ts_ns' must be at least 0, got -1"),
    ("negative price", ("open_orders", 0, "price_units"), -650000, "'open_orders[0].price_units' must be at least 0"),
    ("zero quantity", ("open_orders", 0, "qty_units"), 0, "'open_orders[0].qty_units' must be at least 1"),
    ("zero tick", ("positions", 0, "instrument", "tick_units"), 0, "'positions[0].instrument.tick_units' must be at least 1"),
    ("negative latency", ("brain", "venues", 0, "ack_latency_ms", 0), -5, "must be at least 0"),
    ("clear-since below NO_CLEAR", ("brain", "clear_since_ns"), -2, "'brain.clear_since_ns' must be at least -1"),
    ("score above 100", ("brain", "truth", 0, "score"), 101, "'brain.truth[0].score' must be 0..100"),
    ("overfilled order", ("open_orders", 0, "filled_qty_units"), 10**9, "must be at most qty_units"),
    ("empty order id", ("open_orders", 0, "order_id"), "", "'open_orders[0].order_id' must be a non-empty string"),
    ("empty fill id", ("fills", 0, 1), "", "'fills[0][1]' must be a non-empty string"),
    ("fill not a triple", ("fills", 0), ["paper", "f-1"], "'fills[0]' must be a [venue, fill_id, order_id] list"),
    ("too fine an instrument", ("positions", 0, "instrument", "price_decimals"), 8, "must add up to at most 8"),
    ("policy that does not parse", ("policy", "limits", "max_open_orders"), -1, "'policy' is not a policy document this core reads: policy field 'max_open_orders'"),
    ("policy without instruments", ("policy", "instruments"), [], "'instruments' must be a non-empty list"),
    ("policy of the wrong kind", ("policy",), "strict", "'policy' must be a policy document (an object) or null"),
    ("float in the policy", ("policy", "limits", "price_collar_bps"), 150.0, "'policy.limits.price_collar_bps' must be JSON data"),
    ("hash without a policy", ("policy",), None, "'policy_hash' must be empty exactly when 'policy' is null"),
    ("window total off", ("brain", "venues", 0, "ack_sum", "total"), 10**6, "must be the sum of ack_latency_ms"),
    ("window times short", ("brain", "venues", 0, "slippage_ts_ns"), [], "must have one time per sample of slippage_bps"),
    ("not a snapshot", (), None, "a state snapshot must be a JSON object, got a list"),
]


@pytest.mark.parametrize(("case", "path", "value", "message"), MALFORMED, ids=[case[0] for case in MALFORMED])
def test_a_malformed_snapshot_is_refused_naming_the_field(
    core: Core, rich: dict[str, Any], case: str, path: tuple[Any, ...], value: Any, message: str
) -> None:
    data: Any = changed(rich, path, value) if path else [rich]
    with pytest.raises(core.snapshot.SnapshotError) as refused:
        core.snapshot.state_from_snapshot(data)
    assert isinstance(refused.value, ValueError)
    assert message in str(refused.value), str(refused.value)


def test_lists_that_stand_for_mappings_refuse_a_key_listed_twice(core: Core, rich: dict[str, Any]) -> None:
    refuse = core.snapshot.SnapshotError
    cases = {
        "open_orders": "is listed twice",
        "positions": "has two positions",
        "marks": "has two marks",
        "fills": "is counted twice",
    }
    for part, message in cases.items():
        data = copy.deepcopy(rich)
        data[part].append(copy.deepcopy(data[part][0]))
        with pytest.raises(refuse, match=message):
            core.snapshot.state_from_snapshot(data)
    for part, message in {"truth": "two truth readings", "tail_exponents": "two tail exponents", "venues": "listed twice"}.items():
        data = copy.deepcopy(rich)
        data["brain"][part].append(copy.deepcopy(data["brain"][part][0]))
        with pytest.raises(refuse, match=message):
            core.snapshot.state_from_snapshot(data)


def test_the_closed_order_memory_is_bounded_and_a_repeated_order_repeats_its_entry(core: Core, rich: dict[str, Any]) -> None:
    memory = core.model.CLOSED_ORDER_MEMORY
    entry = rich["closed_orders"][0]
    too_many = changed(rich, ("closed_orders",), [{**entry, "order_id": f"ord-{i}"} for i in range(memory + 1)])
    with pytest.raises(core.snapshot.SnapshotError, match=f"at most {memory} closed orders"):
        core.snapshot.state_from_snapshot(too_many)
    other = {**entry, "status": "FILLED" if entry["status"] != "FILLED" else "CANCELLED"}
    with pytest.raises(core.snapshot.SnapshotError, match="listed again with another status"):
        core.snapshot.state_from_snapshot(changed(rich, ("closed_orders",), [entry, other]))
    # the same entry twice is what a state remembers of an order id closed twice: it reads back
    twice = core.snapshot.state_from_snapshot(changed(rich, ("closed_orders",), [entry, entry]))
    assert list(twice.closed_order_ids) == [entry["order_id"]] * 2


def test_a_window_in_order_only_by_its_claim_is_refused(core: Core, rich: dict[str, Any]) -> None:
    out_of_order = {**rich["brain"]["venues"][0], "ack_latency_ms": [30, 10], "ack_ts_ns": [20, 10]}
    out_of_order["ack_sum"] = {"total": 40, "ordered": True}
    data = changed(rich, ("brain", "venues", 0), out_of_order)
    with pytest.raises(core.snapshot.SnapshotError, match="may be true only when ack_ts_ns never decreases"):
        core.snapshot.state_from_snapshot(data)
    # a window whose out-of-order sample has aged out stays unordered: false is always accepted
    data["brain"]["venues"][0]["ack_sum"]["ordered"] = False
    back = core.snapshot.state_from_snapshot(data)
    assert back.brain.venues[out_of_order["venue"]].ack_sum.ordered is False


def test_a_restored_state_shares_nothing_with_the_data_it_was_read_from(core: Core, rich: dict[str, Any]) -> None:
    data = copy.deepcopy(rich)
    state = core.snapshot.state_from_snapshot(data)
    written = snapshot_bytes(core, state)
    data["policy"]["limits"]["max_open_orders"] = 0
    data["open_orders"][0]["fill_ids"].append("f-x")
    assert snapshot_bytes(core, state) == written
    assert core.snapshot.state_to_snapshot(state)["policy"] is not state.policy.document


def test_the_snapshot_of_a_new_account_reads_back(core: Core) -> None:
    state = core.decider.initial_state(ACCOUNT_ID)
    data = core.snapshot.state_to_snapshot(state)
    assert data["format"] == core.snapshot.SNAPSHOT_FORMAT == "titan.state.v1"
    assert data["policy"] is None and data["policy_hash"] == ""
    round_trip(core, state)
