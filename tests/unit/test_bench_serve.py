"""The pure parts of `infra.bench.serve`: reading the serve's /metrics histograms, the flow of
signed commands it publishes (each one the intake would take from its issuer), and the execution
phase's bench policy (the core accepts five seconds of its 1,000 orders/s under it)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from adapters.nats import subjects
from adapters.nats.roles import check_role
from infra.bench.serve import (
    BATCH_METRIC,
    EXEC_MAX_LEVERAGE,
    EXEC_MISSING_GRACE_MS,
    EXEC_MONEY_LIMIT,
    Flow,
    batch_summary,
    bench_policy,
    histogram,
    histogram_delta,
    mean_ms,
    percentile,
    phase_metrics,
)
from infra.submit import default_policy
from schemas.base import MAX_COUNT
from schemas.commands import AnyCommand
from schemas.events import ORDER_ACCEPTED
from schemas.intake import parse_new_command
from schemas.policy import MAX_OPEN_ORDERS, policy_hash

METRICS = """\
# HELP titan_writer_batch_commands Commands per group commit
# TYPE titan_writer_batch_commands histogram
titan_writer_batch_commands_bucket{le="1.0"} 2.0
titan_writer_batch_commands_bucket{le="10.0"} 5.0
titan_writer_batch_commands_bucket{le="500.0"} 7.0
titan_writer_batch_commands_bucket{le="+Inf"} 7.0
titan_writer_batch_commands_count 7.0
titan_writer_batch_commands_sum 1012.0
titan_writer_batch_commands_created 1.7e+09
titan_intake_decision_seconds_bucket{le="0.001"} 1.0
titan_intake_decision_seconds_count 4.0
titan_intake_decision_seconds_sum 0.01
"""


def test_percentile_takes_the_upper_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 51.0
    assert percentile(values, 0.99) == 100.0
    assert percentile([3.0], 0.99) == 3.0
    with pytest.raises(ValueError):
        percentile([], 0.5)


def test_histogram_reads_buckets_sum_and_count() -> None:
    h = histogram(METRICS, BATCH_METRIC)
    assert h["buckets"] == {1.0: 2.0, 10.0: 5.0, 500.0: 7.0, float("inf"): 7.0}
    assert (h["sum"], h["count"]) == (1012.0, 7.0)
    assert histogram(METRICS, "titan_absent") == {"buckets": {}, "sum": 0.0, "count": 0.0}


def test_histogram_sums_label_sets() -> None:
    text = 'x_bucket{a="1",le="1.0"} 1\nx_bucket{a="2",le="1.0"} 2\nx_count{a="1"} 1\nx_count{a="2"} 2\nx_sum 3\n'
    assert histogram(text, "x") == {"buckets": {1.0: 3.0}, "sum": 3.0, "count": 3.0}


def test_a_phase_is_the_difference_of_two_scrapes() -> None:
    before = histogram(METRICS.replace("_bucket{le=\"500.0\"} 7.0", "_bucket{le=\"500.0\"} 5.0")
                       .replace("_bucket{le=\"+Inf\"} 7.0", "_bucket{le=\"+Inf\"} 5.0")
                       .replace("_count 7.0", "_count 5.0").replace("_sum 1012.0", "_sum 12.0"), BATCH_METRIC)
    delta = histogram_delta(histogram(METRICS, BATCH_METRIC), before)
    assert batch_summary(delta) == {"batches": 2, "mean_commands": 500.0, "by_size": {"<=500": 2}}


def test_batch_summary_counts_each_bucket_once() -> None:
    summary = batch_summary(histogram(METRICS, BATCH_METRIC))
    assert summary == {"batches": 7, "mean_commands": 144.6, "by_size": {"<=1": 2, "<=10": 3, "<=500": 2}}
    assert batch_summary({"buckets": {}, "sum": 0.0, "count": 0.0})["mean_commands"] is None


def test_mean_ms_and_phase_metrics() -> None:
    assert mean_ms(histogram(METRICS, "titan_intake_decision_seconds")) == 2.5
    assert mean_ms({"buckets": {}, "sum": 0.0, "count": 0.0}) is None
    figures = phase_metrics("p", "", METRICS)
    assert figures["p_batches"]["batches"] == 7
    assert figures["p_fetch_to_outcome_mean_ms"] == 2.5
    assert figures["p_commit_mean_ms"] is None


def test_the_flow_is_four_snapshots_then_an_order_each_fit_for_its_issuer() -> None:
    flow = Flow("run1")
    commands = flow.batch("t", 10)
    issuers = [issuer for issuer, _, _ in commands]
    assert issuers == ["execution"] * 4 + ["phase1"] + ["execution"] * 4 + ["phase1"]
    ids = set()
    venue_ts = []
    for issuer, subject, payload in commands:
        value = orjson.loads(payload)
        assert "ts_ns" not in value  # the intake stamps it
        ids.add(value["command_id"])
        assert subject == subjects.command_subject("bench", value["type"])
        check_role(issuer, value["type"], value)
        command = parse_new_command(payload, stamp=1_800_000_000_000_000_000, issued_ts_ns=1)
        assert command.account_id == "bench"
        if value["type"] == "record_truth_snapshot.v1":
            venue_ts.append(value["venue_ts_ns"])
    assert len(ids) == 10
    assert venue_ts == sorted(venue_ts) and len(set(venue_ts)) == len(venue_ts)


# The execution phase (issue 12) --------------------------------------------------------------


def _parsed(command: tuple[str, str, bytes], stamp: int) -> AnyCommand:
    issuer, subject, payload = command
    value = orjson.loads(payload)
    assert "ts_ns" not in value
    assert subject == subjects.command_subject("bench", value["type"])
    check_role(issuer, value["type"], value)
    return parse_new_command(payload, stamp=stamp, issued_ts_ns=1)


def test_the_bench_policy_is_the_default_with_the_flow_limits_raised() -> None:
    default, bench = default_policy().model_dump(mode="json"), bench_policy().model_dump(mode="json")
    assert policy_hash(bench_policy()) != policy_hash(default_policy())
    assert bench["limits"] == {
        **default["limits"],
        "max_orders_per_second": MAX_COUNT,
        "max_messages_per_second": MAX_COUNT,
        "max_open_orders": MAX_OPEN_ORDERS,
        "max_gross_exposure": EXEC_MONEY_LIMIT,
    }
    assert bench["truth"] == {**default["truth"], "missing_order_grace_ms": EXEC_MISSING_GRACE_MS}
    changed = [i for i, (a, b) in enumerate(zip(default["instruments"], bench["instruments"], strict=True)) if a != b]
    assert [(bench["instruments"][i]["venue"], bench["instruments"][i]["symbol"]) for i in changed] == [("paper", "BTCUSDT")]
    assert [band["max_leverage"] for band in bench["allocation"]["bands"]] == [EXEC_MAX_LEVERAGE] * 3
    for section in ("breaker", "venue_quality", "tail_risk", "budget", "rules_version", "quote_currency"):
        assert bench[section] == default[section]


def test_the_execution_phase_commands_fit_their_issuers() -> None:
    flow = Flow("run2")
    activate = flow.activate("policy", bench_policy())
    assert activate[0] == "console"
    assert orjson.loads(activate[2])["actor"] == "operator:bench"
    _parsed(activate, 1)
    flow.policy_hash = policy_hash(bench_policy())
    orders = [flow.order("exec") for _ in range(4)]
    values = [orjson.loads(payload) for _, _, payload in orders]
    assert [v["side"] for v in values] == ["BUY", "SELL", "BUY", "SELL"]
    assert {v["policy_hash"] for v in values} == {flow.policy_hash}
    for command in [*orders, flow.snapshot("truth"), flow.venue_reject("clear", "ord-x")]:
        _parsed(command, 1)
    assert len({orjson.loads(c[2])["command_id"] for c in [activate, *orders]}) == 5


def _decide(policy_commands: list[tuple[str, str, bytes]], flow: Flow, orders: int) -> list[str]:
    """The core's verdict on each order: an activation, a snapshot, then `orders` orders 1 ms apart
    (1,000/s) with a snapshot every 1,000; the event type each order produced."""
    from commands.translate import to_core
    from infra.core import load_core

    core = load_core("auto")
    state = core.decider.initial_state("bench")
    ts = 1_800_000_000_000_000_000
    verdicts = []

    def decide(command: tuple[str, str, bytes], stamp: int) -> list[str]:
        nonlocal state
        events = core.decider.decide(to_core(_parsed(command, stamp), core), state)
        for event in events:
            state = core.decider.evolve(state, event)
        return [event.type_name() for event in events]

    for command in policy_commands:
        decide(command, ts)
    flow.venue_ts_ns = ts
    decide(flow.snapshot("truth"), ts + 1)
    for i in range(orders):
        stamp = ts + 2 + i * 1_000_000
        if i and i % 1000 == 0:
            flow.venue_ts_ns = stamp - 2
            decide(flow.snapshot("truth"), stamp - 1)
        verdicts.append(decide(flow.order("exec"), stamp)[0])
    return verdicts


def test_the_core_accepts_five_seconds_of_the_flow_under_the_bench_policy() -> None:
    flow = Flow("run3")
    policy = bench_policy()
    activate = flow.activate("policy", policy)
    flow.policy_hash = policy_hash(policy)
    verdicts = _decide([activate], flow, MAX_OPEN_ORDERS)
    assert verdicts == [ORDER_ACCEPTED] * MAX_OPEN_ORDERS


def test_the_default_policy_refuses_the_flow() -> None:
    flow = Flow("run4")
    flow.policy_hash = policy_hash(default_policy())
    verdicts = _decide([flow.activate("policy", default_policy())], flow, 50)
    assert verdicts.count(ORDER_ACCEPTED) <= 20


def test_the_bench_table_has_the_execution_row_with_its_goal() -> None:
    from rich.console import Console
    from rich.table import Table

    from infra.bench import _serve_rows

    serve: dict[str, Any] = {
        "serve_commands": 2000, "serve_commands_per_s": 3000, "serve_latency_offered_per_s": 1000,
        "serve_latency_p50_ms": 1.0, "serve_latency_p99_ms": 2.0, "serve_latency_max_ms": 3.0,
        "exec_offered_per_s": 1000, "exec_orders_offered": 5000, "exec_orders_accepted": 4999,
        "exec_latency_p50_ms": 40.5, "exec_latency_p99_ms": 90.25, "exec_latency_max_ms": 100.0,
    }

    def rendered(figures: dict[str, Any]) -> str:
        table = Table("measure", "figure")
        _serve_rows(table, figures)
        console = Console(width=400, record=True)
        console.print(table)
        return console.export_text()

    text = rendered(serve)
    assert "4,999 of 5,000 accepted; goal: report" in text
    assert "p50 40.5 ms, p99 90.25 ms, max 100.0 ms" in text
    assert "unavailable: ExecPhaseError: no" in rendered({**serve, "exec_unavailable": "ExecPhaseError: no"})
