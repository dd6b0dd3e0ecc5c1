"""How every durable-commands figure of `titan bench` is summarized."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import orjson


def throughput(latencies: list[float], elapsed_s: float) -> dict[str, Any]:
    """Commands, commands/s and p50/p99 latency (ms) of one measured run."""
    ordered = sorted(latencies)
    return {
        "commands": len(ordered),
        "commands_per_second": len(ordered) / elapsed_s,
        "p50_ms": ordered[len(ordered) // 2] * 1000,
        "p99_ms": ordered[int(len(ordered) * 0.99)] * 1000,
    }


def print_results(results: dict[str, Any], as_json: bool, lines: Callable[[dict[str, Any]], list[str]]) -> None:
    """A bench module's results on stdout: indented JSON, or its own lines of text."""
    if as_json:
        sys.stdout.write(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print("\n".join(lines(results)))
