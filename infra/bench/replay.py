"""Benchmarks of replay and audit (SPEC §9), for `titan bench` and docs/audit.md.

- replay-verify records/s, per core and with both (each in a fresh subprocess, so that its peak
  resident memory — `ru_maxrss` — is its own; the baseline after imports is reported beside it,
  so the replay's own footprint is the difference);
- export rows/s (records and commands to Parquet; read models left out, they are the read side's
  figures).

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

RECORDS_PER_DEMO_ORDER: Final = 6.9
"""About how many ledger records `titan demo` writes per order intent (measured)."""


def _peak_rss_kb() -> int:
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


def _child_verify(url: str, core: str) -> dict[str, Any]:
    from infra.bootstrap import open_ledger
    from infra.core import load_cores
    from replay.cores import CoreChoice
    from replay.verify import verify_replay

    slots = load_cores(cast(CoreChoice, core))
    ledger = open_ledger(url, create=False)
    baseline_kb = _peak_rss_kb()
    began = time.perf_counter()
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
        "baseline_rss_kb": baseline_kb,
        "peak_rss_kb": _peak_rss_kb(),
    }


def _child_export(url: str) -> dict[str, Any]:
    from infra.bootstrap import open_ledger
    from infra.version import titan_version
    from replay.export import export_ledger

    ledger = open_ledger(url, create=False)
    with tempfile.TemporaryDirectory(prefix="titan-bench-export-") as scratch:
        baseline_kb = _peak_rss_kb()
        result = export_ledger(ledger, Path(scratch) / "export", titan_version=titan_version())
        size = sum(entry["bytes"] for entry in result.manifest["files"].values())
    ledger.close()
    return {
        "rows": result.rows,
        "elapsed_s": result.elapsed_s,
        "rows_per_second": result.rows_per_second,
        "parquet_bytes": size,
        "baseline_rss_kb": baseline_kb,
        "peak_rss_kb": _peak_rss_kb(),
    }


def _in_subprocess(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    root = Path(__file__).resolve().parents[2]
    environment = dict(os.environ)
    environment["PYTHONPATH"] = str(root) + os.pathsep + environment.get("PYTHONPATH", "")
    environment.update(env or {})
    done = subprocess.run(
        [sys.executable, "-m", "infra.bench.replay", "_child", *args],
        capture_output=True,
        env=environment,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench child {args} failed: {done.stderr.decode(errors='replace')[-2000:]}")
    result: dict[str, Any] = orjson.loads(done.stdout.splitlines()[-1])
    return result


def measure(url: str, *, cores: tuple[str, ...] = ("both", "compiled", "interpreted"), export: bool = True) -> dict[str, Any]:
    """Measure replay verify (per core choice) and export on an existing ledger."""
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
            f"{r['peak_rss_kb'] / 1024:.0f} MiB (after imports {r['baseline_rss_kb'] / 1024:.0f} MiB), ok={r['ok']}"
        )
    export = results.get("export")
    if export:
        lines.append(
            f"export: {export['rows_per_second']:,.0f} rows/s ({export['rows']:,} rows, {export['elapsed_s']:.1f} s, "
            f"{export['parquet_bytes'] / 1e6:.1f} MB Parquet), peak RSS {export['peak_rss_kb'] / 1024:.0f} MiB"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    """`python -m infra.bench.replay measure URL | run --records N`."""
    parser = argparse.ArgumentParser(prog="python -m infra.bench.replay")
    sub = parser.add_subparsers(dest="action", required=True)
    m = sub.add_parser("measure")
    m.add_argument("url")
    m.add_argument("--cores", default="both,compiled,interpreted")
    m.add_argument("--no-export", action="store_true")
    m.add_argument("--json", action="store_true")
    r = sub.add_parser("run")
    r.add_argument("--records", type=int, default=100_000)
    r.add_argument("--json", action="store_true")
    child = sub.add_parser("_child")
    child.add_argument("what", choices=["verify", "export"])
    child.add_argument("url")
    child.add_argument("core", nargs="?", default="both")
    args = parser.parse_args(argv)
    if args.action == "_child":
        result = _child_verify(args.url, args.core) if args.what == "verify" else _child_export(args.url)
        sys.stdout.write(orjson.dumps(result).decode() + "\n")
        return 0
    if args.action == "measure":
        results = measure(args.url, cores=tuple(args.cores.split(",")), export=not args.no_export)
    else:
        results = run(args.records)
    if getattr(args, "json", False):
        sys.stdout.write(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print("\n".join(format_results(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
