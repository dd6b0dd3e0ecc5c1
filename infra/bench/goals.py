"""The goals `titan bench` is judged against (issue 14's table, and the goals earlier issues set),
and the one piece of code that decides each verdict.

Each goal names where its figure is in `titan bench --json`'s results (a path of keys), how it is
compared and the number it must reach. `judge(results)` gives every goal's verdict: "met",
"missed", or "not measured" with why (the figure is absent, its measurement was unavailable or
skipped, or the run it comes from failed). A goal never reads a figure that is not a number, so a
measurement that broke can never pass for one that met its goal.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

Comparison = Literal[">=", "<=", "<"]
Verdict = Literal["met", "missed", "not measured"]

_SYMBOLS: Final[dict[Comparison, str]] = {">=": "≥", "<=": "≤", "<": "<"}


@dataclass(frozen=True)
class Goal:
    """One goal: its name, where its figure is, the comparison, the target and its unit."""

    name: str
    path: tuple[str, ...]
    comparison: Comparison
    target: float
    unit: str
    source: str

    @property
    def goal_text(self) -> str:
        """The goal as a reader writes it: "≥ 1,000,000"."""
        target = f"{self.target:,.0f}" if float(self.target).is_integer() else f"{self.target:g}"
        return f"{_SYMBOLS[self.comparison]} {target}"

    def reached(self, figure: float) -> bool:
        """Whether a figure meets the goal."""
        if self.comparison == ">=":
            return figure >= self.target
        if self.comparison == "<=":
            return figure <= self.target
        return figure < self.target


GOALS: Final[tuple[Goal, ...]] = (
    Goal("compiled core, decisions/s, all checks", ("compiled", "decisions_per_second"), ">=", 1_000_000, "decisions/s", "issue 14"),
    Goal("compiled / interpreted core", ("compiled_speedup",), ">=", 4, "×", "issue 2"),
    Goal("PostgreSQL group commit (adaptive)", ("postgres", "adaptive", "commands_per_second"), ">=", 20_000, "commands/s", "issue 14"),
    Goal("embedded group commit", ("embedded_group_commit", "commands_per_second"), ">=", 30_000, "commands/s", "issue 14"),
    Goal("p99 at 1,000 commands/s offered (PostgreSQL)", ("postgres", "offered", "p99_ms"), "<=", 2, "ms", "issue 14"),
    Goal("p99 at 2,000 commands/s over 40 accounts (PostgreSQL)", ("accounts", "p99_ms"), "<=", 5, "ms", "issue 14"),
    Goal("replay verify, compiled core only", ("replay_and_export", "replay_verify", "compiled", "records_per_second"), ">=", 100_000, "records/s", "issue 14"),
    Goal("replay verify, both cores", ("replay_and_export", "replay_verify", "both", "records_per_second"), ">=", 30_000, "records/s", "issue 14"),
    Goal("projection rebuild, all read models", ("replay_and_export", "projections", "rebuild_all", "median"), ">=", 50_000, "records/s", "issue 14"),
    Goal("Parquet export", ("replay_and_export", "export", "rows_per_second"), ">=", 100_000, "rows/s", "issue 14"),
    Goal("first decision after start (open + load + first answer)", ("start", "first_decision_ms"), "<=", 100, "ms", "issue 14"),
    Goal("relay to JetStream", ("relay", "relay_records_per_s"), ">=", 10_000, "records/s", "issue 10"),
    Goal("relay lag p99 at 5,000 records/s offered", ("relay", "lag_p99_s"), "<", 1, "s", "issue 10"),
    Goal("serve: signed commands via NATS into PostgreSQL", ("serve", "serve_commands_per_s"), ">=", 10_000, "commands/s", "issue 11"),
    Goal("serve: publish to outcome p99 at 1,000 commands/s", ("serve", "serve_latency_p99_ms"), "<=", 5, "ms", "issue 11"),
)


@dataclass(frozen=True)
class Judged:
    """A goal's verdict on one run's results."""

    goal: Goal
    figure: float | None
    verdict: Verdict
    why: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The entry of `titan bench --json`'s "goals"."""
        return {
            "name": self.goal.name,
            "figure": self.figure,
            "goal": self.goal.goal_text,
            "unit": self.goal.unit,
            "verdict": self.verdict,
            "why": self.why,
            "path": ".".join(self.goal.path),
        }


def _not_measured_why(node: Mapping[str, Any]) -> str | None:
    """Why a section of the results holds no figure: its measurement was unavailable, skipped, or
    the run it reports failed."""
    for key in ("unavailable", "skipped"):
        if key in node:
            return f"{key}: {str(node[key])[:200]}"
    if node.get("ok") is False:
        return "the run failed: " + str(node.get("summary") or "ok is false")[:200]
    return None


def judge_one(goal: Goal, results: Mapping[str, Any]) -> Judged:
    """The verdict of one goal on one run's results."""
    node: Any = results
    for depth, key in enumerate(goal.path):
        if isinstance(node, Mapping):
            why = _not_measured_why(node)
            if why is not None:
                return Judged(goal, None, "not measured", why)
        if not isinstance(node, Mapping) or key not in node:
            where = ".".join(goal.path[: depth + 1])
            return Judged(goal, None, "not measured", f"no figure at {where} in this run's results")
        node = node[key]
    if isinstance(node, Mapping):
        why = _not_measured_why(node)
        return Judged(goal, None, "not measured", why or f"{'.'.join(goal.path)} is not a figure")
    if isinstance(node, bool) or not isinstance(node, int | float) or not math.isfinite(node):
        return Judged(goal, None, "not measured", f"{'.'.join(goal.path)} is {str(node)[:60]!r}, not a number")
    figure = float(node)
    return Judged(goal, figure, "met" if goal.reached(figure) else "missed")


def judge(results: Mapping[str, Any], goals: Sequence[Goal] = GOALS) -> list[Judged]:
    """Every goal's verdict on one run's results, in the table's order."""
    return [judge_one(goal, results) for goal in goals]


def with_unit(text: str, unit: str) -> str:
    """A number and its unit as the goals table writes them ("12 ms", "5.2×")."""
    return f"{text}×" if unit == "×" else f"{text} {unit}"


def format_figure(figure: float | None, unit: str) -> str:
    """A figure for the goals table: thousands separated, small ones with their decimals."""
    if figure is None:
        return "—"
    return with_unit(f"{figure:,.0f}" if abs(figure) >= 100 else f"{figure:.3g}", unit)
