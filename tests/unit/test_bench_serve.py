"""The pure parts of `infra.bench.serve`: reading the serve's /metrics histograms, and the flow of
signed commands it publishes (each one the intake would take from its issuer)."""

from __future__ import annotations

import orjson
import pytest

from adapters.nats import subjects
from adapters.nats.roles import check_role
from infra.bench.serve import (
    BATCH_METRIC,
    Flow,
    batch_summary,
    histogram,
    histogram_delta,
    mean_ms,
    percentile,
    phase_metrics,
)
from schemas.intake import parse_new_command

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
