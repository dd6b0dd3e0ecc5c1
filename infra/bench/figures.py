"""How every durable-commands figure of `titan bench` is summarized."""

from __future__ import annotations

from typing import Any


def throughput(latencies: list[float], elapsed_s: float) -> dict[str, Any]:
    """Commands, commands/s and p50/p99 latency (ms) of one measured run."""
    ordered = sorted(latencies)
    return {
        "commands": len(ordered),
        "commands_per_second": len(ordered) / elapsed_s,
        "p50_ms": ordered[len(ordered) // 2] * 1000,
        "p99_ms": ordered[int(len(ordered) * 0.99)] * 1000,
    }
