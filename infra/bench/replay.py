"""Benchmarks of replay and audit (SPEC §9), for `titan bench` and docs/audit.md.

- replay-verify records/s, per core and with both (each in a fresh subprocess, so that its peak
  resident memory — VmHWM, not `ru_maxrss`: see `peak_rss_kb` — is its own; the baseline after
  imports is reported beside it, so the replay's own footprint is the difference);
- export rows/s (records and commands to Parquet; read models left out, they are the read side's
  figures);
- with `rebuild`, the projection rebuild (`infra.bench.projections.measure`, all read models) in a
  subprocess of its own too.

Every child runs its pass under `infra.collector.tuned_for_pass()`, as the CLI does, and reports
its own peak memory (VmHWM) and CPU seconds (user + system, its own forked helpers included).

A benchmark, never a test. `measure(url)` measures an existing ledger; `run(records)` writes a
demo ledger of about that many records into a scratch directory first (slow for large sizes:
the demo decides and appends every command, ~2k commands/s).

    python -m infra.bench.replay measure sqlite:////tmp/l1m.db
    python -m infra.bench.replay run --records 100000
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final, cast

import orjson

from infra.bench.figures import print_results

RECORDS_PER_DEMO_ORDER: Final = 6.9
"""About how many ledger records `titan demo` writes per order intent (measured)."""


def peak_rss_kb() -> int:
    """This process's own peak resident memory in KiB. Not `ru_maxrss`: Linux keeps it across
    exec, so a child forked from a large parent would report the parent's high-water mark; VmHWM
    belongs to the address space, which exec replaces."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _cpu_s() -> float:
    """User + system CPU seconds of this process and of its children that ended (the second
    core's forked process): on a shared machine, the figure that load does not inflate."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _memory_and_cpu(baseline_kb: int, cpu_before: float, *, helper: bool = False) -> dict[str, Any]:
    """What every child reports beside its figure: its own peak memory, the CPU seconds of its
    pass and, with `helper` (replay verify with both cores, the second one forked), the forked
    process's peak. Only there: any other subprocess (`platform` runs `uname`) would report the
    memory it was forked with."""
    figures: dict[str, Any] = {"baseline_rss_kb": baseline_kb, "peak_rss_kb": peak_rss_kb(), "cpu_s": round(_cpu_s() - cpu_before, 3)}
    helper_kb = int(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    if helper and helper_kb:
        figures["helper_peak_rss_kb"] = helper_kb
    return figures


def _child_verify(url: str, core: str) -> dict[str, Any]:
    from infra.bootstrap import open_ledger
    from infra.collector import tuned_for_pass
    from infra.core import load_cores
    from replay.cores import CoreChoice
    from replay.verify import second_process_available, verify_replay

    slots = load_cores(cast(CoreChoice, core))
    forked = len(slots) > 1 and second_process_available()  # as verify_replay decides it
    ledger = open_ledger(url, create=False)
    baseline_kb = peak_rss_kb()
    cpu_before = _cpu_s()
    began = time.perf_counter()
    with tuned_for_pass():
        report = verify_replay(ledger, slots, batch=2000)
    elapsed = time.perf_counter() - began
    ledger.close()
    return {
        "ok": report.ok,
        "summary": report.summary(),
        "cores": report.cores_run,
        "records": report.records,
        "commands": report.commands,
        "elapsed_s": elapsed,
        "records_per_second": report.records / elapsed if elapsed else 0.0,
        **_memory_and_cpu(baseline_kb, cpu_before, helper=forked),
    }


def _child_export(url: str) -> dict[str, Any]:
    from infra.bootstrap import open_ledger
    from infra.collector import tuned_for_pass
    from infra.version import titan_version
    from replay.export import export_ledger

    ledger = open_ledger(url, create=False)
    with tempfile.TemporaryDirectory(prefix="titan-bench-export-") as scratch:
        baseline_kb = peak_rss_kb()
        cpu_before = _cpu_s()
        with tuned_for_pass():
            result = export_ledger(ledger, Path(scratch) / "export", titan_version=titan_version())
        figures = _memory_and_cpu(baseline_kb, cpu_before)
        size = sum(entry["bytes"] for entry in result.manifest["files"].values())
    ledger.close()
    return {
        "rows": result.rows,
        "elapsed_s": result.elapsed_s,
        "rows_per_second": result.rows_per_second,
        "parquet_bytes": size,
        **figures,
    }


def _child_rebuild(url: str) -> dict[str, Any]:
    """The projection rebuild figures (`infra.bench.projections.measure`, one run of each pass) on
    the read models beside the ledger (the demo ledger's own file: scratch, replaced identically)."""
    import asyncio

    from infra.bench.projections import measure as projections_measure
    from infra.bootstrap import open_ledger
    from infra.collector import tuned_for_pass
    from infra.read_models import open_store

    async def rebuild() -> dict[str, Any]:
        store = await open_store(url)
        try:
            return await projections_measure(ledger, store, repeats=1)
        finally:
            await store.close()

    ledger = open_ledger(url, create=False)
    try:
        baseline_kb = peak_rss_kb()
        cpu_before = _cpu_s()
        with tuned_for_pass():
            figures = asyncio.run(rebuild())
        return {**figures, **_memory_and_cpu(baseline_kb, cpu_before)}
    finally:
        ledger.close()


def in_subprocess(module: str, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run `python -m MODULE _child ARGS…` in a fresh interpreter (nothing of this process's
    memory or warm state in it) and return the JSON object its last output line holds."""
    root = Path(__file__).resolve().parents[2]
    environment = dict(os.environ)
    environment["PYTHONPATH"] = str(root) + os.pathsep + environment.get("PYTHONPATH", "")
    environment.update(env or {})
    done = subprocess.run(
        [sys.executable, "-m", module, "_child", *args],
        capture_output=True,
        env=environment,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench child {args} failed: {done.stderr.decode(errors='replace')[-2000:]}")
    result: dict[str, Any] = orjson.loads(done.stdout.splitlines()[-1])
    return result


def _in_subprocess(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    return in_subprocess("infra.bench.replay", *args, env=env)


def measure(
    url: str,
    *,
    cores: tuple[str, ...] = ("both", "compiled", "interpreted"),
    export: bool = True,
    rebuild: bool = False,
) -> dict[str, Any]:
    """Measure replay verify (per core choice), export and (with `rebuild`) the projection
    rebuild on an existing ledger, each in a subprocess of its own."""
    from infra.bootstrap import open_ledger

    ledger = open_ledger(url, create=False)
    position, head_hash, count = ledger.head()
    ledger.close()
    results: dict[str, Any] = {"ledger": url, "records": count, "head_position": position, "head_hash": head_hash}
    verify: dict[str, Any] = {}
    for choice in cores:
        env = {"TITAN_CORE": "interpreted"} if choice == "interpreted" else {}
        try:
            verify[choice] = _in_subprocess("verify", url, choice, env=env)
        except RuntimeError as error:
            verify[choice] = {"unavailable": str(error)}
    results["replay_verify"] = verify
    if export:
        results["export"] = _in_subprocess("export", url)
    if rebuild:
        results["projections"] = _in_subprocess("rebuild", url)
    return results


def demo_ledger(path: Path, records: int, seed: int = 1) -> str:
    """Write a demo ledger of about `records` records at `path`; return its URL."""
    from infra.bootstrap import bootstrap, open_ledger
    from infra.demo import run as run_demo
    from infra.settings import Settings

    url = "sqlite:///" + str(path)
    ledger = open_ledger(url)
    try:
        bus = bootstrap(Settings(ledger_url=url), ledger=ledger)
        run_demo(bus, seed=seed, orders=max(1, int(records / RECORDS_PER_DEMO_ORDER)), ledger_url=url, progress=False)
    finally:
        ledger.close()
    return url


def run(records: int = 100_000, *, directory: str | None = None) -> dict[str, Any]:
    """Write a demo ledger of about `records` records in a scratch directory and measure it."""
    with tempfile.TemporaryDirectory(prefix="titan-bench-replay-", dir=directory) as scratch:
        began = time.perf_counter()
        url = demo_ledger(Path(scratch) / "bench.db", records)
        written = time.perf_counter() - began
        results = measure(url)
        results["ledger_written_s"] = written
        return results


def format_results(results: dict[str, Any]) -> list[str]:
    """Lines for a terminal or a document."""
    lines = [f"ledger: {results['ledger']} ({results['records']:,} records)"]
    for choice, r in results["replay_verify"].items():
        if "unavailable" in r:
            lines.append(f"replay verify ({choice}): unavailable — {r['unavailable'][:200]}")
            continue
        lines.append(
            f"replay verify ({choice}: {' + '.join(r['cores'])}): {r['records_per_second']:,.0f} records/s "
            f"({r['records']:,} records, {r['commands']:,} commands, {r['elapsed_s']:.1f} s), peak RSS "
            f"{r['peak_rss_kb'] / 1024:.0f} MiB (after imports {r['baseline_rss_kb'] / 1024:.0f} MiB){_helper(r)}, "
            f"CPU {r['cpu_s']:.1f} s, ok={r['ok']}"
        )
    export = results.get("export")
    if export:
        lines.append(
            f"export: {export['rows_per_second']:,.0f} rows/s ({export['rows']:,} rows, {export['elapsed_s']:.1f} s, "
            f"{export['parquet_bytes'] / 1e6:.1f} MB Parquet), peak RSS {export['peak_rss_kb'] / 1024:.0f} MiB, CPU {export['cpu_s']:.1f} s"
        )
    rebuilt = results.get("projections")
    if rebuilt:
        lines.append(
            f"projection rebuild, all in one pass: {rebuilt['rebuild_all']['median']:,} records/s "
            f"({rebuilt['ledger_records']:,} records; every pass of the child: CPU {rebuilt['cpu_s']:.1f} s), "
            f"peak RSS {rebuilt['peak_rss_kb'] / 1024:.0f} MiB"
        )
    return lines


def _helper(figures: dict[str, Any]) -> str:
    kb = figures.get("helper_peak_rss_kb")
    return f", second core's process {kb / 1024:.0f} MiB" if kb else ""


def main(argv: list[str] | None = None) -> int:
    """`python -m infra.bench.replay measure URL | run --records N`."""
    parser = argparse.ArgumentParser(prog="python -m infra.bench.replay")
    sub = parser.add_subparsers(dest="action", required=True)
    m = sub.add_parser("measure")
    m.add_argument("url")
    m.add_argument("--cores", default="both,compiled,interpreted")
    m.add_argument("--no-export", action="store_true")
    m.add_argument("--rebuild", action="store_true", help="also the projection rebuild (writes the read models beside the ledger)")
    m.add_argument("--json", action="store_true")
    r = sub.add_parser("run")
    r.add_argument("--records", type=int, default=100_000)
    r.add_argument("--json", action="store_true")
    child = sub.add_parser("_child")
    child.add_argument("what", choices=["verify", "export", "rebuild"])
    child.add_argument("url")
    child.add_argument("core", nargs="?", default="both")
    args = parser.parse_args(argv)
    if args.action == "_child":
        if args.what == "verify":
            result = _child_verify(args.url, args.core)
        else:
            result = _child_export(args.url) if args.what == "export" else _child_rebuild(args.url)
        sys.stdout.write(orjson.dumps(result).decode() + "\n")
        return 0
    if args.action == "measure":
        results = measure(args.url, cores=tuple(args.cores.split(",")), export=not args.no_export, rebuild=args.rebuild)
    else:
        results = run(args.records)
    print_results(results, getattr(args, "json", False), format_results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
