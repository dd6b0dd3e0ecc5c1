"""`infra.bench.goals`: every goal's verdict on a synthetic `titan bench --json` result, and why a
goal is "not measured" (never its speed: a benchmark is not a test)."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
from rich.console import Console

from infra.bench import print_goals
from infra.bench.goals import GOALS, Goal, judge, judge_one


def _results() -> dict[str, Any]:
    """A run where every goal has its figure: some met, some missed."""
    return {
        "compiled": {"decisions_per_second": 123_456.0, "spread": 0.1},
        "compiled_speedup": 5.2,
        "postgres": {"adaptive": {"commands_per_second": 21_000.0}, "offered": {"p99_ms": 12.9}},
        "embedded_group_commit": {"commands_per_second": 4_100.0},
        "accounts": {"p50_ms": 2.0, "p99_ms": 4.9, "commands_per_second": 1_990.0, "mean_batch": 3.0},
        "replay_and_export": {
            "replay_verify": {
                "compiled": {"ok": True, "records_per_second": 19_600.0},
                "both": {"ok": True, "records_per_second": 8_600.0},
            },
            "projections": {"rebuild_all": {"median": 11_600}},
            "export": {"rows_per_second": 18_000.0},
        },
        "start": {"first_decision_ms": 8_500.0},
        "relay": {"relay_records_per_s": 13_000, "lag_p99_s": 0.355},
        "serve": {"serve_commands_per_s": 4_000, "serve_latency_p99_ms": 25.0},
    }


def _by_path(results: dict[str, Any]) -> dict[str, Any]:
    return {".".join(judged.goal.path): judged for judged in judge(results)}


def test_every_goal_of_issue_14s_table_is_declared_with_its_figure_and_target() -> None:
    declared = {".".join(goal.path): (goal.comparison, goal.target) for goal in GOALS}
    assert declared["compiled.decisions_per_second"] == (">=", 1_000_000)
    assert declared["postgres.adaptive.commands_per_second"] == (">=", 20_000)
    assert declared["embedded_group_commit.commands_per_second"] == (">=", 30_000)
    assert declared["postgres.offered.p99_ms"] == ("<=", 2)
    assert declared["accounts.p99_ms"] == ("<=", 5)
    assert declared["replay_and_export.replay_verify.compiled.records_per_second"] == (">=", 100_000)
    assert declared["replay_and_export.replay_verify.both.records_per_second"] == (">=", 30_000)
    assert declared["replay_and_export.projections.rebuild_all.median"] == (">=", 50_000)
    assert declared["replay_and_export.export.rows_per_second"] == (">=", 100_000)
    assert declared["start.first_decision_ms"] == ("<=", 100)
    assert declared["compiled_speedup"] == (">=", 4)
    assert declared["relay.relay_records_per_s"] == (">=", 10_000)
    assert declared["relay.lag_p99_s"] == ("<", 1)
    assert len({goal.name for goal in GOALS}) == len(GOALS)


def test_each_figure_is_judged_against_its_goal() -> None:
    verdicts = {path: judged.verdict for path, judged in _by_path(_results()).items()}
    assert verdicts == {
        "compiled.decisions_per_second": "missed",
        "compiled_speedup": "met",
        "postgres.adaptive.commands_per_second": "met",
        "embedded_group_commit.commands_per_second": "missed",
        "postgres.offered.p99_ms": "missed",
        "accounts.p99_ms": "met",
        "replay_and_export.replay_verify.compiled.records_per_second": "missed",
        "replay_and_export.replay_verify.both.records_per_second": "missed",
        "replay_and_export.projections.rebuild_all.median": "missed",
        "replay_and_export.export.rows_per_second": "missed",
        "start.first_decision_ms": "missed",
        "relay.relay_records_per_s": "met",
        "relay.lag_p99_s": "met",
        "serve.serve_commands_per_s": "missed",
        "serve.serve_latency_p99_ms": "missed",
    }
    judged = _by_path(_results())["compiled.decisions_per_second"]
    assert judged.figure == 123_456.0 and judged.why is None


def test_the_json_entry_names_the_figure_the_goal_the_unit_and_the_verdict() -> None:
    entry = _by_path(_results())["compiled.decisions_per_second"].as_dict()
    assert entry == {
        "name": "compiled core, decisions/s, all checks",
        "figure": 123_456.0,
        "goal": "≥ 1,000,000",
        "unit": "decisions/s",
        "verdict": "missed",
        "why": None,
        "path": "compiled.decisions_per_second",
    }


@pytest.mark.parametrize(
    ("comparison", "figure", "verdict"),
    [(">=", 10.0, "met"), (">=", 9.99, "missed"), ("<=", 10.0, "met"), ("<=", 10.01, "missed"), ("<", 10.0, "missed"), ("<", 9.99, "met")],
)
def test_the_boundary_belongs_to_the_goal_it_names(comparison: Any, figure: float, verdict: str) -> None:
    goal = Goal("g", ("x",), comparison, 10, "u", "test")
    assert judge_one(goal, {"x": figure}).verdict == verdict


def test_a_missing_figure_is_not_measured_and_says_where_it_was_looked_for() -> None:
    results = _results()
    del results["start"]
    del results["replay_and_export"]["replay_verify"]["compiled"]
    judged = _by_path(results)
    start = judged["start.first_decision_ms"]
    assert (start.verdict, start.figure) == ("not measured", None)
    assert start.why == "no figure at start in this run's results"
    compiled = judged["replay_and_export.replay_verify.compiled.records_per_second"]
    assert compiled.verdict == "not measured"
    assert compiled.why == "no figure at replay_and_export.replay_verify.compiled in this run's results"
    assert judged["replay_and_export.replay_verify.both.records_per_second"].verdict == "missed"


def test_an_unavailable_or_skipped_measurement_is_not_measured_with_its_reason() -> None:
    results = _results()
    results["postgres"] = {"skipped": "no PostgreSQL (--pg-url none)"}
    results["accounts"] = {"unavailable": "PostgreSQL unreachable"}
    results["replay_and_export"] = {"unavailable": "RuntimeError: bench child failed"}
    judged = _by_path(results)
    for path in ("postgres.adaptive.commands_per_second", "postgres.offered.p99_ms"):
        assert judged[path].verdict == "not measured"
        assert judged[path].why == "skipped: no PostgreSQL (--pg-url none)"
    assert judged["accounts.p99_ms"].why == "unavailable: PostgreSQL unreachable"
    assert judged["replay_and_export.export.rows_per_second"].why == "unavailable: RuntimeError: bench child failed"


def test_a_figure_from_a_failed_run_is_not_measured() -> None:
    results = _results()
    results["replay_and_export"]["replay_verify"]["both"] = {"ok": False, "summary": "diverged at 42", "records_per_second": 99_999_999.0}
    judged = _by_path(results)["replay_and_export.replay_verify.both.records_per_second"]
    assert (judged.verdict, judged.figure) == ("not measured", None)
    assert judged.why == "the run failed: diverged at 42"


@pytest.mark.parametrize("value", ["fast", True, None, math.nan, math.inf, {"median": 1}])
def test_a_figure_that_is_not_a_finite_number_is_never_met(value: Any) -> None:
    results = copy.deepcopy(_results())
    results["relay"]["lag_p99_s"] = value
    judged = _by_path(results)["relay.lag_p99_s"]
    assert judged.verdict == "not measured" and judged.figure is None
    assert judged.why is not None and "relay.lag_p99_s" in judged.why


def test_the_goals_table_prints_every_goal_with_its_verdict_and_why() -> None:
    results = _results()
    results["accounts"] = {"unavailable": "PostgreSQL unreachable"}
    console = Console(record=True, width=250)
    print_goals(console, [judged.as_dict() for judged in judge(results)])
    text = console.export_text()
    for goal in GOALS:
        assert goal.name in text
    assert "123,456 decisions/s" in text and "≥ 1,000,000 decisions/s" in text
    assert "not measured: unavailable: PostgreSQL unreachable" in text
    assert text.count(" met") >= 3 and text.count("missed") >= 9
