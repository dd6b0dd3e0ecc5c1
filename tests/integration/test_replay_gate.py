"""The determinism gate (`titan replay verify`) on golden ledgers, fresh demo ledgers, and a core
changed on purpose: it passes when every recorded command is re-decided identically and names the
first divergent command, event and field when not."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from commands.ports import Ledger
from infra.bootstrap import bootstrap, open_ledger
from infra.core import load_core, load_cores
from infra.demo import run as run_demo
from infra.golden import GOLDEN_DIR, SPECS, load_manifest
from infra.read_models import READ_SIDE
from infra.settings import Settings
from replay.cores import CoreSlot
from replay.export import file_sha256
from replay.verify import RECORD_DIFFERS, verify_replay

pytestmark = pytest.mark.integration

MANIFEST = load_manifest()
GOLDEN = sorted(MANIFEST["ledgers"].items())

# Every reason code of the core the golden scenario was written with (before the Brain).
PRE_BRAIN_REASONS = frozenset(
    {
        "STALE_COMMAND", "NO_ACTIVE_POLICY", "POLICY_HASH_MISMATCH", "SYMBOL_NOT_ALLOWED",
        "ACCOUNT_DISARMED", "INVALID_QUANTITY", "QUANTITY_OFF_STEP", "INVALID_PRICE", "PRICE_OFF_TICK",
        "MAX_ORDER_QTY", "MAX_ORDER_NOTIONAL", "PRICE_COLLAR", "MAX_POSITION_NOTIONAL",
        "MAX_GROSS_EXPOSURE", "ORDER_RATE", "MESSAGE_RATE", "MAX_OPEN_ORDERS",
        "REDUCE_ONLY_WOULD_INCREASE", "DUPLICATE_CLIENT_ORDER_ID", "UNKNOWN_ORDER", "ORDER_CLOSED",
        "INVALID_TRANSITION", "CANCEL_ALREADY_REQUESTED", "DUPLICATE_FILL", "OVERFILL", "INVALID_FILL",
        "POLICY_ALREADY_ACTIVE", "POLICY_SCALE_CHANGE", "MODE_UNCHANGED",
    }
)  # fmt: skip


@pytest.fixture
def golden_copy(tmp_path: Path) -> Iterator[Any]:
    """Opens a scratch copy of a golden ledger (the committed file is never opened in place)."""
    opened: list[Ledger] = []

    def _open(entry: dict[str, Any]) -> Ledger:
        copy = tmp_path / entry["file"]
        shutil.copyfile(GOLDEN_DIR / entry["file"], copy)
        ledger = open_ledger("sqlite:///" + str(copy), create=False)
        opened.append(ledger)
        return ledger

    yield _open
    for ledger in opened:
        ledger.close()


def test_every_golden_spec_has_a_committed_ledger() -> None:
    assert {spec.name for spec in SPECS} == set(MANIFEST["ledgers"]), (
        "a golden spec without its ledger: write it with `python -m infra.golden regenerate NAME`"
    )
    for _name, entry in GOLDEN:
        path = GOLDEN_DIR / entry["file"]
        assert path.exists()
        assert file_sha256(path) == entry["sha256"], (
            f"{entry['file']} changed without its manifest entry: golden ledgers are only written by "
            "`python -m infra.golden regenerate` (docs/replay.md)"
        )


@pytest.mark.parametrize(("name", "entry"), GOLDEN, ids=[name for name, _ in GOLDEN])
def test_golden_ledger_replays_identically(name: str, entry: dict[str, Any], golden_copy: Any) -> None:
    ledger = golden_copy(entry)
    report = verify_replay(ledger, load_cores("both"), read_side=READ_SIDE)
    assert report.ok, report.summary() + "\n" + repr(report.divergence)
    assert report.chain is not None
    assert (report.chain.head_position, report.chain.head_hash) == (entry["head_position"], entry["head_hash"])
    assert report.records == entry["records"]
    assert "interpreted" in report.cores_run


def test_golden_scenario_exercises_every_pre_brain_reason_code(golden_copy: Any) -> None:
    ledger = golden_copy(MANIFEST["ledgers"]["scenario-reasons"])
    reasons = {
        record.envelope["data"]["reason"]
        for record in ledger.iter_all()
        if record.type == "command.recorded.v1" and record.envelope["data"]["reason"]
    }
    assert reasons >= PRE_BRAIN_REASONS, sorted(PRE_BRAIN_REASONS - reasons)


def _demo_ledger(url: str, seed: int, orders: int) -> Ledger:
    ledger = open_ledger(url)
    bus = bootstrap(Settings(ledger_url=url), ledger=ledger)
    run_demo(bus, seed=seed, orders=orders, ledger_url=url, progress=False)
    return ledger


@pytest.mark.parametrize(("seed", "orders"), [(3, 60), (17, 140)])
def test_fresh_demo_ledger_replays_identically(tmp_path: Path, seed: int, orders: int) -> None:
    ledger = _demo_ledger("sqlite:///" + str(tmp_path / "demo.db"), seed, orders)
    try:
        report = verify_replay(ledger, load_cores("both"), read_side=READ_SIDE)
    finally:
        ledger.close()
    assert report.ok, report.summary() + "\n" + repr(report.divergence)
    assert report.commands > orders
    assert report.records == ledger_records(report)


def ledger_records(report: Any) -> int:
    assert report.chain is not None
    return int(report.chain.records_checked)


def test_fresh_demo_ledger_replays_identically_in_memory() -> None:
    ledger = _demo_ledger("sqlite:///:memory:", 5, 50)
    try:
        report = verify_replay(ledger, load_cores("both"), read_side=READ_SIDE)
    finally:
        ledger.close()
    assert report.ok, report.summary()


def test_fresh_demo_ledger_replays_identically_on_postgresql(pg_url: str) -> None:
    ledger = _demo_ledger(pg_url, 9, 60)
    try:
        report = verify_replay(ledger, load_cores("both"), read_side=READ_SIDE)
    finally:
        ledger.close()
    assert report.ok, report.summary() + "\n" + repr(report.divergence)


def _first_accepted_with_collar(ledger: Ledger) -> tuple[str, int]:
    for record in ledger.iter_all():
        if record.type != "order.accepted.v1":
            continue
        for check in record.envelope["data"]["checks"]:
            if check["check"] == "price_collar_bps" and check["value"] != "0":
                return str(record.envelope["command_id"]), record.position
    raise AssertionError("the golden ledger has no accepted order off its reference price")


def test_the_gate_names_the_first_divergence_of_a_core_changed_on_purpose(
    golden_copy: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An interpreted core with a collar bug (any deviation from the reference price fails, the
    recorded limit unchanged) decides differently: the gate names the first order it changes."""
    core = load_core("interpreted")
    original = core.checks.limit_checks
    Check = core.events.Check

    def zero_collar(*args: Any, **kwargs: Any) -> Any:
        checks, codes = original(*args, **kwargs)
        changed = []
        for check in checks:
            if check.name == "price_collar_bps" and check.value != "0":
                check = Check(check.name, check.value, check.limit, "fail")
            changed.append(check)
        return changed, codes

    # The decider imported limit_checks by name: replace it where the decider looks it up.
    monkeypatch.setattr(core.decider, "limit_checks", zero_collar)
    monkeypatch.setattr(core.checks, "limit_checks", zero_collar)

    ledger = golden_copy(MANIFEST["ledgers"]["demo-seed7-orders40"])
    command_id, position = _first_accepted_with_collar(ledger)
    report = verify_replay(ledger, [CoreSlot("interpreted", core)])

    assert not report.ok
    divergence = report.divergence
    assert divergence is not None
    assert divergence.kind == RECORD_DIFFERS
    assert divergence.core == "interpreted"
    assert divergence.command_id == command_id
    assert divergence.position == position
    assert divergence.recorded_type == "order.accepted.v1"
    assert divergence.replayed_type == "order.rejected.v1"
    assert (divergence.recorded_outcome, divergence.replayed_outcome) == ("accepted", "rejected")
    assert divergence.replayed_reason == "PRICE_COLLAR"
    paths = {d.path: d for d in divergence.diffs}
    assert paths["type"].recorded == "order.accepted.v1"
    verdicts = [d for d in divergence.diffs if d.path.startswith("data.checks[") and d.path.endswith("].verdict")]
    assert [(d.recorded, d.replayed) for d in verdicts] == [("pass", "fail")]
    assert "hash" in paths
    assert command_id in report.summary()


def test_the_gate_runs_both_cores_when_the_compiled_one_is_available() -> None:
    slots = load_cores("both")
    assert [slot.kind for slot in slots] == ["compiled", "interpreted"]
    compiled = slots[0]
    if compiled.core is None:
        assert compiled.unavailable  # says why: not built, or TITAN_CORE=interpreted
    else:
        assert compiled.core.kind == "compiled"
