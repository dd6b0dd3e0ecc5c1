"""Golden ledgers: small ledgers written by a released titan, kept to prove old ledgers still replay.

`tests/fixtures/golden/` holds a few ledgers (SQLite files exactly as titan wrote them) and
`golden.json`, which says how each was made and what its head was. The test suite runs
`titan replay verify` on every one of them; a change to the core, the schemas or the record
layout that would decide one recorded command differently fails CI.

A golden ledger is never rewritten by a test. It is (re)generated only on purpose, with

    python -m infra.golden regenerate NAME ...            # write the named ledgers if missing
    python -m infra.golden regenerate --overwrite NAME    # replace one: read docs/replay.md first

Overwriting a golden ledger throws away the proof it carries; when a new version decides new
things, ADD a golden ledger under a new name and keep the old ones. `python -m infra.golden list`
shows them; `python -m infra.golden check` verifies them all (what the test does).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sqlite3
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast

import orjson

from replay.export import file_sha256

if TYPE_CHECKING:
    from commands.handlers import Bus, Outcome
    from commands.ports import Ledger
    from commands.writer import GroupCommitBus
    from replay.verify import ReplayReport
    from schemas import commands as wire

GOLDEN_DIR: Final = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "golden"
MANIFEST_NAME: Final = "golden.json"


@dataclass(frozen=True)
class GoldenSpec:
    """How one golden ledger is made: a seeded `titan demo`, `titan submit` of a command file, or
    a seeded demo through the group-commit writer with snapshots ("writer-demo")."""

    name: str
    kind: str  # "demo", "submit" or "writer-demo"
    seed: int = 0
    orders: int = 0
    source: str = ""  # for "submit": a JSON-lines file next to the ledger
    note: str = ""
    snapshot_every: int = 0  # for "writer-demo": the writer's snapshot_every
    restart_every: int = 0  # for "writer-demo": commands between two restarts of the writers

    @property
    def file(self) -> str:
        return f"{self.name}.db"


SPECS: Final = (
    GoldenSpec("demo-seed7-orders40", "demo", seed=7, orders=40, note="the README's demo seed"),
    GoldenSpec("demo-seed11-orders90", "demo", seed=11, orders=90, note="a longer session: bursts, fat fingers"),
    GoldenSpec("demo-seed2026-orders25", "demo", seed=2026, orders=25, note="another seed"),
    GoldenSpec(
        "scenario-reasons",
        "submit",
        source="scenario-reasons.jsonl",
        note="hand-written `titan submit` scenario: every reason code of the pre-Brain core, "
        "two policies, arm/disarm, a second account without a policy",
    ),
    GoldenSpec(
        "brain-demo-seed7-orders300",
        "demo",
        seed=7,
        orders=300,
        note="the first Brain-era demo: truth snapshots, latency spike, drift, crash, tail risk, "
        "regimes, an operator halt and resumes; every breaker state",
    ),
    GoldenSpec(
        "brain-breaker-walk",
        "submit",
        source="brain-breaker-walk.jsonl",
        note="a frozen copy of docs/examples/breaker-walk.jsonl: NORMAL -> DEFENSIVE -> HALTED, Resume refused, then accepted",
    ),
    GoldenSpec(
        "poisoned-inputs-v0",
        "submit",
        source="poisoned-inputs.jsonl",
        note="what titan before the input bounds (issue 9) recorded: a 1,000-digit quantity (two orders), "
        "NUL and control characters in a halt and a resume reason, a fee of 10^11 USDT on an accepted order, "
        "every id at its longest and a 1,000-character multi-byte cancel reason",
    ),
    GoldenSpec(
        "day-roll-collar",
        "submit",
        source="day-roll-collar.jsonl",
        note="a session across 00:00 UTC (a command at the day's last nanosecond, the next at midnight: "
        "budget.day_rolled with the day's loss) and orders priced exactly at the 150 bps collar (accepted) "
        "and one tick beyond it (PRICE_COLLAR), on both sides and two tick sizes",
    ),
    GoldenSpec(
        "writer-snapshots-seed7-orders120",
        "writer-demo",
        seed=7,
        orders=120,
        snapshot_every=25,
        restart_every=40,
        note="the demo through the group-commit writer, snapshotting every 25 events and at each stop, "
        "stopped and started again every 40 commands (each start loads the account from its newest "
        "snapshot): the ledger's titan_snapshots table is checked with it",
    ),
)
"""Every golden ledger, oldest first. Add new ones at the end; never remove or redefine one."""


def manifest_path(directory: Path = GOLDEN_DIR) -> Path:
    """The manifest of the golden ledgers in a directory."""
    return directory / MANIFEST_NAME


def load_manifest(directory: Path = GOLDEN_DIR) -> dict[str, Any]:
    """The manifest (`{"ledgers": {name: entry}}`), empty when there is none yet."""
    path = manifest_path(directory)
    if not path.exists():
        return {"ledgers": {}}
    document: dict[str, Any] = orjson.loads(path.read_bytes())
    return document


def _git_commit() -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "domain", "commands", "schemas", "adapters", "infra"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+uncommitted-changes" if dirty else "")


def _write(spec: GoldenSpec, target: Path, directory: Path) -> dict[str, Any]:
    """Write one golden ledger to `target` with the titan importable here; return its facts."""
    from infra.bootstrap import bootstrap, open_ledger
    from infra.demo import run as run_demo
    from infra.settings import Settings
    from infra.submit import InvalidLine, ensure_initialized, submit_lines

    url = "sqlite:///" + str(target)
    ledger = open_ledger(url)
    try:
        bus = bootstrap(Settings(ledger_url=url), ledger=ledger)
        if spec.kind == "demo":
            run_demo(bus, seed=spec.seed, orders=spec.orders, ledger_url=url, progress=False)
        elif spec.kind == "writer-demo":
            writers = _WriterBus(ledger, bus.ctx.core, spec.snapshot_every, spec.restart_every)
            try:
                run_demo(cast("Bus", writers), seed=spec.seed, orders=spec.orders, ledger_url=url, progress=False)
            finally:
                writers.close()
        elif spec.kind == "submit":
            ensure_initialized(bus, "main")  # as `titan submit` does for its account
            lines = (directory / spec.source).read_bytes().splitlines()
            invalid = [r.to_json() for r in submit_lines(bus, lines) if isinstance(r, InvalidLine)]
            if invalid:
                raise SystemExit(f"{spec.source}: {len(invalid)} invalid lines, first: {invalid[0]}")
        else:
            raise ValueError(f"unknown golden kind {spec.kind!r}")
        core_kind = bus.ctx.core.kind
        position, head_hash, count = ledger.head()
        snapshots = _snapshot_count(ledger)
    finally:
        ledger.close()
    # Leave one self-contained file: no -wal/-shm beside it (titan's close already checkpoints).
    with sqlite3.connect(target) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    facts = {"core": core_kind, "head_position": position, "head_hash": head_hash, "records": count}
    return facts | ({"snapshots": snapshots} if snapshots else {})


def _snapshot_count(ledger: Ledger) -> int:
    from .writers import snapshot_store

    store = snapshot_store(ledger)
    if store is None:
        return 0
    try:
        return store.count()
    finally:
        store.close()


class _WriterBus:
    """The demo's bus (`handle`, `state`, `ctx`) over group-commit writers with snapshots: every
    `restart_every` commands the writers stop (each takes a last snapshot) and new ones start,
    loading their account from its newest trusted snapshot. Were a start from a snapshot to decide
    differently from the fold, `titan replay verify` of the ledger would say so."""

    def __init__(self, ledger: Ledger, core: Any, snapshot_every: int, restart_every: int) -> None:
        from adapters.loop_thread import LoopThread
        from commands.handlers import Context

        from .writers import lease_store, ledger_snapshots

        self.ctx = Context(ledger, core)
        self._store = lease_store(ledger)
        self._snapshots = ledger_snapshots(ledger)
        if self._snapshots is None:
            raise ValueError("a writer-demo golden ledger needs a ledger with a snapshot store")
        self._snapshot_every = snapshot_every
        self._restart_every = restart_every
        self._loop = LoopThread("titan-golden-writers")
        self._bus: GroupCommitBus | None = None
        self._handled = 0

    def handle(self, command: wire.AnyCommand) -> Outcome:
        if self._bus is None or self._handled % self._restart_every == 0:
            self._restart()
        self._handled += 1
        assert self._bus is not None
        return self._loop.run(self._bus.handle(command))

    def state(self, account_id: str) -> Any:
        if self._bus is None:
            self._restart()
        assert self._bus is not None
        return self._loop.run(self._bus.writer(account_id)).state

    def close(self) -> None:
        try:
            if self._bus is not None:
                self._loop.run(self._bus.stop())
        finally:
            self._loop.close()
            assert self._snapshots is not None
            self._snapshots.close()

    def _restart(self) -> None:
        from commands.writer import GroupCommitBus

        if self._bus is not None:
            self._loop.run(self._bus.stop())
        self._bus = GroupCommitBus(
            self._store,
            self.ctx.core,
            snapshots=self._snapshots,
            snapshot_every=self._snapshot_every,
            snapshot_keep=0,  # every snapshot stays, for the gate to prove
        )


def regenerate(names: list[str], *, overwrite: bool, directory: Path = GOLDEN_DIR) -> list[str]:
    """Write the named golden ledgers (all when none named); refuse to replace existing ones
    unless `overwrite`. Returns what was written."""
    from infra.version import titan_version

    known = {spec.name: spec for spec in SPECS}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise SystemExit(f"unknown golden ledger(s) {unknown}; known: {sorted(known)}")
    chosen = [known[name] for name in names] if names else list(SPECS)
    manifest = load_manifest(directory)
    written: list[str] = []
    for spec in chosen:
        final = directory / spec.file
        if final.exists() and not overwrite:
            print(f"keep   {spec.file} (exists; --overwrite replaces it, see docs/replay.md)")
            continue
        with tempfile.TemporaryDirectory(dir=directory) as scratch:
            target = Path(scratch) / spec.file
            facts = _write(spec, target, directory)
            os.replace(target, final)
        entry: dict[str, Any] = {
            "file": spec.file,
            "kind": spec.kind,
            "note": spec.note,
            **({"seed": spec.seed, "orders": spec.orders} if spec.kind != "submit" else {"source": spec.source}),
            **(
                {"snapshot_every": spec.snapshot_every, "restart_every": spec.restart_every}
                if spec.kind == "writer-demo"
                else {}
            ),
            **facts,
            "sha256": file_sha256(final),
            "written_by": {"titan_version": titan_version(), "git_commit": _git_commit()},
            "command": "python -m infra.golden regenerate " + shlex.quote(spec.name),
        }
        manifest["ledgers"][spec.name] = entry
        written.append(spec.name)
        print(f"wrote  {spec.file}: {facts['records']} records, head {facts['head_hash']} ({facts['core']} core)")
    if not written:
        return written
    manifest["ledgers"] = dict(sorted(manifest["ledgers"].items()))
    manifest_path(directory).write_bytes(
        orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    )
    return written


def check(directory: Path = GOLDEN_DIR) -> int:
    """Run the determinism gate on a copy of every golden ledger; 0 when all replay identically."""
    from infra.bootstrap import open_ledger
    from replay.verify import verify_replay

    from .core import load_cores
    from .read_models import READ_SIDE
    from .writers import snapshot_store

    failures = 0
    for name, entry in load_manifest(directory)["ledgers"].items():
        with tempfile.TemporaryDirectory() as scratch:
            copy = Path(scratch) / entry["file"]
            copy.write_bytes((directory / entry["file"]).read_bytes())
            ledger = open_ledger("sqlite:///" + str(copy), create=False)
            snapshots = snapshot_store(ledger)
            try:
                report = verify_replay(ledger, load_cores("both"), read_side=READ_SIDE, snapshots=snapshots)
            finally:
                if snapshots is not None:
                    snapshots.close()
                ledger.close()
        ok = report.ok and snapshots_as_recorded(entry, report)
        status = "ok" if ok else "DIVERGED"
        print(f"{status:8} {name}: {report.summary()}")
        failures += not ok
    return 1 if failures else 0


def snapshots_as_recorded(entry: dict[str, Any], report: ReplayReport) -> bool:
    """Whether the gate proved exactly the snapshots the golden ledger was written with (a file
    that lost its snapshots, or gained some, no longer covers what it was made to cover)."""
    expected = int(entry.get("snapshots", 0))
    found = report.snapshots
    stored = found.stored if found is not None else 0
    proved = found.proved if found is not None else 0
    if (stored, proved) != (expected, expected):
        print(f"         {entry['file']}: {stored} snapshots stored, {proved} proved; golden.json says {expected}")
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    """`python -m infra.golden regenerate|list|check`."""
    parser = argparse.ArgumentParser(prog="python -m infra.golden", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    regen = sub.add_parser("regenerate", help="write golden ledgers (missing ones; --overwrite to replace)")
    regen.add_argument("names", nargs="*", help="which ones (default: all)")
    regen.add_argument("--overwrite", action="store_true", help="replace existing files (destroys their proof)")
    sub.add_parser("list", help="list the golden ledgers and how they were made")
    sub.add_parser("check", help="run the determinism gate on every golden ledger")
    args = parser.parse_args(argv)
    if args.action == "regenerate":
        regenerate(args.names, overwrite=args.overwrite)
        return 0
    if args.action == "list":
        for name, entry in load_manifest()["ledgers"].items():
            made = f"seed {entry['seed']}, {entry['orders']} orders" if "demo" in entry["kind"] else entry["source"]
            print(f"{name}: {entry['kind']} ({made}), {entry['records']} records, written by {entry['written_by']}")
        return 0
    return check()


if __name__ == "__main__":
    sys.exit(main())
